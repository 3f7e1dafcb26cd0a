//! The cutover from the Python service, with its Python side still attached to the same Redis:
//! the old worker command line, rq 1.13 and rq 2.12 producers and workers, and rq-dashboard
//! (0.7.1.2 as the old service mounted it, on rq 1.13; 0.9 on rq 2.12) reading everything
//! hdx-jobs writes. Jobs are written with pickle, RQ's default serializer, so every Python
//! reader with its defaults can read them.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use testkit::{rq113_peer, rq_peer, rq_peer_json, TestRedis};

/// The old deployment's command line (`hdxrq.py worker --url redis://H:P/1 --name worker-<ip>
/// --worker-ttl 600 geo_q analytics_q`) with `hdx-jobs` in its place runs jobs enqueued by
/// rq 1.13 and by rq 2.12 with their default serializer, and both read the results.
#[test]
fn the_old_worker_command_line_runs_jobs_of_rq_113_and_rq_212() {
    let test = TestRedis::new();
    let url = test.url();
    let old = rq113_peer(
        url,
        &[
            "enqueue",
            "--queue",
            "geo_q",
            "--func",
            "hdx_jobs.echo",
            "--args",
            "[1.13]",
        ],
    );
    let new = rq_peer(
        url,
        &[
            "enqueue",
            "--queue",
            "analytics_q",
            "--func",
            "hdx_jobs.echo",
            "--args",
            "[2.12]",
        ],
    );
    let worker = WorkerProcess::start_exact(
        &[
            "worker",
            "--url",
            url,
            "--name",
            "worker-10.0.0.7",
            "--worker-ttl",
            "600",
            "geo_q",
            "analytics_q",
        ],
        &[],
    );
    for id in [&old, &new] {
        testkit::eventually("the job to finish", Duration::from_secs(30), || {
            status(&test, id).filter(|s| s == "finished")
        });
    }
    let from_113: Value =
        serde_json::from_str(&rq113_peer(url, &["fetch", &old])).expect("rq 1.13 fetch");
    assert_eq!(from_113["status"], "finished", "{from_113}");
    assert_eq!(
        from_113["return_value"],
        json!({"args": [1.13], "kwargs": {}})
    );
    let from_212 = rq_peer_json(url, &["fetch", &new]);
    assert_eq!(
        from_212["return_value"],
        json!({"args": [2.12], "kwargs": {}})
    );
    assert_eq!(from_212["worker_name"], "worker-10.0.0.7");
    let workers = rq_peer_json(url, &["workers"]);
    assert_eq!(workers[0]["name"], "worker-10.0.0.7");
    assert_eq!(workers[0]["queues"], json!(["geo_q", "analytics_q"]));
    drop(worker);
}

/// An rq 1.13 `SimpleWorker` with its default serializer runs a job enqueued by
/// `hdx-jobs enqueue`, and each side reads the other's result.
#[test]
fn an_rq_113_worker_runs_a_job_enqueued_by_hdx_jobs() {
    let test = TestRedis::new();
    let id = enqueue(
        &test,
        &["--queue", "py", "--func", "pyjobs.add", "--args", "[2, 3]"],
    )
    .remove(0);
    let kw = enqueue(
        &test,
        &[
            "--queue",
            "py",
            "--func",
            "pyjobs.echo",
            "--kwargs",
            r#"{"city": "São Paulo"}"#,
        ],
    )
    .remove(0);
    rq113_peer(test.url(), &["work", "py"]);
    let fetched: Value =
        serde_json::from_str(&rq113_peer(test.url(), &["fetch", &id])).expect("fetch");
    assert_eq!(
        (fetched["status"].clone(), fetched["return_value"].clone()),
        (json!("finished"), json!(5))
    );
    assert_eq!(show(&test, &id)["latest_result"]["return_value"], json!(5));
    assert_eq!(
        show(&test, &kw)["latest_result"]["return_value"],
        json!({"args": [], "kwargs": {"city": "São Paulo"}})
    );
}

/// rq-dashboard, as operators keep it open during the cutover, lists the queued, started,
/// finished and failed jobs of queues worked by hdx-jobs, and jobs enqueued by hdx-jobs through
/// the CLI and the HTTP API, with no error (before: HTTP 500, `_pickle.UnpicklingError:
/// invalid load key, '{'` on the finished list, because hdx-jobs wrote JSON).
#[test]
fn rq_dashboard_lists_the_jobs_hdx_jobs_writes() {
    let test = TestRedis::new();
    let url = test.url();
    let ok = enqueue(
        &test,
        &[
            "--queue",
            "dash",
            "--func",
            "hdx_jobs.echo",
            "--args",
            r#"[{"n": 1}]"#,
        ],
    )
    .remove(0);
    let failed = enqueue(
        &test,
        &[
            "--queue",
            "dash",
            "--func",
            "hdx_jobs.fail",
            "--args",
            r#"["no"]"#,
        ],
    )
    .remove(0);
    let worker = WorkerProcess::start(&test, &["--concurrency", "1", "dash"]);
    for (id, end) in [(&ok, "finished"), (&failed, "failed")] {
        testkit::eventually("the job to end", Duration::from_secs(30), || {
            status(&test, id).filter(|s| s == end)
        });
    }
    let running = enqueue(
        &test,
        &[
            "--queue",
            "dash",
            "--func",
            "hdx_jobs.sleep",
            "--args",
            "[60]",
        ],
    )
    .remove(0);
    testkit::eventually("the long job to start", Duration::from_secs(30), || {
        status(&test, &running).filter(|s| s == "started")
    });
    let waiting = enqueue(&test, &["--queue", "dash", "--func", "hdx_jobs.noop"]).remove(0);

    // A job enqueued through the HTTP API (no worker on its queue: it stays queued).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let bind = format!("127.0.0.1:{port}");
    let server = WorkerProcess::start_with_env(&test, &["serve", "--bind", &bind], &[]);
    let api = format!("http://{bind}");
    testkit::eventually("the API to answer", Duration::from_secs(30), || {
        ureq::get(&format!("{api}/healthz")).call().ok()
    });
    let answer = ureq::post(&format!("{api}/api/send-analytics"))
        .header("Content-Type", "application/json")
        .send(r#"{"event_name": "dashboard test", "send_mixpanel": false, "send_ga": true, "ga_meta": {"cid": "x"}}"#)
        .expect("send-analytics");
    assert_eq!(answer.status().as_u16(), 200);
    let from_api: Vec<String> = test.query(
        testkit::redis::cmd("LRANGE")
            .arg("rq:queue:analytics_q")
            .arg(0)
            .arg(-1),
    );
    assert_eq!(from_api.len(), 1);

    let ids = |probe: &Value, registry: &str| -> Vec<String> {
        probe[registry]["ids"]
            .as_array()
            .map(|ids| {
                ids.iter()
                    .filter_map(|i| i.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    for python in [testkit::python_rq113(), testkit::python()] {
        let (dash, fine) = testkit::dashboard_probe(&python, url, "dash");
        assert!(fine, "{}: {dash}", python.display());
        assert_eq!(ids(&dash, "finished"), vec![ok.clone()], "{dash}");
        assert_eq!(ids(&dash, "failed"), vec![failed.clone()], "{dash}");
        assert_eq!(ids(&dash, "queued"), vec![waiting.clone()], "{dash}");
        assert_eq!(ids(&dash, "started"), vec![running.clone()], "{dash}");
        for id in [&ok, &failed, &waiting] {
            assert_eq!(dash["jobs"][id.as_str()]["status"], 200, "{id}: {dash}");
            assert_eq!(dash["jobs"][id.as_str()]["data"], "ok", "{id}: {dash}");
        }
        let (analytics, fine) = testkit::dashboard_probe(&python, url, "analytics_q");
        assert!(fine, "{analytics}");
        assert_eq!(ids(&analytics, "queued"), from_api, "{analytics}");
    }
    worker.signal(libc::SIGTERM);
    drop(server);
}

/// Regression: hdx-jobs wrote running jobs as RQ 2's `<id>:<execution id>`, which RQ 1.13 does
/// not understand: rq-dashboard 0.7.1.2 listed no started job, and an rq 1.13 worker's registry
/// cleanup, finding an expired lease of a dead hdx-jobs worker, dropped the entry without
/// failing the job, which then showed "started" forever. Now the bare job id is written: the
/// Python maintenance of either version fails the dead worker's job, as it does its own.
#[test]
fn regression_python_maintenance_recovers_a_dead_hdx_jobs_workers_job() {
    let test = TestRedis::new();
    let url = test.url();
    let sleeper = |queue: &str| {
        enqueue(
            &test,
            &[
                "--queue",
                queue,
                "--func",
                "hdx_jobs.sleep",
                "--args",
                "[60]",
            ],
        )
        .remove(0)
    };
    let (old, new) = (sleeper("q113"), sleeper("q212"));
    let mut doomed = WorkerProcess::start(
        &test,
        &[&FAST[..], &["--concurrency", "2", "q113", "q212"]].concat(),
    );
    for id in [&old, &new] {
        testkit::eventually("the jobs to start", Duration::from_secs(30), || {
            status(&test, id).filter(|s| s == "started")
        });
    }
    let listed = |python_list: String| -> Vec<String> {
        serde_json::from_str(&python_list).expect("started ids")
    };
    assert_eq!(
        listed(rq113_peer(url, &["started", "q113"])),
        vec![old.clone()]
    );
    assert_eq!(
        listed(rq_peer(url, &["started", "q212"])),
        vec![new.clone()]
    );

    doomed.signal(libc::SIGKILL);
    doomed.wait(Duration::from_secs(10));
    // The leases (1 s monitoring + 2 s grace) run out; only Python's maintenance runs now.
    testkit::eventually("rq 1.13 to fail the job", Duration::from_secs(30), || {
        rq113_peer(url, &["clean", "q113"]);
        status(&test, &old).filter(|s| s == "failed")
    });
    testkit::eventually("rq 2.12 to fail the job", Duration::from_secs(30), || {
        rq_peer(url, &["clean", "q212"]);
        status(&test, &new).filter(|s| s == "failed")
    });
    for (queue, id) in [("q113", &old), ("q212", &new)] {
        let wip: Vec<String> = test.query(
            testkit::redis::cmd("ZRANGE")
                .arg(format!("rq:wip:{queue}"))
                .arg(0)
                .arg(-1),
        );
        assert!(wip.is_empty(), "{queue}: {wip:?}");
        let failed: Vec<String> = test.query(
            testkit::redis::cmd("ZRANGE")
                .arg(format!("rq:failed:{queue}"))
                .arg(0)
                .arg(-1),
        );
        assert_eq!(failed, vec![id.clone()], "{queue}");
    }
}

/// A job that fails once with a retry is retried within seconds by a plain `hdx-jobs work q`:
/// workers run the scheduler by default (before, retries waited for a scheduler nobody ran).
#[test]
fn a_retried_job_runs_again_under_a_plain_worker() {
    let test = TestRedis::new();
    let id = enqueue(
        &test,
        &[
            "--queue",
            "q",
            "--func",
            "hdx_jobs.fail",
            "--kwargs",
            r#"{"message": "flaky", "retryable": true}"#,
            "--retry",
            "1",
            "--retry-interval",
            "1",
        ],
    )
    .remove(0);
    let worker = WorkerProcess::start(&test, &["q"]);
    testkit::eventually(
        "the retry to run and fail for good",
        Duration::from_secs(30),
        || status(&test, &id).filter(|s| s == "failed"),
    );
    let attempts: Option<String> = test.query(
        testkit::redis::cmd("HGET")
            .arg(format!("rq:job:{id}"))
            .arg("hdx_attempt"),
    );
    assert_eq!(attempts.as_deref(), Some("2"), "ran twice");
    drop(worker);
}
