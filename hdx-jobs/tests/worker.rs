//! The worker against a real Redis: outcomes in RQ's layout, timeouts, malformed jobs, retries,
//! concurrency, priorities, commands, shutdowns, suspension, meta, dependencies, pickle.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use common::*;
use hdx_jobs::builtin;
use hdx_jobs::rq::commands::{self, Command};
use hdx_jobs::rq::job::JobStatus;
use hdx_jobs::rq::jobs::{self, ViewStatus};
use hdx_jobs::rq::maintenance;
use hdx_jobs::rq::payload::{self, CallPayload, Serializer};
use hdx_jobs::rq::queue::{JobSpec, Queue, Retry};
use hdx_jobs::rq::results::ResultType;
use hdx_jobs::rq::worker::{StartedEntry, WorkerOptions};
use hdx_jobs::task::{JobContext, Task, TaskError, TaskRegistry};
use serde_json::json;
use testkit::TestRedis;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_is_recorded_in_rq_layout() {
    let test = TestRedis::new();
    let redis = client(&test);
    let queue = Queue::new(redis.clone(), "default").expect("queue");
    let id = queue
        .enqueue(JobSpec::new(builtin::ECHO).arg(1).kwarg("k", "v"))
        .await
        .expect("enqueue");

    let report = run_burst(&redis, &["default"]).await;
    assert_eq!((report.succeeded, report.failed), (1, 0));

    let job = job_hash(&test, &id);
    assert_eq!(job["status"], "finished");
    assert_eq!(job["worker_name"], report.name);
    assert!(job["ended_at"].ends_with('Z') && job["started_at"].ends_with('Z'));
    let finished = zset(&test, "rq:finished:default");
    assert_eq!(finished.len(), 1);
    assert!(
        (finished[0].1 - (now_s() + 500.0)).abs() < 5.0,
        "finished score is now + result_ttl"
    );
    assert!((490..=500).contains(&ttl(&test, &format!("rq:job:{id}"))));
    assert!((490..=500).contains(&ttl(&test, &format!("rq:results:{id}"))));

    let result = latest(&redis, &id).await.expect("result");
    assert_eq!(result.result_type, ResultType::Successful);
    assert_eq!(
        result.return_value,
        Some(json!({"args": [1], "kwargs": {"k": "v"}}))
    );
    assert_eq!(result.worker_name, report.name);
    assert!(result.execution_id.is_some() && result.execution_started_at.is_some());

    assert!(
        zmembers(&test, "rq:wip:default").is_empty(),
        "lease released"
    );
    let executions: i64 = test.query(redis::cmd("EXISTS").arg(format!("rq:executions:{id}")));
    assert_eq!(executions, 0);
    let worker: std::collections::HashMap<String, String> =
        test.query(redis::cmd("HGETALL").arg(format!("rq:worker:{}", report.name)));
    assert_eq!(worker["successful_job_count"], "1");
    assert!(worker.contains_key("death"), "death registered");
    let live: Vec<String> = test.query(redis::cmd("SMEMBERS").arg("rq:workers"));
    assert!(live.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_is_recorded_with_readable_text() {
    let test = TestRedis::new();
    let redis = client(&test);
    let queue = Queue::new(redis.clone(), "default").expect("queue");
    let id = queue
        .enqueue(JobSpec::new(builtin::FAIL).arg("boom"))
        .await
        .expect("enqueue");
    let kept = queue
        .enqueue(JobSpec::new(builtin::FAIL).arg("kept").failure_ttl(100))
        .await
        .expect("enqueue");

    run_burst(&redis, &["default"]).await;

    assert_eq!(status(&test, &id).as_deref(), Some("failed"));
    let failed = zset(&test, "rq:failed:default");
    let score = failed
        .iter()
        .find(|(m, _)| *m == id)
        .expect("in failed registry")
        .1;
    assert!((score - (now_s() + 31_536_000.0)).abs() < 5.0);
    let result = latest(&redis, &id).await.expect("result");
    assert_eq!(result.result_type, ResultType::Failed);
    let text = result.exc_string.expect("exc_string");
    assert!(text.ends_with("TaskFailed: boom\n"), "{text}");
    assert!(text.contains("hdx_jobs.fail"));
    // RQ: a failure stream expires only with the job's own failure_ttl.
    assert_eq!(ttl(&test, &format!("rq:results:{id}")), -1);
    assert!((90..=100).contains(&ttl(&test, &format!("rq:results:{kept}"))));
    assert!((90..=100).contains(&ttl(&test, &format!("rq:job:{kept}"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_stops_the_job_and_the_worker_goes_on() {
    let test = TestRedis::new();
    let redis = client(&test);
    let queue = Queue::new(redis.clone(), "default").expect("queue");
    let slow = queue
        .enqueue(JobSpec::new(builtin::SLEEP).arg(60).timeout(1))
        .await
        .expect("enqueue");
    let next = queue
        .enqueue(JobSpec::new(builtin::NOOP))
        .await
        .expect("enqueue");

    let options = WorkerOptions {
        burst: true,
        concurrency: 1,
        ..fast_options(&["default"])
    };
    let started = Instant::now();
    let report = start_worker(&redis, TaskRegistry::with_builtins(), options)
        .join()
        .await;

    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the 60 s sleep was cut short"
    );
    assert_eq!(status(&test, &slow).as_deref(), Some("failed"));
    let text = latest(&redis, &slow)
        .await
        .and_then(|r| r.exc_string)
        .expect("exc");
    assert!(
        text.contains("JobTimeoutException: Task exceeded maximum timeout value (1 seconds)"),
        "{text}"
    );
    assert_eq!(status(&test, &next).as_deref(), Some("finished"));
    assert_eq!((report.succeeded, report.failed), (1, 1));
}

/// A task that panics: the worker must survive it.
struct Panics;

#[async_trait]
impl Task for Panics {
    type Args = ();
    type Output = ();
    async fn run(&self, _ctx: &JobContext, _args: ()) -> Result<(), TaskError> {
        panic!("bug in a task")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_jobs_fail_with_clear_errors_and_the_worker_survives() {
    let test = TestRedis::new();
    let redis = client(&test);
    let queue = Queue::new(redis.clone(), "default").expect("queue");
    let unknown = queue
        .enqueue(JobSpec::new("no.such.task"))
        .await
        .expect("enqueue");
    let panics = queue
        .enqueue(JobSpec::new("tests.panics"))
        .await
        .expect("enqueue");
    let bad_args = queue
        .enqueue(JobSpec::new(builtin::SLEEP).arg("not a number"))
        .await
        .expect("enqueue");
    // A hash whose payload is garbage, one without a payload, and an id without a hash.
    for (id, fields) in [
        (
            "garbage",
            vec![("data", b"\x00\x01 not zlib, not pickle".to_vec())],
        ),
        ("no-data", vec![("description", b"x".to_vec())]),
    ] {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(format!("rq:job:{id}"));
        for (f, v) in fields {
            cmd.arg(f).arg(v);
        }
        cmd.arg("origin").arg("default").arg("status").arg("queued");
        let _: i64 = test.query(&mut cmd);
        let _: i64 = test.query(redis::cmd("RPUSH").arg("rq:queue:default").arg(id));
    }
    let _: i64 = test.query(
        redis::cmd("RPUSH")
            .arg("rq:queue:default")
            .arg("missing-hash"),
    );
    let last = queue
        .enqueue(JobSpec::new(builtin::NOOP))
        .await
        .expect("enqueue");

    let mut tasks = TaskRegistry::with_builtins();
    tasks.register("tests.panics", Panics);
    let options = WorkerOptions {
        burst: true,
        ..fast_options(&["default"])
    };
    start_worker(&redis, tasks, options).join().await;

    let expect = |id: &str, needle: &str| {
        let redis = redis.clone();
        let (id, needle) = (id.to_string(), needle.to_string());
        async move {
            let result = latest(&redis, &id)
                .await
                .unwrap_or_else(|| panic!("{id} has a result"));
            let text = result.exc_string.unwrap_or_default();
            assert!(text.contains(&needle), "{id}: {text}");
        }
    };
    expect(
        &unknown,
        "UnknownTask: no task is registered under \"no.such.task\"",
    )
    .await;
    expect(&panics, "TaskPanicked: bug in a task").await;
    expect(&bad_args, "TypeError: bad arguments").await;
    expect("garbage", "DeserializationError").await;
    expect("no-data", "DeserializationError").await;
    expect("missing-hash", "JobHashMissing").await;
    for id in [
        &unknown,
        &panics,
        &bad_args,
        &"garbage".to_string(),
        &"no-data".to_string(),
    ] {
        assert_eq!(status(&test, id).as_deref(), Some("failed"), "{id}");
    }
    assert!(zmembers(&test, "rq:failed:default").contains(&"missing-hash".to_string()));
    assert_eq!(
        status(&test, &last).as_deref(),
        Some("finished"),
        "the worker went on"
    );
    let view = jobs::view(&redis, "missing-hash")
        .await
        .expect("view")
        .expect("shown");
    assert_eq!(view.status, ViewStatus::Missing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_wait_their_intervals_and_permanent_errors_do_not_retry() {
    let test = TestRedis::new();
    let redis = client(&test);
    let queue = Queue::new(redis.clone(), "default").expect("queue");
    let retried = queue
        .enqueue(
            JobSpec::new(builtin::FAIL)
                .kwarg("message", "flaky")
                .kwarg("retryable", true)
                .retry(Retry::new(2).intervals(vec![1])),
        )
        .await
        .expect("enqueue");
    let permanent = queue
        .enqueue(
            JobSpec::new(builtin::FAIL)
                .arg("bad input")
                .retry(Retry::new(3)),
        )
        .await
        .expect("enqueue");
    let at_once = queue
        .enqueue(
            JobSpec::new(builtin::FAIL)
                .kwarg("retryable", true)
                .retry(Retry::new(1)),
        )
        .await
        .expect("enqueue");

    let options = WorkerOptions {
        with_scheduler: true,
        ..fast_options(&["default"])
    };
    let started = Instant::now();
    let worker = start_worker(&redis, TaskRegistry::with_builtins(), options);
    for id in [&retried, &permanent, &at_once] {
        wait_status(&test, id, "failed", WAIT).await;
    }
    worker.stop().await;

    let attempts = |id: &str| {
        job_hash(&test, id)
            .get("hdx_attempt")
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(attempts(&retried), "3", "1 run + 2 retries");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "two 1 s intervals were waited"
    );
    assert_eq!(job_hash(&test, &retried)["retries_left"], "0");
    assert_eq!(
        attempts(&permanent),
        "1",
        "permanent errors are not retried"
    );
    assert_eq!(job_hash(&test, &permanent)["retries_left"], "3");
    assert_eq!(attempts(&at_once), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_concurrently_up_to_the_limit() {
    let test = TestRedis::new();
    let redis = client(&test);
    let queue = Queue::new(redis.clone(), "default").expect("queue");
    let ids = queue
        .enqueue_many(
            (0..6)
                .map(|_| JobSpec::new(builtin::SLEEP).arg(0.5))
                .collect(),
        )
        .await
        .expect("enqueue");

    let options = WorkerOptions {
        burst: true,
        concurrency: 3,
        ..fast_options(&["default"])
    };
    start_worker(&redis, TaskRegistry::with_builtins(), options)
        .join()
        .await;

    let mut spans: Vec<(f64, f64)> = Vec::new();
    for id in &ids {
        let result = latest(&redis, id).await.expect("result");
        spans.push((
            result.execution_started_at.expect("start"),
            result.execution_ended_at.expect("end"),
        ));
    }
    // At most 3 at once, and at some moment 3 did overlap.
    let max_overlap = spans
        .iter()
        .map(|(start, _)| {
            spans
                .iter()
                .filter(|(s, e)| s <= start && start < e)
                .count()
        })
        .max()
        .unwrap_or(0);
    assert_eq!(max_overlap, 3, "{spans:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_are_served_in_priority_order() {
    let test = TestRedis::new();
    let redis = client(&test);
    let low = Queue::new(redis.clone(), "low").expect("queue");
    let high = Queue::new(redis.clone(), "high").expect("queue");
    let low_ids = low
        .enqueue_many(vec![JobSpec::new(builtin::NOOP); 3])
        .await
        .expect("enqueue");
    let high_ids = high
        .enqueue_many(vec![JobSpec::new(builtin::NOOP); 3])
        .await
        .expect("enqueue");

    let options = WorkerOptions {
        burst: true,
        concurrency: 1,
        ..fast_options(&["high", "low"])
    };
    start_worker(&redis, TaskRegistry::with_builtins(), options)
        .join()
        .await;

    let started = |id: &String| latest_start(&test, id);
    let last_high = high_ids.iter().map(started).fold(0.0, f64::max);
    let first_low = low_ids.iter().map(started).fold(f64::MAX, f64::min);
    assert!(
        last_high <= first_low,
        "every high job started before any low job"
    );
}

fn latest_start(test: &TestRedis, id: &str) -> f64 {
    let reply: Vec<(String, Vec<(String, String)>)> = test.query(
        redis::cmd("XRANGE")
            .arg(format!("rq:results:{id}"))
            .arg("-")
            .arg("+"),
    );
    reply[0]
        .1
        .iter()
        .find(|(k, _)| k == "execution_started_at")
        .expect("start")
        .1
        .parse()
        .expect("float")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_job_command_stops_only_that_job() {
    let test = TestRedis::new();
    let redis = client(&test);
    let queue = Queue::new(redis.clone(), "default").expect("queue");
    let victim = queue
        .enqueue(JobSpec::new(builtin::SLEEP).arg(30).retry(Retry::new(2)))
        .await
        .expect("enqueue");
    let other = queue
        .enqueue(JobSpec::new(builtin::SLEEP).arg(1))
        .await
        .expect("enqueue");

    let worker = start_worker(
        &redis,
        TaskRegistry::with_builtins(),
        fast_options(&["default"]),
    );
    wait_status(&test, &victim, "started", WAIT).await;
    jobs::stop(&redis, &victim).await.expect("stop");
    wait_status(&test, &victim, "stopped", WAIT).await;
    wait_status(&test, &other, "finished", WAIT).await;
    worker.stop().await;

    assert!(
        zmembers(&test, "rq:failed:default").contains(&victim),
        "stopped jobs go to the failed registry"
    );
    let text = latest(&redis, &victim)
        .await
        .and_then(|r| r.exc_string)
        .expect("exc");
    assert!(
        text.contains("Job stopped by user, work-horse terminated."),
        "{text}"
    );
    assert_eq!(
        job_hash(&test, &victim)["retries_left"],
        "2",
        "a stopped job is not retried"
    );
}

/// Both started-registry layouts hold a lease through heartbeats and release it at the end: the
/// bare job id by default (what RQ 1.x readers list), RQ 2's `<id>:<execution id>` on request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_started_registry_layouts_hold_and_release_the_lease() {
    for layout in [StartedEntry::JobId, StartedEntry::Execution] {
        let test = TestRedis::new();
        let redis = client(&test);
        let queue = Queue::new(redis.clone(), "default").expect("queue");
        // Longer than the 1 s monitoring interval: the lease is renewed at least once.
        let id = queue
            .enqueue(JobSpec::new(builtin::SLEEP).arg(2.5))
            .await
            .expect("enqueue");
        let options = WorkerOptions {
            started_entry: layout,
            ..fast_options(&["default"])
        };
        let worker = start_worker(&redis, TaskRegistry::with_builtins(), options);
        wait_status(&test, &id, "started", WAIT).await;
        let members = zmembers(&test, "rq:wip:default");
        let execution = job_hash(&test, &id).get("hdx_lease").cloned();
        match layout {
            StartedEntry::JobId => {
                assert_eq!(members, vec![id.clone()]);
                let x = execution.expect("hdx_lease names the execution");
                let exists: i64 =
                    test.query(redis::cmd("EXISTS").arg(format!("rq:execution:{id}:{x}")));
                assert_eq!(exists, 1);
            }
            StartedEntry::Execution => {
                assert_eq!(members.len(), 1);
                assert!(members[0].starts_with(&format!("{id}:")), "{members:?}");
                assert_eq!(execution, None);
            }
        }
        wait_status(&test, &id, "finished", WAIT).await;
        worker.stop().await;
        assert!(zmembers(&test, "rq:wip:default").is_empty(), "{layout:?}");
        assert!(
            !job_hash(&test, &id).contains_key("hdx_lease"),
            "{layout:?}"
        );
        let executions: i64 = test.query(redis::cmd("EXISTS").arg(format!("rq:executions:{id}")));
        assert_eq!(executions, 0, "{layout:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_shutdown_lets_running_jobs_finish_and_takes_no_more() {
    let test = TestRedis::new();
    let redis = client(&test);
    let queue = Queue::new(redis.clone(), "default").expect("queue");
    // Long enough for the next job and the command to arrive while it runs, even under load.
    let running = queue
        .enqueue(JobSpec::new(builtin::SLEEP).arg(5))
        .await
        .expect("enqueue");

    let options = WorkerOptions {
        concurrency: 1,
        ..fast_options(&["default"])
    };
    let worker = start_worker(&redis, TaskRegistry::with_builtins(), options);
    wait_status(&test, &running, "started", WAIT).await;
    let waiting = queue
        .enqueue(JobSpec::new(builtin::NOOP))
        .await
        .expect("enqueue");
    // The shutdown command, as `rq` sends it.
    commands::send(&redis, &worker.name, &Command::Shutdown)
        .await
        .expect("send");
    worker.join().await;

    assert_eq!(status(&test, &running).as_deref(), Some("finished"));
    assert_eq!(status(&test, &waiting).as_deref(), Some("queued"));
    assert_eq!(list(&test, "rq:queue:default"), vec![waiting]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_shutdown_records_running_jobs_as_failed_or_retried() {
    let test = TestRedis::new();
    let redis = client(&test);
    let queue = Queue::new(redis.clone(), "default").expect("queue");
    let plain = queue
        .enqueue(JobSpec::new(builtin::SLEEP).arg(60))
        .await
        .expect("enqueue");
    let with_retry = queue
        .enqueue(JobSpec::new(builtin::SLEEP).arg(60).retry(Retry::new(1)))
        .await
        .expect("enqueue");

    let worker = start_worker(
        &redis,
        TaskRegistry::with_builtins(),
        fast_options(&["default"]),
    );
    wait_status(&test, &plain, "started", WAIT).await;
    wait_status(&test, &with_retry, "started", WAIT).await;
    worker.stop.warm();
    worker.stop.cold();
    worker.join().await;

    assert_eq!(status(&test, &plain).as_deref(), Some("failed"));
    let text = latest(&redis, &plain)
        .await
        .and_then(|r| r.exc_string)
        .expect("exc");
    assert!(text.contains("WorkerShutdown"), "{text}");
    assert_eq!(status(&test, &with_retry).as_deref(), Some("queued"));
    assert_eq!(list(&test, "rq:queue:default"), vec![with_retry]);
    assert!(
        zmembers(&test, "rq:wip:default").is_empty(),
        "nothing left in limbo"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspended_workers_take_nothing_until_resumed() {
    let test = TestRedis::new();
    let redis = client(&test);
    commands::suspend(&redis, None).await.expect("suspend");
    let queue = Queue::new(redis.clone(), "default").expect("queue");
    let id = queue
        .enqueue(JobSpec::new(builtin::NOOP))
        .await
        .expect("enqueue");

    let worker = start_worker(
        &redis,
        TaskRegistry::with_builtins(),
        fast_options(&["default"]),
    );
    let key = format!("rq:worker:{}", worker.name);
    testkit::eventually_async("worker shows suspended", WAIT, || {
        let state: Option<String> = test.query(redis::cmd("HGET").arg(&key).arg("state"));
        (state.as_deref() == Some("suspended")).then_some(())
    })
    .await;
    assert_eq!(status(&test, &id).as_deref(), Some("queued"));
    commands::resume(&redis).await.expect("resume");
    wait_status(&test, &id, "finished", WAIT).await;
    worker.stop().await;
}

/// Publishes progress through meta.
struct Reports;

#[async_trait]
impl Task for Reports {
    type Args = ();
    type Output = &'static str;
    async fn run(&self, ctx: &JobContext, _args: ()) -> Result<&'static str, TaskError> {
        ctx.set_progress(1, Some(2), "half way").await?;
        ctx.set_meta("attempt", json!(ctx.attempt())).await?;
        Ok("done")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_written_by_a_task_is_stored_with_the_job() {
    let test = TestRedis::new();
    let redis = client(&test);
    let queue = Queue::new(redis.clone(), "default").expect("queue");
    let mut spec = JobSpec::new("tests.reports");
    spec.meta = Some(
        json!({"owner": "test"})
            .as_object()
            .cloned()
            .expect("object"),
    );
    let id = queue.enqueue(spec).await.expect("enqueue");

    let mut tasks = TaskRegistry::new();
    tasks.register("tests.reports", Reports);
    start_worker(
        &redis,
        tasks,
        WorkerOptions {
            burst: true,
            ..fast_options(&["default"])
        },
    )
    .join()
    .await;

    let job = jobs::fetch(&redis, &id).await.expect("fetch").expect("job");
    assert_eq!(
        job.meta(),
        json!({"owner": "test", "progress": {"done": 1, "total": 2, "message": "half way"}, "attempt": 1})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependents_run_after_their_dependency() {
    let test = TestRedis::new();
    let redis = client(&test);
    let queue = Queue::new(redis.clone(), "default").expect("queue");
    let parent = queue
        .enqueue(JobSpec::new(builtin::SLEEP).arg(0.2))
        .await
        .expect("enqueue");
    let child = queue
        .enqueue(JobSpec::new(builtin::NOOP).depends_on(&parent))
        .await
        .expect("enqueue");
    assert_eq!(status(&test, &child).as_deref(), Some("deferred"));
    assert_eq!(zmembers(&test, "rq:deferred:default"), vec![child.clone()]);

    run_burst(&redis, &["default"]).await;

    assert_eq!(status(&test, &parent).as_deref(), Some("finished"));
    assert_eq!(status(&test, &child).as_deref(), Some("finished"));
    assert!(latest_start(&test, &child) >= latest_start(&test, &parent) + 0.2);
    assert!(zmembers(&test, "rq:deferred:default").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pickled_jobs_get_pickled_results() {
    let test = TestRedis::new();
    let redis = client(&test);
    let call = CallPayload {
        func_name: builtin::ECHO.into(),
        args: vec![json!({"import_id": 42})],
        kwargs: Default::default(),
        serializer: Serializer::Pickle,
    };
    let mut cmd = redis::cmd("HSET");
    cmd.arg("rq:job:pickled")
        .arg("data")
        .arg(call.encode().expect("pickle"))
        .arg("origin")
        .arg("default")
        .arg("status")
        .arg("queued");
    let _: i64 = test.query(&mut cmd);
    let _: i64 = test.query(redis::cmd("RPUSH").arg("rq:queue:default").arg("pickled"));

    run_burst(&redis, &["default"]).await;

    let reply: Vec<(String, Vec<(String, String)>)> = test.query(
        redis::cmd("XRANGE")
            .arg("rq:results:pickled")
            .arg("-")
            .arg("+"),
    );
    let b64 = &reply[0]
        .1
        .iter()
        .find(|(k, _)| k == "return_value")
        .expect("value")
        .1;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("b64");
    assert_eq!(
        bytes[0], 0x80,
        "a pickle, readable by the Python client that enqueued it"
    );
    let (value, serializer) = payload::decode_value(&bytes).expect("decode");
    assert_eq!(serializer, Serializer::Pickle);
    assert_eq!(value, json!({"args": [{"import_id": 42}], "kwargs": {}}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_jobs_are_failed_or_retried_by_maintenance() {
    let test = TestRedis::new();
    let redis = client(&test);
    let queue = Queue::new(redis.clone(), "default").expect("queue");
    // Two jobs "started" by a worker that died: their leases ended 10 s ago.
    let lost = queue
        .enqueue(JobSpec::new(builtin::NOOP))
        .await
        .expect("enqueue");
    let retry = queue
        .enqueue(JobSpec::new(builtin::NOOP).retry(Retry::new(1)))
        .await
        .expect("enqueue");
    let _: i64 = test.query(redis::cmd("DEL").arg("rq:queue:default"));
    let past = now_s() as i64 - 10;
    for id in [&lost, &retry] {
        mark_abandoned(&test, id);
    }
    // A live lease must be left alone.
    let alive = queue
        .enqueue(JobSpec::new(builtin::NOOP))
        .await
        .expect("enqueue");
    let _: i64 = test.query(
        redis::cmd("LREM")
            .arg("rq:queue:default")
            .arg(0)
            .arg(&alive),
    );
    let _: i64 = test.query(
        redis::cmd("ZADD")
            .arg("rq:wip:default")
            .arg(past + 1000)
            .arg(format!("{alive}:cafe")),
    );

    let worker = start_worker(
        &redis,
        TaskRegistry::with_builtins(),
        fast_options(&["default"]),
    );
    wait_status(&test, &lost, "failed", WAIT).await;
    wait_status(&test, &retry, "finished", WAIT).await;
    worker.stop().await;

    let text = latest(&redis, &lost)
        .await
        .and_then(|r| r.exc_string)
        .expect("exc");
    assert!(
        text.contains("Moved to FailedJobRegistry, due to AbandonedJobError"),
        "{text}"
    );
    assert_eq!(
        zmembers(&test, "rq:wip:default"),
        vec![format!("{alive}:cafe")]
    );
}

/// Makes a queued job of `default` look started by a worker that died: out of the queue, in
/// `rq:wip:default` with a lease that ended 10 s ago.
fn mark_abandoned(test: &TestRedis, id: &str) {
    let _: i64 = test.query(redis::cmd("LREM").arg("rq:queue:default").arg(0).arg(id));
    let _: i64 = test.query(
        redis::cmd("ZADD")
            .arg("rq:wip:default")
            .arg(now_s() as i64 - 10)
            .arg(format!("{id}:deadbeef")),
    );
    let _: i64 = test.query(
        redis::cmd("HSET")
            .arg(format!("rq:job:{id}"))
            .arg("status")
            .arg("started"),
    );
}

/// Regression: a worker SIGKILLed during its start-up maintenance round left
/// `rq:clean_registries:<q>` behind with RQ's 899 s expiry, and no worker recovered the dead
/// worker's jobs for 15 minutes (CI's crash test timed out). Our cleaners now hold the lock for
/// seconds, and a Python cleaner's lock older than a minute is taken over; a fresh one is honoured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_cleaner_killed_mid_round_does_not_hold_up_recovery() {
    let test = TestRedis::new();
    let redis = client(&test);
    let queue = Queue::new(redis.clone(), "default").expect("queue");
    let mut conn = redis::Client::open(test.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let lock = "rq:clean_registries:default";
    let set_lock = |value: &str, ex: u64| {
        let _: () = test.query(redis::cmd("SET").arg(lock).arg(value).arg("EX").arg(ex));
    };

    // A Python cleaner in the middle of its round: honoured.
    set_lock("1", 899);
    let report = maintenance::clean_queue(&mut conn, "default", "us")
        .await
        .expect("round");
    assert!(!report.ran, "a live RQ round was interrupted");
    // The same lock, taken 99 s ago by a Python cleaner that died: taken over, and released.
    let lost = queue
        .enqueue(JobSpec::new(builtin::NOOP))
        .await
        .expect("enqueue");
    mark_abandoned(&test, &lost);
    set_lock("1", 800);
    let report = maintenance::clean_queue(&mut conn, "default", "us")
        .await
        .expect("round");
    assert_eq!(report.abandoned_failed, vec![lost.clone()]);
    assert_eq!(ttl(&test, lock), -2, "the lock was not released");

    // The lock one of our workers leaves when killed mid-round: a running worker recovers the
    // next abandoned job once it expires, after at most maintenance::LOCK_SECS.
    let lost = queue
        .enqueue(JobSpec::new(builtin::NOOP))
        .await
        .expect("enqueue");
    mark_abandoned(&test, &lost);
    set_lock("vm.1234.dead", maintenance::LOCK_SECS);
    let worker = start_worker(
        &redis,
        TaskRegistry::with_builtins(),
        fast_options(&["default"]),
    );
    wait_status(
        &test,
        &lost,
        "failed",
        Duration::from_secs(maintenance::LOCK_SECS + 20),
    )
    .await;
    worker.stop().await;
}

/// Regression: `jobs::view` read the result stream and the job hash apart, so a job finishing
/// in between was shown as finished with no result (the example's test failed under load).
/// Polling without pause while a worker finishes jobs hits that window on most jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_finished_job_is_never_viewed_without_its_result() {
    let test = TestRedis::new();
    let redis = client(&test);
    let queue = Queue::new(redis.clone(), "default").expect("queue");
    let worker = start_worker(
        &redis,
        TaskRegistry::with_builtins(),
        fast_options(&["default"]),
    );
    for i in 0..50 {
        let id = queue
            .enqueue(JobSpec::new(builtin::ECHO).arg(i))
            .await
            .expect("enqueue");
        let deadline = Instant::now() + WAIT;
        let view = loop {
            let view = jobs::view(&redis, &id).await.expect("view").expect("job");
            if view.status == JobStatus::Finished {
                break view;
            }
            assert!(Instant::now() < deadline, "job {id} did not finish");
        };
        let result = view.latest_result.expect("a finished job's result");
        assert_eq!(
            result.return_value,
            Some(json!({"args": [i], "kwargs": {}}))
        );
    }
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_stuck_in_an_intermediate_list_go_back_to_their_queue() {
    let test = TestRedis::new();
    let redis = client(&test);
    let queue = Queue::new(redis.clone(), "default").expect("queue");
    let id = queue
        .enqueue(JobSpec::new(builtin::NOOP))
        .await
        .expect("enqueue");
    // A Python single-queue worker BLMOVEd it, then died before starting it, 2 minutes ago.
    let _: String = test.query(
        redis::cmd("LMOVE")
            .arg("rq:queue:default")
            .arg("rq:queue:default:intermediate")
            .arg("LEFT")
            .arg("RIGHT"),
    );
    let _: () = test.query(
        redis::cmd("SET")
            .arg(format!("rq:queue:default:intermediate:first_seen:{id}"))
            .arg(now_s() - 120.0),
    );

    let worker = start_worker(
        &redis,
        TaskRegistry::with_builtins(),
        fast_options(&["default"]),
    );
    wait_status(&test, &id, "finished", WAIT).await;
    worker.stop().await;
    assert!(list(&test, "rq:queue:default:intermediate").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_enqueued_while_idle_are_picked_up_at_once() {
    let test = TestRedis::new();
    let redis = client(&test);
    let worker = start_worker(
        &redis,
        TaskRegistry::with_builtins(),
        fast_options(&["a", "b"]),
    );
    // Let the worker go idle on both queues, then feed the second one.
    testkit::eventually_async("worker idle", WAIT, || {
        let state: Option<String> = test.query(
            redis::cmd("HGET")
                .arg(format!("rq:worker:{}", worker.name))
                .arg("state"),
        );
        (state.as_deref() == Some("started") || state.as_deref() == Some("idle")).then_some(())
    })
    .await;
    let queue = Queue::new(redis.clone(), "b").expect("queue");
    for _ in 0..3 {
        let id = queue
            .enqueue(JobSpec::new(builtin::ECHO).arg("x"))
            .await
            .expect("enqueue");
        wait_status(&test, &id, "finished", Duration::from_secs(5)).await;
    }
    let report = worker.stop().await;
    assert_eq!(report.succeeded, 3);
    assert!(list(&test, "rq:queue:b").is_empty());
}

/// A pickle nesting lists 200,000 deep (400 KB, about 1 KB compressed): serde-pickle's
/// recursive conversion overflowed the stack and aborted the worker.
fn deep_pickle() -> Vec<u8> {
    let depth = 200_000;
    let mut bytes = vec![0x80, 0x04];
    bytes.extend(std::iter::repeat_n(b']', depth));
    bytes.extend(std::iter::repeat_n(b'a', depth - 1));
    bytes.push(b'.');
    bytes
}

/// A "billion laughs" pickle: one list, then 60 times `[x, x]` of the previous one by DUP
/// (shared in Python, 2^60 values once turned into a tree).
fn laughing_pickle() -> Vec<u8> {
    let mut bytes = vec![0x80, 0x02];
    bytes.extend(std::iter::repeat_n(b'(', 60));
    bytes.extend_from_slice(b"]K\x01a");
    for _ in 0..60 {
        bytes.extend_from_slice(b"2l");
    }
    bytes.push(b'.');
    bytes
}

/// Puts a job hash with `data` on `queue` by hand, as anything that can write Redis could.
fn push_raw_job(test: &TestRedis, id: &str, queue: &str, data: &[u8]) {
    let _: i64 = test.query(
        redis::cmd("HSET")
            .arg(format!("rq:job:{id}"))
            .arg("data")
            .arg(data)
            .arg("origin")
            .arg(queue)
            .arg("status")
            .arg("queued")
            .arg("description")
            .arg("poison"),
    );
    let _: i64 = test.query(redis::cmd("RPUSH").arg(format!("rq:queue:{queue}")).arg(id));
}

/// Regression: one malformed job killed every worker (a deep pickle overflowed the stack, a
/// billion-laughs pickle or a zlib bomb exhausted memory), and after its lease expired
/// maintenance decoded it again in every worker. Now each fails its job for good with a message
/// naming the limit, and the worker, its maintenance and the job views go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_poison_payloads_fail_their_job_and_nothing_else() {
    let test = TestRedis::new();
    let redis = client(&test);
    let bomb = payload::zlib_compress(&vec![b' '; 80 * 1024 * 1024]);
    assert!(bomb.len() < 200 * 1024);
    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "deep",
            payload::zlib_compress(&deep_pickle()),
            "deeper than",
        ),
        (
            "laughs",
            payload::zlib_compress(&laughing_pickle()),
            "more than",
        ),
        ("zlib-bomb", bomb, "HDX_JOBS_MAX_PAYLOAD_MB"),
    ];
    assert!(
        cases[0].1.len() < 4096,
        "the deep pickle is small once compressed"
    );
    for (id, data, _) in &cases {
        push_raw_job(&test, id, "default", data);
    }
    // The same poison abandoned by a dead worker: maintenance must recover it without decoding.
    push_raw_job(&test, "abandoned", "default", &cases[0].1);
    mark_abandoned(&test, "abandoned");
    let queue = Queue::new(redis.clone(), "default").expect("queue");
    let last = queue
        .enqueue(JobSpec::new(builtin::NOOP))
        .await
        .expect("enqueue");

    let report = maintenance::clean_queue(&mut redis.conn().await.expect("conn"), "default", "t")
        .await
        .expect("maintenance");
    assert_eq!(report.abandoned_failed, vec!["abandoned".to_string()]);

    let options = WorkerOptions {
        burst: true,
        ..fast_options(&["default"])
    };
    start_worker(&redis, TaskRegistry::with_builtins(), options)
        .join()
        .await;
    for (id, _, needle) in &cases {
        assert_eq!(status(&test, id).as_deref(), Some("failed"), "{id}");
        let text = latest(&redis, id)
            .await
            .and_then(|r| r.exc_string)
            .unwrap_or_default();
        assert!(
            text.contains("DeserializationError") && text.contains(needle),
            "{id}: {text}"
        );
        let view = jobs::view(&redis, id).await.expect("view").expect("shown");
        assert!(view.payload_error.is_some(), "{id}");
    }
    assert_eq!(
        status(&test, &last).as_deref(),
        Some("finished"),
        "the worker went on"
    );
}

/// Successes that end together are written by one script call (`worker/successes.rs`): each
/// job must still get its own complete record, and the worker hash, the metrics and the
/// history must count every job exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successes_written_together_are_each_recorded_and_counted_once() {
    let test = TestRedis::new();
    let redis = client(&test);
    let queue = Queue::new(redis.clone(), "default").expect("queue");
    let n = 300;
    let mut specs: Vec<JobSpec> = (0..n - 1)
        .map(|i| JobSpec::new(builtin::ECHO).arg(i))
        .collect();
    specs.push(JobSpec::new(builtin::ECHO).arg("gone").result_ttl(0));
    let ids = queue.enqueue_many(specs).await.expect("enqueue");
    let parent = &ids[0];
    let child = queue
        .enqueue(
            JobSpec::new(builtin::ECHO)
                .arg("child")
                .depends_on(parent.clone()),
        )
        .await
        .expect("enqueue dependent");

    let options = WorkerOptions {
        concurrency: 32,
        ..fast_options(&["default"])
    };
    let worker = start_worker(&redis, TaskRegistry::with_builtins(), options);
    // Every job plus the dependent, counted on the worker hash.
    let total = n + 1;
    let worker_key = format!("rq:worker:{}", worker.name);
    let deadline = Instant::now() + WAIT;
    let worker_hash = loop {
        let hash: HashMap<String, String> = test.query(redis::cmd("HGETALL").arg(&worker_key));
        if hash.get("successful_job_count") == Some(&total.to_string()) {
            break hash;
        }
        assert!(
            Instant::now() < deadline,
            "jobs not finished in time: {hash:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let report = worker.stop().await;

    assert_eq!(report.succeeded, total as u64);
    assert_eq!(worker_hash["hdx_running"], "0");
    assert_eq!(worker_hash["state"], "idle");
    assert!(!worker_hash.contains_key("current_job"), "{worker_hash:?}");
    assert!(
        worker_hash["total_working_time"]
            .parse::<f64>()
            .expect("time")
            > 0.0
    );

    for (i, id) in ids.iter().enumerate().take(n - 1) {
        let result = latest(&redis, id).await.expect("result");
        assert_eq!(
            result.return_value,
            Some(json!({"args": [i], "kwargs": {}}))
        );
        assert_eq!(status(&test, id).as_deref(), Some("finished"));
    }
    assert_eq!(
        status(&test, &ids[n - 1]),
        None,
        "result_ttl 0 deletes the job"
    );
    assert_eq!(
        status(&test, &child).as_deref(),
        Some("finished"),
        "dependent released"
    );
    assert!(zmembers(&test, "rq:wip:default").is_empty());
    let executions: Vec<String> = test.query(redis::cmd("KEYS").arg("rq:execution*"));
    assert!(executions.is_empty(), "{executions:?}");

    let counted: HashMap<String, i64> = test.query(redis::cmd("HGETALL").arg("hdx:metrics:jobs"));
    assert_eq!(
        counted[&format!("finished\tdefault\t{}", builtin::ECHO)],
        total as i64
    );
    let histogram: HashMap<String, String> =
        test.query(redis::cmd("HGETALL").arg("hdx:metrics:durations"));
    let bucketed: i64 = histogram
        .iter()
        .filter(|(k, _)| !k.ends_with("\tsum"))
        .map(|(_, v)| v.parse::<i64>().expect("count"))
        .sum();
    assert_eq!(bucketed, total as i64);
    let hours: Vec<String> = test.query(redis::cmd("KEYS").arg("hdx:history:*"));
    let mut in_history = 0;
    for hour in hours {
        let minutes: HashMap<String, i64> = test.query(redis::cmd("HGETALL").arg(&hour));
        in_history += minutes.values().sum::<i64>();
        assert!(
            ttl(&test, &hour) > 86_400,
            "the history hash expires a day after its hour"
        );
    }
    assert_eq!(in_history, total as i64);
}
