//! The worker through Redis outages: a restart of the server, and data loss.

mod common;

use std::time::Duration;

use common::*;
use hdx_jobs::builtin;
use hdx_jobs::rq::queue::{JobSpec, Queue};
use hdx_jobs::rq::worker::WorkerOptions;
use hdx_jobs::task::TaskRegistry;
use hdx_jobs::RedisClient;
use testkit::{PrivateRedis, TestRedis};

fn key_exists(url: &str, key: &str) -> bool {
    let mut conn = redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .expect("connect");
    redis::cmd("EXISTS")
        .arg(key)
        .query::<bool>(&mut conn)
        .unwrap_or(false)
}

fn job_status(url: &str, id: &str) -> Option<String> {
    let mut conn = redis::Client::open(url).ok()?.get_connection().ok()?;
    redis::cmd("HGET")
        .arg(format!("rq:job:{id}"))
        .arg("status")
        .query(&mut conn)
        .ok()?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_rides_out_a_redis_restart_without_losing_the_running_job() {
    let mut server = PrivateRedis::start();
    let url = server.url();
    let redis = RedisClient::open(&url).expect("client");
    let queue = Queue::new(redis.clone(), "default").expect("queue");
    let running = queue
        .enqueue(JobSpec::new(builtin::SLEEP).arg(2))
        .await
        .expect("enqueue");

    // Leases long enough to outlast the outage.
    let options = WorkerOptions {
        lease_grace: Duration::from_secs(30),
        ..fast_options(&["default"])
    };
    let worker = start_worker(&redis, TaskRegistry::with_builtins(), options);
    testkit::eventually_async("job started", Duration::from_secs(10), || {
        (job_status(&url, &running).as_deref() == Some("started")).then_some(())
    })
    .await;

    server.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await; // the outage itself, not a sync
    server.restart();

    testkit::eventually_async(
        "the running job recorded after the outage",
        Duration::from_secs(30),
        || (job_status(&url, &running).as_deref() == Some("finished")).then_some(()),
    )
    .await;
    let after = queue
        .enqueue(JobSpec::new(builtin::NOOP))
        .await
        .expect("enqueue");
    testkit::eventually_async(
        "a new job taken after reconnecting",
        Duration::from_secs(30),
        || (job_status(&url, &after).as_deref() == Some("finished")).then_some(()),
    )
    .await;
    let report = worker.stop().await;
    assert_eq!(report.succeeded, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_registers_again_when_redis_lost_its_data() {
    let test = TestRedis::new();
    let redis = client(&test);
    let worker = start_worker(
        &redis,
        TaskRegistry::with_builtins(),
        fast_options(&["default"]),
    );
    let key = format!("rq:worker:{}", worker.name);
    testkit::eventually_async("registered", Duration::from_secs(10), || {
        key_exists(test.url(), &key).then_some(())
    })
    .await;

    let () = test.query(&mut redis::cmd("FLUSHDB"));
    testkit::eventually_async("registered again", Duration::from_secs(10), || {
        let workers: Vec<String> = test.query(redis::cmd("SMEMBERS").arg("rq:workers:default"));
        (key_exists(test.url(), &key) && workers.contains(&key)).then_some(())
    })
    .await;
    let queue = Queue::new(redis.clone(), "default").expect("queue");
    let id = queue
        .enqueue(JobSpec::new(builtin::NOOP))
        .await
        .expect("enqueue");
    wait_status(&test, &id, "finished", Duration::from_secs(10)).await;
    worker.stop().await;
}
