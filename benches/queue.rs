//! Queue throughput, side by side with Python RQ 2.12, on one Redis and one machine, in one run.
//!
//! ```sh
//! scripts/bench.sh queue        # builds target/release/hdx-jobs, then runs this
//! ```
//!
//! Measures, on no-op jobs:
//! - enqueue rate: hdx-jobs' batch API (`enqueue_many`, 1,000 per transaction) and one call per
//!   job, against Python's `Queue.enqueue` loop and `Queue.enqueue_many` pipeline;
//! - processing rate of one `hdx-jobs work --burst` process against Python's `SimpleWorker` and
//!   forking `Worker`, each computed from the jobs' own timestamps (first start to last end), so
//!   process start-up is not counted for either side;
//! - the resident memory of an idle `hdx-jobs work` process.
//!
//! Sizes can be changed with `BENCH_JOBS` (hdx-jobs), `BENCH_PY_JOBS` (SimpleWorker),
//! `BENCH_PY_FORK_JOBS` (forking Worker), `BENCH_CONCURRENCY`.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hdx_jobs::rq::queue::{JobSpec, Queue};
use hdx_jobs::RedisClient;
use testkit::{redis, TestRedis};

async fn enqueue_batched(
    redis: &RedisClient,
    queue: &str,
    func: &str,
    n: usize,
) -> (Vec<String>, f64) {
    let q = Queue::new(redis.clone(), queue).expect("queue");
    let start = Instant::now();
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        let batch = (n - ids.len()).min(1000);
        ids.extend(
            q.enqueue_many(vec![JobSpec::new(func); batch])
                .await
                .expect("enqueue"),
        );
    }
    (ids, n as f64 / start.elapsed().as_secs_f64())
}

fn python_bench(test: &TestRedis, args: &[&str]) -> String {
    let script = testkit::workspace_root().join("benches/python/rq_bench.py");
    let output = Command::new(testkit::python())
        .arg(script)
        .arg(test.url())
        .args(args)
        .env(
            "PYTHONPATH",
            testkit::workspace_root().join("testkit/python"),
        )
        .output()
        .expect("python");
    testkit::check(&output, "rq_bench.py");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let jobs = env_usize("BENCH_JOBS", 100_000);
    let py_jobs = env_usize("BENCH_PY_JOBS", 10_000);
    let py_fork_jobs = env_usize("BENCH_PY_FORK_JOBS", 1_000);
    let concurrency = env_usize("BENCH_CONCURRENCY", 64);
    let binary = release_binary();
    let test = TestRedis::new();
    let redis = RedisClient::open(test.url()).expect("client");
    let mut rows: Vec<(String, String)> = Vec::new();

    // Enqueue.
    let (_, rate) = enqueue_batched(&redis, "enq", "hdx_jobs.noop", jobs).await;
    rows.push((
        "enqueue, hdx-jobs enqueue_many (1,000 per transaction)".into(),
        format!("{rate:.0} jobs/s"),
    ));
    let q = Queue::new(redis.clone(), "enq1").expect("queue");
    let n_single = (jobs / 10).max(1000);
    let start = Instant::now();
    for _ in 0..n_single {
        q.enqueue(JobSpec::new("hdx_jobs.noop"))
            .await
            .expect("enqueue");
    }
    rows.push((
        "enqueue, hdx-jobs one call per job".into(),
        format!(
            "{:.0} jobs/s",
            n_single as f64 / start.elapsed().as_secs_f64()
        ),
    ));
    let py = python_bench(&test, &["enqueue", "--jobs", &py_jobs.to_string()]);
    for line in py.lines() {
        if let Some((label, value)) = line.split_once('\t') {
            rows.push((label.to_string(), value.to_string()));
        }
    }
    let () = redis::cmd("FLUSHDB")
        .query(&mut test.conn())
        .expect("flush");

    // hdx-jobs worker.
    let (ids, _) = enqueue_batched(&redis, "default", "hdx_jobs.noop", jobs).await;
    let wall = Instant::now();
    let status = Command::new(&binary)
        .args([
            "--url",
            test.url(),
            "--log-level",
            "warn",
            "work",
            "--burst",
            "--concurrency",
            &concurrency.to_string(),
            "default",
        ])
        .status()
        .expect("run hdx-jobs");
    assert!(status.success());
    let wall = wall.elapsed();
    let rate = processing_rate(&test, &ids);
    rows.push((
        format!("process, one `hdx-jobs work` (concurrency {concurrency}), {jobs} jobs"),
        format!(
            "{rate:.0} jobs/s ({:.2} s wall incl. start-up)",
            wall.as_secs_f64()
        ),
    ));
    let rust_rate = rate;
    let () = redis::cmd("FLUSHDB")
        .query(&mut test.conn())
        .expect("flush");

    // Python workers.
    let mut simple_rate = 0.0;
    for (label, kind, n) in [
        ("SimpleWorker", "simple", py_jobs),
        ("forking Worker", "fork", py_fork_jobs),
    ] {
        let (ids, _) = enqueue_batched(&redis, "py", "pyjobs.noop", n).await;
        python_bench(&test, &["work", "--kind", kind]);
        let rate = processing_rate(&test, &ids);
        if kind == "simple" {
            simple_rate = rate;
        }
        rows.push((
            format!("process, Python RQ 2.12 {label}, {n} jobs"),
            format!("{rate:.0} jobs/s"),
        ));
        let () = redis::cmd("FLUSHDB")
            .query(&mut test.conn())
            .expect("flush");
    }
    rows.push((
        "hdx-jobs worker / SimpleWorker".into(),
        format!("{:.1}x", rust_rate / simple_rate),
    ));

    // Idle memory.
    let mut idle = Command::new(&binary)
        .args(["--url", test.url(), "--log-level", "warn", "work", "idle_q"])
        .stdout(Stdio::null())
        .spawn()
        .expect("idle worker");
    let mut conn = test.conn();
    testkit::eventually("idle worker registered", Duration::from_secs(10), || {
        let n: u64 = redis::cmd("SCARD")
            .arg("rq:workers")
            .query(&mut conn)
            .ok()?;
        (n == 1).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2)); // let it settle into its idle loop
    let rss = rss_kib(idle.id());
    let _ = idle.kill();
    let _ = idle.wait();
    rows.push((
        "idle `hdx-jobs work` resident memory".into(),
        format!("{:.1} MiB", rss as f64 / 1024.0),
    ));

    println!("| measurement | result |\n|---|---|");
    for (label, value) in rows {
        println!("| {label} | {value} |");
    }
}
