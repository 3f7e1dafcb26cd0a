//! Workers that die or are told to stop: no job is lost, none stays in limbo.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::*;
use testkit::redis;
use testkit::TestRedis;

fn zmembers(test: &TestRedis, key: &str) -> Vec<String> {
    test.query(redis::cmd("ZRANGE").arg(key).arg(0).arg(-1))
}

fn llen(test: &TestRedis, key: &str) -> u64 {
    test.query(redis::cmd("LLEN").arg(key))
}

/// The acceptance test of "no job lost when a worker dies": SIGKILL a worker running four jobs;
/// another worker's maintenance fails (or retries) each of them once its lease expires, and
/// every enqueued id ends finished or failed.
#[test]
fn a_killed_workers_jobs_are_recovered_and_nothing_is_lost() {
    let test = TestRedis::new();
    let mut ids = enqueue(
        &test,
        &[
            "--queue",
            "work",
            "--func",
            "hdx_jobs.sleep",
            "--args",
            "[1.5]",
            "--count",
            "12",
        ],
    );
    ids.extend(enqueue(
        &test,
        &[
            "--queue",
            "work",
            "--func",
            "hdx_jobs.sleep",
            "--args",
            "[1.5]",
            "--count",
            "8",
            "--retry",
            "1",
        ],
    ));
    let retryable: HashSet<String> = ids[12..].iter().cloned().collect();

    let mut doomed = WorkerProcess::start(
        &test,
        &[&FAST[..], &["--concurrency", "4", "work"]].concat(),
    );
    let victims: Vec<String> =
        testkit::eventually("4 jobs running", Duration::from_secs(20), || {
            let running = zmembers(&test, "rq:wip:work");
            (running.len() == 4).then_some(running)
        });
    doomed.signal(libc::SIGKILL);
    doomed.wait(Duration::from_secs(10));
    let killed_at = Instant::now();

    let mut rescuer = WorkerProcess::start(
        &test,
        &[&FAST[..], &["--concurrency", "4", "work"]].concat(),
    );
    let statuses: HashMap<String, String> =
        testkit::eventually("every job to end", Duration::from_secs(60), || {
            let statuses: HashMap<String, String> = ids
                .iter()
                .map(|id| (id.clone(), status(&test, id).unwrap_or_default()))
                .collect();
            statuses
                .values()
                .all(|s| s == "finished" || s == "failed")
                .then_some(statuses)
        });
    let recovered_in = killed_at.elapsed();
    rescuer.signal(libc::SIGTERM);
    assert!(rescuer.wait(Duration::from_secs(20)).success());

    // Every id is accounted for; nothing is left running, queued or half-dequeued.
    assert_eq!(statuses.len(), 20);
    assert!(zmembers(&test, "rq:wip:work").is_empty());
    assert_eq!(llen(&test, "rq:queue:work"), 0);
    assert_eq!(llen(&test, "rq:queue:work:intermediate"), 0);
    let finished: HashSet<String> = zmembers(&test, "rq:finished:work").into_iter().collect();
    let failed: HashSet<String> = zmembers(&test, "rq:failed:work").into_iter().collect();
    assert_eq!(finished.len() + failed.len(), 20);
    // The killed worker's jobs: failed as abandoned, or run again when they had a retry.
    for member in &victims {
        let id = member.split(':').next().expect("id");
        let expected = if retryable.contains(id) {
            "finished"
        } else {
            "failed"
        };
        assert_eq!(statuses[id], expected, "victim {id}");
        if expected == "failed" {
            let shown = show(&test, id);
            let text = shown["latest_result"]["exc_string"].as_str().unwrap_or("");
            assert!(text.contains("AbandonedJobError"), "{text}");
        }
    }
    assert!(
        victims
            .iter()
            .any(|m| !retryable.contains(m.split(':').next().unwrap_or(""))),
        "some victims lacked retries"
    );
    // Bound documented in docs/ARCHITECTURE.md: lease (interval + grace) + maintenance interval
    // + the time to run the remaining jobs; generous here for slow CI machines.
    assert!(
        recovered_in < Duration::from_secs(45),
        "recovered in {recovered_in:?}"
    );
}

#[test]
fn first_sigterm_stops_warm_second_stops_cold() {
    let test = TestRedis::new();
    let short = enqueue(
        &test,
        &["--queue", "q", "--func", "hdx_jobs.sleep", "--args", "[1]"],
    )
    .remove(0);
    let mut worker = WorkerProcess::start(&test, &["q"]);
    testkit::eventually("the short job to start", Duration::from_secs(20), || {
        (status(&test, &short).as_deref() == Some("started")).then_some(())
    });
    let queued = enqueue(
        &test,
        &["--queue", "q", "--func", "hdx_jobs.noop", "--in", "0"],
    );
    worker.signal(libc::SIGTERM);
    assert!(worker.wait(Duration::from_secs(20)).success());
    assert_eq!(
        status(&test, &short).as_deref(),
        Some("finished"),
        "warm: the running job finished"
    );
    assert!(
        queued
            .iter()
            .all(|id| status(&test, id).as_deref() != Some("finished")),
        "warm: nothing new taken"
    );

    let long = enqueue(
        &test,
        &[
            "--queue",
            "q2",
            "--func",
            "hdx_jobs.sleep",
            "--args",
            "[120]",
        ],
    )
    .remove(0);
    let mut worker = WorkerProcess::start(&test, &["q2"]);
    testkit::eventually("the long job to start", Duration::from_secs(20), || {
        (status(&test, &long).as_deref() == Some("started")).then_some(())
    });
    worker.signal(libc::SIGTERM);
    // Signals sent back to back may be delivered as one: send the second once the first is seen.
    testkit::eventually("the warm stop to begin", Duration::from_secs(20), || {
        worker.log().contains("warm shutdown").then_some(())
    });
    worker.signal(libc::SIGTERM);
    let started = Instant::now();
    assert!(worker.wait(Duration::from_secs(20)).success());
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(
        status(&test, &long).as_deref(),
        Some("failed"),
        "cold: recorded, not left started"
    );
    let text = show(&test, &long)["latest_result"]["exc_string"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(text.contains("WorkerShutdown"), "{text}");
    assert!(zmembers(&test, "rq:wip:q2").is_empty());
    let workers: Vec<String> = test.query(redis::cmd("SMEMBERS").arg("rq:workers"));
    assert!(workers.is_empty(), "both workers registered their death");
}

/// Lease expiry is judged on Redis's clock, not the host's: a worker whose clock runs ten
/// minutes ahead (libfaketime, Debian's `faketime`, installed by scripts/setup.sh) must not
/// fail the jobs another worker is running. Before, its maintenance saw every lease as long
/// expired and failed them as abandoned.
#[test]
fn regression_a_worker_with_a_fast_clock_does_not_take_over_live_jobs() {
    let test = TestRedis::new();
    let ids = enqueue(
        &test,
        &[
            "--queue",
            "work",
            "--func",
            "hdx_jobs.sleep",
            "--args",
            "[6]",
            "--count",
            "2",
        ],
    );
    let mut runner = WorkerProcess::start(
        &test,
        &[&FAST[..], &["--concurrency", "2", "work"]].concat(),
    );
    testkit::eventually("both jobs running", Duration::from_secs(20), || {
        (zmembers(&test, "rq:wip:work").len() == 2).then_some(())
    });
    // libfaketime preloaded into the worker itself (not through the `faketime` wrapper, which
    // would stay the parent: killing it would leave the worker running).
    let faketime = format!(
        "/usr/lib/{}-linux-gnu/faketime/libfaketime.so.1",
        std::env::consts::ARCH
    );
    assert!(
        std::path::Path::new(&faketime).exists(),
        "{faketime} missing: Debian's faketime package (scripts/setup.sh installs it)"
    );
    let mut skewed = WorkerProcess::start_with_env(
        &test,
        &[&["work"], &FAST[..], &["work"]].concat(),
        &[
            ("LD_PRELOAD", faketime.as_str()),
            ("FAKETIME", "+10m"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    // The skewed worker registers, and its clock really is ahead: its birth (written from its
    // host clock) is minutes in the future.
    let workers = testkit::eventually(
        "the skewed worker to register",
        Duration::from_secs(20),
        || {
            let workers: Vec<String> = test.query(redis::cmd("SMEMBERS").arg("rq:workers:work"));
            (workers.len() == 2).then_some(workers)
        },
    );
    let births: Vec<String> = workers
        .iter()
        .map(|key| test.query(redis::cmd("HGET").arg(key).arg("birth")))
        .collect();
    let soon = (chrono::Utc::now() + chrono::Duration::minutes(5))
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    assert!(
        births.iter().any(|b| b.as_str() > soon.as_str()),
        "no worker clock is ahead: {births:?}"
    );
    for id in &ids {
        let status = testkit::eventually("the job to end", Duration::from_secs(60), || {
            status(&test, id).filter(|s| s == "finished" || s == "failed")
        });
        assert_eq!(status, "finished", "{id} was taken over:\n{}", skewed.log());
    }
    skewed.signal(libc::SIGTERM);
    assert!(skewed.wait(Duration::from_secs(20)).success());
    runner.signal(libc::SIGTERM);
    assert!(runner.wait(Duration::from_secs(20)).success());
}
