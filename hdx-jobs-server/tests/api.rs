//! Every endpoint of the contract: the exact response JSON and the exact job that lands in
//! Redis; the contract's error cases; bad requests (4xx JSON, never a job).

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

#[test]
fn file_structure_check_enqueues_the_old_dict() {
    let server = TestServer::start(&[("HDX_FS_CHECK_RESOURCE_REVISE", "revise_action")]);
    let request = json!({"hxl_proxy_source_info_url": "https://proxy.hxlstandard.org/api/source-info?url=x", "fs_check_info": "[]"});
    let (status, body) = server.post_json(
        "/api/file-structure-check/dataset/ds-9/resource/res-9",
        &request,
    );
    assert_eq!((status, body), (200, json!({"success": true})));
    let (func, args, _, _) = server.job_call(&server.queued("fs_check_q")[0]);
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
        "count": 1, "items": ["ccc-3"], "dry-run": true, "error_type": "None", "error_class": "None"
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
    let version = json!({"version": env!("CARGO_PKG_VERSION")});
    assert_eq!(server.get("/version"), (200, version.clone()));
    assert_eq!(server.get("/about"), (200, version));
    assert_eq!(server.get("/healthz"), (200, json!({"status": "ok"})));
    assert_eq!(server.get("/readyz"), (200, json!({"status": "ready"})));
    let down = TestServer::start(&[("HDX_REDIS_URL", "redis://127.0.0.1:1/0")]);
    let (status, body) = down.get("/readyz");
    assert_eq!(status, 503);
    assert_eq!(body["status"], "unavailable");
}

#[test]
fn a_token_protects_the_api_and_the_monitors_actions() {
    let server = TestServer::start(&[("HDX_JOBS_API_TOKEN", "t0ken")]);
    let event = json!({"event_name": "x"});
    let (status, body) = server.post_json("/api/send-analytics", &event);
    assert_eq!(status, 401);
    assert_eq!(body["error_class"], "Unauthorized");
    let agent = TestServer::agent();
    let with_token = |token: &str| {
        common::read(
            agent
                .post(&format!("{}/api/send-analytics", server.url))
                .header("Content-Type", "application/json")
                .header("Authorization", &format!("Bearer {token}"))
                .send(event.to_string())
                .expect("POST"),
        )
    };
    assert_eq!(with_token("wrong").0, 401);
    assert_eq!(with_token("t0ken"), (200, json!({"success": true})));
    assert_eq!(server.queued("analytics_q").len(), 1);
    assert_eq!(
        server.get("/monitor/api/overview").0,
        200,
        "reading the monitor stays open"
    );
    assert_eq!(
        server
            .post_json("/monitor/api/queues/analytics_q/empty", &json!({}))
            .0,
        401
    );
    assert_eq!(server.get("/healthz").0, 200);
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
