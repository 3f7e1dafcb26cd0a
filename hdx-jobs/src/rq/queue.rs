//! Enqueueing and per-queue operations (docs/rq-protocol.md §5.1, §5.15, §5.16).
//!
//! [`JobSpec`] describes a call; [`Queue::enqueue`] writes it in RQ 2.x's layout so Python
//! workers, `rq info` and rq-dashboard see an ordinary job. A batch of jobs goes to Redis as one
//! transaction ([`Queue::enqueue_many`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use super::error::{RqError, RqResult};
use super::job::{is_valid_job_id, new_job_id, JobStatus};
use super::keys;
use super::metrics;
use super::payload::{self, Serializer};
use super::registry::Registry;
use super::scripts;
use super::time::Timestamp;
use crate::connection::RedisClient;

/// Retries of a job: `max` more runs after a failure, waiting `intervals` seconds between them
/// (the last interval repeats; none means at once). Needs a scheduler for non-zero intervals.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Retry {
    /// How many extra runs are allowed.
    pub max: u32,
    /// Seconds to wait before each retry.
    pub intervals: Vec<u64>,
}

impl Retry {
    /// `max` retries, at once.
    pub fn new(max: u32) -> Self {
        Retry {
            max,
            intervals: Vec::new(),
        }
    }

    /// Sets the waits between retries.
    pub fn intervals(mut self, intervals: impl Into<Vec<u64>>) -> Self {
        self.intervals = intervals.into();
        self
    }
}

/// A job to enqueue: what to call, with which arguments, under which limits.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobSpec {
    /// The wire name of the task (RQ's `func_name`).
    pub func_name: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// More positional arguments, after `args`, each given as the text of one JSON value (see
    /// [`JobSpec::json_arg`]).
    pub json_args: Vec<String>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// A custom id (`[A-Za-z0-9_-]+`); random when `None`.
    pub id: Option<String>,
    /// Display text; RQ's call string when `None`.
    pub description: Option<String>,
    /// Seconds the job may run; -1 for no limit; the queue default when `None`.
    pub timeout: Option<i64>,
    /// Seconds to keep a successful result (-1 forever, 0 not at all).
    pub result_ttl: Option<i64>,
    /// Seconds to keep a failed job.
    pub failure_ttl: Option<i64>,
    /// Seconds the job may wait in its queue before it expires.
    pub ttl: Option<i64>,
    /// Initial `meta`.
    pub meta: Option<Map<String, Value>>,
    /// Retries after failures.
    pub retry: Option<Retry>,
    /// Put the job at the front of its queue.
    pub at_front: bool,
    /// Ids of jobs that must finish first.
    pub depends_on: Vec<String>,
    /// The serializer of the payload and meta; the process default
    /// ([`payload::default_serializer`], pickle unless `HDX_JOBS_SERIALIZER=json`) when `None`.
    pub serializer: Option<Serializer>,
}

impl JobSpec {
    /// A call of `func_name` with no arguments.
    pub fn new(func_name: impl Into<String>) -> Self {
        JobSpec {
            func_name: func_name.into(),
            ..Default::default()
        }
    }

    /// Appends one positional argument.
    pub fn arg(mut self, value: impl Serialize) -> Self {
        self.args
            .push(serde_json::to_value(value).unwrap_or(Value::Null));
        self
    }

    /// Sets all positional arguments.
    pub fn args(mut self, args: Vec<Value>) -> Self {
        self.args = args;
        self
    }

    /// Appends one positional argument given as the text of a JSON value, after those given as
    /// values. The text is written into the payload as it is parsed, never built as a `Value`:
    /// for a big argument that arrives as JSON (a request body passed on unchanged) this is
    /// several times cheaper than [`JobSpec::arg`]. Text that is not one JSON value fails the
    /// enqueue with [`RqError::Payload`].
    pub fn json_arg(mut self, text: impl Into<String>) -> Self {
        self.json_args.push(text.into());
        self
    }

    /// Sets one keyword argument.
    pub fn kwarg(mut self, name: impl Into<String>, value: impl Serialize) -> Self {
        self.kwargs.insert(
            name.into(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
        self
    }

    /// Sets all keyword arguments.
    pub fn kwargs(mut self, kwargs: Map<String, Value>) -> Self {
        self.kwargs = kwargs;
        self
    }

    /// Sets a custom job id.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the timeout in seconds (-1: none).
    pub fn timeout(mut self, secs: i64) -> Self {
        self.timeout = Some(secs);
        self
    }

    /// Sets retries.
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Sets the result TTL.
    pub fn result_ttl(mut self, secs: i64) -> Self {
        self.result_ttl = Some(secs);
        self
    }

    /// Sets the failure TTL.
    pub fn failure_ttl(mut self, secs: i64) -> Self {
        self.failure_ttl = Some(secs);
        self
    }

    /// Sets the queued-job TTL.
    pub fn ttl(mut self, secs: i64) -> Self {
        self.ttl = Some(secs);
        self
    }

    /// Sets a description.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// Adds a dependency.
    pub fn depends_on(mut self, id: impl Into<String>) -> Self {
        self.depends_on.push(id.into());
        self
    }

    /// Puts the job at the front of the queue.
    pub fn at_front(mut self) -> Self {
        self.at_front = true;
        self
    }

    /// Writes the payload and meta with `serializer` instead of the process default.
    pub fn serializer(mut self, serializer: Serializer) -> Self {
        self.serializer = Some(serializer);
        self
    }

    fn validate(&self) -> RqResult<()> {
        if self.func_name.is_empty() {
            return Err(RqError::InvalidArgument("func_name is empty".into()));
        }
        if let Some(id) = &self.id {
            if !is_valid_job_id(id) {
                return Err(RqError::InvalidJobId(id.clone()));
            }
        }
        for dep in &self.depends_on {
            if !is_valid_job_id(dep) {
                return Err(RqError::InvalidJobId(dep.clone()));
            }
        }
        if self.timeout == Some(0) {
            return Err(RqError::InvalidArgument(
                "timeout 0 is not allowed (use -1 for none)".into(),
            ));
        }
        if self.ttl.is_some_and(|t| t <= 0 && t != -1) {
            return Err(RqError::InvalidArgument("ttl must be positive".into()));
        }
        Ok(())
    }

    /// The job hash fields of a full save (docs/rq-protocol.md §2.2), in Python's order.
    pub(crate) fn hash_fields(
        &self,
        queue: &str,
        default_timeout: i64,
        now: &Timestamp,
        status: JobStatus,
    ) -> RqResult<Vec<(&'static str, Vec<u8>)>> {
        let serializer = self.serializer.unwrap_or_else(payload::default_serializer);
        let (data, json_reprs) = payload::encode_call(
            &self.func_name,
            &self.args,
            &self.json_args,
            &self.kwargs,
            serializer,
        )?;
        let ts = now.text().into_bytes();
        let mut fields: Vec<(&'static str, Vec<u8>)> = vec![
            ("created_at", ts.clone()),
            ("data", data),
            ("success_callback_name", Vec::new()),
            ("failure_callback_name", Vec::new()),
            ("stopped_callback_name", Vec::new()),
            ("started_at", Vec::new()),
            ("ended_at", Vec::new()),
            ("last_heartbeat", Vec::new()),
            ("worker_name", Vec::new()),
            ("group_id", Vec::new()),
            ("origin", queue.as_bytes().to_vec()),
            (
                "description",
                self.description
                    .clone()
                    .unwrap_or_else(|| {
                        payload::call_description(
                            &self.func_name,
                            &self.args,
                            &json_reprs,
                            &self.kwargs,
                        )
                    })
                    .into_bytes(),
            ),
        ];
        if status == JobStatus::Queued {
            fields.push(("enqueued_at", ts));
        }
        fields.push((
            "timeout",
            self.timeout
                .unwrap_or(default_timeout)
                .to_string()
                .into_bytes(),
        ));
        fields.push(("status", status.as_str().as_bytes().to_vec()));
        if let Some(v) = self.result_ttl {
            fields.push(("result_ttl", v.to_string().into_bytes()));
        }
        if let Some(v) = self.failure_ttl {
            fields.push(("failure_ttl", v.to_string().into_bytes()));
        }
        if let Some(v) = self.ttl.filter(|t| *t > 0) {
            fields.push(("ttl", v.to_string().into_bytes()));
        }
        if let Some(meta) = self.meta.as_ref().filter(|m| !m.is_empty()) {
            fields.push((
                "meta",
                payload::encode_value(&Value::Object(meta.clone()), serializer)?,
            ));
        }
        if let Some(retry) = &self.retry {
            fields.push(("retries_left", retry.max.to_string().into_bytes()));
            // Python's `Retry(max)` stores `[0]`: an empty list makes a Python worker's
            // failure handling raise IndexError, leaving the job stuck in its started registry.
            let intervals: &[u64] = if retry.intervals.is_empty() {
                &[0]
            } else {
                &retry.intervals
            };
            fields.push((
                "retry_intervals",
                payload::to_python_json(&serde_json::json!(intervals)),
            ));
        }
        Ok(fields)
    }
}

/// Queue names that fit RQ's key layout and every tool that prints them.
pub fn is_valid_queue_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A named queue on one Redis database.
#[derive(Debug, Clone)]
pub struct Queue {
    redis: RedisClient,
    name: String,
    default_timeout: i64,
}

impl Queue {
    /// A handle on queue `name` (no Redis access yet).
    pub fn new(redis: RedisClient, name: impl Into<String>) -> RqResult<Self> {
        let name = name.into();
        if !is_valid_queue_name(&name) {
            return Err(RqError::InvalidQueueName(name));
        }
        Ok(Queue {
            redis,
            name,
            default_timeout: super::job::DEFAULT_TIMEOUT,
        })
    }

    /// Sets the timeout given to jobs that do not set one (RQ's default: 180 s).
    pub fn with_default_timeout(mut self, secs: i64) -> Self {
        self.default_timeout = secs;
        self
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Enqueues one job and returns its id.
    pub async fn enqueue(&self, spec: JobSpec) -> RqResult<String> {
        let mut ids = self.enqueue_many(vec![spec]).await?;
        ids.pop()
            .ok_or_else(|| RqError::Refused("nothing enqueued".into()))
    }

    /// Enqueues many jobs in one transaction and returns their ids, in order. Jobs with
    /// dependencies are written by a script each, after the batch.
    pub async fn enqueue_many(&self, specs: Vec<JobSpec>) -> RqResult<Vec<String>> {
        let now = Timestamp::now();
        let mut ids = Vec::with_capacity(specs.len());
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SADD")
            .arg(keys::QUEUES)
            .arg(keys::queue(&self.name))
            .ignore();
        let mut dependent = Vec::new();
        for spec in &specs {
            spec.validate()?;
            let id = spec.id.clone().unwrap_or_else(new_job_id);
            ids.push(id.clone());
            if !spec.depends_on.is_empty() {
                dependent.push((id, spec));
                continue;
            }
            let fields =
                spec.hash_fields(&self.name, self.default_timeout, &now, JobStatus::Queued)?;
            let job_key = keys::job(&id);
            pipe.cmd("HSET").arg(&job_key);
            for (field, value) in &fields {
                pipe.arg(*field).arg(value.as_slice());
            }
            pipe.ignore();
            if let Some(ttl) = spec.ttl.filter(|t| *t > 0) {
                for key in [
                    job_key.clone(),
                    keys::dependents(&id),
                    keys::dependencies(&id),
                ] {
                    pipe.cmd("EXPIRE").arg(key).arg(ttl).ignore();
                }
            }
            let push = if spec.at_front { "LPUSH" } else { "RPUSH" };
            pipe.cmd(push)
                .arg(keys::queue(&self.name))
                .arg(&id)
                .ignore();
        }
        let mut per_func: std::collections::BTreeMap<&str, i64> = Default::default();
        for spec in &specs {
            *per_func.entry(spec.func_name.as_str()).or_default() += 1;
        }
        for (func, n) in per_func {
            pipe.cmd("HINCRBY")
                .arg(metrics::JOBS_KEY)
                .arg(metrics::counter_field("enqueued", &self.name, func))
                .arg(n)
                .ignore();
        }
        let first_plain = ids
            .iter()
            .find(|id| !dependent.iter().any(|(d, _)| d == *id))
            .map(|id| keys::job(id));
        self.run_transaction(&pipe, first_plain.as_deref()).await?;
        let mut conn = self.redis.conn().await?;
        for (id, spec) in dependent {
            let fields =
                spec.hash_fields(&self.name, self.default_timeout, &now, JobStatus::Queued)?;
            let mut invocation = scripts::ENQUEUE_DEPENDENT.prepare_invoke();
            invocation
                .arg(&id)
                .arg(&self.name)
                .arg(now.text())
                .arg(now.secs())
                .arg(if spec.at_front { "1" } else { "0" })
                .arg(spec.ttl.unwrap_or(0).max(0))
                .arg(fields.len());
            for (field, value) in &fields {
                invocation.arg(*field).arg(value.as_slice());
            }
            for dep in &spec.depends_on {
                invocation.arg(dep);
            }
            let _: String = invocation.invoke_async(&mut conn).await?;
        }
        Ok(ids)
    }

    /// Enqueues a job to run at `at` (docs/rq-protocol.md §5.16): it waits in `rq:scheduled:<q>`
    /// until a scheduler (`hdx-jobs work --with-scheduler`, or a Python worker with one) moves it.
    pub async fn enqueue_at(&self, spec: JobSpec, at: DateTime<Utc>) -> RqResult<String> {
        spec.validate()?;
        if !spec.depends_on.is_empty() {
            return Err(RqError::InvalidArgument(
                "scheduled jobs cannot have dependencies".into(),
            ));
        }
        let now = Timestamp::now();
        let id = spec.id.clone().unwrap_or_else(new_job_id);
        let fields =
            spec.hash_fields(&self.name, self.default_timeout, &now, JobStatus::Scheduled)?;
        // Scores are whole seconds: round up so a job never runs before its time (RQ truncates).
        let due = at.timestamp() + i64::from(at.timestamp_subsec_nanos() > 0);
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("ZADD")
            .arg(Registry::Scheduled.key(&self.name))
            .arg(due)
            .arg(&id)
            .ignore();
        pipe.cmd("SADD")
            .arg(keys::QUEUES)
            .arg(keys::queue(&self.name))
            .ignore();
        pipe.cmd("HSET").arg(keys::job(&id));
        for (field, value) in &fields {
            pipe.arg(*field).arg(value.as_slice());
        }
        pipe.ignore();
        if let Some(ttl) = spec.ttl.filter(|t| *t > 0) {
            pipe.cmd("EXPIRE").arg(keys::job(&id)).arg(ttl).ignore();
        }
        pipe.cmd("HINCRBY")
            .arg(metrics::JOBS_KEY)
            .arg(metrics::counter_field(
                "enqueued",
                &self.name,
                &spec.func_name,
            ))
            .arg(1)
            .ignore();
        self.run_transaction(&pipe, Some(&keys::job(&id))).await?;
        Ok(id)
    }

    /// Runs an enqueue transaction. When the shared connection turns out to be dead (Redis
    /// restarted since the last call), it is run once more on the fresh connection, unless
    /// `marker` (a key the transaction creates) shows the first attempt went through: a
    /// transaction applies whole or not at all, so no job is written twice.
    async fn run_transaction(&self, pipe: &redis::Pipeline, marker: Option<&str>) -> RqResult<()> {
        let mut conn = self.redis.conn().await?;
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_connection_dropped() || e.is_io_error() => {
                tracing::debug!(error = %e, "redis connection lost during enqueue; checking and retrying once");
                let mut conn = self.redis.conn().await?;
                if let Some(marker) = marker {
                    let applied: bool = redis::cmd("EXISTS")
                        .arg(marker)
                        .query_async(&mut conn)
                        .await?;
                    if applied {
                        return Ok(());
                    }
                }
                Ok(pipe.query_async::<()>(&mut conn).await?)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Enqueues a job to run after `delay`.
    pub async fn enqueue_in(&self, spec: JobSpec, delay: Duration) -> RqResult<String> {
        let delay = chrono::Duration::from_std(delay)
            .map_err(|_| RqError::InvalidArgument("delay too large".into()))?;
        self.enqueue_at(spec, Utc::now() + delay).await
    }

    /// A job by id, with its latest result, as operators and producers read it (RQ's
    /// `Queue.fetch_job`): `None` once it is gone. Secrets in the view are redacted
    /// ([`super::jobs::JobView`]).
    pub async fn fetch_job(&self, id: &str) -> RqResult<Option<super::jobs::JobView>> {
        super::jobs::view(&self.redis, id).await
    }

    /// Number of jobs waiting in the queue.
    pub async fn count(&self) -> RqResult<u64> {
        let mut conn = self.redis.conn().await?;
        Ok(redis::cmd("LLEN")
            .arg(keys::queue(&self.name))
            .query_async(&mut conn)
            .await?)
    }

    /// Ids of waiting jobs, paged (`limit` 0: all).
    pub async fn job_ids(&self, offset: u64, limit: u64) -> RqResult<Vec<String>> {
        let stop = if limit == 0 {
            -1
        } else {
            (offset + limit) as i64 - 1
        };
        let mut conn = self.redis.conn().await?;
        Ok(redis::cmd("LRANGE")
            .arg(keys::queue(&self.name))
            .arg(offset)
            .arg(stop)
            .query_async(&mut conn)
            .await?)
    }

    /// Deletes every waiting job of the queue; returns how many.
    pub async fn empty(&self) -> RqResult<u64> {
        let mut conn = self.redis.conn().await?;
        Ok(scripts::EMPTY
            .prepare_invoke()
            .arg(&self.name)
            .invoke_async(&mut conn)
            .await?)
    }

    /// Requeues every job of the queue's failed registry; returns how many.
    pub async fn requeue_failed(&self) -> RqResult<u64> {
        let mut conn = self.redis.conn().await?;
        let ids = Registry::Failed
            .job_ids(&mut conn, &self.name, 0, 0)
            .await?;
        let mut count = 0;
        for id in ids {
            if super::jobs::requeue_with(&mut conn, &id).await? {
                count += 1;
            }
        }
        Ok(count)
    }

    /// Count of one of the queue's registries.
    pub async fn registry_count(&self, registry: Registry) -> RqResult<u64> {
        let mut conn = self.redis.conn().await?;
        registry.count(&mut conn, &self.name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_fields_follow_python_layout() {
        let spec = JobSpec::new("exptasks.echo")
            .arg(serde_json::json!({"import_id": 42}))
            .description("custom desc")
            .result_ttl(600)
            .failure_ttl(3600)
            .ttl(7200)
            .timeout(300)
            .retry(Retry::new(3).intervals(vec![10, 30, 60]));
        let now = Timestamp::now();
        let fields = spec
            .hash_fields("default", 180, &now, JobStatus::Queued)
            .expect("fields");
        let get = |name: &str| {
            fields
                .iter()
                .find(|(f, _)| *f == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(get("origin").as_deref(), Some("default"));
        assert_eq!(get("description").as_deref(), Some("custom desc"));
        assert_eq!(get("timeout").as_deref(), Some("300"));
        assert_eq!(get("status").as_deref(), Some("queued"));
        assert_eq!(get("retries_left").as_deref(), Some("3"));
        assert_eq!(get("retry_intervals").as_deref(), Some("[10, 30, 60]"));
        assert_eq!(get("ttl").as_deref(), Some("7200"));
        assert_eq!(get("worker_name").as_deref(), Some(""));
        assert_eq!(get("created_at"), get("enqueued_at"));
        let scheduled = spec
            .hash_fields("default", 180, &now, JobStatus::Scheduled)
            .expect("fields");
        assert!(!scheduled.iter().any(|(f, _)| *f == "enqueued_at"));
    }

    #[test]
    fn regression_retries_without_intervals_store_python_s_zero_interval() {
        let spec = JobSpec::new("f").retry(Retry::new(2));
        let fields = spec
            .hash_fields("default", 180, &Timestamp::now(), JobStatus::Queued)
            .expect("fields");
        let intervals = fields.iter().find(|(f, _)| *f == "retry_intervals");
        assert_eq!(intervals.map(|(_, v)| v.as_slice()), Some(&b"[0]"[..]));
    }

    #[test]
    fn validation() {
        assert!(JobSpec::new("f").id("bad:id").validate().is_err());
        assert!(JobSpec::new("f").timeout(0).validate().is_err());
        assert!(JobSpec::new("").validate().is_err());
        assert!(JobSpec::new("f").timeout(-1).validate().is_ok());
        assert!(is_valid_queue_name("geo_q"));
        assert!(!is_valid_queue_name("a:b"));
        assert!(!is_valid_queue_name(""));
    }
}
