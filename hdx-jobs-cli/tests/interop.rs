//! Interoperability with the real Python rq 2.12, both directions.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use testkit::{rq_peer, rq_peer_json, TestRedis};

#[test]
fn python_jobs_with_json_and_pickle_run_on_the_rust_worker() {
    let test = TestRedis::new();
    let url = test.url();
    let mut ids = Vec::new();
    for serializer in ["json", "pickle"] {
        let echo = rq_peer(
            url,
            &[
                "enqueue",
                "--serializer",
                serializer,
                "--func",
                "hdx_jobs.echo",
                "--args",
                r#"[{"import_id": 42}, "São"]"#,
                "--kwargs",
                r#"{"flag": true}"#,
            ],
        );
        let fail = rq_peer(
            url,
            &[
                "enqueue",
                "--serializer",
                serializer,
                "--func",
                "hdx_jobs.fail",
                "--args",
                r#"["boom from python"]"#,
            ],
        );
        ids.push((serializer, echo, fail));
    }

    run_ok(&test, &["work", "--burst", "default"]);

    for (serializer, echo, fail) in ids {
        let done = rq_peer_json(url, &["fetch", &echo, "--serializer", serializer]);
        assert_eq!(done["status"], "finished", "{serializer}: {done}");
        assert_eq!(
            done["return_value"],
            json!({"args": [{"import_id": 42}, "São"], "kwargs": {"flag": true}}),
            "{serializer}"
        );
        let failed = rq_peer_json(url, &["fetch", &fail, "--serializer", serializer]);
        assert_eq!(failed["status"], "failed", "{serializer}: {failed}");
        let text = failed["exc_string"].as_str().expect("exc_string");
        assert!(
            text.contains("TaskFailed: boom from python"),
            "{serializer}: {text}"
        );
    }
}

#[test]
fn rust_jobs_run_on_a_python_worker_and_hdx_jobs_reads_the_results() {
    let test = TestRedis::new();
    let add = enqueue(
        &test,
        &["--queue", "py", "--func", "pyjobs.add", "--args", "[2, 3]"],
    );
    let fail = enqueue(
        &test,
        &[
            "--queue",
            "py",
            "--func",
            "pyjobs.fail",
            "--args",
            r#"["python says no"]"#,
        ],
    );
    let kw = enqueue(
        &test,
        &[
            "--queue",
            "py",
            "--func",
            "pyjobs.echo",
            "--kwargs",
            r#"{"x": [1, 2]}"#,
        ],
    );

    // hdx-jobs writes pickle by default: a Python worker with RQ's default serializer runs them.
    rq_peer(test.url(), &["work", "py"]);

    let shown = show(&test, &add[0]);
    assert_eq!(shown["status"], "finished");
    assert_eq!(shown["latest_result"]["return_value"], json!(5));
    assert_eq!(shown["func_name"], "pyjobs.add");
    assert_eq!(
        show(&test, &kw[0])["latest_result"]["return_value"],
        json!({"args": [], "kwargs": {"x": [1, 2]}})
    );
    let failed = show(&test, &fail[0]);
    assert_eq!(failed["status"], "failed");
    let text = failed["latest_result"]["exc_string"].as_str().expect("exc");
    assert!(text.contains("ValueError: python says no"), "{text}");
    // The human form shows the same.
    let text = run_ok(&test, &["job", "show", &fail[0]]);
    assert!(
        text.contains("status:      failed") && text.contains("ValueError: python says no"),
        "{text}"
    );
}

#[test]
fn rq_info_lists_the_rust_worker_and_leaves_its_running_jobs_alone() {
    let test = TestRedis::new();
    let id = enqueue(
        &test,
        &[
            "--queue",
            "geo_q",
            "--func",
            "hdx_jobs.sleep",
            "--args",
            // Long enough to outlast four Python start-ups on a loaded machine.
            "[15]",
        ],
    )
    .remove(0);
    // Default lease settings, as deployed.
    let worker = WorkerProcess::start(&test, &["--name", "rust-worker-1", "geo_q", "analytics_q"]);
    testkit::eventually("the job to start", Duration::from_secs(20), || {
        (status(&test, &id).as_deref() == Some("started")).then_some(())
    });

    for _ in 0..3 {
        let output = std::process::Command::new(testkit::rq_cli())
            .args(["info", "-u", test.url()])
            .output()
            .expect("rq info");
        testkit::check(&output, "rq info");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("rust-worker-1"), "{text}");
        assert!(text.contains("busy"), "{text}");
        assert!(
            text.contains("geo_q, analytics_q") || text.contains("geo_q,analytics_q"),
            "{text}"
        );
        assert!(
            text.contains("geo_q        | 0, 1 executing") || text.contains("1 executing"),
            "{text}"
        );
    }
    let workers = rq_peer_json(test.url(), &["workers"]);
    assert_eq!(workers[0]["name"], "rust-worker-1");
    assert_eq!(workers[0]["queues"], json!(["geo_q", "analytics_q"]));
    assert_eq!(workers[0]["state"], "busy");

    testkit::eventually("the job to finish", Duration::from_secs(40), || {
        status(&test, &id).filter(|s| s != "started")
    });
    assert_eq!(
        status(&test, &id).as_deref(),
        Some("finished"),
        "rq info must not fail a live job"
    );
    drop(worker);
}
