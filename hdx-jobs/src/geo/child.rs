//! The import child process: GDAL runs in a process of its own, so an `abort()` on a GDAL fatal
//! error, a crash in C code or a runaway import kills only that process; the worker records a
//! failure and carries on.
//!
//! The child is `hdx-jobs-import` ([`IMPORT_PROGRAM`]), an executable installed beside
//! `hdx-jobs`: only it links GDAL (the `hdx-jobs-import` crate, whose `child_main` calls
//! [`child_main`] here with the GDAL import), so the worker, the server and every other
//! `hdx-jobs` process never load libgdal and its hundred-odd shared libraries. The program is
//! configurable ([`ChildCommand`], `HDX_GEO_IMPORT_PROGRAM`) for library users and tests; it
//! runs without arguments. The protocol is JSON: the parent writes one [`ImportRequest`] on the child's
//! stdin (the database password travels there, never in argv or the environment) and the child
//! writes JSON lines on stdout: `{"progress": 0.42}` now and then, and one
//! `{"report": ImportReport}` at the end. Its stderr is kept (the last few KB) for the logs.
//! The parent kills the child at the deadline or on cancellation.
//!
//! The child is where hostile files are parsed (the archive is unpacked there too, then GDAL
//! reads it), so it starts confined: an environment cleared of everything but what GDAL and
//! PROJ need ([`CHILD_ENV`]; no API keys, no database settings), and resource limits set
//! between fork and exec ([`ChildLimits`]: address space, CPU seconds, file size, no core
//! dumps), so a file that makes GDAL loop, balloon or write without end kills only the child.

use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::import::{ImportReport, ImportRequest};

/// The import executable's name: the default child is the file of this name beside the running
/// executable ([`ChildCommand::beside_current_exe`]).
pub const IMPORT_PROGRAM: &str = "hdx-jobs-import";

/// Most of the child's stderr kept for the logs.
const STDERR_KEPT: usize = 8 * 1024;

/// The only environment variables an import child inherits (when set): where GDAL and PROJ find
/// their data and plugins, and the temporary folder and locale.
pub const CHILD_ENV: [&str; 11] = [
    "GDAL_DATA",
    "GDAL_DRIVER_PATH",
    "GDAL_CACHEMAX",
    "GDAL_NUM_THREADS",
    "PROJ_DATA",
    "PROJ_LIB",
    "PROJ_CACHE_DIR",
    "TMPDIR",
    "LANG",
    "LC_ALL",
    "TZ",
];

/// Default address-space limit of an import child (`HDX_GEO_IMPORT_MAX_MEMORY_MB`).
pub const DEFAULT_MAX_MEMORY_MB: u64 = 4096;

/// How to start an import child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildCommand {
    /// The program.
    pub program: PathBuf,
    /// Its arguments (none for `hdx-jobs-import`).
    pub args: Vec<OsString>,
    /// Its address-space limit in bytes.
    pub max_memory_bytes: u64,
}

/// Resource limits of one import child, set before it runs (`setrlimit` between fork and exec).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildLimits {
    /// Address space (`RLIMIT_AS`).
    pub memory_bytes: u64,
    /// CPU seconds (`RLIMIT_CPU`; the wall-clock deadline kills it too).
    pub cpu_secs: u64,
    /// Largest file it may write (`RLIMIT_FSIZE`): the unpacked archive's limit.
    pub file_bytes: u64,
}

impl ChildCommand {
    /// `PROGRAM`, without arguments.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        ChildCommand {
            program: program.into(),
            args: Vec::new(),
            max_memory_bytes: DEFAULT_MAX_MEMORY_MB * 1024 * 1024,
        }
    }

    /// `hdx-jobs-import` in the folder of the running executable (where it is installed beside
    /// `hdx-jobs`, and where cargo builds it).
    pub fn beside_current_exe() -> std::io::Result<Self> {
        std::env::current_exe().map(|exe| Self::new(exe.with_file_name(IMPORT_PROGRAM)))
    }

    /// `HDX_GEO_IMPORT_PROGRAM` when set, else `hdx-jobs-import` beside the running executable,
    /// else `hdx-jobs-import` on the PATH.
    pub fn from_config(config: &super::config::GeopreviewConfig) -> Self {
        let mut command = match &config.import_program {
            Some(program) => Self::new(program),
            None => Self::beside_current_exe().unwrap_or_else(|_| Self::new(IMPORT_PROGRAM)),
        };
        command.max_memory_bytes = config.import_max_memory_mb.saturating_mul(1024 * 1024);
        command
    }

    /// Whether the program can be found (a path names a file; a bare name is looked up on the
    /// PATH); [`ChildError::Missing`] when not. Spawning says the same, but only at the first
    /// import: the worker and the CLI ask at start.
    pub fn check(&self) -> Result<(), ChildError> {
        let found = if self.program.components().count() > 1 {
            self.program.is_file()
        } else {
            std::env::var_os("PATH").is_some_and(|path| {
                std::env::split_paths(&path).any(|dir| dir.join(&self.program).is_file())
            })
        };
        if found {
            Ok(())
        } else {
            Err(ChildError::Missing {
                program: self.program.display().to_string(),
            })
        }
    }
}

/// Why a child gave no report.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    /// The deadline passed; the child was killed.
    #[error("the import did not finish in time")]
    Timeout,
    /// The job was cancelled; the child was killed.
    #[error("the import was cancelled")]
    Cancelled,
    /// The program does not exist.
    #[error(
        "geopreview needs {IMPORT_PROGRAM} beside hdx-jobs: {program} is missing (install it \
         there, or name the import program with HDX_GEO_IMPORT_PROGRAM)"
    )]
    Missing {
        /// The program.
        program: String,
    },
    /// The program could not be started.
    #[error("cannot start the import process {program}: {message}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        message: String,
    },
    /// The child ended without a report (a crash, an abort, a kill from outside).
    #[error("the import process ended without a report ({status})")]
    Died {
        /// Its exit status.
        status: String,
        /// The end of its stderr.
        stderr: String,
    },
}

/// One line the child writes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Message {
    Progress(f64),
    Report(ImportReport),
}

/// A started import child, waiting for its request. Starting it early (while the parent
/// connects, locks and downloads) hides its start-up: loading GDAL and registering its drivers.
/// Dropping it kills the process.
#[derive(Debug)]
pub struct ChildProcess {
    child: tokio::process::Child,
    program: String,
}

impl ChildProcess {
    /// Starts the program, confined: cleared environment ([`CHILD_ENV`] only), `limits`.
    pub fn spawn(command: &ChildCommand, limits: ChildLimits) -> Result<Self, ChildError> {
        let program = command.program.display().to_string();
        let mut process = tokio::process::Command::new(&command.program);
        process
            .args(&command.args)
            .env_clear()
            .envs(CHILD_ENV.iter().filter_map(|name| {
                std::env::var_os(name).map(|value| (OsString::from(name), value))
            }))
            .env("PROJ_NETWORK", "OFF")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        confine(&mut process, limits);
        let child = process.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ChildError::Missing {
                    program: program.clone(),
                }
            } else {
                ChildError::Spawn {
                    program: program.clone(),
                    message: e.to_string(),
                }
            }
        })?;
        Ok(ChildProcess { child, program })
    }

    /// Sends the request and waits for the report, killing the child at `deadline` or on
    /// `cancel`. `progress` gets the fraction done of each attempt.
    pub async fn run(
        self,
        request: &ImportRequest,
        deadline: Option<Instant>,
        cancel: &CancellationToken,
        progress: &mut (dyn FnMut(f64) + Send),
    ) -> Result<ImportReport, ChildError> {
        let ChildProcess { mut child, program } = self;
        let request_json = serde_json::to_vec(request).map_err(|e| ChildError::Spawn {
            program: program.clone(),
            message: e.to_string(),
        })?;
        if let Some(mut stdin) = child.stdin.take() {
            // A child that died at once shows up below as a missing report.
            let _ = stdin.write_all(&request_json).await;
            let _ = stdin.shutdown().await;
        }
        let stderr_task = child.stderr.take().map(|mut stderr| {
            tokio::spawn(async move {
                let mut kept: Vec<u8> = Vec::new();
                let mut buffer = [0u8; 4096];
                while let Ok(n) = stderr.read(&mut buffer).await {
                    if n == 0 {
                        break;
                    }
                    kept.extend_from_slice(&buffer[..n]);
                    if kept.len() > 2 * STDERR_KEPT {
                        kept.drain(..kept.len() - STDERR_KEPT);
                    }
                }
                let start = kept.len().saturating_sub(STDERR_KEPT);
                String::from_utf8_lossy(&kept[start..]).into_owned()
            })
        });
        let Some(stdout) = child.stdout.take() else {
            return Err(ChildError::Died {
                status: "no stdout".into(),
                stderr: String::new(),
            });
        };
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                line = lines.next_line() => match line {
                    Ok(Some(line)) => match serde_json::from_str::<Message>(&line) {
                        Ok(Message::Progress(fraction)) => progress(fraction),
                        Ok(Message::Report(r)) => {
                            // All done (the data is committed): let the child tear its memory
                            // down on its own time, and reap it in the background.
                            tokio::spawn(async move {
                                let _ = child.wait().await;
                            });
                            return Ok(r);
                        }
                        Err(_) => tracing::debug!(line = %line, "unexpected line from the import child"),
                    },
                    Ok(None) | Err(_) => break,
                },
                () = &mut sleep => {
                    let _ = child.kill().await;
                    return Err(ChildError::Timeout);
                }
                () = cancel.cancelled() => {
                    let _ = child.kill().await;
                    return Err(ChildError::Cancelled);
                }
            }
        }
        let status = tokio::select! {
            status = child.wait() => status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
            () = &mut sleep => {
                let _ = child.kill().await;
                return Err(ChildError::Timeout);
            }
        };
        let stderr = match stderr_task {
            Some(task) => task.await.unwrap_or_default(),
            None => String::new(),
        };
        Err(ChildError::Died { status, stderr })
    }
}

/// Sets the child's resource limits between fork and exec.
#[allow(unsafe_code)]
fn confine(process: &mut tokio::process::Command, limits: ChildLimits) {
    let set = move |resource, soft: u64, hard: u64| {
        let limit = libc::rlimit {
            rlim_cur: soft as libc::rlim_t,
            rlim_max: hard as libc::rlim_t,
        };
        // SAFETY: setrlimit is async-signal-safe and reads only `limit`, on this stack.
        if unsafe { libc::setrlimit(resource, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the closure only calls setrlimit (async-signal-safe), allocates nothing and
    // touches no lock, as code between fork and exec must.
    unsafe {
        process.pre_exec(move || {
            set(libc::RLIMIT_AS, limits.memory_bytes, limits.memory_bytes)?;
            set(
                libc::RLIMIT_CPU,
                limits.cpu_secs,
                limits.cpu_secs.saturating_add(5),
            )?;
            set(libc::RLIMIT_FSIZE, limits.file_bytes, limits.file_bytes)?;
            set(libc::RLIMIT_CORE, 0, 0)
        });
    }
}

/// The child's side, with the import given (the `hdx-jobs-import` crate gives GDAL's): calls
/// `prepare` (GDAL loads its drivers while the parent is still getting the file), reads the
/// request on `input`, unpacks the file when it is an archive, runs `import` on the request and
/// the file to import, writes progress and the report on `output`. Returns the process exit code
/// (0 when a report was written, whatever it says).
pub fn child_main(
    input: impl std::io::Read,
    output: impl Write,
    prepare: impl FnOnce(),
    import: impl FnOnce(&ImportRequest, &Path, &mut dyn FnMut(f64)) -> ImportReport,
) -> i32 {
    prepare();
    let mut output = std::io::LineWriter::new(output);
    let mut reader = std::io::BufReader::new(input);
    let mut text = String::new();
    if let Err(e) = reader.read_line(&mut text) {
        eprintln!("import child: cannot read the request: {e}");
        return 2;
    }
    let request: ImportRequest = match serde_json::from_str(&text) {
        Ok(request) => request,
        Err(e) => {
            eprintln!("import child: bad request: {e}");
            return 2;
        }
    };
    let source =
        match super::archive::layer_file(&request.source, &request.work_dir, request.archive) {
            Ok(source) => source,
            Err(failure) => return write_report(&mut output, ImportReport::unpack_failed(failure)),
        };
    let report = {
        let mut last = -1.0_f64;
        let mut write_progress = |fraction: f64| {
            if fraction - last >= 0.01 || (fraction >= 1.0 && last < 1.0) {
                last = fraction;
                if let Ok(line) = serde_json::to_string(&Message::Progress(fraction)) {
                    let _ = writeln!(output, "{line}");
                }
            }
        };
        import(&request, &source, &mut write_progress)
    };
    write_report(&mut output, report)
}

fn write_report(output: &mut impl Write, report: ImportReport) -> i32 {
    match serde_json::to_string(&Message::Report(report)) {
        Ok(line)
            if writeln!(output, "{line}")
                .and_then(|()| output.flush())
                .is_ok() =>
        {
            0
        }
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::archive::ArchiveLimits;

    #[test]
    fn the_default_child_is_hdx_jobs_import_beside_the_executable() {
        let command = ChildCommand::beside_current_exe().expect("current exe");
        let exe = std::env::current_exe().expect("current exe");
        assert_eq!(command.program.parent(), exe.parent());
        assert_eq!(command.program.file_name(), Some(IMPORT_PROGRAM.as_ref()));
        assert!(command.args.is_empty());
    }

    #[test]
    fn a_missing_program_says_what_geopreview_needs() {
        let missing = ChildCommand::new("/nonexistent/hdx-jobs-import");
        let error = missing.check().expect_err("missing");
        assert!(
            error
                .to_string()
                .starts_with("geopreview needs hdx-jobs-import beside hdx-jobs: "),
            "{error}"
        );
        assert!(ChildCommand::new("sh").check().is_ok(), "found on the PATH");
        assert!(ChildCommand::new("/bin/sh").check().is_ok());
    }

    #[test]
    fn the_child_side_reads_the_request_and_writes_progress_and_the_report() {
        let dir = std::env::temp_dir();
        let request = ImportRequest {
            source: dir.join("layer.geojson"),
            work_dir: dir.clone(),
            archive: ArchiveLimits {
                max_bytes: 1,
                max_entries: 1,
            },
            schema: "public".into(),
            table: "t".into(),
            conninfo: String::new(),
        };
        let input = serde_json::to_vec(&request).expect("json");
        let mut output = Vec::new();
        let mut prepared = false;
        let code = child_main(
            input.as_slice(),
            &mut output,
            || prepared = true,
            |got, source, progress| {
                assert_eq!(got.table, "t");
                assert_eq!(
                    source,
                    got.source.as_path(),
                    "not an archive: imported as it is"
                );
                for step in 0..=4 {
                    progress(f64::from(step) / 4.0);
                }
                ImportReport {
                    ok: true,
                    fixes: Vec::new(),
                    attempts: Vec::new(),
                    source_features: Some(3),
                    unpack_failure: None,
                    native_geojson: Default::default(),
                }
            },
        );
        assert_eq!(code, 0);
        assert!(prepared);
        let lines: Vec<Message> = String::from_utf8(output)
            .expect("utf-8")
            .lines()
            .map(|line| serde_json::from_str(line).expect("a protocol line"))
            .collect();
        assert_eq!(lines.len(), 6, "{lines:?}");
        assert!(matches!(lines[4], Message::Progress(f) if f >= 1.0));
        assert!(matches!(&lines[5], Message::Report(r) if r.ok && r.source_features == Some(3)));

        let mut output = Vec::new();
        let code = child_main(
            &b"not json\n"[..],
            &mut output,
            || (),
            |_, _, _| unreachable!("no import without a request"),
        );
        assert_eq!(code, 2);
        assert!(output.is_empty());
    }
}
