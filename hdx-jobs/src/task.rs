//! Tasks: the code a job runs.
//!
//! A [`Task`] is registered in a [`TaskRegistry`] under its wire name (RQ's `func_name`, e.g.
//! `importapi.tasks.create_preview.create_preview_task`), so a job enqueued by Python under that
//! dotted path runs the Rust implementation. Arguments arrive as RQ's `(args, kwargs)` and are
//! decoded into the task's typed `Args` (see [`CallArgs::decode`]). The task gets a
//! [`JobContext`]: who it is, a cancellation signal (timeout, stop-job, cold shutdown) and a way
//! to publish `meta` and progress. It answers with an output or a [`TaskError`] that says
//! whether a retry could help.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::rq::keys;
use crate::rq::payload::{self, Serializer};

/// A job's arguments as RQ carries them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct CallArgs {
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
}

impl CallArgs {
    /// Decodes the arguments into a task's typed `Args`. The rules, in order:
    /// - keyword arguments only: from the kwargs object (`f(seconds=5)` -> `{seconds: 5}`);
    /// - one positional argument: from it (HDX's tasks take one dict), else from the one-element
    ///   array (so `f(5)` fills a one-field struct);
    /// - several positional arguments: from the array (tuples, `Vec`, structs in field order);
    /// - nothing: from `null`, else from `{}` (so `()`, `Option` and all-default structs work).
    ///
    /// Mixing positional and keyword arguments is refused with a clear error.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, TaskError> {
        let attempt = |value: Value| serde_json::from_value::<T>(value);
        let result = match (self.args.len(), self.kwargs.is_empty()) {
            (0, true) => attempt(Value::Null).or_else(|_| attempt(Value::Object(Map::new()))),
            (0, false) => attempt(Value::Object(self.kwargs.clone())),
            (1, true) => {
                attempt(self.args[0].clone()).or_else(|_| attempt(Value::Array(self.args.clone())))
            }
            (_, true) => attempt(Value::Array(self.args.clone())),
            (_, false) => {
                return Err(TaskError::permanent(
                    "TypeError",
                    "this task takes either positional or keyword arguments, not both",
                ))
            }
        };
        result.map_err(|e| TaskError::permanent("TypeError", format!("bad arguments: {e}")))
    }
}

/// Whether retrying a failed job could succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    /// Transient (a timeout, an unreachable service): retried while the job has retries left.
    Retryable,
    /// The input or the configuration is wrong: fails at once, retries or not.
    Permanent,
}

/// A task's failure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskError {
    /// Retryable or permanent.
    pub kind: ErrorKind,
    /// A short type name, shown like a Python exception class (`TypeError`, or an HDX error
    /// type such as `file-too-large`).
    pub error_type: String,
    /// What went wrong, for people.
    pub message: String,
    /// Wait at least this long before a retry (e.g. from a `Retry-After` header).
    pub retry_after: Option<Duration>,
}

impl TaskError {
    /// A failure that a retry will not fix.
    pub fn permanent(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        TaskError {
            kind: ErrorKind::Permanent,
            error_type: error_type.into(),
            message: message.into(),
            retry_after: None,
        }
    }

    /// A failure that a later retry may fix.
    pub fn retryable(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        TaskError {
            kind: ErrorKind::Retryable,
            error_type: error_type.into(),
            message: message.into(),
            retry_after: None,
        }
    }

    /// Asks for a minimum wait before the retry.
    pub fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// True for retryable failures.
    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::Retryable
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error_type, self.message)
    }
}

impl std::error::Error for TaskError {}

/// The code behind a wire name.
///
/// ```
/// use hdx_jobs::task::{JobContext, Task, TaskError};
///
/// struct Add;
///
/// #[async_trait::async_trait]
/// impl Task for Add {
///     type Args = (i64, i64);
///     type Output = i64;
///     async fn run(&self, _ctx: &JobContext, (a, b): (i64, i64)) -> Result<i64, TaskError> {
///         Ok(a + b)
///     }
/// }
/// ```
#[async_trait]
pub trait Task: Send + Sync + 'static {
    /// The typed arguments.
    type Args: DeserializeOwned + Send;
    /// What the task returns; stored as the job's result (`()` stores none).
    type Output: Serialize + Send;

    /// Turns RQ's `(args, kwargs)` into `Args`; the default follows [`CallArgs::decode`].
    fn decode_args(&self, call: CallArgs) -> Result<Self::Args, TaskError> {
        call.decode()
    }

    /// Runs the job. Long or blocking work must watch `ctx.cancellation()`: the worker drops
    /// the future at the timeout, but blocking threads only stop if they check.
    async fn run(&self, ctx: &JobContext, args: Self::Args) -> Result<Self::Output, TaskError>;
}

/// A task with its types erased, as the registry stores it.
#[async_trait]
pub trait ErasedTask: Send + Sync {
    /// Decodes the arguments, runs, and encodes the output as JSON.
    async fn call(&self, ctx: &JobContext, call: CallArgs) -> Result<Value, TaskError>;
}

#[async_trait]
impl<T: Task> ErasedTask for T {
    async fn call(&self, ctx: &JobContext, call: CallArgs) -> Result<Value, TaskError> {
        let args = self.decode_args(call)?;
        let output = self.run(ctx, args).await?;
        serde_json::to_value(output).map_err(|e| {
            TaskError::permanent(
                "SerializationError",
                format!("cannot encode the result: {e}"),
            )
        })
    }
}

/// Wire names to tasks.
#[derive(Clone, Default)]
pub struct TaskRegistry {
    tasks: HashMap<String, Arc<dyn ErasedTask>>,
}

impl fmt::Debug for TaskRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskRegistry")
            .field("tasks", &self.names())
            .finish()
    }
}

impl TaskRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry with the built-in operational tasks (`hdx_jobs.noop`, `.echo`, `.sleep`,
    /// `.fail`).
    pub fn with_builtins() -> Self {
        let mut registry = Self::new();
        crate::builtin::register(&mut registry);
        registry
    }

    /// Registers `task` under `name`, replacing any task of that name.
    pub fn register<T: Task>(&mut self, name: impl Into<String>, task: T) -> &mut Self {
        self.tasks.insert(name.into(), Arc::new(task));
        self
    }

    /// The task of a wire name.
    pub fn get(&self, name: &str) -> Option<Arc<dyn ErasedTask>> {
        self.tasks.get(name).cloned()
    }

    /// Registered wire names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.tasks.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

/// Where a job's `meta` lives.
enum MetaStore {
    /// In the job hash, encoded with the payload's serializer.
    Redis {
        conn: MultiplexedConnection,
        serializer: Serializer,
    },
    /// In memory (jobs run outside a queue, tests).
    Memory(Mutex<Map<String, Value>>),
}

struct ContextInner {
    job_id: String,
    queue: String,
    func_name: String,
    attempt: u32,
    worker_name: String,
    created_at: Option<chrono::DateTime<chrono::Utc>>,
    cancel: CancellationToken,
    deadline: Option<Instant>,
    meta: MetaStore,
}

/// What a running job knows about itself. Cheap to clone (tasks hand it to blocking threads).
#[derive(Clone)]
pub struct JobContext {
    inner: Arc<ContextInner>,
}

impl fmt::Debug for JobContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobContext")
            .field("job_id", &self.inner.job_id)
            .field("queue", &self.inner.queue)
            .field("func_name", &self.inner.func_name)
            .field("attempt", &self.inner.attempt)
            .finish()
    }
}

/// Identity of a job run, to build a [`JobContext`].
#[derive(Debug, Clone)]
pub struct JobIdentity {
    /// The job id.
    pub job_id: String,
    /// The queue (the job's origin).
    pub queue: String,
    /// The wire name.
    pub func_name: String,
    /// 1 for the first run, 2 for the first retry, ...
    pub attempt: u32,
    /// The worker running it.
    pub worker_name: String,
    /// When the job was created (`created_at`, kept across retries and requeues).
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl JobContext {
    /// The context of a job run by a worker: meta goes to the job hash.
    pub(crate) fn for_worker(
        identity: JobIdentity,
        cancel: CancellationToken,
        deadline: Option<Instant>,
        conn: MultiplexedConnection,
        serializer: Serializer,
    ) -> Self {
        Self::build(
            identity,
            cancel,
            deadline,
            MetaStore::Redis { conn, serializer },
        )
    }

    /// A context for running a task outside any queue (the CLI's local runs, tests): meta stays
    /// in memory and nothing cancels it but `cancel`.
    pub fn detached(func_name: impl Into<String>, cancel: CancellationToken) -> Self {
        let identity = JobIdentity {
            job_id: crate::rq::job::new_job_id(),
            queue: String::new(),
            func_name: func_name.into(),
            attempt: 1,
            worker_name: String::new(),
            created_at: Some(chrono::Utc::now()),
        };
        Self::build(
            identity,
            cancel,
            None,
            MetaStore::Memory(Mutex::new(Map::new())),
        )
    }

    fn build(
        identity: JobIdentity,
        cancel: CancellationToken,
        deadline: Option<Instant>,
        meta: MetaStore,
    ) -> Self {
        JobContext {
            inner: Arc::new(ContextInner {
                job_id: identity.job_id,
                queue: identity.queue,
                func_name: identity.func_name,
                attempt: identity.attempt,
                worker_name: identity.worker_name,
                created_at: identity.created_at,
                cancel,
                deadline,
                meta,
            }),
        }
    }

    /// The job id.
    pub fn job_id(&self) -> &str {
        &self.inner.job_id
    }

    /// The queue the job came from.
    pub fn queue(&self) -> &str {
        &self.inner.queue
    }

    /// The wire name it was called by.
    pub fn func_name(&self) -> &str {
        &self.inner.func_name
    }

    /// 1 for the first run, 2 for the first retry, ...
    pub fn attempt(&self) -> u32 {
        self.inner.attempt
    }

    /// The worker running the job.
    pub fn worker_name(&self) -> &str {
        &self.inner.worker_name
    }

    /// When the job was created (RQ's `created_at`): the same on every attempt of the job.
    pub fn created_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.inner.created_at
    }

    /// Fires when the job must stop: timeout, stop-job command, cold shutdown.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.inner.cancel
    }

    /// True once the job must stop.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// When the job's timeout expires (`None`: no timeout).
    pub fn deadline(&self) -> Option<Instant> {
        self.inner.deadline
    }

    /// Sets one key of the job's `meta` (visible to RQ tools as `job.meta`).
    pub async fn set_meta(&self, key: &str, value: Value) -> Result<(), TaskError> {
        match &self.inner.meta {
            MetaStore::Memory(map) => {
                if let Ok(mut map) = map.lock() {
                    map.insert(key.to_string(), value);
                }
                Ok(())
            }
            MetaStore::Redis { conn, serializer } => {
                let mut conn = conn.clone();
                let job_key = keys::job(&self.inner.job_id);
                let redis_err = |e: redis::RedisError| {
                    TaskError::retryable("RedisError", format!("cannot save meta: {e}"))
                };
                let current: Option<Vec<u8>> = redis::cmd("HGET")
                    .arg(&job_key)
                    .arg("meta")
                    .query_async(&mut conn)
                    .await
                    .map_err(redis_err)?;
                let mut meta = current
                    .filter(|b| !b.is_empty())
                    .and_then(|b| payload::decode_value(&b).ok())
                    .and_then(|(v, _)| match v {
                        Value::Object(map) => Some(map),
                        _ => None,
                    })
                    .unwrap_or_default();
                meta.insert(key.to_string(), value);
                let bytes = payload::encode_value(&Value::Object(meta), *serializer)
                    .map_err(|e| TaskError::permanent("SerializationError", e.to_string()))?;
                let () = redis::cmd("HSET")
                    .arg(&job_key)
                    .arg("meta")
                    .arg(bytes)
                    .query_async(&mut conn)
                    .await
                    .map_err(redis_err)?;
                Ok(())
            }
        }
    }

    /// Publishes progress as `meta.progress = {done, total, message}`.
    pub async fn set_progress(
        &self,
        done: u64,
        total: Option<u64>,
        message: &str,
    ) -> Result<(), TaskError> {
        self.set_meta(
            "progress",
            serde_json::json!({"done": done, "total": total, "message": message}),
        )
        .await
    }

    /// The meta written so far, for detached contexts (`None` for worker contexts, whose meta
    /// lives in Redis).
    pub fn local_meta(&self) -> Option<Map<String, Value>> {
        match &self.inner.meta {
            MetaStore::Memory(map) => map.lock().ok().map(|m| m.clone()),
            MetaStore::Redis { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Sleep {
        seconds: f64,
    }

    fn call(args: Value, kwargs: Value) -> CallArgs {
        CallArgs {
            args: args.as_array().cloned().unwrap_or_default(),
            kwargs: kwargs.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn decodes_positional_keyword_and_empty() {
        assert_eq!(
            call(json!([2.5]), json!({}))
                .decode::<Sleep>()
                .expect("pos"),
            Sleep { seconds: 2.5 }
        );
        assert_eq!(
            call(json!([]), json!({"seconds": 1}))
                .decode::<Sleep>()
                .expect("kw"),
            Sleep { seconds: 1.0 }
        );
        assert_eq!(
            call(json!([{"seconds": 3}]), json!({}))
                .decode::<Sleep>()
                .expect("dict"),
            Sleep { seconds: 3.0 }
        );
        assert_eq!(
            call(json!([1, 2]), json!({}))
                .decode::<(i64, i64)>()
                .expect("tuple"),
            (1, 2)
        );
        call(json!([]), json!({})).decode::<()>().expect("unit");
        assert_eq!(
            call(json!([]), json!({}))
                .decode::<Option<Sleep>>()
                .expect("none"),
            None
        );
    }

    #[test]
    fn bad_arguments_are_permanent_type_errors() {
        let err = call(json!(["x"]), json!({}))
            .decode::<Sleep>()
            .expect_err("bad");
        assert_eq!(err.kind, ErrorKind::Permanent);
        assert_eq!(err.error_type, "TypeError");
        let mixed = call(json!([1]), json!({"a": 1}))
            .decode::<Sleep>()
            .expect_err("mixed");
        assert!(mixed.message.contains("not both"));
    }

    #[tokio::test]
    async fn detached_context_keeps_meta() {
        let ctx = JobContext::detached("t", CancellationToken::new());
        ctx.set_progress(1, Some(2), "half").await.expect("meta");
        assert_eq!(
            ctx.local_meta().expect("memory")["progress"]["done"],
            json!(1)
        );
    }
}
