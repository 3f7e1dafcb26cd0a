//! Schedulers as processes: delayed jobs on time (ours and Python's `enqueue_in`), and periodic
//! jobs fired exactly once per period by three schedulers, one of them killed mid-way.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use testkit::redis;
use testkit::TestRedis;

fn times(test: &TestRedis, id: &str) -> (f64, f64) {
    let fields: Vec<Option<String>> = test.query(
        redis::cmd("HMGET")
            .arg(format!("rq:job:{id}"))
            .arg("created_at")
            .arg("started_at"),
    );
    let t = |s: &Option<String>| {
        let text = s.clone().unwrap_or_default();
        let at = chrono::NaiveDateTime::parse_from_str(
            text.trim_end_matches('Z'),
            "%Y-%m-%dT%H:%M:%S%.f",
        )
        .expect("time");
        at.and_utc().timestamp_micros() as f64 / 1e6
    };
    (t(&fields[0]), t(&fields[1]))
}

#[test]
fn delayed_jobs_run_on_time_ours_and_pythons() {
    let test = TestRedis::new();
    let _scheduler = WorkerProcess::start_command(&test, &["scheduler", "--interval", "0.2"]);
    let _worker = WorkerProcess::start(&test, &["delayed"]);
    let ours = enqueue(
        &test,
        &["--queue", "delayed", "--func", "hdx_jobs.noop", "--in", "2"],
    )
    .remove(0);
    let pythons = testkit::rq_peer(
        test.url(),
        &[
            "enqueue",
            "--queue",
            "delayed",
            "--func",
            "hdx_jobs.echo",
            "--args",
            "[1]",
            "--in",
            "2",
            "--serializer",
            "json",
        ],
    );
    // Python stores the time truncated to the second, so its job may run up to 1 s early (as
    // with Python's own scheduler); ours is rounded up and never early.
    for (id, earliest) in [(&ours, 2.0), (&pythons, 1.0)] {
        testkit::eventually(&format!("{id} to run"), Duration::from_secs(20), || {
            (status(&test, id).as_deref() == Some("finished")).then_some(())
        });
        let (created, started) = times(&test, id);
        let waited = started - created;
        assert!(
            (earliest..=4.0).contains(&waited),
            "{id} started {waited:.2} s after it was enqueued for +2 s"
        );
    }
}

#[test]
fn three_schedulers_fire_every_period_once_and_survive_the_active_ones_death() {
    let test = TestRedis::new();
    run_ok(
        &test,
        &[
            "schedule",
            "add",
            "tick",
            "--queue",
            "ticks",
            "--func",
            "hdx_jobs.noop",
            "--every",
            "1",
        ],
    );
    let flags = ["scheduler", "--interval", "0.2", "--lock-ttl", "2"];
    let mut schedulers: Vec<WorkerProcess> = (0..3)
        .map(|_| WorkerProcess::start_command(&test, &flags))
        .collect();
    let _worker = WorkerProcess::start(&test, &["--concurrency", "8", "ticks"]);

    let periods = |test: &TestRedis| -> Vec<i64> {
        let keys: Vec<String> = test.query(redis::cmd("KEYS").arg("rq:job:periodic-tick-*"));
        let mut p: Vec<i64> = keys
            .iter()
            .filter_map(|k| k.rsplit('-').next()?.parse().ok())
            .collect();
        p.sort_unstable();
        p
    };
    testkit::eventually("8 periods", Duration::from_secs(30), || {
        (periods(&test).len() >= 8).then_some(())
    });

    // Kill the scheduler holding the periodic lock (its pid is in its RQ scheduler hash).
    let holder: String = test.query(redis::cmd("GET").arg("hdx:periodic:lock"));
    let pid: u32 = test.query(
        redis::cmd("HGET")
            .arg(format!("rq:scheduler:{holder}"))
            .arg("pid"),
    );
    let index = schedulers
        .iter()
        .position(|s| s.child.id() == pid)
        .expect("the holder is one of ours");
    let mut dead = schedulers.remove(index);
    dead.signal(libc::SIGKILL);
    dead.wait(Duration::from_secs(10));

    testkit::eventually("20 periods", Duration::from_secs(60), || {
        (periods(&test).len() >= 20).then_some(())
    });
    run_ok(&test, &["schedule", "remove", "tick"]);
    let fired = periods(&test);
    // Every period from the first to the last, each exactly once, none lost while the lock
    // passed to another scheduler.
    let expected: Vec<i64> = (fired[0]..=fired[fired.len() - 1]).collect();
    assert_eq!(fired, expected, "a period was lost");
    testkit::eventually("every period's job to run", Duration::from_secs(30), || {
        fired
            .iter()
            .all(|p| status(&test, &format!("periodic-tick-{p}")).as_deref() == Some("finished"))
            .then_some(())
    });
    let mut runs: HashMap<i64, usize> = HashMap::new();
    for p in &fired {
        let entries: usize =
            test.query(redis::cmd("XLEN").arg(format!("rq:results:periodic-tick-{p}")));
        runs.insert(*p, entries);
    }
    assert!(
        runs.values().all(|n| *n == 1),
        "a period ran twice: {runs:?}"
    );
    let new_holder: String = test.query(redis::cmd("GET").arg("hdx:periodic:lock"));
    assert_ne!(new_holder, holder, "another scheduler took over");
}
