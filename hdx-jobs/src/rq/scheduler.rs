//! The built-in scheduler (rq-protocol.md §5.16): moves due jobs of `rq:scheduled:<q>` (delayed
//! jobs, retries with an interval) into their queue.
//!
//! It holds `rq:scheduler-lock:<q>` with RQ 2.10+'s semantics (the scheduler's name as value,
//! 61 s expiry, renewed every interval), so exactly one scheduler, ours or Python's, serves a
//! queue at a time; another takes over within the lock's expiry when the holder dies. The
//! promotion script removes each job from the registry before enqueueing it, so even two
//! schedulers racing could not enqueue a job twice.

use std::collections::HashSet;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::error::RqResult;
use super::keys;
use super::scripts;
use super::time::Timestamp;
use crate::connection::RedisClient;

/// Lock expiry, as RQ's (interval 1 s + 60).
const LOCK_SECS: u64 = 61;
/// Jobs moved per script call.
const PROMOTE_BATCH: u64 = 1000;

/// A scheduler for some queues.
#[derive(Debug)]
pub struct Scheduler {
    redis: RedisClient,
    name: String,
    queues: Vec<String>,
    interval: Duration,
}

impl Scheduler {
    /// A scheduler with a fresh name (uuid hex, as RQ's).
    pub fn new(redis: RedisClient, queues: Vec<String>, interval: Duration) -> Self {
        Scheduler {
            redis,
            name: uuid::Uuid::new_v4().simple().to_string(),
            queues,
            interval,
        }
    }

    /// The scheduler's name (the lock value).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs until `stop` fires, then releases its locks.
    pub async fn run(self, stop: CancellationToken) {
        let mut held: HashSet<String> = HashSet::new();
        let mut ticker = tokio::time::interval(self.interval.max(Duration::from_millis(50)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.cancelled() => break,
            }
            if let Err(e) = self.tick(&mut held).await {
                tracing::warn!(scheduler = %self.name, error = %e, "scheduler round failed");
            }
        }
        if let Err(e) = self.release(&held).await {
            tracing::warn!(scheduler = %self.name, error = %e, "cannot release scheduler locks; they expire in {LOCK_SECS} s");
        }
    }

    /// One round: take or renew locks, promote due jobs of held queues, heartbeat.
    pub async fn tick(&self, held: &mut HashSet<String>) -> RqResult<u64> {
        let mut conn = self.redis.conn().await?;
        for q in &self.queues {
            let got: i64 = scripts::LOCK
                .prepare_invoke()
                .arg(keys::scheduler_lock(q))
                .arg(&self.name)
                .arg(LOCK_SECS)
                .invoke_async(&mut conn)
                .await?;
            if got == 1 {
                if held.insert(q.clone()) {
                    tracing::info!(scheduler = %self.name, queue = %q, "scheduler lock acquired");
                }
            } else if held.remove(q) {
                tracing::warn!(scheduler = %self.name, queue = %q, "scheduler lock lost to another scheduler");
            }
        }
        let now = Timestamp::now();
        let mut moved_total = 0;
        for q in held.iter() {
            loop {
                let moved: u64 = scripts::PROMOTE
                    .prepare_invoke()
                    .arg(q)
                    .arg(now.secs())
                    .arg(now.text())
                    .arg(PROMOTE_BATCH)
                    .invoke_async(&mut conn)
                    .await?;
                moved_total += moved;
                if moved < PROMOTE_BATCH {
                    break;
                }
            }
        }
        let key = keys::scheduler(&self.name);
        let held_list: Vec<&str> = held.iter().map(String::as_str).collect();
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
            .arg(LOCK_SECS)
            .ignore()
            .query_async(&mut conn)
            .await?;
        if moved_total > 0 {
            tracing::debug!(scheduler = %self.name, jobs = moved_total, "promoted due jobs");
        }
        Ok(moved_total)
    }

    async fn release(&self, held: &HashSet<String>) -> RqResult<()> {
        let mut conn = self.redis.conn().await?;
        for q in held {
            let _: i64 = scripts::UNLOCK
                .prepare_invoke()
                .arg(keys::scheduler_lock(q))
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
