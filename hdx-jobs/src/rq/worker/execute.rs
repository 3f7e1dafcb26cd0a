//! Taking jobs and running them: the fetch loop, one job's run, and recording its outcome.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::connection::Backoff;
use super::successes::Success;
use super::wait::WorkWaiter;
use super::{RunningJob, Shared, StartedEntry, StopLevel, StopReason};
use crate::rq::error::{RqError, RqResult};
use crate::rq::job::{new_execution_id, Job};
use crate::rq::payload::{CallPayload, PayloadError, Serializer};
use crate::rq::results::{encode_exc_string, encode_return_value};
use crate::rq::scripts;
use crate::rq::time::{format_epoch_f64, Timestamp};
use crate::task::{CallArgs, JobContext, JobIdentity, TaskError};

/// Most jobs taken in one dequeue call.
const MAX_BATCH: usize = 64;

/// The exc_string recorded for an id whose hash was gone when it was dequeued.
const MISSING_HASH_TEXT: &str =
    "JobHashMissing: the job hash was gone when a worker took its id off the \
queue (its ttl expired or it was deleted); there was nothing to run.\n";

/// A job the dequeue script started.
struct StartedJob {
    id: String,
    execution_id: String,
    /// What the worker runs it from: data, origin, timeout, created_at, hdx_attempt.
    fields: HashMap<String, Vec<u8>>,
}

/// One entry of dequeue.lua's reply: queue, job id, execution id ('' when the hash was gone),
/// the fields as flat pairs, the attempt started.
type DequeuedEntry = (String, String, String, Vec<Vec<u8>>, i64);

enum Dequeued {
    Jobs(Vec<StartedJob>),
    Suspended,
}

/// Takes jobs while the worker runs and slots are free; returns on a stop or, in burst mode,
/// once the queues are empty and nothing runs.
pub(super) async fn fetch_loop(shared: &Arc<Shared>, waiter: Option<&WorkWaiter>) {
    let slots = Arc::new(Semaphore::new(shared.options.concurrency));
    let mut stop = shared.stop.subscribe();
    let mut backoff = Backoff::new();
    loop {
        if *stop.borrow_and_update() != StopLevel::Running {
            return;
        }
        let first = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = stop.changed() => continue,
        };
        let mut permits = vec![first];
        while permits.len() < MAX_BATCH {
            match slots.clone().try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        match dequeue(shared, permits.len()).await {
            Ok(Dequeued::Jobs(jobs)) if jobs.is_empty() => {
                drop(permits);
                if shared.suspended.swap(false, Ordering::Relaxed) {
                    tracing::info!(worker = %shared.name, "resumed");
                }
                if shared.options.burst {
                    if *shared.running_count.borrow() == 0 {
                        return;
                    }
                    let mut count = shared.running_count.subscribe();
                    tokio::select! {
                        _ = count.changed() => {}
                        _ = stop.changed() => {}
                    }
                } else if let Some(waiter) = waiter {
                    waiter.wait(&mut stop).await;
                }
            }
            Ok(Dequeued::Jobs(jobs)) => {
                backoff.reset();
                if shared.suspended.swap(false, Ordering::Relaxed) {
                    tracing::info!(worker = %shared.name, "resumed");
                }
                for job in jobs {
                    let Some(permit) = permits.pop() else { break };
                    spawn_job(shared.clone(), job, permit);
                }
            }
            Ok(Dequeued::Suspended) => {
                drop(permits);
                if shared.options.burst {
                    tracing::info!(worker = %shared.name, "queues are suspended; burst worker exits");
                    return;
                }
                if !shared.suspended.swap(true, Ordering::Relaxed) {
                    tracing::info!(worker = %shared.name, "suspended: taking no jobs until `resume`");
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => {}
                }
            }
            Err(e) => {
                drop(permits);
                let delay = backoff.next_delay();
                tracing::warn!(worker = %shared.name, error = %e, retry_in_ms = delay.as_millis() as u64, "cannot take jobs");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
}

/// Waits for running jobs to end; on a cold stop (now or while waiting) cancels them first,
/// and when the shutdown timeout runs out puts them back in their queues.
pub(super) async fn drain(shared: &Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    let mut count = shared.running_count.subscribe();
    let mut cancelled = false;
    let timeout = async {
        match shared.options.shutdown_timeout {
            Some(timeout) => tokio::time::sleep(timeout).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(timeout);
    loop {
        if *count.borrow_and_update() == 0 {
            return;
        }
        if !cancelled && *stop.borrow_and_update() == StopLevel::Cold {
            let n = shared.stop_jobs(StopReason::ColdShutdown, |_, _| true);
            tracing::warn!(worker = %shared.name, jobs = n, "cold shutdown: cancelling running jobs");
            cancelled = true;
        }
        tokio::select! {
            _ = count.changed() => {}
            _ = stop.changed(), if !cancelled => {}
            () = &mut timeout, if !cancelled => {
                let n = shared.stop_jobs(StopReason::ShutdownTimeout, |_, _| true);
                tracing::warn!(worker = %shared.name, jobs = n,
                    "shutdown timeout: putting running jobs back in their queues");
                cancelled = true;
            }
        }
    }
}

async fn dequeue(shared: &Shared, max: usize) -> RqResult<Dequeued> {
    let now = Timestamp::now();
    let execution_ids: Vec<String> = (0..max).map(|_| new_execution_id()).collect();
    // Encoded once per process: a zlib compressor's set-up (hundreds of KB zeroed, then
    // unmapped) cost more than the rest of a dequeue.
    static MISSING_EXC: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| encode_exc_string(MISSING_HASH_TEXT));
    let missing_exc: &str = &MISSING_EXC;
    let options = &shared.options;
    let reply: redis::Value = shared
        .conn
        .run(|mut conn| {
            let mut invocation = scripts::DEQUEUE.prepare_invoke();
            invocation
                .arg(&shared.name)
                .arg(format_epoch_f64(now.secs_f64()))
                .arg(now.text())
                .arg(options.job_monitoring_interval.as_secs().max(1))
                .arg(options.lease_grace.as_secs())
                .arg(options.default_timeout)
                .arg(max)
                .arg(options.queues.len())
                .arg(missing_exc)
                .arg(u8::from(options.started_entry == StartedEntry::JobId));
            for q in &options.queues {
                invocation.arg(q);
            }
            for x in &execution_ids {
                invocation.arg(x);
            }
            async move { Ok(invocation.invoke_async(&mut conn).await?) }
        })
        .await?;
    if let redis::Value::BulkString(ref b) = reply {
        if b == b"suspended" {
            return Ok(Dequeued::Suspended);
        }
    }
    if let redis::Value::SimpleString(ref s) = reply {
        if s == "suspended" {
            return Ok(Dequeued::Suspended);
        }
    }
    let entries: Vec<DequeuedEntry> = redis::from_redis_value(reply)
        .map_err(|e| RqError::Refused(format!("unexpected dequeue reply: {e}")))?;
    let mut jobs = Vec::with_capacity(entries.len());
    for (queue, id, execution_id, flat, attempt) in entries {
        if execution_id.is_empty() {
            tracing::error!(worker = %shared.name, queue, job_id = %id, "job hash missing when dequeued; recorded as failed");
            continue;
        }
        let mut fields = HashMap::with_capacity(flat.len() / 2 + 1);
        let mut it = flat.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            fields.insert(String::from_utf8_lossy(&k).into_owned(), v);
        }
        // The attempt the script started (it read the hash before its writes).
        fields.insert("hdx_attempt".into(), attempt.to_string().into_bytes());
        jobs.push(StartedJob {
            id,
            execution_id,
            fields,
        });
    }
    Ok(Dequeued::Jobs(jobs))
}

/// Registers the job as running and spawns its run; the slot is freed once its outcome is
/// recorded.
fn spawn_job(shared: Arc<Shared>, started: StartedJob, permit: OwnedSemaphorePermit) {
    let job = Job::from_fields(started.id, started.fields);
    let origin = job.origin().unwrap_or_default();
    let timeout = job.timeout().unwrap_or(shared.options.default_timeout);
    let running = RunningJob {
        execution_id: started.execution_id.clone(),
        origin: origin.clone(),
        lease_secs: shared.lease_secs(timeout),
        cancel: CancellationToken::new(),
        reason: Arc::new(Mutex::new(None)),
    };
    let cancel = running.cancel.clone();
    let reason = running.reason.clone();
    shared.register(&job.id, running);
    tokio::spawn(async move {
        // Decoded once, in the job's own task (not in the fetch loop, which a big payload would
        // hold up): the span names the task, and the run needs the arguments.
        let payload = job.payload();
        let func_name = match &payload {
            Ok(payload) => payload.func_name.clone(),
            Err(_) => job.func_name().unwrap_or_default(),
        };
        // Every line the run logs (the task's own too) carries the job, its queue and its task.
        // At ERROR level so that the span is kept whatever the log level (`LOG_LEVEL=WARNING`
        // would drop an INFO span and with it the fields of the warnings it contains).
        let span = tracing::error_span!(
            "job",
            job_id = %job.id,
            queue = %origin,
            func = %func_name,
        );
        let run = JobRun {
            shared: shared.clone(),
            job,
            execution_id: started.execution_id,
            origin,
            timeout,
            cancel,
            reason,
        };
        run.execute(payload).instrument(span).await;
        if let Ok(mut map) = shared.running.lock() {
            map.remove(&run.job.id);
            shared.running_count.send_replace(map.len());
        }
        drop(permit);
    });
}

/// How a run ended.
enum Outcome {
    Success(Value),
    Failure {
        error: TaskError,
        mode: FailMode,
        allow_retry: bool,
    },
    /// Someone else owns the job now; record nothing.
    LeaseLost,
}

#[derive(Clone, Copy)]
enum FailMode {
    Failed,
    Stopped,
    /// Cut short by the shutdown timeout: back to the front of its queue, no retry used.
    Interrupted,
}

impl FailMode {
    fn as_str(self) -> &'static str {
        match self {
            FailMode::Failed => "failed",
            FailMode::Stopped => "stopped",
            FailMode::Interrupted => "interrupted",
        }
    }
}

struct JobRun {
    shared: Arc<Shared>,
    job: Job,
    execution_id: String,
    origin: String,
    timeout: i64,
    cancel: CancellationToken,
    reason: Arc<Mutex<Option<StopReason>>>,
}

impl JobRun {
    async fn execute(&self, payload: Result<CallPayload, PayloadError>) {
        let started = Timestamp::now();
        let clock = Instant::now();
        let (outcome, func_name, serializer) = self.run(payload).await;
        let duration = clock.elapsed();
        let ended = Timestamp::now();
        match &outcome {
            Outcome::Success(_) => {
                tracing::info!(worker = %self.shared.name,
                    ms = duration.as_millis() as u64, "job succeeded");
            }
            Outcome::Failure {
                mode: FailMode::Interrupted,
                ..
            } => {
                tracing::warn!(worker = %self.shared.name,
                    ms = duration.as_millis() as u64, "job interrupted by the shutdown timeout: back at the front of its queue");
            }
            Outcome::Failure { error, .. } => {
                tracing::warn!(worker = %self.shared.name,
                    ms = duration.as_millis() as u64, error = %error, "job failed");
            }
            Outcome::LeaseLost => {
                tracing::warn!(worker = %self.shared.name,
                    "job's lease was taken over (it was failed or retried elsewhere); its outcome is discarded");
                return;
            }
        }
        self.record(outcome, &func_name, serializer, started, ended, duration)
            .await;
    }

    /// Runs the task; returns the outcome, the func name (for logs) and the serializer to
    /// write results with.
    async fn run(
        &self,
        payload: Result<CallPayload, PayloadError>,
    ) -> (Outcome, String, Serializer) {
        let payload = match payload {
            Ok(payload) => payload,
            Err(e) => {
                let error = TaskError::permanent(
                    "DeserializationError",
                    format!("cannot read the job's payload: {e}"),
                );
                return (
                    Outcome::Failure {
                        error,
                        mode: FailMode::Failed,
                        allow_retry: false,
                    },
                    "?".into(),
                    Serializer::Json,
                );
            }
        };
        let serializer = payload.serializer;
        let func_name = payload.func_name.clone();
        let Some(task) = self.shared.tasks.get(&func_name) else {
            let error = TaskError::permanent(
                "UnknownTask",
                format!(
                    "no task is registered under {func_name:?} on worker {} (it runs: {})",
                    self.shared.name,
                    self.shared.tasks.names().join(", ")
                ),
            );
            return (
                Outcome::Failure {
                    error,
                    mode: FailMode::Failed,
                    allow_retry: false,
                },
                func_name,
                serializer,
            );
        };
        let conn = match self.shared.conn.get().await {
            Ok(conn) => conn,
            Err(e) => {
                let error = TaskError::retryable("RedisError", e.to_string());
                return (
                    Outcome::Failure {
                        error,
                        mode: FailMode::Failed,
                        allow_retry: true,
                    },
                    func_name,
                    serializer,
                );
            }
        };
        let deadline =
            (self.timeout > 0).then(|| Instant::now() + Duration::from_secs(self.timeout as u64));
        let identity = JobIdentity {
            job_id: self.job.id.clone(),
            queue: self.origin.clone(),
            func_name: func_name.clone(),
            attempt: self.job.attempts().max(1),
            worker_name: self.shared.name.clone(),
            created_at: self.job.time("created_at"),
        };
        let ctx = JobContext::for_worker(identity, self.cancel.clone(), deadline, conn, serializer);
        let call = CallArgs {
            args: payload.args,
            kwargs: payload.kwargs,
        };
        let work = AssertUnwindSafe(task.call(&ctx, call)).catch_unwind();
        let timeout = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let outcome = tokio::select! {
            result = work => match result {
                Ok(Ok(value)) => Outcome::Success(value),
                Ok(Err(error)) => {
                    let allow_retry = error.is_retryable();
                    match self.stop_reason() {
                        Some(reason) => self.stopped(reason),
                        None => Outcome::Failure { error, mode: FailMode::Failed, allow_retry },
                    }
                }
                Err(panic) => {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "the task panicked".into());
                    let error = TaskError::permanent("TaskPanicked", message);
                    Outcome::Failure { error, mode: FailMode::Failed, allow_retry: false }
                }
            },
            _ = timeout => {
                self.cancel.cancel();
                let error = TaskError::retryable(
                    "JobTimeoutException",
                    format!("Task exceeded maximum timeout value ({} seconds)", self.timeout),
                );
                Outcome::Failure { error, mode: FailMode::Failed, allow_retry: true }
            }
            _ = self.cancel.cancelled() => {
                self.stopped(self.stop_reason().unwrap_or(StopReason::ColdShutdown))
            }
        };
        (outcome, func_name, serializer)
    }

    fn stop_reason(&self) -> Option<StopReason> {
        self.reason.lock().ok().and_then(|r| *r)
    }

    fn stopped(&self, reason: StopReason) -> Outcome {
        match reason {
            StopReason::StopCommand => Outcome::Failure {
                error: TaskError::permanent(
                    "StopRequested",
                    "Job stopped by user, work-horse terminated.",
                ),
                mode: FailMode::Stopped,
                allow_retry: false,
            },
            StopReason::KillHorse => Outcome::Failure {
                error: TaskError::retryable(
                    "WorkHorseKilled",
                    "Work-horse terminated unexpectedly; killed by a kill-horse command",
                ),
                mode: FailMode::Failed,
                allow_retry: true,
            },
            StopReason::ColdShutdown => Outcome::Failure {
                error: TaskError::retryable(
                    "WorkerShutdown",
                    format!(
                        "worker {} shut down cold while the job was running",
                        self.shared.name
                    ),
                ),
                mode: FailMode::Failed,
                allow_retry: true,
            },
            StopReason::ShutdownTimeout => Outcome::Failure {
                error: TaskError::retryable(
                    "WorkerShutdown",
                    format!(
                        "worker {} stopped; the job did not finish within the shutdown timeout",
                        self.shared.name
                    ),
                ),
                mode: FailMode::Interrupted,
                allow_retry: true,
            },
            StopReason::LeaseLost => Outcome::LeaseLost,
        }
    }

    /// Writes the outcome, retrying through Redis outages (the lease check in the scripts
    /// makes a late write harmless).
    async fn record(
        &self,
        outcome: Outcome,
        func_name: &str,
        serializer: Serializer,
        started: Timestamp,
        ended: Timestamp,
        duration: Duration,
    ) {
        let shared = &self.shared;
        let bucket = crate::rq::metrics::bucket_label(duration.as_secs_f64());
        let outcome = match outcome {
            Outcome::Success(value) => match encode_return_value(&value, serializer) {
                Ok(encoded) => Ok(encoded.unwrap_or_default()),
                Err(e) => Err((
                    TaskError::permanent(
                        "SerializationError",
                        format!("cannot store the result: {e}"),
                    ),
                    FailMode::Failed,
                    false,
                )),
            },
            Outcome::Failure {
                error,
                mode,
                allow_retry,
            } => Err((error, mode, allow_retry)),
            Outcome::LeaseLost => return,
        };
        let give_up_at = Instant::now() + Duration::from_secs(600);
        let give_up = || Instant::now() > give_up_at;
        let result: RqResult<String> = match &outcome {
            Ok(return_value) => shared
                .successes
                .record(Success {
                    job_id: self.job.id.clone(),
                    execution_id: self.execution_id.clone(),
                    origin: self.origin.clone(),
                    ended_text: ended.text(),
                    started_secs: format_epoch_f64(started.secs_f64()),
                    ended_secs: format_epoch_f64(ended.secs_f64()),
                    return_value: return_value.clone(),
                    duration_secs: duration.as_secs_f64(),
                    func: func_name.to_string(),
                    bucket: bucket.clone(),
                })
                .await
                .map(|recorded| if recorded { "finished" } else { "lost" }.to_string()),
            Err((error, mode, allow_retry)) => {
                let next_current = self.next_current_job();
                let text = format!(
                    "hdx-jobs task {func_name} (attempt {}) on worker {}\n{error}\n",
                    self.job.attempts().max(1),
                    shared.name
                );
                let exc = encode_exc_string(&text);
                let min_wait = error.retry_after.map(|d| d.as_secs()).unwrap_or(0);
                shared
                    .conn
                    .run_retrying(
                        "recording a failure",
                        |mut conn| {
                            let mut invocation = scripts::FAIL.prepare_invoke();
                            invocation
                                .arg(&self.job.id)
                                .arg(&self.execution_id)
                                .arg(&self.origin)
                                .arg(&shared.name)
                                .arg(ended.text())
                                .arg(format_epoch_f64(started.secs_f64()))
                                .arg(format_epoch_f64(ended.secs_f64()))
                                .arg(&exc)
                                .arg(mode.as_str())
                                .arg(if *allow_retry { "1" } else { "0" })
                                .arg(min_wait)
                                .arg(duration.as_secs_f64())
                                .arg(&next_current)
                                .arg(func_name)
                                .arg(&bucket);
                            async move { Ok(invocation.invoke_async::<String>(&mut conn).await?) }
                        },
                        give_up,
                    )
                    .await
            }
        };
        match result {
            Ok(status) if status == "lost" => {
                tracing::warn!(worker = %shared.name, job_id = %self.job.id,
                    "the job's lease expired before its outcome was written; maintenance handled it, outcome discarded");
            }
            Ok(status) => {
                if status == "finished" {
                    shared.succeeded.fetch_add(1, Ordering::Relaxed);
                } else if status != "requeued" {
                    shared.failed.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(worker = %shared.name, job_id = %self.job.id, status, "outcome recorded");
            }
            Err(e) => {
                tracing::error!(worker = %shared.name, job_id = %self.job.id, error = %e,
                    "cannot record the job's outcome; maintenance will treat it as abandoned");
            }
        }
    }

    /// Another job of ours to show as `current_job` once this one ends.
    fn next_current_job(&self) -> String {
        self.shared
            .running
            .lock()
            .ok()
            .and_then(|m| m.keys().find(|id| **id != self.job.id).cloned())
            .unwrap_or_default()
    }
}
