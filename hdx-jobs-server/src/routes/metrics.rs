//! `/metrics` in Prometheus text format: the deployment's job counters and duration histograms
//! (from Redis, so every worker's jobs count), queue depths per registry, the latency of each
//! queue (how long its next job has waited), live workers, whether each queue's RQ scheduler
//! lock is held (no holder: nothing promotes its delayed jobs and retries), the event stream
//! (length, and each consumer group's pending events and lag), and this process's tile cache,
//! build and HTTP requests.

use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use hdx_jobs::events::stats;
use hdx_jobs::rq::error::RqResult;
use hdx_jobs::rq::{info, keys, metrics};
use hdx_jobs::RedisClient;

use crate::error::ApiError;
use crate::AppState;

/// How long a scrape waits for the event stream's Redis.
pub(crate) const STREAM_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Writes `# HELP` and `# TYPE` lines.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
}

/// `{a="x",b="y"}` with Prometheus escaping.
pub fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}=\"{}\"",
                v.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n")
            )
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// The stream's length and, per consumer group, its pending events and lag.
fn render_stream(out: &mut String, stream_name: &str, stream: &stats::StreamStats) {
    header(
        out,
        "hdx_jobs_event_stream_length",
        "gauge",
        "Entries in the event stream.",
    );
    out.push_str(&format!(
        "hdx_jobs_event_stream_length{} {}\n",
        labels(&[("stream", stream_name)]),
        stream.length
    ));
    header(
        out,
        "hdx_jobs_event_consumer_pending",
        "gauge",
        "Events delivered to a consumer group and not acknowledged.",
    );
    for group in &stream.groups {
        out.push_str(&format!(
            "hdx_jobs_event_consumer_pending{} {}\n",
            labels(&[("stream", stream_name), ("group", &group.name)]),
            group.pending
        ));
    }
    header(
        out,
        "hdx_jobs_event_consumer_lag",
        "gauge",
        "Events a consumer group has not read yet (absent when Redis cannot tell).",
    );
    for group in &stream.groups {
        if let Some(lag) = group.lag {
            out.push_str(&format!(
                "hdx_jobs_event_consumer_lag{} {lag}\n",
                labels(&[("stream", stream_name), ("group", &group.name)])
            ));
        }
    }
}

/// Whether each queue's scheduler lock (`rq:scheduler-lock:<queue>`) exists, in the order of
/// `queues`, read in one pipelined round trip.
async fn scheduler_locks(
    redis: &RedisClient,
    queues: &[info::QueueSummary],
) -> RqResult<Vec<bool>> {
    if queues.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for q in queues {
        pipe.cmd("EXISTS").arg(keys::scheduler_lock(&q.name));
    }
    let mut conn = redis.conn().await?;
    Ok(pipe.query_async(&mut conn).await?)
}

/// The metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"))
)]
pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let redis = state.redis();
    let stream_name = &state.config().core.events.stream_name;
    let (jobs, queues, workers, stream) = tokio::join!(
        metrics::read(redis),
        info::queues(redis),
        info::workers(redis),
        // Bounded: an unreachable stream Redis must not hold the scrape past its timeout.
        tokio::time::timeout(
            STREAM_READ_TIMEOUT,
            stats::stream_stats(state.stream_redis(), stream_name)
        )
    );
    let (jobs, queues, workers) = (
        jobs.map_err(ApiError::internal)?,
        queues.map_err(ApiError::internal)?,
        workers.map_err(ApiError::internal)?,
    );
    let locks = scheduler_locks(redis, &queues)
        .await
        .map_err(ApiError::internal)?;
    let mut out = String::new();

    for (event, help) in [
        ("enqueued", "Jobs enqueued through hdx-jobs"),
        ("finished", "Jobs that succeeded"),
        ("failed", "Jobs that failed for good"),
        ("retried", "Failed runs that were retried"),
        ("stopped", "Jobs stopped by a stop-job command"),
        (
            "abandoned",
            "Jobs whose worker died, failed or retried by maintenance",
        ),
        (
            "interrupted",
            "Jobs put back in their queue by a worker's shutdown timeout",
        ),
    ] {
        let name = format!("hdx_jobs_jobs_{event}_total");
        header(
            &mut out,
            &name,
            "counter",
            &format!("{help}, by queue and task."),
        );
        for ((e, queue, task), count) in &jobs.counters {
            if e == event {
                out.push_str(&format!(
                    "{name}{} {count}\n",
                    labels(&[("queue", queue), ("task", task)])
                ));
            }
        }
    }

    header(
        &mut out,
        "hdx_jobs_job_duration_seconds",
        "histogram",
        "Job run time, by queue and task.",
    );
    for ((queue, task), histogram) in &jobs.durations {
        for (le, count) in &histogram.buckets {
            let l = labels(&[("queue", queue), ("task", task), ("le", le)]);
            out.push_str(&format!(
                "hdx_jobs_job_duration_seconds_bucket{l} {count}\n"
            ));
        }
        let l = labels(&[("queue", queue), ("task", task)]);
        out.push_str(&format!(
            "hdx_jobs_job_duration_seconds_sum{l} {}\n",
            histogram.sum
        ));
        out.push_str(&format!(
            "hdx_jobs_job_duration_seconds_count{l} {}\n",
            histogram.count
        ));
    }

    header(
        &mut out,
        "hdx_jobs_queue_jobs",
        "gauge",
        "Jobs per queue and registry (queued = waiting).",
    );
    for q in &queues {
        for (registry, n) in [
            ("queued", q.queued),
            ("started", q.started),
            ("finished", q.finished),
            ("failed", q.failed),
            ("deferred", q.deferred),
            ("scheduled", q.scheduled),
            ("canceled", q.canceled),
        ] {
            out.push_str(&format!(
                "hdx_jobs_queue_jobs{} {n}\n",
                labels(&[("queue", &q.name), ("registry", registry)])
            ));
        }
    }

    header(
        &mut out,
        "hdx_jobs_queue_latency_seconds",
        "gauge",
        "Seconds the next job of each queue has waited since it was enqueued (0 when empty).",
    );
    for q in &queues {
        out.push_str(&format!(
            "hdx_jobs_queue_latency_seconds{} {:.3}\n",
            labels(&[("queue", &q.name)]),
            q.latency_seconds
        ));
    }

    header(
        &mut out,
        "hdx_jobs_workers",
        "gauge",
        "Live workers, by state.",
    );
    let mut by_state = std::collections::BTreeMap::<&str, u64>::new();
    for w in &workers {
        *by_state.entry(w.state.as_str()).or_default() += 1;
    }
    for (worker_state, n) in by_state {
        out.push_str(&format!(
            "hdx_jobs_workers{} {n}\n",
            labels(&[("state", worker_state)])
        ));
    }
    header(
        &mut out,
        "hdx_jobs_queue_workers",
        "gauge",
        "Live workers listening on each queue.",
    );
    for q in &queues {
        let n = workers
            .iter()
            .filter(|w| w.queues.contains(&q.name))
            .count();
        out.push_str(&format!(
            "hdx_jobs_queue_workers{} {n}\n",
            labels(&[("queue", &q.name)])
        ));
    }

    header(
        &mut out,
        "hdx_jobs_scheduler_lock_held",
        "gauge",
        "1 when a scheduler holds the queue's RQ scheduler lock (its delayed jobs and retries are promoted), else 0.",
    );
    for (q, held) in queues.iter().zip(&locks) {
        out.push_str(&format!(
            "hdx_jobs_scheduler_lock_held{} {}\n",
            labels(&[("queue", &q.name)]),
            u8::from(*held)
        ));
    }

    // The stream may live on another Redis: when it cannot be read, the queue metrics above
    // still answer, and `hdx_jobs_event_stream_up` says so.
    header(
        &mut out,
        "hdx_jobs_event_stream_up",
        "gauge",
        "1 when the event stream's Redis answered this scrape, else 0.",
    );
    let stream = match stream {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: the event stream could not be read");
            None
        }
        Err(_) => {
            tracing::warn!(
                ?STREAM_READ_TIMEOUT,
                "metrics: the event stream did not answer"
            );
            None
        }
    };
    out.push_str(&format!(
        "hdx_jobs_event_stream_up{} {}\n",
        labels(&[("stream", stream_name.as_str())]),
        u8::from(stream.is_some())
    ));
    if let Some(stream) = &stream {
        render_stream(&mut out, stream_name, stream);
    }

    header(
        &mut out,
        "hdx_jobs_tile_cache_requests_total",
        "counter",
        "Tile requests of this process, by result: hit (no query) or miss (a query).",
    );
    let counts = state.tiles().cache_counts();
    for (result, n) in [("hit", counts.hits), ("miss", counts.misses)] {
        out.push_str(&format!(
            "hdx_jobs_tile_cache_requests_total{} {n}\n",
            labels(&[("result", result)])
        ));
    }

    header(
        &mut out,
        "hdx_jobs_build_info",
        "gauge",
        "The version and commit of this process's build (always 1).",
    );
    out.push_str(&format!(
        "hdx_jobs_build_info{} 1\n",
        labels(&[
            ("version", env!("CARGO_PKG_VERSION")),
            ("commit", env!("HDX_JOBS_COMMIT"))
        ])
    ));

    state.http_metrics().render(&mut out);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    ))
}
