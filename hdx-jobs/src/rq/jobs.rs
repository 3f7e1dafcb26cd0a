//! Operations on one job by id: read it with its latest result, requeue, cancel, delete, stop.

use std::collections::HashMap;

use redis::aio::ConnectionLike;
use redis::streams::StreamRangeReply;
use serde::Serialize;
use serde_json::{Map, Value};

use super::error::{from_value, RqError, RqResult};
use super::job::{Job, JobStatus};
use super::payload;
use super::results::{self, JobResult};
use super::scripts;
use super::time::{rfc3339, Timestamp};
use super::{commands, keys};
use crate::connection::RedisClient;
use crate::secret::{redact_text, redact_value};

/// A job as operators see it: `hdx-jobs job show`, the monitor. Secrets in its arguments,
/// description, meta and result are redacted ([`crate::secret::redact_value`]): the view is
/// for people, and a job may carry tokens.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    /// The job id.
    pub id: String,
    /// The status (serialized as RQ's string, or `missing` / `unknown`).
    pub status: ViewStatus,
    /// The queue.
    pub origin: Option<String>,
    /// The task's wire name, when the payload decodes.
    pub func_name: Option<String>,
    /// Positional arguments.
    pub args: Option<Vec<Value>>,
    /// Keyword arguments.
    pub kwargs: Option<Map<String, Value>>,
    /// Serializer of the payload.
    pub serializer: Option<payload::Serializer>,
    /// Why the payload does not decode.
    pub payload_error: Option<String>,
    /// Display description.
    pub description: Option<String>,
    /// Timestamps (RFC 3339).
    pub created_at: Option<String>,
    /// When it was (last) enqueued.
    pub enqueued_at: Option<String>,
    /// When it (last) started.
    pub started_at: Option<String>,
    /// When it (last) ended.
    pub ended_at: Option<String>,
    /// Timeout in seconds.
    pub timeout: Option<i64>,
    /// Retries left.
    pub retries_left: i64,
    /// The last worker.
    pub worker_name: Option<String>,
    /// `meta`.
    pub meta: Value,
    /// The newest result entry.
    pub latest_result: Option<JobResult>,
}

/// A job's status as a [`JobView`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewStatus {
    /// One of RQ's statuses.
    Known(JobStatus),
    /// The job hash is gone but results of it remain.
    Missing,
    /// The hash holds a status outside RQ's set.
    Unknown,
}

impl ViewStatus {
    /// RQ's string, or `missing` / `unknown`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ViewStatus::Known(status) => status.as_str(),
            ViewStatus::Missing => "missing",
            ViewStatus::Unknown => "unknown",
        }
    }

    /// True once the job has ended: finished, failed, stopped or canceled.
    pub fn is_ended(&self) -> bool {
        matches!(
            self,
            ViewStatus::Known(
                JobStatus::Finished | JobStatus::Failed | JobStatus::Stopped | JobStatus::Canceled
            )
        )
    }
}

impl PartialEq<JobStatus> for ViewStatus {
    fn eq(&self, other: &JobStatus) -> bool {
        *self == ViewStatus::Known(*other)
    }
}

impl std::fmt::Display for ViewStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ViewStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl JobView {
    /// Builds the view of a job and its latest result.
    pub fn new(job: &Job, latest_result: Option<JobResult>) -> Self {
        let payload = job.payload().map(|mut call| {
            let mut args = Value::Array(std::mem::take(&mut call.args));
            let mut kwargs = Value::Object(std::mem::take(&mut call.kwargs));
            redact_value(&mut args);
            redact_value(&mut kwargs);
            if let (Value::Array(args), Value::Object(kwargs)) = (args, kwargs) {
                call.args = args;
                call.kwargs = kwargs;
            }
            call
        });
        let time = |field: &str| job.time(field).map(|t| rfc3339(&t));
        // RQ's default description is a repr of the arguments: write it again from the redacted
        // ones. A custom description (anything else) is shown with URL credentials redacted.
        let description = job.description().map(|stored| match &payload {
            Ok(call) if stored.starts_with(&format!("{}(", call.func_name)) => call.description(),
            _ => redact_text(&stored),
        });
        let mut meta = job.meta();
        redact_value(&mut meta);
        let latest_result = latest_result.map(|mut result| {
            if let Some(value) = result.return_value.as_mut() {
                redact_value(value);
            }
            result.exc_string = result.exc_string.as_deref().map(redact_text);
            result
        });
        JobView {
            id: job.id.clone(),
            status: job.status().map_or(ViewStatus::Unknown, ViewStatus::Known),
            origin: job.origin(),
            func_name: payload.as_ref().ok().map(|p| p.func_name.clone()),
            args: payload.as_ref().ok().map(|p| p.args.clone()),
            kwargs: payload.as_ref().ok().map(|p| p.kwargs.clone()),
            serializer: payload.as_ref().ok().map(|p| p.serializer),
            payload_error: payload.as_ref().err().map(|e| e.to_string()),
            description,
            created_at: time("created_at"),
            enqueued_at: time("enqueued_at"),
            started_at: time("started_at"),
            ended_at: time("ended_at"),
            timeout: job.timeout(),
            retries_left: job.retries_left(),
            worker_name: job.worker_name(),
            meta,
            latest_result,
        }
    }
}

/// Reads a job hash.
pub async fn fetch(redis: &RedisClient, id: &str) -> RqResult<Option<Job>> {
    let mut conn = redis.conn().await?;
    Job::fetch(&mut conn, id).await
}

/// Reads a job and its latest result for display. A job whose hash is gone but which still has
/// results (e.g. a missing hash recorded as failed) is shown with status `missing`.
pub async fn view(redis: &RedisClient, id: &str) -> RqResult<Option<JobView>> {
    Ok(views(redis, &[id.to_string()]).await?.pop().flatten())
}

/// [`view`] of many jobs in one round trip (one MULTI: read apart, a job finishing in between
/// showed as finished with no result), in the order of `ids`.
pub async fn views(redis: &RedisClient, ids: &[String]) -> RqResult<Vec<Option<JobView>>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut conn = redis.conn().await?;
    let mut pipe = redis::pipe();
    pipe.atomic();
    for id in ids {
        pipe.cmd("HGETALL")
            .arg(keys::job(id))
            .add_command(results::latest_result_cmd(id));
    }
    let replies: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
    if replies.len() != 2 * ids.len() {
        let short = redis::ParsingError::from("short reply to the job views".to_string());
        return Err(redis::RedisError::from(short).into());
    }
    let mut out = Vec::with_capacity(ids.len());
    let mut replies = replies.into_iter();
    for id in ids {
        let (Some(fields), Some(results)) = (replies.next(), replies.next()) else {
            break;
        };
        let fields: HashMap<String, Vec<u8>> = from_value(fields)?;
        let results: StreamRangeReply = from_value(results)?;
        out.push(view_of(id, fields, results::latest_of(&results)));
    }
    Ok(out)
}

fn view_of(
    id: &str,
    fields: HashMap<String, Vec<u8>>,
    latest: Option<JobResult>,
) -> Option<JobView> {
    match (!fields.is_empty()).then(|| Job::from_fields(id, fields)) {
        Some(job) => Some(JobView::new(&job, latest)),
        None if latest.is_some() => {
            let mut view = JobView::new(&Job::from_fields(id, Default::default()), latest);
            view.status = ViewStatus::Missing;
            Some(view)
        }
        None => None,
    }
}

/// Requeues a failed or stopped job (docs/rq-protocol.md §5.12). Refused unless it is in its failed
/// registry.
pub async fn requeue(redis: &RedisClient, id: &str) -> RqResult<()> {
    let mut conn = redis.conn().await?;
    if requeue_with(&mut conn, id).await? {
        Ok(())
    } else if Job::fetch(&mut conn, id).await?.is_none() {
        Err(RqError::NoSuchJob(id.into()))
    } else {
        Err(RqError::Refused(format!(
            "job {id} is not in its failed registry"
        )))
    }
}

pub(crate) async fn requeue_with<C: ConnectionLike + Send>(
    conn: &mut C,
    id: &str,
) -> RqResult<bool> {
    let now = Timestamp::now();
    let moved: i64 = scripts::REQUEUE
        .prepare_invoke()
        .arg(id)
        .arg(now.text())
        .arg(payload::zlib_compress(b""))
        .arg("0")
        .invoke_async(conn)
        .await?;
    Ok(moved == 1)
}

/// Cancels a job (docs/rq-protocol.md §5.13). A running job is not interrupted: see [`stop`].
pub async fn cancel(redis: &RedisClient, id: &str) -> RqResult<()> {
    let mut conn = redis.conn().await?;
    let done: i64 = scripts::CANCEL
        .prepare_invoke()
        .arg(id)
        .arg(Timestamp::now().secs())
        .invoke_async(&mut conn)
        .await?;
    if done == 1 {
        Ok(())
    } else {
        Err(RqError::NoSuchJob(id.into()))
    }
}

/// Deletes a job and every trace of it (docs/rq-protocol.md §5.14).
pub async fn delete(redis: &RedisClient, id: &str) -> RqResult<()> {
    let mut conn = redis.conn().await?;
    let existed: i64 = scripts::DELETE
        .prepare_invoke()
        .arg(id)
        .invoke_async(&mut conn)
        .await?;
    if existed == 1 {
        Ok(())
    } else {
        Err(RqError::NoSuchJob(id.into()))
    }
}

/// Stops a running job: sends `stop-job` to the worker running it (docs/rq-protocol.md §5.9),
/// Python or ours.
pub async fn stop(redis: &RedisClient, id: &str) -> RqResult<()> {
    let job = fetch(redis, id)
        .await?
        .ok_or_else(|| RqError::NoSuchJob(id.into()))?;
    if job.status() != Some(JobStatus::Started) {
        return Err(RqError::Refused(format!("job {id} is not running")));
    }
    let worker = job
        .worker_name()
        .ok_or_else(|| RqError::Refused(format!("job {id} has no worker")))?;
    commands::send(
        redis,
        &worker,
        &commands::Command::StopJob { job_id: id.into() },
    )
    .await
}

/// The key of a job hash (re-exported for callers that watch it).
pub fn job_key(id: &str) -> String {
    keys::job(id)
}
