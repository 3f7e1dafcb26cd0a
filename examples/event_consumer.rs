//! A consumer of HDX's change events (the Redis stream that `detect_changes` jobs append to):
//! a handler of its own, in a consumer group, acknowledging each event once handled. An event
//! whose handler fails stays pending and comes back later; a restarted consumer resumes.
//!
//! ```sh
//! REDIS_STREAM_URL=redis://127.0.0.1:6379/3 cargo run -p hdx-jobs-examples --example event_consumer
//! ```

use std::sync::Mutex;

use async_trait::async_trait;
use hdx_jobs::events::consumer::{
    Consumer, ConsumerOptions, EventHandler, HandlerError, StreamEvent,
};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Keeps the datasets whose resources changed, e.g. to refresh a search index.
#[derive(Debug, Default)]
pub struct ChangedDatasets {
    /// Dataset names, in the order the events came.
    pub names: Mutex<Vec<String>>,
}

#[async_trait]
impl EventHandler for ChangedDatasets {
    async fn handle(&self, event: &StreamEvent) -> Result<(), HandlerError> {
        let name = event.body["dataset_name"]
            .as_str()
            .ok_or_else(|| HandlerError(format!("event {} has no dataset_name", event.id)))?;
        self.names
            .lock()
            .map_err(|_| HandlerError("poisoned".into()))?
            .push(name.to_string());
        Ok(())
    }
}

/// The consumer's settings: HDX's stream, a group of this service's own.
pub fn options(stream_url: &str) -> ConsumerOptions {
    ConsumerOptions {
        url: stream_url.to_string(),
        stream: "hdx_event_stream".into(),
        group: "search-indexer".into(),
        consumer: "indexer-1".into(),
        types: vec!["resource-created".into(), "resource-data-changed".into()],
        batch: 50,
        block: Duration::from_millis(500),
        claim_idle: Duration::from_secs(60),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url =
        std::env::var("REDIS_STREAM_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/3".into());
    let handler = ChangedDatasets::default();
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        on_signal.cancel();
    });
    let stats = Consumer::new(options(&url))?.run(&handler, stop).await;
    println!(
        "{stats:?}; datasets: {:?}",
        handler.names.lock().map(|n| n.clone())
    );
    Ok(())
}
