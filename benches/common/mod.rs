//! Helpers shared by the benchmarks: the release binary, child processes stopped on drop, free
//! ports, waiting for a server, and job throughput measured from the jobs' own timestamps.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use testkit::{redis, TestRedis};

/// An integer from the environment, or a default.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `target/release/hdx-jobs`, which `scripts/bench.sh` builds first.
pub fn release_binary() -> PathBuf {
    let path = testkit::workspace_root().join("target/release/hdx-jobs");
    assert!(
        path.exists(),
        "build it first: cargo build --release -p hdx-jobs-cli (scripts/bench.sh does)"
    );
    path
}

/// A child process killed when dropped.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// Waits until `host:port` of `url` accepts connections.
pub fn wait_until_up(url: &str) {
    let address = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    testkit::eventually(&format!("{url} to answer"), Duration::from_secs(60), || {
        std::net::TcpStream::connect(&address).ok()
    });
}

/// Jobs per second between the first start and the last end of the given jobs, which must all
/// have finished: the same measure for Rust and Python workers, process start-up excluded.
pub fn processing_rate(test: &TestRedis, ids: &[String]) -> f64 {
    let mut conn = test.conn();
    let mut pipe = redis::pipe();
    for id in ids {
        pipe.cmd("HMGET")
            .arg(format!("rq:job:{id}"))
            .arg("status")
            .arg("started_at")
            .arg("ended_at");
    }
    let rows: Vec<(Option<String>, Option<String>, Option<String>)> =
        pipe.query(&mut conn).expect("read jobs");
    let (mut first, mut last) = (f64::MAX, f64::MIN);
    for (status, started, ended) in rows {
        assert_eq!(
            status.as_deref(),
            Some("finished"),
            "every benchmark job must finish"
        );
        let t = |s: Option<String>| {
            hdx_jobs::rq::time::parse_ts(&s.unwrap_or_default())
                .map(|t| t.timestamp_micros() as f64 / 1e6)
                .expect("time")
        };
        first = first.min(t(started));
        last = last.max(t(ended));
    }
    ids.len() as f64 / (last - first)
}
