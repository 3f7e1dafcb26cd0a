//! The worker: takes jobs off queues and runs them (docs/rq-protocol.md §5.2–§5.11).
//!
//! One process runs up to `concurrency` jobs at once as tokio tasks. Beside them run:
//! - the heartbeat, which keeps the worker hash alive and renews the lease (`rq:wip` deadline)
//!   of every running job, so `rq info` and Python workers never take them for abandoned;
//! - the command listener on `rq:pubsub:<name>` (`shutdown`, `stop-job`, `kill-horse`);
//! - maintenance, which fails or retries jobs whose worker died (expired leases);
//! - with `--with-scheduler`, the scheduler that promotes due delayed jobs and retries;
//! - one watcher per queue that wakes the fetch loop when work arrives.
//!
//! Jobs are popped and started in one atomic script, and every outcome is written by one
//! script that first checks the lease: a job is never in limbo, whichever moment the process
//! dies at. Stopping is warm first (no new jobs, running ones finish; those still running after
//! `shutdown_timeout` go back to the front of their queue) and cold on the second request
//! (running jobs are cancelled and recorded as failed, or retried if they may be).

mod connection;
mod execute;
mod lifecycle;
mod listen;
mod successes;
mod wait;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::connection::SharedConnection;
use super::error::{RqError, RqResult};
use super::job::{DEFAULT_RESULT_TTL, DEFAULT_TIMEOUT};
use super::queue::is_valid_queue_name;
pub use super::registry::StartedEntry;
use crate::connection::RedisClient;
use crate::task::TaskRegistry;

/// How long a starting worker waits for its command subscription before working without it.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(5);

/// How a worker behaves. `Default` gives RQ's numbers.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Worker name; unique per process when `None` (`<host>.<pid>.<random>`).
    pub name: Option<String>,
    /// Queues in priority order: a job of the first queue is always taken before the second's.
    pub queues: Vec<String>,
    /// Jobs run at once.
    pub concurrency: usize,
    /// Seconds the worker hash lives without a heartbeat, minus 60 (RQ's `worker_ttl`).
    pub worker_ttl: u64,
    /// Exit when the queues are empty instead of waiting for work.
    pub burst: bool,
    /// Also promote due scheduled jobs of these queues (RQ's `--with-scheduler`). Off by
    /// default here as in RQ; `hdx-jobs work` turns it on (retries and delayed jobs need a
    /// scheduler somewhere, and RQ's per-queue locks make several safe).
    pub with_scheduler: bool,
    /// How long a warm stop waits for running jobs; those still running then are interrupted
    /// and put back at the front of their queue (retries untouched), so a stop never strands a
    /// job for its lease period. `None` waits for them however long they take (RQ's way).
    pub shutdown_timeout: Option<Duration>,
    /// How often running jobs' leases and the worker hash are refreshed (RQ: 30 s).
    pub job_monitoring_interval: Duration,
    /// Extra time a lease lasts beyond the monitoring interval (RQ: 60 s). A job whose worker
    /// died is recovered about `interval + grace + maintenance_interval` later.
    pub lease_grace: Duration,
    /// How often this worker runs maintenance on its queues (RQ: 600 s).
    pub maintenance_interval: Duration,
    /// How often the scheduler looks for due jobs (RQ: 1 s).
    pub scheduler_interval: Duration,
    /// Result TTL of jobs that set none (RQ: 500 s).
    pub default_result_ttl: i64,
    /// Timeout of jobs that set none (RQ: 180 s).
    pub default_timeout: i64,
    /// How running jobs appear in the started registry: the bare job id (the default, listed
    /// by RQ 1.x and 2.x tools alike) or RQ 2's `<id>:<execution id>`.
    pub started_entry: StartedEntry,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            name: None,
            queues: vec!["default".into()],
            concurrency: 4,
            worker_ttl: 420,
            burst: false,
            with_scheduler: false,
            shutdown_timeout: None,
            job_monitoring_interval: Duration::from_secs(30),
            lease_grace: Duration::from_secs(60),
            maintenance_interval: Duration::from_secs(60),
            scheduler_interval: Duration::from_secs(1),
            default_result_ttl: DEFAULT_RESULT_TTL,
            default_timeout: DEFAULT_TIMEOUT,
            started_entry: StartedEntry::default(),
        }
    }
}

/// How far a stop has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StopLevel {
    /// Working.
    Running,
    /// Take no new jobs; let running jobs finish.
    Warm,
    /// Cancel running jobs now and record them as failed (or retried).
    Cold,
}

/// Asks a running worker to stop. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StopHandle {
    tx: Arc<watch::Sender<StopLevel>>,
}

impl StopHandle {
    fn new() -> Self {
        StopHandle {
            tx: Arc::new(watch::channel(StopLevel::Running).0),
        }
    }

    /// Warm stop: no new jobs, running ones finish.
    pub fn warm(&self) {
        self.raise(StopLevel::Warm);
    }

    /// Cold stop: running jobs are cancelled and recorded.
    pub fn cold(&self) {
        self.raise(StopLevel::Cold);
    }

    /// The current level.
    pub fn level(&self) -> StopLevel {
        *self.tx.borrow()
    }

    fn raise(&self, level: StopLevel) {
        self.tx.send_if_modified(|current| {
            if level > *current {
                *current = level;
                true
            } else {
                false
            }
        });
    }

    fn subscribe(&self) -> watch::Receiver<StopLevel> {
        self.tx.subscribe()
    }
}

/// What a worker did, returned when it stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerReport {
    /// The worker's name.
    pub name: String,
    /// Jobs that succeeded.
    pub succeeded: u64,
    /// Jobs that failed or were retried.
    pub failed: u64,
}

/// Why a running job was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// `stop-job` command: status `stopped`, no retry.
    StopCommand,
    /// `kill-horse` command.
    KillHorse,
    /// Cold shutdown of the worker.
    ColdShutdown,
    /// The warm stop's shutdown timeout ran out: the job goes back to its queue.
    ShutdownTimeout,
    /// The lease was taken over by maintenance (after an outage): the job is someone else's now.
    LeaseLost,
}

/// How many `stop-job` commands for jobs not yet registered are remembered: a command can only
/// come early by the few milliseconds between the dequeue and the registration, so a handful
/// would do; commands for jobs that never come here cannot grow the list past this.
const EARLY_STOPS_KEPT: usize = 64;

/// A job this process is running.
pub(crate) struct RunningJob {
    pub(crate) execution_id: String,
    pub(crate) origin: String,
    pub(crate) lease_secs: i64,
    pub(crate) cancel: CancellationToken,
    pub(crate) reason: Arc<Mutex<Option<StopReason>>>,
}

impl RunningJob {
    /// Cancels the job for `reason` (the first reason wins).
    pub(crate) fn stop(&self, reason: StopReason) {
        if let Ok(mut slot) = self.reason.lock() {
            slot.get_or_insert(reason);
        }
        self.cancel.cancel();
    }
}

/// State shared by the worker's tasks.
pub(crate) struct Shared {
    pub(crate) redis: RedisClient,
    pub(crate) conn: SharedConnection,
    pub(crate) tasks: Arc<TaskRegistry>,
    pub(crate) options: WorkerOptions,
    pub(crate) name: String,
    pub(crate) running: Mutex<HashMap<String, RunningJob>>,
    /// `stop-job` commands for jobs not (yet) in `running`: the dequeue script marks a job
    /// started with this worker's name before the fetch loop registers it, and a stop sent in
    /// between must not be lost (see [`Shared::stop_job`]). Locked only with `running` held.
    pub(crate) early_stops: Mutex<VecDeque<String>>,
    pub(crate) running_count: watch::Sender<usize>,
    pub(crate) suspended: AtomicBool,
    pub(crate) succeeded: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) stop: StopHandle,
    /// Where finished jobs' successes queue to be written in batches.
    pub(crate) successes: successes::SuccessWriter,
    /// Stops the background loops once the jobs are done.
    pub(crate) background: CancellationToken,
}

impl Shared {
    /// Ids of running jobs with their lease data, for heartbeats.
    pub(crate) fn running_snapshot(&self) -> Vec<(String, String, String, i64)> {
        self.running
            .lock()
            .map(|m| {
                m.iter()
                    .map(|(id, r)| {
                        (
                            id.clone(),
                            r.execution_id.clone(),
                            r.origin.clone(),
                            r.lease_secs,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stops the running jobs matching `pick` for `reason`; returns how many.
    pub(crate) fn stop_jobs(
        &self,
        reason: StopReason,
        pick: impl Fn(&str, &RunningJob) -> bool,
    ) -> usize {
        let Ok(map) = self.running.lock() else {
            return 0;
        };
        let mut count = 0;
        for (id, job) in map.iter() {
            if pick(id, job) {
                job.stop(reason);
                count += 1;
            }
        }
        count
    }

    /// Stops the job `id` for a `stop-job` command; returns whether it runs here. A job that
    /// does not run here yet is remembered (the last [`EARLY_STOPS_KEPT`] ids) and stopped as
    /// soon as it is registered ([`Shared::register`]).
    pub(crate) fn stop_job(&self, id: &str) -> bool {
        let Ok(map) = self.running.lock() else {
            return false;
        };
        if let Some(job) = map.get(id) {
            job.stop(StopReason::StopCommand);
            return true;
        }
        if let Ok(mut early) = self.early_stops.lock() {
            if early.len() == EARLY_STOPS_KEPT {
                early.pop_front();
            }
            early.push_back(id.to_string());
        }
        false
    }

    /// Registers a job as running here, stopping it at once if a `stop-job` command for it
    /// came first.
    pub(crate) fn register(&self, id: &str, job: RunningJob) {
        let Ok(mut map) = self.running.lock() else {
            return;
        };
        if let Ok(mut early) = self.early_stops.lock() {
            if let Some(at) = early.iter().position(|stopped| stopped == id) {
                early.remove(at);
                job.stop(StopReason::StopCommand);
            }
        }
        map.insert(id.to_string(), job);
        self.running_count.send_replace(map.len());
    }

    /// The lease of a job with this timeout: RQ's forking-worker formula
    /// `min(timeout, interval) + grace` (docs/rq-protocol.md §5.3).
    pub(crate) fn lease_secs(&self, timeout: i64) -> i64 {
        let interval = self.options.job_monitoring_interval.as_secs().max(1) as i64;
        let base = if timeout > 0 {
            timeout.min(interval)
        } else {
            interval
        };
        base + self.options.lease_grace.as_secs() as i64
    }
}

/// A worker, ready to run.
pub struct Worker {
    shared: Arc<Shared>,
}

impl Worker {
    /// Prepares a worker (no Redis access yet).
    pub fn new(redis: RedisClient, tasks: TaskRegistry, options: WorkerOptions) -> RqResult<Self> {
        if options.queues.is_empty() {
            return Err(RqError::InvalidArgument(
                "a worker needs at least one queue".into(),
            ));
        }
        if let Some(bad) = options.queues.iter().find(|q| !is_valid_queue_name(q)) {
            return Err(RqError::InvalidQueueName(bad.clone()));
        }
        if options.concurrency == 0 {
            return Err(RqError::InvalidArgument(
                "concurrency must be at least 1".into(),
            ));
        }
        let name = match &options.name {
            Some(name) if name.is_empty() || name.contains(char::is_whitespace) => {
                return Err(RqError::InvalidArgument(format!(
                    "invalid worker name {name:?}"
                )))
            }
            Some(name) => name.clone(),
            None => unique_worker_name(),
        };
        let conn = SharedConnection::new(redis.clone(), Some(Duration::from_secs(30)));
        Ok(Worker {
            shared: Arc::new(Shared {
                redis,
                conn,
                tasks: Arc::new(tasks),
                options,
                name,
                running: Mutex::new(HashMap::new()),
                early_stops: Mutex::new(VecDeque::new()),
                running_count: watch::channel(0).0,
                suspended: AtomicBool::new(false),
                succeeded: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                stop: StopHandle::new(),
                successes: successes::SuccessWriter::new(),
                background: CancellationToken::new(),
            }),
        })
    }

    /// The worker's name (its key is `rq:worker:<name>`).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// A handle to stop the worker from elsewhere (signals, tests, an embedding service).
    pub fn stop_handle(&self) -> StopHandle {
        self.shared.stop.clone()
    }

    /// Registers the worker, works until stopped (or, in burst mode, until the queues are
    /// empty), and registers its death.
    pub async fn run(self) -> RqResult<WorkerReport> {
        let shared = self.shared;
        lifecycle::register(&shared).await?;
        tracing::info!(
            worker = %shared.name,
            queues = %shared.options.queues.join(","),
            concurrency = shared.options.concurrency,
            redis = %shared.redis.display_url(),
            "worker started"
        );

        let mut background = JoinSet::new();
        background.spawn(lifecycle::heartbeat_loop(shared.clone()));
        background.spawn(successes::write_loop(shared.clone()));
        let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
        background.spawn(listen::command_loop(shared.clone(), subscribed_tx));
        background.spawn(lifecycle::maintenance_loop(shared.clone()));
        if shared.options.with_scheduler {
            let scheduler = super::scheduler::Scheduler::new(
                shared.redis.clone(),
                super::scheduler::SchedulerOptions {
                    queues: super::scheduler::Queues::Only(shared.options.queues.clone()),
                    interval: shared.options.scheduler_interval,
                    ..Default::default()
                },
            );
            background.spawn(scheduler.run(shared.background.clone()));
        }
        // Take jobs only once `stop-job` and `shutdown` can reach us, as RQ subscribes before
        // its work loop: a command sent as soon as a job shows started must not be lost. A
        // Redis that refuses pub/sub only delays the start (the loop keeps trying).
        if tokio::time::timeout(SUBSCRIBE_WAIT, subscribed)
            .await
            .is_err()
        {
            tracing::warn!(worker = %shared.name, "not subscribed to commands yet; working anyway");
        }
        let waiter =
            (!shared.options.burst).then(|| wait::WorkWaiter::start(&shared, &mut background));

        execute::fetch_loop(&shared, waiter.as_ref()).await;
        execute::drain(&shared).await;

        shared.background.cancel();
        while background.join_next().await.is_some() {}
        lifecycle::death(&shared).await;
        let report = WorkerReport {
            name: shared.name.clone(),
            succeeded: shared.succeeded.load(Ordering::Relaxed),
            failed: shared.failed.load(Ordering::Relaxed),
        };
        tracing::info!(worker = %report.name, succeeded = report.succeeded, failed = report.failed, "worker stopped");
        Ok(report)
    }
}

/// `<host>.<pid>.<6 hex>`: readable, and never reused by a restarted process, so a new worker
/// cannot silently inherit a dead one's jobs.
fn unique_worker_name() -> String {
    let host = gethostname::gethostname()
        .to_string_lossy()
        .replace(char::is_whitespace, "_");
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    format!("{host}.{}.{suffix}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_per_process() {
        let a = unique_worker_name();
        let b = unique_worker_name();
        assert_ne!(a, b);
        assert!(a.contains(&std::process::id().to_string()));
    }

    #[test]
    fn stop_levels_only_rise() {
        let handle = StopHandle::new();
        handle.cold();
        handle.warm();
        assert_eq!(handle.level(), StopLevel::Cold);
    }

    #[test]
    fn leases_follow_the_forking_formula() {
        let redis = RedisClient::open("redis://127.0.0.1:6379/15").expect("url");
        let worker =
            Worker::new(redis, TaskRegistry::new(), WorkerOptions::default()).expect("worker");
        assert_eq!(worker.shared.lease_secs(180), 90);
        assert_eq!(worker.shared.lease_secs(-1), 90);
        assert_eq!(worker.shared.lease_secs(10), 70);
    }

    fn running_job() -> RunningJob {
        RunningJob {
            execution_id: "e".into(),
            origin: "default".into(),
            lease_secs: 60,
            cancel: CancellationToken::new(),
            reason: Arc::new(Mutex::new(None)),
        }
    }

    /// The dequeue script marks a job started (with this worker's name, where `rq` and our
    /// `jobs::stop` send the command) a moment before the fetch loop registers it; a `stop-job`
    /// in that moment was dropped and the job ran to its end (seen as a flaky
    /// `stop_job_command_stops_only_that_job` on a loaded host).
    #[test]
    fn regression_a_stop_job_that_comes_before_the_registration_still_stops_the_job() {
        let redis = RedisClient::open("redis://127.0.0.1:6379/15").expect("url");
        let worker =
            Worker::new(redis, TaskRegistry::new(), WorkerOptions::default()).expect("worker");
        let shared = &worker.shared;
        assert!(!shared.stop_job("early"), "not running yet");
        let (early, other) = (running_job(), running_job());
        let (early_cancel, other_cancel) = (early.cancel.clone(), other.cancel.clone());
        shared.register("other", other);
        shared.register("early", early);
        assert!(early_cancel.is_cancelled());
        assert!(
            !other_cancel.is_cancelled(),
            "only the job named is stopped"
        );
        // Remembered once: the same id started again later is not stopped.
        shared.running.lock().expect("lock").clear();
        let again = running_job();
        let again_cancel = again.cancel.clone();
        shared.register("early", again);
        assert!(!again_cancel.is_cancelled());
        // Commands for jobs that never come cannot grow the list without bound.
        for i in 0..1000 {
            shared.stop_job(&format!("never-{i}"));
        }
        assert_eq!(
            shared.early_stops.lock().expect("lock").len(),
            EARLY_STOPS_KEPT
        );
    }

    #[test]
    fn rejects_bad_options() {
        let redis = RedisClient::open("redis://127.0.0.1:6379/15").expect("url");
        let bad_queue = WorkerOptions {
            queues: vec!["a b".into()],
            ..Default::default()
        };
        assert!(Worker::new(redis.clone(), TaskRegistry::new(), bad_queue).is_err());
        let no_queue = WorkerOptions {
            queues: vec![],
            ..Default::default()
        };
        assert!(Worker::new(redis.clone(), TaskRegistry::new(), no_queue).is_err());
        let zero = WorkerOptions {
            concurrency: 0,
            ..Default::default()
        };
        assert!(Worker::new(redis, TaskRegistry::new(), zero).is_err());
    }
}
