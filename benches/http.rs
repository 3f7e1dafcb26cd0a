//! HTTP API throughput and latency: `POST /api/send-analytics`, `GET /api/add-layer/...` and
//! `POST /api/create-change-events` (the bundled CKAN dataset pair, 18 KB) at 16 connections
//! with wrk, against hdx-jobs-server and, in the same run, the old Flask endpoints under
//! gunicorn (2 workers, one per core), with the load generator, the server and Redis on this
//! host.
//!
//! ```sh
//! scripts/bench.sh http
//! ```
//! `BENCH_SECONDS` sets each run's length (default 10).

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};

use testkit::TestRedis;

const ADD_LAYER: &str = "/api/add-layer/dataset/d1/resource/r1?resource_download_url=http%3A%2F%2Fdata.humdata.org%2Fa.geojson";
const ANALYTICS_BODY: &str = r#"{"event_name": "resource download", "send_mixpanel": true, "send_ga": false, "mixpanel_token": "t", "mixpanel_tracking_id": "u", "mixpanel_meta": {"resource id": "r1"}, "ga_meta": {"cid": "c"}}"#;

/// Runs wrk; returns (requests/s, p99 latency text).
fn wrk(url: &str, seconds: u64, script: Option<&Path>) -> (f64, String) {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t2", "-c16", &format!("-d{seconds}s"), "--latency"]);
    if let Some(script) = script {
        cmd.arg("-s").arg(script);
    }
    let output = cmd
        .arg(url)
        .output()
        .expect("wrk (scripts/setup.sh installs it)");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(!text.contains("Non-2xx"), "errors during the run:\n{text}");
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    (rps, p99)
}

/// Checks that the run enqueued jobs on `queue` (an endpoint that answers without enqueuing
/// must not pass for a fast one), then empties the database for the next run.
fn enqueued(test: &TestRedis, queue: &str) {
    let jobs: u64 = test.query(testkit::redis::cmd("LLEN").arg(format!("rq:queue:{queue}")));
    assert!(jobs > 0, "nothing was enqueued on {queue}");
    let _: () = test.query(&mut testkit::redis::cmd("FLUSHDB"));
}

fn measure(
    label: &str,
    base: &str,
    seconds: u64,
    scripts: &Scripts,
    test: &TestRedis,
    rows: &mut Vec<String>,
) {
    let (rps, p99) = wrk(
        &format!("{base}/api/send-analytics"),
        seconds,
        Some(&scripts.analytics),
    );
    enqueued(test, "analytics_q");
    rows.push(format!(
        "| {label} | POST /api/send-analytics | {rps:.0} | {p99} |"
    ));
    let (rps, p99) = wrk(&format!("{base}{ADD_LAYER}"), seconds, None);
    enqueued(test, "geo_q");
    rows.push(format!(
        "| {label} | GET /api/add-layer/... | {rps:.0} | {p99} |"
    ));
    let (rps, p99) = wrk(
        &format!("{base}/api/create-change-events"),
        seconds,
        Some(&scripts.change_events),
    );
    enqueued(test, "event_q");
    rows.push(format!(
        "| {label} | POST /api/create-change-events ({} KB) | {rps:.0} | {p99} |",
        scripts.change_events_bytes / 1000
    ));
}

/// wrk scripts of the POST requests.
struct Scripts {
    analytics: std::path::PathBuf,
    change_events: std::path::PathBuf,
    change_events_bytes: usize,
}

/// Writes a wrk script POSTing `body` as JSON (the body in a file beside it, read by the script).
fn post_script(name: &str, body: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir();
    let body_path = dir.join(format!("hdx-jobs-bench-{name}.json"));
    std::fs::write(&body_path, body).expect("body file");
    let script = dir.join(format!("hdx-jobs-bench-{name}.lua"));
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n\
             local f = io.open({:?})\nwrk.body = f:read(\"*a\")\nf:close()\n",
            body_path.display().to_string()
        ),
    )
    .expect("wrk script");
    script
}

fn main() {
    let seconds = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let binary = testkit::workspace_root().join("target/release/hdx-jobs");
    assert!(
        binary.exists(),
        "build it first: cargo build --release -p hdx-jobs-cli (scripts/bench.sh does)"
    );
    let read = |name: &str| -> serde_json::Value {
        let path = testkit::sample(&format!("ckan/{name}"));
        serde_json::from_slice(&std::fs::read(&path).expect("sample")).expect("sample JSON")
    };
    let change_events = serde_json::json!({
        "username": "bench",
        "old_dataset_dict": read("dataset_old.json"),
        "new_dataset_dict": read("dataset_new.json"),
    })
    .to_string();
    let scripts = Scripts {
        analytics: post_script("analytics", ANALYTICS_BODY),
        change_events_bytes: change_events.len(),
        change_events: post_script("change-events", &change_events),
    };
    let test = TestRedis::new();
    let mut rows = Vec::new();

    let port = free_port();
    let server = Server(
        Command::new(&binary)
            .args([
                "--url",
                test.url(),
                "--log-level",
                "warn",
                "serve",
                "--bind",
                &format!("127.0.0.1:{port}"),
            ])
            // Off by default (as in the old service): the endpoint would answer without
            // enqueuing, which is not what is measured.
            .env("EVENTS_API_ENABLED", "true")
            .stdout(Stdio::null())
            .spawn()
            .expect("hdx-jobs serve"),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_until_up(&base);
    measure(
        "hdx-jobs-server",
        &base,
        seconds,
        &scripts,
        &test,
        &mut rows,
    );
    drop(server);

    let port = free_port();
    let gunicorn = testkit::python().with_file_name("gunicorn");
    let flask = Server(
        Command::new(gunicorn)
            .args([
                "-w",
                "2",
                "-b",
                &format!("127.0.0.1:{port}"),
                "--log-level",
                "warning",
                "flask_api:app",
            ])
            .current_dir(testkit::workspace_root().join("benches/python"))
            .env("REDIS_URL", test.url())
            .stdout(Stdio::null())
            .spawn()
            .expect("gunicorn"),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_until_up(&base);
    measure(
        "old Flask app, gunicorn -w 2",
        &base,
        seconds,
        &scripts,
        &test,
        &mut rows,
    );
    drop(flask);

    println!("| server | endpoint | requests/s | p99 latency |\n|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
}
