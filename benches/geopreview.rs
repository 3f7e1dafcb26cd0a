//! Geopreview imports: `hdx-jobs geopreview import` against `ogr2ogr` as the old service ran it
//! (`PG_USE_COPY=NO`) and `ogr2ogr` with COPY, in the same run, into the same PostGIS; and the
//! latency from enqueue to CKAN report on a warm worker for the old service's test file
//! test.geojson when this machine has it (`testkit::shared_fixture`), else the sample
//! `samples/geo/districts.geojson`.
//!
//! ```sh
//! scripts/bench.sh geopreview     # builds target/release/hdx-jobs, then runs this
//! ```
//!
//! Data, generated here as GeoJSON: 200,000 points with 5 properties, and 20,000 polygons of
//! 50 vertices (49 distinct + the closing one) with 2 properties. Each path runs
//! `BENCH_GEO_RUNS` times (default 5, interleaved) and the median wall time is shown. The
//! `hdx-jobs` figure is the whole CLI pipeline (child process, staging table, spatial index,
//! ANALYZE, out-of-range check, bounding box, fields, swap); the ogr2ogr figures are the plain
//! translation with its default spatial index, with the old service's options, and once more
//! followed by an `ANALYZE` of the table (timed on an open connection), which is the same work.
//!
//! Latency: one `hdx-jobs work geo_q` process, warmed with a few jobs, then
//! `BENCH_GEO_LATENCY_JOBS` (default 30) jobs one after another, each enqueued with the library
//! (the old argument dict) and timed until the local CKAN (a small axum server in this
//! process, which also serves the file) receives its report.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use hdx_jobs::rq::queue::{JobSpec, Queue};
use serde_json::{json, Value};
use testkit::{TestPostgres, TestRedis};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn release_binary() -> PathBuf {
    let path = testkit::workspace_root().join("target/release/hdx-jobs");
    assert!(
        path.exists(),
        "build it first: cargo build --release -p hdx-jobs-cli (scripts/bench.sh does)"
    );
    path
}

/// A small deterministic generator (no dependency for random numbers).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn write_points(path: &Path, n: usize) {
    let mut rng = Lcg(42);
    let mut out = String::with_capacity(n * 200);
    out.push_str("{\"type\":\"FeatureCollection\",\"features\":[\n");
    for i in 0..n {
        if i > 0 {
            out.push_str(",\n");
        }
        let (x, y) = (rng.next() * 340.0 - 170.0, rng.next() * 160.0 - 80.0);
        out.push_str(&format!(
            "{{\"type\":\"Feature\",\"properties\":{{\"name\":\"site {i}\",\"population\":{},\
             \"score\":{:.3},\"category\":\"c{}\",\"updated\":\"2024-0{}-1{}\"}},\
             \"geometry\":{{\"type\":\"Point\",\"coordinates\":[{x:.6},{y:.6}]}}}}",
            (rng.next() * 100_000.0) as u64,
            rng.next() * 100.0,
            i % 17,
            1 + i % 9,
            i % 10
        ));
    }
    out.push_str("\n]}\n");
    std::fs::write(path, out).expect("write points");
}

fn write_polygons(path: &Path, n: usize, vertices: usize) {
    let mut rng = Lcg(7);
    let mut out = String::with_capacity(n * vertices * 30);
    out.push_str("{\"type\":\"FeatureCollection\",\"features\":[\n");
    for i in 0..n {
        if i > 0 {
            out.push_str(",\n");
        }
        let (cx, cy) = (rng.next() * 340.0 - 170.0, rng.next() * 160.0 - 80.0);
        let r = 0.01 + rng.next() * 0.5;
        let mut ring = Vec::with_capacity(vertices);
        for v in 0..vertices - 1 {
            let a = v as f64 / (vertices - 1) as f64 * std::f64::consts::TAU;
            ring.push(format!(
                "[{:.6},{:.6}]",
                cx + r * a.cos(),
                cy + r * a.sin() * (0.8 + 0.2 * rng.next())
            ));
        }
        ring.push(ring[0].clone());
        out.push_str(&format!(
            "{{\"type\":\"Feature\",\"properties\":{{\"admin\":\"area {i}\",\"code\":{i}}},\
             \"geometry\":{{\"type\":\"Polygon\",\"coordinates\":[[{}]]}}}}",
            ring.join(",")
        ));
    }
    out.push_str("\n]}\n");
    std::fs::write(path, out).expect("write polygons");
}

/// Wall time of a command that must succeed.
fn timed(cmd: &mut Command, what: &str) -> f64 {
    let start = Instant::now();
    let output = cmd.output().expect(what);
    let elapsed = start.elapsed().as_secs_f64();
    testkit::check(&output, what);
    elapsed
}

fn ogr2ogr(pg: &TestPostgres, source: &Path, table: &str, copy: bool) -> Command {
    let mut cmd = Command::new("ogr2ogr");
    cmd.args(["--config", "PG_USE_COPY", if copy { "YES" } else { "NO" }])
        .args(["--config", "OGR_PG_ENABLE_METADATA", "NO"])
        .args(["-f", "PostgreSQL"])
        .arg(format!("PG:{}", pg.conn_string()))
        .arg(source)
        .args(["-nln", table, "-overwrite", "-lco", "OVERWRITE=YES"])
        .args(["-fieldTypeToString", "Real", "-t_srs", "EPSG:4326"]);
    cmd
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn rows(pg: &TestPostgres, table: &str) -> i64 {
    pg.client()
        .query_one(&format!("SELECT count(*) FROM \"{table}\""), &[])
        .expect("count")
        .get(0)
}

/// Runs the paths on one file; returns the medians of (ours, old, copy, copy + ANALYZE).
fn compare(
    pg: &TestPostgres,
    tmp: &Path,
    name: &str,
    file: &Path,
    n: usize,
    runs: usize,
) -> [f64; 4] {
    let (mut ours, mut old, mut copy, mut copy_analyze) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let resource = format!("bench-{name}");
        let output_tmp = tmp.join("gis");
        std::fs::create_dir_all(&output_tmp).expect("tmp");
        ours.push(timed(
            Command::new(release_binary())
                .args(["geopreview", "import"])
                .arg(file)
                .args(["--resource-id", &resource])
                .env("HDX_GISDB_URL", pg.conn_string())
                .env("HDX_GIS_TMP", &output_tmp)
                .env("LOG_LEVEL", "warn"),
            "hdx-jobs geopreview import",
        ));
        assert_eq!(rows(pg, &format!("pre_bench_{name}")), n as i64);
        copy.push(timed(
            &mut ogr2ogr(pg, file, &format!("copy_{name}"), true),
            "ogr2ogr with COPY",
        ));
        let mut client = pg.client();
        let start = Instant::now();
        client
            .batch_execute(&format!("ANALYZE copy_{name}"))
            .expect("analyze");
        copy_analyze.push(copy[run] + start.elapsed().as_secs_f64());
        assert_eq!(rows(pg, &format!("copy_{name}")), n as i64);
        old.push(timed(
            &mut ogr2ogr(pg, file, &format!("old_{name}"), false),
            "ogr2ogr with PG_USE_COPY=NO",
        ));
        assert_eq!(rows(pg, &format!("old_{name}")), n as i64);
        eprintln!(
            "[bench] {name} run {}: hdx-jobs {:.2} s, ogr2ogr COPY {:.2} s, ogr2ogr old {:.2} s",
            run + 1,
            ours[run],
            copy[run],
            old[run]
        );
    }
    [
        median(ours),
        median(old),
        median(copy),
        median(copy_analyze),
    ]
}

/// What the local CKAN received: resource id and when.
type Reports = Arc<Mutex<Vec<(String, Instant)>>>;

async fn report(State(reports): State<Reports>, body: Bytes) -> Json<Value> {
    let at = Instant::now();
    let id = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_string))
        .unwrap_or_default();
    if let Ok(mut r) = reports.lock() {
        r.push((id, at));
    }
    Json(json!({"success": true}))
}

/// The file of the latency run: the old service's test.geojson when present, else the sample.
fn latency_file() -> PathBuf {
    testkit::shared_fixture("geofiles/test.geojson")
        .unwrap_or_else(|| testkit::sample("geo/districts.geojson"))
}

fn latency(pg: &TestPostgres, tmp: &Path, jobs: usize) -> Vec<f64> {
    let redis = TestRedis::new();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let reports: Reports = Arc::default();
    let geojson = std::fs::read(latency_file()).expect("latency file");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let app = Router::new()
        .route(
            "/files/latency.geojson",
            get(move || {
                let body = geojson.clone();
                async move { body }
            }),
        )
        .route("/api/action/hdx_resource_update_metadata", post(report))
        .with_state(reports.clone());
    runtime.spawn(async move { axum::serve(listener, app).await });

    let gis_tmp = tmp.join("worker");
    std::fs::create_dir_all(&gis_tmp).expect("tmp");
    let mut worker = Command::new(release_binary())
        .args(["work", "geo_q"])
        .env("HDX_REDIS_URL", redis.url())
        .env("HDX_GISDB_URL", pg.conn_string())
        .env("HDX_GIS_API_KEY", "bench-key")
        .env("CKAN_API_BASE_URL", format!("{base}/api/action"))
        .env("HDX_GIS_TMP", &gis_tmp)
        .env("LOG_LEVEL", "warn")
        .spawn()
        .expect("worker");
    let client = hdx_jobs::RedisClient::open(redis.url()).expect("redis");
    let queue = Queue::new(client, "geo_q").expect("queue");
    let host = base.trim_start_matches("http://").to_string();
    let dict = |i: usize| {
        json!({
            "dataset_id": "bench", "resource_id": format!("latency-{i}"),
            "download_url": format!("{base}/files/latency.geojson"), "url_type": "upload",
            "download_chunk_size": 5 * 1024 * 1024, "max_file_size_mb": 300 * 1024 * 1024,
            "timeout_sec": 120, "ckan_api_base_url": format!("{base}/api/action"),
            "resource_update_action": "hdx_resource_update_metadata",
            "gis_api_pattern": "", "table_name_prefix": "pre",
            "tmp_download_directory": gis_tmp.display().to_string(),
            "ckan_server_url": host, "verify_ckan_ssl": true, "hdx_user_agent": "GISLAYER"
        })
    };
    let warmup = 5;
    let mut samples = Vec::new();
    for i in 0..warmup + jobs {
        let id = format!("latency-{i}");
        let start = Instant::now();
        runtime
            .block_on(
                queue.enqueue(
                    JobSpec::new("importapi.tasks.create_preview.create_preview_task")
                        .args(vec![dict(i)]),
                ),
            )
            .expect("enqueue");
        let at = testkit::eventually("the CKAN report", Duration::from_secs(60), || {
            let r = reports.lock().ok()?;
            r.iter().find(|(rid, _)| *rid == id).map(|(_, at)| *at)
        });
        if i >= warmup {
            samples.push(at.duration_since(start).as_secs_f64() * 1000.0);
        }
    }
    let _ = worker.kill();
    let _ = worker.wait();
    samples
}

fn main() {
    let runs = env_usize("BENCH_GEO_RUNS", 5);
    let points = env_usize("BENCH_GEO_POINTS", 200_000);
    let polygons = env_usize("BENCH_GEO_POLYGONS", 20_000);
    let latency_jobs = env_usize("BENCH_GEO_LATENCY_JOBS", 30);
    let dir = tempfile_dir();
    let pg = TestPostgres::new();
    eprintln!("[bench] generating {points} points and {polygons} polygons");
    let points_file = dir.join("points.geojson");
    write_points(&points_file, points);
    let polygons_file = dir.join("polygons.geojson");
    write_polygons(&polygons_file, polygons, 50);

    let p = compare(&pg, &dir, "points", &points_file, points, runs);
    let q = compare(&pg, &dir, "polygons", &polygons_file, polygons, runs);
    let samples = latency(&pg, &dir, latency_jobs);
    let lat_median = median(samples.clone());
    let mut sorted = samples.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let p95 = sorted[((sorted.len() as f64 * 0.95).ceil() as usize).saturating_sub(1)];
    let _ = std::fs::remove_dir_all(&dir);

    println!("| import (median of {runs} runs, wall time) | points ({points}, 5 properties) | polygons ({polygons} × 50 vertices) |");
    println!("|---|---|---|");
    println!(
        "| `hdx-jobs geopreview import` (whole pipeline) | {:.2} s | {:.2} s |",
        p[0], q[0]
    );
    println!(
        "| `ogr2ogr`, `PG_USE_COPY=NO` (the old service) | {:.2} s | {:.2} s |",
        p[1], q[1]
    );
    println!("| `ogr2ogr` with COPY | {:.2} s | {:.2} s |", p[2], q[2]);
    println!(
        "| `ogr2ogr` with COPY, then `ANALYZE` (the same work as hdx-jobs) | {:.2} s | {:.2} s |",
        p[3], q[3]
    );
    println!(
        "| old path / hdx-jobs | {:.1}× | {:.1}× |",
        p[1] / p[0],
        q[1] / q[0]
    );
    println!(
        "| hdx-jobs / ogr2ogr with COPY | {:.2}× | {:.2}× |",
        p[0] / p[2],
        q[0] / q[2]
    );
    println!(
        "| hdx-jobs / (ogr2ogr with COPY + ANALYZE) | {:.2}× | {:.2}× |",
        p[0] / p[3],
        q[0] / q[3]
    );
    println!(
        "| ceiling: old path / ogr2ogr with COPY | {:.1}× | {:.1}× |",
        p[1] / p[2],
        q[1] / q[2]
    );
    println!();
    println!(
        "| enqueue → CKAN report, {}, warm worker ({latency_jobs} jobs) | ms |",
        latency_file()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    println!("|---|---|");
    println!("| median | {lat_median:.0} |");
    println!("| p95 | {p95:.0} |");
    println!("| max | {:.0} |", sorted.last().copied().unwrap_or(0.0));
}

/// A fresh folder under the system temp dir.
fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hdx-jobs-geo-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    dir
}
