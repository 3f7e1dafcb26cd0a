//! Successes are written in batches: the jobs that end while the previous write is in flight
//! go to Redis together, in one call of `finish.lua`.
//!
//! Redis's time per job is what bounds a worker's throughput on short jobs, and a script pays
//! for every command it runs: written one by one, each success would also update the worker
//! hash, the metrics and the history on its own. Batched, those are written once per call.
//! Nothing waits to fill a batch: a lone success is written at once, as before. A job's slot
//! is freed only once its own outcome is recorded, so batching never lets a worker run more
//! jobs than its concurrency, and a process that dies loses at most the outcomes not yet
//! written, whose leases then expire as they always did (maintenance takes them).
//! Failures, rarer and with more branches, keep their one call each (`fail.lua`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::{Shared, StartedEntry};
use crate::rq::error::{RqError, RqResult};
use crate::rq::scripts;

/// Most successes written by one call.
const MAX_BATCH: usize = 64;

/// How long a batch keeps trying through a Redis outage before its jobs are left to
/// maintenance.
const GIVE_UP_AFTER: Duration = Duration::from_secs(600);

/// One success to record (`finish.lua`'s per-job arguments).
pub(super) struct Success {
    pub(super) job_id: String,
    pub(super) execution_id: String,
    pub(super) origin: String,
    /// The end, as RQ writes timestamps (the worker's clock).
    pub(super) ended_text: String,
    /// Start and end as Unix seconds, for the result entry.
    pub(super) started_secs: String,
    pub(super) ended_secs: String,
    /// The encoded return value ('' for None).
    pub(super) return_value: String,
    pub(super) duration_secs: f64,
    pub(super) func: String,
    pub(super) bucket: String,
}

/// `true`: recorded; `false`: the lease was lost (maintenance handled the job).
type Reply = oneshot::Sender<Result<bool, String>>;

/// The worker's queue of successes to write.
pub(crate) struct SuccessWriter {
    tx: mpsc::UnboundedSender<(Success, Reply)>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<(Success, Reply)>>>,
}

impl SuccessWriter {
    pub(crate) fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        SuccessWriter {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }

    /// Queues a success and waits until it is written (`Ok(false)`: the lease was lost).
    pub(super) async fn record(&self, success: Success) -> RqResult<bool> {
        let (reply, written) = oneshot::channel();
        self.tx
            .send((success, reply))
            .map_err(|_| RqError::Refused("the worker's success writer has stopped".into()))?;
        match written.await {
            Ok(Ok(recorded)) => Ok(recorded),
            Ok(Err(e)) => Err(RqError::Refused(e)),
            Err(_) => Err(RqError::Refused(
                "the worker's success writer has stopped".into(),
            )),
        }
    }
}

/// Writes queued successes until the worker's background tasks are stopped (after every job
/// has ended, so none is left unwritten).
pub(super) async fn write_loop(shared: Arc<Shared>) {
    let Some(mut rx) = shared.successes.rx.lock().ok().and_then(|mut rx| rx.take()) else {
        return;
    };
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let first = tokio::select! {
            first = rx.recv() => first,
            _ = shared.background.cancelled() => None,
        };
        let Some(first) = first else { return };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (successes, replies): (Vec<Success>, Vec<Reply>) = batch.drain(..).unzip();
        match write(&shared, &successes).await {
            Ok(recorded) => {
                for (reply, recorded) in replies.into_iter().zip(recorded) {
                    let _ = reply.send(Ok(recorded));
                }
            }
            Err(e) => {
                let message = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(message.clone()));
                }
            }
        }
    }
}

/// One `finish.lua` call for the batch, retried through connection errors.
async fn write(shared: &Shared, successes: &[Success]) -> RqResult<Vec<bool>> {
    let next_current = next_current_job(shared, successes);
    let give_up_at = Instant::now() + GIVE_UP_AFTER;
    let recorded: Vec<i64> = shared
        .conn
        .run_retrying(
            "recording successes",
            |mut conn| {
                let mut invocation = scripts::FINISH.prepare_invoke();
                invocation
                    .arg(&shared.name)
                    .arg(shared.options.default_result_ttl)
                    .arg(&next_current)
                    .arg(u8::from(
                        shared.options.started_entry == StartedEntry::JobId,
                    ))
                    .arg(successes.len());
                for s in successes {
                    invocation
                        .arg(&s.job_id)
                        .arg(&s.execution_id)
                        .arg(&s.origin)
                        .arg(&s.ended_text)
                        .arg(&s.started_secs)
                        .arg(&s.ended_secs)
                        .arg(&s.return_value)
                        .arg(s.duration_secs)
                        .arg(&s.func)
                        .arg(&s.bucket);
                }
                async move { Ok(invocation.invoke_async(&mut conn).await?) }
            },
            || Instant::now() > give_up_at,
        )
        .await?;
    if recorded.len() != successes.len() {
        return Err(RqError::Refused(format!(
            "finish.lua answered for {} of {} jobs",
            recorded.len(),
            successes.len()
        )));
    }
    Ok(recorded.into_iter().map(|r| r == 1).collect())
}

/// Another running job of ours to show as `current_job` once these have ended.
fn next_current_job(shared: &Shared, ending: &[Success]) -> String {
    shared
        .running
        .lock()
        .ok()
        .and_then(|running| {
            running
                .keys()
                .find(|id| !ending.iter().any(|s| &s.job_id == *id))
                .cloned()
        })
        .unwrap_or_default()
}
