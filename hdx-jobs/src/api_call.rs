//! The scheduled CKAN API call (`schedulerapi.tasks.make_api_call.schedule_api_task`): calls
//! `{CKAN_API_BASE_URL}/{action}`, with `method` `post` as a JSON POST of `api_params` with the
//! API key, otherwise as a GET with `api_params` as query parameters. Unlike the old task, which
//! only logged failures, a non-2xx answer fails the job with CKAN's error text (and 429/5xx or
//! an unreachable CKAN fail it as retryable).
//!
//! The old scheduler API passed the argument dict as the keyword argument `args`
//! (`enqueue_in(delta, schedule_api_task, args=args)`); both that and one positional dict are
//! accepted. The API key is the worker's (`HDX_GIS_API_KEY`), unless an old job carries one;
//! CKAN's URL and TLS verification are always the worker's ([`worker_setting`]), so a job can
//! never send the key elsewhere. The job's result is a summary of CKAN's answer
//! ([`summarize_answer`]), not the answer itself: results are shown to operators and kept in
//! Redis, and an action's answer may hold private data.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::ckan::{CkanClient, CkanError};
use crate::config::{worker_setting, CkanConfig};
use crate::secret::Secret;
use crate::task::{CallArgs, JobContext, Task, TaskError};

/// Longest a call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The argument dict.
#[derive(Debug, Clone, Deserialize)]
pub struct ApiCallArgs {
    /// What to call.
    pub task_args: CallSpec,
    /// CKAN's action API base URL (the worker's `CKAN_API_BASE_URL` when absent).
    #[serde(default)]
    pub ckan_api_base_url: Option<String>,
    /// An API key carried by old jobs.
    #[serde(default)]
    pub ckan_api_key: Option<String>,
    /// TLS verification.
    #[serde(default)]
    pub verify_ckan_ssl: Option<bool>,
    /// User agent.
    #[serde(default)]
    pub hdx_user_agent: Option<String>,
}

/// The call itself, as POSTed to `/api/scheduler/add_job`.
#[derive(Debug, Clone, Deserialize)]
pub struct CallSpec {
    /// CKAN action name.
    pub action: String,
    /// `post`, or anything else for GET.
    #[serde(default)]
    pub method: Option<String>,
    /// Body (POST) or query parameters (GET).
    #[serde(default)]
    pub api_params: Option<Value>,
}

/// The task.
#[derive(Debug, Clone)]
pub struct ScheduleApiCallTask {
    ckan: CkanConfig,
}

impl ScheduleApiCallTask {
    /// A task calling the configured CKAN.
    pub fn new(ckan: &CkanConfig) -> Self {
        ScheduleApiCallTask { ckan: ckan.clone() }
    }
}

#[async_trait]
impl Task for ScheduleApiCallTask {
    type Args = ApiCallArgs;
    type Output = Value;

    fn decode_args(&self, call: CallArgs) -> Result<ApiCallArgs, TaskError> {
        let value = match (call.args.as_slice(), call.kwargs.get("args")) {
            (_, Some(dict)) => dict.clone(),
            ([dict], None) => dict.clone(),
            _ => {
                return Err(TaskError::permanent(
                    "TypeError",
                    "expected the argument dict, as `args=` or one positional argument",
                ))
            }
        };
        serde_json::from_value(value)
            .map_err(|e| TaskError::permanent("TypeError", format!("bad arguments: {e}")))
    }

    async fn run(&self, ctx: &JobContext, args: ApiCallArgs) -> Result<Value, TaskError> {
        let mut ckan = self.ckan.clone();
        ckan.api_base_url = worker_setting(
            "ckan_api_base_url",
            args.ckan_api_base_url.filter(|u| !u.is_empty()).map(Some),
            ckan.api_base_url,
        );
        ckan.verify_ssl = worker_setting("verify_ckan_ssl", args.verify_ckan_ssl, ckan.verify_ssl);
        if let Some(agent) = args.hdx_user_agent.filter(|a| !a.is_empty()) {
            ckan.user_agent = agent;
        }
        let key = args
            .ckan_api_key
            .map(Secret::new)
            .or_else(|| ckan.gis_api_key.clone());
        let spec = args.task_args;
        let post = spec
            .method
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case("post"));
        tracing::info!(job_id = ctx.job_id(), action = %spec.action, post, "calling CKAN");
        let action = spec.action.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let client = CkanClient::new(&ckan, key, CALL_TIMEOUT)?;
            if post {
                client.post(
                    &spec.action,
                    &spec.api_params.unwrap_or_else(|| Value::Object(Map::new())),
                )
            } else {
                client.get(&spec.action, &query_pairs(spec.api_params.as_ref()))
            }
        })
        .await
        .map_err(|e| TaskError::permanent("TaskPanicked", e.to_string()))?;
        let answer = outcome.map_err(|e| match &e {
            CkanError::Config(_) => TaskError::permanent("wrong-configuration", e.to_string()),
            _ if e.is_transient() => TaskError::retryable("CkanUnavailable", e.to_string()),
            _ => TaskError::permanent("CkanError", e.to_string()),
        })?;
        let summary = summarize_answer(&action, post, &answer);
        tracing::info!(job_id = ctx.job_id(), %summary, "CKAN answered");
        Ok(summary)
    }
}

/// What the job keeps of CKAN's answer: the action, the method, CKAN's `success` flag and the
/// shape of `result` (its type and size), never its content.
pub fn summarize_answer(action: &str, post: bool, answer: &Value) -> Value {
    let result = answer.get("result").unwrap_or(&Value::Null);
    let (kind, size) = match result {
        Value::Null => ("null", None),
        Value::Bool(_) => ("bool", None),
        Value::Number(_) => ("number", None),
        Value::String(text) => ("string", Some(text.chars().count())),
        Value::Array(items) => ("list", Some(items.len())),
        Value::Object(map) => ("dict", Some(map.len())),
    };
    json!({
        "action": action,
        "method": if post { "POST" } else { "GET" },
        "success": answer.get("success").cloned().unwrap_or(Value::Null),
        "result_type": kind,
        "result_size": size,
    })
}

/// Query parameters the way Python's `requests` encodes a dict: `None` dropped, booleans as
/// `True`/`False`, lists as repeated keys.
pub fn query_pairs(params: Option<&Value>) -> Vec<(String, String)> {
    let Some(Value::Object(map)) = params else {
        return Vec::new();
    };
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        other => other.to_string(),
    };
    let mut pairs = Vec::new();
    for (k, v) in map {
        match v {
            Value::Null => {}
            Value::Array(items) => pairs.extend(
                items
                    .iter()
                    .filter(|i| !i.is_null())
                    .map(|i| (k.clone(), text(i))),
            ),
            other => pairs.push((k.clone(), text(other))),
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn query_like_requests() {
        let pairs = query_pairs(Some(
            &json!({"id": "x", "n": 3, "flag": true, "skip": null, "tags": ["a", "b"]}),
        ));
        assert_eq!(
            pairs,
            vec![
                ("id".into(), "x".into()),
                ("n".into(), "3".into()),
                ("flag".into(), "True".into()),
                ("tags".into(), "a".into()),
                ("tags".into(), "b".into())
            ]
        );
    }

    #[test]
    fn the_result_is_a_summary_of_the_answer() {
        let answer = json!({"success": true, "result": {"private_field": "secret", "b": 2}});
        assert_eq!(
            summarize_answer("package_show", false, &answer),
            json!({"action": "package_show", "method": "GET", "success": true,
                   "result_type": "dict", "result_size": 2})
        );
        assert_eq!(
            summarize_answer("hdx_cleanup", true, &json!({"success": false}))["result_type"],
            "null"
        );
    }

    #[test]
    fn both_argument_shapes() {
        let task = ScheduleApiCallTask::new(
            &crate::config::Config::from_lookup(|_| None)
                .expect("config")
                .ckan,
        );
        let dict = json!({"task_args": {"action": "package_show", "api_params": {"id": "x"}}});
        let as_kwarg = CallArgs {
            args: vec![],
            kwargs: json!({"args": dict.clone()})
                .as_object()
                .cloned()
                .expect("map"),
        };
        assert_eq!(
            task.decode_args(as_kwarg).expect("kwarg").task_args.action,
            "package_show"
        );
        let positional = CallArgs {
            args: vec![dict],
            kwargs: Map::new(),
        };
        assert_eq!(
            task.decode_args(positional)
                .expect("positional")
                .task_args
                .action,
            "package_show"
        );
        assert!(task.decode_args(CallArgs::default()).is_err());
    }
}
