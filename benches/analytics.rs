//! Analytics jobs per second, end to end: jobs pickled by Python RQ as the old API enqueued
//! them, run by one `hdx-jobs work` process, delivered over HTTP to a local collector.
//!
//! ```sh
//! scripts/bench.sh analytics     # builds target/release/hdx-jobs, then runs this
//! ```
//!
//! Two workloads: Mixpanel only (one POST to `/track` per job), and Mixpanel plus GA4 (two
//! POSTs per job). The rate is computed from the jobs' own `started_at`/`ended_at` (first start
//! to last end), so process start-up does not count; the collector must have received every
//! event, each with its own `$insert_id` (repeats from retries are counted and shown).
//!
//! The collector is a small async server (axum) in this process rather than the tests'
//! `FakeServer`: tiny_http gives each connection a pooled thread, and a new connection can wait
//! seconds for one behind long-lived keep-alive connections, which would measure the fake
//! rather than the worker.
//!
//! Sizes: `BENCH_JOBS` (default 20,000), `BENCH_CONCURRENCY` (default 64).

mod common;

use common::*;
use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use testkit::{redis, TestRedis};

/// What the collector received: each `/track` event's `$insert_id`, and the GA4 posts.
#[derive(Default)]
struct Received {
    insert_ids: Vec<String>,
    ga4: usize,
}

type Shared = Arc<Mutex<Received>>;

async fn track(State(received): State<Shared>, body: Bytes) -> Json<Value> {
    let form = testkit::http::parse_pairs(&String::from_utf8_lossy(&body));
    let insert_id = form
        .iter()
        .find(|(k, _)| k == "data")
        .and_then(|(_, data)| serde_json::from_str::<Value>(data).ok())
        .and_then(|batch| {
            batch[0]["properties"]["$insert_id"]
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_default();
    if let Ok(mut r) = received.lock() {
        r.insert_ids.push(insert_id);
    }
    Json(json!({"status": 1, "error": null}))
}

async fn ga4(State(received): State<Shared>, _body: Bytes) -> StatusCode {
    if let Ok(mut r) = received.lock() {
        r.ga4 += 1;
    }
    StatusCode::NO_CONTENT
}

/// Starts the collector on a free port; returns its URL.
fn start_collector(runtime: &tokio::runtime::Runtime, received: Shared) -> String {
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let app = Router::new()
        .route("/track", post(track))
        .route("/mp/collect", post(ga4))
        .with_state(received);
    runtime.spawn(async move { axum::serve(listener, app).await });
    url
}

/// The arguments HDX's CKAN sends for a sign-up.
fn arguments(send_ga: bool) -> Value {
    json!({
        "event_name": "first login",
        "send_mixpanel": true,
        "send_ga": send_ga,
        "mixpanel_token": "bench-token",
        "mixpanel_tracking_id": "7f1c2e9a0b3d",
        "mixpanel_meta": {
            "onboarding start": "email", "account choice": "new account",
            "server side": true, "user agent": "Mozilla/5.0", "ip": "8.8.8.8",
            "$os": "Linux", "$browser": "Firefox", "$browser_version": "120",
            "$current_url": "https://data.humdata.org/user/register"
        },
        "ga_meta": {
            "ec": "organization", "ea": "first login", "el": "new account", "cd1": "email",
            "uip": "8.8.8.8", "dl": "https://data.humdata.org/user/register", "ds": "direct",
            "v": "1", "t": "event", "cid": "anonymous", "tid": "UA-1"
        }
    })
}

/// Enqueues `n` pickled jobs from Python; returns their ids.
fn enqueue(test: &TestRedis, n: usize, arguments: &Value) -> Vec<String> {
    let output = Command::new(testkit::python())
        .arg(testkit::workspace_root().join("benches/python/analytics_bench.py"))
        .arg(test.url())
        .args([
            "--jobs",
            &n.to_string(),
            "--arguments",
            &arguments.to_string(),
        ])
        .output()
        .expect("python");
    testkit::check(&output, "analytics_bench.py");
    let ids: Vec<String> = test.query(
        redis::cmd("LRANGE")
            .arg("rq:queue:analytics_q")
            .arg(0)
            .arg(-1),
    );
    assert_eq!(ids.len(), n);
    ids
}

/// Runs one workload; returns (jobs/s, wall seconds, repeated deliveries).
fn run(
    test: &TestRedis,
    runtime: &tokio::runtime::Runtime,
    jobs: usize,
    concurrency: usize,
    with_ga: bool,
) -> (f64, f64, usize) {
    let received: Shared = Arc::default();
    let collector = start_collector(runtime, received.clone());
    let ids = enqueue(test, jobs, &arguments(with_ga));

    let mut worker = Command::new(release_binary());
    worker
        .args([
            "--url",
            test.url(),
            "--log-level",
            "warn",
            "work",
            "--burst",
        ])
        .args(["--concurrency", &concurrency.to_string(), "analytics_q"])
        .env("MIXPANEL_API_URL", &collector)
        .env_remove("MIXPANEL_API_SECRET")
        .env_remove("MIXPANEL_SERVICE_ACCOUNT")
        .env_remove("GA_MODE")
        .env_remove("GA_DEBUG");
    if with_ga {
        worker
            .env("GA_MEASUREMENT_ID", "G-BENCH")
            .env("GA_API_SECRET", "bench-secret")
            .env("GA_MP_URL", format!("{collector}/mp/collect"));
    } else {
        worker
            .env_remove("GA_MEASUREMENT_ID")
            .env_remove("GA_API_SECRET");
    }
    let wall = Instant::now();
    let status = worker.status().expect("run hdx-jobs");
    assert!(status.success());
    let wall = wall.elapsed().as_secs_f64();
    let rate = processing_rate(test, &ids);

    let received = received.lock().expect("received");
    let distinct: HashSet<&String> = received.insert_ids.iter().collect();
    assert_eq!(
        distinct.len(),
        jobs,
        "every job's event arrived, each with its own $insert_id"
    );
    assert!(
        !distinct.contains(&String::new()),
        "every event has an $insert_id"
    );
    if with_ga {
        assert!(received.ga4 >= jobs, "every GA4 event arrived");
    }
    let repeats = received.insert_ids.len() - jobs
        + received.ga4.saturating_sub(if with_ga { jobs } else { 0 });
    let () = redis::cmd("FLUSHDB")
        .query(&mut test.conn())
        .expect("flush");
    (rate, wall, repeats)
}

fn main() {
    let jobs = env_usize("BENCH_JOBS", 20_000);
    let concurrency = env_usize("BENCH_CONCURRENCY", 64);
    let test = TestRedis::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    println!("| workload ({jobs} jobs, one `hdx-jobs work`, concurrency {concurrency}) | result |");
    println!("|---|---|");
    for (label, with_ga) in [
        ("Mixpanel /track only (1 POST per job)", false),
        ("Mixpanel /track + GA4 /mp/collect (2 POSTs per job)", true),
    ] {
        let (rate, wall, repeats) = run(&test, &runtime, jobs, concurrency, with_ga);
        println!(
            "| {label} | {rate:.0} jobs/s ({wall:.2} s wall incl. start-up, {repeats} retried deliveries) |"
        );
    }
}
