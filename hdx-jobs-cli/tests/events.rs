//! `hdx-jobs events diff` and `hdx-jobs events listen` as operators run them: the diff of the
//! project's CKAN sample pair (`samples/ckan`; and of the shared fixture pair where the machine
//! has it), a job from Python rq run by `hdx-jobs work` and read back by a Python consumer, and
//! a listener whose webhook fails or which is killed mid-delivery.

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use testkit::http::{FakeServer, Reply};
use testkit::{redis, TestRedis};

const WAIT: Duration = Duration::from_secs(30);
const STREAM: &str = "hdx_event_stream";
const FUNC: &str = "eventapi.tasks.detect_changes.detect_changes";

/// A dataset dict of the project's sample pair (`samples/ckan/<name>`).
fn sample(name: &str) -> PathBuf {
    testkit::sample(&format!("ckan/{name}"))
}

/// The sample pair's event types, in order.
const SAMPLE_TYPES: [&str; 9] = testkit::SAMPLE_PAIR_EVENT_TYPES;

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hdx-jobs"));
    cmd.env("LOG_LEVEL", "warn").env_remove("RUST_LOG");
    cmd
}

fn diff(args: &[&str]) -> Vec<Value> {
    let output = bin()
        .args(["events", "diff"])
        .args(args)
        .output()
        .expect("run");
    testkit::check(&output, "hdx-jobs events diff");
    serde_json::from_slice::<Vec<Value>>(&output.stdout).expect("a JSON array")
}

fn types(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap_or(""))
        .collect()
}

#[test]
fn diff_prints_the_events_of_two_dataset_dicts() {
    let (old, new) = (sample("dataset_old.json"), sample("dataset_new.json"));
    let events = diff(&["--old", path(&old), "--new", path(&new), "--user", "alexg"]);
    assert_eq!(types(&events), SAMPLE_TYPES);
    assert!(events.iter().all(|e| e["initiator_user_name"] == "alexg"
        && e["dataset_name"] == "norvale-water-points"
        && e["org_title"] == "Fictional Relief Network"));
    let times: HashSet<&str> = events
        .iter()
        .map(|e| e["event_time"].as_str().expect("event_time"))
        .collect();
    assert_eq!(times.len(), 1, "one event_time per run");
    let dataset = &events[0]["changed_fields"];
    let dataset_fields: Vec<&str> = dataset
        .as_array()
        .expect("list")
        .iter()
        .map(|f| f["field"].as_str().expect("field"))
        .collect();
    assert_eq!(
        dataset_fields,
        [
            "notes",
            "dataset_date",
            "data_update_frequency",
            "license_id",
            "groups",
            "tags"
        ]
    );
    assert_eq!(
        (
            &dataset[2]["old_display_value"],
            &dataset[2]["new_display_value"]
        ),
        (&json!("Every month"), &json!("Every three months"))
    );
    assert_eq!(
        dataset[4],
        json!({"field": "groups", "added_items": ["mrw"], "removed_items": ["srv"]})
    );
    let resources: Vec<(&str, &Value)> = events[1..]
        .iter()
        .map(|e| {
            (
                e["resource_name"].as_str().expect("resource_name"),
                &e["sheet_id"],
            )
        })
        .collect();
    let xlsx = "norvale-water-point-survey-2024.xlsx";
    assert_eq!(
        resources,
        [
            ("norvale-water-points.geojson", &Value::Null),
            ("norvale-water-points-shp.zip", &Value::Null),
            ("norvale-water-points.csv", &Value::Null),
            (xlsx, &Value::Null),
            (xlsx, &Value::Null),
            (xlsx, &json!("Repairs Q3")),
            (xlsx, &json!("Read me")),
            (xlsx, &json!("Water points")),
        ]
    );

    let created = diff(&["--new", path(&new)]);
    assert_eq!(
        types(&created),
        [
            "dataset-created",
            "resource-created",
            "resource-created",
            "resource-created"
        ]
    );
    let same = diff(&["--old", path(&new), "--new", path(&new)]);
    assert!(same.is_empty());

    let bad = bin()
        .args(["events", "diff", "--new", "/nonexistent.json"])
        .output()
        .expect("run");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/nonexistent.json"));
}

/// The shared fixture pair (real HDX dicts) diffs to the five events the old service gave, where
/// the machine has the shared fixtures (ignored elsewhere).
#[test]
#[cfg_attr(
    not(shared_fixtures),
    ignore = "needs ../shared/fixtures (the old service's known results)"
)]
fn diff_of_the_fixture_pair_prints_its_five_events() {
    let old = testkit::require_shared_fixture("ckan/dataset_old.json");
    let new = testkit::require_shared_fixture("ckan/dataset_new.json");
    let events = diff(&["--old", path(&old), "--new", path(&new), "--user", "alexg"]);
    assert_eq!(types(&events), testkit::FIXTURE_PAIR_EVENT_TYPES);
    assert!(events.iter().all(|e| e["initiator_user_name"] == "alexg"));
    let created = diff(&["--new", path(&new)]);
    assert_eq!(
        types(&created),
        ["dataset-created", "resource-created", "resource-created"]
    );
}

/// The acceptance path end to end with real processes: Python rq enqueues a pickled job as the
/// old API did, `hdx-jobs work` runs it, a Python consumer reads what `events diff` prints.
#[test]
fn a_worker_process_pushes_what_diff_prints_and_python_reads_it() {
    let queue = TestRedis::new();
    let stream = TestRedis::new();
    let (old_path, new_path) = (sample("dataset_old.json"), sample("dataset_new.json"));
    let read = |p: &PathBuf| -> Value {
        serde_json::from_str(&std::fs::read_to_string(p).expect("read")).expect("json")
    };
    let args = json!([{"username": "alexg", "old_dataset_dict": read(&old_path),
                       "new_dataset_dict": read(&new_path)}]);
    let id = testkit::rq_peer(
        queue.url(),
        &[
            "enqueue",
            "--serializer",
            "pickle",
            "--queue",
            "event_q",
            "--func",
            FUNC,
            "--args",
            &args.to_string(),
        ],
    );
    let output = hdx_jobs(&queue)
        .env("REDIS_STREAM_URL", stream.url())
        .args(["work", "--burst", "event_q"])
        .output()
        .expect("run worker");
    testkit::check(&output, "hdx-jobs work --burst event_q");
    assert_eq!(status(&queue, &id).as_deref(), Some("finished"));

    let count = SAMPLE_TYPES.len().to_string();
    let consumed = testkit::stream_consumer(stream.url(), &["--count", &count]);
    let bodies: Vec<Value> = consumed
        .as_array()
        .expect("list")
        .iter()
        .map(|e| e["body"].clone())
        .collect();
    let printed = diff(&[
        "--old",
        path(&old_path),
        "--new",
        path(&new_path),
        "--user",
        "alexg",
    ]);
    assert_eq!(types(&printed), SAMPLE_TYPES);
    assert_eq!(
        testkit::events_without_time(&bodies),
        testkit::events_without_time(&printed)
    );
}

/// Appends an entry as hdx-redis-lib producers do.
fn xadd(test: &TestRedis, n: usize) -> Value {
    let body = json!({"event_type": "resource-created", "event_time": "2024-01-01T00:00:00",
                      "event_source": "ckan", "dataset_name": format!("ds-{n}")});
    let _: String = test.query(
        redis::cmd("XADD")
            .arg(STREAM)
            .arg("MAXLEN")
            .arg("~")
            .arg(50_000)
            .arg("*")
            .arg("event_type")
            .arg(body["event_type"].as_str().expect("type"))
            .arg("body")
            .arg(body.to_string()),
    );
    body
}

fn pending(test: &TestRedis, group: &str) -> u64 {
    let (count, _, _, _): (u64, Option<String>, Option<String>, redis::Value) =
        test.query(redis::cmd("XPENDING").arg(STREAM).arg(group));
    count
}

/// `hdx-jobs events listen` in the background; killed on drop.
struct Listener {
    child: Child,
    out: PathBuf,
}

impl Listener {
    fn start(stream: &TestRedis, args: &[&str]) -> Self {
        let out = testkit::temp_path("hdx-jobs-listen").with_extension("out");
        let file = std::fs::File::create(&out).expect("output file");
        let child = bin()
            .args(["events", "listen", "--stream-url", stream.url()])
            .args(args)
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .expect("start listener");
        Listener { child, out }
    }

    fn printed(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
        testkit::eventually("listener to exit", WAIT, || {
            self.child.try_wait().ok().flatten()
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.out);
    }
}

#[test]
fn listen_prints_the_wanted_types_and_acknowledges() {
    let stream = TestRedis::new();
    let first = xadd(&stream, 1);
    let _: String = stream.query(
        redis::cmd("XADD")
            .arg(STREAM)
            .arg("*")
            .arg("event_type")
            .arg("dataset-deleted")
            .arg("body")
            .arg(json!({"event_type": "dataset-deleted"}).to_string()),
    );
    let mut listener = Listener::start(&stream, &["--type", "resource-created", "--group", "g"]);
    let later = xadd(&stream, 2);
    let printed = testkit::eventually("two events printed", WAIT, || {
        let printed = listener.printed();
        (printed.len() >= 2).then_some(printed)
    });
    assert_eq!(printed, vec![first, later]);
    testkit::eventually("everything acknowledged", WAIT, || {
        (pending(&stream, "g") == 0).then_some(())
    });
    assert!(listener.terminate().success());
    assert_eq!(listener.printed().len(), 2, "the other type was skipped");
}

/// A webhook that fails leaves the event pending; it is delivered again until the webhook takes
/// it, and only then acknowledged.
#[test]
fn a_failing_webhook_leaves_the_event_pending_and_it_is_delivered_later() {
    let stream = TestRedis::new();
    let hook = FakeServer::start();
    hook.reply("/hook", Reply::status(500));
    let body = xadd(&stream, 1);
    let url = format!("{}/hook", hook.url());
    let _listener = Listener::start(&stream, &["--webhook", &url, "--claim-idle", "0.3"]);

    let attempts = hook.wait_for("/hook", 2, WAIT);
    assert_eq!(attempts[0].json(), json!({"events": [body]}));
    assert_eq!(
        attempts[1].json(),
        attempts[0].json(),
        "the same event again"
    );
    assert_eq!(pending(&stream, "default_group"), 1, "not acknowledged");

    hook.reply("/hook", Reply::json(json!({"ok": true})));
    testkit::eventually("the event to be acknowledged", WAIT, || {
        (pending(&stream, "default_group") == 0).then_some(())
    });
    let all = hook.requests_to("/hook");
    assert!(all.iter().all(|r| r.json() == json!({"events": [body]})));
    assert_eq!(all[0].header("content-type"), Some("application/json"));
}

/// A listener killed while delivering loses nothing: another consumer of the group claims the
/// unacknowledged event once idle, and every event reaches the webhook.
#[test]
fn killing_the_listener_loses_no_event() {
    let stream = TestRedis::new();
    let hook = FakeServer::start();
    hook.reply_once(
        "/hook",
        Reply::json(json!({})).delay(Duration::from_secs(20)),
    );
    let url = format!("{}/hook", hook.url());
    let mut sent: Vec<Value> = (0..3).map(|n| xadd(&stream, n)).collect();

    let mut doomed = Listener::start(
        &stream,
        &["--webhook", &url, "--consumer", "a", "--claim-idle", "1"],
    );
    hook.wait_for("/hook", 1, WAIT);
    doomed.child.kill().expect("SIGKILL");
    doomed.child.wait().expect("reaped");
    assert_eq!(
        pending(&stream, "default_group"),
        3,
        "the events it had read stayed pending"
    );
    sent.extend((3..5).map(|n| xadd(&stream, n)));

    let _survivor = Listener::start(
        &stream,
        &["--webhook", &url, "--consumer", "b", "--claim-idle", "1"],
    );
    testkit::eventually("every event delivered and acknowledged", WAIT, || {
        let delivered: HashSet<String> = hook
            .requests_to("/hook")
            .iter()
            .skip(1)
            .map(|r| r.json()["events"][0].to_string())
            .collect();
        let all: HashSet<String> = sent.iter().map(Value::to_string).collect();
        (delivered == all && pending(&stream, "default_group") == 0).then_some(())
    });
}
