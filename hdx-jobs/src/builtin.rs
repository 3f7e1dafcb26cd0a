//! Built-in tasks for operations and tests: `hdx_jobs.noop`, `hdx_jobs.echo`, `hdx_jobs.sleep`
//! and `hdx_jobs.fail`. Operators use them to check that a queue is served end to end.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::task::{CallArgs, JobContext, Task, TaskError, TaskRegistry};

/// Wire name of [`Noop`].
pub const NOOP: &str = "hdx_jobs.noop";
/// Wire name of [`Echo`].
pub const ECHO: &str = "hdx_jobs.echo";
/// Wire name of [`Sleep`].
pub const SLEEP: &str = "hdx_jobs.sleep";
/// Wire name of [`Fail`].
pub const FAIL: &str = "hdx_jobs.fail";

/// Registers every built-in task.
pub fn register(registry: &mut TaskRegistry) {
    registry
        .register(NOOP, Noop)
        .register(ECHO, Echo)
        .register(SLEEP, Sleep)
        .register(FAIL, Fail);
}

/// Does nothing and returns `None`, whatever its arguments.
pub struct Noop;

#[async_trait]
impl Task for Noop {
    type Args = ();
    type Output = ();

    fn decode_args(&self, _call: CallArgs) -> Result<(), TaskError> {
        Ok(())
    }

    async fn run(&self, _ctx: &JobContext, _args: ()) -> Result<(), TaskError> {
        Ok(())
    }
}

/// Returns its arguments as `{"args": [...], "kwargs": {...}}`.
pub struct Echo;

#[async_trait]
impl Task for Echo {
    type Args = CallArgs;
    type Output = Value;

    fn decode_args(&self, call: CallArgs) -> Result<CallArgs, TaskError> {
        Ok(call)
    }

    async fn run(&self, _ctx: &JobContext, call: CallArgs) -> Result<Value, TaskError> {
        Ok(json!({"args": call.args, "kwargs": call.kwargs}))
    }
}

/// Arguments of [`Sleep`]: `sleep(2.5)` or `sleep(seconds=2.5)`.
#[derive(Debug, Deserialize)]
pub struct SleepArgs {
    /// How long to sleep.
    pub seconds: f64,
}

/// Sleeps the given seconds, returns them; stops early when cancelled.
pub struct Sleep;

#[async_trait]
impl Task for Sleep {
    type Args = SleepArgs;
    type Output = f64;

    async fn run(&self, ctx: &JobContext, args: SleepArgs) -> Result<f64, TaskError> {
        let duration = Duration::try_from_secs_f64(args.seconds).map_err(|_| {
            TaskError::permanent(
                "ValueError",
                format!("cannot sleep {} seconds", args.seconds),
            )
        })?;
        tokio::select! {
            _ = tokio::time::sleep(duration) => Ok(args.seconds),
            _ = ctx.cancellation().cancelled() => Err(TaskError::retryable("Cancelled", "sleep was cancelled")),
        }
    }
}

/// Arguments of [`Fail`]: `fail("message")`, or `fail(message=..., retryable=true)` to fail
/// with a retryable error.
#[derive(Debug, Deserialize)]
pub struct FailArgs {
    /// The error message.
    #[serde(default = "default_fail_message")]
    pub message: String,
    /// Fail with a retryable error instead of a permanent one.
    #[serde(default)]
    pub retryable: bool,
}

fn default_fail_message() -> String {
    "failed on purpose".into()
}

/// Fails with the given message.
pub struct Fail;

#[async_trait]
impl Task for Fail {
    type Args = FailArgs;
    type Output = ();

    async fn run(&self, _ctx: &JobContext, args: FailArgs) -> Result<(), TaskError> {
        if args.retryable {
            Err(TaskError::retryable("TaskFailed", args.message))
        } else {
            Err(TaskError::permanent("TaskFailed", args.message))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::ErrorKind;
    use tokio_util::sync::CancellationToken;

    fn ctx() -> JobContext {
        JobContext::detached("test", CancellationToken::new())
    }

    fn args(args: Value, kwargs: Value) -> CallArgs {
        CallArgs {
            args: args.as_array().cloned().unwrap_or_default(),
            kwargs: kwargs.as_object().cloned().unwrap_or_default(),
        }
    }

    #[tokio::test]
    async fn builtins_behave() {
        let registry = TaskRegistry::with_builtins();
        let c = ctx();
        let noop = registry.get(NOOP).expect("noop");
        assert_eq!(
            noop.call(&c, args(json!([1, 2]), json!({"x": 1})))
                .await
                .expect("noop"),
            Value::Null
        );
        let echo = registry.get(ECHO).expect("echo");
        assert_eq!(
            echo.call(&c, args(json!([1]), json!({"k": "v"})))
                .await
                .expect("echo"),
            json!({"args": [1], "kwargs": {"k": "v"}})
        );
        let sleep = registry.get(SLEEP).expect("sleep");
        assert_eq!(
            sleep
                .call(&c, args(json!([0.01]), json!({})))
                .await
                .expect("sleep"),
            json!(0.01)
        );
        let fail = registry.get(FAIL).expect("fail");
        let err = fail
            .call(&c, args(json!(["boom"]), json!({})))
            .await
            .expect_err("fail");
        assert_eq!(err.to_string(), "TaskFailed: boom");
        assert_eq!(err.kind, ErrorKind::Permanent);
        let err = fail
            .call(&c, args(json!([]), json!({"retryable": true})))
            .await
            .expect_err("fail");
        assert_eq!(err.kind, ErrorKind::Retryable);
        assert_eq!(registry.names(), vec![ECHO, FAIL, NOOP, SLEEP]);
    }

    #[tokio::test]
    async fn sleep_stops_when_cancelled() {
        let cancel = CancellationToken::new();
        let c = JobContext::detached("test", cancel.clone());
        cancel.cancel();
        let err = Sleep
            .run(&c, SleepArgs { seconds: 60.0 })
            .await
            .expect_err("cancelled");
        assert_eq!(err.error_type, "Cancelled");
    }
}
