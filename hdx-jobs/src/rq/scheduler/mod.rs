//! The scheduler: enqueues jobs when their time comes.
//!
//! Every round (each `interval`) it:
//! - moves due jobs of each queue's `rq:scheduled:<q>` (delayed jobs, retry intervals) into the
//!   queue (docs/rq-protocol.md §5.16), holding `rq:scheduler-lock:<q>` with RQ 2.10+'s semantics
//!   (the scheduler's name as value, an expiry, renewed every round), so that one scheduler,
//!   ours or Python's, serves a queue at a time, and another takes over within the lock's
//!   expiry when the holder dies;
//! - fires due periodic jobs ([`periodic`]), under our own global lock `hdx:periodic:lock`;
//! - enqueues due jobs of the rq-scheduler package's set ([`legacy`]).
//!
//! Locks only keep schedulers from doing the same work at once; exactly-once does not depend
//! on them: every move is a compare-and-set script, so no due job is enqueued twice even when
//! a lock expires under a slow holder.
//!
//! It runs inside `hdx-jobs work --with-scheduler` (the worker's queues) or on its own as
//! `hdx-jobs scheduler` (every queue), on any number of hosts.

pub mod legacy;
pub mod periodic;

use std::collections::HashSet;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::error::RqResult;
use super::keys;
use super::scripts;
use super::time::{server_now, Timestamp};
use crate::connection::RedisClient;

/// Our lock for firing periodic jobs.
pub const PERIODIC_LOCK: &str = "hdx:periodic:lock";
/// Jobs moved per script call.
const PROMOTE_BATCH: u64 = 1000;

/// The members of a sorted set due at `now` (score at most `now`) with their scores, oldest
/// first, at most [`PROMOTE_BATCH`] per call (a round takes the rest next time).
async fn due_entries<C: redis::aio::ConnectionLike + Send>(
    conn: &mut C,
    key: &str,
    now: i64,
) -> RqResult<Vec<(String, i64)>> {
    Ok(redis::cmd("ZRANGEBYSCORE")
        .arg(key)
        .arg("-inf")
        .arg(now)
        .arg("WITHSCORES")
        .arg("LIMIT")
        .arg(0)
        .arg(PROMOTE_BATCH)
        .query_async(conn)
        .await?)
}

/// Which queues a scheduler serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Queues {
    /// These queues.
    Only(Vec<String>),
    /// Every queue in `rq:queues`, re-read every round.
    All,
}

/// How a scheduler behaves.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Queues whose scheduled registries it promotes.
    pub queues: Queues,
    /// Time between rounds (RQ: 1 s).
    pub interval: Duration,
    /// Expiry of the locks it holds, renewed every round. A dead scheduler's queues are taken
    /// over within this time.
    pub lock_ttl: Duration,
    /// Also fire periodic jobs.
    pub periodic: bool,
    /// Also enqueue the rq-scheduler package's scheduled jobs.
    pub legacy: bool,
    /// Periods overdue by more than this count as missed (all schedulers were down) and follow
    /// the job's misfire policy; later ones are fired, late.
    pub misfire_grace: Duration,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            queues: Queues::All,
            interval: Duration::from_secs(1),
            lock_ttl: Duration::from_secs(15),
            periodic: true,
            legacy: true,
            misfire_grace: Duration::from_secs(300),
        }
    }
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RoundReport {
    /// Delayed jobs and retries enqueued.
    pub promoted: u64,
    /// Periodic jobs enqueued.
    pub periodic: u64,
    /// rq-scheduler jobs enqueued.
    pub legacy: u64,
}

/// Locks a scheduler holds between rounds.
#[derive(Debug, Default)]
pub struct Held {
    queues: HashSet<String>,
    periodic: bool,
}

impl Held {
    /// Queues whose lock is held.
    pub fn queues(&self) -> &HashSet<String> {
        &self.queues
    }

    /// Whether the periodic lock is held.
    pub fn periodic(&self) -> bool {
        self.periodic
    }
}

/// A scheduler.
#[derive(Debug)]
pub struct Scheduler {
    redis: RedisClient,
    name: String,
    options: SchedulerOptions,
}

impl Scheduler {
    /// A scheduler with a fresh name (uuid hex, as RQ's).
    pub fn new(redis: RedisClient, options: SchedulerOptions) -> Self {
        Scheduler {
            redis,
            name: uuid::Uuid::new_v4().simple().to_string(),
            options,
        }
    }

    /// The scheduler's name (the value of the locks it holds).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs rounds until `stop` fires, then releases its locks.
    pub async fn run(self, stop: CancellationToken) {
        let mut held = Held::default();
        let mut ticker =
            tokio::time::interval(self.options.interval.max(Duration::from_millis(50)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(scheduler = %self.name, "scheduler started");
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.cancelled() => break,
            }
            match self.round(&mut held).await {
                Ok(report) if report != RoundReport::default() => {
                    tracing::debug!(scheduler = %self.name, ?report, "scheduler round");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(scheduler = %self.name, error = %e, "scheduler round failed")
                }
            }
        }
        if let Err(e) = self.release(&held).await {
            tracing::warn!(scheduler = %self.name, error = %e, "cannot release scheduler locks; they expire by themselves");
        }
        tracing::info!(scheduler = %self.name, "scheduler stopped");
    }

    /// One round: take or renew locks, enqueue what is due, heartbeat.
    pub async fn round(&self, held: &mut Held) -> RqResult<RoundReport> {
        let mut conn = self.redis.conn().await?;
        let ttl = self.options.lock_ttl.as_secs().max(1);
        let queues = match &self.options.queues {
            Queues::Only(queues) => queues.clone(),
            Queues::All => {
                let members: Vec<String> = redis::cmd("SMEMBERS")
                    .arg(keys::QUEUES)
                    .query_async(&mut conn)
                    .await?;
                members
                    .iter()
                    .filter_map(|k| keys::queue_name(k))
                    .map(str::to_string)
                    .collect()
            }
        };
        for q in &queues {
            let got = self.lock(&mut conn, &keys::scheduler_lock(q), ttl).await?;
            if got {
                if held.queues.insert(q.clone()) {
                    tracing::info!(scheduler = %self.name, queue = %q, "scheduler lock acquired");
                }
            } else if held.queues.remove(q) {
                tracing::warn!(scheduler = %self.name, queue = %q, "scheduler lock lost to another scheduler");
            }
        }
        let mut report = RoundReport::default();
        // What is due is judged on Redis's clock, whatever this host's clock says.
        let now = server_now(&mut conn).await?;
        for q in held.queues.iter() {
            loop {
                let moved: u64 = scripts::PROMOTE
                    .prepare_invoke()
                    .arg(q)
                    .arg(now.text())
                    .arg(PROMOTE_BATCH)
                    .invoke_async(&mut conn)
                    .await?;
                report.promoted += moved;
                if moved < PROMOTE_BATCH {
                    break;
                }
            }
        }
        if self.options.periodic {
            let got = self.lock(&mut conn, PERIODIC_LOCK, ttl).await?;
            if got != held.periodic {
                tracing::info!(scheduler = %self.name, held = got, "periodic jobs lock changed hands");
                held.periodic = got;
            }
            if got {
                let grace = self.options.misfire_grace.as_secs() as i64;
                report.periodic = periodic::fire_due(&mut conn, now.secs(), grace).await?;
            }
        }
        if self.options.legacy {
            report.legacy =
                legacy::promote_due(&mut conn, self.options.interval.as_secs() + 10).await?;
        }
        self.heartbeat(&mut conn, held, &now).await?;
        Ok(report)
    }

    async fn lock(
        &self,
        conn: &mut crate::connection::RedisConnection,
        key: &str,
        ttl: u64,
    ) -> RqResult<bool> {
        let got: i64 = scripts::LOCK
            .prepare_invoke()
            .arg(key)
            .arg(&self.name)
            .arg(ttl)
            .invoke_async(conn)
            .await?;
        Ok(got == 1)
    }

    async fn heartbeat(
        &self,
        conn: &mut crate::connection::RedisConnection,
        held: &Held,
        now: &Timestamp,
    ) -> RqResult<()> {
        let key = keys::scheduler(&self.name);
        let mut held_list: Vec<&str> = held.queues.iter().map(String::as_str).collect();
        held_list.sort_unstable();
        let () = redis::pipe()
            .atomic()
            .cmd("HSET")
            .arg(&key)
            .arg("name")
            .arg(&self.name)
            .arg("hostname")
            .arg(gethostname::gethostname().to_string_lossy().as_ref())
            .arg("pid")
            .arg(std::process::id())
            .arg("queues")
            .arg(held_list.join(","))
            .arg("last_heartbeat")
            .arg(now.text())
            .ignore()
            .cmd("HSETNX")
            .arg(&key)
            .arg("created_at")
            .arg(now.text())
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(self.options.lock_ttl.as_secs().max(1))
            .ignore()
            .query_async(conn)
            .await?;
        Ok(())
    }

    async fn release(&self, held: &Held) -> RqResult<()> {
        let mut conn = self.redis.conn().await?;
        let mut locks: Vec<String> = held
            .queues
            .iter()
            .map(|q| keys::scheduler_lock(q))
            .collect();
        if held.periodic {
            locks.push(PERIODIC_LOCK.to_string());
        }
        for key in locks {
            let _: i64 = scripts::UNLOCK
                .prepare_invoke()
                .arg(&key)
                .arg(&self.name)
                .invoke_async(&mut conn)
                .await?;
        }
        let _: i64 = redis::cmd("DEL")
            .arg(keys::scheduler(&self.name))
            .query_async(&mut conn)
            .await?;
        Ok(())
    }
}
