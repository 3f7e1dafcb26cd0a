//! Output of `info` (and the frames of `info --watch`) and `job show`.

use std::fmt::Write;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use hdx_jobs::rq::error::RqResult;
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

/// What `info` shows: every queue, then every worker.
pub(crate) type InfoSnapshot = (Vec<QueueSummary>, Vec<WorkerSummary>);

/// ANSI "cursor home" then "clear screen": each frame of `info --watch` replaces the last on a
/// terminal instead of scrolling.
const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J";

/// What comes before a text frame of `info --watch`: the screen clear on a terminal; elsewhere
/// (a pipe, a log) a blank line between frames, and no escape codes to garble the file.
pub(crate) fn frame_lead(terminal: bool, first: bool) -> &'static str {
    match (terminal, first) {
        (true, _) => CLEAR_SCREEN,
        (false, true) => "",
        (false, false) => "\n",
    }
}

/// The first line of a text frame: when it was taken (UTC, RFC 3339 seconds) and which Redis it
/// shows, its password masked, so a screen or a log line says what it is and how fresh.
pub(crate) fn watch_header(time: DateTime<Utc>, url: &str, interval: Duration) -> String {
    format!(
        "{}  {url}  every {}s\n",
        time.to_rfc3339_opts(SecondsFormat::Secs, true),
        interval.as_secs_f64()
    )
}

/// The rest of a text frame: the `info` tables, or the Redis error and the promise of a retry
/// (the watch goes on, so the operator sees it recover).
pub(crate) fn watch_body(snapshot: &RqResult<InfoSnapshot>, interval: Duration) -> String {
    match snapshot {
        Ok((queues, workers)) => info_text(queues, workers),
        Err(e) => format!("error: {e} (retrying in {}s)\n", interval.as_secs_f64()),
    }
}

/// One frame of `info --watch --json`: a single line (NDJSON), `info --json`'s document plus
/// its `time`, or `time` and `error` when Redis failed.
pub(crate) fn watch_json(time: DateTime<Utc>, snapshot: &RqResult<InfoSnapshot>) -> String {
    let time = time.to_rfc3339_opts(SecondsFormat::Secs, true);
    let document = match snapshot {
        Ok((queues, workers)) => {
            serde_json::json!({"time": time, "queues": queues, "workers": workers})
        }
        Err(e) => serde_json::json!({"time": time, "error": e.to_string()}),
    };
    format!("{document}\n")
}

/// One job, field per line.
pub(crate) fn job_text(view: &JobView) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: &str| {
        let _ = writeln!(out, "{label:13}{value}");
    };
    line("id:", &view.id);
    line("status:", view.status.as_str());
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

#[cfg(test)]
mod tests {
    use super::*;
    use hdx_jobs::rq::error::RqError;

    fn noon() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-28T12:00:00.75Z")
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn frames_clear_a_terminal_and_are_separated_elsewhere() {
        assert_eq!(frame_lead(true, true), "\x1b[H\x1b[2J");
        assert_eq!(frame_lead(true, false), "\x1b[H\x1b[2J");
        assert_eq!(frame_lead(false, true), "");
        assert_eq!(frame_lead(false, false), "\n");
    }

    #[test]
    fn header_says_when_and_where() {
        assert_eq!(
            watch_header(
                noon(),
                "redis://:***@redis:6379/1",
                Duration::from_millis(200)
            ),
            "2026-11-28T12:00:00Z  redis://:***@redis:6379/1  every 0.2s\n"
        );
    }

    #[test]
    fn json_frames_are_one_line_each() {
        let ok = watch_json(noon(), &Ok((Vec::new(), Vec::new())));
        assert_eq!(
            ok,
            "{\"time\":\"2026-11-28T12:00:00Z\",\"queues\":[],\"workers\":[]}\n"
        );
        let failed = watch_json(noon(), &Err(RqError::Refused("down\nhard".into())));
        assert_eq!(failed.lines().count(), 1, "{failed}");
        let document: serde_json::Value = serde_json::from_str(&failed).expect("json");
        assert_eq!(document["error"], "down\nhard");
    }
}
