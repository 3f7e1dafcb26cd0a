//! The monitor's JSON API, `/metrics` and `/openapi.json`.

mod common;

use std::time::Duration;

use common::TestServer;
use hdx_jobs::rq::queue::{JobSpec, Queue};
use serde_json::json;

fn status(server: &TestServer, id: &str) -> Option<String> {
    server
        .redis
        .query(redis::cmd("HGET").arg(format!("rq:job:{id}")).arg("status"))
}

fn enqueue(server: &TestServer, queue: &str, spec: JobSpec) -> String {
    let redis = hdx_jobs::RedisClient::open(server.redis.url()).expect("redis");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        Queue::new(redis, queue)
            .expect("queue")
            .enqueue(spec)
            .await
            .expect("enqueue")
    })
}

#[test]
fn the_monitor_api_lists_inspects_and_acts() {
    let mut server = TestServer::start(&[]);
    let failed = enqueue(
        &server,
        "work",
        JobSpec::new("hdx_jobs.fail").arg("monitor me"),
    );
    let ok = enqueue(&server, "work", JobSpec::new("hdx_jobs.echo").arg(7));
    let worker = server.start_worker(&["work"]);
    testkit::eventually("jobs to run", Duration::from_secs(20), || {
        (status(&server, &failed).as_deref() == Some("failed")
            && status(&server, &ok).as_deref() == Some("finished"))
        .then_some(())
    });

    let (code, overview) = server.get("/monitor/api/overview");
    assert_eq!(code, 200);
    let queue = overview["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .find(|q| q["name"] == "work")
        .expect("work")
        .clone();
    assert_eq!(
        (queue["failed"].as_u64(), queue["finished"].as_u64()),
        (Some(1), Some(1))
    );
    let workers = overview["workers"].as_array().expect("workers");
    assert_eq!(workers[0]["name"], worker.as_str());
    assert_eq!(workers[0]["queues"], json!(["work"]));

    let (code, page) = server.get("/monitor/api/queues/work/jobs?registry=failed");
    assert_eq!(code, 200);
    assert_eq!(page["total"], 1);
    assert_eq!(page["jobs"][0]["id"], failed.as_str());
    assert_eq!(page["jobs"][0]["error"], "TaskFailed: monitor me");
    let (_, detail) = server.get(&format!("/monitor/api/jobs/{ok}"));
    assert_eq!(detail["args"], json!([7]));
    assert_eq!(
        detail["latest_result"]["return_value"],
        json!({"args": [7], "kwargs": {}})
    );
    assert_eq!(server.get("/monitor/api/jobs/nope").0, 404);
    assert!(detail.get("preview_url").is_none());
    let (_, _) = server
        .get("/api/add-layer/dataset/d/resource/ab-12?resource_download_url=http://x/a.geojson");
    let geo = server.queued("geo_q")[0].clone();
    let (_, detail) = server.get(&format!("/monitor/api/jobs/{geo}"));
    assert_eq!(
        detail["preview_url"], "/preview/pre_ab_12",
        "a geopreview job links to its map"
    );
    assert_eq!(
        server.get("/monitor/api/queues/work/jobs?registry=bogus").0,
        400
    );

    // Requeue runs it again (and it fails again), delete removes it.
    let (code, answer) = server.monitor_action(&format!("/monitor/api/jobs/{failed}/requeue"));
    assert_eq!((code, answer), (200, json!({"ok": true, "count": 1})));
    testkit::eventually(
        "requeued job to fail again",
        Duration::from_secs(20),
        || {
            let page = server
                .get("/monitor/api/queues/work/jobs?registry=failed")
                .1;
            (page["total"] == 1 && status(&server, &failed).as_deref() == Some("failed"))
                .then_some(())
        },
    );
    assert_eq!(
        server
            .monitor_action(&format!("/monitor/api/jobs/{ok}/requeue"))
            .0,
        409,
        "only failed jobs"
    );
    assert_eq!(
        server
            .monitor_action(&format!("/monitor/api/jobs/{failed}/delete"))
            .0,
        200
    );
    assert_eq!(status(&server, &failed), None);

    let waiting: Vec<String> = (0..3)
        .map(|_| enqueue(&server, "idle_q", JobSpec::new("hdx_jobs.noop")))
        .collect();
    let (_, page) = server.get("/monitor/api/queues/idle_q/jobs?per_page=2&page=2");
    assert_eq!(
        (
            page["total"].as_u64(),
            page["jobs"].as_array().map(Vec::len)
        ),
        (Some(3), Some(1))
    );
    assert_eq!(page["jobs"][0]["id"], waiting[2].as_str());
    let (_, answer) = server.monitor_action("/monitor/api/queues/idle_q/empty");
    assert_eq!(answer["count"], 3);
    assert!(server.queued("idle_q").is_empty());
}

/// Job views never show secrets: keys naming a token, key, secret, password or authorization
/// are redacted in arguments (and in RQ's description, which repeats them), and so are
/// credentials in URLs.
#[test]
fn job_views_redact_secrets() {
    let server = TestServer::start(&[]);
    let id = enqueue(
        &server,
        "analytics_q",
        JobSpec::new("analyticsapi.tasks.send_event.send_event_task").arg(json!({
            "event_name": "download",
            "mixpanel_token": "mp-s3cret",
            "mixpanel_meta": {"url": "https://user:pa55@files.example/x.csv?api_key=k3y&y=1"},
            "nested": [{"Authorization": "Bearer b3arer", "password": "hunter2"}],
        })),
    );
    let (code, detail) = server.get(&format!("/monitor/api/jobs/{id}"));
    assert_eq!(code, 200);
    let text = detail.to_string();
    for secret in ["mp-s3cret", "pa55", "k3y", "b3arer", "hunter2"] {
        assert!(!text.contains(secret), "{secret} shown: {text}");
    }
    assert_eq!(detail["args"][0]["event_name"], "download");
    assert_eq!(detail["args"][0]["mixpanel_token"], "[redacted]");
    assert!(detail["description"]
        .as_str()
        .unwrap_or("")
        .contains("[redacted]"));
    let (_, page) = server.get("/monitor/api/queues/analytics_q/jobs");
    assert!(!page.to_string().contains("mp-s3cret"), "{page}");
}

/// Regression: one unauthenticated `GET /monitor/api/jobs/<id>` of a job whose pickle nests
/// lists 200,000 deep aborted the whole server (stack overflow). Now the view shows why the
/// payload cannot be read, and the server goes on answering.
#[test]
fn regression_a_poison_payload_does_not_take_the_server_down() {
    let server = TestServer::start(&[]);
    let depth = 200_000;
    let mut pickle = vec![0x80, 0x04];
    pickle.extend(std::iter::repeat_n(b']', depth));
    pickle.extend(std::iter::repeat_n(b'a', depth - 1));
    pickle.push(b'.');
    let data = hdx_jobs::rq::payload::zlib_compress(&pickle);
    let _: i64 = server.redis.query(
        redis::cmd("HSET")
            .arg("rq:job:poison")
            .arg("data")
            .arg(data)
            .arg("origin")
            .arg("geo_q")
            .arg("status")
            .arg("queued"),
    );
    let _: i64 = server
        .redis
        .query(redis::cmd("RPUSH").arg("rq:queue:geo_q").arg("poison"));
    let (code, view) = server.get("/monitor/api/jobs/poison");
    assert_eq!(code, 200);
    assert!(
        view["payload_error"]
            .as_str()
            .unwrap_or("")
            .contains("deeper than"),
        "{view}"
    );
    assert_eq!(server.get("/monitor/api/queues/geo_q/jobs").0, 200);
    assert_eq!(server.get("/healthz").0, 200, "the server is still up");
}

#[test]
fn metrics_report_jobs_queues_workers_and_requests() {
    let mut server = TestServer::start(&[]);
    assert_eq!(
        server
            .post_json("/api/send-analytics", &json!({"event_name": "e"}))
            .0,
        200
    );
    let succeeding = enqueue(&server, "work", JobSpec::new("hdx_jobs.noop"));
    let failing = enqueue(&server, "work", JobSpec::new("hdx_jobs.fail"));
    server.start_worker(&["work"]);
    testkit::eventually("jobs to run", Duration::from_secs(20), || {
        (status(&server, &succeeding).as_deref() == Some("finished")
            && status(&server, &failing).as_deref() == Some("failed"))
        .then_some(())
    });

    let response = TestServer::agent()
        .get(&format!("{}/metrics", server.url))
        .call()
        .expect("metrics");
    assert!(response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .starts_with("text/plain"));
    let (_, text) = common::read(response);
    let text = text.as_str().expect("text").to_string();
    for line in [
        "hdx_jobs_jobs_enqueued_total{queue=\"analytics_q\",task=\"analyticsapi.tasks.send_event.send_event_task\"} 1",
        "hdx_jobs_jobs_enqueued_total{queue=\"work\",task=\"hdx_jobs.noop\"} 1",
        "hdx_jobs_jobs_finished_total{queue=\"work\",task=\"hdx_jobs.noop\"} 1",
        "hdx_jobs_jobs_failed_total{queue=\"work\",task=\"hdx_jobs.fail\"} 1",
        "hdx_jobs_job_duration_seconds_count{queue=\"work\",task=\"hdx_jobs.noop\"} 1",
        "hdx_jobs_job_duration_seconds_bucket{queue=\"work\",task=\"hdx_jobs.noop\",le=\"+Inf\"} 1",
        "hdx_jobs_queue_jobs{queue=\"analytics_q\",registry=\"queued\"} 1",
        "hdx_jobs_queue_jobs{queue=\"work\",registry=\"failed\"} 1",
        "hdx_jobs_queue_workers{queue=\"work\"} 1",
        "hdx_jobs_http_requests_total{method=\"POST\",route=\"/api/send-analytics\",status=\"200\"} 1",
        "# TYPE hdx_jobs_http_request_duration_seconds histogram",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    // The build: the crate's version and the checkout's commit, as /version says too.
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let build = format!(
        "hdx_jobs_build_info{{version=\"{}\",commit=\"{commit}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(text.contains(&build), "missing {build:?} in:\n{text}");
    assert_eq!(server.get("/version").1["commit"], commit.as_str());
}

/// The latency of a queue is how long its next job has waited: with the head job enqueued 5 s
/// ago (by Redis's clock), `/metrics` reports about 5 s; an empty queue reports 0.
#[test]
fn metrics_report_how_long_the_next_job_has_waited() {
    let server = TestServer::start(&[]);
    let head = enqueue(&server, "waiting", JobSpec::new("hdx_jobs.noop"));
    enqueue(&server, "waiting", JobSpec::new("hdx_jobs.noop"));
    let (secs, micros): (u64, u64) = server.redis.query(&mut redis::cmd("TIME"));
    let five_seconds_ago =
        chrono::DateTime::from_timestamp(secs as i64 - 5, micros as u32 * 1000).expect("time");
    let _: i64 = server.redis.query(
        redis::cmd("HSET")
            .arg(format!("rq:job:{head}"))
            .arg("enqueued_at")
            .arg(hdx_jobs::rq::time::format_ts(&five_seconds_ago)),
    );
    let empty = enqueue(&server, "drained", JobSpec::new("hdx_jobs.noop"));
    let _: i64 = server
        .redis
        .query(redis::cmd("DEL").arg("rq:queue:drained"));
    let _: i64 = server
        .redis
        .query(redis::cmd("DEL").arg(format!("rq:job:{empty}")));

    let (_, text) = common::read(
        TestServer::agent()
            .get(&format!("{}/metrics", server.url))
            .call()
            .expect("metrics"),
    );
    let text = text.as_str().expect("text").to_string();
    let value = |queue: &str| -> f64 {
        let prefix = format!("hdx_jobs_queue_latency_seconds{{queue=\"{queue}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no latency for {queue} in:\n{text}"))
    };
    let waited = value("waiting");
    assert!((5.0..7.0).contains(&waited), "waiting: {waited}");
    assert_eq!(value("drained"), 0.0);
}

/// Whether a scheduler holds each queue's RQ scheduler lock: 1 for the queue whose
/// `rq:scheduler-lock:<queue>` key exists, 0 for the one without, and back to 0 once the lock
/// is gone (a scheduler that stopped or died).
#[test]
fn metrics_report_which_queues_have_a_scheduler() {
    let server = TestServer::start(&[]);
    enqueue(&server, "scheduled", JobSpec::new("hdx_jobs.noop"));
    enqueue(&server, "orphaned", JobSpec::new("hdx_jobs.noop"));
    let lock = hdx_jobs::rq::keys::scheduler_lock("scheduled");
    let _: () = server.redis.query(
        redis::cmd("SET")
            .arg(&lock)
            .arg("a-scheduler")
            .arg("EX")
            .arg(60),
    );
    let held = |text: &str, queue: &str| -> Option<u8> {
        let prefix = format!("hdx_jobs_scheduler_lock_held{{queue=\"{queue}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .and_then(|v| v.parse().ok())
    };
    let scrape = || server.get("/metrics").1.as_str().expect("text").to_string();

    let text = scrape();
    assert!(
        text.contains("# TYPE hdx_jobs_scheduler_lock_held gauge"),
        "{text}"
    );
    assert_eq!(
        (held(&text, "scheduled"), held(&text, "orphaned")),
        (Some(1), Some(0)),
        "{text}"
    );

    let _: i64 = server.redis.query(redis::cmd("DEL").arg(&lock));
    let text = scrape();
    assert_eq!(held(&text, "scheduled"), Some(0), "{text}");
}

/// The event stream on `/metrics`: its length, and per consumer group the events delivered but
/// not acknowledged (pending) and those not read yet (lag).
#[test]
fn metrics_report_the_event_streams_length_and_consumer_lag() {
    let server = TestServer::start(&[("REDIS_STREAM_STREAM_NAME", "events_under_test")]);
    for i in 0..10 {
        let _: String = server.redis.query(
            redis::cmd("XADD")
                .arg("events_under_test")
                .arg("*")
                .arg("event_type")
                .arg("test")
                .arg("body")
                .arg(format!("{{\"n\": {i}}}")),
        );
    }
    let _: String = server.redis.query(
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("events_under_test")
            .arg("readers")
            .arg("0"),
    );
    let scrape = || server.get("/metrics").1.as_str().expect("text").to_string();
    let labels = r#"{stream="events_under_test",group="readers"}"#;
    let text = scrape();
    for line in [
        r#"hdx_jobs_event_stream_up{stream="events_under_test"} 1"#.to_string(),
        r#"hdx_jobs_event_stream_length{stream="events_under_test"} 10"#.to_string(),
        format!("hdx_jobs_event_consumer_lag{labels} 10"),
        format!("hdx_jobs_event_consumer_pending{labels} 0"),
    ] {
        assert!(text.contains(&line), "missing {line:?} in:\n{text}");
    }

    // A consumer reads 4 and acknowledges none: 4 pending, 6 still unread.
    let _: redis::Value = server.redis.query(
        redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("readers")
            .arg("c1")
            .arg("COUNT")
            .arg(4)
            .arg("STREAMS")
            .arg("events_under_test")
            .arg(">"),
    );
    let text = scrape();
    for line in [
        format!("hdx_jobs_event_consumer_lag{labels} 6"),
        format!("hdx_jobs_event_consumer_pending{labels} 4"),
    ] {
        assert!(text.contains(&line), "missing {line:?} in:\n{text}");
    }
}

/// An unreachable stream Redis leaves the queue metrics answering, and says so.
#[test]
fn metrics_answer_when_the_event_stream_is_unreachable() {
    let server = TestServer::start(&[("REDIS_STREAM_URL", "redis://127.0.0.1:1/0")]);
    let (code, text) = server.get("/metrics");
    assert_eq!(code, 200);
    let text = text.as_str().expect("text");
    assert!(
        text.contains(r#"hdx_jobs_event_stream_up{stream="hdx_event_stream"} 0"#)
            && text.contains("# TYPE hdx_jobs_queue_jobs gauge"),
        "{text}"
    );
}

#[test]
fn openapi_describes_every_endpoint() {
    let server = TestServer::start(&[("MONITOR_URL", "/ops/monitor")]);
    let (code, api) = server.get("/openapi.json");
    assert_eq!(code, 200);
    let paths = api["paths"].as_object().expect("paths");
    for path in [
        "/api/add-layer/dataset/{dataset_id}/resource/{resource_id}",
        "/api/send-analytics",
        "/api/create-change-events",
        "/api/file-structure-check/dataset/{dataset_id}/resource/{resource_id}",
        "/api/delete-layers",
        "/api/delete-layers/dry-run/{dry_run}",
        "/api/delete-one-layer/{resource_id}",
        "/api/run-checks",
        "/api/scheduler/add_job",
        "/api/scheduler/list_jobs",
        "/api/scheduler/jobs/{id}",
        "/version",
        "/about",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/ops/monitor",
        "/ops/monitor/api/overview",
        "/ops/monitor/api/jobs/{id}/requeue",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from {:?}",
            paths.keys().collect::<Vec<_>>()
        );
    }
    assert_eq!(
        server.get("/ops/monitor/api/overview").0,
        200,
        "the monitor follows MONITOR_URL"
    );
}
