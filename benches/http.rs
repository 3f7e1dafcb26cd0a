//! HTTP API throughput and latency: `POST /api/send-analytics` and `GET /api/add-layer/...` at
//! 16 connections with wrk, against hdx-jobs-server and, in the same run, the old Flask
//! endpoints under gunicorn (2 workers, one per core), with the load generator, the server and
//! Redis on this host.
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

fn measure(label: &str, base: &str, seconds: u64, script: &Path, rows: &mut Vec<String>) {
    let (rps, p99) = wrk(&format!("{base}/api/send-analytics"), seconds, Some(script));
    rows.push(format!(
        "| {label} | POST /api/send-analytics | {rps:.0} | {p99} |"
    ));
    let (rps, p99) = wrk(&format!("{base}{ADD_LAYER}"), seconds, None);
    rows.push(format!(
        "| {label} | GET /api/add-layer/... | {rps:.0} | {p99} |"
    ));
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
    let script = std::env::temp_dir().join("hdx-jobs-bench-post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{ANALYTICS_BODY}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
        ),
    )
    .expect("wrk script");
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
            .stdout(Stdio::null())
            .spawn()
            .expect("hdx-jobs serve"),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_until_up(&base);
    measure("hdx-jobs-server", &base, seconds, &script, &mut rows);
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
        &script,
        &mut rows,
    );
    drop(flask);

    println!("| server | endpoint | requests/s | p99 latency |\n|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
}
