//! A worker's life in Redis: birth, heartbeats, maintenance rounds, death
//! (docs/rq-protocol.md §5.10, §7).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::Shared;
use crate::rq::error::{RqError, RqResult};
use crate::rq::keys;
use crate::rq::maintenance;
use crate::rq::scripts;
use crate::rq::time::{format_epoch_f64, Timestamp};

/// What we write as `version`/`python_version`: honest, and shown by rq-dashboard.
const VERSION: &str = concat!("hdx-jobs ", env!("CARGO_PKG_VERSION"));
const RUNTIME: &str = concat!("Rust (hdx-jobs ", env!("CARGO_PKG_VERSION"), ")");

/// Registers the worker (refusing a name that a live worker holds) and its queues, retrying
/// while Redis is unreachable unless the worker is stopped meanwhile.
pub(super) async fn register(shared: &Arc<Shared>) -> RqResult<()> {
    let stop = shared.stop.clone();
    shared
        .conn
        .run_retrying(
            "registering the worker",
            |mut conn| async move {
                let key = keys::worker(&shared.name);
                let (exists, dead): (bool, bool) = redis::pipe()
                    .cmd("EXISTS")
                    .arg(&key)
                    .cmd("HEXISTS")
                    .arg(&key)
                    .arg("death")
                    .query_async(&mut conn)
                    .await?;
                if exists && !dead {
                    return Err(RqError::Refused(format!(
                        "a live worker is already named {}",
                        shared.name
                    )));
                }
                write_worker_hash(shared, &mut conn, 0).await
            },
            || stop.level() != super::StopLevel::Running,
        )
        .await
}

/// Writes the full worker hash and set memberships (birth, or re-birth after the hash expired
/// or Redis lost it).
async fn write_worker_hash(
    shared: &Shared,
    conn: &mut MultiplexedConnection,
    running: usize,
) -> RqResult<()> {
    let now = Timestamp::now();
    let key = keys::worker(&shared.name);
    let ip_address = client_address(conn).await;
    let options = &shared.options;
    let state = if shared.suspended.load(Ordering::Relaxed) {
        "suspended"
    } else if running > 0 {
        "busy"
    } else {
        "started"
    };
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.cmd("DEL").arg(&key).ignore();
    pipe.cmd("HSET")
        .arg(&key)
        .arg("birth")
        .arg(now.text())
        .arg("last_heartbeat")
        .arg(now.text())
        .arg("queues")
        .arg(options.queues.join(","))
        .arg("pid")
        .arg(std::process::id())
        .arg("hostname")
        .arg(gethostname::gethostname().to_string_lossy().as_ref())
        .arg("ip_address")
        .arg(ip_address)
        .arg("version")
        .arg(VERSION)
        .arg("python_version")
        .arg(RUNTIME)
        .arg("state")
        .arg(state)
        .arg("hdx_running")
        .arg(running)
        .arg("hdx_concurrency")
        .arg(options.concurrency)
        .ignore();
    pipe.cmd("SADD").arg(keys::WORKERS).arg(&key).ignore();
    for q in &options.queues {
        pipe.cmd("SADD")
            .arg(keys::queue_workers(q))
            .arg(&key)
            .ignore();
        // Listed in rq:queues so `rq info` shows the worker before anything is enqueued.
        pipe.cmd("SADD")
            .arg(keys::QUEUES)
            .arg(keys::queue(q))
            .ignore();
    }
    pipe.cmd("EXPIRE")
        .arg(&key)
        .arg(options.worker_ttl + 60)
        .ignore();
    let () = pipe.query_async(conn).await?;
    Ok(())
}

/// `host:port` of our side of the Redis connection, as Python reports it, or `unknown`.
async fn client_address(conn: &mut MultiplexedConnection) -> String {
    let info: Result<String, _> = redis::cmd("CLIENT").arg("INFO").query_async(conn).await;
    info.ok()
        .and_then(|text| {
            text.split_whitespace()
                .find_map(|part| part.strip_prefix("addr=").map(str::to_string))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Every monitoring interval: refresh the worker hash and each running job's lease; re-register
/// if the hash vanished; stop jobs whose lease was taken over.
pub(super) async fn heartbeat_loop(shared: Arc<Shared>) {
    let interval = shared
        .options
        .job_monitoring_interval
        .min(Duration::from_secs(shared.options.worker_ttl / 3).max(Duration::from_secs(1)));
    let stopping = shared.background.clone();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopping.cancelled() => return,
        }
        if let Err(e) = heartbeat(&shared).await {
            tracing::warn!(worker = %shared.name, error = %e, "heartbeat failed");
        }
    }
}

async fn heartbeat(shared: &Shared) -> RqResult<()> {
    let running = shared.running_snapshot();
    let now = Timestamp::now();
    let (missing, lost): (i64, Vec<String>) = shared
        .conn
        .run(|mut conn| {
            let mut invocation = scripts::HEARTBEAT.prepare_invoke();
            invocation
                .arg(&shared.name)
                .arg(format_epoch_f64(now.secs_f64()))
                .arg(now.text())
                .arg(shared.options.worker_ttl + 60)
                .arg(if shared.suspended.load(Ordering::Relaxed) {
                    "1"
                } else {
                    "0"
                })
                .arg(running.len());
            for (id, x, origin, lease) in &running {
                invocation.arg(id).arg(x).arg(origin).arg(lease);
            }
            async move { Ok(invocation.invoke_async(&mut conn).await?) }
        })
        .await?;
    if missing == 1 {
        tracing::warn!(worker = %shared.name, "worker hash was gone (expired or Redis restarted); registering again");
        let mut conn = shared.conn.get().await?;
        write_worker_hash(shared, &mut conn, running.len()).await?;
        if let Some((id, _, _, _)) = running.first() {
            let () = redis::cmd("HSET")
                .arg(keys::worker(&shared.name))
                .arg("current_job")
                .arg(id)
                .query_async(&mut conn)
                .await?;
        }
    }
    for member in lost {
        let (id, x) = crate::rq::registry::split_member(&member);
        let stopped = shared.stop_jobs(super::StopReason::LeaseLost, |job_id, job| {
            job_id == id && job.execution_id == x
        });
        if stopped > 0 {
            tracing::warn!(worker = %shared.name, job_id = id, "lease lost (maintenance took the job over); stopping it here");
        }
    }
    Ok(())
}

/// Maintenance of the worker's queues at start and every maintenance interval.
pub(super) async fn maintenance_loop(shared: Arc<Shared>) {
    let stopping = shared.background.clone();
    let mut ticker = tokio::time::interval(
        shared
            .options
            .maintenance_interval
            .max(Duration::from_millis(100)),
    );
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopping.cancelled() => return,
        }
        let holder = shared.name.as_str();
        for queue in &shared.options.queues {
            let result =
                shared
                    .conn
                    .run(|mut conn| async move {
                        maintenance::clean_queue(&mut conn, queue, holder).await
                    })
                    .await;
            match result {
                Ok(report) if !report.is_empty() => {
                    tracing::info!(worker = %shared.name, queue, ?report, "maintenance recovered jobs");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(worker = %shared.name, queue, error = %e, "maintenance failed")
                }
            }
        }
    }
}

/// Registers the worker's death (docs/rq-protocol.md §5.10).
pub(super) async fn death(shared: &Shared) {
    let key = keys::worker(&shared.name);
    let result = shared
        .conn
        .run(|mut conn| {
            let mut pipe = redis::pipe();
            pipe.atomic();
            pipe.cmd("SREM").arg(keys::WORKERS).arg(&key).ignore();
            for q in &shared.options.queues {
                pipe.cmd("SREM")
                    .arg(keys::queue_workers(q))
                    .arg(&key)
                    .ignore();
            }
            pipe.cmd("HSET")
                .arg(&key)
                .arg("death")
                .arg(Timestamp::now().text())
                .arg("state")
                .arg("dead")
                .ignore();
            pipe.cmd("EXPIRE").arg(&key).arg(60).ignore();
            async move {
                let () = pipe.query_async(&mut conn).await?;
                Ok(())
            }
        })
        .await;
    if let Err(e) = result {
        tracing::warn!(worker = %shared.name, error = %e, "cannot register the worker's death; its hash will expire");
    }
}
