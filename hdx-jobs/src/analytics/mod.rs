//! The analytics job (`analyticsapi.tasks.send_event.send_event_task` on `analytics_q`): one
//! event, taken from the old argument dict, delivered to Mixpanel and/or Google Analytics.
//!
//! Why this shape:
//! - the arguments and their checks are the old service's, with its error types (`empty-task`,
//!   `missing-task-argument`) and messages, so jobs enqueued by the old Python API run
//!   unchanged and fail the same way;
//! - everything is built and validated before anything is sent (a job that fails on its input
//!   has sent nothing), then Mixpanel is sent first and Google Analytics second, as before (a
//!   Mixpanel failure ends the job before GA);
//! - each delivery is retried safely within the run ([`delivery`]); a Mixpanel event carries a
//!   `$insert_id` fixed per job ([`mixpanel::insert_id`]), so repeats are dropped by Mixpanel;
//! - Google Analytics goes to GA4's Measurement Protocol ([`ga4`]) when configured, to a
//!   Universal Analytics collector with `GA_MODE=ua` ([`ua`]), and is skipped with a warning
//!   when neither is configured (Universal Analytics itself is gone);
//! - secrets (Mixpanel token, project secret, service account secret, GA API secret) never
//!   appear in errors, logs or results ([`delivery::Redactor`]).
//!
//! The job's result says what was delivered, e.g.
//! `{"event": "...", "mixpanel": {"endpoint": "/track", "insert_id": "...", "attempts": 1},
//! "ga": {"mode": "ga4", "debug": false, "attempts": 1}}`.

pub mod delivery;
pub mod ga4;
pub mod mixpanel;
pub mod ua;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use self::delivery::{DeliveryError, Policy, Redactor};
use crate::config::{AnalyticsConfig, GaMode};
use crate::python_json::truthy;
use crate::secret::Secret;
use crate::task::{CallArgs, JobContext, Task, TaskError};

/// The wire name the old service registered.
pub const TASK_NAME: &str = crate::hdx::wire::SEND_EVENT;

/// Error type of empty arguments (the old `EmptyTaskArgumentException`).
pub const EMPTY_TASK: &str = "empty-task";
/// Error type of a missing argument or flag (the old `MissingTaskArgumentException`).
pub const MISSING_TASK_ARGUMENT: &str = "missing-task-argument";
/// Error type of an argument of the wrong kind (the old service crashed on those).
pub const INVALID_TASK_ARGUMENT: &str = "invalid-task-argument";
/// Error type of a GA4 event that breaks GA4's rules (checked before sending).
pub const GA4_INVALID_EVENT: &str = "ga4-invalid-event";
/// Error type of validation messages from GA4's validation server (`GA_DEBUG`).
pub const GA4_VALIDATION_FAILED: &str = "ga4-validation-failed";

/// The checked arguments of one job.
#[derive(Debug, Clone, PartialEq)]
pub struct EventArgs {
    /// `event_name`.
    pub event_name: String,
    /// What Mixpanel needs, when `send_mixpanel` is set.
    pub mixpanel: Option<MixpanelArgs>,
    /// `ga_meta`, when `send_ga` is set.
    pub ga_meta: Option<Value>,
    /// `mixpanel_meta.time` when it is a number (seconds or milliseconds): the event's time.
    pub meta_time: Option<f64>,
}

/// The Mixpanel part of the arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct MixpanelArgs {
    /// `mixpanel_token`.
    pub token: Secret,
    /// `mixpanel_tracking_id`: the distinct id.
    pub tracking_id: String,
    /// `mixpanel_meta`: the event's properties.
    pub meta: Map<String, Value>,
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn missing(message: &str) -> TaskError {
    TaskError::permanent(MISSING_TASK_ARGUMENT, message)
}

/// Checks the argument dict in the old service's order, with its messages:
/// empty → `empty-task`; then, for `send_mixpanel`, the event name, token and tracking id;
/// for `send_ga`, the event name and `ga_meta`; neither flag → "No flag to send to either
/// Mixpanel or GA". Flags are read with Python's truth rules, as before.
pub fn parse_args(arguments: &Value) -> Result<EventArgs, TaskError> {
    if !truthy(arguments) {
        return Err(TaskError::permanent(
            EMPTY_TASK,
            "Task arguments seem to be empty",
        ));
    }
    let Value::Object(args) = arguments else {
        return Err(TaskError::permanent(
            INVALID_TASK_ARGUMENT,
            "the task takes one dict of arguments",
        ));
    };
    let send_mixpanel = args.get("send_mixpanel").is_some_and(truthy);
    let send_ga = args.get("send_ga").is_some_and(truthy);
    let event_name = || {
        args.get("event_name")
            .filter(|v| truthy(v))
            .map(text)
            .ok_or_else(|| missing("Missing event name"))
    };
    let mut parsed = EventArgs {
        event_name: String::new(),
        mixpanel: None,
        ga_meta: None,
        meta_time: args
            .get("mixpanel_meta")
            .and_then(|m| m.get("time"))
            .and_then(Value::as_f64),
    };
    if send_mixpanel {
        parsed.event_name = event_name()?;
        let token = args
            .get("mixpanel_token")
            .filter(|v| truthy(v))
            .map(|v| Secret::new(text(v)))
            .ok_or_else(|| missing("Missing mixpanel token"))?;
        let tracking_id = args
            .get("mixpanel_tracking_id")
            .filter(|v| truthy(v))
            .map(text)
            .ok_or_else(|| missing("Missing mixpanel tracking id"))?;
        let meta = match args.get("mixpanel_meta") {
            Some(Value::Object(meta)) => meta.clone(),
            other if !other.is_some_and(truthy) => Map::new(),
            Some(_) => {
                return Err(TaskError::permanent(
                    INVALID_TASK_ARGUMENT,
                    "mixpanel_meta must be a dict of event properties",
                ))
            }
            None => Map::new(),
        };
        parsed.mixpanel = Some(MixpanelArgs {
            token,
            tracking_id,
            meta,
        });
    }
    if send_ga {
        parsed.event_name = event_name()?;
        let meta = args
            .get("ga_meta")
            .filter(|v| truthy(v))
            .ok_or_else(|| missing("Missing google analytics meta"))?;
        if !matches!(meta, Value::Object(_) | Value::String(_)) {
            return Err(TaskError::permanent(
                INVALID_TASK_ARGUMENT,
                "ga_meta must be a dict of Measurement Protocol fields",
            ));
        }
        parsed.ga_meta = Some(meta.clone());
    }
    if !send_mixpanel && !send_ga {
        return Err(missing("No flag to send to either Mixpanel or GA"));
    }
    Ok(parsed)
}

impl EventArgs {
    /// The event's time: `mixpanel_meta.time` (HDX's CKAN sets it), else the job's creation.
    pub fn event_time(&self, created_at: DateTime<Utc>) -> DateTime<Utc> {
        self.meta_time
            .filter(|t| t.is_finite() && *t > 0.0)
            .and_then(|t| {
                let millis = if t < 1e11 { t * 1000.0 } else { t };
                DateTime::from_timestamp_millis(millis.round() as i64)
            })
            .unwrap_or(created_at)
    }
}

/// What a job delivered: its result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The event name.
    pub event: String,
    /// The Mixpanel delivery, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mixpanel: Option<MixpanelReport>,
    /// The Google Analytics delivery, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ga: Option<GaReport>,
}

/// A Mixpanel delivery.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MixpanelReport {
    /// `/track` or `/import`.
    pub endpoint: &'static str,
    /// The event's `$insert_id`.
    pub insert_id: String,
    /// Attempts it took.
    pub attempts: u32,
}

/// A Google Analytics delivery.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GaReport {
    /// `ga4`, `ua`, or `none` (not configured: skipped).
    pub mode: &'static str,
    /// Sent to GA4's validation server.
    pub debug: bool,
    /// Attempts it took (0 when skipped).
    pub attempts: u32,
    /// Why it was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// The warning of `send_ga` jobs when GA is not configured.
pub const GA_NOT_CONFIGURED: &str = "Google Analytics is not configured (GA_MEASUREMENT_ID and \
GA_API_SECRET for GA4, or GA_MODE=ua): the GA part of the event is skipped";

struct Shared {
    config: AnalyticsConfig,
    agent: ureq::Agent,
    policy: Policy,
    endpoint: mixpanel::Endpoint,
    redactor: Redactor,
}

/// The task. Cheap to clone.
#[derive(Clone)]
pub struct SendEventTask {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SendEventTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendEventTask")
            .field("config", &self.shared.config)
            .finish()
    }
}

impl SendEventTask {
    /// The task for a configuration; every call carries `user_agent` (`HDX_USER_AGENT`).
    pub fn new(config: &AnalyticsConfig, user_agent: &str) -> Self {
        let policy = Policy::from_config(config);
        let mut redactor = Redactor::new();
        for secret in [
            &config.mixpanel_api_secret,
            &config.mixpanel_service_account_secret,
            &config.ga_api_secret,
        ]
        .into_iter()
        .flatten()
        {
            redactor.hide(secret.expose());
        }
        SendEventTask {
            shared: Arc::new(Shared {
                agent: delivery::agent(user_agent, &policy),
                endpoint: mixpanel::Endpoint::from_config(config),
                config: config.clone(),
                policy,
                redactor,
            }),
        }
    }
}

/// A delivery failure as the job's error: the service's refusal is permanent
/// (`mixpanel-rejected`, `ga-rejected`), unavailability retryable (`mixpanel-unavailable`,
/// `ga-unavailable`, with the service's `Retry-After`).
fn task_error(e: DeliveryError) -> TaskError {
    let message = e.to_string();
    match e {
        DeliveryError::Rejected { service, .. } => {
            TaskError::permanent(format!("{}-rejected", service.slug()), message)
        }
        DeliveryError::Unavailable {
            service,
            retry_after,
            ..
        } => {
            let error = TaskError::retryable(format!("{}-unavailable", service.slug()), message);
            match retry_after {
                Some(wait) => error.retry_after(wait),
                None => error,
            }
        }
        DeliveryError::Config { .. } => TaskError::permanent("analytics-config", message),
        DeliveryError::Cancelled { service } => {
            TaskError::retryable(format!("{}-unavailable", service.slug()), message)
        }
    }
}

/// The Google Analytics part, planned before anything is sent.
enum GaPlan {
    Ga4(delivery::Post),
    Ua(delivery::Post),
    NotConfigured,
}

#[async_trait]
impl Task for SendEventTask {
    type Args = Value;
    type Output = Report;

    /// The old task took one positional dict (`send_event_task(task_arguments)`); the keyword
    /// form `task_arguments=...` is accepted too.
    fn decode_args(&self, call: CallArgs) -> Result<Value, TaskError> {
        match (call.args.len(), call.kwargs.get("task_arguments")) {
            (0, None) if call.kwargs.is_empty() => Ok(Value::Null),
            (0, Some(args)) if call.kwargs.len() == 1 => Ok(args.clone()),
            (1, None) if call.kwargs.is_empty() => {
                Ok(call.args.into_iter().next().unwrap_or_default())
            }
            _ => Err(TaskError::permanent(
                "TypeError",
                "send_event_task() takes one argument: the dict of task arguments",
            )),
        }
    }

    async fn run(&self, ctx: &JobContext, arguments: Value) -> Result<Report, TaskError> {
        let shared = &self.shared;
        let config = &shared.config;
        let args = parse_args(&arguments)?;
        let mut redactor = shared.redactor.clone();
        if let Some(mp) = &args.mixpanel {
            redactor.hide(mp.token.expose());
        }
        let created_at = ctx.created_at().unwrap_or_else(Utc::now);
        let event_time = args.event_time(created_at);

        // Build and validate everything before sending anything.
        let mixpanel_event = args.mixpanel.as_ref().map(|mp| {
            let insert_id = mixpanel::insert_id(ctx.job_id());
            let event = mixpanel::event(
                &args.event_name,
                &mp.tracking_id,
                &mp.token,
                &mp.meta,
                &insert_id,
                created_at,
            );
            (insert_id, event)
        });
        let ga_plan = match &args.ga_meta {
            None => None,
            Some(meta) => Some(match config.ga_mode {
                GaMode::Ua => GaPlan::Ua(ua::post(config, meta)),
                GaMode::Ga4 if config.ga4_configured() => {
                    let mapped = ga4::map(
                        &args.event_name,
                        meta,
                        event_time,
                        Utc::now(),
                        config.ga_debug,
                    )
                    .map_err(|problems| {
                        TaskError::permanent(
                            GA4_INVALID_EVENT,
                            redactor.redact(&format!(
                                "the event cannot be sent to GA4: {}",
                                problems.join("; ")
                            )),
                        )
                    })?;
                    if !mapped.notes.is_empty() {
                        tracing::debug!(job_id = ctx.job_id(), notes = %redactor.redact(&mapped.notes.join("; ")),
                            "GA4 mapping");
                    }
                    GaPlan::Ga4(ga4::post(config, &mapped.payload))
                }
                GaMode::Ga4 => GaPlan::NotConfigured,
            }),
        };

        let mut report = Report {
            event: args.event_name.clone(),
            mixpanel: None,
            ga: None,
        };
        if let Some((insert_id, event)) = mixpanel_event {
            let post = mixpanel::post(config, &shared.endpoint, &event);
            let delivered = delivery::deliver(ctx, &shared.agent, &shared.policy, &post, &redactor)
                .await
                .map_err(task_error)?;
            mixpanel::check(&shared.endpoint, &post, &delivered, &redactor).map_err(task_error)?;
            report.mixpanel = Some(MixpanelReport {
                endpoint: shared.endpoint.path(),
                insert_id,
                attempts: delivered.attempts,
            });
        }
        report.ga = match ga_plan {
            None => None,
            Some(GaPlan::NotConfigured) => {
                tracing::warn!(job_id = ctx.job_id(), event = %args.event_name, "{GA_NOT_CONFIGURED}");
                Some(GaReport {
                    mode: "none",
                    debug: false,
                    attempts: 0,
                    skipped: Some(GA_NOT_CONFIGURED.to_string()),
                })
            }
            Some(GaPlan::Ua(post)) => {
                let delivered =
                    delivery::deliver(ctx, &shared.agent, &shared.policy, &post, &redactor)
                        .await
                        .map_err(task_error)?;
                tracing::debug!(job_id = ctx.job_id(), answer = %redactor.redact(&delivered.body),
                    "Universal Analytics collector answered");
                Some(GaReport {
                    mode: "ua",
                    debug: false,
                    attempts: delivered.attempts,
                    skipped: None,
                })
            }
            Some(GaPlan::Ga4(post)) => {
                let delivered =
                    delivery::deliver(ctx, &shared.agent, &shared.policy, &post, &redactor)
                        .await
                        .map_err(task_error)?;
                if config.ga_debug {
                    ga4::validation_messages(&delivered.body).map_err(|messages| {
                        TaskError::permanent(
                            GA4_VALIDATION_FAILED,
                            redactor.redact(&format!(
                                "GA4's validation server refused the event: {}",
                                messages.join("; ")
                            )),
                        )
                    })?;
                }
                Some(GaReport {
                    mode: "ga4",
                    debug: config.ga_debug,
                    attempts: delivered.attempts,
                    skipped: None,
                })
            }
        };
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(args: Value) -> (String, String) {
        let e = parse_args(&args).expect_err("invalid");
        assert!(!e.is_retryable());
        (e.error_type, e.message)
    }

    fn missing(message: &str) -> (String, String) {
        (MISSING_TASK_ARGUMENT.to_string(), message.to_string())
    }

    #[test]
    fn the_old_checks_in_the_old_order() {
        for empty in [json!(null), json!({}), json!("")] {
            assert_eq!(
                err(empty),
                (EMPTY_TASK.into(), "Task arguments seem to be empty".into())
            );
        }
        assert_eq!(
            err(json!({"event_name": "e"})),
            missing("No flag to send to either Mixpanel or GA")
        );
        assert_eq!(
            err(json!({"event_name": "e", "send_mixpanel": false, "send_ga": 0})),
            missing("No flag to send to either Mixpanel or GA")
        );
        assert_eq!(
            err(json!({"send_mixpanel": true, "mixpanel_token": "t"})),
            missing("Missing event name")
        );
        assert_eq!(
            err(json!({"send_ga": true, "ga_meta": {"cid": "c"}})),
            missing("Missing event name")
        );
        assert_eq!(
            err(json!({"send_mixpanel": true, "event_name": "e", "mixpanel_tracking_id": "u"})),
            missing("Missing mixpanel token")
        );
        assert_eq!(
            err(json!({"send_mixpanel": 1, "event_name": "e", "mixpanel_token": "t"})),
            missing("Missing mixpanel tracking id")
        );
        assert_eq!(
            err(json!({"send_ga": "yes", "event_name": "e", "ga_meta": {}})),
            missing("Missing google analytics meta")
        );
        // Mixpanel's checks come first, as before.
        assert_eq!(
            err(json!({"send_mixpanel": true, "send_ga": true, "event_name": "e"})),
            missing("Missing mixpanel token")
        );
        assert_eq!(err(json!([1, 2])).0, INVALID_TASK_ARGUMENT);
        assert_eq!(
            err(
                json!({"send_mixpanel": true, "event_name": "e", "mixpanel_token": "t",
                "mixpanel_tracking_id": "u", "mixpanel_meta": "x"})
            )
            .0,
            INVALID_TASK_ARGUMENT
        );
        assert_eq!(
            err(json!({"send_ga": true, "event_name": "e", "ga_meta": [1]})).0,
            INVALID_TASK_ARGUMENT
        );
    }

    #[test]
    fn valid_arguments_are_kept() {
        let args = parse_args(&json!({
            "event_name": "page view", "send_mixpanel": true, "send_ga": false,
            "mixpanel_token": "tok", "mixpanel_tracking_id": 42,
            "mixpanel_meta": {"time": 1_700_000_000.25, "page": "x"}, "ga_meta": {"cid": "c"}
        }))
        .expect("valid");
        assert_eq!(args.event_name, "page view");
        let mp = args.mixpanel.clone().expect("mixpanel");
        assert_eq!((mp.token.expose(), mp.tracking_id.as_str()), ("tok", "42"));
        assert_eq!(mp.meta["page"], "x");
        assert_eq!(args.ga_meta, None, "send_ga is off");
        let created = DateTime::from_timestamp(1, 0).expect("time");
        assert_eq!(
            args.event_time(created).timestamp_millis(),
            1_700_000_000_250
        );
        let no_time = EventArgs {
            meta_time: None,
            ..args
        };
        assert_eq!(no_time.event_time(created), created);
    }

    #[test]
    fn errors_map_to_retryable_or_permanent_types() {
        let rejected = task_error(DeliveryError::Rejected {
            service: delivery::Service::Mixpanel,
            status: 400,
            endpoint: "/track".into(),
            text: "bad".into(),
        });
        assert_eq!(rejected.error_type, "mixpanel-rejected");
        assert!(!rejected.is_retryable());
        let busy = task_error(DeliveryError::Unavailable {
            service: delivery::Service::Ga4,
            attempts: 3,
            endpoint: "/mp/collect".into(),
            reason: "HTTP 429".into(),
            retry_after: Some(std::time::Duration::from_secs(60)),
        });
        assert_eq!(busy.error_type, "ga-unavailable");
        assert!(busy.is_retryable());
        assert_eq!(busy.retry_after, Some(std::time::Duration::from_secs(60)));
    }
}
