//! Runs the examples against a test database, so they keep working.

#[allow(dead_code)]
#[path = "../embedded_worker.rs"]
mod embedded_worker;

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
