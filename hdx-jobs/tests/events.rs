//! Change events against the project's CKAN sample pair (`samples/ckan`), real Redis and the real
//! Python rq: what the detector finds, what a job enqueued like the old API did pushes, what a
//! Python consumer reads from the stream, and that Redis failures during the push never lose or
//! duplicate events. The shared fixture pair's known result is checked too where the machine
//! has the shared fixtures.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hdx_jobs::events::bus::{EventBus, EventBusOptions, PUSH_SCRIPT};
use hdx_jobs::events::consumer::{
    Consumer, ConsumerOptions, EventHandler, HandlerError, StreamEvent,
};
use hdx_jobs::events::{detect_changes, event_time_now, DetectChanges, DETECT_CHANGES};
use hdx_jobs::retry::Backoff;
use hdx_jobs::rq::worker::WorkerOptions;
use hdx_jobs::task::TaskRegistry;
use serde_json::{json, Value};
use testkit::{redis, PrivateRedis, TestRedis};

const WAIT: Duration = Duration::from_secs(30);
const STREAM: &str = "hdx_event_stream";

fn read_json(path: &std::path::Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// A dataset dict of the project's sample pair (`samples/ckan/<name>`).
fn sample(name: &str) -> Value {
    read_json(&testkit::sample(&format!("ckan/{name}")))
}

/// The sample pair: (old, new).
fn sample_pair() -> (Value, Value) {
    (sample("dataset_old.json"), sample("dataset_new.json"))
}

/// The shared fixture pair (real HDX dicts); only tests ignored without `cfg(shared_fixtures)`
/// call it.
fn shared_pair() -> (Value, Value) {
    let old = testkit::require_shared_fixture("ckan/dataset_old.json");
    let new = testkit::require_shared_fixture("ckan/dataset_new.json");
    (read_json(&old), read_json(&new))
}

/// How many events the sample pair gives (checked one by one in
/// `the_sample_pair_gives_exactly_its_nine_events`).
const SAMPLE_EVENTS: usize = testkit::SAMPLE_PAIR_EVENT_TYPES.len();

fn detect(old: &Value, new: &Value) -> Vec<Value> {
    detect_changes(&json!("alexg"), old, new, &event_time_now())
        .expect("detect")
        .iter()
        .map(|e| e.to_json())
        .collect()
}

fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap_or("").to_string())
        .collect()
}

fn fields(event: &Value) -> Vec<String> {
    event["changed_fields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| f["field"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn bus(url: &str) -> Arc<EventBus> {
    Arc::new(
        EventBus::new(EventBusOptions {
            url: url.to_string(),
            stream: STREAM.into(),
            maxlen: 50_000,
            marker_ttl: Duration::from_secs(600),
            timeout: Duration::from_secs(5),
            // Three attempts, 50 and 100 ms apart.
            retry: Backoff {
                attempts: 3,
                base: Duration::from_millis(50),
                max: Duration::from_millis(100),
                jitter: false,
            },
        })
        .expect("bus"),
    )
}

fn registry(bus: Arc<EventBus>) -> TaskRegistry {
    let mut tasks = TaskRegistry::with_builtins();
    tasks.register(DETECT_CHANGES, DetectChanges::new(bus));
    tasks
}

/// The job argument the old API enqueued: one dict.
fn job_args(old: &Value, new: &Value) -> String {
    json!([{"username": "alexg", "old_dataset_dict": old, "new_dataset_dict": new}]).to_string()
}

/// Enqueues like the old Flask API: Python rq, pickle, `event_q`.
fn enqueue_like_the_old_api(queue_url: &str, args: &str, extra: &[&str]) -> String {
    let mut all = vec![
        "enqueue",
        "--serializer",
        "pickle",
        "--queue",
        "event_q",
        "--func",
        DETECT_CHANGES,
        "--args",
        args,
    ];
    all.extend_from_slice(extra);
    testkit::rq_peer(queue_url, &all)
}

fn xlen(url: &str) -> u64 {
    let mut conn = redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .expect("connect");
    redis::cmd("XLEN")
        .arg(STREAM)
        .query(&mut conn)
        .expect("XLEN")
}

/// The bodies a Python consumer (XREADGROUP, json.loads(body)) reads.
fn python_reads(url: &str, count: usize) -> Vec<Value> {
    let read = testkit::stream_consumer(url, &["--count", &count.to_string()]);
    read.as_array()
        .expect("list")
        .iter()
        .map(|entry| {
            assert_eq!(entry["event_type"], entry["body"]["event_type"]);
            entry["body"].clone()
        })
        .collect()
}

const SAMPLE_ID: &str = "4f6c2a1e-9d3b-4c7a-b8e2-1a5d7c3f9e60";
const CSV_ID: &str = "0c1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d5e";
const GEOJSON_ID: &str = "6e5d4c3b-2a19-4f8e-9d7c-6b5a4f3e2d1c";
const XLSX_ID: &str = "a7b8c9d0-e1f2-4a3b-8c4d-5e6f7a8b9c0d";
const SHP_ID: &str = "d3c2b1a0-9f8e-4d7c-a6b5-c4d3e2f1a0b9";

/// A download URL of the sample dataset.
fn sample_url(resource_id: &str, file: &str) -> String {
    format!("https://hdx.example.org/dataset/{SAMPLE_ID}/resource/{resource_id}/download/{file}")
}

/// A scalar change whose display values are the values themselves.
fn plain(field: &str, old: Value, new: Value) -> Value {
    shown(field, old.clone(), old, new.clone(), new)
}

/// A scalar change with its display values.
fn shown(field: &str, old: Value, old_shown: Value, new: Value, new_shown: Value) -> Value {
    json!({"field": field, "new_value": new, "new_display_value": new_shown,
           "old_value": old, "old_display_value": old_shown})
}

/// An event of the sample pair (without `event_time`): the run's fields, plus the resource's
/// and the sheet's when given.
fn sample_event(
    event_type: &str,
    changed_fields: Value,
    resource: Option<(&str, &str)>,
    sheet: Option<&str>,
) -> Value {
    let mut event = json!({
        "event_type": event_type, "event_source": "ckan", "initiator_user_name": "alexg",
        "dataset_name": "norvale-water-points",
        "dataset_title": "Norvale Province: Community Water Points", "dataset_id": SAMPLE_ID,
        "changed_fields": changed_fields, "org_id": "b2e7d4c1-6a3f-4e8b-9c05-7f1a2d3e4b5c",
        "org_name": "fictional-relief-network", "org_title": "Fictional Relief Network"
    });
    if let Some((name, id)) = resource {
        event["resource_name"] = json!(name);
        event["resource_id"] = json!(id);
    }
    if let Some(sheet) = sheet {
        event["sheet_id"] = json!(sheet);
    }
    event
}

/// The sample pair (samples/README.md, "CKAN dataset pair") gives exactly these events, in this
/// order, with these fields, values and display values: every event type of an edit. What the
/// pair also changes gives nothing: a formatting-only edit of `caveats` (Markdown), a tag
/// outside HDX's vocabulary, and untracked fields (sizes, timestamps, licence title and URL).
#[test]
fn the_sample_pair_gives_exactly_its_nine_events() {
    let (old, new) = sample_pair();
    let events = detect(&old, &new);
    assert_eq!(types(&events), testkit::SAMPLE_PAIR_EVENT_TYPES);
    let notes_before = "Locations and operational status of community water points (hand pumps, \
        boreholes and tap stands) in Norvale Province, collected by the field teams of the \
        Fictional Relief Network. Each row is one water point with its coordinates, type, \
        functionality and the date of the last visit.";
    let notes_after = format!(
        "{notes_before} Since July 2024 the survey also records the repairs made at each point."
    );
    let csv = ("norvale-water-points.csv", CSV_ID);
    let xlsx = ("norvale-water-point-survey-2024.xlsx", XLSX_ID);
    let expected = vec![
        sample_event(
            "dataset-metadata-changed",
            json!([
                plain("notes", json!(notes_before), json!(notes_after)),
                shown(
                    "dataset_date",
                    json!("[2024-01-01T00:00:00 TO 2024-06-30T23:59:59]"),
                    json!("January 01, 2024 to June 30, 2024"),
                    json!("[2024-01-01T00:00:00 TO *]"),
                    json!("January 01, 2024 to *")
                ),
                shown(
                    "data_update_frequency",
                    json!("30"),
                    json!("Every month"),
                    json!("90"),
                    json!("Every three months")
                ),
                shown(
                    "license_id",
                    json!("cc-by"),
                    json!("Creative Commons Attribution International"),
                    json!("cc-by-igo"),
                    json!("Creative Commons Attribution for Intergovernmental Organisations")
                ),
                {"field": "groups", "added_items": ["mrw"], "removed_items": ["srv"]},
                {"field": "tags", "added_items": ["drought"],
                 "removed_items": ["facilities-infrastructure"]}
            ]),
            None,
            None,
        ),
        sample_event(
            "resource-deleted",
            json!([
                plain("name", json!("norvale-water-points.geojson"), json!(null)),
                plain("format", json!("GeoJSON"), json!(null)),
                plain(
                    "description",
                    json!("The same water points as GeoJSON points (WGS 84)."),
                    json!("")
                ),
                shown(
                    "microdata",
                    json!(false),
                    json!("does not contain microdata"),
                    json!(null),
                    json!("does not contain microdata")
                ),
                plain("resource_type", json!("file.upload"), json!(null)),
                plain(
                    "url",
                    json!(sample_url(GEOJSON_ID, "norvale-water-points.geojson")),
                    json!(null)
                )
            ]),
            Some(("norvale-water-points.geojson", GEOJSON_ID)),
            None,
        ),
        sample_event(
            "resource-created",
            json!([
                plain("name", json!(null), json!("norvale-water-points-shp.zip")),
                plain("format", json!(null), json!("SHP")),
                plain(
                    "description",
                    json!(""),
                    json!(
                        "The water points as a zipped shapefile (points, WGS 84), replacing \
                         the GeoJSON."
                    )
                ),
                shown(
                    "microdata",
                    json!(null),
                    json!("does not contain microdata"),
                    json!(false),
                    json!("does not contain microdata")
                ),
                plain("resource_type", json!(null), json!("file.upload")),
                plain(
                    "url",
                    json!(null),
                    json!(sample_url(SHP_ID, "norvale-water-points-shp.zip"))
                )
            ]),
            Some(("norvale-water-points-shp.zip", SHP_ID)),
            None,
        ),
        sample_event(
            "resource-data-changed",
            json!([plain(
                "last_modified",
                json!("2024-06-30T18:02:11.402913"),
                json!("2024-09-30T17:45:03.118204")
            )]),
            Some(csv),
            None,
        ),
        sample_event(
            "resource-data-changed",
            json!([plain(
                "last_modified",
                json!("2024-06-30T18:05:12.887415"),
                json!("2024-09-30T17:46:55.061733")
            )]),
            Some(xlsx),
            None,
        ),
        sample_event(
            "resource-metadata-changed",
            json!([
                plain(
                    "name",
                    json!("norvale-water-point-survey-2024-h1.xlsx"),
                    json!("norvale-water-point-survey-2024.xlsx")
                ),
                plain(
                    "description",
                    json!(
                        "Survey workbook for the first half of 2024: the Water points sheet \
                         and a Read me sheet."
                    ),
                    json!(
                        "Survey workbook for 2024, updated every quarter: the Water points \
                         sheet and the Repairs Q3 sheet."
                    )
                ),
                plain(
                    "url",
                    json!(sample_url(
                        XLSX_ID,
                        "norvale-water-point-survey-2024-h1.xlsx"
                    )),
                    json!(sample_url(XLSX_ID, "norvale-water-point-survey-2024.xlsx"))
                )
            ]),
            Some(xlsx),
            None,
        ),
        sample_event(
            "spreadsheet-sheet-created",
            Value::Null,
            Some(xlsx),
            Some("Repairs Q3"),
        ),
        sample_event(
            "spreadsheet-sheet-deleted",
            Value::Null,
            Some(xlsx),
            Some("Read me"),
        ),
        sample_event(
            "spreadsheet-sheet-changed",
            json!([
                plain("nrows", json!(412), json!(538)),
                plain("ncols", json!(9), json!(10)),
                plain(
                    "header_hash",
                    json!("3f1c9a7e5b2d4c6a8e0f1a2b3c4d5e6f"),
                    json!("b4e2d8f6a0c1e3b5d7f9a2c4e6b8d0f1")
                ),
                plain(
                    "hashtag_hash",
                    json!("9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d"),
                    json!("2e4c6a8b0d1f3e5a7c9b1d3f5a7c9e0b")
                )
            ]),
            Some(xlsx),
            Some("Water points"),
        ),
    ];
    let events = testkit::events_without_time(&events);
    assert_eq!(events.len(), expected.len());
    for (i, (got, want)) in events.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "event {i} ({})", want["event_type"]);
    }
    // The same pair the other way round undoes it: the dataset's changes swap sides, the created
    // and deleted resources swap, and the sheets' history (only the new dict's is read) gives
    // no sheet events.
    let back = detect(&new, &old);
    assert_eq!(
        types(&back),
        [
            "dataset-metadata-changed",
            "resource-deleted",
            "resource-created",
            "resource-data-changed",
            "resource-data-changed",
            "resource-metadata-changed"
        ]
    );
    assert_eq!(
        back[0]["changed_fields"][4],
        json!({"field": "groups", "added_items": ["srv"], "removed_items": ["mrw"]})
    );
    assert_eq!(back[1]["resource_id"], SHP_ID);
    assert_eq!(back[2]["resource_id"], GEOJSON_ID);
    assert!(
        detect(&new, &new).is_empty(),
        "a dict against itself: nothing"
    );
}

/// The shared fixture pair (real HDX dicts) gives the five events the old service gave, where the
/// machine has the shared fixtures (ignored elsewhere).
#[test]
#[cfg_attr(
    not(shared_fixtures),
    ignore = "needs ../shared/fixtures (the old service's known results)"
)]
fn the_fixture_pair_gives_exactly_the_five_events() {
    let (old, new) = shared_pair();
    let events = detect(&old, &new);
    assert_eq!(types(&events), testkit::FIXTURE_PAIR_EVENT_TYPES);
    let mut dataset_fields = fields(&events[0]);
    dataset_fields.sort();
    assert_eq!(
        dataset_fields,
        ["data_update_frequency", "groups", "notes", "tags"]
    );
    let changed: Vec<&Value> = events[0]["changed_fields"]
        .as_array()
        .expect("list")
        .iter()
        .collect();
    let by_field = |name: &str| {
        *changed
            .iter()
            .find(|f| f["field"] == name)
            .expect("field present")
    };
    assert_eq!(
        by_field("groups"),
        &json!({"field": "groups", "added_items": ["bel"], "removed_items": []})
    );
    assert_eq!(
        by_field("tags"),
        &json!({"field": "tags", "added_items": [], "removed_items": ["geodata"]})
    );
    assert_eq!(
        by_field("data_update_frequency")["old_display_value"],
        "Every month"
    );
    assert_eq!(
        by_field("notes")["new_value"],
        "This is a test dataset. (MODIFIED)"
    );
    assert_eq!(events[1]["resource_name"], "belgium.geojson");
    assert_eq!(events[2]["resource_name"], "belgium2.geojson");
    assert_eq!(events[3]["resource_name"], "test2.csv");
    assert_eq!(fields(&events[3]), ["last_modified"]);
    assert_eq!(events[4]["resource_name"], "test2.csv");
    assert_eq!(fields(&events[4]), ["name", "description"]);
    for event in &events {
        assert_eq!(event["dataset_name"], "search-test-dataset-1");
        assert_eq!(event["org_title"], "INNAGO");
        assert_eq!(event["initiator_user_name"], "alexg");
        assert_eq!(event["event_source"], "ckan");
    }
    assert_eq!(
        types(&detect(&json!({}), &new)),
        ["dataset-created", "resource-created", "resource-created"]
    );
}

#[test]
fn a_new_dataset_gives_a_created_event_and_one_per_resource() {
    let events = detect(&json!({}), &sample("dataset_new.json"));
    assert_eq!(
        types(&events),
        [
            "dataset-created",
            "resource-created",
            "resource-created",
            "resource-created"
        ]
    );
    let created = fields(&events[0]);
    for field in ["name", "title", "notes", "owner_org", "groups", "tags"] {
        assert!(
            created.contains(&field.to_string()),
            "{field} in {created:?}"
        );
    }
    let list = |name: &str| {
        events[0]["changed_fields"]
            .as_array()
            .expect("list")
            .iter()
            .find(|f| f["field"] == name)
            .cloned()
            .expect("present")
    };
    assert_eq!(
        list("groups"),
        json!({"field": "groups", "added_items": ["eld", "mrw"], "removed_items": []})
    );
    assert_eq!(
        list("tags"),
        json!({"field": "tags", "removed_items": [],
               "added_items": ["water sanitation and hygiene-wash", "hxl", "drought"]}),
        "only tags of HDX's vocabulary"
    );
    let resources: Vec<&Value> = events[1..].iter().map(|e| &e["resource_id"]).collect();
    assert_eq!(resources, [CSV_ID, XLSX_ID, SHP_ID]);
}

#[test]
fn a_showcase_gives_none() {
    let mut showcase = sample("dataset_new.json");
    showcase["type"] = json!("showcase");
    assert!(detect(&json!({}), &showcase).is_empty());
    let mut old = showcase.clone();
    old["title"] = json!("Before");
    assert!(detect(&old, &showcase).is_empty());
}

#[test]
fn a_markdown_formatting_only_change_of_notes_gives_none() {
    let mut old = sample("dataset_new.json");
    let mut new = old.clone();
    old["notes"] =
        json!("This is a test dataset with **bold** and _italic_ text.\n\nSecond paragraph.");
    new["notes"] =
        json!("This is a test dataset with bold and *italic* text.\nSecond   paragraph.");
    assert!(detect(&old, &new).is_empty());
}

#[test]
fn display_values_as_the_contract_lists() {
    let old = sample("dataset_new.json");
    let mut new = old.clone();
    new["organization"]["id"] = json!("org-2");
    new["organization"]["title"] = json!("Second Org");
    new["subnational"] = json!("0");
    new["dataset_date"] = json!("[2022-03-03T00:00:00 TO 2022-03-10T00:00:00]");
    new["data_update_frequency"] = json!("7");
    new["license_id"] = json!("hdx-multi");
    new["resources"][0]["microdata"] = json!(true);
    let events = detect(&old, &new);
    assert_eq!(
        types(&events),
        ["dataset-metadata-changed", "resource-metadata-changed"]
    );
    let shown: Vec<(String, Value, Value)> = events[0]["changed_fields"]
        .as_array()
        .expect("list")
        .iter()
        .map(|f| {
            (
                f["field"].as_str().unwrap_or("").to_string(),
                f["old_display_value"].clone(),
                f["new_display_value"].clone(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        vec![
            (
                "subnational".into(),
                json!("subnational"),
                json!("not subnational")
            ),
            (
                "owner_org".into(),
                json!("Fictional Relief Network"),
                json!("Second Org")
            ),
            (
                "dataset_date".into(),
                json!("January 01, 2024 to *"),
                json!("March 03, 2022 to March 10, 2022")
            ),
            (
                "data_update_frequency".into(),
                json!("Every three months"),
                json!("Every week")
            ),
            (
                "license_id".into(),
                json!("Creative Commons Attribution for Intergovernmental Organisations"),
                json!("Multiple Licenses")
            ),
        ]
    );
    assert_eq!(
        events[1]["changed_fields"],
        json!([{"field": "microdata", "new_value": true, "new_display_value": "contains microdata",
                "old_value": false, "old_display_value": "does not contain microdata"}])
    );
}

#[test]
fn sheet_events_come_from_a_changed_fs_check_info() {
    let sheet = |name: &str, nrows: u64| {
        json!({"name": name, "nrows": nrows, "ncols": 4,
        "header_hash": "h", "hashtag_hash": null, "has_merged_cells": false})
    };
    let check =
        |sheets: Value| json!({"state": "success", "hxl_proxy_response": {"sheets": sheets}});
    let older = check(json!([sheet("Sheet1", 10), sheet("Removed", 2)]));
    let newer = check(json!([sheet("Sheet1", 12), sheet("Added", 5)]));
    let mut old = sample("dataset_new.json");
    old["resources"][0]["fs_check_info"] = json!(json!([older]).to_string());
    let mut new = old.clone();
    new["resources"][0]["fs_check_info"] = json!(json!([older, newer]).to_string());
    let events = detect(&old, &new);
    assert_eq!(
        types(&events),
        [
            "spreadsheet-sheet-created",
            "spreadsheet-sheet-deleted",
            "spreadsheet-sheet-changed"
        ]
    );
    let sheets: Vec<&Value> = events.iter().map(|e| &e["sheet_id"]).collect();
    assert_eq!(
        sheets,
        [&json!("Added"), &json!("Removed"), &json!("Sheet1")]
    );
    assert_eq!(events[0]["changed_fields"], Value::Null);
    assert_eq!(events[2]["resource_name"], "norvale-water-points.csv");
    assert_eq!(fields(&events[2]), ["nrows"]);
}

/// Pairs of `testkit::ckan_corpus` whose events are recorded in [`VARIED_GOLDEN`].
const VARIED_PAIRS: usize = 600;

/// The recorded events of the first [`VARIED_PAIRS`] corpus pairs, one line per pair: its index,
/// the FNV-1a 64 digest of its serialized events, and their count. Recorded from the detector
/// before its speed-up for varied pairs, so any change in what it emits shows here. Rewrite it,
/// only for a deliberate change of the events, with
/// `HDX_RECORD_GOLDEN=1 cargo test -p hdx-jobs --test events varied`.
const VARIED_GOLDEN: &str = "tests/golden/varied_pairs_events.txt";

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Guards optimizations of the detector: over hundreds of varied pairs (every event type, 1–50
/// resources, Markdown of every length) the serialized events are byte for byte the recorded
/// ones.
#[test]
fn regression_varied_pairs_give_the_recorded_events() {
    use hdx_jobs::events::event::EVENT_TYPES;
    use std::fmt::Write;

    let pairs = testkit::ckan_corpus::varied_pairs(VARIED_PAIRS);
    let mut lines = String::new();
    let mut per_type = [0usize; EVENT_TYPES.len()];
    for (i, pair) in pairs.iter().enumerate() {
        let events = detect_changes(
            &json!("corpus"),
            &pair.old,
            &pair.new,
            "2026-01-01T00:00:00.5",
        )
        .unwrap_or_else(|e| panic!("pair {i} ({:?}): {e}", pair.changes));
        for event in &events {
            let n = EVENT_TYPES.iter().position(|t| *t == event.event_type);
            per_type[n.expect("a known type")] += 1;
        }
        let text = serde_json::to_string(&events).expect("json");
        writeln!(
            lines,
            "{i} {:016x} {}",
            fnv1a(text.as_bytes()),
            events.len()
        )
        .expect("write");
    }

    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(VARIED_GOLDEN);
    if std::env::var_os("HDX_RECORD_GOLDEN").is_some() {
        std::fs::write(&path, &lines).expect("record the golden events");
        return;
    }
    let golden = std::fs::read_to_string(&path).expect("the golden events");
    let differing: Vec<String> = golden
        .lines()
        .zip(lines.lines())
        .enumerate()
        .filter(|(_, (want, got))| want != got)
        .map(|(i, (want, got))| format!("pair {i} {:?}: want {want}, got {got}", pairs[i].changes))
        .collect();
    assert!(
        differing.is_empty() && golden.lines().count() == VARIED_PAIRS,
        "{} of {VARIED_PAIRS} pairs give other events than recorded:\n{}",
        differing.len(),
        differing.join("\n")
    );
    for (event_type, count) in EVENT_TYPES.iter().zip(per_type) {
        assert!(count > 0, "the corpus gives no {event_type} event");
    }
}

/// The acceptance test: a job pickled by Python rq like the old API enqueued it runs on the Rust
/// worker; a Python consumer reads events equal to what the detector (`events diff`) gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pickled_job_pushes_events_python_consumers_read() {
    let queue = TestRedis::new();
    let stream = TestRedis::new();
    let (old, new) = sample_pair();
    let id = enqueue_like_the_old_api(queue.url(), &job_args(&old, &new), &[]);

    let options = WorkerOptions {
        burst: true,
        ..fast_options(&["event_q"])
    };
    let report = start_worker(&client(&queue), registry(bus(stream.url())), options)
        .join()
        .await;
    assert_eq!((report.succeeded, report.failed), (1, 0));

    let job = testkit::rq_peer_json(queue.url(), &["fetch", &id, "--serializer", "pickle"]);
    assert_eq!(job["status"], "finished", "{job}");
    let returned = job["return_value"].as_array().expect("events returned");
    assert_eq!(returned.len(), SAMPLE_EVENTS);

    let read = python_reads(stream.url(), SAMPLE_EVENTS);
    assert_eq!(
        testkit::events_without_time(&read),
        testkit::events_without_time(&detect(&old, &new))
    );
    assert_eq!(
        testkit::events_without_time(&read),
        testkit::events_without_time(returned)
    );
    assert_eq!(xlen(stream.url()), SAMPLE_EVENTS as u64);
    // The wire format of hdx-redis-lib: fields event_type then body.
    let entries: Vec<(String, Vec<String>)> =
        stream.query(redis::cmd("XRANGE").arg(STREAM).arg("-").arg("+"));
    let types_and_bodies: Vec<(String, Value)> = entries
        .iter()
        .map(|(_, fields)| {
            assert_eq!(
                (fields[0].as_str(), fields[2].as_str()),
                ("event_type", "body")
            );
            (
                fields[1].clone(),
                serde_json::from_str(&fields[3]).expect("body"),
            )
        })
        .collect();
    assert_eq!(types_and_bodies[0].0, "dataset-metadata-changed");
    let expected: Vec<(String, Value)> = read
        .iter()
        .map(|body| {
            (
                body["event_type"].as_str().expect("type").to_string(),
                body.clone(),
            )
        })
        .collect();
    assert_eq!(types_and_bodies, expected);
}

/// A job that runs again under the same id (RQ's retries, a requeue) appends nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_of_the_same_job_appends_nothing_twice() {
    let queue = TestRedis::new();
    let stream = TestRedis::new();
    let (old, new) = sample_pair();
    let args = job_args(&old, &new);
    let bus = bus(stream.url());
    for _ in 0..2 {
        enqueue_like_the_old_api(queue.url(), &args, &["--id", "same-job"]);
        let options = WorkerOptions {
            burst: true,
            ..fast_options(&["event_q"])
        };
        let report = start_worker(&client(&queue), registry(bus.clone()), options)
            .join()
            .await;
        assert_eq!(report.succeeded, 1);
        assert_eq!(xlen(stream.url()), SAMPLE_EVENTS as u64);
    }
    // A different job with the same dicts is a different run.
    enqueue_like_the_old_api(queue.url(), &args, &[]);
    let options = WorkerOptions {
        burst: true,
        ..fast_options(&["event_q"])
    };
    start_worker(&client(&queue), registry(bus), options)
        .join()
        .await;
    assert_eq!(xlen(stream.url()), 2 * SAMPLE_EVENTS as u64);
}

/// The stream Redis is down when the job runs: the job fails as retryable (after its in-task
/// retries), RQ schedules the retry, and once Redis is back the events land exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_outage_makes_the_job_retry_without_duplicates() {
    let queue = TestRedis::new();
    let mut stream = PrivateRedis::start();
    let (old, new) = sample_pair();
    stream.stop();

    let id = enqueue_like_the_old_api(
        queue.url(),
        &job_args(&old, &new),
        &["--retry", "5", "--interval", "1"],
    );
    let options = WorkerOptions {
        with_scheduler: true,
        ..fast_options(&["event_q"])
    };
    let worker = start_worker(&client(&queue), registry(bus(&stream.url())), options);
    wait_status(&queue, &id, "scheduled", WAIT).await;
    assert_eq!(job_hash(&queue, &id)["retries_left"], "4", "one retry used");

    stream.restart();
    wait_status(&queue, &id, "finished", WAIT).await;
    worker.stop().await;
    assert_eq!(xlen(&stream.url()), SAMPLE_EVENTS as u64);
    let read = python_reads(&stream.url(), SAMPLE_EVENTS);
    assert_eq!(
        testkit::events_without_time(&read),
        testkit::events_without_time(&detect(&old, &new))
    );
}

/// A TCP proxy to Redis that, once, swallows the reply to a script call and closes the client's
/// connection, while Redis has run the script: the push succeeded but the pusher saw a failure.
struct ReplyCutter {
    port: u16,
    cuts: Arc<AtomicUsize>,
}

impl ReplyCutter {
    fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let armed = Arc::new(AtomicBool::new(true));
        let cuts = Arc::new(AtomicUsize::new(0));
        let (upstream, thread_armed, thread_cuts) =
            (upstream.to_string(), armed.clone(), cuts.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let script_sent = Arc::new(AtomicBool::new(false));
                let (mut c_in, mut s_out) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                let seen = script_sent.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n) = c_in.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        if buf[..n]
                            .windows(7)
                            .any(|w| w.eq_ignore_ascii_case(b"EVALSHA"))
                        {
                            seen.store(true, Ordering::SeqCst);
                        }
                        if s_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
                let (armed, cuts) = (thread_armed.clone(), thread_cuts.clone());
                let (mut s_in, mut c_out) = (server, client);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n) = s_in.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        if script_sent.load(Ordering::SeqCst) && armed.swap(false, Ordering::SeqCst)
                        {
                            cuts.fetch_add(1, Ordering::SeqCst);
                            let _ = c_out.shutdown(Shutdown::Both);
                            break;
                        }
                        if c_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        ReplyCutter { port, cuts }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_whose_reply_was_lost_is_not_appended_again() {
    let stream = TestRedis::new();
    let _: String = stream.query(redis::cmd("SCRIPT").arg("LOAD").arg(PUSH_SCRIPT));
    let upstream = testkit::redis_base_url()
        .trim_start_matches("redis://")
        .to_string();
    let cutter = ReplyCutter::start(&upstream);
    let bus = bus(&format!("redis://127.0.0.1:{}/{}", cutter.port, stream.db));
    let (old, new) = sample_pair();
    let events = detect_changes(&json!("alexg"), &old, &new, &event_time_now()).expect("detect");
    assert_eq!(events.len(), SAMPLE_EVENTS);

    let outcome = bus.push("job-1", &events).await.expect("push");
    assert_eq!(
        cutter.cuts.load(Ordering::SeqCst),
        1,
        "the first reply was cut"
    );
    assert!(
        !outcome.appended,
        "the retry found the first attempt's events in place"
    );
    assert_eq!(xlen(stream.url()), SAMPLE_EVENTS as u64);
    let ids: Vec<String> = {
        let reply: redis::streams::StreamRangeReply =
            stream.query(redis::cmd("XRANGE").arg(STREAM).arg("-").arg("+"));
        reply.ids.into_iter().map(|e| e.id).collect()
    };
    assert_eq!(outcome.ids, ids);
    let again = bus.push("job-1", &events).await.expect("push");
    assert!(!again.appended);
    assert_eq!(xlen(stream.url()), SAMPLE_EVENTS as u64);
    assert!(bus.push("job-2", &events).await.expect("push").appended);
    assert_eq!(xlen(stream.url()), 2 * SAMPLE_EVENTS as u64);
}

/// A handler that records events and fails while `failing` is set.
struct Recorder {
    seen: std::sync::Mutex<Vec<Value>>,
    failing: AtomicBool,
}

#[async_trait::async_trait]
impl EventHandler for Recorder {
    async fn handle(&self, event: &StreamEvent) -> Result<(), HandlerError> {
        self.seen.lock().expect("seen").push(event.body.clone());
        if self.failing.load(Ordering::SeqCst) {
            Err(HandlerError("down".into()))
        } else {
            Ok(())
        }
    }
}

fn consumer(url: &str, name: &str, claim_idle: Duration) -> Consumer {
    Consumer::new(ConsumerOptions {
        url: url.to_string(),
        stream: STREAM.into(),
        group: "default_group".into(),
        consumer: name.into(),
        types: Vec::new(),
        batch: 10,
        block: Duration::from_millis(200),
        claim_idle,
    })
    .expect("consumer")
}

/// The library consumer: a failed event comes back after the idle time, a restart under the same
/// name resumes its own pending events at once, and unreadable entries never block the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_library_delivers_at_least_once() {
    let stream = TestRedis::new();
    let (old, new) = sample_pair();
    let events = detect_changes(&json!("alexg"), &old, &new, &event_time_now()).expect("detect");
    let n = events.len();
    assert_eq!(n, SAMPLE_EVENTS);
    // The unreadable entry first: by the time the events are seen, it has been dropped.
    let _: String = stream.query(
        redis::cmd("XADD")
            .arg(STREAM)
            .arg("*")
            .arg("event_type")
            .arg("x")
            .arg("body")
            .arg("{not json"),
    );
    bus(stream.url()).push("job", &events).await.expect("push");
    let expected: Vec<Value> = events.iter().map(|e| e.to_json()).collect();

    // First life: the handler fails; every event stays pending, the bad entry is dropped.
    let down = Arc::new(Recorder {
        seen: Default::default(),
        failing: AtomicBool::new(true),
    });
    let stop = tokio_util::sync::CancellationToken::new();
    let first = consumer(stream.url(), "c1", Duration::from_secs(3600));
    let run = {
        let (down, stop) = (down.clone(), stop.clone());
        tokio::spawn(async move { first.run(down.as_ref(), stop).await })
    };
    testkit::eventually_async("every event delivered and failed", WAIT, || {
        (down.seen.lock().expect("seen").len() >= n).then_some(())
    })
    .await;
    stop.cancel();
    let stats = run.await.expect("join");
    assert_eq!(
        (stats.handled, stats.failed, stats.dropped),
        (0, n as u64, 1)
    );

    // Same name again, with a long claim idle: its own pending events come back at once.
    let up = Arc::new(Recorder {
        seen: Default::default(),
        failing: AtomicBool::new(false),
    });
    let stop = tokio_util::sync::CancellationToken::new();
    let second = consumer(stream.url(), "c1", Duration::from_secs(3600));
    let run = {
        let (up, stop) = (up.clone(), stop.clone());
        tokio::spawn(async move { second.run(up.as_ref(), stop).await })
    };
    testkit::eventually_async("the pending events handled", WAIT, || {
        (up.seen.lock().expect("seen").len() >= n).then_some(())
    })
    .await;
    stop.cancel();
    let stats = run.await.expect("join");
    assert_eq!(stats.handled, n as u64);
    assert_eq!(*up.seen.lock().expect("seen"), expected);
    let (pending, _, _, _): (u64, Option<String>, Option<String>, redis::Value) =
        stream.query(redis::cmd("XPENDING").arg(STREAM).arg("default_group"));
    assert_eq!(pending, 0);

    // Another consumer name claims events left by a failing one after the idle time.
    bus(stream.url())
        .push("job-2", &events[..1])
        .await
        .expect("push");
    let flaky = Arc::new(Recorder {
        seen: Default::default(),
        failing: AtomicBool::new(true),
    });
    let stop = tokio_util::sync::CancellationToken::new();
    let third = consumer(stream.url(), "c3", Duration::from_millis(300));
    let run = {
        let (flaky, stop) = (flaky.clone(), stop.clone());
        tokio::spawn(async move { third.run(flaky.as_ref(), stop).await })
    };
    testkit::eventually_async("a failed delivery", WAIT, || {
        (!flaky.seen.lock().expect("seen").is_empty()).then_some(())
    })
    .await;
    flaky.failing.store(false, Ordering::SeqCst);
    testkit::eventually_async("the claimed retry", WAIT, || {
        (flaky.seen.lock().expect("seen").len() >= 2).then_some(())
    })
    .await;
    stop.cancel();
    let stats = run.await.expect("join");
    assert_eq!(stats.handled, 1);
    assert!(stats.failed >= 1 && stats.claimed >= 1, "{stats:?}");
}
