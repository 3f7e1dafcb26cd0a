//! The report CKAN gets after every import, success or failure: `shape_info`, a JSON string
//! inside the JSON body of `{CKAN_API_BASE_URL}/{RESOURCE_UPDATE_ACTION}`.
//!
//! CKAN stores `shape_info` as text and its front end parses it later, so the string is written
//! exactly as the old service's Python `json.dumps` wrote it (keys in the old order, `", "` and
//! `": "` separators, non-ASCII as `\uXXXX`): a stored value reads the same whichever service
//! wrote it.

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::failure::Failure;
use super::metadata::Metadata;
use crate::ckan::{CkanClient, CkanError};
use crate::retry::{retry, Backoff, Limits, RetryError, Verdict};

/// The success message, and the one when invalid features were deleted.
pub fn success_message(invalid_deleted: u64) -> String {
    if invalid_deleted > 0 {
        format!("Import successful. But {invalid_deleted} invalid features were deleted")
    } else {
        "Import successful".to_string()
    }
}

/// `shape_info` of a successful import.
pub fn success(layer_id: &str, metadata: &Metadata) -> Value {
    let mut info = Map::new();
    info.insert("state".into(), json!("success"));
    info.insert(
        "message".into(),
        json!(success_message(metadata.invalid_deleted)),
    );
    info.insert("layer_id".into(), json!(layer_id));
    info.insert("error_type".into(), json!("None"));
    info.insert("error_class".into(), json!("None"));
    info.insert("bounding_box".into(), json!(metadata.bounding_box));
    info.insert(
        "layer_fields".into(),
        serde_json::to_value(&metadata.layer_fields).unwrap_or(Value::Array(Vec::new())),
    );
    Value::Object(info)
}

/// `shape_info` of a failed import.
pub fn failure(layer_id: &str, failure: &Failure) -> Value {
    let mut info = Map::new();
    info.insert("state".into(), json!("failure"));
    info.insert("message".into(), json!(failure.message));
    info.insert("layer_id".into(), json!(layer_id));
    info.insert("error_type".into(), json!("None"));
    info.insert("error_class".into(), json!(failure.class));
    info.insert("type".into(), json!(failure.kind.as_str()));
    Value::Object(info)
}

/// The body posted to CKAN.
pub fn ckan_body(resource_id: &str, shape_info: &Value) -> Value {
    json!({
        "id": resource_id,
        "shape_info": crate::python_json::dumps(shape_info),
        "batch_mode": "KEEP_OLD",
    })
}

/// How the report is retried: three POSTs in all, 1 s then 2 s apart (a CKAN restart is over
/// by then; longer outages are left to the job's RQ retry).
pub const BACKOFF: Backoff = Backoff {
    attempts: 3,
    base: Duration::from_secs(1),
    max: Duration::from_secs(30),
    jitter: false,
};

/// Posts the report; transient failures (timeouts, 429, 5xx: [`CkanError::is_transient`]) are
/// tried again as `backoff` says, but no wait ends past `deadline`. Each POST runs in
/// `spawn_blocking` (ureq blocks); the waits are async and hold no thread.
pub async fn post(
    ckan: &CkanClient,
    action: &str,
    resource_id: &str,
    shape_info: &Value,
    backoff: &Backoff,
    deadline: Option<Instant>,
) -> Result<Value, CkanError> {
    let body = ckan_body(resource_id, shape_info);
    let limits = Limits {
        deadline,
        ..Limits::default()
    };
    let posted = retry(
        backoff,
        limits,
        |_| {
            let (ckan, action, body) = (ckan.clone(), action.to_string(), body.clone());
            async move {
                tokio::task::spawn_blocking({
                    let action = action.clone();
                    move || ckan.post(&action, &body)
                })
                .await
                .unwrap_or_else(|e| {
                    Err(CkanError::Transport {
                        action,
                        message: format!("the thread of the call failed: {e}"),
                    })
                })
            }
        },
        |e| {
            if e.is_transient() {
                Verdict::RETRY
            } else {
                Verdict::Fail
            }
        },
        |e, _| tracing::warn!(error = %e, resource_id, "reporting to CKAN failed, trying again"),
    )
    .await;
    posted.map_err(|e| match e {
        RetryError::Failed { error, .. } => error,
        // Not asked for (no cancellation token), so not expected.
        RetryError::Cancelled { .. } => CkanError::Transport {
            action: action.to_string(),
            message: "cancelled".into(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CkanConfig, Env};
    use crate::geo::metadata::LayerField;
    use testkit::http::{FakeServer, Reply};

    fn client(server: &FakeServer) -> CkanClient {
        let url = server.url();
        let lookup = move |name: &str| (name == "CKAN_API_BASE_URL").then(|| url.clone());
        let config = CkanConfig::from_env(&Env::new(&lookup)).expect("config");
        CkanClient::new(&config, None, Duration::from_secs(5)).expect("client")
    }

    /// [`BACKOFF`]'s attempts, with waits of milliseconds.
    const FAST: Backoff = Backoff {
        base: Duration::from_millis(10),
        max: Duration::from_millis(20),
        ..BACKOFF
    };

    #[tokio::test]
    async fn transient_failures_are_posted_again_up_to_three_times() {
        let server = FakeServer::start();
        server.reply_once("/act", Reply::status(503));
        server.reply_once("/act", Reply::status(429));
        server.reply("/act", Reply::json(json!({"success": true})));
        let answer = post(&client(&server), "act", "r-1", &json!({}), &FAST, None)
            .await
            .expect("posted on the third attempt");
        assert_eq!(answer["success"], true);
        assert_eq!(server.requests_to("/act").len(), 3);

        let down = FakeServer::start();
        down.reply("/act", Reply::status(502));
        let err = post(&client(&down), "act", "r-1", &json!({}), &FAST, None)
            .await
            .expect_err("down");
        assert!(err.is_transient(), "{err}");
        assert_eq!(down.requests_to("/act").len(), 3, "BACKOFF: three in all");
    }

    #[tokio::test]
    async fn refusals_and_a_near_deadline_stop_at_the_first_attempt() {
        let server = FakeServer::start();
        server.reply("/act", Reply::status(403));
        let err = post(&client(&server), "act", "r-1", &json!({}), &FAST, None)
            .await
            .expect_err("403");
        assert!(!err.is_transient(), "{err}");
        assert_eq!(server.requests_to("/act").len(), 1);

        let down = FakeServer::start();
        down.reply("/act", Reply::status(503));
        let deadline = Some(Instant::now() + Duration::from_millis(5));
        let slow = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(1),
            ..FAST
        };
        post(&client(&down), "act", "r-1", &json!({}), &slow, deadline)
            .await
            .expect_err("no time for a retry");
        assert_eq!(down.requests_to("/act").len(), 1);
    }

    #[test]
    fn shape_info_is_written_like_python() {
        let metadata = Metadata {
            bounding_box: "BOX(2.5 49.5,6.1 51.4)".into(),
            layer_fields: vec![
                LayerField {
                    field_name: "ogc_fid".into(),
                    data_type: "integer".into(),
                },
                LayerField {
                    field_name: "nom_é".into(),
                    data_type: "character varying".into(),
                },
            ],
            invalid_deleted: 2,
        };
        assert_eq!(
            crate::python_json::dumps(&success("pre_x", &metadata)),
            "{\"state\": \"success\", \"message\": \"Import successful. But 2 invalid features \
             were deleted\", \"layer_id\": \"pre_x\", \"error_type\": \"None\", \"error_class\": \
             \"None\", \"bounding_box\": \"BOX(2.5 49.5,6.1 51.4)\", \"layer_fields\": \
             [{\"field_name\": \"ogc_fid\", \"data_type\": \"integer\"}, {\"field_name\": \
             \"nom_\\u00e9\", \"data_type\": \"character varying\"}]}"
        );
        let f = Failure::too_large("response too large");
        assert_eq!(
            crate::python_json::dumps(&failure("pre_x", &f)),
            "{\"state\": \"failure\", \"message\": \"response too large\", \"layer_id\": \
             \"pre_x\", \"error_type\": \"None\", \"error_class\": \"FileTooLargeException\", \
             \"type\": \"file-too-large\"}"
        );
    }
}
