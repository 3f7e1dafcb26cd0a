//! Read-only summaries of queues and workers, for `hdx-jobs info` and the monitor.
//!
//! Unlike `rq info`, reading changes nothing (no cleanup as a side effect).

use std::collections::HashMap;

use serde::Serialize;

use super::error::RqResult;
use super::keys;
use super::registry::Registry;
use super::time;
use crate::connection::RedisClient;

/// Job counts of one queue, and how long its next job has waited.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueSummary {
    /// Queue name.
    pub name: String,
    /// Waiting jobs.
    pub queued: u64,
    /// Running jobs (leases in `rq:wip`).
    pub started: u64,
    /// Finished jobs still kept.
    pub finished: u64,
    /// Failed and stopped jobs.
    pub failed: u64,
    /// Jobs waiting on dependencies.
    pub deferred: u64,
    /// Jobs waiting for their time.
    pub scheduled: u64,
    /// Canceled jobs.
    pub canceled: u64,
    /// Seconds the job at the head of the queue has waited since it was enqueued, by Redis's
    /// clock (Sidekiq's "latency"); 0 for an empty queue.
    pub latency_seconds: f64,
}

/// One worker as its hash describes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerSummary {
    /// Worker name.
    pub name: String,
    /// `started`, `idle`, `busy`, `suspended`.
    pub state: String,
    /// Queues in priority order.
    pub queues: Vec<String>,
    /// A job it runs.
    pub current_job: Option<String>,
    /// Jobs it runs now (hdx-jobs workers only).
    pub running: Option<u64>,
    /// Process id.
    pub pid: Option<u64>,
    /// Host.
    pub hostname: String,
    /// Birth timestamp (RQ text).
    pub birth: String,
    /// Last heartbeat (RQ text).
    pub last_heartbeat: String,
    /// Successful jobs.
    pub successful_job_count: u64,
    /// Failed jobs.
    pub failed_job_count: u64,
    /// Seconds spent on jobs.
    pub total_working_time: f64,
    /// Software version.
    pub version: String,
}

/// Every queue of `rq:queues`, sorted by name, with its counts.
pub async fn queues(redis: &RedisClient) -> RqResult<Vec<QueueSummary>> {
    let mut conn = redis.conn().await?;
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg(keys::QUEUES)
        .query_async(&mut conn)
        .await?;
    let mut names: Vec<String> = members
        .iter()
        .filter_map(|k| keys::queue_name(k))
        .map(str::to_string)
        .collect();
    names.sort();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for name in &names {
        pipe.cmd("LLEN").arg(keys::queue(name));
        for registry in Registry::ALL {
            pipe.cmd("ZCARD").arg(registry.key(name));
        }
    }
    let counts: Vec<u64> = pipe.query_async(&mut conn).await?;
    let latencies = head_latencies(&mut conn, &names).await?;
    Ok(names
        .into_iter()
        .zip(counts.chunks(1 + Registry::ALL.len()))
        .zip(latencies)
        .map(|((name, c), latency_seconds)| QueueSummary {
            name,
            queued: c[0],
            started: c[1],
            finished: c[2],
            failed: c[3],
            deferred: c[4],
            scheduled: c[5],
            canceled: c[6],
            latency_seconds,
        })
        .collect())
}

/// For each queue, the seconds its head job has waited by Redis's clock (0 when empty): three
/// round trips whatever the number of queues.
async fn head_latencies<C: redis::aio::ConnectionLike + Send>(
    conn: &mut C,
    names: &[String],
) -> RqResult<Vec<f64>> {
    let mut pipe = redis::pipe();
    for name in names {
        pipe.cmd("LINDEX").arg(keys::queue(name)).arg(0);
    }
    let heads: Vec<Option<String>> = pipe.query_async(conn).await?;
    let mut pipe = redis::pipe();
    for id in heads.iter().flatten() {
        pipe.cmd("HGET").arg(keys::job(id)).arg("enqueued_at");
    }
    let mut enqueued = if pipe.cmd_iter().next().is_some() {
        pipe.query_async::<Vec<Option<String>>>(conn).await?
    } else {
        Vec::new()
    }
    .into_iter();
    let now = time::server_now(conn).await?.secs_f64();
    Ok(heads
        .iter()
        .map(|head| {
            head.as_ref()
                .and_then(|_| enqueued.next().flatten())
                .and_then(|at| time::parse_ts(&at))
                .map(|at| (now - at.timestamp_micros() as f64 / 1e6).max(0.0))
                .unwrap_or(0.0)
        })
        .collect())
}

/// Every live worker of `rq:workers`, sorted by name (keys whose hash expired are skipped).
pub async fn workers(redis: &RedisClient) -> RqResult<Vec<WorkerSummary>> {
    let mut conn = redis.conn().await?;
    let mut members: Vec<String> = redis::cmd("SMEMBERS")
        .arg(keys::WORKERS)
        .query_async(&mut conn)
        .await?;
    members.sort();
    if members.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for key in &members {
        pipe.cmd("HGETALL").arg(key);
    }
    let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut conn).await?;
    Ok(members
        .iter()
        .zip(hashes)
        .filter(|(_, h)| !h.is_empty())
        .map(|(key, h)| {
            let text = |f: &str| h.get(f).cloned().unwrap_or_default();
            let num = |f: &str| h.get(f).and_then(|v| v.parse::<u64>().ok());
            WorkerSummary {
                name: keys::worker_name(key).unwrap_or(key).to_string(),
                state: h.get("state").cloned().unwrap_or_else(|| "?".into()),
                queues: text("queues")
                    .split(',')
                    .filter(|q| !q.is_empty())
                    .map(str::to_string)
                    .collect(),
                current_job: h.get("current_job").filter(|j| !j.is_empty()).cloned(),
                running: num("hdx_running"),
                pid: num("pid"),
                hostname: text("hostname"),
                birth: text("birth"),
                last_heartbeat: text("last_heartbeat"),
                successful_job_count: num("successful_job_count").unwrap_or(0),
                failed_job_count: num("failed_job_count").unwrap_or(0),
                total_working_time: h
                    .get("total_working_time")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0.0),
                version: text("version"),
            }
        })
        .collect())
}
