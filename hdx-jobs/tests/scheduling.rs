//! Periodic jobs fired exactly once and misfire policies. The scheduled CKAN API call and jobs
//! of the rq-scheduler package are in `scheduled_api_call.rs` (they need the `api-call` feature).

mod common;

use std::collections::BTreeMap;

use common::*;
use hdx_jobs::rq::payload::decode_value;
use hdx_jobs::rq::scheduler::periodic::{self, Misfire, PeriodicJob, Schedule};
use testkit::TestRedis;

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
