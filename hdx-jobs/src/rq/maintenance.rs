//! Registry maintenance (docs/rq-protocol.md §5.11): what makes "no job lost when a worker dies"
//! hold.
//!
//! A running job's entry in `rq:wip:<q>` is a lease its worker renews. When a worker dies its
//! leases run out; maintenance (any of our workers, every maintenance interval, under RQ's
//! `rq:clean_registries:<q>` lock) then fails each such job with RQ's AbandonedJobError text, or
//! retries it when it has retries left. The same script as a normal failure does it, after
//! checking that the lease really expired, so a job is never taken from a live worker and never
//! handled twice. Jobs a dead Python worker left in a queue's intermediate list are put back
//! at the front of their queue (they never started, so running them loses nothing).

use std::collections::HashSet;

use redis::aio::ConnectionLike;

use super::error::RqResult;
use super::job::Job;
use super::keys;
use super::registry::{self, Registry};
use super::results::encode_exc_string;
use super::scripts;
use super::time::{format_epoch_f64, server_now, Timestamp};

/// How long our cleaner holds a queue's maintenance lock. A round takes milliseconds and the
/// lock is released after it; the expiry only matters when the cleaner dies mid-round, and then
/// bounds how long the next recovery of abandoned jobs waits. A round that outlives it may
/// overlap another: harmless, since each recovery is one script that re-checks the lease.
pub const LOCK_SECS: u64 = 10;
/// Python RQ's expiry for the same lock (`SET NX EX 899`).
const RQ_LOCK_SECS: u64 = 899;
/// An RQ lock held longer than this was left by a Python cleaner that died mid-round.
const RQ_LOCK_STALE_AFTER_SECS: u64 = 60;
/// How long an id may sit in an intermediate list before it counts as stuck.
const INTERMEDIATE_STUCK_SECS: f64 = 60.0;

/// What one round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CleanReport {
    /// Abandoned jobs recorded as failed.
    pub abandoned_failed: Vec<String>,
    /// Abandoned jobs scheduled or queued for a retry.
    pub abandoned_retried: Vec<String>,
    /// Jobs moved from an intermediate list back to their queue.
    pub rescued: Vec<String>,
    /// Stale worker keys removed from the worker sets.
    pub stale_workers: u64,
    /// False when another process held the lock and nothing was done.
    pub ran: bool,
}

impl CleanReport {
    /// True when nothing worth a log line happened.
    pub fn is_empty(&self) -> bool {
        self.abandoned_failed.is_empty()
            && self.abandoned_retried.is_empty()
            && self.rescued.is_empty()
    }
}

/// One maintenance round on a queue by `holder` (a worker name), under the queue's cleaning
/// lock. A lock left behind by a cleaner that died mid-round (ours or Python RQ's) does not stop
/// the round for long: see [`LOCK_SECS`] and `lua/maintenance_lock.lua`.
pub async fn clean_queue<C: ConnectionLike + Send>(
    conn: &mut C,
    queue: &str,
    holder: &str,
) -> RqResult<CleanReport> {
    let lock = keys::clean_registries_lock(queue);
    let acquired: i64 = scripts::MAINTENANCE_LOCK
        .prepare_invoke()
        .arg(&lock)
        .arg(holder)
        .arg(LOCK_SECS)
        .arg(RQ_LOCK_SECS)
        .arg(RQ_LOCK_STALE_AFTER_SECS)
        .invoke_async(conn)
        .await?;
    if acquired == 0 {
        return Ok(CleanReport::default());
    }
    let result = clean_queue_locked(conn, queue).await;
    let _: i64 = scripts::UNLOCK
        .prepare_invoke()
        .arg(&lock)
        .arg(holder)
        .invoke_async(conn)
        .await?;
    result
}

async fn clean_queue_locked<C: ConnectionLike + Send>(
    conn: &mut C,
    queue: &str,
) -> RqResult<CleanReport> {
    let mut report = CleanReport {
        ran: true,
        ..Default::default()
    };
    // Expiry is judged on Redis's clock: a cleaner whose host clock runs ahead must not take
    // live jobs from their workers.
    let now = server_now(conn).await?;

    let _: i64 = redis::cmd("ZREMRANGEBYSCORE")
        .arg(Registry::Finished.key(queue))
        .arg(0)
        .arg(now.secs())
        .query_async(conn)
        .await?;

    let expired: Vec<String> = redis::cmd("ZRANGEBYSCORE")
        .arg(Registry::Started.key(queue))
        .arg(0)
        .arg(now.secs())
        .query_async(conn)
        .await?;
    let exc = encode_exc_string(&format!(
        "AbandonedJobError: Moved to FailedJobRegistry, due to AbandonedJobError, at {}\n\
         (the worker running it stopped renewing its lease: it died or lost Redis)\n",
        now.at.format("%Y-%m-%d %H:%M:%S%.6f")
    ));
    for member in expired {
        let (id, x) = registry::split_member(&member);
        let func = match Job::fetch(conn, id).await? {
            // Only the name, never the whole payload: it may be poison.
            Some(job) => job.func_name().unwrap_or_default(),
            None => String::new(),
        };
        let outcome: String = scripts::FAIL
            .prepare_invoke()
            .arg(id)
            .arg(x)
            .arg(queue)
            .arg("")
            .arg(now.text())
            .arg("")
            .arg(format_epoch_f64(now.secs_f64()))
            .arg(&exc)
            .arg("abandoned")
            .arg("1")
            .arg(0)
            .arg(0)
            .arg("")
            .arg(&func)
            .arg("")
            .invoke_async(conn)
            .await?;
        match outcome.as_str() {
            "failed" => report.abandoned_failed.push(id.to_string()),
            "retried" | "scheduled" => report.abandoned_retried.push(id.to_string()),
            _ => {}
        }
    }

    let _: i64 = redis::cmd("ZREMRANGEBYSCORE")
        .arg(Registry::Failed.key(queue))
        .arg(0)
        .arg(now.secs())
        .query_async(conn)
        .await?;

    report.stale_workers = clean_worker_sets(conn, queue).await?;
    report.rescued = rescue_intermediate(conn, queue, &now).await?;
    Ok(report)
}

/// Drops worker keys whose hash expired from `rq:workers:<q>` and `rq:workers`.
async fn clean_worker_sets<C: ConnectionLike + Send>(conn: &mut C, queue: &str) -> RqResult<u64> {
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg(keys::queue_workers(queue))
        .query_async(conn)
        .await?;
    let mut stale = 0;
    for key in members {
        let exists: bool = redis::cmd("EXISTS").arg(&key).query_async(conn).await?;
        if !exists {
            let () = redis::pipe()
                .cmd("SREM")
                .arg(keys::queue_workers(queue))
                .arg(&key)
                .ignore()
                .cmd("SREM")
                .arg(keys::WORKERS)
                .arg(&key)
                .ignore()
                .query_async(conn)
                .await?;
            stale += 1;
        }
    }
    Ok(stale)
}

/// Ids stuck in the intermediate list (not started for a minute) go back to their queue.
async fn rescue_intermediate<C: ConnectionLike + Send>(
    conn: &mut C,
    queue: &str,
    now: &Timestamp,
) -> RqResult<Vec<String>> {
    let ids: Vec<String> = redis::cmd("LRANGE")
        .arg(keys::intermediate(queue))
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let started: Vec<String> = redis::cmd("ZRANGE")
        .arg(Registry::Started.key(queue))
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await?;
    let started: HashSet<&str> = started.iter().map(|m| registry::member_job_id(m)).collect();
    let mut rescued = Vec::new();
    for id in ids.iter().filter(|id| !started.contains(id.as_str())) {
        let seen_key = keys::intermediate_first_seen(queue, id);
        let first_seen: Option<String> = redis::cmd("SET")
            .arg(&seen_key)
            .arg(format_epoch_f64(now.secs_f64()))
            .arg("NX")
            .arg("EX")
            .arg(86400)
            .arg("GET")
            .query_async(conn)
            .await?;
        let stuck = first_seen
            .and_then(|t| t.parse::<f64>().ok())
            .is_some_and(|t| now.secs_f64() - t > INTERMEDIATE_STUCK_SECS);
        if stuck {
            let moved: i64 = scripts::RESCUE_INTERMEDIATE
                .prepare_invoke()
                .arg(queue)
                .arg(id)
                .arg(now.text())
                .invoke_async(conn)
                .await?;
            if moved == 1 {
                rescued.push(id.clone());
            }
        }
    }
    Ok(rescued)
}
