//! Runs the examples against a test database, so they keep working: the embedded worker, the
//! producer with real Python RQ workers, and the change-event consumer.

#[allow(dead_code)]
#[path = "../embedded_worker.rs"]
mod embedded_worker;

#[allow(dead_code)]
#[path = "../producer.rs"]
mod producer;

#[cfg(feature = "events")]
#[allow(dead_code)]
#[path = "../event_consumer.rs"]
mod event_consumer;

use std::time::Duration;

use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_worker_runs_its_own_task() {
    let test = testkit::TestRedis::new();
    let results = embedded_worker::run(test.url())
        .await
        .expect("example runs");
    assert_eq!(results[0]["status"], "finished");
    assert_eq!(
        results[0]["result"],
        json!({"words": 8, "top": [["the", 3], ["and", 2], ["bat", 1]]})
    );
    assert_eq!(
        results[1]["result"],
        json!({"words": 6, "top": [["be", 2]]})
    );
    assert_eq!(results[2]["status"], "failed");
    assert!(results[2]["error"]
        .as_str()
        .unwrap_or("")
        .contains("ValueError: no text to count"));
}

/// Python RQ 2.12 and 1.13 workers run what the producer enqueues, and it reads their results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_producer_reads_what_python_workers_did() {
    for python in [testkit::python(), testkit::python_rq113()] {
        let test = testkit::TestRedis::new();
        let ids = producer::enqueue(test.url()).await.expect("enqueue");
        // A Python worker in burst mode, as `rq worker --burst pyjobs` (the failing job's retry
        // comes back to the queue at once, and the burst worker runs it again).
        let status = testkit::rq_peer_command_with(&python, test.url(), &["work", producer::QUEUE])
            .status()
            .expect("Python worker");
        assert!(status.success(), "{} worker failed", python.display());
        let outcomes = producer::outcomes(test.url(), &ids, Duration::from_secs(30))
            .await
            .expect("outcomes");
        assert_eq!(outcomes[0]["status"], "finished", "{outcomes:?}");
        assert_eq!(outcomes[0]["result"], 5);
        assert_eq!(outcomes[1]["result"], 42);
        assert_eq!(outcomes[2]["status"], "failed");
        let error = outcomes[2]["error"].as_str().unwrap_or_default();
        assert!(error.contains("the Python side raised"), "{error}");
    }
}

/// The consumer handles the wanted events of the stream and acknowledges them; others are
/// skipped.
#[cfg(feature = "events")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_consumer_handles_the_events_it_wants() {
    use hdx_jobs::events::consumer::Consumer;
    use tokio_util::sync::CancellationToken;

    let test = testkit::TestRedis::new();
    for (kind, dataset) in [
        ("resource-created", "cholera-cases"),
        ("dataset-deleted", "old-survey"),
        ("resource-data-changed", "flood-extent"),
    ] {
        let body = json!({"event_type": kind, "dataset_name": dataset});
        let _: String = test.query(
            testkit::redis::cmd("XADD")
                .arg("hdx_event_stream")
                .arg("*")
                .arg("event_type")
                .arg(kind)
                .arg("body")
                .arg(body.to_string()),
        );
    }
    let handler = std::sync::Arc::new(event_consumer::ChangedDatasets::default());
    let stop = CancellationToken::new();
    let consumer = Consumer::new(event_consumer::options(test.url())).expect("consumer");
    let running = {
        let (handler, stop) = (handler.clone(), stop.clone());
        tokio::spawn(async move { consumer.run(handler.as_ref(), stop).await })
    };
    testkit::eventually_async("both events handled", Duration::from_secs(20), || {
        let names = handler.names.lock().map(|n| n.clone()).unwrap_or_default();
        (names.len() == 2).then_some(())
    })
    .await;
    stop.cancel();
    let stats = running.await.expect("consumer");
    assert_eq!(
        *handler.names.lock().expect("names"),
        vec!["cholera-cases", "flood-extent"]
    );
    assert_eq!((stats.handled, stats.skipped), (2, 1));
    let pending: Vec<testkit::redis::Value> = test.query(
        testkit::redis::cmd("XPENDING")
            .arg("hdx_event_stream")
            .arg("search-indexer"),
    );
    assert_eq!(pending.first(), Some(&testkit::redis::Value::Int(0)));
}
