//! A real hdx-jobs-server for tests: bound to a free port, on its own runtime thread, against a
//! leased Redis database, its own PostGIS database and a local server playing CKAN.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use hdx_jobs::rq::worker::{StopHandle, Worker, WorkerOptions};
use hdx_jobs::task::TaskRegistry;
use hdx_jobs::RedisClient;
use hdx_jobs_server::{AppState, ServerConfig};
use serde_json::Value;
use testkit::http::FakeServer;
use testkit::{TestPostgres, TestRedis};

/// The service under test and everything it talks to.
pub struct TestServer {
    pub url: String,
    pub redis: TestRedis,
    pub postgres: TestPostgres,
    pub ckan: FakeServer,
    runtime: Option<tokio::runtime::Runtime>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    workers: Vec<StopHandle>,
}

impl TestServer {
    /// Starts with the default test settings plus `vars`.
    pub fn start(vars: &[(&str, &str)]) -> Self {
        let redis = TestRedis::new();
        let postgres = TestPostgres::new();
        let ckan = FakeServer::start();
        let mut env: HashMap<String, String> = HashMap::from([
            ("HDX_REDIS_URL".into(), redis.url().to_string()),
            ("REDIS_STREAM_URL".into(), redis.url().to_string()),
            ("HDX_GISDB_URL".into(), postgres.conn_string()),
            (
                "CKAN_API_BASE_URL".into(),
                format!("{}/api/action", ckan.url()),
            ),
            ("HDX_GIS_API_KEY".into(), "gis-key".into()),
            ("RQ_WORKER_TIMEOUT".into(), "300".into()),
            ("HDX_USER_AGENT".into(), "HDX-TEST".into()),
        ]);
        for (k, v) in vars {
            env.insert(k.to_string(), v.to_string());
        }
        let config = ServerConfig::from_lookup(|k| env.get(k).cloned()).expect("config");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let client = RedisClient::open(&config.core.redis_url).expect("redis");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        runtime.spawn(async move {
            let shutdown = async {
                let _ = rx.await;
            };
            hdx_jobs_server::run(
                listener,
                AppState::new(client, config).expect("state"),
                shutdown,
            )
            .await
            .expect("server");
        });
        TestServer {
            url,
            redis,
            postgres,
            ckan,
            runtime: Some(runtime),
            shutdown: Some(tx),
            workers: Vec::new(),
        }
    }

    /// Runs a worker with the built-in tasks on `queues` in the server's runtime.
    pub fn start_worker(&mut self, queues: &[&str]) -> String {
        let client = RedisClient::open(self.redis.url()).expect("redis");
        let options = WorkerOptions {
            queues: queues.iter().map(|q| q.to_string()).collect(),
            ..Default::default()
        };
        let worker = Worker::new(client, TaskRegistry::with_builtins(), options).expect("worker");
        let name = worker.name().to_string();
        self.workers.push(worker.stop_handle());
        let runtime = self.runtime.as_ref().expect("runtime");
        runtime.spawn(async move {
            let _ = worker.run().await;
        });
        let key = format!("rq:worker:{name}");
        testkit::eventually("worker registered", Duration::from_secs(10), || {
            let exists: bool = self.redis.query(redis::cmd("EXISTS").arg(&key));
            exists.then_some(())
        });
        name
    }

    /// An HTTP agent that reports every status as a response.
    pub fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .new_agent()
    }

    /// GET; returns status and JSON body.
    pub fn get(&self, path: &str) -> (u16, Value) {
        let response = Self::agent()
            .get(&format!("{}{path}", self.url))
            .call()
            .expect("GET");
        read(response)
    }

    /// POST a JSON body.
    pub fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = Self::agent()
            .post(&format!("{}{path}", self.url))
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .expect("POST");
        read(response)
    }

    /// POST a monitor action as the monitor page does (with its header).
    pub fn monitor_action(&self, path: &str) -> (u16, Value) {
        let response = Self::agent()
            .post(&format!("{}{path}", self.url))
            .header("X-HDX-Jobs-Monitor", "1")
            .send_empty()
            .expect("POST");
        read(response)
    }

    /// POST raw bytes with a content type (or none).
    pub fn post_raw(&self, path: &str, content_type: Option<&str>, body: &[u8]) -> (u16, Value) {
        let mut request = Self::agent().post(&format!("{}{path}", self.url));
        if let Some(ct) = content_type {
            request = request.header("Content-Type", ct);
        }
        read(request.send(body).expect("POST"))
    }

    /// Ids waiting in a queue.
    pub fn queued(&self, queue: &str) -> Vec<String> {
        self.redis.query(
            redis::cmd("LRANGE")
                .arg(format!("rq:queue:{queue}"))
                .arg(0)
                .arg(-1),
        )
    }

    /// The decoded payload of a job: (func, args, kwargs), and its timeout field.
    pub fn job_call(
        &self,
        id: &str,
    ) -> (
        String,
        Vec<Value>,
        serde_json::Map<String, Value>,
        Option<i64>,
    ) {
        let mut conn = self.redis.conn();
        let data: Vec<u8> = redis::cmd("HGET")
            .arg(format!("rq:job:{id}"))
            .arg("data")
            .query(&mut conn)
            .expect("data");
        let timeout: Option<i64> = redis::cmd("HGET")
            .arg(format!("rq:job:{id}"))
            .arg("timeout")
            .query(&mut conn)
            .expect("timeout");
        let call = hdx_jobs::rq::payload::CallPayload::decode(&data).expect("payload");
        (call.func_name, call.args, call.kwargs, timeout)
    }

    /// Every queue's length, to assert nothing was enqueued.
    pub fn total_queued(&self) -> usize {
        [
            "geo_q",
            "analytics_q",
            "event_q",
            "fs_check_q",
            "default_scheduler_q",
        ]
        .iter()
        .map(|q| self.queued(q).len())
        .sum()
    }
}

/// Status and JSON body of a response.
pub fn read(mut response: ureq::http::Response<ureq::Body>) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

impl Drop for TestServer {
    fn drop(&mut self) {
        for worker in &self.workers {
            worker.cold();
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

/// ChromeDriver on a free port with a fresh Chromium profile (Debian's chromium and
/// chromium-driver, installed by scripts/setup.sh).
pub struct ChromeDriver {
    child: std::process::Child,
    /// The WebDriver URL.
    pub url: String,
    /// The browser profile folder.
    pub profile: std::path::PathBuf,
}

impl ChromeDriver {
    /// Starts ChromeDriver.
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let child = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver (package chromium-driver; run scripts/setup.sh)");
        let url = format!("http://127.0.0.1:{port}");
        let status = format!("{url}/status");
        testkit::eventually("chromedriver to answer", Duration::from_secs(20), || {
            ureq::get(&status).call().ok()
        });
        let profile = std::env::temp_dir().join(format!("hdx-jobs-chromium-{port}"));
        ChromeDriver {
            child,
            url,
            profile,
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl ChromeDriver {
    /// A headless Chromium session with a window of `width`x`height`.
    pub async fn session(&self, width: u32, height: u32) -> fantoccini::Client {
        fantoccini::ClientBuilder::native()
            .capabilities(self.capabilities(width, height))
            .connect(&self.url)
            .await
            .expect("browser session")
    }

    fn capabilities(&self, width: u32, height: u32) -> serde_json::Map<String, Value> {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                         "--no-first-run", "--disable-background-networking", "--disable-component-update",
                         "--disable-sync", "--use-gl=swiftshader", "--enable-unsafe-swiftshader",
                         format!("--window-size={width},{height}"),
                         format!("--user-data-dir={}", self.profile.display())]
            }),
        );
        capabilities
    }
}
