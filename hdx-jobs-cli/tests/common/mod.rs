//! Helpers for the CLI's integration tests: run `hdx-jobs`, start worker processes.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use testkit::TestRedis;

/// Flags that make a worker recover dead workers' jobs within seconds: leases of 3 s renewed
/// every second, maintenance twice a second.
pub const FAST: [&str; 6] = [
    "--job-monitoring-interval",
    "1",
    "--lease-grace",
    "2",
    "--maintenance-interval",
    "0.5",
];

/// The `hdx-jobs` command on a test database.
pub fn hdx_jobs(test: &TestRedis) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hdx-jobs"));
    cmd.arg("--url")
        .arg(test.url())
        .env("LOG_LEVEL", "warn")
        .env_remove("RUST_LOG");
    cmd
}

/// Runs `hdx-jobs ARGS` and asserts success; returns stdout.
pub fn run_ok(test: &TestRedis, args: &[&str]) -> String {
    let output = hdx_jobs(test).args(args).output().expect("run hdx-jobs");
    testkit::check(&output, &format!("hdx-jobs {}", args.join(" ")));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `hdx-jobs ARGS` and returns the raw output.
pub fn run(test: &TestRedis, args: &[&str]) -> Output {
    hdx_jobs(test).args(args).output().expect("run hdx-jobs")
}

/// Enqueues and returns the job ids.
pub fn enqueue(test: &TestRedis, args: &[&str]) -> Vec<String> {
    let mut all = vec!["enqueue"];
    all.extend_from_slice(args);
    run_ok(test, &all).lines().map(str::to_string).collect()
}

/// `hdx-jobs job show ID --json`.
pub fn show(test: &TestRedis, id: &str) -> Value {
    serde_json::from_str(&run_ok(test, &["job", "show", id, "--json"])).expect("json")
}

/// A worker process; its log goes to a file shown if the test fails.
pub struct WorkerProcess {
    pub child: Child,
    pub log: PathBuf,
}

impl WorkerProcess {
    /// Starts `hdx-jobs work ARGS`.
    pub fn start(test: &TestRedis, args: &[&str]) -> Self {
        let mut all = vec!["work"];
        all.extend_from_slice(args);
        Self::start_command(test, &all)
    }

    /// Starts `hdx-jobs ARGS` (any long-running subcommand).
    pub fn start_command(test: &TestRedis, args: &[&str]) -> Self {
        Self::start_with_env(test, args, &[])
    }

    /// Starts `hdx-jobs ARGS` with extra environment variables.
    pub fn start_with_env(test: &TestRedis, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = hdx_jobs(test);
        command
            .env("LOG_LEVEL", "info")
            .envs(env.iter().copied())
            .args(args);
        Self::spawn(command)
    }

    /// Starts `hdx-jobs ARGS` exactly as given (no `--url`: the arguments carry it), with a
    /// clean logging environment.
    pub fn start_exact(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hdx-jobs"));
        command
            .env_remove("RUST_LOG")
            .env("LOG_LEVEL", "info")
            .envs(env.iter().copied())
            .args(args);
        Self::spawn(command)
    }

    fn spawn(mut command: Command) -> Self {
        let log = testkit::temp_path("hdx-jobs-worker").with_extension("log");
        let file = std::fs::File::create(&log).expect("log file");
        let child = command
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start hdx-jobs");
        WorkerProcess { child, log }
    }

    /// Sends a signal.
    pub fn signal(&self, signal: i32) {
        // SAFETY-free: libc::kill with a pid we own.
        let rc = unsafe_kill(self.child.id() as i32, signal);
        assert_eq!(rc, 0, "kill({signal})");
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        testkit::eventually("worker process to exit", timeout, || {
            self.child.try_wait().ok().flatten()
        })
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- worker log ({}) ---\n{}",
                self.log.display(),
                self.log()
            );
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

#[allow(unsafe_code)]
fn unsafe_kill(pid: i32, signal: i32) -> i32 {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, signal) }
}

/// A job's status straight from Redis.
pub fn status(test: &TestRedis, id: &str) -> Option<String> {
    test.query(
        testkit::redis::cmd("HGET")
            .arg(format!("rq:job:{id}"))
            .arg("status"),
    )
}
