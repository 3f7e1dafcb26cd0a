//! Human-readable output of `info` and `job show`.

use std::fmt::Write;

use hdx_jobs::rq::info::{QueueSummary, WorkerSummary};
use hdx_jobs::rq::jobs::JobView;
use hdx_jobs::rq::results::ResultType;

/// How long a queue's next job has waited, as an operator reads it: `-` when nothing waits,
/// then seconds, minutes or hours.
fn latency_text(secs: f64) -> String {
    match secs {
        s if s <= 0.0 => "-".into(),
        s if s < 60.0 => format!("{s:.1}s"),
        s if s < 3600.0 => format!("{:.1}m", s / 60.0),
        s => format!("{:.1}h", s / 3600.0),
    }
}

/// Queues then workers, as aligned tables.
pub(crate) fn info_text(queues: &[QueueSummary], workers: &[WorkerSummary]) -> String {
    let mut out = String::new();
    let width = queues
        .iter()
        .map(|q| q.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let _ = writeln!(
        out,
        "{:width$}  {:>7} {:>9} {:>7} {:>8} {:>7} {:>8} {:>9} {:>8}",
        "queue",
        "queued",
        "latency",
        "started",
        "finished",
        "failed",
        "deferred",
        "scheduled",
        "canceled"
    );
    for q in queues {
        let _ = writeln!(
            out,
            "{:width$}  {:>7} {:>9} {:>7} {:>8} {:>7} {:>8} {:>9} {:>8}",
            q.name,
            q.queued,
            latency_text(q.latency_seconds),
            q.started,
            q.finished,
            q.failed,
            q.deferred,
            q.scheduled,
            q.canceled
        );
    }
    let _ = writeln!(
        out,
        "{} queues, {} jobs queued\n",
        queues.len(),
        queues.iter().map(|q| q.queued).sum::<u64>()
    );
    let width = workers
        .iter()
        .map(|w| w.name.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let _ = writeln!(
        out,
        "{:width$}  {:9} {:24} {:>6} {:>6}  current job",
        "worker", "state", "queues", "ok", "failed"
    );
    for w in workers {
        let _ = writeln!(
            out,
            "{:width$}  {:9} {:24} {:>6} {:>6}  {}",
            w.name,
            w.state,
            w.queues.join(","),
            w.successful_job_count,
            w.failed_job_count,
            w.current_job.as_deref().unwrap_or("-")
        );
    }
    let _ = writeln!(out, "{} workers", workers.len());
    out
}

/// One job, field per line.
pub(crate) fn job_text(view: &JobView) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: &str| {
        let _ = writeln!(out, "{label:13}{value}");
    };
    line("id:", &view.id);
    line("status:", &view.status);
    line("queue:", view.origin.as_deref().unwrap_or("-"));
    match (&view.func_name, &view.payload_error) {
        (Some(func), _) => {
            line("func:", func);
            line(
                "args:",
                &serde_json::to_string(&view.args).unwrap_or_default(),
            );
            line(
                "kwargs:",
                &serde_json::to_string(&view.kwargs).unwrap_or_default(),
            );
        }
        (None, Some(error)) => line("payload:", &format!("unreadable: {error}")),
        (None, None) => {}
    }
    if let Some(description) = &view.description {
        line("description:", description);
    }
    for (label, value) in [
        ("created:", &view.created_at),
        ("enqueued:", &view.enqueued_at),
        ("started:", &view.started_at),
        ("ended:", &view.ended_at),
        ("worker:", &view.worker_name),
    ] {
        if let Some(value) = value {
            line(label, value);
        }
    }
    if let Some(timeout) = view.timeout {
        line("timeout:", &timeout.to_string());
    }
    if view.retries_left > 0 {
        line("retries left:", &view.retries_left.to_string());
    }
    if view.meta.as_object().is_some_and(|m| !m.is_empty()) {
        line("meta:", &view.meta.to_string());
    }
    match &view.latest_result {
        Some(result) if result.result_type == ResultType::Successful => {
            let value = result
                .return_value
                .as_ref()
                .map_or_else(|| "None".to_string(), |v| v.to_string());
            line("result:", &value);
        }
        Some(result) => {
            let text = result.exc_string.as_deref().unwrap_or("").trim_end();
            let _ = writeln!(out, "error:\n{}", indent(text));
        }
        None => {}
    }
    out
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
