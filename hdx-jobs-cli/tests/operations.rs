//! What operators rely on: log levels named as the old service named them, a span per job,
//! an access log with the cause of every 5xx, and a stop that never strands a job.

mod common;

use std::time::{Duration, Instant};

use common::*;
use testkit::TestRedis;

/// Runs a burst worker on `q` with a failing job, with `env`; returns its log.
fn failing_job_log(env: &[(&str, &str)]) -> (String, String) {
    let test = TestRedis::new();
    let id = enqueue(
        &test,
        &[
            "--queue",
            "q",
            "--func",
            "hdx_jobs.fail",
            "--args",
            r#"["boom"]"#,
        ],
    )
    .remove(0);
    let mut worker = WorkerProcess::start_with_env(&test, &["work", "--burst", "q"], env);
    assert!(
        worker.wait(Duration::from_secs(30)).success(),
        "{}",
        worker.log()
    );
    (id, worker.log())
}

/// Regression: `LOG_LEVEL=WARNING` (the old logging config's name) silenced every line,
/// warnings included. Python's level names work in any case; `LOG_LEVEL_CONSOLE` applies too.
#[test]
fn regression_python_log_level_names_work() {
    let (id, log) = failing_job_log(&[("LOG_LEVEL", "WARNING")]);
    assert!(log.contains("WARN") && log.contains("job failed"), "{log}");
    assert!(log.contains(&id), "the failure line names the job: {log}");
    assert!(!log.contains(" INFO "), "no INFO line: {log}");

    let (_, log) = failing_job_log(&[("LOG_LEVEL", "critical")]);
    assert!(!log.contains("WARN") && !log.contains(" INFO "), "{log}");

    let (_, log) = failing_job_log(&[("LOG_LEVEL", "debug"), ("LOG_LEVEL_CONSOLE", "Warning")]);
    assert!(
        log.contains("job failed") && !log.contains(" INFO "),
        "{log}"
    );

    let test = TestRedis::new();
    let output = hdx_jobs(&test)
        .env("LOG_LEVEL", "verbose")
        .args(["info"])
        .output()
        .expect("run");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown log level"));
}

/// Every line logged while a job runs carries its job id, queue and task (a span per job),
/// in JSON lines too.
#[test]
fn job_log_lines_carry_the_job() {
    let (id, log) = failing_job_log(&[("LOG_LEVEL", "info"), ("HDX_LOG_FORMAT", "json")]);
    let line = log
        .lines()
        .find(|l| l.contains("job failed"))
        .unwrap_or_else(|| panic!("no failure line: {log}"));
    let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
    let span = &value["span"];
    assert_eq!(span["job_id"], id.as_str(), "{line}");
    assert_eq!(span["queue"], "q", "{line}");
    assert_eq!(span["func"], "hdx_jobs.fail", "{line}");
}

/// SIGTERM with `--shutdown-timeout 2` during a 60 s job: the process exits within seconds and
/// the job is back at the front of its queue (retries untouched), never left started.
#[test]
fn a_stop_puts_unfinished_jobs_back_in_their_queue() {
    let test = TestRedis::new();
    let long = enqueue(
        &test,
        &["--queue", "q", "--func", "hdx_jobs.sleep", "--args", "[60]"],
    )
    .remove(0);
    let mut worker = WorkerProcess::start(&test, &["--shutdown-timeout", "2", "q"]);
    testkit::eventually("the job to start", Duration::from_secs(20), || {
        status(&test, &long).filter(|s| s == "started")
    });
    let stopped_at = Instant::now();
    worker.signal(libc::SIGTERM);
    assert!(
        worker.wait(Duration::from_secs(20)).success(),
        "{}",
        worker.log()
    );
    assert!(
        stopped_at.elapsed() < Duration::from_secs(10),
        "{:?}",
        stopped_at.elapsed()
    );
    assert_eq!(status(&test, &long).as_deref(), Some("queued"));
    let queue: Vec<String> = test.query(
        testkit::redis::cmd("LRANGE")
            .arg("rq:queue:q")
            .arg(0)
            .arg(-1),
    );
    assert_eq!(queue, vec![long.clone()]);
    let wip: Vec<String> = test.query(testkit::redis::cmd("ZRANGE").arg("rq:wip:q").arg(0).arg(-1));
    assert!(wip.is_empty(), "{wip:?}");
    assert!(
        worker.log().contains("shutdown timeout"),
        "{}",
        worker.log()
    );
}

/// One access-log line per request (method, route, status, duration), and an error line with
/// the cause for every 5xx (before, a 500 answered to CKAN left no trace).
#[test]
fn the_api_logs_every_request_and_the_cause_of_5xx() {
    let test = TestRedis::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    // Redis at an address where nothing listens: enqueueing fails with a 500.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let bind = format!("127.0.0.1:{port}");
    let server = WorkerProcess::start_exact(
        &[
            "serve",
            "--url",
            &format!("redis://127.0.0.1:{dead}/0"),
            "--bind",
            &bind,
        ],
        &[("HDX_JOBS_BIND", "0.0.0.0:1")],
    );
    let api = format!("http://{bind}");
    testkit::eventually("the API to answer", Duration::from_secs(30), || {
        ureq::get(&format!("{api}/healthz")).call().ok()
    });
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let answer = agent
        .post(&format!("{api}/api/send-analytics"))
        .header("Content-Type", "application/json")
        .send(r#"{"event_name": "x", "send_ga": true, "ga_meta": {"cid": "c"}}"#)
        .expect("POST");
    assert_eq!(answer.status().as_u16(), 500);
    let log = testkit::eventually("the error line", Duration::from_secs(10), || {
        let log = server.log();
        log.contains("request failed").then_some(log)
    });
    let error = log
        .lines()
        .find(|l| l.contains("request failed"))
        .unwrap_or("");
    assert!(
        error.contains("ERROR") && error.contains("/api/send-analytics") && error.contains("500"),
        "{error}"
    );
    assert!(error.contains("cause="), "{error}");
    assert!(
        log.lines().any(|l| l.contains("INFO")
            && l.contains("route=\"/healthz\"")
            && l.contains("status=200")),
        "{log}"
    );
    drop(test);
}
