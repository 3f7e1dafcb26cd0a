//! The analytics job end to end: jobs pickled by the real Python rq, exactly as the old Flask
//! API enqueued them (`enqueue_call(func=send_event_task, args=[event_arguments])`), run on an
//! in-process worker with HDX's task registry, against local servers playing Mixpanel and GA4;
//! outcomes read back through Python's `Job.fetch`, logs captured to check what they say and
//! what they never say (secrets).

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::*;
use hdx_jobs::analytics::{ga4, mixpanel, GA_NOT_CONFIGURED, TASK_NAME};
use hdx_jobs::config::Config;
use hdx_jobs::RedisClient;
use serde_json::{json, Value};
use testkit::http::{FakeServer, Recorded, Reply};
use testkit::TestRedis;

const WAIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "mp-token-5f3a9c";

/// Everything the worker logs in this test binary.
fn logs() -> String {
    static SINK: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    let sink = SINK.get_or_init(|| {
        let sink = Arc::new(Mutex::new(Vec::new()));
        let writer = LogSink(sink.clone());
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        sink
    });
    String::from_utf8_lossy(&sink.lock().expect("logs")).into_owned()
}

#[derive(Clone)]
struct LogSink(Arc<Mutex<Vec<u8>>>);

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A test database, a Mixpanel and a GA server, and a worker configured for them.
struct Env {
    test: TestRedis,
    redis: RedisClient,
    mixpanel: FakeServer,
    ga: FakeServer,
}

impl Env {
    fn new() -> Self {
        logs();
        let test = TestRedis::new();
        let redis = client(&test);
        let mixpanel = FakeServer::start();
        mixpanel.reply("/track", Reply::json(json!({"status": 1, "error": null})));
        mixpanel.reply(
            "/import",
            Reply::json(json!({"code": 200, "num_records_imported": 1, "status": "OK"})),
        );
        let ga = FakeServer::start();
        ga.reply("/mp/collect", Reply::status(204));
        Env {
            test,
            redis,
            mixpanel,
            ga,
        }
    }

    /// The configuration: these services, short retry waits, plus `vars`.
    fn config(&self, vars: &[(&str, String)]) -> Config {
        let mut all: Vec<(String, String)> = vec![
            ("MIXPANEL_API_URL".into(), self.mixpanel.url()),
            ("GA_MP_URL".into(), format!("{}/mp/collect", self.ga.url())),
            ("HDX_USER_AGENT".into(), "HDX-TEST".into()),
            // Generous for a loaded machine: a slow local answer must not add a retry.
            ("ANALYTICS_CONNECT_TIMEOUT".into(), "5".into()),
            ("ANALYTICS_READ_TIMEOUT".into(), "5".into()),
            ("ANALYTICS_RETRY_BACKOFF".into(), "0.01".into()),
            ("ANALYTICS_RETRY_BACKOFF_MAX".into(), "0.05".into()),
            ("ANALYTICS_MAX_ATTEMPTS".into(), "3".into()),
        ];
        for (k, v) in vars {
            all.retain(|(name, _)| name != k);
            all.push((k.to_string(), v.clone()));
        }
        Config::from_lookup(|k| all.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
            .expect("config")
    }

    /// A worker on `analytics_q` running HDX's registry for `config`.
    fn worker(&self, config: &Config) -> RunningWorker {
        start_worker(
            &self.redis,
            hdx_jobs::hdx::task_registry(config),
            fast_options(&["analytics_q"]),
        )
    }

    /// Enqueues a job from Python, pickled, as the old API did; returns its id.
    fn enqueue(&self, arguments: &Value, extra: &[&str]) -> String {
        let args = json!([arguments]).to_string();
        let mut cmd = vec![
            "enqueue",
            "--serializer",
            "pickle",
            "--queue",
            "analytics_q",
            "--func",
            TASK_NAME,
            "--timeout",
            "180",
            "--args",
            &args,
        ];
        cmd.extend_from_slice(extra);
        testkit::rq_peer(self.test.url(), &cmd)
    }

    /// What Python's `Job.fetch` sees.
    fn fetch(&self, id: &str) -> Value {
        testkit::rq_peer_json(self.test.url(), &["fetch", id, "--serializer", "pickle"])
    }

    async fn wait(&self, id: &str, status: &str) -> Value {
        wait_status(&self.test, id, status, WAIT).await;
        self.fetch(id)
    }
}

/// The arguments HDX's CKAN sends (ckanext-hdx_theme's analytics senders).
fn hdx_arguments() -> Value {
    json!({
        "event_name": "first login",
        "send_mixpanel": true,
        "send_ga": true,
        "mixpanel_token": TOKEN,
        "mixpanel_tracking_id": "7f1c2e9a0b3d",
        "mixpanel_meta": {
            "onboarding start": "email",
            "account choice": "new account",
            "time": 1_700_000_000.25,
            "server side": true,
            "user agent": "Mozilla/5.0",
            "referer url": null,
            "ip": "8.8.8.8",
            "$os": "Linux",
            "$browser": "Firefox",
            "$browser_version": "120",
            "$current_url": "https://data.humdata.org/user/register"
        },
        "ga_meta": {
            "ec": "organization",
            "ea": "first login",
            "el": "new account",
            "cd1": "email",
            "uip": "8.8.8.8",
            "dl": "https://data.humdata.org/user/register",
            "ds": "direct",
            "v": "1",
            "t": "event",
            "cid": "anonymous",
            "tid": "UA-48221887-3"
        }
    })
}

/// The one event of a `/track` request (`data=[event]` form field).
fn tracked_event(request: &Recorded) -> Value {
    let form = request.form();
    let data = &form
        .iter()
        .find(|(k, _)| k == "data")
        .expect("data field")
        .1;
    let batch: Value = serde_json::from_str(data).expect("data is JSON");
    assert_eq!(
        batch.as_array().map(Vec::len),
        Some(1),
        "one event per request"
    );
    batch[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_pickled_by_python_reaches_mixpanel_and_ga4() {
    let env = Env::new();
    let config = env.config(&[
        ("GA_MEASUREMENT_ID", "G-TEST123".into()),
        ("GA_API_SECRET", "ga-secret-81b2".into()),
    ]);
    let worker = env.worker(&config);
    let arguments = hdx_arguments();
    let id = env.enqueue(&arguments, &[]);

    let job = env.wait(&id, "finished").await;
    worker.stop().await;

    // Mixpanel: what the old `track` call sent, plus the insert id.
    let requests = env.mixpanel.requests_to("/track");
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.header("user-agent"), Some("HDX-TEST"));
    assert_eq!(
        request.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let form = request.form();
    assert!(form.contains(&("verbose".into(), "1".into())));
    assert!(form.contains(&("ip".into(), "0".into())));
    let event = tracked_event(request);
    assert_eq!(event["event"], "first login");
    let properties = &event["properties"];
    assert_eq!(properties["distinct_id"], "7f1c2e9a0b3d");
    assert_eq!(properties["token"], TOKEN);
    assert_eq!(
        properties["time"], 1_700_000_000_250i64,
        "the meta's time, in ms"
    );
    for (key, value) in arguments["mixpanel_meta"].as_object().expect("meta") {
        if key != "time" {
            assert_eq!(&properties[key], value, "property {key}");
        }
    }
    let insert_id = properties["$insert_id"].as_str().expect("$insert_id");
    assert_eq!(
        insert_id,
        mixpanel::insert_id(&id),
        "derived from the job id"
    );
    assert!(insert_id.len() <= 36 && insert_id.chars().all(|c| c.is_ascii_hexdigit() || c == '-'));

    // GA4: a valid Measurement Protocol payload for the stream.
    let requests = env.ga.requests_to("/mp/collect");
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.query_param("measurement_id"), Some("G-TEST123"));
    assert_eq!(request.query_param("api_secret"), Some("ga-secret-81b2"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    let payload = request.json();
    ga4::validate(&payload).expect("GA4 accepts the payload");
    assert_eq!(payload["client_id"], "anonymous");
    assert_eq!(payload["ip_override"], "8.8.8.8");
    assert_eq!(payload["events"][0]["name"], "first_login");
    assert_eq!(
        payload["events"][0]["params"],
        json!({
            "event_category": "organization",
            "event_action": "first login",
            "event_label": "new account",
            "page_location": "https://data.humdata.org/user/register",
            "data_source": "direct",
            "dimension1": "email"
        })
    );

    // What Python reads back.
    assert_eq!(job["status"], "finished");
    assert_eq!(job["func_name"], TASK_NAME);
    let result = &job["return_value"];
    assert_eq!(result["mixpanel"]["insert_id"], insert_id);
    assert_eq!(result["mixpanel"]["endpoint"], "/track");
    assert_eq!(result["ga"]["mode"], "ga4");
    let text = result.to_string();
    assert!(
        !text.contains(TOKEN) && !text.contains("ga-secret-81b2"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_flags_and_empty_arguments_fail_as_python_sees_it() {
    let env = Env::new();
    let worker = env.worker(&env.config(&[]));
    let no_flags = env.enqueue(
        &json!({"event_name": "e", "send_mixpanel": false, "send_ga": false,
                "mixpanel_token": TOKEN, "mixpanel_tracking_id": "u"}),
        &[],
    );
    let empty = env.enqueue(&json!({}), &["--retry", "2"]);
    let no_token = env.enqueue(
        &json!({"event_name": "e", "send_mixpanel": true, "mixpanel_tracking_id": "u"}),
        &[],
    );

    let job = env.wait(&no_flags, "failed").await;
    let exc = job["exc_string"].as_str().expect("exc_string");
    assert!(
        exc.contains("missing-task-argument: No flag to send to either Mixpanel or GA"),
        "{exc}"
    );
    let job = env.wait(&empty, "failed").await;
    let exc = job["exc_string"].as_str().expect("exc_string");
    assert!(
        exc.contains("empty-task: Task arguments seem to be empty"),
        "{exc}"
    );
    let job = env.wait(&no_token, "failed").await;
    let exc = job["exc_string"].as_str().expect("exc_string");
    assert!(
        exc.contains("missing-task-argument: Missing mixpanel token"),
        "{exc}"
    );
    worker.stop().await;

    assert!(
        zmembers(&env.test, "rq:scheduled:analytics_q").is_empty(),
        "bad arguments are never retried"
    );
    assert!(env.mixpanel.requests().is_empty() && env.ga.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_then_200_delivers_once_with_one_insert_id() {
    let env = Env::new();
    env.mixpanel
        .reply_once("/track", Reply::status(500).body("internal error"));
    let worker = env.worker(&env.config(&[]));
    let mut arguments = hdx_arguments();
    arguments["send_ga"] = json!(false);
    let id = env.enqueue(&arguments, &[]);

    let job = env.wait(&id, "finished").await;
    worker.stop().await;

    let requests = env.mixpanel.requests_to("/track");
    assert_eq!(requests.len(), 2, "one failure, one delivery");
    let (first, second) = (tracked_event(&requests[0]), tracked_event(&requests[1]));
    assert_eq!(first, second, "the retry repeats the same event");
    for key in ["$insert_id", "time", "distinct_id"] {
        assert_eq!(first["properties"][key], second["properties"][key]);
    }
    assert_eq!(job["return_value"]["mixpanel"]["attempts"], 2);
    assert_eq!(
        job["return_value"]["mixpanel"]["insert_id"],
        first["properties"]["$insert_id"]
    );
    assert!(logs().contains("analytics delivery failed; retrying"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_fails_without_retry_with_mixpanels_text() {
    let env = Env::new();
    env.mixpanel.reply(
        "/track",
        Reply::json(json!({"status": 0, "error": "'properties.time' is invalid: too old"}))
            .with_status(400),
    );
    let worker = env.worker(&env.config(&[]));
    let mut arguments = hdx_arguments();
    arguments["send_ga"] = json!(false);
    // The job even has RQ retries: a refusal must not use them.
    let id = env.enqueue(&arguments, &["--retry", "3"]);

    let job = env.wait(&id, "failed").await;
    worker.stop().await;

    assert_eq!(env.mixpanel.requests_to("/track").len(), 1, "no retry");
    let exc = job["exc_string"].as_str().expect("exc_string");
    assert!(exc.contains("mixpanel-rejected"), "{exc}");
    assert!(exc.contains("HTTP 400"), "{exc}");
    assert!(
        exc.contains("'properties.time' is invalid: too old"),
        "{exc}"
    );
    assert!(zmembers(&env.test, "rq:scheduled:analytics_q").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_hits_the_read_timeout_and_is_retried() {
    let env = Env::new();
    env.mixpanel.reply_once(
        "/track",
        Reply::json(json!({"status": 1})).delay(Duration::from_secs(6)),
    );
    let config = env.config(&[("ANALYTICS_READ_TIMEOUT", "2".into())]);
    let worker = env.worker(&config);
    let mut arguments = hdx_arguments();
    arguments["send_ga"] = json!(false);
    let id = env.enqueue(&arguments, &[]);

    let job = env.wait(&id, "finished").await;
    worker.stop().await;

    let requests = env.mixpanel.requests_to("/track");
    assert_eq!(requests.len(), 2, "the stalled attempt and its retry");
    assert_eq!(tracked_event(&requests[0]), tracked_event(&requests[1]));
    assert_eq!(job["return_value"]["mixpanel"]["attempts"], 2);
    let logs = logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("retrying") && l.contains(&id) && l.contains("timed out")),
        "the retry is logged with its reason"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_retries_resend_the_same_event() {
    let env = Env::new();
    // Every attempt of the first run fails; the job's RQ retry then succeeds.
    env.mixpanel.reply_once("/track", Reply::status(503));
    env.mixpanel.reply_once("/track", Reply::status(502));
    let config = env.config(&[("ANALYTICS_MAX_ATTEMPTS", "2".into())]);
    let worker = env.worker(&config);
    // No `time` in the meta: the event time must come from the job, not from the attempt.
    let arguments = json!({
        "event_name": "dataset download", "send_mixpanel": true, "mixpanel_token": TOKEN,
        "mixpanel_tracking_id": "u-9", "mixpanel_meta": {"dataset": "x"}
    });
    let id = env.enqueue(&arguments, &["--retry", "1"]);

    let job = env.wait(&id, "finished").await;
    worker.stop().await;

    let events: Vec<Value> = env
        .mixpanel
        .requests_to("/track")
        .iter()
        .map(tracked_event)
        .collect();
    assert_eq!(events.len(), 3, "two attempts, then the RQ retry");
    assert!(events.iter().all(|e| *e == events[0]), "{events:#?}");
    assert_eq!(job["return_value"]["mixpanel"]["attempts"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_retry_after_is_left_to_the_jobs_retry() {
    let env = Env::new();
    env.mixpanel
        .reply("/track", Reply::status(429).header("Retry-After", "120"));
    let worker = env.worker(&env.config(&[]));
    let mut arguments = hdx_arguments();
    arguments["send_ga"] = json!(false);
    let id = env.enqueue(&arguments, &["--retry", "1", "--interval", "1"]);

    wait_status(&env.test, &id, "scheduled", WAIT).await;
    worker.stop().await;

    assert_eq!(env.mixpanel.requests_to("/track").len(), 1);
    let scheduled = zset(&env.test, "rq:scheduled:analytics_q");
    assert_eq!(scheduled.len(), 1);
    assert!(
        scheduled[0].1 >= now_s() + 100.0,
        "the retry waits for Retry-After, not the 1 s interval"
    );
    assert!(
        logs().lines().any(|l| l.contains(&id)
            && l.contains("mixpanel-unavailable")
            && l.contains("HTTP 429")),
        "the failed attempt is logged with its reason"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ga_configured_send_ga_succeeds_with_a_warning() {
    let env = Env::new();
    let worker = env.worker(&env.config(&[]));
    let mut arguments = hdx_arguments();
    arguments["send_mixpanel"] = json!(false);
    let id = env.enqueue(&arguments, &[]);

    let job = env.wait(&id, "finished").await;
    worker.stop().await;

    assert!(env.ga.requests().is_empty() && env.mixpanel.requests().is_empty());
    assert_eq!(job["return_value"]["ga"]["mode"], "none");
    assert!(
        logs()
            .lines()
            .any(|l| l.contains("WARN") && l.contains(&id) && l.contains(GA_NOT_CONFIGURED)),
        "a warning names the job"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ga_debug_validation_messages_fail_the_job() {
    let env = Env::new();
    env.ga.reply_once(
        "/debug/mp/collect",
        Reply::json(json!({"validationMessages": [{
            "fieldPath": "events.params.event_label",
            "description": "Value is too long for parameter event_label.",
            "validationCode": "VALUE_INVALID"
        }]})),
    );
    env.ga.reply(
        "/debug/mp/collect",
        Reply::json(json!({"validationMessages": []})),
    );
    let config = env.config(&[
        ("GA_MEASUREMENT_ID", "G-TEST123".into()),
        ("GA_API_SECRET", "ga-secret-81b2".into()),
        ("GA_DEBUG", "true".into()),
    ]);
    let worker = env.worker(&config);
    let mut arguments = hdx_arguments();
    arguments["send_mixpanel"] = json!(false);
    let refused = env.enqueue(&arguments, &[]);
    let job = env.wait(&refused, "failed").await;
    let accepted = env.enqueue(&arguments, &[]);
    let accepted_job = env.wait(&accepted, "finished").await;
    worker.stop().await;

    let exc = job["exc_string"].as_str().expect("exc_string");
    assert!(exc.contains("ga4-validation-failed"), "{exc}");
    assert!(
        exc.contains("events.params.event_label: Value is too long for parameter event_label. (VALUE_INVALID)"),
        "{exc}"
    );
    assert!(!exc.contains("ga-secret-81b2"), "{exc}");
    assert!(
        env.ga.requests_to("/mp/collect").is_empty(),
        "debug never records events"
    );
    let sent = env.ga.requests_to("/debug/mp/collect");
    assert_eq!(sent.len(), 2);
    assert_eq!(
        sent[0].json()["validation_behavior"],
        "ENFORCE_RECOMMENDATIONS"
    );
    assert_eq!(accepted_job["return_value"]["ga"]["debug"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ga4_limits_are_checked_before_anything_is_sent() {
    let env = Env::new();
    let config = env.config(&[
        ("GA_MEASUREMENT_ID", "G-TEST123".into()),
        ("GA_API_SECRET", "ga-secret-81b2".into()),
    ]);
    let worker = env.worker(&config);
    let mut bad_name = hdx_arguments();
    bad_name["event_name"] = json!("2fa enabled");
    let bad_name = env.enqueue(&bad_name, &[]);
    let mut too_many = hdx_arguments();
    for i in 2..=30 {
        too_many["ga_meta"][format!("cd{i}")] = json!("x");
    }
    let too_many = env.enqueue(&too_many, &[]);
    let mut long_label = hdx_arguments();
    long_label["ga_meta"]["el"] = json!("é".repeat(150));
    let long_label = env.enqueue(&long_label, &[]);

    let job = env.wait(&bad_name, "failed").await;
    let exc = job["exc_string"].as_str().expect("exc_string");
    assert!(exc.contains("ga4-invalid-event"), "{exc}");
    assert!(
        exc.contains(r#"event name "2fa_enabled" must start with a letter"#),
        "{exc}"
    );
    let job = env.wait(&too_many, "failed").await;
    let exc = job["exc_string"].as_str().expect("exc_string");
    assert!(
        exc.contains("has 35 parameters; GA4 keeps at most 25"),
        "{exc}"
    );
    env.wait(&long_label, "finished").await;
    worker.stop().await;

    // The two refused jobs sent nothing anywhere; the long label went out cut to 100.
    assert_eq!(env.mixpanel.requests_to("/track").len(), 1);
    let sent = env.ga.requests_to("/mp/collect");
    assert_eq!(sent.len(), 1);
    let label = sent[0].json()["events"][0]["params"]["event_label"]
        .as_str()
        .expect("label")
        .to_string();
    assert_eq!(label, "é".repeat(100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_with_a_service_account_and_secrets_never_shown() {
    let env = Env::new();
    // Mixpanel echoes credentials in its error: they must not reach the job's error.
    env.mixpanel.reply_once(
        "/import",
        Reply::json(json!({
            "code": 401, "status": "error",
            "error": format!("Invalid credentials sa-secret-77d1 for token {TOKEN}")
        }))
        .with_status(401),
    );
    env.ga.reply_once("/mp/collect", Reply::status(503));
    let config = env.config(&[
        ("MIXPANEL_SERVICE_ACCOUNT", "hdx.sa".into()),
        ("MIXPANEL_SERVICE_ACCOUNT_SECRET", "sa-secret-77d1".into()),
        ("MIXPANEL_PROJECT_ID", "31337".into()),
        ("GA_MEASUREMENT_ID", "G-TEST123".into()),
        ("GA_API_SECRET", "ga-secret-81b2".into()),
    ]);
    let worker = env.worker(&config);
    let refused = env.enqueue(&hdx_arguments(), &[]);
    let refused_job = env.wait(&refused, "failed").await;
    let delivered = env.enqueue(&hdx_arguments(), &[]);
    let delivered_job = env.wait(&delivered, "finished").await;
    worker.stop().await;

    let requests = env.mixpanel.requests_to("/import");
    assert_eq!(requests.len(), 2);
    let request = &requests[1];
    assert_eq!(request.query_param("strict"), Some("1"));
    assert_eq!(request.query_param("project_id"), Some("31337"));
    assert_eq!(
        request.header("authorization"),
        Some("Basic aGR4LnNhOnNhLXNlY3JldC03N2Qx"),
        "Basic hdx.sa:sa-secret-77d1"
    );
    let batch = request.json();
    assert_eq!(batch[0]["event"], "first login");
    assert_eq!(
        batch[0]["properties"]["$insert_id"],
        mixpanel::insert_id(&delivered)
    );
    assert_eq!(
        delivered_job["return_value"]["mixpanel"]["endpoint"],
        "/import"
    );
    assert_eq!(delivered_job["return_value"]["ga"]["attempts"], 2);

    let exc = refused_job["exc_string"].as_str().expect("exc_string");
    assert!(
        exc.contains("mixpanel-rejected") && exc.contains("HTTP 401"),
        "{exc}"
    );
    assert!(
        exc.contains("Invalid credentials *** for token ***"),
        "{exc}"
    );
    let logs = logs();
    assert!(logs.contains(&delivered), "the worker logged the jobs");
    for secret in [TOKEN, "sa-secret-77d1", "ga-secret-81b2"] {
        for (what, text) in [
            ("exc_string", exc.to_string()),
            ("result", delivered_job["return_value"].to_string()),
            ("logs", logs.clone()),
        ] {
            assert!(
                !text.contains(secret),
                "{secret} appears in the {what}: {text}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ua_mode_form_posts_ga_meta_like_the_old_service() {
    let env = Env::new();
    let config = env.config(&[
        ("GA_MODE", "ua".into()),
        ("GA_UA_URL", format!("{}/collect", env.ga.url())),
    ]);
    let worker = env.worker(&config);
    let mut arguments = hdx_arguments();
    arguments["send_mixpanel"] = json!(false);
    let id = env.enqueue(&arguments, &[]);

    let job = env.wait(&id, "finished").await;
    worker.stop().await;

    let sent = env.ga.requests_to("/collect");
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let mut expected: Vec<(String, String)> = arguments["ga_meta"]
        .as_object()
        .expect("meta")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("text").to_string()))
        .collect();
    let mut form = sent[0].form();
    form.sort();
    expected.sort();
    assert_eq!(form, expected);
    assert_eq!(job["return_value"]["ga"]["mode"], "ua");
}
