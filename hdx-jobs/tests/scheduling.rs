//! Periodic jobs fired exactly once, misfire policies, the scheduled CKAN API call, and jobs of
//! the rq-scheduler package.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use hdx_jobs::config::Config;
use hdx_jobs::hdx::{task_registry, wire};
use hdx_jobs::rq::payload::decode_value;
use hdx_jobs::rq::queue::{JobSpec, Queue};
use hdx_jobs::rq::scheduler::periodic::{self, Misfire, PeriodicJob, Schedule};
use hdx_jobs::rq::scheduler::{Queues, Scheduler, SchedulerOptions};
use hdx_jobs::rq::worker::WorkerOptions;
use serde_json::json;
use testkit::http::{FakeServer, Reply};
use testkit::TestRedis;
use tokio_util::sync::CancellationToken;

fn every(id: &str, seconds: u64, misfire: Misfire) -> PeriodicJob {
    PeriodicJob {
        id: id.into(),
        queue: "ticks".into(),
        func: "hdx_jobs.noop".into(),
        args: vec![],
        kwargs: Default::default(),
        schedule: Schedule::Every { every: seconds },
        misfire,
        timeout: None,
    }
}

/// The periods that got a job, from the jobs' ids.
fn fired_periods(test: &TestRedis, id: &str) -> Vec<i64> {
    let keys: Vec<String> = test.query(redis::cmd("KEYS").arg(format!("rq:job:periodic-{id}-*")));
    let mut periods: Vec<i64> = keys
        .iter()
        .filter_map(|k| k.rsplit('-').next()?.parse().ok())
        .collect();
    periods.sort_unstable();
    periods
}

fn set_next(test: &TestRedis, id: &str, due: i64) {
    let _: i64 = test.query(redis::cmd("ZADD").arg(periodic::NEXT_KEY).arg(due).arg(id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_schedulers_fire_each_period_once_and_catch_up_late_ones() {
    let test = TestRedis::new();
    let redis = client(&test);
    let mut conn = redis.conn().await.expect("conn");
    periodic::save(&mut conn, &every("tick", 10, Misfire::FireOnce))
        .await
        .expect("save");
    set_next(&test, "tick", 1_000_000);

    // Three schedulers see the same due period at once.
    let runs = (0..3).map(|_| {
        let redis = redis.clone();
        async move {
            let mut conn = redis.conn().await.expect("conn");
            periodic::fire_due(&mut conn, 1_000_005, 300)
                .await
                .expect("fire")
        }
    });
    let fired: u64 = futures_util::future::join_all(runs).await.into_iter().sum();
    assert_eq!(fired, 1);
    assert_eq!(fired_periods(&test, "tick"), vec![1_000_000]);

    // A takeover 35 s late fires each overdue period, late.
    periodic::fire_due(&mut conn, 1_000_045, 300)
        .await
        .expect("fire");
    assert_eq!(
        fired_periods(&test, "tick"),
        vec![1_000_000, 1_000_010, 1_000_020, 1_000_030, 1_000_040]
    );
    let next: f64 = test.query(redis::cmd("ZSCORE").arg(periodic::NEXT_KEY).arg("tick"));
    assert_eq!(next, 1_000_050.0);
    let job = job_hash(&test, "periodic-tick-1000020");
    assert_eq!(job["origin"], "ticks");
    assert_eq!(job["status"], "queued");
    let meta: Vec<u8> = test.query(
        redis::cmd("HGET")
            .arg("rq:job:periodic-tick-1000020")
            .arg("meta"),
    );
    let (meta, _) = decode_value(&meta).expect("meta decodes");
    assert!(meta.get("scheduled_for").is_some(), "meta: {meta}");
    assert_eq!(list(&test, "rq:queue:ticks").len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periods_missed_while_no_scheduler_ran_fire_once_or_are_skipped() {
    let test = TestRedis::new();
    let redis = client(&test);
    let mut conn = redis.conn().await.expect("conn");
    periodic::save(&mut conn, &every("once", 10, Misfire::FireOnce))
        .await
        .expect("save");
    periodic::save(&mut conn, &every("skip", 10, Misfire::Skip))
        .await
        .expect("save");
    set_next(&test, "once", 2_000_000);
    set_next(&test, "skip", 2_000_000);

    // Back after 1,000 s (grace 300): 100 periods missed.
    periodic::fire_due(&mut conn, 2_001_003, 300)
        .await
        .expect("fire");
    assert_eq!(
        fired_periods(&test, "once"),
        vec![2_001_000],
        "one run, for the latest missed period"
    );
    assert_eq!(fired_periods(&test, "skip"), Vec::<i64>::new());
    let next: BTreeMap<String, f64> = test.query(
        redis::cmd("ZRANGE")
            .arg(periodic::NEXT_KEY)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES"),
    );
    assert_eq!(next["once"], 2_001_013.0);
    assert_eq!(next["skip"], 2_001_013.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclaring_an_unchanged_job_keeps_its_next_run_and_removal_stops_it() {
    let test = TestRedis::new();
    let redis = client(&test);
    let mut conn = redis.conn().await.expect("conn");
    let job = every("daily", 86_400, Misfire::FireOnce);
    periodic::save(&mut conn, &job).await.expect("save");
    set_next(&test, "daily", 42);
    periodic::save(&mut conn, &job).await.expect("save again");
    let next: f64 = test.query(redis::cmd("ZSCORE").arg(periodic::NEXT_KEY).arg("daily"));
    assert_eq!(
        next, 42.0,
        "a restart re-declaring the job must not move its period"
    );
    periodic::save(&mut conn, &every("daily", 3600, Misfire::FireOnce))
        .await
        .expect("change");
    let next: f64 = test.query(redis::cmd("ZSCORE").arg(periodic::NEXT_KEY).arg("daily"));
    assert!(next > now_s(), "a changed schedule starts from now");
    assert_eq!(periodic::list(&mut conn).await.expect("list").len(), 1);
    assert!(periodic::remove(&mut conn, "daily").await.expect("remove"));
    assert!(!periodic::remove(&mut conn, "daily")
        .await
        .expect("remove again"));
    assert_eq!(
        periodic::fire_due(&mut conn, i64::MAX / 2, 300)
            .await
            .expect("fire"),
        0
    );
}

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
