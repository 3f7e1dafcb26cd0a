//! The worker's command channel `rq:pubsub:<name>` (docs/rq-protocol.md §5.9).

use std::sync::Arc;

use futures_util::StreamExt;
use tokio::sync::oneshot;

use super::connection::Backoff;
use super::{Shared, StopReason};
use crate::rq::commands::Command;
use crate::rq::keys;

/// Listens for commands until the worker stops, resubscribing after connection losses.
/// `subscribed` is told once the first subscription is in place.
pub(super) async fn command_loop(shared: Arc<Shared>, subscribed: oneshot::Sender<()>) {
    let channel = keys::pubsub(&shared.name);
    let stopping = shared.background.clone();
    let mut backoff = Backoff::new();
    let mut tell_subscribed = Some(subscribed);
    loop {
        let subscribed = async {
            let mut pubsub = shared.redis.pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, crate::rq::error::RqError>(pubsub)
        };
        let pubsub = tokio::select! {
            r = subscribed => r,
            _ = stopping.cancelled() => return,
        };
        match pubsub {
            Ok(mut pubsub) => {
                backoff.reset();
                if let Some(tell) = tell_subscribed.take() {
                    let _ = tell.send(());
                }
                let mut messages = pubsub.on_message();
                loop {
                    let message = tokio::select! {
                        m = messages.next() => m,
                        _ = stopping.cancelled() => return,
                    };
                    let Some(message) = message else { break };
                    let text: String = message.get_payload().unwrap_or_default();
                    handle(&shared, &text);
                }
                tracing::debug!(worker = %shared.name, "command channel closed; resubscribing");
            }
            Err(e) => {
                tracing::debug!(worker = %shared.name, error = %e, "cannot subscribe to commands")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = stopping.cancelled() => return,
        }
    }
}

fn handle(shared: &Shared, text: &str) {
    match Command::parse(text) {
        Some(Command::Shutdown) => {
            tracing::info!(worker = %shared.name, "shutdown command: stopping warm");
            shared.stop.warm();
        }
        Some(Command::KillHorse) => {
            let n = shared.stop_jobs(StopReason::KillHorse, |_, _| true);
            tracing::warn!(worker = %shared.name, jobs = n, "kill-horse command: killing running jobs");
        }
        Some(Command::StopJob { job_id }) => {
            if shared.stop_job(&job_id) {
                tracing::warn!(worker = %shared.name, job_id, "stop-job command: stopping the job");
            } else {
                tracing::info!(worker = %shared.name, job_id, "stop-job command for a job this worker does not run (yet): stopped if it starts here");
            }
        }
        None => tracing::debug!(worker = %shared.name, message = text, "ignoring unknown command"),
    }
}
