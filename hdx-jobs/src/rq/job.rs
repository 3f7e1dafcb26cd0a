//! A job as stored in `rq:job:<id>` (docs/rq-protocol.md §2).
//!
//! [`Job`] keeps the raw hash and parses fields on demand, so fields we do not know (Python-only
//! features such as callbacks or webhooks) survive untouched.

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, Utc};
use redis::aio::ConnectionLike;
use serde_json::Value;

use super::error::RqResult;
use super::keys;
use super::payload::{self, CallPayload, PayloadError, Serializer};
use super::time::parse_ts;

/// Default job timeout in seconds (`Queue.DEFAULT_TIMEOUT`).
pub const DEFAULT_TIMEOUT: i64 = 180;
/// Default result TTL in seconds (the worker's `default_result_ttl`).
pub const DEFAULT_RESULT_TTL: i64 = 500;
/// Default failure TTL in seconds (one year).
pub const DEFAULT_FAILURE_TTL: i64 = 31_536_000;

/// RQ's closed set of status strings (docs/rq-protocol.md §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Made but not enqueued.
    Created,
    /// Waiting in its queue.
    Queued,
    /// Running on a worker.
    Started,
    /// Ran successfully.
    Finished,
    /// Failed (including timeouts and abandoned executions).
    Failed,
    /// Waiting for its dependencies.
    Deferred,
    /// Waiting in a scheduled registry.
    Scheduled,
    /// Stopped by a stop-job command.
    Stopped,
    /// Canceled.
    Canceled,
}

impl JobStatus {
    /// The exact string RQ stores.
    pub fn as_str(&self) -> &'static str {
        match self {
            JobStatus::Created => "created",
            JobStatus::Queued => "queued",
            JobStatus::Started => "started",
            JobStatus::Finished => "finished",
            JobStatus::Failed => "failed",
            JobStatus::Deferred => "deferred",
            JobStatus::Scheduled => "scheduled",
            JobStatus::Stopped => "stopped",
            JobStatus::Canceled => "canceled",
        }
    }

    /// Parses RQ's status string.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "created" => JobStatus::Created,
            "queued" => JobStatus::Queued,
            "started" => JobStatus::Started,
            "finished" => JobStatus::Finished,
            "failed" => JobStatus::Failed,
            "deferred" => JobStatus::Deferred,
            "scheduled" => JobStatus::Scheduled,
            "stopped" => JobStatus::Stopped,
            "canceled" => JobStatus::Canceled,
            _ => return None,
        })
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job hash, as read from Redis.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The job id.
    pub id: String,
    /// Every field of the hash, raw.
    pub fields: HashMap<String, Vec<u8>>,
}

impl Job {
    /// Builds a job from an `HGETALL` reply.
    pub fn from_fields(id: impl Into<String>, fields: HashMap<String, Vec<u8>>) -> Self {
        Job {
            id: id.into(),
            fields,
        }
    }

    /// Reads `rq:job:<id>`; `None` when the hash does not exist.
    pub async fn fetch<C: ConnectionLike + Send>(conn: &mut C, id: &str) -> RqResult<Option<Job>> {
        let fields: HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
            .arg(keys::job(id))
            .query_async(conn)
            .await?;
        Ok((!fields.is_empty()).then(|| Job::from_fields(id, fields)))
    }

    /// A field as text (`None` when missing; lossy for non-UTF-8 bytes).
    pub fn text(&self, field: &str) -> Option<String> {
        self.fields
            .get(field)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// A non-empty text field.
    fn non_empty(&self, field: &str) -> Option<String> {
        self.text(field).filter(|s| !s.is_empty())
    }

    /// An integer field; Python writes integers, but floats are tolerated.
    pub fn int(&self, field: &str) -> Option<i64> {
        let text = self.non_empty(field)?;
        text.parse::<i64>()
            .ok()
            .or_else(|| text.parse::<f64>().ok().map(|f| f as i64))
    }

    /// A timestamp field.
    pub fn time(&self, field: &str) -> Option<DateTime<Utc>> {
        parse_ts(&self.non_empty(field)?)
    }

    /// The status; a missing status reads as `created`, like Python. `None` for an unknown
    /// string.
    pub fn status(&self) -> Option<JobStatus> {
        match self.text("status") {
            None => Some(JobStatus::Created),
            Some(s) => JobStatus::parse(&s),
        }
    }

    /// The queue the job belongs to (selects every registry it goes to).
    pub fn origin(&self) -> Option<String> {
        self.non_empty("origin")
    }

    /// The display description.
    pub fn description(&self) -> Option<String> {
        self.non_empty("description")
    }

    /// Timeout in seconds; -1 means none. Missing means the queue default applies.
    pub fn timeout(&self) -> Option<i64> {
        self.int("timeout")
    }

    /// Remaining retries.
    pub fn retries_left(&self) -> i64 {
        self.int("retries_left").unwrap_or(0)
    }

    /// Retry intervals in seconds.
    pub fn retry_intervals(&self) -> Vec<i64> {
        self.text("retry_intervals")
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// How many times hdx-jobs workers started this job (our own field; 0 for jobs never
    /// started by us).
    pub fn attempts(&self) -> u32 {
        self.int("hdx_attempt").unwrap_or(0).max(0) as u32
    }

    /// The last worker that started it.
    pub fn worker_name(&self) -> Option<String> {
        self.non_empty("worker_name")
    }

    /// Decodes the payload (func name, args, kwargs, serializer).
    pub fn payload(&self) -> Result<CallPayload, PayloadError> {
        match self.fields.get("data") {
            Some(data) if !data.is_empty() => CallPayload::decode(data),
            _ => Err(PayloadError::BadShape(
                "the job hash has no data field".into(),
            )),
        }
    }

    /// The serializer of the payload, from its first byte (the process default when there is
    /// none).
    pub fn serializer(&self) -> Serializer {
        self.fields
            .get("data")
            .map_or_else(payload::default_serializer, |data| {
                payload::serializer_of(data)
            })
    }

    /// The task's wire name, read without decoding the payload (see
    /// [`CallPayload::func_name_of`]).
    pub fn func_name(&self) -> Option<String> {
        self.fields
            .get("data")
            .and_then(|data| CallPayload::func_name_of(data))
    }

    /// The decoded `meta` (an empty object when missing or unreadable).
    pub fn meta(&self) -> Value {
        self.fields
            .get("meta")
            .filter(|m| !m.is_empty())
            .and_then(|m| payload::decode_value(m).ok())
            .map(|(v, _)| v)
            .unwrap_or_else(|| Value::Object(Default::default()))
    }

    /// The legacy `exc_info` text (zlib), if any.
    pub fn exc_info(&self) -> Option<String> {
        let raw = self.fields.get("exc_info")?;
        let text = String::from_utf8_lossy(&payload::zlib_decompress_or_raw(raw)).into_owned();
        (!text.is_empty()).then_some(text)
    }
}

/// Checks a custom job id against RQ 2.x's rule `[A-Za-z0-9_-]+`.
pub fn is_valid_job_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A new random job id, as RQ makes them (UUID4 with dashes).
pub fn new_job_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A new execution id (UUID4, 32 hex digits).
pub fn new_execution_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(fields: &[(&str, &str)]) -> Job {
        Job::from_fields(
            "j",
            fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        )
    }

    #[test]
    fn status_defaults_to_created_and_rejects_unknown() {
        assert_eq!(job(&[]).status(), Some(JobStatus::Created));
        assert_eq!(
            job(&[("status", "finished")]).status(),
            Some(JobStatus::Finished)
        );
        assert_eq!(job(&[("status", "weird")]).status(), None);
    }

    #[test]
    fn numbers_and_lists_parse() {
        let j = job(&[
            ("timeout", "300"),
            ("retries_left", "2"),
            ("retry_intervals", "[10, 30, 60]"),
        ]);
        assert_eq!(j.timeout(), Some(300));
        assert_eq!(j.retries_left(), 2);
        assert_eq!(j.retry_intervals(), vec![10, 30, 60]);
        assert_eq!(job(&[("timeout", "")]).timeout(), None);
        assert_eq!(job(&[("timeout", "1.5")]).timeout(), Some(1));
    }

    #[test]
    fn job_ids() {
        assert!(is_valid_job_id("job-1_A"));
        assert!(!is_valid_job_id("a:b"));
        assert!(!is_valid_job_id(""));
        assert!(is_valid_job_id(&new_job_id()));
        assert_eq!(new_execution_id().len(), 32);
    }

    #[test]
    fn exc_info_of_requeue_is_empty() {
        let j = Job::from_fields(
            "j",
            [(
                "exc_info".to_string(),
                vec![0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
            )]
            .into(),
        );
        assert_eq!(j.exc_info(), None);
    }
}
