//! The monitor's views behind its page, through the HTTP API against a real Redis: jobs per
//! minute recorded by real workers, job lists filtered by task and status, a worker with the
//! job it runs, the periodic jobs and the event stream.

mod common;

use std::time::Duration;

use common::TestServer;
use hdx_jobs::rq::queue::{JobSpec, Queue};
use hdx_jobs::rq::scheduler::periodic::{self, Misfire, PeriodicJob, Schedule};
use hdx_jobs::rq::worker::{Worker, WorkerOptions};
use hdx_jobs::task::TaskRegistry;
use serde_json::{json, Value};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Enqueues `calls` on `queue` and, with `run`, works them off with a burst worker.
fn enqueue(server: &TestServer, queue: &str, calls: &[(&str, Value)], run: bool) -> Vec<String> {
    runtime().block_on(async {
        let redis = hdx_jobs::RedisClient::open(server.redis.url()).expect("redis");
        let q = Queue::new(redis.clone(), queue).expect("queue");
        let mut ids = Vec::new();
        for (func, arg) in calls {
            ids.push(
                q.enqueue(JobSpec::new(*func).arg(arg.clone()))
                    .await
                    .expect("enqueue"),
            );
        }
        if run {
            let options = WorkerOptions {
                queues: vec![queue.to_string()],
                burst: true,
                ..Default::default()
            };
            Worker::new(redis, TaskRegistry::with_builtins(), options)
                .expect("worker")
                .run()
                .await
                .expect("run");
        }
        ids
    })
}

fn sum(series: &Value) -> u64 {
    series
        .as_array()
        .expect("series")
        .iter()
        .map(|n| n.as_u64().expect("count"))
        .sum()
}

#[test]
fn the_history_counts_finished_and_failed_jobs_per_minute_and_expires_on_its_own() {
    let server = TestServer::start(&[]);
    let noop = ("hdx_jobs.noop", json!(null));
    let fail = ("hdx_jobs.fail", json!("counted"));
    enqueue(
        &server,
        "work",
        &[noop.clone(), noop.clone(), noop, fail.clone(), fail],
        true,
    );
    enqueue(&server, "other", &[("hdx_jobs.noop", json!(null))], true);

    let (status, history) = server.get("/monitor/api/history?minutes=10");
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["step_seconds"], 60);
    assert_eq!(
        history["events"]["finished"].as_array().map(Vec::len),
        Some(10)
    );
    // A minute may turn while the worker runs: the window's sums are what must hold.
    assert_eq!(sum(&history["events"]["finished"]), 4, "{history}");
    assert_eq!(sum(&history["events"]["failed"]), 2, "{history}");
    assert_eq!(history["queues"], json!(["other", "work"]));
    let (_, work) = server.get("/monitor/api/history?minutes=10&queue=work");
    assert_eq!(sum(&work["events"]["finished"]), 3, "{work}");

    let keys: Vec<String> = server.redis.query(redis::cmd("KEYS").arg("hdx:history:*"));
    assert!(!keys.is_empty() && keys.len() <= 2, "{keys:?}");
    for key in keys {
        let ttl: i64 = server.redis.query(redis::cmd("TTL").arg(&key));
        assert!(
            (86_400..=86_400 + 3_600).contains(&ttl),
            "{key} expires in {ttl} s"
        );
    }
    let (status, _) = server.get("/monitor/api/history?minutes=0");
    assert_eq!(status, 400);
    let (status, _) = server.get("/monitor/api/history?minutes=1441");
    assert_eq!(status, 400);
}

#[test]
fn job_lists_filter_by_task_and_status() {
    let server = TestServer::start(&[]);
    let mut calls = Vec::new();
    for i in 0..5 {
        calls.push(("hdx_jobs.noop", json!(i)));
        if i < 3 {
            calls.push(("hdx_jobs.echo", json!(i)));
        }
    }
    let ids = enqueue(&server, "mixed", &calls, false);
    let echoes: Vec<&String> = ids.iter().skip(1).step_by(2).take(3).collect();

    let (status, page) = server.get("/monitor/api/queues/mixed/jobs?task=hdx_jobs.echo&per_page=2");
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["total"], 8);
    assert_eq!(page["matched"], 3);
    assert_eq!(page["scanned"], 8);
    let shown: Vec<&str> = page["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| j["id"].as_str().expect("id"))
        .collect();
    assert_eq!(shown, vec![echoes[0].as_str(), echoes[1].as_str()]);
    assert!(page["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .all(|j| j["func_name"] == "hdx_jobs.echo"));
    let (_, second) =
        server.get("/monitor/api/queues/mixed/jobs?task=hdx_jobs.echo&per_page=2&page=2");
    assert_eq!(second["jobs"][0]["id"], json!(echoes[2]));

    let (_, none) = server.get("/monitor/api/queues/mixed/jobs?status=failed");
    assert_eq!(none["matched"], 0);
    assert_eq!(none["jobs"], json!([]));
    let (_, queued) = server.get("/monitor/api/queues/mixed/jobs?status=queued&per_page=200");
    assert_eq!(queued["matched"], 8);

    // Stopped and failed jobs share the failed registry: the status tells them apart.
    enqueue(&server, "mixed-run", &[("hdx_jobs.fail", json!("x"))], true);
    let (_, failed) =
        server.get("/monitor/api/queues/mixed-run/jobs?registry=failed&status=failed");
    assert_eq!(failed["matched"], 1, "{failed}");
    assert_eq!(failed["jobs"][0]["error"], "TaskFailed: x");
    let (_, stopped) =
        server.get("/monitor/api/queues/mixed-run/jobs?registry=failed&status=stopped");
    assert_eq!(stopped["matched"], 0);

    let (status, _) = server.get("/monitor/api/queues/mixed/jobs?status=bogus");
    assert_eq!(status, 400);
}

#[test]
fn the_worker_view_lists_the_job_it_runs() {
    let mut server = TestServer::start(&[]);
    let name = server.start_worker(&["slow"]);
    let ids = enqueue(
        &server,
        "slow",
        &[("hdx_jobs.sleep", json!({"seconds": 60}))],
        false,
    );
    let worker = testkit::eventually("the worker runs the job", Duration::from_secs(20), || {
        let (status, worker) = server.get(&format!("/monitor/api/workers/{name}"));
        (status == 200 && worker["running_jobs"][0]["id"] == json!(ids[0])).then_some(worker)
    });
    assert_eq!(worker["name"], json!(name));
    assert_eq!(worker["queues"], json!(["slow"]));
    assert_eq!(worker["pid"], json!(std::process::id()));
    let concurrency = WorkerOptions::default().concurrency;
    assert_eq!(worker["concurrency"], json!(concurrency), "{worker}");
    assert_eq!(worker["running_jobs"][0]["queue"], "slow");
    assert_eq!(worker["running_jobs"][0]["func_name"], "hdx_jobs.sleep");
    assert!(worker["hostname"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(worker["last_heartbeat"]
        .as_str()
        .is_some_and(|h| !h.is_empty()));

    let (status, missing) = server.get("/monitor/api/workers/nobody");
    assert_eq!(status, 404, "{missing}");
}

#[test]
fn the_monitor_shows_periodic_jobs_and_the_event_stream() {
    let server = TestServer::start(&[]);
    runtime().block_on(async {
        let redis = hdx_jobs::RedisClient::open(server.redis.url()).expect("redis");
        let mut conn = redis.conn().await.expect("conn");
        let job = PeriodicJob {
            id: "nightly-report".into(),
            queue: "default".into(),
            func: "hdx_jobs.noop".into(),
            args: vec![],
            kwargs: Default::default(),
            schedule: Schedule::Cron {
                cron: "0 3 * * *".into(),
                timezone: "UTC".into(),
            },
            misfire: Misfire::default(),
            timeout: None,
        };
        periodic::save(&mut conn, &job).await.expect("save");
    });
    let (status, periodic) = server.get("/monitor/api/periodic");
    assert_eq!(status, 200, "{periodic}");
    assert_eq!(periodic[0]["id"], "nightly-report");
    let next = periodic[0]["next_run"].as_str().expect("next run");
    assert!(next.contains("T03:00:00"), "{next}");

    for i in 0..12 {
        let body = json!({"dataset_name": format!("dataset-{i}"), "event_type": "dataset-created"});
        let _: String = server.redis.query(
            redis::cmd("XADD")
                .arg("hdx_event_stream")
                .arg("*")
                .arg("event_type")
                .arg("dataset-created")
                .arg("body")
                .arg(body.to_string()),
        );
    }
    let _: () = server.redis.query(
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("hdx_event_stream")
            .arg("search-index")
            .arg("0"),
    );
    let (status, stream) = server.get("/monitor/api/events");
    assert_eq!(status, 200, "{stream}");
    assert_eq!(stream["stream"], "hdx_event_stream");
    assert_eq!(stream["stats"]["length"], 12);
    assert_eq!(stream["stats"]["groups"][0]["name"], "search-index");
    assert_eq!(stream["stats"]["groups"][0]["lag"], 12);
    let latest = stream["latest"].as_array().expect("latest");
    assert_eq!(latest.len(), 10);
    assert_eq!(latest[0]["body"]["dataset_name"], "dataset-11");
    assert_eq!(latest[0]["event_type"], "dataset-created");
}
