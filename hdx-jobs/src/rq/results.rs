//! Job results: the stream `rq:results:<id>` (docs/rq-protocol.md §4).
//!
//! Each finished execution appends one entry; the newest entry is "the" result. Return values
//! are base64 of the job's serializer; tracebacks (`exc_string`) are base64 of zlib'd UTF-8 text.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, Utc};
use redis::aio::ConnectionLike;
use redis::streams::{StreamId, StreamRangeReply};
use serde::Serialize;
use serde_json::Value;

use super::error::RqResult;
use super::keys;
use super::payload::{self, PayloadError, Serializer};

/// The `type` of a result entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultType {
    /// 1: the function returned.
    Successful,
    /// 2: failed (also stopped and abandoned executions).
    Failed,
    /// 3: stopped (defined by RQ, unused by 2.12).
    Stopped,
    /// 4: the job returned a `Retry` (Python only).
    Retried,
    /// 5: max retries exceeded.
    MaxRetriesExceeded,
}

impl ResultType {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "1" => ResultType::Successful,
            "2" => ResultType::Failed,
            "3" => ResultType::Stopped,
            "4" => ResultType::Retried,
            "5" => ResultType::MaxRetriesExceeded,
            _ => return None,
        })
    }
}

/// One entry of a results stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobResult {
    /// The stream entry id (`<ms>-<seq>`).
    pub entry_id: String,
    /// When the entry was written (from the entry id).
    pub created_at: Option<DateTime<Utc>>,
    /// Success, failure, ...
    pub result_type: ResultType,
    /// The worker that wrote it (`""` for maintenance).
    pub worker_name: String,
    /// The decoded return value (successes with a non-None value).
    pub return_value: Option<Value>,
    /// The error text (failures).
    pub exc_string: Option<String>,
    /// The execution it belongs to.
    pub execution_id: Option<String>,
    /// Execution start, Unix seconds.
    pub execution_started_at: Option<f64>,
    /// Execution end, Unix seconds.
    pub execution_ended_at: Option<f64>,
}

impl JobResult {
    fn from_entry(entry: &StreamId) -> Option<Self> {
        let text = |field: &str| -> Option<String> {
            entry
                .map
                .get(field)
                .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
        };
        let result_type = ResultType::parse(&text("type")?)?;
        let return_value = text("return_value")
            .and_then(|b| B64.decode(b).ok())
            .and_then(|bytes| payload::decode_value(&bytes).ok())
            .map(|(v, _)| v);
        let exc_string = text("exc_string")
            .and_then(|b| B64.decode(b).ok())
            .map(|bytes| {
                String::from_utf8_lossy(&payload::zlib_decompress_or_raw(&bytes)).into_owned()
            });
        let created_at = entry
            .id
            .split('-')
            .next()
            .and_then(|ms| ms.parse::<i64>().ok())
            .and_then(DateTime::from_timestamp_millis);
        Some(JobResult {
            entry_id: entry.id.clone(),
            created_at,
            result_type,
            worker_name: text("worker_name").unwrap_or_default(),
            return_value,
            exc_string,
            execution_id: text("execution_id"),
            execution_started_at: text("execution_started_at").and_then(|t| t.parse().ok()),
            execution_ended_at: text("execution_ended_at").and_then(|t| t.parse().ok()),
        })
    }
}

/// The newest result of a job (`XREVRANGE key + - COUNT 1`), as Python's `latest_result()`.
pub async fn latest_result<C: ConnectionLike + Send>(
    conn: &mut C,
    job_id: &str,
) -> RqResult<Option<JobResult>> {
    let reply: StreamRangeReply = latest_result_cmd(job_id).query_async(conn).await?;
    Ok(latest_of(&reply))
}

/// The read behind [`latest_result`], for callers that need it in one atomic step with others.
pub(crate) fn latest_result_cmd(job_id: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("XREVRANGE");
    cmd.arg(keys::results(job_id))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1);
    cmd
}

/// The result in [`latest_result_cmd`]'s reply.
pub(crate) fn latest_of(reply: &StreamRangeReply) -> Option<JobResult> {
    reply.ids.first().and_then(JobResult::from_entry)
}

/// Every stored result of a job, oldest first.
pub async fn all_results<C: ConnectionLike + Send>(
    conn: &mut C,
    job_id: &str,
) -> RqResult<Vec<JobResult>> {
    let reply: StreamRangeReply = redis::cmd("XRANGE")
        .arg(keys::results(job_id))
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await?;
    Ok(reply.ids.iter().filter_map(JobResult::from_entry).collect())
}

/// `exc_string` as stored: base64 of zlib of the UTF-8 text.
pub fn encode_exc_string(text: &str) -> String {
    B64.encode(payload::zlib_compress(text.as_bytes()))
}

/// `return_value` as stored: base64 of the serialized value; `None` for a null value, which RQ
/// does not store.
pub fn encode_return_value(
    value: &Value,
    serializer: Serializer,
) -> Result<Option<String>, PayloadError> {
    if value.is_null() {
        return Ok(None);
    }
    Ok(Some(B64.encode(payload::encode_value(value, serializer)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/rq-protocol.md §9: exc_string of "ValueError: boom\n" decodes from Python's bytes.
    #[test]
    fn exc_string_round_trip() {
        let python = "eJwLS8wpTXUtKsovslJIys/P5QIAOewGGQ==";
        let bytes = B64.decode(python).expect("b64");
        assert_eq!(
            payload::zlib_decompress_or_raw(&bytes),
            b"ValueError: boom\n"
        );
        let ours = B64
            .decode(encode_exc_string("ValueError: boom\n"))
            .expect("b64");
        assert_eq!(
            payload::zlib_decompress_or_raw(&ours),
            b"ValueError: boom\n"
        );
    }

    #[test]
    fn return_values() {
        assert_eq!(
            encode_return_value(&Value::Null, Serializer::Json).expect("ok"),
            None
        );
        assert_eq!(
            encode_return_value(&serde_json::json!(3), Serializer::Json).expect("ok"),
            Some("Mw==".to_string())
        );
    }
}
