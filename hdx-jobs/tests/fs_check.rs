//! The file-structure check against a local server playing the HXL proxy and CKAN: what CKAN
//! receives (sheet created, deleted, changed), and how failures of either service end the job.

mod common;

use std::time::Duration;

use common::*;
use hdx_jobs::config::Config;
use hdx_jobs::fs_check::{FsCheck, FsCheckArgs, FS_CHECK};
use hdx_jobs::rq::worker::WorkerOptions;
use hdx_jobs::task::{ErrorKind, JobContext, Task, TaskError};
use serde_json::{json, Value};
use testkit::http::{FakeServer, Reply};
use testkit::TestRedis;
use tokio_util::sync::CancellationToken;

const SOURCE_INFO: &str = "/hxlproxy/api/source-info";
const REVISE: &str = "/api/action/hdx_fs_check_resource_revise";

/// The worker's configuration: CKAN at `server`, whose HXL proxy stand-in is local too, so
/// the local addresses are allowed explicitly (`HDX_OUTBOUND_ALLOW`).
fn config(server: &FakeServer, key: Option<&str>) -> Config {
    config_with(server, key, &[("HDX_OUTBOUND_ALLOW", "127.0.0.1")])
}

fn config_with(server: &FakeServer, key: Option<&str>, extra: &[(&str, &str)]) -> Config {
    let base = format!("{}/api/action", server.url());
    let key = key.map(str::to_string);
    Config::from_lookup(|name| match name {
        "CKAN_API_BASE_URL" => Some(base.clone()),
        "HDX_FSCHECK_API_KEY" => key.clone(),
        "HDX_USER_AGENT" => Some("HDX-WORKER".into()),
        _ => extra
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string()),
    })
    .expect("config")
}

fn sheet(name: &str, nrows: u64, ncols: u64) -> Value {
    json!({"name": name, "is_hidden": false, "nrows": nrows, "ncols": ncols,
           "has_merged_cells": false, "is_hxlated": false,
           "header_hash": "af80aeac4770a319cb666f752149143e", "hashtag_hash": null})
}

fn proxy_answer(sheets: Value) -> Value {
    json!({"url_or_filename": "https://data.example/some.xlsx", "format": "XLSX", "sheets": sheets})
}

/// A resource's check history whose last success saw `sheets`.
fn history(sheets: Value) -> String {
    json!([
        {"state": "success", "message": "File structure check completed",
         "timestamp": "2023-04-01T00:00:00", "hxl_proxy_response": proxy_answer(json!([sheet("Ancient", 1, 1)]))},
        {"state": "success", "message": "File structure check completed",
         "timestamp": "2023-04-07T04:00:48.495831", "hxl_proxy_response": proxy_answer(sheets)},
        {"state": "failure", "message": "later failure"}
    ])
    .to_string()
}

fn args(server: &FakeServer, fs_check_info: Option<String>) -> FsCheckArgs {
    serde_json::from_value(json!({
        "dataset_id": "d-1",
        "resource_id": "r-1",
        "hxl_proxy_source_info_url": format!("{}{SOURCE_INFO}?url=https%3A%2F%2Fdata.example%2Fsome.xlsx", server.url()),
        "fs_check_info": fs_check_info,
    }))
    .expect("args")
}

async fn run(
    server: &FakeServer,
    key: Option<&str>,
    args: FsCheckArgs,
) -> Result<Value, TaskError> {
    run_with(&config(server, key), args).await
}

async fn run_with(config: &Config, args: FsCheckArgs) -> Result<Value, TaskError> {
    let ctx = JobContext::detached(FS_CHECK, CancellationToken::new());
    FsCheck::new(config).run(&ctx, args).await
}

/// The value CKAN received.
fn posted(server: &FakeServer) -> Value {
    let requests = server.requests_to(REVISE);
    assert_eq!(requests.len(), 1, "one call to CKAN");
    requests[0].json()
}

/// The acceptance path: a job pickled by Python rq with the old API's arguments runs on the Rust
/// worker, which posts the check with sheet changes to CKAN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_from_the_old_api_posts_the_check_with_sheet_changes() {
    let queue = TestRedis::new();
    let server = FakeServer::start();
    let answer = proxy_answer(json!([sheet("Sheet1", 17, 27), sheet("Sheet2", 17, 27)]));
    server.reply(SOURCE_INFO, Reply::json(answer.clone()));
    server.reply(REVISE, Reply::json(json!({"success": true, "result": {}})));
    let job_args = json!([{
        "dataset_id": "d-1",
        "resource_id": "r-1",
        "hxl_proxy_source_info_url": format!("{}{SOURCE_INFO}?url=x", server.url()),
        "ckan_api_base_url": format!("{}/api/action", server.url()),
        "resource_update_action": "hdx_fs_check_resource_revise",
        "verify_ckan_ssl": true,
        "hdx_user_agent": "HDX-API",
        "fs_check_info": history(json!([sheet("Sheet1", 10, 22), sheet("Gone", 3, 3)])),
    }]);
    let id = testkit::rq_peer(
        queue.url(),
        &[
            "enqueue",
            "--serializer",
            "pickle",
            "--queue",
            "fs_check_q",
            "--func",
            FS_CHECK,
            "--args",
            &job_args.to_string(),
        ],
    );
    let tasks = hdx_jobs::hdx::task_registry(&config(&server, Some("fs-key")));
    let options = WorkerOptions {
        burst: true,
        ..fast_options(&["fs_check_q"])
    };
    let report = start_worker(&client(&queue), tasks, options).join().await;
    assert_eq!((report.succeeded, report.failed), (1, 0));
    let job = testkit::rq_peer_json(queue.url(), &["fetch", &id, "--serializer", "pickle"]);
    assert_eq!(job["status"], "finished", "{job}");

    assert_eq!(
        server.requests_to(SOURCE_INFO)[0].query_param("url"),
        Some("x")
    );
    let request = &server.requests_to(REVISE)[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.header("authorization"), Some("fs-key"));
    assert_eq!(request.header("user-agent"), Some("HDX-API"));
    let body = request.json();
    let timestamp = body["value"]["timestamp"]
        .as_str()
        .expect("timestamp")
        .to_string();
    assert!(
        chrono::NaiveDateTime::parse_from_str(&timestamp, "%Y-%m-%dT%H:%M:%S%.f").is_ok(),
        "{timestamp}"
    );
    assert_eq!(
        body,
        json!({
            "id": "r-1",
            "package_id": "d-1",
            "key": "fs_check_info",
            "value": {
                "state": "success",
                "message": "File structure check completed",
                "timestamp": timestamp,
                "sheet_changes": [
                    {"name": "Sheet2", "event_type": "spreadsheet-sheet-created", "changed_fields": ""},
                    {"name": "Gone", "event_type": "spreadsheet-sheet-deleted", "changed_fields": ""},
                    {"name": "Sheet1", "event_type": "spreadsheet-sheet-changed", "changed_fields": [
                        {"field": "nrows", "new_value": 17, "new_display_value": 17, "old_value": 10, "old_display_value": 10},
                        {"field": "ncols", "new_value": 27, "new_display_value": 27, "old_value": 22, "old_display_value": 22}
                    ]}
                ],
                "hxl_proxy_response": answer,
            }
        })
    );
}

#[tokio::test]
async fn sheet_created_deleted_or_changed_alone() {
    let cases = [
        (
            json!([sheet("A", 5, 5)]),
            json!([sheet("A", 5, 5), sheet("B", 1, 2)]),
            json!([{"name": "B", "event_type": "spreadsheet-sheet-created", "changed_fields": ""}]),
        ),
        (
            json!([sheet("A", 5, 5), sheet("B", 1, 2)]),
            json!([sheet("B", 1, 2)]),
            json!([{"name": "A", "event_type": "spreadsheet-sheet-deleted", "changed_fields": ""}]),
        ),
        (
            json!([sheet("A", 5, 5)]),
            json!([{"name": "A", "nrows": 5, "ncols": 5, "has_merged_cells": true,
                    "header_hash": "other", "hashtag_hash": null, "is_hidden": true}]),
            json!([{"name": "A", "event_type": "spreadsheet-sheet-changed", "changed_fields": [
                {"field": "header_hash", "new_value": "other", "new_display_value": "other",
                 "old_value": "af80aeac4770a319cb666f752149143e", "old_display_value": "af80aeac4770a319cb666f752149143e"},
                {"field": "has_merged_cells", "new_value": true, "new_display_value": true,
                 "old_value": false, "old_display_value": false}
            ]}]),
        ),
        (
            json!([sheet("A", 5, 5)]),
            json!([sheet("A", 5, 5)]),
            json!([]),
        ),
    ];
    for (before, now, expected) in cases {
        let server = FakeServer::start();
        server.reply(SOURCE_INFO, Reply::json(proxy_answer(now.clone())));
        run(&server, Some("k"), args(&server, Some(history(before))))
            .await
            .expect("check");
        let value = &posted(&server)["value"];
        assert_eq!(value["sheet_changes"], expected, "now {now}");
        assert_eq!(value["hxl_proxy_response"], proxy_answer(now));
    }
}

#[tokio::test]
async fn a_first_check_has_no_sheet_changes() {
    let server = FakeServer::start();
    server.reply(
        SOURCE_INFO,
        Reply::json(proxy_answer(json!([sheet("A", 1, 1)]))),
    );
    let result = run(&server, Some("k"), args(&server, None))
        .await
        .expect("check");
    assert_eq!(posted(&server)["value"]["sheet_changes"], json!([]));
    assert_eq!(result["sheet_changes"], json!([]));
}

#[tokio::test]
async fn redirects_of_the_proxy_are_followed() {
    let server = FakeServer::start();
    server.reply("/old", Reply::status(302).header("Location", SOURCE_INFO));
    server.reply(SOURCE_INFO, Reply::json(proxy_answer(json!([]))));
    let mut job = args(&server, None);
    job.hxl_proxy_source_info_url = Some(format!("{}/old", server.url()));
    run(&server, Some("k"), job).await.expect("check");
    assert_eq!(
        posted(&server)["value"]["hxl_proxy_response"]["format"],
        "XLSX"
    );
}

#[tokio::test]
async fn failures_of_the_proxy_or_ckan_fail_the_job_and_say_if_a_retry_helps() {
    let expect_error =
        |result: Result<Value, TaskError>, kind: ErrorKind, error_type: &str, text: &str| {
            let e = result.expect_err("fails");
            assert_eq!((e.kind, e.error_type.as_str()), (kind, error_type), "{e}");
            assert!(e.message.contains(text), "{e}");
        };

    let server = FakeServer::start();
    server.reply(SOURCE_INFO, Reply::status(503).body("busy"));
    expect_error(
        run(&server, Some("k"), args(&server, None)).await,
        ErrorKind::Retryable,
        "hxl-proxy",
        "503",
    );
    assert!(
        server.requests_to(REVISE).is_empty(),
        "nothing posted to CKAN"
    );

    let server = FakeServer::start();
    server.reply(SOURCE_INFO, Reply::status(404).body("no such file"));
    expect_error(
        run(&server, Some("k"), args(&server, None)).await,
        ErrorKind::Permanent,
        "hxl-proxy",
        "404",
    );

    let server = FakeServer::start();
    server.reply(SOURCE_INFO, Reply::bytes("<html>not json</html>"));
    expect_error(
        run(&server, Some("k"), args(&server, None)).await,
        ErrorKind::Permanent,
        "hxl-proxy",
        "not JSON",
    );
    assert!(server.requests_to(REVISE).is_empty());

    let server = FakeServer::start();
    server.reply(SOURCE_INFO, Reply::json(proxy_answer(json!([]))));
    server.reply(REVISE, Reply::status(500).body("boom"));
    expect_error(
        run(&server, Some("k"), args(&server, None)).await,
        ErrorKind::Retryable,
        "ckan",
        "500",
    );

    let server = FakeServer::start();
    server.reply(SOURCE_INFO, Reply::json(proxy_answer(json!([]))));
    server.reply(
        REVISE,
        Reply::json(json!({"success": false, "error": {"message": "Not authorized"}}))
            .with_status(403),
    );
    expect_error(
        run(&server, Some("k"), args(&server, None)).await,
        ErrorKind::Permanent,
        "ckan",
        "Not authorized",
    );

    let server = FakeServer::start();
    expect_error(
        run(&server, None, args(&server, None)).await,
        ErrorKind::Permanent,
        "wrong-configuration",
        "api key missing",
    );
    assert!(
        server.requests().is_empty(),
        "nothing fetched without a key"
    );

    let server = FakeServer::start();
    server.reply(
        SOURCE_INFO,
        Reply::json(json!({})).delay(Duration::from_secs(3)),
    );
    let mut slow = args(&server, None);
    slow.timeout_sec = Some(0.5);
    expect_error(
        run(&server, Some("k"), slow).await,
        ErrorKind::Retryable,
        "hxl-proxy",
        "cannot reach",
    );
}

/// The source-info URL comes from the job: it must never reach the worker's loopback or
/// private network, directly, through a name resolving there, or through a redirect; the job
/// fails for good, saying the address is not allowed, and nothing is fetched or posted.
#[tokio::test]
async fn regression_the_source_info_url_never_reaches_internal_addresses() {
    let server = FakeServer::start();
    server.reply(SOURCE_INFO, Reply::json(proxy_answer(json!([]))));
    let closed = config_with(&server, Some("k"), &[]);
    for url in [
        format!("{}{SOURCE_INFO}", server.url()),
        format!("http://localhost:{}{SOURCE_INFO}", server.port()),
        format!("http://[::ffff:127.0.0.1]:{}{SOURCE_INFO}", server.port()),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://192.168.1.1/api/source-info".to_string(),
    ] {
        let mut job = args(&server, None);
        job.hxl_proxy_source_info_url = Some(url.clone());
        let e = run_with(&closed, job).await.expect_err("refused");
        assert_eq!(e.kind, ErrorKind::Permanent, "{url}: {e}");
        assert!(e.message.contains("is not allowed"), "{url}: {e}");
    }
    // Allowed by name, redirecting to a forbidden address.
    let allowed = config_with(&server, Some("k"), &[("HDX_OUTBOUND_ALLOW", "localhost")]);
    let redirector = FakeServer::start();
    redirector.reply(
        "/r",
        Reply::status(302).header("Location", &format!("{}{SOURCE_INFO}", server.url())),
    );
    let mut job = args(&server, None);
    job.hxl_proxy_source_info_url = Some(format!("http://localhost:{}/r", redirector.port()));
    let e = run_with(&allowed, job).await.expect_err("redirect refused");
    assert!(
        e.message
            .contains("the address of 127.0.0.1 is not allowed"),
        "{e}"
    );
    assert_eq!(redirector.requests_to("/r").len(), 1);
    assert!(server.requests().is_empty(), "{:?}", server.requests());
}

/// With `HDX_HXL_PROXY_URL` set, only URLs under it are fetched (and the configured proxy is
/// reachable without being listed in `HDX_OUTBOUND_ALLOW`, like CKAN's host).
#[tokio::test]
async fn only_urls_under_the_configured_hxl_proxy_are_fetched() {
    let server = FakeServer::start();
    server.reply(SOURCE_INFO, Reply::json(proxy_answer(json!([]))));
    server.reply(
        "/elsewhere/api/source-info",
        Reply::json(proxy_answer(json!([]))),
    );
    let proxy = format!("{}/hxlproxy/", server.url());
    let config = config_with(&server, Some("k"), &[("HDX_HXL_PROXY_URL", &proxy)]);
    let mut job = args(&server, None);
    job.hxl_proxy_source_info_url = Some(format!("{}/elsewhere/api/source-info", server.url()));
    let e = run_with(&config, job).await.expect_err("outside the proxy");
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert!(e.message.contains("under"), "{e}");
    for empty in ["", "   "] {
        let mut job = args(&server, None);
        job.hxl_proxy_source_info_url = Some(empty.to_string());
        assert!(run_with(&config, job).await.is_err(), "{empty:?}");
    }
    assert!(server.requests().is_empty());
    run_with(&config, args(&server, None))
        .await
        .expect("under the proxy");
    assert_eq!(server.requests_to(SOURCE_INFO).len(), 1);
}
