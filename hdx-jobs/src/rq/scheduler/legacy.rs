//! Jobs of the rq-scheduler package (docs/rq-protocol.md §5.17): the old service scheduled its CKAN
//! calls with it, in the global sorted set `rq:scheduler:scheduled_jobs`, pickled. Our
//! scheduler enqueues them at their time, so switching loses no scheduled call; periodic ones
//! (`meta` with `interval` or `cron_string`, and `repeat`) are re-added as rq-scheduler would.
//!
//! Like rq-scheduler, a pass holds `rq:scheduler_lock` (SET NX, expiring) only while it runs,
//! so real rq-scheduler processes and ours can share the database; each job is moved by a
//! compare-and-set script, so even then none is enqueued twice.

use std::str::FromStr;

use chrono::{TimeZone, Utc};
use redis::aio::ConnectionLike;
use serde_json::Value;

use crate::rq::error::RqResult;
use crate::rq::job::Job;
use crate::rq::payload::{self, Serializer};
use crate::rq::scripts;
use crate::rq::time::{format_epoch_f64, server_now, Timestamp};

/// rq-scheduler's sorted set of scheduled jobs.
pub const SCHEDULED_JOBS: &str = "rq:scheduler:scheduled_jobs";
/// rq-scheduler's lock, held during a pass.
pub const LOCK: &str = "rq:scheduler_lock";

/// Ids and times (Unix seconds) of the jobs waiting in rq-scheduler's set, soonest first.
pub async fn waiting<C: ConnectionLike + Send>(conn: &mut C) -> RqResult<Vec<(String, i64)>> {
    Ok(redis::cmd("ZRANGE")
        .arg(SCHEDULED_JOBS)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(conn)
        .await?)
}

/// Removes a job from rq-scheduler's set and deletes it; `false` when it was not there.
pub async fn remove<C: ConnectionLike + Send>(conn: &mut C, id: &str) -> RqResult<bool> {
    let removed: i64 = redis::cmd("ZREM")
        .arg(SCHEDULED_JOBS)
        .arg(id)
        .query_async(conn)
        .await?;
    if removed == 1 {
        let _: i64 = scripts::DELETE
            .prepare_invoke()
            .arg(id)
            .invoke_async(conn)
            .await?;
    }
    Ok(removed == 1)
}

/// One pass: enqueues the due jobs; returns how many.
pub async fn promote_due<C: ConnectionLike + Send>(conn: &mut C, lock_secs: u64) -> RqResult<u64> {
    let now = server_now(conn).await?;
    let waiting: i64 = redis::cmd("ZCOUNT")
        .arg(SCHEDULED_JOBS)
        .arg("-inf")
        .arg(now.secs())
        .query_async(conn)
        .await?;
    if waiting == 0 {
        return Ok(0);
    }
    let acquired: Option<String> = redis::cmd("SET")
        .arg(LOCK)
        .arg(format_epoch_f64(now.secs_f64()))
        .arg("NX")
        .arg("EX")
        .arg(lock_secs)
        .query_async(conn)
        .await?;
    if acquired.is_none() {
        return Ok(0);
    }
    let result = promote_locked(conn, &now).await;
    let _: i64 = redis::cmd("DEL").arg(LOCK).query_async(conn).await?;
    result
}

async fn promote_locked<C: ConnectionLike + Send>(conn: &mut C, now: &Timestamp) -> RqResult<u64> {
    let due = super::due_entries(conn, SCHEDULED_JOBS, now.secs()).await?;
    let mut moved = 0;
    for (id, score) in due {
        let (new_meta, next) = match Job::fetch(conn, &id).await? {
            Some(job) => reschedule(&job, now.secs()),
            None => (None, -1),
        };
        let done: i64 = scripts::PROMOTE_LEGACY
            .prepare_invoke()
            .arg(&id)
            .arg(score)
            .arg(now.text())
            .arg(new_meta.unwrap_or_default())
            .arg(next)
            .invoke_async(conn)
            .await?;
        if done == 1 {
            tracing::info!(job_id = %id, "enqueued a job scheduled with rq-scheduler");
            moved += 1;
        }
    }
    Ok(moved)
}

/// rq-scheduler's rule for its periodic jobs: decrement `repeat`, and re-add the job at
/// `now + interval` or the next cron time unless the repeats are used up. Returns the new
/// pickled meta (if it changed) and the next time (-1 for none).
fn reschedule(job: &Job, now: i64) -> (Option<Vec<u8>>, i64) {
    let Some(raw) = job.fields.get("meta").filter(|m| !m.is_empty()) else {
        return (None, -1);
    };
    let Ok((Value::Object(mut meta), _)) = payload::decode_value(raw) else {
        return (None, -1);
    };
    let interval = meta
        .get("interval")
        .and_then(Value::as_i64)
        .filter(|i| *i > 0);
    let cron = meta
        .get("cron_string")
        .and_then(Value::as_str)
        .map(str::to_string);
    if interval.is_none() && cron.is_none() {
        return (None, -1);
    }
    let mut new_meta = None;
    let mut exhausted = false;
    if let Some(repeat) = meta.get("repeat").and_then(Value::as_i64) {
        if repeat > 0 {
            let left = repeat - 1;
            meta.insert("repeat".into(), Value::from(left));
            exhausted = left == 0;
            new_meta = payload::encode_value(&Value::Object(meta.clone()), Serializer::Pickle).ok();
        }
    }
    if exhausted {
        return (new_meta, -1);
    }
    let next = match (interval, cron) {
        (Some(interval), _) => now + interval,
        (None, Some(cron)) => next_cron(&cron, now).unwrap_or(-1),
        (None, None) => -1,
    };
    (new_meta, next)
}

fn next_cron(expression: &str, now: i64) -> Option<i64> {
    let cron = croner::Cron::from_str(expression).ok()?;
    let start = Utc.timestamp_opt(now, 0).single()?;
    cron.find_next_occurrence(&start, false)
        .ok()
        .map(|t| t.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job_with_meta(meta: Value) -> Job {
        let bytes = payload::encode_value(&meta, Serializer::Pickle).expect("pickle");
        Job::from_fields("j", [("meta".to_string(), bytes)].into())
    }

    #[test]
    fn periodic_rq_scheduler_jobs_come_back() {
        assert_eq!(
            reschedule(&job_with_meta(json!({"interval": 60})), 1000),
            (None, 1060)
        );
        let (meta, next) = reschedule(&job_with_meta(json!({"interval": 60, "repeat": 2})), 1000);
        assert_eq!(next, 1060);
        let meta = payload::decode_value(&meta.expect("new meta"))
            .expect("decode")
            .0;
        assert_eq!(meta["repeat"], json!(1));
        let (_, next) = reschedule(&job_with_meta(json!({"interval": 60, "repeat": 1})), 1000);
        assert_eq!(next, -1, "repeats used up");
        let (_, next) = reschedule(&job_with_meta(json!({"cron_string": "0 * * * *"})), 1000);
        assert_eq!(next, 3600);
        assert_eq!(
            reschedule(&job_with_meta(json!({"k": "v"})), 1000),
            (None, -1)
        );
    }
}
