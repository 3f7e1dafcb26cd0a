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
//! Data, generated as GeoJSON (`benches/common/geojson_files.rs`): 200,000 points with 5
//! properties, and 20,000 polygons of 50 vertices (49 distinct + the closing one) with 2
//! properties. Both are files the import child's native GeoJSON reader takes (checked here on
//! a direct run of the child, and in `hdx-jobs-import/tests/geojson_fast_path.rs`), so the
//! `hdx-jobs` figure is the fast path's; the target is at least twice as fast as ogr2ogr with
//! COPY on both files. Each path runs
//! `BENCH_GEO_RUNS` times (default 5, interleaved) and the median wall time is shown. The
//! `hdx-jobs` figure is the whole CLI pipeline (child process, staging table, spatial index,
//! ANALYZE, out-of-range check, bounding box, fields, swap); the ogr2ogr figures are the plain
//! translation with its default spatial index, with the old service's options, and once more
//! followed by an `ANALYZE` of the table (timed on an open connection), which is the same work.
//!
//! Peak memory: the resident set high-water mark (`ru_maxrss` from `wait4`) of the import child
//! `hdx-jobs-import`, run directly with a request on stdin once per file (the CLI runs the same
//! child), and of ogr2ogr with COPY (the largest of its runs).
//!
//! Latency: one `hdx-jobs work geo_q` process, warmed with a few jobs, then
//! `BENCH_GEO_LATENCY_JOBS` (default 30) jobs one after another, each enqueued with the library
//! (the old argument dict) and timed until the local CKAN (a small axum server in this
//! process, which also serves the file) receives its report.

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use hdx_jobs::geo::archive::ArchiveLimits;
use hdx_jobs::geo::import::ImportRequest;
use hdx_jobs::rq::queue::{JobSpec, Queue};
use serde_json::{json, Value};
use testkit::{TestPostgres, TestRedis};

#[path = "common/geojson_files.rs"]
mod geojson_files;

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

/// Runs a command to its end, feeding it `input`; returns its output, wall time and peak
/// resident memory in KiB (`ru_maxrss` of `wait4`: std's `Child` does not give it).
#[expect(
    clippy::zombie_processes,
    reason = "the child is reaped by wait4 in wait_with_rusage"
)]
fn run_measured(cmd: &mut Command, input: Option<&[u8]>) -> (Output, f64, u64) {
    let start = Instant::now();
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(input).expect("write stdin");
    }
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let stderr_reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes);
        bytes
    });
    let mut out = Vec::new();
    let _ = stdout.read_to_end(&mut out);
    let err = stderr_reader.join().unwrap_or_default();
    let (status, peak_kib) = wait_with_rusage(child.id());
    let elapsed = start.elapsed().as_secs_f64();
    (
        Output {
            status,
            stdout: out,
            stderr: err,
        },
        elapsed,
        peak_kib,
    )
}

/// Waits for the child `pid`; its exit status and `ru_maxrss` (KiB).
fn wait_with_rusage(pid: u32) -> (ExitStatus, u64) {
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero `rusage` is a valid value of that plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is a child of this process not waited for yet (std's `Child` only waits
    // when asked); both pointers are to live locals.
    let waited = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(
        waited,
        pid as libc::pid_t,
        "wait4: {}",
        std::io::Error::last_os_error()
    );
    (
        ExitStatus::from_raw(status),
        u64::try_from(usage.ru_maxrss).unwrap_or(0),
    )
}

/// Wall time and peak memory (KiB) of a command that must succeed.
fn timed(cmd: &mut Command, what: &str) -> (f64, u64) {
    let (output, elapsed, peak_kib) = run_measured(cmd, None);
    testkit::check(&output, what);
    (elapsed, peak_kib)
}

/// Runs the import child `hdx-jobs-import` directly on `file` (as the CLI does, without the
/// steps after the import); returns its peak memory (KiB) and checks that the native GeoJSON
/// reader imported the file.
fn child_peak_memory(pg: &TestPostgres, tmp: &Path, name: &str, file: &Path) -> u64 {
    let program = release_binary().with_file_name("hdx-jobs-import");
    let request = ImportRequest {
        source: file.to_path_buf(),
        work_dir: tmp.to_path_buf(),
        archive: ArchiveLimits {
            max_bytes: 1 << 30,
            max_entries: 1000,
        },
        schema: "public".into(),
        table: format!("child_{name}"),
        conninfo: pg.conn_string(),
    };
    let mut line = serde_json::to_vec(&request).expect("request");
    line.push(b'\n');
    let (output, _, peak_kib) = run_measured(Command::new(&program).env_clear(), Some(&line));
    testkit::check(&output, "hdx-jobs-import");
    let report = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v.get("report").cloned())
        .expect("the child's report");
    assert_eq!(
        report["native_geojson"]["outcome"], "imported",
        "the benchmark must measure the native GeoJSON import: {report}"
    );
    peak_kib
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

/// The figures of one file: median wall times (s) and peak memory (KiB).
struct Figures {
    ours: f64,
    old: f64,
    copy: f64,
    copy_analyze: f64,
    child_peak_kib: u64,
    copy_peak_kib: u64,
}

/// Runs the paths on one file, interleaved.
fn compare(
    pg: &TestPostgres,
    tmp: &Path,
    name: &str,
    file: &Path,
    n: usize,
    runs: usize,
) -> Figures {
    let (mut ours, mut old, mut copy, mut copy_analyze) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut copy_peak_kib = 0;
    for run in 0..runs {
        let resource = format!("bench-{name}");
        let output_tmp = tmp.join("gis");
        std::fs::create_dir_all(&output_tmp).expect("tmp");
        let (seconds, _) = timed(
            Command::new(release_binary())
                .args(["geopreview", "import"])
                .arg(file)
                .args(["--resource-id", &resource])
                .env("HDX_GISDB_URL", pg.conn_string())
                .env("HDX_GIS_TMP", &output_tmp)
                .env("LOG_LEVEL", "warn"),
            "hdx-jobs geopreview import",
        );
        ours.push(seconds);
        assert_eq!(rows(pg, &format!("pre_bench_{name}")), n as i64);
        let (seconds, peak_kib) = timed(
            &mut ogr2ogr(pg, file, &format!("copy_{name}"), true),
            "ogr2ogr with COPY",
        );
        copy.push(seconds);
        copy_peak_kib = copy_peak_kib.max(peak_kib);
        let mut client = pg.client();
        let start = Instant::now();
        client
            .batch_execute(&format!("ANALYZE copy_{name}"))
            .expect("analyze");
        copy_analyze.push(copy[run] + start.elapsed().as_secs_f64());
        assert_eq!(rows(pg, &format!("copy_{name}")), n as i64);
        let (seconds, _) = timed(
            &mut ogr2ogr(pg, file, &format!("old_{name}"), false),
            "ogr2ogr with PG_USE_COPY=NO",
        );
        old.push(seconds);
        assert_eq!(rows(pg, &format!("old_{name}")), n as i64);
        eprintln!(
            "[bench] {name} run {}: hdx-jobs {:.2} s, ogr2ogr COPY {:.2} s, ogr2ogr old {:.2} s",
            run + 1,
            ours[run],
            copy[run],
            old[run]
        );
    }
    let child_peak_kib = child_peak_memory(pg, tmp, name, file);
    Figures {
        ours: median(ours),
        old: median(old),
        copy: median(copy),
        copy_analyze: median(copy_analyze),
        child_peak_kib,
        copy_peak_kib,
    }
}

/// What the local CKAN received: resource id, when, and the import's state.
type Reports = Arc<Mutex<Vec<(String, Instant, String)>>>;

async fn report(State(reports): State<Reports>, body: Bytes) -> Json<Value> {
    let at = Instant::now();
    let body = serde_json::from_slice::<Value>(&body).unwrap_or_default();
    let id = body["id"].as_str().unwrap_or_default().to_string();
    // `shape_info` is a JSON string; a failed import must not count as a latency sample.
    let state = body["shape_info"]
        .as_str()
        .and_then(|info| serde_json::from_str::<Value>(info).ok())
        .and_then(|info| info["state"].as_str().map(str::to_string))
        .unwrap_or_default();
    if let Ok(mut r) = reports.lock() {
        r.push((id, at, state));
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
        // The local server plays the CKAN host, which files may be downloaded from over http.
        .env("HDX_DOMAIN", base.trim_start_matches("http://"))
        .env("HDX_CKAN_ALLOW_HTTP", "true")
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
        let (at, state) = testkit::eventually("the CKAN report", Duration::from_secs(60), || {
            let r = reports.lock().ok()?;
            r.iter()
                .find(|(rid, _, _)| *rid == id)
                .map(|(_, at, state)| (*at, state.clone()))
        });
        assert_eq!(state, "success", "latency job {i} imported the file");
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
    geojson_files::write_points(&points_file, points);
    let polygons_file = dir.join("polygons.geojson");
    geojson_files::write_polygons(&polygons_file, polygons, 50);

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
        "| `hdx-jobs geopreview import` (whole pipeline, native GeoJSON import) | {:.2} s | {:.2} s |",
        p.ours, q.ours
    );
    println!(
        "| `ogr2ogr`, `PG_USE_COPY=NO` (the old service) | {:.2} s | {:.2} s |",
        p.old, q.old
    );
    println!(
        "| `ogr2ogr` with COPY | {:.2} s | {:.2} s |",
        p.copy, q.copy
    );
    println!(
        "| `ogr2ogr` with COPY, then `ANALYZE` (the same work as hdx-jobs) | {:.2} s | {:.2} s |",
        p.copy_analyze, q.copy_analyze
    );
    println!(
        "| old path / hdx-jobs | {:.1}× | {:.1}× |",
        p.old / p.ours,
        q.old / q.ours
    );
    println!(
        "| speed-up over ogr2ogr with COPY (target ≥ 2×) | {:.2}× | {:.2}× |",
        p.copy / p.ours,
        q.copy / q.ours
    );
    println!(
        "| speed-up over ogr2ogr with COPY + ANALYZE | {:.2}× | {:.2}× |",
        p.copy_analyze / p.ours,
        q.copy_analyze / q.ours
    );
    println!(
        "| ceiling: old path / ogr2ogr with COPY | {:.1}× | {:.1}× |",
        p.old / p.copy,
        q.old / q.copy
    );
    println!(
        "| peak memory, import child `hdx-jobs-import` | {:.0} MiB | {:.0} MiB |",
        p.child_peak_kib as f64 / 1024.0,
        q.child_peak_kib as f64 / 1024.0
    );
    println!(
        "| peak memory, `ogr2ogr` with COPY | {:.0} MiB | {:.0} MiB |",
        p.copy_peak_kib as f64 / 1024.0,
        q.copy_peak_kib as f64 / 1024.0
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
