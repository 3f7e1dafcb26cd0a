//! The report CKAN gets after every import, success or failure: `shape_info`, a JSON string
//! inside the JSON body of `{CKAN_API_BASE_URL}/{RESOURCE_UPDATE_ACTION}`.
//!
//! CKAN stores `shape_info` as text and its front end parses it later, so the string is written
//! exactly as the old service's Python `json.dumps` wrote it (keys in the old order, `", "` and
//! `": "` separators, non-ASCII as `\uXXXX`): a stored value reads the same whichever service
//! wrote it.

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::failure::Failure;
use super::metadata::Metadata;
use crate::ckan::{CkanClient, CkanError};

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

/// Posts the report; transient failures (timeouts, 429, 5xx) are tried again up to `attempts`
/// times in all, waiting 1 s, 2 s, 4 s..., but not past `deadline`. Blocking: call from
/// `spawn_blocking`.
pub fn post(
    ckan: &CkanClient,
    action: &str,
    resource_id: &str,
    shape_info: &Value,
    attempts: u32,
    deadline: Option<std::time::Instant>,
) -> Result<Value, CkanError> {
    let body = ckan_body(resource_id, shape_info);
    let mut wait = Duration::from_secs(1);
    let mut tries = 0;
    loop {
        tries += 1;
        match ckan.post(action, &body) {
            Ok(answer) => return Ok(answer),
            Err(e)
                if e.is_transient()
                    && tries < attempts
                    && deadline.is_none_or(|d| std::time::Instant::now() + wait < d) =>
            {
                tracing::warn!(error = %e, resource_id, "reporting to CKAN failed, trying again");
                std::thread::sleep(wait);
                wait *= 2;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::metadata::LayerField;

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
