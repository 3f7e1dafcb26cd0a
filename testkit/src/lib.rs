//! Helpers shared by every test crate of the workspace, kept in one place.
//!
//! - [`TestRedis`]: a Redis database of the test's own on the local server (numbers 2–6 and
//!   8–15; 0, 1 and 7 are left alone because deployments use 1 and 7), leased through a key in
//!   database 0 so parallel test processes never share one, flushed before and after use.
//! - [`python`], [`rq_peer`]: the real Python `rq` 2.12 in the venv that `scripts/test.sh`
//!   makes, driven through `testkit/python/rq_peer.py`.
//! - [`eventually`] / [`eventually_async`]: poll a condition with a deadline instead of sleeping.
//! - [`stream_consumer`]: a Python reader of the event stream, as HDX's consumers read it;
//! - [`sample`]: the project's own sample data (`samples/`); [`shared_fixture`]: the old
//!   service's known results, when a checkout of them sits beside the repository.
//! - [`ckan_corpus`]: a deterministic corpus of varied CKAN dataset pairs for the change
//!   detector's benchmark and regression test.

pub mod ckan_corpus;
pub mod geo;
pub mod http;

pub use redis;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Databases tests may use.
const TEST_DBS: [u8; 13] = [2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15];
const LEASE_PREFIX: &str = "hdx-jobs:test-lease:";

/// The Redis server tests use (`HDX_TEST_REDIS`, default the local one).
pub fn redis_base_url() -> String {
    std::env::var("HDX_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A Redis database leased for one test; flushed on creation and on drop.
#[derive(Debug)]
pub struct TestRedis {
    /// The database number.
    pub db: u8,
    url: String,
    token: String,
}

impl TestRedis {
    /// Leases a free database, waiting up to five minutes for one.
    pub fn new() -> Self {
        let base = redis_base_url();
        let token = format!("{}:{}", std::process::id(), unique_suffix());
        let mut control = redis::Client::open(format!("{base}/0"))
            .and_then(|c| c.get_connection())
            .unwrap_or_else(|e| panic!("tests need Redis at {base} (HDX_TEST_REDIS): {e}"));
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            for db in TEST_DBS {
                let key = format!("{LEASE_PREFIX}{db}");
                let taken: Option<String> = redis::cmd("SET")
                    .arg(&key)
                    .arg(&token)
                    .arg("NX")
                    .arg("EX")
                    .arg(3600)
                    .query(&mut control)
                    .expect("lease a test database");
                if taken.is_some() || steal_dead_lease(&mut control, &key, &token) {
                    let test = TestRedis {
                        db,
                        url: format!("{base}/{db}"),
                        token,
                    };
                    test.flush();
                    return test;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no free Redis test database for five minutes"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `redis://host:port/<db>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A synchronous connection to the database, for assertions.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url.as_str())
            .and_then(|c| c.get_connection())
            .expect("connect to the test database")
    }

    /// Runs one command and returns its reply.
    pub fn query<T: redis::FromRedisValue>(&self, cmd: &mut redis::Cmd) -> T {
        cmd.query(&mut self.conn()).expect("redis command")
    }

    fn flush(&self) {
        let () = redis::cmd("FLUSHDB")
            .query(&mut self.conn())
            .expect("flush the test database");
    }
}

impl Default for TestRedis {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.flush();
        if let Ok(mut control) =
            redis::Client::open(format!("{}/0", redis_base_url())).and_then(|c| c.get_connection())
        {
            let key = format!("{LEASE_PREFIX}{}", self.db);
            let holder: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query(&mut control)
                .unwrap_or(None);
            if holder.as_deref() == Some(self.token.as_str()) {
                let _: Result<i64, _> = redis::cmd("DEL").arg(&key).query(&mut control);
            }
        }
    }
}

/// Takes over a lease whose holder process is gone (a test killed mid-way).
fn steal_dead_lease(control: &mut redis::Connection, key: &str, token: &str) -> bool {
    let holder: Option<String> = redis::cmd("GET").arg(key).query(control).unwrap_or(None);
    let Some(holder) = holder else { return false };
    let pid = holder.split(':').next().unwrap_or("");
    if pid.is_empty() || Path::new(&format!("/proc/{pid}")).exists() {
        return false;
    }
    let script = redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2], 'EX', 3600) return 1 end return 0",
    );
    script
        .key(key)
        .arg(&holder)
        .arg(token)
        .invoke::<i64>(control)
        .unwrap_or(0)
        == 1
}

/// Unique within the process (a counter) and across runs (the clock): lowercase hex.
fn unique_suffix() -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{nanos:x}{n:x}")
}

/// A path in the system's temporary folder that no other test (of this run or another) uses:
/// `<prefix>-<pid>-<unique>`. Nothing is created.
pub fn temp_path(prefix: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        unique_suffix()
    ))
}

/// A new, empty folder at [`temp_path`].
pub fn temp_dir(prefix: &str) -> PathBuf {
    let dir = temp_path(prefix);
    std::fs::create_dir_all(&dir).expect("temporary folder");
    dir
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A file of the project's own sample data (`samples/<relative>` in the repository), made for
/// the tests and the demo, e.g. `sample("geo/camps.geojson")`.
pub fn sample(relative: &str) -> PathBuf {
    let path = workspace_root().join("samples").join(relative);
    assert!(path.exists(), "missing sample {}", path.display());
    path
}

/// Change events without `event_time`, after checking that they share one (one per run), so
/// two runs' events compare equal when only their time differs.
pub fn events_without_time(events: &[serde_json::Value]) -> Vec<serde_json::Value> {
    let times: std::collections::HashSet<&str> = events
        .iter()
        .map(|e| e["event_time"].as_str().expect("event_time"))
        .collect();
    assert!(times.len() <= 1, "one event_time per run: {times:?}");
    events
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.as_object_mut().expect("object").remove("event_time");
            e
        })
        .collect()
}

/// The event types of the sample dataset pair (`samples/ckan`), in order (samples/README.md,
/// "CKAN dataset pair").
pub const SAMPLE_PAIR_EVENT_TYPES: [&str; 9] = [
    "dataset-metadata-changed",
    "resource-deleted",
    "resource-created",
    "resource-data-changed",
    "resource-data-changed",
    "resource-metadata-changed",
    "spreadsheet-sheet-created",
    "spreadsheet-sheet-deleted",
    "spreadsheet-sheet-changed",
];

/// The event types of the shared fixtures' dataset pair (`ckan/dataset_old.json`,
/// `ckan/dataset_new.json`), in order: the five events the old service gave
/// (docs/hdx-contract.md §5.3).
pub const FIXTURE_PAIR_EVENT_TYPES: [&str; 5] = [
    "dataset-metadata-changed",
    "resource-deleted",
    "resource-created",
    "resource-data-changed",
    "resource-metadata-changed",
];

/// A file of the shared fixtures: the old service's known results (real HDX files and what it
/// made of them, docs/hdx-contract.md §3.9 and §5.3), when a checkout of them sits beside the
/// repository: `HDX_TEST_FIXTURES/<relative>`, else `../shared/fixtures/<relative>` beside the
/// workspace. `None` (with a notice on stderr) when absent: the project's own samples cover
/// every behaviour, and tests on the real files add to them where the files exist. For
/// benchmarks, which fall back to a sample; tests use [`require_shared_fixture`].
pub fn shared_fixture(relative: &str) -> Option<PathBuf> {
    let base = std::env::var_os("HDX_TEST_FIXTURES")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/fixtures"));
    let path = base.join(relative);
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "shared fixture {} absent (HDX_TEST_FIXTURES): skipping the checks on it",
            path.display()
        );
        None
    }
}

/// A file of the shared fixtures, for a test marked
/// `#[cfg_attr(not(shared_fixtures), ignore = "needs ../shared/fixtures (the old service's known results)")]`:
/// the package's build script (`testkit/build/shared_fixtures.rs`) sets `cfg(shared_fixtures)`
/// only where the fixtures are, so the test is reported as ignored elsewhere instead of passing
/// without checking anything. Panics, saying what is missing, when the file is absent anyway
/// (a fixture set without this file, or fixtures removed since the build).
pub fn require_shared_fixture(relative: &str) -> PathBuf {
    shared_fixture(relative).unwrap_or_else(|| {
        panic!(
            "shared fixture {relative} is missing although cfg(shared_fixtures) is set: \
             HDX_TEST_FIXTURES or ../shared/fixtures changed since the build \
             (rebuild, or `touch testkit/build/shared_fixtures.rs`)"
        )
    })
}

/// The venv Python with `rq` 2.12 (`HDX_TEST_PYTHON`, else `target/test-venv/bin/python`).
pub fn python() -> PathBuf {
    let path = std::env::var_os("HDX_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/test-venv/bin/python"));
    assert!(
        path.exists(),
        "the Python rq peer is missing at {}: run scripts/test.sh (or scripts/python-venv.sh) first",
        path.display()
    );
    path
}

/// The venv Python with `rq` 1.13 and rq-dashboard 0.7.1.2, the old service's Python side
/// (`target/test-venv-rq113`, made by scripts/python-venv.sh).
pub fn python_rq113() -> PathBuf {
    let path = workspace_root().join("target/test-venv-rq113/bin/python");
    assert!(
        path.exists(),
        "the rq 1.13 peer is missing at {}: run scripts/test.sh (or scripts/python-venv.sh) first",
        path.display()
    );
    path
}

/// Runs `rq_peer.py` with the rq 1.13 venv; returns its stdout.
pub fn rq113_peer(url: &str, args: &[&str]) -> String {
    let dir = workspace_root().join("testkit/python");
    let output = Command::new(python_rq113())
        .arg(dir.join("rq_peer.py"))
        .arg(url)
        .args(args)
        .env("PYTHONPATH", &dir)
        .output()
        .expect("run the rq 1.13 peer");
    check(&output, "rq_peer.py (rq 1.13)");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// What rq-dashboard shows of `queue` (`testkit/python/dashboard_probe.py`, run with `python`:
/// [`python`] has rq-dashboard 0.9, [`python_rq113`] 0.7.1.2): every registry's job list and
/// every listed job's detail page, through the dashboard's own Flask app. Returns the probe's
/// JSON and whether every answer was below 500.
pub fn dashboard_probe(python: &Path, url: &str, queue: &str) -> (serde_json::Value, bool) {
    let dir = workspace_root().join("testkit/python");
    let output = Command::new(python)
        .arg(dir.join("dashboard_probe.py"))
        .args([url, queue, "--check-data"])
        .env("PYTHONPATH", &dir)
        .output()
        .expect("run the rq-dashboard probe");
    let text = String::from_utf8_lossy(&output.stdout);
    let value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "dashboard_probe.py printed no JSON ({e}): {text}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (value, output.status.success())
}

/// The `rq` command line of the venv.
pub fn rq_cli() -> PathBuf {
    python().with_file_name("rq")
}

/// A command running `testkit/python/rq_peer.py <redis url> <args>` with the Python job
/// module on the path.
pub fn rq_peer_command(url: &str, args: &[&str]) -> Command {
    rq_peer_command_with(&python(), url, args)
}

/// [`rq_peer_command`] with another venv's Python (e.g. [`python_rq113`]).
pub fn rq_peer_command_with(python: &Path, url: &str, args: &[&str]) -> Command {
    let dir = workspace_root().join("testkit/python");
    let mut cmd = Command::new(python);
    cmd.arg(dir.join("rq_peer.py"))
        .arg(url)
        .args(args)
        .env("PYTHONPATH", &dir);
    cmd
}

/// Runs the rq peer and returns its stdout; panics with its stderr when it fails.
pub fn rq_peer(url: &str, args: &[&str]) -> String {
    let output = rq_peer_command(url, args)
        .output()
        .expect("run the Python rq peer");
    check(&output, "rq_peer.py");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Runs the rq peer and parses its stdout as JSON.
pub fn rq_peer_json(url: &str, args: &[&str]) -> serde_json::Value {
    let out = rq_peer(url, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("rq_peer.py printed no JSON ({e}): {out}"))
}

/// Reads `--count N` events from a stream as HDX's consumers do (XREADGROUP, then
/// `json.loads(body)`), through `testkit/python/stream_consumer.py`; returns its JSON list of
/// `{id, event_type, body}`.
pub fn stream_consumer(url: &str, args: &[&str]) -> serde_json::Value {
    let dir = workspace_root().join("testkit/python");
    let output = Command::new(python())
        .arg(dir.join("stream_consumer.py"))
        .arg(url)
        .args(args)
        .output()
        .expect("run the Python stream consumer");
    check(&output, "stream_consumer.py");
    serde_json::from_slice(&output.stdout).expect("stream_consumer.py prints JSON")
}

/// Panics with the output of a failed command.
pub fn check(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Polls `check` until it returns `Some`, for at most `timeout`; panics with `what` after.
pub fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Async flavour of [`eventually`] (the check itself is synchronous and quick).
pub async fn eventually_async<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`eventually`] with an asynchronous check (a browser, an HTTP client).
pub async fn eventually_await<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A redis-server of the test's own, on a free port, keeping its data in a temporary folder:
/// for tests that stop and restart Redis, which they must not do to the shared server.
#[derive(Debug)]
pub struct PrivateRedis {
    /// The port it listens on.
    pub port: u16,
    dir: PathBuf,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    /// Starts a server (needs `redis-server` on the PATH, which scripts/setup.sh installs).
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let dir = temp_dir(&format!("hdx-jobs-redis-{port}"));
        let mut redis = PrivateRedis {
            port,
            dir,
            child: None,
        };
        redis.spawn();
        redis
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Saves the data and stops the server (clients see their connections drop).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(mut conn) = redis::Client::open(self.url()).and_then(|c| c.get_connection()) {
                let _: Result<(), _> = redis::cmd("SHUTDOWN").arg("SAVE").query(&mut conn);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the saved data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let url = self.url();
        eventually(
            "private redis-server to answer",
            Duration::from_secs(10),
            || {
                let mut conn = redis::Client::open(url.as_str())
                    .ok()?
                    .get_connection()
                    .ok()?;
                redis::cmd("PING").query::<String>(&mut conn).ok()
            },
        );
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How tests reach PostgreSQL (`HDX_TEST_PG`, a `key=value` connection string; default: the
/// local socket as the current OS user, which scripts/setup.sh makes a superuser).
pub fn pg_base_config() -> String {
    std::env::var("HDX_TEST_PG").unwrap_or_else(|_| {
        let user = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "postgres".into());
        format!("host=/var/run/postgresql user={user}")
    })
}

/// A PostgreSQL database of the test's own, with PostGIS, dropped on drop.
#[derive(Debug)]
pub struct TestPostgres {
    /// The database name.
    pub dbname: String,
}

impl TestPostgres {
    /// Creates `hdx_jobs_test_<pid>_<n>` with the PostGIS extension.
    pub fn new() -> Self {
        let dbname = format!("hdx_jobs_test_{}_{}", std::process::id(), unique_suffix());
        let mut admin = Self::admin();
        admin
            .batch_execute(&format!("CREATE DATABASE {dbname}"))
            .expect("create the test database");
        let test = TestPostgres { dbname };
        test.client()
            .batch_execute("CREATE EXTENSION IF NOT EXISTS postgis")
            .expect("enable PostGIS");
        test
    }

    fn admin() -> postgres::Client {
        let base = pg_base_config();
        postgres::Client::connect(&format!("{base} dbname=postgres"), postgres::NoTls)
            .unwrap_or_else(|e| panic!("tests need PostgreSQL ({base}; HDX_TEST_PG): {e}"))
    }

    /// The `key=value` connection string of the database.
    pub fn conn_string(&self) -> String {
        format!("{} dbname={}", pg_base_config(), self.dbname)
    }

    /// A synchronous client, for setting up and asserting.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.conn_string(), postgres::NoTls)
            .expect("connect to the test database")
    }
}

impl Default for TestPostgres {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        if let Ok(mut admin) = postgres::Client::connect(
            &format!("{} dbname=postgres", pg_base_config()),
            postgres::NoTls,
        ) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.dbname
            ));
        }
    }
}
