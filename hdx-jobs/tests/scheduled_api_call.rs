//! The scheduled CKAN API call (feature `api-call`): what CKAN receives and how its refusals
//! fail the job, and calls left by the old rq-scheduler package run at their time.

mod common;

use std::time::Duration;

use common::*;
use hdx_jobs::config::Config;
use hdx_jobs::hdx::{task_registry, wire};
use hdx_jobs::rq::queue::{JobSpec, Queue};
use hdx_jobs::rq::scheduler::{Queues, Scheduler, SchedulerOptions};
use hdx_jobs::rq::worker::WorkerOptions;
use serde_json::json;
use testkit::http::{FakeServer, Reply};
use testkit::TestRedis;
use tokio_util::sync::CancellationToken;

fn hdx_config(ckan: &FakeServer) -> Config {
    let url = format!("{}/api/action", ckan.url());
    Config::from_lookup(|k| match k {
        "CKAN_API_BASE_URL" => Some(url.clone()),
        "HDX_GIS_API_KEY" => Some("sched-key".into()),
        "HDX_USER_AGENT" => Some("HDX-TEST".into()),
        _ => None,
    })
    .expect("config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_api_call_posts_or_gets_and_fails_with_ckans_text() {
    let test = TestRedis::new();
    let redis = client(&test);
    let ckan = FakeServer::start();
    ckan.reply(
        "/api/action/package_patch",
        Reply::json(json!({"success": true, "result": {"id": "p"}})),
    );
    ckan.reply(
        "/api/action/package_show",
        Reply::json(json!({"success": true, "result": {}})),
    );
    ckan.reply(
        "/api/action/forbidden_action",
        Reply::json(json!({"success": false, "error": {"message": "Access denied"}}))
            .with_status(403),
    );
    let queue = Queue::new(redis.clone(), wire::SCHEDULER_QUEUE).expect("queue");
    let call = |task_args: serde_json::Value| {
        JobSpec::new(wire::SCHEDULE_API_CALL)
            .kwarg("args", json!({"task_args": task_args, "timedelta": 60.0}))
    };
    let post = queue
        .enqueue(call(json!({"action": "package_patch", "method": "post", "api_params": {"id": "p", "private": false}})))
        .await
        .expect("enqueue");
    let get = queue
        .enqueue(call(json!({"action": "package_show", "method": "get", "api_params": {"id": "p", "use_default_schema": true}})))
        .await
        .expect("enqueue");
    let denied = queue
        .enqueue(call(
            json!({"action": "forbidden_action", "method": "post"}),
        ))
        .await
        .expect("enqueue");

    let options = WorkerOptions {
        burst: true,
        ..fast_options(&[wire::SCHEDULER_QUEUE])
    };
    start_worker(&redis, task_registry(&hdx_config(&ckan)), options)
        .join()
        .await;

    let posted = &ckan.requests_to("/api/action/package_patch")[0];
    assert_eq!(posted.method, "POST");
    assert_eq!(posted.json(), json!({"id": "p", "private": false}));
    assert_eq!(posted.header("authorization"), Some("sched-key"));
    assert_eq!(posted.header("user-agent"), Some("HDX-TEST"));
    let got = &ckan.requests_to("/api/action/package_show")[0];
    assert_eq!(got.method, "GET");
    assert_eq!(got.query_param("id"), Some("p"));
    assert_eq!(got.query_param("use_default_schema"), Some("True"));
    assert_eq!(status(&test, &post).as_deref(), Some("finished"));
    assert_eq!(status(&test, &get).as_deref(), Some("finished"));
    assert_eq!(status(&test, &denied).as_deref(), Some("failed"));
    let text = latest(&redis, &denied)
        .await
        .and_then(|r| r.exc_string)
        .expect("exc");
    assert!(
        text.contains("403") && text.contains("Access denied"),
        "{text}"
    );
    assert!(!text.contains("sched-key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_left_by_the_old_rq_scheduler_run_at_their_time() {
    let test = TestRedis::new();
    let redis = client(&test);
    let ckan = FakeServer::start();
    ckan.reply(
        "/api/action/hdx_refresh",
        Reply::json(json!({"success": true, "result": "ok"})),
    );
    // Exactly as the old API scheduled a call: pickled, with a timedelta among the arguments.
    let args = json!({"task_args": {"action": "hdx_refresh", "method": "post", "api_params": {"id": "x"}},
                      "ckan_api_base_url": format!("{}/api/action", ckan.url()), "verify_ckan_ssl": false});
    let scheduled_at = now_s();
    let id = testkit::rq_peer(
        test.url(),
        &[
            "legacy-schedule",
            "--func",
            wire::SCHEDULE_API_CALL,
            "--seconds",
            "2",
            "--args-dict",
            &args.to_string(),
        ],
    );
    let zset: Vec<String> = test.query(
        redis::cmd("ZRANGE")
            .arg("rq:scheduler:scheduled_jobs")
            .arg(0)
            .arg(-1),
    );
    assert_eq!(zset, vec![id.clone()]);

    let stop = CancellationToken::new();
    let options = SchedulerOptions {
        interval: Duration::from_millis(100),
        queues: Queues::All,
        ..Default::default()
    };
    let scheduler = tokio::spawn(Scheduler::new(redis.clone(), options).run(stop.clone()));
    let worker = start_worker(
        &redis,
        task_registry(&hdx_config(&ckan)),
        fast_options(&[wire::SCHEDULER_QUEUE]),
    );
    let requests =
        testkit::eventually_async("the call to reach CKAN", Duration::from_secs(20), || {
            let got = ckan.requests_to("/api/action/hdx_refresh");
            (!got.is_empty()).then_some(got)
        })
        .await;
    let called_at = now_s();
    assert!(
        called_at - scheduled_at >= 1.0,
        "not before its time (rq-scheduler stores whole seconds)"
    );
    assert_eq!(requests[0].json(), json!({"id": "x"}));
    wait_status(&test, &id, "finished", Duration::from_secs(10)).await;
    let zset: Vec<String> = test.query(
        redis::cmd("ZRANGE")
            .arg("rq:scheduler:scheduled_jobs")
            .arg(0)
            .arg(-1),
    );
    assert!(zset.is_empty());
    stop.cancel();
    scheduler.await.expect("scheduler");
    worker.stop().await;
    assert_eq!(
        ckan.requests_to("/api/action/hdx_refresh").len(),
        1,
        "called once"
    );
}
