//! The monitor's queue page with 10,000 jobs in every list of a queue (waiting, started,
//! finished, failed, deferred, scheduled, canceled): Redis round trips, Redis commands and
//! server time per refresh, for hdx-jobs' `/monitor` and, in the same run on the same data,
//! rq-dashboard 0.7.1.2 (what HDX's operators use, on rq 1.13) for its jobs page.
//!
//! ```sh
//! scripts/bench.sh monitor
//! ```
//! `BENCH_JOBS` sets the jobs per list (default 10000), `BENCH_REFRESHES` the refreshes timed
//! per endpoint (default 20; the median is reported).
//!
//! Round trips are counted by a TCP proxy between the server and Redis: a turn is the client
//! writing after Redis has answered (so a pipeline is one turn; one that Redis starts answering
//! before it has all arrived can count twice, which only overstates). Commands are Redis's own
//! count (`total_commands_processed`). Time is the HTTP request's wall time from this process
//! on loopback, one request at a time, after one warm-up request.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use testkit::TestRedis;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const QUEUE: &str = "geo_q";
const PER_PAGE: u32 = 20;

/// Moves `n` of the queue's jobs into each registry, with the status a job there has.
const SPREAD: &str = r#"
local n, q = tonumber(ARGV[1]), ARGV[2]
local now = tonumber(redis.call('TIME')[1])
for _, r in ipairs({'started', 'finished', 'failed', 'deferred', 'scheduled', 'canceled'}) do
  local key = 'rq:' .. r .. ':' .. q
  if r == 'started' then key = 'rq:wip:' .. q end
  for i = 1, n do
    local id = redis.call('RPOP', 'rq:queue:' .. q)
    local jk = 'rq:job:' .. id
    redis.call('HSET', jk, 'status', r, 'ended_at', '2026-12-06T00:00:00.000000Z')
    if r == 'failed' then
      redis.call('HSET', jk, 'exc_info', 'Traceback (most recent call last):\nTaskFailed: bench')
    end
    redis.call('ZADD', key, now + 86400 + i, id)
  end
end
return 1
"#;

/// Counts request/response turns of every connection through it.
struct TurnCounter {
    turns: Arc<AtomicU64>,
}

impl TurnCounter {
    /// Listens on a free port and forwards to `upstream`; returns the port.
    fn start(runtime: &tokio::runtime::Runtime, upstream: String) -> (Self, u16) {
        let turns = Arc::new(AtomicU64::new(0));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let counter = turns.clone();
        runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                // 0: nothing yet or the server spoke last; 1: the client spoke last.
                let last = Arc::new(AtomicU8::new(0));
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pump(
                    client_read,
                    server_write,
                    last.clone(),
                    Some(counter.clone()),
                ));
                tokio::spawn(pump(server_read, client_write, last, None));
            }
        });
        (TurnCounter { turns }, port)
    }

    fn turns(&self) -> u64 {
        self.turns.load(Ordering::SeqCst)
    }
}

/// Copies one direction; the client's direction counts a turn when it speaks after the server.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    last: Arc<AtomicU8>,
    turns: Option<Arc<AtomicU64>>,
) {
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        match &turns {
            Some(turns) => {
                if last.swap(1, Ordering::SeqCst) != 1 {
                    turns.fetch_add(1, Ordering::SeqCst);
                }
            }
            None => last.store(0, Ordering::SeqCst),
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

fn commands(test: &TestRedis) -> u64 {
    let info: String = test.query(testkit::redis::cmd("INFO").arg("stats"));
    info.lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// One endpoint's cost per request: (round trips, Redis commands, median milliseconds).
fn measure(url: &str, proxy: &TurnCounter, test: &TestRedis, refreshes: usize) -> (u64, u64, f64) {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .new_agent();
    let get = || {
        let mut response = agent
            .get(url)
            .call()
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let body = response.body_mut().read_to_string().expect("body");
        assert!(!body.is_empty(), "{url}: empty answer");
    };
    get();
    // The INFO of `commands` is itself a command: subtract it.
    let (turns, before) = (proxy.turns(), commands(test));
    get();
    let (turns, commands) = (proxy.turns() - turns, commands(test) - before - 1);
    let mut times: Vec<f64> = (0..refreshes)
        .map(|_| {
            let start = Instant::now();
            get();
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (turns, commands, times[times.len() / 2])
}

fn main() {
    let jobs = env_usize("BENCH_JOBS", 10_000);
    let refreshes = env_usize("BENCH_REFRESHES", 20);
    let binary = release_binary();
    let test = TestRedis::new();
    let total = (jobs * 7).to_string();
    let status = Command::new(&binary)
        .args(["--url", test.url(), "--log-level", "warn", "enqueue"])
        .args(["-q", QUEUE, "--func", "hdx_jobs.noop", "--count", &total])
        .stdout(Stdio::null())
        .status()
        .expect("hdx-jobs enqueue");
    assert!(status.success(), "enqueue failed");
    let _: i64 = test.query(
        testkit::redis::cmd("EVAL")
            .arg(SPREAD)
            .arg(0)
            .arg(jobs)
            .arg(QUEUE),
    );
    let queued: u64 = test.query(testkit::redis::cmd("LLEN").arg(format!("rq:queue:{QUEUE}")));
    assert_eq!(queued, jobs as u64);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let upstream = testkit::redis_base_url()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_string();
    let (proxy, proxy_port) = TurnCounter::start(&runtime, upstream);
    let db = test.url().rsplit('/').next().unwrap_or("0").to_string();
    let proxied = format!("redis://127.0.0.1:{proxy_port}/{db}");

    let mut rows = Vec::new();
    let registries = [
        "queued",
        "started",
        "finished",
        "failed",
        "deferred",
        "scheduled",
        "canceled",
    ];

    let port = free_port();
    let server = Server(
        Command::new(&binary)
            .args(["--url", &proxied, "--log-level", "warn", "serve"])
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .env("REDIS_STREAM_URL", &proxied)
            .stdout(Stdio::null())
            .spawn()
            .expect("hdx-jobs serve"),
    );
    let base = format!("http://127.0.0.1:{port}/monitor/api");
    wait_until_up(&base);
    let mut refresh = (0, 0, 0.0);
    for (label, path) in [
        ("overview (queues, workers)", "/overview".to_string()),
        ("jobs per minute, 3 h", "/history?minutes=180".to_string()),
        ("periodic jobs", "/periodic".to_string()),
        ("event stream", "/events".to_string()),
    ] {
        let (turns, cmds, ms) = measure(&format!("{base}{path}"), &proxy, &test, refreshes);
        refresh = (refresh.0 + turns, refresh.1 + cmds, refresh.2 + ms);
        rows.push(format!(
            "| hdx-jobs | {label} | {turns} | {cmds} | {ms:.2} |"
        ));
    }
    let mut pages = Vec::new();
    for registry in registries {
        let path = format!("/queues/{QUEUE}/jobs?registry={registry}&per_page={PER_PAGE}");
        pages.push(measure(&format!("{base}{path}"), &proxy, &test, refreshes));
        let (turns, cmds, ms) = pages.last().copied().expect("page");
        rows.push(format!(
            "| hdx-jobs | {registry} page, {PER_PAGE} jobs | {turns} | {cmds} | {ms:.2} |"
        ));
    }
    let failed = pages[3];
    rows.push(format!(
        "| hdx-jobs | **a refresh of the failed page** (the four above + the page) | {} | {} | {:.2} |",
        refresh.0 + failed.0,
        refresh.1 + failed.1,
        refresh.2 + failed.2
    ));
    let path =
        format!("/queues/{QUEUE}/jobs?registry=failed&task=hdx_jobs.noop&per_page={PER_PAGE}");
    let (turns, cmds, ms) = measure(&format!("{base}{path}"), &proxy, &test, refreshes);
    rows.push(format!(
        "| hdx-jobs | failed page filtered by task (scans all {jobs}) | {turns} | {cmds} | {ms:.2} |"
    ));
    drop(server);

    let port = free_port();
    let dashboard = Server(
        Command::new(testkit::python_rq113())
            .args([
                "-m",
                "rq_dashboard",
                "-b",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .args(["-u", &proxied])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rq-dashboard"),
    );
    let base = format!("http://127.0.0.1:{port}/0/data");
    wait_until_up(&base);
    for registry in registries {
        let path = format!("/jobs/{QUEUE}/{registry}/{PER_PAGE}/1.json");
        let (turns, cmds, ms) = measure(&format!("{base}{path}"), &proxy, &test, refreshes);
        rows.push(format!(
            "| rq-dashboard 0.7.1.2 (rq 1.13) | {registry} page, {PER_PAGE} jobs (its whole refresh) | {turns} | {cmds} | {ms:.2} |"
        ));
    }
    for (label, path) in [
        ("queues.json", "/queues.json"),
        ("workers.json", "/workers.json"),
    ] {
        let (turns, cmds, ms) = measure(&format!("{base}{path}"), &proxy, &test, refreshes);
        rows.push(format!(
            "| rq-dashboard 0.7.1.2 (rq 1.13) | {label} (its queues page) | {turns} | {cmds} | {ms:.2} |"
        ));
    }
    drop(dashboard);

    println!("{jobs} jobs in each list of {QUEUE}; {refreshes} timed requests per row (median)\n");
    println!("| server | request | Redis round trips | Redis commands | server time (ms) |\n|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
}
