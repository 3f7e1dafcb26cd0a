//! GDAL only where it is used: `hdx-jobs` (worker, server, every command) neither links nor loads
//! libgdal, whose hundred-odd shared libraries would cost each process tens of MB of memory and
//! tens of ms at start; `hdx-jobs-import`, the geopreview import child installed beside it, does.
//! Checked on the executables (`readelf -d`: libgdal is not NEEDED) and on running processes
//! (`/proc/<pid>/maps` of an idle worker and an idle server has no libgdal). That the import child
//! still imports is tested in tests/geopreview.rs.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::WorkerProcess;
use testkit::TestRedis;

const HDX_JOBS: &str = env!("CARGO_BIN_EXE_hdx-jobs");
const HDX_JOBS_IMPORT: &str = env!("CARGO_BIN_EXE_hdx-jobs-import");

/// The shared libraries an executable names (`readelf -d`, binutils).
fn needed(binary: &str) -> Vec<String> {
    let output = Command::new("readelf")
        .args(["-d", binary])
        .output()
        .expect("readelf (binutils, installed with the C toolchain) runs");
    testkit::check(&output, &format!("readelf -d {binary}"));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.contains("(NEEDED)"))
        .filter_map(|line| line.split('[').nth(1)?.split(']').next())
        .map(str::to_string)
        .collect()
}

/// The files a process has mapped.
fn mapped(pid: u32) -> Vec<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let mut files: Vec<String> = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| path.starts_with('/'))
        .map(str::to_string)
        .collect();
    files.dedup();
    files
}

fn is_gdal(path: &str) -> bool {
    Path::new(path)
        .file_name()
        .is_some_and(|name| name.to_string_lossy().starts_with("libgdal"))
}

#[test]
fn only_the_import_executable_links_gdal() {
    let main = needed(HDX_JOBS);
    assert!(main.iter().any(|l| l.starts_with("libc.")), "{main:?}");
    assert!(
        !main.iter().any(|l| is_gdal(l)),
        "hdx-jobs links GDAL: {main:?}"
    );
    let import = needed(HDX_JOBS_IMPORT);
    assert!(import.iter().any(|l| is_gdal(l)), "{import:?}");
    assert_eq!(
        Path::new(HDX_JOBS_IMPORT).parent(),
        Path::new(HDX_JOBS).parent(),
        "cargo builds hdx-jobs-import beside hdx-jobs, where the worker looks for it"
    );
}

#[test]
fn an_idle_worker_and_server_do_not_load_gdal_and_the_import_child_does() {
    let test = TestRedis::new();
    let worker = WorkerProcess::start(&test, &["geo_q"]);
    testkit::eventually("the worker to register", Duration::from_secs(30), || {
        let workers: Vec<String> = test.query(testkit::redis::cmd("SMEMBERS").arg("rq:workers"));
        (!workers.is_empty()).then_some(())
    });
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let bind = format!("127.0.0.1:{port}");
    let server = WorkerProcess::start_with_env(&test, &["serve", "--bind", &bind], &[]);
    testkit::eventually("the API to answer", Duration::from_secs(30), || {
        ureq::get(&format!("http://{bind}/healthz")).call().ok()
    });
    for (what, process) in [("worker", &worker), ("server", &server)] {
        let files = mapped(process.child.id());
        assert!(files.iter().any(|f| f.contains("libc")), "{files:?}");
        let gdal: Vec<&String> = files.iter().filter(|f| is_gdal(f)).collect();
        assert!(gdal.is_empty(), "the idle {what} maps {gdal:?}");
    }
    assert!(
        !worker.log().contains("hdx-jobs-import"),
        "the worker found its import child:\n{}",
        worker.log()
    );

    // The import child loads GDAL (and its drivers) at once, then waits for its request.
    let mut child = Command::new(HDX_JOBS_IMPORT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hdx-jobs-import");
    let pid = child.id();
    testkit::eventually(
        "the import child to map libgdal",
        Duration::from_secs(30),
        || mapped(pid).iter().any(|f| is_gdal(f)).then_some(()),
    );
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"not a request\n")
        .expect("write");
    let output = child.wait_with_output().expect("wait");
    assert_eq!(output.status.code(), Some(2), "a bad request: exit 2");
    assert!(output.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("bad request"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_import_executable_answers_version_and_refuses_arguments() {
    let output = Command::new(HDX_JOBS_IMPORT)
        .arg("--version")
        .output()
        .expect("run");
    testkit::check(&output, "hdx-jobs-import --version");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("hdx-jobs-import {}", env!("CARGO_PKG_VERSION"))
    );
    let output = Command::new(HDX_JOBS_IMPORT)
        .args(["geopreview", "import-child"])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
}
