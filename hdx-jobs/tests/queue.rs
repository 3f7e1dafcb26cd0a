//! Enqueueing and job administration against a real Redis, checked against RQ's layout
//! (docs/rq-protocol.md §5.1, §5.12–§5.16, §9).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use hdx_jobs::builtin;
use hdx_jobs::rq::error::RqError;
use hdx_jobs::rq::payload::{zlib_decompress_or_raw, CallPayload, Serializer};
use hdx_jobs::rq::queue::{JobSpec, Queue, Retry};
use hdx_jobs::rq::scheduler::{Held, Queues, Scheduler, SchedulerOptions};
use hdx_jobs::rq::{info, jobs};
use serde_json::json;
use testkit::TestRedis;

fn options(interval: Duration) -> SchedulerOptions {
    SchedulerOptions {
        queues: Queues::Only(vec!["default".into()]),
        interval,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_writes_the_python_job_layout() {
    let test = TestRedis::new();
    let redis = client(&test);
    let queue = Queue::new(redis, "default").expect("queue");
    let mut spec = JobSpec::new("exptasks.echo")
        .arg(json!({"import_id": 42}))
        .result_ttl(600)
        .failure_ttl(3600)
        .ttl(7200)
        .timeout(300)
        .retry(Retry::new(3).intervals(vec![10, 30, 60]))
        .description("custom desc")
        .serializer(Serializer::Json);
    spec.meta = json!({"k": "v"}).as_object().cloned();
    let id = queue.enqueue(spec).await.expect("enqueue");

    // The vector of docs/rq-protocol.md §9 (RQ's JSONSerializer), field by field.
    let job = job_hash(&test, &id);
    for (field, value) in [
        ("success_callback_name", ""),
        ("failure_callback_name", ""),
        ("stopped_callback_name", ""),
        ("started_at", ""),
        ("ended_at", ""),
        ("last_heartbeat", ""),
        ("worker_name", ""),
        ("group_id", ""),
        ("retries_left", "3"),
        ("retry_intervals", "[10, 30, 60]"),
        ("origin", "default"),
        ("description", "custom desc"),
        ("timeout", "300"),
        ("result_ttl", "600"),
        ("failure_ttl", "3600"),
        ("status", "queued"),
        ("meta", "{\"k\": \"v\"}"),
        ("ttl", "7200"),
    ] {
        assert_eq!(
            job.get(field).map(String::as_str),
            Some(value),
            "field {field}"
        );
    }
    assert!(hdx_jobs::rq::time::parse_ts(&job["created_at"]).is_some());
    assert!(hdx_jobs::rq::time::parse_ts(&job["enqueued_at"]).is_some());
    let raw: Vec<u8> = test.query(redis::cmd("HGET").arg(format!("rq:job:{id}")).arg("data"));
    // A payload this small is stored as it is (RQ reads a data field that is not zlib as is).
    assert_eq!(
        String::from_utf8(raw.clone()).expect("utf8"),
        r#"["exptasks.echo", null, [{"import_id": 42}], {}]"#
    );
    assert_eq!(zlib_decompress_or_raw(&raw), raw);
    for key in [
        format!("rq:job:{id}"),
        format!("rq:job:{id}:dependents"),
        format!("rq:job::{id}:dependencies"),
    ] {
        let t = ttl(&test, &key);
        // The two sets do not exist yet (EXPIRE on a missing key is a no-op, as in Python).
        assert!(t == -2 || (7190..=7200).contains(&t), "{key}: {t}");
    }
    assert!((7190..=7200).contains(&ttl(&test, &format!("rq:job:{id}"))));
    let queues: Vec<String> = test.query(redis::cmd("SMEMBERS").arg("rq:queues"));
    assert_eq!(queues, vec!["rq:queue:default"]);
    assert_eq!(list(&test, "rq:queue:default"), vec![id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_many_writes_every_job_in_order() {
    let test = TestRedis::new();
    let redis = client(&test);
    let queue = Queue::new(redis, "bulk").expect("queue");
    let specs: Vec<JobSpec> = (0..500)
        .map(|i| JobSpec::new(builtin::ECHO).arg(i))
        .collect();
    let ids = queue.enqueue_many(specs).await.expect("enqueue");
    assert_eq!(ids.len(), 500);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 500, "unique ids");
    assert_eq!(list(&test, "rq:queue:bulk"), ids);
    let job = jobs::fetch(&client(&test), &ids[7])
        .await
        .expect("fetch")
        .expect("job");
    assert_eq!(job.payload().expect("payload").args, vec![json!(7)]);
    assert_eq!(queue.count().await.expect("count"), 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_specs_are_refused_before_anything_is_written() {
    let test = TestRedis::new();
    let redis = client(&test);
    assert!(matches!(
        Queue::new(redis.clone(), "bad queue"),
        Err(RqError::InvalidQueueName(_))
    ));
    let queue = Queue::new(redis, "default").expect("queue");
    let specs = vec![
        JobSpec::new(builtin::NOOP),
        JobSpec::new(builtin::NOOP).id("bad:id"),
    ];
    assert!(matches!(
        queue.enqueue_many(specs).await,
        Err(RqError::InvalidJobId(_))
    ));
    assert!(matches!(
        queue.enqueue(JobSpec::new(builtin::NOOP).timeout(0)).await,
        Err(RqError::InvalidArgument(_))
    ));
    assert!(list(&test, "rq:queue:default").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_jobs_wait_in_the_scheduled_registry_until_due() {
    let test = TestRedis::new();
    let redis = client(&test);
    let queue = Queue::new(redis.clone(), "default").expect("queue");
    let later = queue
        .enqueue_in(JobSpec::new(builtin::NOOP), Duration::from_secs(3600))
        .await
        .expect("enqueue");
    let enqueued = std::time::Instant::now();
    let soon = queue
        .enqueue_in(JobSpec::new(builtin::NOOP), Duration::from_millis(1500))
        .await
        .expect("enqueue");

    let job = job_hash(&test, &later);
    assert_eq!(job["status"], "scheduled");
    assert!(!job.contains_key("enqueued_at"));
    let scheduled = zset(&test, "rq:scheduled:default");
    let score = scheduled
        .iter()
        .find(|(m, _)| *m == later)
        .expect("scheduled")
        .1;
    assert!((score - (now_s() + 3600.0)).abs() < 3.0);

    let stop = tokio_util::sync::CancellationToken::new();
    let scheduler = Scheduler::new(redis.clone(), options(Duration::from_millis(50)));
    let running = tokio::spawn(scheduler.run(stop.clone()));
    testkit::eventually_async(
        "the soon job to be enqueued",
        Duration::from_secs(10),
        || {
            list(&test, "rq:queue:default")
                .contains(&soon)
                .then_some(())
        },
    )
    .await;
    assert!(
        enqueued.elapsed() >= Duration::from_millis(1400),
        "not promoted before its time"
    );
    assert_eq!(status(&test, &soon).as_deref(), Some("queued"));
    assert_eq!(status(&test, &later).as_deref(), Some("scheduled"));
    stop.cancel();
    running.await.expect("scheduler");
    let lock: Option<String> = test.query(redis::cmd("GET").arg("rq:scheduler-lock:default"));
    assert_eq!(lock, None, "lock released on stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_scheduler_holds_a_queue_and_no_job_is_promoted_twice() {
    let test = TestRedis::new();
    let redis = client(&test);
    let queue = Queue::new(redis.clone(), "default").expect("queue");
    let past = chrono::Utc::now() - chrono::Duration::seconds(5);
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for _ in 0..50 {
            ids.push(
                queue
                    .enqueue_at(JobSpec::new(builtin::NOOP), past)
                    .await
                    .expect("enqueue"),
            );
        }
        ids
    };
    let a = Scheduler::new(redis.clone(), options(Duration::from_millis(50)));
    let b = Scheduler::new(redis.clone(), options(Duration::from_millis(50)));
    let (mut held_a, mut held_b) = (Held::default(), Held::default());
    let moved_a = a.round(&mut held_a).await.expect("round a").promoted;
    let moved_b = b.round(&mut held_b).await.expect("round b").promoted;
    assert_eq!(
        (held_a.queues().len(), held_b.queues().len()),
        (1, 0),
        "only the first holds the lock"
    );
    assert_eq!((moved_a, moved_b), (50, 0));
    let lock: Option<String> = test.query(redis::cmd("GET").arg("rq:scheduler-lock:default"));
    assert_eq!(lock.as_deref(), Some(a.name()));
    let queued = list(&test, "rq:queue:default");
    assert_eq!(queued.len(), 50);
    assert_eq!(
        queued.iter().collect::<HashSet<_>>(),
        ids.iter().collect::<HashSet<_>>()
    );
    let ttl_lock = ttl(&test, "rq:scheduler-lock:default");
    assert!((10..=15).contains(&ttl_lock), "{ttl_lock}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_requeue_delete_and_empty() {
    let test = TestRedis::new();
    let redis = client(&test);
    let queue = Queue::new(redis.clone(), "default").expect("queue");
    let canceled = queue
        .enqueue(JobSpec::new(builtin::NOOP))
        .await
        .expect("enqueue");
    jobs::cancel(&redis, &canceled).await.expect("cancel");
    assert_eq!(status(&test, &canceled).as_deref(), Some("canceled"));
    assert_eq!(
        zmembers(&test, "rq:canceled:default"),
        vec![canceled.clone()]
    );
    assert!(list(&test, "rq:queue:default").is_empty());

    let failing = queue
        .enqueue(JobSpec::new(builtin::FAIL).arg("once"))
        .await
        .expect("enqueue");
    run_burst(&redis, &["default"]).await;
    assert_eq!(status(&test, &failing).as_deref(), Some("failed"));
    assert!(
        matches!(
            jobs::requeue(&redis, &canceled).await,
            Err(RqError::Refused(_))
        ),
        "only failed jobs"
    );
    jobs::requeue(&redis, &failing).await.expect("requeue");
    let job = job_hash(&test, &failing);
    assert_eq!(job["status"], "queued");
    assert_eq!(job["started_at"], "");
    assert!(zmembers(&test, "rq:failed:default").is_empty());
    assert_eq!(list(&test, "rq:queue:default"), vec![failing.clone()]);

    jobs::delete(&redis, &failing).await.expect("delete");
    assert!(list(&test, "rq:queue:default").is_empty());
    let exists: i64 = test.query(
        redis::cmd("EXISTS")
            .arg(format!("rq:job:{failing}"))
            .arg(format!("rq:results:{failing}")),
    );
    assert_eq!(exists, 0);
    assert!(matches!(
        jobs::delete(&redis, &failing).await,
        Err(RqError::NoSuchJob(_))
    ));

    let ids = queue
        .enqueue_many(vec![JobSpec::new(builtin::NOOP); 3])
        .await
        .expect("enqueue");
    assert_eq!(queue.empty().await.expect("empty"), 3);
    assert!(list(&test, "rq:queue:default").is_empty());
    assert_eq!(status(&test, &ids[0]), None, "jobs deleted with the queue");

    let summary = info::queues(&redis).await.expect("info");
    assert_eq!(summary.len(), 1);
    assert_eq!((summary[0].queued, summary[0].canceled), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_round_trips_through_redis() {
    let test = TestRedis::new();
    let redis = client(&test);
    let queue = Queue::new(redis.clone(), "default").expect("queue");
    let id = queue
        .enqueue(JobSpec::new("m.f").arg("São Paulo").kwarg("n", 1.5))
        .await
        .expect("enqueue");
    let job = jobs::fetch(&redis, &id).await.expect("fetch").expect("job");
    let call: CallPayload = job.payload().expect("payload");
    assert_eq!(call.args, vec![json!("São Paulo")]);
    assert_eq!(call.kwargs["n"], json!(1.5));
    assert_eq!(
        job.description().as_deref(),
        Some("m.f('São Paulo', n=1.5)")
    );
}
