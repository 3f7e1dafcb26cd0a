//! The job `eventapi.tasks.detect_changes.detect_changes`: CKAN (through the API) sends
//! `{username, old_dataset_dict, new_dataset_dict}`; the job detects the change events and pushes
//! them to the event bus, once per job id. Its result is the list of events (the old task
//! returned them too).

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::bus::{EventBus, EventBusOptions};
use super::detect::detect_changes;
use super::event::{event_time_now, ChangeEvent};
use crate::config::Config;
use crate::task::{JobContext, Task, TaskError, TaskRegistry};

/// The wire name of the old service.
pub const DETECT_CHANGES: &str = "eventapi.tasks.detect_changes.detect_changes";

/// The job's argument (one dict, as the old API enqueued it).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DetectChangesArgs {
    /// Who made the change.
    #[serde(default)]
    pub username: Value,
    /// The dataset before (`{}` or missing for a new dataset).
    #[serde(default)]
    pub old_dataset_dict: Value,
    /// The dataset after.
    #[serde(default)]
    pub new_dataset_dict: Value,
}

/// Detects change events and pushes them to the stream.
pub struct DetectChanges {
    bus: Result<Arc<EventBus>, String>,
}

impl DetectChanges {
    /// The task pushing to `bus`.
    pub fn new(bus: Arc<EventBus>) -> Self {
        DetectChanges { bus: Ok(bus) }
    }

    /// The task of the configured stream; a bad stream URL makes every job fail permanently
    /// with the reason.
    pub fn from_config(config: &Config) -> Self {
        DetectChanges {
            bus: EventBus::new(EventBusOptions::from_config(&config.events))
                .map(Arc::new)
                .map_err(|e| e.to_string()),
        }
    }
}

/// Registers the change-events task.
pub fn register(registry: &mut TaskRegistry, config: &Config) {
    registry.register(DETECT_CHANGES, DetectChanges::from_config(config));
}

#[async_trait]
impl Task for DetectChanges {
    type Args = DetectChangesArgs;
    type Output = Vec<ChangeEvent>;

    async fn run(
        &self,
        ctx: &JobContext,
        args: DetectChangesArgs,
    ) -> Result<Vec<ChangeEvent>, TaskError> {
        let bus = self
            .bus
            .as_ref()
            .map_err(|e| TaskError::permanent("wrong-configuration", e.clone()))?;
        // Large datasets (hundreds of resources with Markdown) take milliseconds: off the runtime.
        let events = tokio::task::spawn_blocking(move || {
            detect_changes(
                &args.username,
                &args.old_dataset_dict,
                &args.new_dataset_dict,
                &event_time_now(),
            )
        })
        .await
        .map_err(|e| TaskError::permanent("InternalError", format!("detection crashed: {e}")))?
        .map_err(|e| TaskError::permanent("bad-dataset-dict", e.to_string()))?;
        if events.is_empty() {
            tracing::info!(job = ctx.job_id(), "no change events");
            return Ok(events);
        }
        let outcome = bus
            .push(ctx.job_id(), &events)
            .await
            .map_err(|e| TaskError::retryable("RedisError", e.to_string()))?;
        tracing::info!(
            job = ctx.job_id(),
            stream = bus.stream(),
            events = events.len(),
            appended = outcome.appended,
            first_id = outcome.ids.first().map(String::as_str).unwrap_or(""),
            "change events pushed"
        );
        Ok(events)
    }
}
