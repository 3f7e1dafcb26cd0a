//! Waiting for work without taking it.
//!
//! Python RQ blocks in `BLPOP`/`BLMOVE`, which takes a job off the queue before it is started:
//! a worker dying right then loses it (BLPOP) or strands it (BLMOVE into the intermediate list).
//! We only *watch*: one task per queue blocks in `BLMOVE q q RIGHT RIGHT`, which on a non-empty
//! list moves the last element onto itself (the list is unchanged) and on an empty one waits
//! until something is pushed. When it returns, the fetch loop is woken and takes jobs with the
//! atomic dequeue script. Each watcher keeps at most one blocking command in flight.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use super::connection::{Backoff, SharedConnection};
use super::{Shared, StopLevel};
use crate::rq::keys;

/// Seconds a watcher blocks before it re-issues its command.
const BLOCK_SECS: u64 = 5;

/// Wakes the fetch loop when one of its queues gets work.
pub(super) struct WorkWaiter {
    /// Incremented each time the fetch loop found nothing and starts waiting.
    armed: watch::Sender<u64>,
    wake: Arc<Notify>,
}

impl WorkWaiter {
    /// Starts one watcher per queue in `tasks` (they stop with the worker's background token).
    pub(super) fn start(shared: &Arc<Shared>, tasks: &mut JoinSet<()>) -> Self {
        let armed = watch::channel(0u64).0;
        let wake = Arc::new(Notify::new());
        for queue in &shared.options.queues {
            tasks.spawn(watch_queue(
                shared.clone(),
                queue.clone(),
                armed.subscribe(),
                wake.clone(),
            ));
        }
        WorkWaiter { armed, wake }
    }

    /// Waits until a queue gets work, the worker is asked to stop, or a while passes (a safety
    /// net: the fetch loop then simply looks again).
    pub(super) async fn wait(&self, stop: &mut watch::Receiver<StopLevel>) {
        let notified = self.wake.notified();
        self.armed.send_modify(|generation| *generation += 1);
        tokio::select! {
            _ = notified => {}
            _ = stop.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(BLOCK_SECS * 2)) => {}
        }
    }
}

async fn watch_queue(
    shared: Arc<Shared>,
    queue: String,
    mut armed: watch::Receiver<u64>,
    wake: Arc<Notify>,
) {
    let conn = SharedConnection::new(
        shared.redis.clone(),
        Some(Duration::from_secs(BLOCK_SECS + 10)),
    );
    let key = keys::queue(&queue);
    let stopping = shared.background.clone();
    let mut backoff = Backoff::new();
    loop {
        // Wait until the fetch loop is waiting for work.
        tokio::select! {
            changed = armed.changed() => if changed.is_err() { return },
            _ = stopping.cancelled() => return,
        }
        loop {
            let blocked = conn.run(|mut c| {
                let key = key.clone();
                async move {
                    let element: Option<String> = redis::cmd("BLMOVE")
                        .arg(&key)
                        .arg(&key)
                        .arg("RIGHT")
                        .arg("RIGHT")
                        .arg(BLOCK_SECS)
                        .query_async(&mut c)
                        .await?;
                    Ok(element)
                }
            });
            let result = tokio::select! {
                r = blocked => r,
                _ = stopping.cancelled() => return,
            };
            match result {
                Ok(Some(_)) => {
                    backoff.reset();
                    wake.notify_one();
                    break;
                }
                // Timed out: keep watching while the fetch loop may still be waiting.
                Ok(None) => {
                    backoff.reset();
                    if armed.has_changed().unwrap_or(false) {
                        armed.mark_unchanged();
                    }
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::debug!(queue, error = %e, "queue watcher lost redis; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stopping.cancelled() => return,
                    }
                }
            }
        }
    }
}
