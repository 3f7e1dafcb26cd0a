//! Every endpoint of the old API (docs/hdx-contract.md §2): the exact response JSON and the
//! exact job that lands in Redis; its error cases; bad requests (4xx JSON, never a job).

mod common;

use common::TestServer;
use serde_json::json;
use testkit::http::Reply;

#[test]
fn add_layer_enqueues_the_old_geopreview_job() {
    let server = TestServer::start(&[
        ("MAX_FILE_SIZE_MB", "10"),
        ("HDX_GIS_TMP", "/srv/tmp"),
        ("VERIFY_CKAN_SSL", "false"),
    ]);
    let (status, body) = server.get(
        "/api/add-layer/dataset/ds-1/resource/res-1?resource_download_url=http%3A%2F%2Fdata.humdata.org%2Ff.geojson&url_type=upload",
    );
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"state": "processing", "message": "The processing of the geo-preview has started",
               "layer_id": "None", "error_type": "None", "error_class": "None"})
    );
    let ids = server.queued("geo_q");
    assert_eq!(ids.len(), 1);
    assert_retries(&server, &ids[0]);
    let (func, args, kwargs, timeout) = server.job_call(&ids[0]);
    assert_eq!(func, "importapi.tasks.create_preview.create_preview_task");
    assert!(kwargs.is_empty());
    assert_eq!(timeout, Some(300), "RQ_WORKER_TIMEOUT");
    assert_eq!(
        args,
        vec![json!({
            "dataset_id": "ds-1",
            "resource_id": "res-1",
            "download_url": "http://data.humdata.org/f.geojson",
            "url_type": "upload",
            "download_chunk_size": 5 * 1024 * 1024,
            "max_file_size_mb": 10 * 1024 * 1024,
            "timeout_sec": 120,
            "ckan_api_base_url": format!("{}/api/action", server.ckan.url()),
            "resource_update_action": "hdx_resource_update_metadata",
            "gis_api_pattern": "http://gisapi/services/tables/{table_name}",
            "table_name_prefix": "pre",
            "tmp_download_directory": "/srv/tmp",
            "ckan_server_url": "data.humdata.org",
            "verify_ckan_ssl": false,
            "hdx_user_agent": "HDX-TEST",
        })]
    );
    let (_, body) =
        server.get("/api/add-layer/dataset/d/resource/r?resource_download_url=http://x/y.kml");
    assert_eq!(body["state"], "processing");
    let (_, _, _, _) = server.job_call(&server.queued("geo_q")[1]);
    assert_eq!(
        server.job_call(&server.queued("geo_q")[1]).1[0]["url_type"],
        "api",
        "url_type defaults to api"
    );
}

/// Every job the API enqueues has RQ retries (3, after 10, 60 and 300 s): each task fails as
/// retryable only when a service it reports to is down, and is safe to run again.
fn assert_retries(server: &TestServer, id: &str) {
    let (retries, intervals): (Option<String>, Option<String>) = server.redis.query(
        redis::cmd("HMGET")
            .arg(format!("rq:job:{id}"))
            .arg("retries_left")
            .arg("retry_intervals"),
    );
    assert_eq!(retries.as_deref(), Some("3"), "{id}");
    assert_eq!(intervals.as_deref(), Some("[10, 60, 300]"), "{id}");
}

#[test]
fn add_layer_without_a_url_fails_with_200_and_enqueues_nothing() {
    let server = TestServer::start(&[]);
    for path in [
        "/api/add-layer/dataset/d/resource/r",
        "/api/add-layer/dataset/d/resource/r?resource_download_url=",
    ] {
        let (status, body) = server.get(path);
        assert_eq!(status, 200);
        assert_eq!(
            body,
            json!({"state": "failure", "message": "Url missing or has a problem", "layer_id": "None",
                   "error_type": "transformation-init-problem", "error_class": "MissingUrlException"})
        );
    }
    assert_eq!(server.total_queued(), 0);
}

#[test]
fn send_analytics_enqueues_the_body_unchanged() {
    let server = TestServer::start(&[]);
    let event = json!({
        "event_name": "resource download", "send_mixpanel": true, "send_ga": false,
        "mixpanel_token": "tok", "mixpanel_tracking_id": "user-1",
        "mixpanel_meta": {"resource id": "r1", "is cod": false}, "ga_meta": {"cid": "c1"}, "extra": 1
    });
    let (status, body) = server.post_json("/api/send-analytics", &event);
    assert_eq!((status, body), (200, json!({"success": true})));
    let ids = server.queued("analytics_q");
    let (func, args, _, timeout) = server.job_call(&ids[0]);
    assert_eq!(func, "analyticsapi.tasks.send_event.send_event_task");
    assert_eq!(args, vec![event]);
    assert_eq!(timeout, Some(300));
    let retries: Vec<String> = server.redis.query(
        redis::cmd("HMGET")
            .arg(format!("rq:job:{}", ids[0]))
            .arg("retries_left")
            .arg("retry_intervals"),
    );
    assert_eq!(
        retries,
        vec!["3", "[10, 60, 300]"],
        "retried when Mixpanel or GA is down"
    );
}

#[test]
fn bad_requests_get_a_4xx_json_error_and_enqueue_nothing() {
    let server = TestServer::start(&[
        ("HDX_JOBS_MAX_BODY_BYTES", "2048"),
        ("EVENTS_API_ENABLED", "true"),
    ]);
    let cases: Vec<(&str, Option<&str>, Vec<u8>, u16)> = vec![
        (
            "/api/send-analytics",
            Some("application/json"),
            b"{not json".to_vec(),
            400,
        ),
        (
            "/api/send-analytics",
            Some("application/json"),
            b"".to_vec(),
            400,
        ),
        (
            "/api/send-analytics",
            Some("application/json"),
            b"[1, 2]".to_vec(),
            422,
        ),
        (
            "/api/send-analytics",
            Some("application/json"),
            br#"{"event_name": 5}"#.to_vec(),
            422,
        ),
        (
            "/api/send-analytics",
            Some("application/json"),
            br#"{"send_ga": true}"#.to_vec(),
            422,
        ),
        (
            "/api/send-analytics",
            Some("application/json"),
            br#"{"event_name": ""}"#.to_vec(),
            422,
        ),
        (
            "/api/send-analytics",
            Some("application/json"),
            br#"{"event_name": "x", "send_ga": "yes"}"#.to_vec(),
            422,
        ),
        (
            "/api/send-analytics",
            None,
            br#"{"event_name": "x"}"#.to_vec(),
            415,
        ),
        (
            "/api/send-analytics",
            Some("text/plain"),
            br#"{"event_name": "x"}"#.to_vec(),
            415,
        ),
        (
            "/api/send-analytics",
            Some("application/json"),
            format!(r#"{{"event_name": "{}"}}"#, "x".repeat(5000)).into_bytes(),
            413,
        ),
        (
            "/api/create-change-events",
            Some("application/json"),
            br#"{"username": "u"}"#.to_vec(),
            422,
        ),
        (
            "/api/create-change-events",
            Some("application/json"),
            br#"{"username": "u", "new_dataset_dict": []}"#.to_vec(),
            422,
        ),
        (
            "/api/file-structure-check/dataset/d/resource/r",
            Some("application/json"),
            br#"{"fs_check_info": "[]"}"#.to_vec(),
            422,
        ),
        (
            "/api/file-structure-check/dataset/d/resource/r",
            Some("application/json"),
            b"nope".to_vec(),
            400,
        ),
    ];
    for (path, content_type, body, expected) in cases {
        let (status, answer) = server.post_raw(path, content_type, &body);
        assert_eq!(
            status,
            expected,
            "{path} {:?}: {answer}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(answer["state"], "failure", "{answer}");
        assert_eq!(answer["error_type"], "transformation-init-problem");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(answer["error_class"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(server.total_queued(), 0, "no job from a bad request");
}

#[test]
fn unknown_paths_and_methods_answer_in_the_error_shape() {
    let server = TestServer::start(&[]);
    let (status, body) = server.get("/api/nope");
    assert_eq!(status, 404);
    assert_eq!(body["error_class"], "NotFound");
    assert_eq!(body["state"], "failure");
    let (status, body) = server.get("/api/send-analytics");
    assert_eq!(status, 405);
    assert_eq!(body["error_class"], "MethodNotAllowed");
}

#[test]
fn change_events_honour_events_api_enabled() {
    let request = json!({"username": "alice", "old_dataset_dict": {"name": "a"}, "new_dataset_dict": {"name": "b"}});
    let disabled = TestServer::start(&[]);
    assert_eq!(
        disabled.post_json("/api/create-change-events", &request),
        (200, json!({"state": "success"}))
    );
    assert_eq!(
        disabled.total_queued(),
        0,
        "disabled: acknowledged, nothing enqueued"
    );

    let enabled = TestServer::start(&[("EVENTS_API_ENABLED", "true")]);
    assert_eq!(
        enabled.post_json("/api/create-change-events", &request),
        (200, json!({"state": "success"}))
    );
    let ids = enabled.queued("event_q");
    let (func, args, _, _) = enabled.job_call(&ids[0]);
    assert_eq!(func, "eventapi.tasks.detect_changes.detect_changes");
    assert_eq!(args, vec![request]);
    let new_dataset =
        json!({"username": "alice", "old_dataset_dict": null, "new_dataset_dict": {"name": "b"}});
    assert_eq!(
        enabled
            .post_json("/api/create-change-events", &new_dataset)
            .0,
        200
    );
}

/// The enqueue endpoints write the request body into the job's pickle as they parse it, never
/// as a tree: Python RQ (2.x and 1.13) must read back the body `json.loads` would give, and
/// the description it would have written itself.
#[test]
fn python_rq_reads_a_passed_on_body_as_json_loads_reads_it() {
    let server = TestServer::start(&[("EVENTS_API_ENABLED", "true")]);
    let sample = |name: &str| -> serde_json::Value {
        let path = testkit::sample(&format!("ckan/{name}"));
        serde_json::from_slice(&std::fs::read(path).expect("sample")).expect("sample JSON")
    };
    let pair = json!({
        "username": "it's \"me\" \u{e9} \u{1f600}",
        "old_dataset_dict": sample("dataset_old.json"),
        "new_dataset_dict": sample("dataset_new.json"),
    });
    let edges = json!({
        "username": "u",
        "old_dataset_dict": null,
        "new_dataset_dict": {
            "numbers": [0, -1, 255, 256, 65535, 65536, -2147483649_i64, i64::MAX, u64::MAX,
                        1.5, -0.25, 1e300, 5e-324],
            "long": (0..1001).collect::<Vec<u32>>(),
            "single": [[{}], {"k": []}],
            "text": "tab\t newline\n control\u{1} quote' backslash\\",
        },
    });
    let bodies = [pair, edges];
    for body in &bodies {
        let (status, answer) = server.post_json("/api/create-change-events", body);
        assert_eq!((status, answer), (200, json!({"state": "success"})));
    }
    let (status, _) = server.post_raw(
        "/api/send-analytics",
        Some("application/json"),
        br#"  {"event_name": "x", "event_name": "y", "n": 1}"#,
    );
    assert_eq!(status, 422, "a field given twice is refused");
    let ids = server.queued("event_q");
    assert_eq!(ids.len(), bodies.len());
    let url = server.redis.url();
    for (id, body) in ids.iter().zip(&bodies) {
        let rq2 = testkit::rq_peer_json(url, &["call", id]);
        let rq113: serde_json::Value =
            serde_json::from_str(&testkit::rq113_peer(url, &["call", id])).expect("JSON");
        for call in [rq2, rq113] {
            assert_eq!(
                call["func_name"],
                "eventapi.tasks.detect_changes.detect_changes"
            );
            assert_eq!(call["args"], json!([body]));
            assert_eq!(call["kwargs"], json!({}));
            assert_eq!(call["description"], call["call_string"], "{call}");
        }
    }
}

#[test]
fn file_structure_check_enqueues_the_old_dict() {
    let server = TestServer::start(&[("HDX_FS_CHECK_RESOURCE_REVISE", "revise_action")]);
    let request = json!({"hxl_proxy_source_info_url": "https://proxy.hxlstandard.org/api/source-info?url=x", "fs_check_info": "[]"});
    let (status, body) = server.post_json(
        "/api/file-structure-check/dataset/ds-9/resource/res-9",
        &request,
    );
    assert_eq!((status, body), (200, json!({"success": true})));
    let id = server.queued("fs_check_q")[0].clone();
    assert_retries(&server, &id);
    let (func, args, _, _) = server.job_call(&id);
    assert_eq!(
        func,
        "filestructurecheckapi.tasks.file_structure_check.fs_check_task"
    );
    assert_eq!(
        args,
        vec![json!({
            "dataset_id": "ds-9",
            "resource_id": "res-9",
            "hxl_proxy_source_info_url": "https://proxy.hxlstandard.org/api/source-info?url=x",
            "ckan_api_base_url": format!("{}/api/action", server.ckan.url()),
            "resource_update_action": "revise_action",
            "verify_ckan_ssl": true,
            "hdx_user_agent": "HDX-TEST",
            "fs_check_info": "[]",
        })]
    );
}

fn tables(server: &TestServer) -> Vec<String> {
    server
        .postgres
        .client()
        .query("SELECT table_name::text FROM information_schema.tables WHERE table_schema='public' AND table_name LIKE 'pre\\_%' ORDER BY 1", &[])
        .expect("tables")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn delete_one_layer_drops_the_table_or_answers_404() {
    let server = TestServer::start(&[]);
    server
        .postgres
        .client()
        .batch_execute("CREATE TABLE pre_ab12_cd34 (id int); CREATE TABLE pre_keep (id int)")
        .expect("tables");
    let (status, body) = server.post_json("/api/delete-one-layer/ab12-cd34", &json!({}));
    assert_eq!(
        (status, body),
        (
            200,
            json!({"state": "started", "message": "None", "error_type": "None", "error_class": "None"})
        )
    );
    assert_eq!(tables(&server), vec!["pre_keep"]);
    let (status, body) = server.post_json("/api/delete-one-layer/ab12-cd34", &json!({}));
    assert_eq!(status, 404);
    assert_eq!(body["state"], "failure");
    assert_eq!(body["type"], "unknown");
    assert_eq!(body["message"], "table \"pre_ab12_cd34\" does not exist");
    // An id with SQL in it reaches the database only as a quoted, sanitised name.
    let (status, _) = server.post_json(
        "/api/delete-one-layer/x%22%3B%20DROP%20TABLE%20pre_keep%3B%20--",
        &json!({}),
    );
    assert_eq!(status, 404);
    assert_eq!(tables(&server), vec!["pre_keep"]);
}

#[test]
fn delete_layers_finds_orphans_and_deletes_only_without_dry_run() {
    let server = TestServer::start(&[]);
    server
        .postgres
        .client()
        .batch_execute("CREATE TABLE pre_aaa_1 (id int); CREATE TABLE pre_bbb_2 (id int); CREATE TABLE pre_ccc_3 (id int); CREATE TABLE other_1 (id int)")
        .expect("tables");
    server.ckan.reply(
        "/api/action/hdx_resource_id_list",
        Reply::json(json!({"success": true, "result": ["aaa-1", "bbb-2", "zzz-9"]})),
    );
    let expected_dry = json!({
        "state": "analysis-finished",
        "message": "Deleting 1 layers from postgis out of 3. A total of 3 resources was found on CKAN",
        "count": 1, "items": ["pre_ccc_3"], "dry-run": true, "error_type": "None", "error_class": "None"
    });
    assert_eq!(
        server.get("/api/delete-layers"),
        (200, expected_dry.clone())
    );
    assert_eq!(
        server.get("/api/delete-layers/dry-run/true"),
        (200, expected_dry)
    );
    assert_eq!(tables(&server).len(), 3, "dry run deletes nothing");
    let request = &server.ckan.requests_to("/api/action/hdx_resource_id_list")[0];
    assert_eq!(request.header("authorization"), Some("gis-key"));
    assert_eq!(request.header("user-agent"), Some("HDX-TEST"));

    let (status, body) = server.get("/api/delete-layers/dry-run/false");
    assert_eq!(status, 200);
    assert_eq!(body["state"], "successful");
    assert_eq!(body["dry-run"], false);
    assert_eq!(tables(&server), vec!["pre_aaa_1", "pre_bbb_2"]);

    server.ckan.reply(
        "/api/action/hdx_resource_id_list",
        Reply::json(json!({"success": true, "result": ["aaa-1"]})),
    );
    let (status, body) = server.get("/api/delete-layers/dry-run/false");
    assert_eq!(status, 200);
    assert_eq!(body["state"], "failure");
    assert_eq!(body["type"], "ckan-info-problem");
    assert_eq!(
        body["message"],
        "Seems like the ckan list of resources is not correct"
    );
    assert_eq!(
        tables(&server).len(),
        2,
        "a broken CKAN list deletes nothing"
    );
}

/// Layers are matched to CKAN's ids by the import's own naming (the old cleanup turned `_` back
/// into `-` and dropped the layers of ids with `_`), and a run that would drop more than
/// `HDX_CLEANUP_MAX_SHARE` of the layers (a truncated CKAN list) is refused unless forced.
#[test]
fn regression_cleanup_keeps_ids_with_underscores_and_refuses_a_truncated_list() {
    let server = TestServer::start(&[("HDX_CLEANUP_MAX_SHARE", "25%")]);
    let mut sql = String::new();
    for i in 0..8 {
        sql.push_str(&format!("CREATE TABLE pre_res_{i} (id int);"));
    }
    sql.push_str("CREATE TABLE pre_gone_1 (id int);");
    server
        .postgres
        .client()
        .batch_execute(&sql)
        .expect("tables");
    // Ids with `_` and `.`: their layers are pre_res_0, pre_res_1.
    let mut ids: Vec<String> = vec!["res_0".into(), "res.1".into()];
    ids.extend((2..8).map(|i| format!("res-{i}")));
    let list = "/api/action/hdx_resource_id_list";
    server
        .ckan
        .reply(list, Reply::json(json!({"success": true, "result": ids})));
    let (_, body) = server.get("/api/delete-layers/dry-run/false");
    assert_eq!(body["state"], "successful", "{body}");
    assert_eq!(body["items"], json!(["pre_gone_1"]));
    assert_eq!(
        tables(&server).len(),
        8,
        "every layer whose resource exists is kept"
    );

    // CKAN's answer cut in half: 4 of 8 layers look orphaned, more than 25 %.
    server.ckan.reply(
        list,
        Reply::json(json!({"success": true, "result": ids[..4]})),
    );
    let (_, body) = server.get("/api/delete-layers/dry-run/false");
    assert_eq!(body["state"], "failure", "{body}");
    assert_eq!(body["error_class"], "CkanInfoException");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("refusing to drop 4 of 8"),
        "{body}"
    );
    assert_eq!(tables(&server).len(), 8, "nothing dropped");
    let (_, dry) = server.get("/api/delete-layers/dry-run/true");
    assert_eq!(dry["count"], 4, "a dry run still reports them");
    let (_, forced) = server.get("/api/delete-layers/dry-run/false?force=true");
    assert_eq!(forced["state"], "successful", "{forced}");
    assert_eq!(tables(&server).len(), 4);
}

#[test]
fn run_checks_reports_real_checks_in_the_old_shape() {
    let mut server = TestServer::start(&[]);
    server.ckan.reply(
        "/api/action/status_show",
        Reply::json(json!({"success": true, "result": {"ckan_version": "2.10"}})),
    );
    server.start_worker(&[
        "geo_q",
        "analytics_q",
        "event_q",
        "fs_check_q",
        "default_scheduler_q",
    ]);
    let (status, body) = server.get("/api/run-checks");
    assert_eq!(status, 200);
    let results = body["result"].as_array().expect("result list");
    let names: Vec<&str> = results
        .iter()
        .map(|c| c["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        vec![
            "Redis check",
            "PostGIS check",
            "CKAN action API check",
            "Workers check",
            "Event bus check"
        ]
    );
    for check in results {
        assert_eq!(check["result"], "Passed", "{check}");
        for key in ["error_message", "type", "description", "subchecks"] {
            assert!(check.get(key).is_some(), "{key} in {check}");
        }
    }
    assert_eq!(results[3]["subchecks"].as_array().map(Vec::len), Some(5));
    assert_eq!(
        server.ckan.requests_to("/api/action/status_show")[0].header("authorization"),
        Some("gis-key")
    );

    server.ckan.reply(
        "/api/action/status_show",
        Reply::status(502).body("bad gateway"),
    );
    let (_, body) = server.get("/api/run-checks");
    assert_eq!(body["result"][2]["result"], "Failed");
    assert!(body["result"][2]["error_message"]
        .as_str()
        .unwrap_or("")
        .contains("502"));
}

#[test]
fn run_checks_fail_without_workers_or_postgis() {
    let server = TestServer::start(&[
        ("REDIS_STREAM_URL", "redis://127.0.0.1:1/7"),
        (
            "HDX_GISDB_URL",
            "host=127.0.0.1 port=1 user=nobody password=s3cret dbname=x",
        ),
    ]);
    let (_, body) = server.get("/api/run-checks");
    assert_eq!(body["result"][0]["result"], "Passed");
    assert_eq!(body["result"][1]["result"], "Failed");
    let message = body["result"][1]["error_message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        !message.contains("s3cret")
            && !message.contains("nobody")
            && !message.contains("127.0.0.1"),
        "{message}"
    );
    assert_eq!(body["result"][3]["result"], "Failed");
    assert_eq!(body["result"][3]["subchecks"][0]["result"], "Failed");
    assert_eq!(body["result"][4]["name"], "Event bus check");
    assert_eq!(body["result"][4]["result"], "Failed");
}

#[test]
fn version_health_and_readiness() {
    let server = TestServer::start(&[]);
    let (code, version) = server.get("/version");
    assert_eq!(code, 200);
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        version["commit"].as_str().is_some_and(|c| !c.is_empty()),
        "{version}"
    );
    assert_eq!(server.get("/about"), (200, version));
    assert_eq!(server.get("/healthz"), (200, json!({"status": "ok"})));
    assert_eq!(server.get("/readyz"), (200, json!({"status": "ready"})));
    let down = TestServer::start(&[("HDX_REDIS_URL", "redis://127.0.0.1:1/0")]);
    let (status, body) = down.get("/readyz");
    assert_eq!(status, 503);
    assert_eq!(body["status"], "unavailable");
}

/// A request with optional headers; status and body.
fn request(
    server: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let agent = TestServer::agent();
    let url = format!("{}{path}", server.url);
    let response = match method {
        "GET" => {
            let mut r = agent.get(&url);
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.call()
        }
        _ => {
            let mut r = agent.post(&url).header("Content-Type", "application/json");
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.send("{}")
        }
    };
    common::read(response.expect("request"))
}

/// With a token, everything but the probes, the OpenAPI document, tiles and the preview needs
/// it: the API as a bearer token; the monitor and /metrics also as a Basic-auth password (so a
/// browser and Prometheus can log in). Monitor actions come from the monitor page only, and
/// cross-site browser requests are refused even with valid credentials.
#[test]
fn a_token_protects_the_api_the_monitor_and_metrics() {
    let mut server = TestServer::start(&[("HDX_JOBS_API_TOKEN", "t0ken")]);
    server.start_worker(&["analytics_q"]);
    let bearer = ("Authorization", "Bearer t0ken");
    let basic_value = format!("Basic {}", base64_encode(b"ops:t0ken"));
    let basic = ("Authorization", basic_value.as_str());
    let monitor = ("X-HDX-Jobs-Monitor", "1");

    let (status, body) = server.post_json("/api/send-analytics", &json!({"event_name": "x"}));
    assert_eq!(
        (status, body["error_class"].as_str()),
        (401, Some("Unauthorized"))
    );
    assert_eq!(
        request(
            &server,
            "GET",
            "/api/delete-layers",
            &[("Authorization", "Bearer wrong")]
        )
        .0,
        401
    );
    assert_eq!(
        request(&server, "GET", "/api/delete-layers", &[basic]).0,
        401,
        "no Basic for the API"
    );
    let (status, _) = request(&server, "GET", "/api/scheduler/list_jobs", &[bearer]);
    assert_eq!(status, 200);

    for path in ["/monitor", "/monitor/api/overview", "/metrics"] {
        let response = TestServer::agent()
            .get(&format!("{}{path}", server.url))
            .call()
            .expect("GET");
        assert_eq!(response.status().as_u16(), 401, "{path}");
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(challenge.starts_with("Basic"), "{path}: {challenge}");
        assert_eq!(request(&server, "GET", path, &[basic]).0, 200, "{path}");
        assert_eq!(request(&server, "GET", path, &[bearer]).0, 200, "{path}");
    }
    for open in ["/healthz", "/version", "/about", "/openapi.json"] {
        assert_eq!(server.get(open).0, 200, "{open}");
    }

    let empty = "/monitor/api/queues/analytics_q/empty";
    assert_eq!(
        request(&server, "POST", empty, &[basic]).0,
        403,
        "not from the monitor page"
    );
    assert_eq!(request(&server, "POST", empty, &[basic, monitor]).0, 200);
    let host = server.url.trim_start_matches("http://").to_string();
    let same_origin = format!("http://{host}");
    assert_eq!(
        request(
            &server,
            "POST",
            empty,
            &[basic, monitor, ("Origin", &same_origin)]
        )
        .0,
        200
    );
    for cross in [
        ("Origin", "https://evil.example"),
        ("Sec-Fetch-Site", "cross-site"),
    ] {
        assert_eq!(
            request(&server, "POST", empty, &[basic, monitor, cross]).0,
            403,
            "{cross:?}"
        );
        assert_eq!(
            request(
                &server,
                "GET",
                "/api/delete-layers/dry-run/false",
                &[bearer, cross]
            )
            .0,
            403
        );
    }
}

/// Callers in `HDX_JOBS_TRUSTED_NETWORKS` need no token (CKAN on the same private network);
/// others do, and get 401 even when no token is configured at all.
#[test]
fn trusted_networks_need_no_token_and_others_are_refused() {
    let trusted = TestServer::start(&[("HDX_JOBS_TRUSTED_NETWORKS", "127.0.0.0/8")]);
    assert_eq!(trusted.get("/api/scheduler/list_jobs").0, 200);
    assert_eq!(trusted.get("/monitor/api/overview").0, 200);
    assert_eq!(trusted.get("/metrics").0, 200);
    let elsewhere = TestServer::start(&[("HDX_JOBS_TRUSTED_NETWORKS", "10.0.0.0/8, fd00::/8")]);
    assert_eq!(elsewhere.get("/api/scheduler/list_jobs").0, 401);
    assert_eq!(elsewhere.get("/metrics").0, 401);
    assert_eq!(elsewhere.get("/healthz").0, 200);
}

/// Closed by default: on a non-loopback address the server refuses to start with neither a
/// token nor trusted networks; an empty token is an error, never "open".
#[test]
fn the_server_will_not_start_open_on_the_network() {
    let redis = testkit::TestRedis::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let config = |vars: &[(&str, &str)]| {
        let url = redis.url().to_string();
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        hdx_jobs_server::ServerConfig::from_lookup(move |k| {
            if k == "HDX_REDIS_URL" {
                return Some(url.clone());
            }
            vars.iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.clone())
        })
    };
    let serve = |config: hdx_jobs_server::ServerConfig| {
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
                .await
                .expect("bind");
            let client = hdx_jobs::RedisClient::open(&config.core.redis_url).expect("redis");
            let state = hdx_jobs_server::AppState::new(client, config).expect("state");
            tokio::time::timeout(
                std::time::Duration::from_secs(2),
                hdx_jobs_server::run(listener, state, std::future::ready(())),
            )
            .await
        })
    };
    let refused = serve(config(&[]).expect("config"))
        .expect("returns at once")
        .expect_err("refused");
    assert!(
        refused.to_string().contains("HDX_JOBS_API_TOKEN"),
        "{refused}"
    );
    for allowed in [
        &[("HDX_JOBS_API_TOKEN", "t")][..],
        &[("HDX_JOBS_TRUSTED_NETWORKS", "10.0.0.0/8")],
    ] {
        let outcome = serve(config(allowed).expect("config"));
        assert!(
            outcome.is_ok() && outcome.expect("served").is_ok(),
            "{allowed:?}"
        );
    }
    assert!(config(&[("HDX_JOBS_API_TOKEN", "")]).is_err());
}

/// Every label of the HTTP metrics comes from a bounded set: made-up methods count as OTHER.
#[test]
fn metrics_labels_cannot_be_inflated_by_requests() {
    use std::io::{Read, Write};
    let server = TestServer::start(&[]);
    let addr = server.url.trim_start_matches("http://").to_string();
    for i in 0..20 {
        let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
        write!(
            stream,
            "M{i}X /api/delete-layers HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .expect("send");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    }
    let metrics = TestServer::agent()
        .get(&format!("{}/metrics", server.url))
        .call()
        .expect("metrics")
        .body_mut()
        .read_to_string()
        .expect("text");
    assert!(metrics.contains("method=\"OTHER\""), "{metrics}");
    assert!(!metrics.contains("M1X"), "{metrics}");
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn the_scheduler_endpoints_add_list_and_delete_calls() {
    let server = TestServer::start(&[]);
    let request = json!({"action": "hdx_refresh", "method": "post", "sch_minutes": 1, "sch_hours": 1, "api_params": {"id": "x"}});
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert_eq!(
        server.post_json("/api/scheduler/add_job", &request),
        (200, json!({"success": true}))
    );
    let scheduled: Vec<(String, f64)> = server.redis.query(
        redis::cmd("ZRANGE")
            .arg("rq:scheduled:default_scheduler_q")
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES"),
    );
    assert_eq!(scheduled.len(), 1);
    let (id, score) = scheduled[0].clone();
    assert!((score - (before + 3660.0)).abs() < 3.0, "due in 1 h 1 min");
    let (func, args, kwargs, timeout) = server.job_call(&id);
    assert_eq!(func, "schedulerapi.tasks.make_api_call.schedule_api_task");
    assert!(args.is_empty());
    assert_eq!(timeout, Some(300));
    assert_eq!(
        kwargs["args"],
        json!({"timedelta": 3660.0, "verify_ckan_ssl": true, "ckan_api_base_url": format!("{}/api/action", server.ckan.url()),
               "task_args": request, "hdx_user_agent": "HDX-TEST"})
    );
    assert!(
        !serde_json::Value::Object(kwargs.clone())
            .to_string()
            .contains("gis-key"),
        "no API key stored in the job"
    );

    // A call the old service left with rq-scheduler is listed too.
    let legacy = testkit::rq_peer(
        server.redis.url(),
        &[
            "legacy-schedule",
            "--func",
            "schedulerapi.tasks.make_api_call.schedule_api_task",
            "--seconds",
            "7200",
        ],
    );
    let (status, body) = server.get("/api/scheduler/list_jobs");
    assert_eq!(status, 200);
    assert_eq!(body["success"], true);
    let jobs = body["jobs"].as_array().expect("jobs");
    assert_eq!(
        jobs.iter()
            .map(|j| j["id"].as_str().unwrap_or(""))
            .collect::<Vec<_>>(),
        vec![id.as_str(), legacy.as_str()]
    );
    let created = jobs[0]["created_at"].as_str().expect("created_at");
    assert!(
        created.ends_with("+00:00") && created.contains(' ') && !created.contains('T'),
        "{created}"
    );
    assert!(jobs[0]["description"]
        .as_str()
        .unwrap_or("")
        .starts_with("schedulerapi.tasks.make_api_call.schedule_api_task("));

    let agent = TestServer::agent();
    let delete = |job: &str| {
        common::read(
            agent
                .delete(&format!("{}/api/scheduler/jobs/{job}", server.url))
                .call()
                .expect("DELETE"),
        )
    };
    assert_eq!(delete(&id), (200, json!({"success": true})));
    assert_eq!(delete(&legacy), (200, json!({"success": true})));
    let (status, body) = delete(&id);
    assert_eq!(status, 404);
    assert_eq!(body["success"], false);
    assert_eq!(server.get("/api/scheduler/list_jobs").1["jobs"], json!([]));

    assert_eq!(
        server
            .post_json("/api/scheduler/add_job", &json!({"method": "post"}))
            .0,
        422
    );
    assert_eq!(
        server
            .post_raw("/api/scheduler/add_job", Some("application/json"), b"{")
            .0,
        400
    );
    let (status, body) = server.post_json(
        "/api/scheduler/add_job",
        &json!({"action": "a", "sch_days": 1e12}),
    );
    assert_eq!(status, 200);
    assert_eq!(body["success"], false);
    assert!(body["message"]
        .as_str()
        .unwrap_or("")
        .starts_with("Could not schedule job: "));
}
