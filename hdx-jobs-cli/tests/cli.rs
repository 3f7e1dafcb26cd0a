//! The command line: flags, output and exit codes.

mod common;

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
