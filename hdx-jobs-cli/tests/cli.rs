//! The command line: flags, output and exit codes.

mod common;

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use testkit::redis;
use testkit::TestRedis;

#[test]
fn enqueue_flags_reach_the_job() {
    let test = TestRedis::new();
    let ids = enqueue(
        &test,
        &[
            "--queue",
            "geo_q",
            "--func",
            "hdx_jobs.echo",
            "--args",
            "[1]",
            "--kwargs",
            r#"{"a": "b"}"#,
            "--timeout",
            "300",
            "--retry",
            "3",
            "--retry-interval",
            "10,30",
            "--result-ttl",
            "-1",
            "--description",
            "demo",
            "--id",
            "my-job_1",
        ],
    );
    assert_eq!(ids, vec!["my-job_1"]);
    let shown = show(&test, "my-job_1");
    assert_eq!(shown["status"], "queued");
    assert_eq!(shown["origin"], "geo_q");
    assert_eq!(shown["args"], json!([1]));
    assert_eq!(shown["kwargs"], json!({"a": "b"}));
    assert_eq!(shown["timeout"], json!(300));
    assert_eq!(shown["retries_left"], json!(3));
    assert_eq!(shown["description"], "demo");
    let fields: Vec<String> = test.query(
        redis::cmd("HMGET")
            .arg("rq:job:my-job_1")
            .arg("retry_intervals")
            .arg("result_ttl"),
    );
    assert_eq!(fields, vec!["[10, 30]", "-1"]);

    let many = enqueue(
        &test,
        &[
            "--queue",
            "bulk",
            "--func",
            "hdx_jobs.noop",
            "--count",
            "25",
        ],
    );
    assert_eq!(many.len(), 25);
    let len: u64 = test.query(redis::cmd("LLEN").arg("rq:queue:bulk"));
    assert_eq!(len, 25);

    let later = enqueue(
        &test,
        &[
            "--queue",
            "later",
            "--func",
            "hdx_jobs.noop",
            "--at",
            "2099-01-01T00:00:00Z",
        ],
    );
    assert_eq!(show(&test, &later[0])["status"], "scheduled");
    let score: f64 = test.query(
        redis::cmd("ZSCORE")
            .arg("rq:scheduled:later")
            .arg(&later[0]),
    );
    assert_eq!(score, 4_070_908_800.0);
}

#[test]
fn timeout_defaults_to_rq_worker_timeout() {
    let test = TestRedis::new();
    let output = hdx_jobs(&test)
        .env("RQ_WORKER_TIMEOUT", "300")
        .args(["enqueue", "--queue", "q", "--func", "hdx_jobs.noop"])
        .output()
        .expect("run");
    testkit::check(&output, "enqueue");
    let id = String::from_utf8_lossy(&output.stdout).trim().to_string();
    assert_eq!(show(&test, &id)["timeout"], json!(300));
}

#[test]
fn bad_input_gets_a_clear_error_and_a_failure_exit() {
    let test = TestRedis::new();
    for (args, needle) in [
        (
            vec![
                "enqueue",
                "--queue",
                "q",
                "--func",
                "f",
                "--args",
                "{not json",
            ],
            "--args must be a JSON array",
        ),
        (
            vec!["enqueue", "--queue", "q", "--func", "f", "--kwargs", "[1]"],
            "--kwargs must be a JSON object",
        ),
        (
            vec!["enqueue", "--queue", "bad queue", "--func", "f"],
            "invalid queue name",
        ),
        (
            vec!["enqueue", "--queue", "q", "--func", "f", "--id", "a:b"],
            "invalid job id",
        ),
        (
            vec!["enqueue", "--queue", "q", "--func", "f", "--at", "tomorrow"],
            "neither RFC 3339",
        ),
        (vec!["job", "show", "nope"], "no such job"),
        (
            vec!["work", "--concurrency", "0", "q"],
            "concurrency must be at least 1",
        ),
    ] {
        let output = run(&test, &args);
        assert!(!output.status.success(), "{args:?} must fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    let len: u64 = test.query(redis::cmd("LLEN").arg("rq:queue:q"));
    assert_eq!(len, 0, "nothing enqueued by failed commands");
}

#[test]
fn info_requeue_empty_suspend_and_resume() {
    let test = TestRedis::new();
    let failing = enqueue(
        &test,
        &[
            "--queue",
            "q",
            "--func",
            "hdx_jobs.fail",
            "--args",
            r#"["x"]"#,
            "--count",
            "2",
        ],
    );
    enqueue(
        &test,
        &[
            "--queue",
            "other",
            "--func",
            "hdx_jobs.noop",
            "--count",
            "3",
        ],
    );
    run_ok(&test, &["work", "--burst", "q"]);

    let info: Value = serde_json::from_str(&run_ok(&test, &["info", "--json"])).expect("json");
    let q = info["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .find(|q| q["name"] == "q")
        .expect("q")
        .clone();
    assert_eq!(
        (q["queued"].as_u64(), q["failed"].as_u64()),
        (Some(0), Some(2))
    );
    let other = info["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .find(|q| q["name"] == "other")
        .expect("other")
        .clone();
    assert_eq!(other["queued"].as_u64(), Some(3));
    // Latency: how long the next job has waited; none for a queue with nothing waiting.
    assert!(other["latency_seconds"].as_f64().expect("latency") > 0.0);
    assert_eq!(q["latency_seconds"].as_f64(), Some(0.0));
    let text = run_ok(&test, &["info"]);
    assert!(
        text.contains("other") && text.contains("latency") && text.contains("0 workers"),
        "{text}"
    );

    assert!(run_ok(&test, &["requeue", &failing[0]]).contains("requeued"));
    assert_eq!(status(&test, &failing[0]).as_deref(), Some("queued"));
    assert!(
        !run(&test, &["requeue", &failing[0]]).status.success(),
        "not failed any more"
    );
    assert!(run_ok(&test, &["requeue", "--all", "--queue", "q"]).contains("1 jobs requeued"));
    assert_eq!(status(&test, &failing[1]).as_deref(), Some("queued"));

    assert!(run_ok(&test, &["empty", "other"]).contains("3 jobs removed"));

    run_ok(&test, &["suspend"]);
    let mut worker = WorkerProcess::start(&test, &["--burst", "q"]);
    assert!(
        worker.wait(Duration::from_secs(20)).success(),
        "a burst worker exits when suspended"
    );
    assert_eq!(
        status(&test, &failing[0]).as_deref(),
        Some("queued"),
        "suspended: nothing taken"
    );
    run_ok(&test, &["resume"]);
    run_ok(&test, &["work", "--burst", "q"]);
    assert_eq!(status(&test, &failing[0]).as_deref(), Some("failed"));
}

#[test]
fn job_stop_cancel_and_delete() {
    let test = TestRedis::new();
    let long = enqueue(
        &test,
        &["--queue", "q", "--func", "hdx_jobs.sleep", "--args", "[60]"],
    )
    .remove(0);
    let _worker = WorkerProcess::start(&test, &["q"]);
    testkit::eventually("job started", Duration::from_secs(20), || {
        (status(&test, &long).as_deref() == Some("started")).then_some(())
    });
    run_ok(&test, &["job", "stop", &long]);
    testkit::eventually("job stopped", Duration::from_secs(20), || {
        (status(&test, &long).as_deref() == Some("stopped")).then_some(())
    });

    let later = enqueue(
        &test,
        &["--queue", "q", "--func", "hdx_jobs.noop", "--in", "3600"],
    )
    .remove(0);
    run_ok(&test, &["job", "cancel", &later]);
    assert_eq!(status(&test, &later).as_deref(), Some("canceled"));
    run_ok(&test, &["job", "delete", &later]);
    assert_eq!(status(&test, &later), None);
    assert!(!run(&test, &["job", "delete", &later]).status.success());
}

/// How long a watch may take to show what the test waits for, or to exit.
const WATCH_WAIT: Duration = Duration::from_secs(20);

/// `hdx-jobs ARGS` in the background with stdout and stderr on pipes (so stdout is not a
/// terminal, as when piped to a log), each drained by a thread into a buffer the test polls.
/// Killed on drop.
struct Watcher {
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    drains: Vec<JoinHandle<()>>,
}

impl Watcher {
    fn start(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hdx-jobs");
        let (stdout, out_drain) = drain(child.stdout.take().expect("stdout pipe"));
        let (stderr, err_drain) = drain(child.stderr.take().expect("stderr pipe"));
        Watcher {
            child,
            stdout,
            stderr,
            drains: vec![out_drain, err_drain],
        }
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().expect("stdout buffer")).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().expect("stderr buffer")).into_owned()
    }

    /// Polls stdout until `done` holds; returns it.
    fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        testkit::eventually(what, WATCH_WAIT, || {
            let out = self.stdout();
            done(&out).then_some(out)
        })
    }

    fn terminate(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success());
    }

    /// Waits for the exit, then for the drains to reach the end of the pipes, so the buffers
    /// hold everything the process wrote.
    fn wait(&mut self) -> ExitStatus {
        let status = testkit::eventually("hdx-jobs to exit", WATCH_WAIT, || {
            self.child.try_wait().ok().flatten()
        });
        for drain in self.drains.drain(..) {
            drain.join().expect("drain thread");
        }
        status
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- stdout ---\n{}\n--- stderr ---\n{}",
                self.stdout(),
                self.stderr()
            );
        }
    }
}

/// Copies everything `pipe` yields into a shared buffer, from a thread of its own that ends
/// at the end of the pipe.
fn drain(mut pipe: impl Read + Send + 'static) -> (Arc<Mutex<Vec<u8>>>, JoinHandle<()>) {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&buffer);
    let thread = std::thread::spawn(move || {
        let mut chunk = [0; 4096];
        while let Ok(n @ 1..) = pipe.read(&mut chunk) {
            sink.lock().expect("buffer").extend_from_slice(&chunk[..n]);
        }
    });
    (buffer, thread)
}

/// The `queued` column of `queue`'s row in any frame of `info`'s text, if the row is there.
fn queued_in_text(out: &str, queue: &str) -> Option<u64> {
    out.lines().find_map(|line| {
        let mut columns = line.split_whitespace();
        (columns.next() == Some(queue)).then(|| columns.next()?.parse().ok())?
    })
}

/// The header lines of `info --watch`'s text frames (they name the Redis URL).
fn headers<'a>(out: &'a str, url: &str) -> Vec<&'a str> {
    out.lines().filter(|line| line.contains(url)).collect()
}

#[test]
fn info_watch_redraws_until_sigterm() {
    let test = TestRedis::new();
    let mut command = hdx_jobs(&test);
    command.args(["info", "--watch", "--interval", "0.2"]);
    let mut watch = Watcher::start(command);
    let first = watch.wait_for("the first frame", |out| out.contains("\n0 workers\n"));
    assert_eq!(queued_in_text(&first, "watched"), None, "{first}");

    enqueue(&test, &["--queue", "watched", "--func", "hdx_jobs.noop"]);
    watch.wait_for("a frame with the job waiting", |out| {
        queued_in_text(out, "watched") == Some(1)
    });
    watch.terminate();
    assert!(watch.wait().success(), "SIGTERM ends a watch with success");

    let out = watch.stdout();
    assert!(
        !out.contains('\x1b'),
        "no escape codes off a terminal: {out:?}"
    );
    let headers = headers(&out, test.url());
    assert!(headers.len() >= 2, "{out}");
    for header in &headers {
        let time = header.split_whitespace().next().unwrap_or("");
        assert!(
            time.len() == 20 && time.as_bytes()[10] == b'T' && time.ends_with('Z'),
            "RFC 3339 seconds, UTC: {header}"
        );
    }
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].contains(test.url()),
        "a frame starts with its header"
    );
    for (i, line) in lines.iter().enumerate().skip(1) {
        if line.contains(test.url()) {
            assert_eq!(
                lines[i - 1],
                "",
                "frames are separated by a blank line: {out}"
            );
        }
    }
}

#[test]
fn info_watch_json_prints_one_document_per_line() {
    let test = TestRedis::new();
    enqueue(&test, &["--queue", "watched", "--func", "hdx_jobs.noop"]);
    let mut command = hdx_jobs(&test);
    command.args(["info", "--watch", "--json", "--interval", "0.2"]);
    let mut watch = Watcher::start(command);
    let out = watch.wait_for("two frames", |out| out.lines().count() >= 2);
    watch.terminate();
    assert!(watch.wait().success());
    for line in out.lines() {
        let frame: Value = serde_json::from_str(line).expect("one JSON document per line");
        assert!(
            frame["time"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{line}"
        );
        assert_eq!(frame["queues"][0]["name"], "watched", "{line}");
        assert_eq!(frame["queues"][0]["queued"], 1, "{line}");
        assert!(frame["workers"].is_array(), "{line}");
    }
}

#[test]
fn info_watch_shows_redis_errors_and_keeps_going() {
    // Nothing listens on port 1: every frame, the first included, fails to reach Redis.
    let mut command = Command::new(env!("CARGO_BIN_EXE_hdx-jobs"));
    command
        .args(["--url", "redis://:hunter2@127.0.0.1:1/0"])
        .args(["info", "--watch", "--interval", "0.2"])
        .env("LOG_LEVEL", "warn")
        .env_remove("RUST_LOG");
    let mut watch = Watcher::start(command);
    let out = watch.wait_for("two error frames", |out| {
        out.lines().filter(|l| l.starts_with("error: ")).count() >= 2
    });
    watch.terminate();
    assert!(
        watch.wait().success(),
        "a watch of an unreachable Redis still stops cleanly"
    );
    assert_eq!(
        headers(&out, "redis://:***@127.0.0.1:1/0").len(),
        out.lines().filter(|l| l.starts_with("error: ")).count(),
        "each error is a frame of its own, under its header: {out}"
    );
    assert!(!out.contains("hunter2"), "the password is masked: {out}");
}

#[test]
fn info_interval_must_be_a_sane_number_of_seconds() {
    let test = TestRedis::new();
    for interval in ["0", "0.05", "-1", "inf", "NaN", "soon"] {
        let mut command = hdx_jobs(&test);
        command.args(["info", "--watch", "--interval", interval]);
        // Started in the background: were the interval accepted, the watch would never end.
        let mut refused = Watcher::start(command);
        assert!(!refused.wait().success(), "--interval {interval} must fail");
        let stderr = refused.stderr();
        let reason = match interval {
            "soon" => "not a number of seconds",
            _ => "finite number of seconds, at least 0.1",
        };
        assert!(
            stderr.contains("--interval") && stderr.contains(reason),
            "{interval}: {stderr}"
        );
        assert!(refused.stdout().is_empty(), "{interval}: no frame drawn");
    }
}
