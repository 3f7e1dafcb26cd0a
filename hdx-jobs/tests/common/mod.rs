//! Helpers for the library's integration tests: an in-process worker with short intervals and
//! readers of what RQ tools would see.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use hdx_jobs::rq::worker::{StopHandle, Worker, WorkerOptions, WorkerReport};
use hdx_jobs::task::TaskRegistry;
use hdx_jobs::RedisClient;
use testkit::TestRedis;
use tokio::task::JoinHandle;

/// Worker options for tests: leases of 3 s renewed every second, maintenance every 200 ms.
pub fn fast_options(queues: &[&str]) -> WorkerOptions {
    WorkerOptions {
        queues: queues.iter().map(|q| q.to_string()).collect(),
        job_monitoring_interval: Duration::from_secs(1),
        lease_grace: Duration::from_secs(2),
        maintenance_interval: Duration::from_millis(200),
        scheduler_interval: Duration::from_millis(100),
        ..WorkerOptions::default()
    }
}

/// A worker running in the background of the test.
pub struct RunningWorker {
    pub name: String,
    pub stop: StopHandle,
    pub handle: JoinHandle<WorkerReport>,
}

impl RunningWorker {
    /// Stops it warm and waits for its report.
    pub async fn stop(self) -> WorkerReport {
        self.stop.warm();
        self.join().await
    }

    /// Waits for it to end by itself.
    pub async fn join(self) -> WorkerReport {
        tokio::time::timeout(Duration::from_secs(60), self.handle)
            .await
            .expect("worker ended in time")
            .expect("worker task")
    }
}

/// Starts a worker with the given tasks and options.
pub fn start_worker(
    redis: &RedisClient,
    tasks: TaskRegistry,
    options: WorkerOptions,
) -> RunningWorker {
    let worker = Worker::new(redis.clone(), tasks, options).expect("worker");
    let name = worker.name().to_string();
    let stop = worker.stop_handle();
    let handle = tokio::spawn(async move { worker.run().await.expect("worker run") });
    RunningWorker { name, stop, handle }
}

/// Runs a burst worker with the built-in tasks to completion.
pub async fn run_burst(redis: &RedisClient, queues: &[&str]) -> WorkerReport {
    let options = WorkerOptions {
        burst: true,
        ..fast_options(queues)
    };
    start_worker(redis, TaskRegistry::with_builtins(), options)
        .join()
        .await
}

/// The client of a test database.
pub fn client(test: &TestRedis) -> RedisClient {
    RedisClient::open(test.url()).expect("client")
}

/// A job hash as text.
pub fn job_hash(test: &TestRedis, id: &str) -> HashMap<String, String> {
    let raw: HashMap<String, Vec<u8>> =
        test.query(redis::cmd("HGETALL").arg(format!("rq:job:{id}")));
    raw.into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect()
}

/// A job's status field.
pub fn status(test: &TestRedis, id: &str) -> Option<String> {
    test.query(redis::cmd("HGET").arg(format!("rq:job:{id}")).arg("status"))
}

/// Members of a sorted set with their scores.
pub fn zset(test: &TestRedis, key: &str) -> Vec<(String, f64)> {
    test.query(
        redis::cmd("ZRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES"),
    )
}

/// Members of a sorted set.
pub fn zmembers(test: &TestRedis, key: &str) -> Vec<String> {
    test.query(redis::cmd("ZRANGE").arg(key).arg(0).arg(-1))
}

/// Elements of a list.
pub fn list(test: &TestRedis, key: &str) -> Vec<String> {
    test.query(redis::cmd("LRANGE").arg(key).arg(0).arg(-1))
}

/// Seconds to live of a key (-1: none, -2: missing).
pub fn ttl(test: &TestRedis, key: &str) -> i64 {
    test.query(redis::cmd("TTL").arg(key))
}

/// The latest result's decoded view.
pub async fn latest(redis: &RedisClient, id: &str) -> Option<hdx_jobs::rq::results::JobResult> {
    let mut conn = redis.conn().await.expect("conn");
    hdx_jobs::rq::results::latest_result(&mut conn, id)
        .await
        .expect("result")
}

/// Polls until the job reaches `status`.
pub async fn wait_status(test: &TestRedis, id: &str, wanted: &str, timeout: Duration) {
    testkit::eventually_async(&format!("job {id} to be {wanted}"), timeout, || {
        (status(test, id).as_deref() == Some(wanted)).then_some(())
    })
    .await
}

/// Now in Unix seconds.
pub fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}
