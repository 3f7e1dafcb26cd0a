//! A producer-only service: it enqueues jobs for Python RQ workers (functions of a Python
//! module, here `pyjobs.add` and `pyjobs.fail`), runs no worker itself, and reads the outcomes
//! the Python workers record. The payloads are pickled, as RQ's default serializer expects.
//!
//! ```sh
//! HDX_REDIS_URL=redis://127.0.0.1:6379/3 cargo run -p hdx-jobs-examples --example producer
//! # meanwhile, in Python:  rq worker --burst -u redis://127.0.0.1:6379/3 pyjobs
//! ```

use std::time::Duration;

use hdx_jobs::{JobSpec, Queue, RedisClient, Retry, RqError};
use serde_json::{json, Value};

/// The queue the Python workers serve.
pub const QUEUE: &str = "pyjobs";

/// Enqueues the work; returns the job ids.
pub async fn enqueue(redis_url: &str) -> Result<Vec<String>, RqError> {
    let queue = Queue::new(RedisClient::open(redis_url)?, QUEUE)?;
    queue
        .enqueue_many(vec![
            // `pyjobs.add(2, 3)` in Python.
            JobSpec::new("pyjobs.add").arg(2).arg(3),
            // Keyword arguments, a timeout and retries work as with Python's `Queue.enqueue`.
            JobSpec::new("pyjobs.add")
                .kwarg("a", 40)
                .kwarg("b", 2)
                .timeout(30),
            JobSpec::new("pyjobs.fail")
                .arg("the Python side raised")
                .retry(Retry::new(1)),
        ])
        .await
}

/// Waits (up to `patience`) until every job has ended; returns `{id, status, result, error}`
/// for each, in order.
pub async fn outcomes(
    redis_url: &str,
    ids: &[String],
    patience: Duration,
) -> Result<Vec<Value>, Box<dyn std::error::Error>> {
    let queue = Queue::new(RedisClient::open(redis_url)?, QUEUE)?;
    let deadline = tokio::time::Instant::now() + patience;
    let mut outcomes = Vec::new();
    for id in ids {
        let view = loop {
            match queue.fetch_job(id).await? {
                Some(view) if view.status.is_ended() => break view,
                _ if tokio::time::Instant::now() > deadline => {
                    return Err(format!("job {id} did not end within {patience:?}").into())
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let result = view.latest_result.as_ref();
        outcomes.push(json!({
            "id": id,
            "status": view.status,
            "result": result.and_then(|r| r.return_value.clone()),
            "error": result.and_then(|r| r.exc_string.as_deref()).map(|e| e.trim_end().lines().last().unwrap_or_default().to_string()),
        }));
    }
    Ok(outcomes)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("HDX_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/3".into());
    let ids = enqueue(&url).await?;
    println!("enqueued {ids:?}; waiting for a Python worker on {QUEUE:?}");
    for outcome in outcomes(&url, &ids, Duration::from_secs(600)).await? {
        println!("{outcome}");
    }
    Ok(())
}
