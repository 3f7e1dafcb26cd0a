//! Embedding hdx-jobs in another Rust service: define a task, enqueue it, run a worker in the
//! same process, read the results, stop the worker.
//!
//! ```sh
//! HDX_REDIS_URL=redis://127.0.0.1:6379/3 cargo run -p hdx-jobs-examples --example embedded_worker
//! ```
//!
//! Python RQ tools see everything it does: `rq info -u $HDX_REDIS_URL` lists the worker while it
//! runs, and the jobs are ordinary RQ jobs.

use std::time::Duration;

use async_trait::async_trait;
use hdx_jobs::{JobContext, JobSpec, Queue, RedisClient, Retry, Task, TaskError, TaskRegistry};
use hdx_jobs::{Worker, WorkerOptions};
use serde::Deserialize;
use serde_json::{json, Value};

/// The wire name other services (Python ones too) enqueue the task under.
pub const WORD_COUNT: &str = "textservice.tasks.word_count";

/// Arguments: `word_count({"text": "...", "top": 3})`, or the same as keyword arguments.
#[derive(Debug, Deserialize)]
pub struct WordCountArgs {
    text: String,
    #[serde(default = "three")]
    top: usize,
}

fn three() -> usize {
    3
}

/// Counts words, reporting progress in the job's meta.
pub struct WordCount;

#[async_trait]
impl Task for WordCount {
    type Args = WordCountArgs;
    type Output = Value;

    async fn run(&self, ctx: &JobContext, args: WordCountArgs) -> Result<Value, TaskError> {
        if args.text.trim().is_empty() {
            // Bad input: retrying will not help.
            return Err(TaskError::permanent("ValueError", "no text to count"));
        }
        let mut counts = std::collections::BTreeMap::<String, u64>::new();
        let words: Vec<&str> = args.text.split_whitespace().collect();
        for (i, word) in words.iter().enumerate() {
            *counts.entry(word.to_lowercase()).or_default() += 1;
            if i % 1000 == 0 {
                ctx.set_progress(i as u64, Some(words.len() as u64), "counting")
                    .await?;
            }
        }
        let mut top: Vec<(String, u64)> = counts.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        top.truncate(args.top);
        Ok(json!({"words": words.len(), "top": top}))
    }
}

/// Runs the example against `redis_url`; returns the results of the jobs it enqueued.
pub async fn run(redis_url: &str) -> Result<Vec<Value>, Box<dyn std::error::Error>> {
    let redis = RedisClient::open(redis_url)?;

    // 1. The service's own tasks, plus hdx-jobs' operational ones.
    let mut tasks = TaskRegistry::with_builtins();
    tasks.register(WORD_COUNT, WordCount);

    // 2. A worker in the same process, on the service's queue.
    let options = WorkerOptions {
        queues: vec!["text".into()],
        concurrency: 2,
        ..WorkerOptions::default()
    };
    let worker = Worker::new(redis.clone(), tasks, options)?;
    let stop = worker.stop_handle();
    let running = tokio::spawn(worker.run());

    // 3. Enqueue work, as any producer would.
    let queue = Queue::new(redis.clone(), "text")?;
    let ids = queue
        .enqueue_many(vec![
            JobSpec::new(WORD_COUNT).arg(json!({"text": "the cat and the hat and the bat"})),
            JobSpec::new(WORD_COUNT)
                .kwarg("text", "to be or not to be")
                .kwarg("top", 1),
            JobSpec::new(WORD_COUNT)
                .arg(json!({"text": "   "}))
                .retry(Retry::new(2)),
        ])
        .await?;

    // 4. Wait for the outcomes.
    let mut results = Vec::new();
    for id in &ids {
        let view = loop {
            match queue.fetch_job(id).await? {
                Some(view) if view.status.is_ended() => break view,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let outcome = view.latest_result.as_ref();
        results.push(json!({
            "id": id,
            "status": view.status,
            "result": outcome.and_then(|r| r.return_value.clone()),
            "error": outcome.and_then(|r| r.exc_string.clone()),
        }));
    }

    // 5. Stop the worker warm (running jobs would finish first).
    stop.warm();
    running.await??;
    Ok(results)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let url = std::env::var("HDX_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/3".into());
    for result in run(&url).await? {
        println!("{result}");
    }
    Ok(())
}
