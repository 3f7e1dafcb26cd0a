//! Vector tiles: tiles per second and p99 latency for a fixed set of tiles over a 200,000-point
//! and a 20,000-polygon layer (about 50 vertices each), cold (first request of each tile, fresh
//! processes) and cached (the same set again), hdx-jobs-server against martin (crates.io)
//! serving the same tables of the same PostGIS in the same run.
//!
//! ```sh
//! scripts/bench.sh tiles     # installs martin into target/bench-tools first
//! ```
//! `BENCH_CLIENTS` sets the concurrent clients (default 16), `BENCH_PASSES` the cached passes
//! (default 5).

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use testkit::{TestPostgres, TestRedis};

/// The two layers, made in SQL: deterministic pseudo-random positions over Africa.
fn make_layers(db: &TestPostgres) {
    db.client()
        .batch_execute(
            "CREATE TABLE pre_bench_points AS
               SELECT i AS ogc_fid,
                      ST_SetSRID(ST_MakePoint(-20 + 60 * ((i * 7919) % 100003) / 100003.0,
                                              -20 + 60 * ((i * 104729) % 99991) / 99991.0), 4326)::geometry(Point, 4326) AS wkb_geometry,
                      'point ' || i AS name, i % 1000 AS category, (i % 97) * 1.5 AS value,
                      (i % 2 = 0) AS flag, 'code-' || (i % 50) AS code
               FROM generate_series(1::bigint, 200000) AS i;
             ALTER TABLE pre_bench_points ADD PRIMARY KEY (ogc_fid);
             CREATE INDEX ON pre_bench_points USING gist (wkb_geometry);
             CREATE TABLE pre_bench_polygons AS
               SELECT i AS ogc_fid,
                      ST_Multi(ST_Buffer(ST_SetSRID(ST_MakePoint(-20 + 60 * ((i * 7919) % 20011) / 20011.0,
                                                                 -20 + 60 * ((i * 104729) % 19997) / 19997.0), 4326),
                                         0.05 + (i % 10) * 0.01, 12))::geometry(MultiPolygon, 4326) AS wkb_geometry,
                      'polygon ' || i AS name, i % 100 AS category, (i % 13) * 2.5 AS value
               FROM generate_series(1::bigint, 20000) AS i;
             ALTER TABLE pre_bench_polygons ADD PRIMARY KEY (ogc_fid);
             CREATE INDEX ON pre_bench_polygons USING gist (wkb_geometry);
             ANALYZE;",
        )
        .expect("make the layers");
}

/// Tiles covering the data at zooms 3 to 8 (every tile at 3–6, a sample at 7–8), both layers.
fn tile_set() -> Vec<(&'static str, u8, u32, u32)> {
    let tile_of = |lon: f64, lat: f64, z: u8| {
        let n = f64::from(1u32 << z);
        let x = ((lon + 180.0) / 360.0 * n).floor() as u32;
        let r = lat.to_radians();
        let y = ((1.0 - (r.tan() + 1.0 / r.cos()).ln() / std::f64::consts::PI) / 2.0 * n).floor()
            as u32;
        (x, y)
    };
    let mut tiles = Vec::new();
    for z in 3..=8u8 {
        let (x0, y0) = tile_of(-20.0, 40.0, z);
        let (x1, y1) = tile_of(40.0, -20.0, z);
        let step = if z >= 7 { 3 } else { 1 };
        for x in (x0..=x1).step_by(step) {
            for y in (y0..=y1).step_by(step) {
                for layer in ["pre_bench_points", "pre_bench_polygons"] {
                    tiles.push((layer, z, x, y));
                }
            }
        }
    }
    tiles
}

/// What one pass over every tile measured.
#[derive(Clone, Copy)]
struct Pass {
    /// Tiles served per second (failed requests not counted).
    rate: f64,
    /// 99th percentile of the served tiles' latencies, in ms.
    p99: f64,
    /// Bytes of tiles received.
    bytes: u64,
    /// Requests that failed (no answer, or a status other than 200 and 204): counted and
    /// shown, so that one dropped connection under load does not end the whole run.
    failed: usize,
}

/// Fetches every URL once with `clients` concurrent clients.
fn pass(urls: &[String], clients: usize) -> Pass {
    let next = Arc::new(Mutex::new(0usize));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(urls.len())));
    let bytes = Arc::new(Mutex::new(0u64));
    let failed = Arc::new(Mutex::new(0usize));
    let urls = Arc::new(urls.to_vec());
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (next, latencies, bytes, failed, urls) = (
                next.clone(),
                latencies.clone(),
                bytes.clone(),
                failed.clone(),
                urls.clone(),
            );
            std::thread::spawn(move || {
                let agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .new_agent();
                loop {
                    let i = {
                        let mut n = next.lock().expect("lock");
                        let i = *n;
                        *n += 1;
                        i
                    };
                    let Some(url) = urls.get(i) else { break };
                    let t = Instant::now();
                    let body = agent
                        .get(url)
                        .header("Accept-Encoding", "gzip")
                        .call()
                        .ok()
                        .filter(|r| matches!(r.status().as_u16(), 200 | 204))
                        .and_then(|mut r| {
                            r.body_mut()
                                .with_config()
                                .limit(64 << 20)
                                .read_to_vec()
                                .ok()
                        });
                    let Some(body) = body else {
                        *failed.lock().expect("lock") += 1;
                        continue;
                    };
                    latencies
                        .lock()
                        .expect("lock")
                        .push(t.elapsed().as_secs_f64() * 1000.0);
                    *bytes.lock().expect("lock") += body.len() as u64;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut latencies = latencies.lock().expect("lock").clone();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let p99 = latencies
        .get(((latencies.len() as f64 * 0.99) as usize).min(latencies.len().saturating_sub(1)))
        .copied()
        .unwrap_or(f64::NAN);
    let total = *bytes.lock().expect("lock");
    let failed = *failed.lock().expect("lock");
    Pass {
        rate: latencies.len() as f64 / elapsed,
        p99,
        bytes: total,
        failed,
    }
}

fn main() {
    let clients: usize = std::env::var("BENCH_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let passes: usize = std::env::var("BENCH_PASSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let root = testkit::workspace_root();
    let hdx = root.join("target/release/hdx-jobs");
    let martin = root.join("target/bench-tools/bin/martin");
    assert!(
        hdx.exists(),
        "build it first: cargo build --release -p hdx-jobs-cli (scripts/bench.sh does)"
    );
    assert!(
        martin.exists(),
        "install martin first: scripts/bench.sh tiles does"
    );
    let redis = TestRedis::new();
    let db = TestPostgres::new();
    make_layers(&db);
    let tiles = tile_set();
    let mut rows = Vec::new();

    // hdx-jobs-server.
    let port = free_port();
    let server = Server(
        Command::new(&hdx)
            .args([
                "--url",
                redis.url(),
                "--log-level",
                "warn",
                "serve",
                "--bind",
                &format!("127.0.0.1:{port}"),
            ])
            .env("HDX_GISDB_URL", db.conn_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("hdx-jobs serve"),
    );
    wait_until_up(&format!("http://127.0.0.1:{port}/healthz"));
    let urls: Vec<String> = tiles
        .iter()
        .map(|(l, z, x, y)| format!("http://127.0.0.1:{port}/tiles/{l}/{z}/{x}/{y}.pbf"))
        .collect();
    measure("hdx-jobs-server", &urls, clients, passes, &mut rows);
    drop(server);

    // martin, on the same tables.
    let port = free_port();
    let pg_url = format!(
        "postgresql:///{}?host=/var/run/postgresql&user={}",
        db.dbname,
        std::env::var("USER").unwrap_or_else(|_| "root".into())
    );
    let martin = Server(
        Command::new(&martin)
            .args(["--listen-addresses", &format!("127.0.0.1:{port}"), &pg_url])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("martin"),
    );
    wait_until_up(&format!("http://127.0.0.1:{port}/health"));
    let urls: Vec<String> = tiles
        .iter()
        .map(|(l, z, x, y)| format!("http://127.0.0.1:{port}/{l}/{z}/{x}/{y}"))
        .collect();
    measure("martin 1.14", &urls, clients, passes, &mut rows);
    drop(martin);

    println!(
        "{} tiles per pass ({} per layer), {clients} clients\n",
        tiles.len(),
        tiles.len() / 2
    );
    println!(
        "| server | pass | tiles/s | p99 ms | MB transferred | failed requests |\n|---|---|---|---|---|---|"
    );
    for row in rows {
        println!("{row}");
    }
}

fn measure(label: &str, urls: &[String], clients: usize, passes: usize, rows: &mut Vec<String>) {
    let row = |pass: &str, p: Pass| {
        format!(
            "| {label} | {pass} | {:.0} | {:.1} | {:.1} | {} |",
            p.rate,
            p.p99,
            p.bytes as f64 / 1e6,
            p.failed
        )
    };
    rows.push(row("cold", pass(urls, clients)));
    let best = (0..passes.max(1))
        .map(|_| pass(urls, clients))
        .max_by(|a, b| a.rate.total_cmp(&b.rate))
        .expect("at least one pass");
    rows.push(row(&format!("cached (best of {passes})"), best));
}
