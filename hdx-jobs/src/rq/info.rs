//! Read-only summaries of queues and workers, for `hdx-jobs info` and the monitor.
//!
//! Unlike `rq info`, reading changes nothing (no cleanup as a side effect).

use std::collections::HashMap;

use serde::Serialize;

use super::error::{from_value, RqResult};
use super::keys;
use super::payload::CallPayload;
use super::registry::{member_job_id, Registry};
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
    // Counts and head job of every queue in one round trip, the heads' enqueue times and the
    // clock in a second.
    let mut pipe = redis::pipe();
    for name in &names {
        pipe.cmd("LLEN").arg(keys::queue(name));
        for registry in Registry::ALL {
            pipe.cmd("ZCARD").arg(registry.key(name));
        }
        pipe.cmd("LINDEX").arg(keys::queue(name)).arg(0);
    }
    let replies: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
    let per_queue = 2 + Registry::ALL.len();
    let mut counts = Vec::with_capacity(names.len());
    let mut heads = Vec::with_capacity(names.len());
    for chunk in replies.chunks(per_queue) {
        let (numbers, head) = chunk.split_at(per_queue - 1);
        counts.push(
            numbers
                .iter()
                .map(|v| from_value::<u64>(v.clone()))
                .collect::<RqResult<Vec<u64>>>()?,
        );
        heads.push(from_value::<Option<String>>(head[0].clone())?);
    }
    let latencies = head_latencies(&mut conn, &heads).await?;
    Ok(names
        .into_iter()
        .zip(counts)
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

/// For each queue's head job (`None`: empty queue), the seconds it has waited since it was
/// enqueued, by Redis's clock (0 when empty): one round trip whatever the number of queues.
async fn head_latencies<C: redis::aio::ConnectionLike + Send>(
    conn: &mut C,
    heads: &[Option<String>],
) -> RqResult<Vec<f64>> {
    let mut pipe = redis::pipe();
    for id in heads.iter().flatten() {
        pipe.cmd("HGET").arg(keys::job(id)).arg("enqueued_at");
    }
    pipe.cmd("TIME");
    let mut replies: Vec<redis::Value> = pipe.query_async(conn).await?;
    let (secs, micros): (i64, i64) = from_value(replies.pop().unwrap_or(redis::Value::Nil))?;
    let now = secs as f64 + micros as f64 / 1e6;
    let mut enqueued = replies
        .into_iter()
        .map(from_value::<Option<String>>)
        .collect::<RqResult<Vec<_>>>()?
        .into_iter();
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
        .map(|(key, h)| summary_of(key, &h))
        .collect())
}

/// A worker's summary from its hash.
fn summary_of(key: &str, h: &HashMap<String, String>) -> WorkerSummary {
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
}

/// A worker with what it runs now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerDetail {
    /// What [`workers`] says of it.
    #[serde(flatten)]
    pub summary: WorkerSummary,
    /// Jobs it may run at once (hdx-jobs workers only).
    pub concurrency: Option<u64>,
    /// IP address it registered.
    pub ip_address: Option<String>,
    /// The jobs it holds a lease on, found in its queues' started registries.
    pub running_jobs: Vec<RunningJob>,
}

/// A job a worker runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunningJob {
    /// Job id.
    pub id: String,
    /// Its queue.
    pub queue: String,
    /// The task's wire name.
    pub func_name: Option<String>,
    /// When it started (RQ text).
    pub started_at: Option<String>,
}

/// Running jobs read from one started registry, at most (a registry holds one entry per
/// running job, so this is far above any real deployment's concurrency).
const RUNNING_SCAN_LIMIT: isize = 5_000;

/// One worker by name, with its running jobs: three round trips (its hash; its queues'
/// started registries; those jobs' worker, task and start). `None` when it is not registered.
pub async fn worker(redis: &RedisClient, name: &str) -> RqResult<Option<WorkerDetail>> {
    let mut conn = redis.conn().await?;
    let key = keys::worker(name);
    let hash: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(&key)
        .query_async(&mut conn)
        .await?;
    if hash.is_empty() {
        return Ok(None);
    }
    let summary = summary_of(&key, &hash);
    let mut pipe = redis::pipe();
    for q in &summary.queues {
        pipe.cmd("ZRANGE")
            .arg(Registry::Started.key(q))
            .arg(0)
            .arg(RUNNING_SCAN_LIMIT - 1);
    }
    let registries: Vec<Vec<String>> = if summary.queues.is_empty() {
        Vec::new()
    } else {
        pipe.query_async(&mut conn).await?
    };
    let candidates: Vec<(String, String)> = summary
        .queues
        .iter()
        .zip(registries)
        .flat_map(|(q, members)| {
            members
                .into_iter()
                .map(move |m| (q.clone(), member_job_id(&m).to_string()))
        })
        .collect();
    let mut pipe = redis::pipe();
    for (_, id) in &candidates {
        pipe.cmd("HMGET")
            .arg(keys::job(id))
            .arg("worker_name")
            .arg("data")
            .arg("started_at");
    }
    type Fields = (Option<String>, Option<Vec<u8>>, Option<String>);
    let fields: Vec<Fields> = if candidates.is_empty() {
        Vec::new()
    } else {
        pipe.query_async(&mut conn).await?
    };
    let running_jobs = candidates
        .into_iter()
        .zip(fields)
        .filter(|(_, (worker, _, _))| worker.as_deref() == Some(name))
        .map(|((queue, id), (_, data, started_at))| RunningJob {
            func_name: data.and_then(|d| CallPayload::func_name_of(&d)),
            id,
            queue,
            started_at,
        })
        .collect();
    Ok(Some(WorkerDetail {
        concurrency: hash.get("hdx_concurrency").and_then(|v| v.parse().ok()),
        ip_address: hash.get("ip_address").filter(|a| !a.is_empty()).cloned(),
        summary,
        running_jobs,
    }))
}
