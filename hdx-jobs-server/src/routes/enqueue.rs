//! The endpoints CKAN calls to start work: each validates its request, then enqueues the old
//! service's task under the same wire name, on the same queue, with the same argument dict, so
//! Python workers could run it and ours run what the old API enqueued.

use axum::extract::State;
use axum::Json;
use hdx_jobs::hdx::wire;
use hdx_jobs::rq::queue::{JobSpec, Queue, Retry};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::{IntoParams, ToSchema};

use crate::error::{
    AnyObject, ApiError, ApiPath, ApiQuery, CheckedJson, ErrorBody, JsonBodyErrors,
};
use crate::AppState;

/// Enqueues one job with the old call shape: one positional argument, the dict (`spec` holds
/// it, as a value or as the request body's JSON text). Every job gets
/// RQ retries (the old API gave none): each task fails as retryable only when something outside
/// is down (CKAN, the stream Redis, Mixpanel, the HXL proxy), and each is safe to run again
/// (geopreview imports into a staging table and swaps it in, file-structure checks post the same
/// result again, events are pushed once per job, Mixpanel deduplicates by `$insert_id`).
async fn enqueue(state: &AppState, queue: &str, spec: JobSpec) -> Result<String, ApiError> {
    let handle = Queue::new(state.redis().clone(), queue)
        .map_err(ApiError::internal)?
        .with_default_timeout(state.config().core.job_timeout);
    let spec = spec.retry(Retry::new(3).intervals(vec![10, 60, 300]));
    handle.enqueue(spec).await.map_err(ApiError::internal)
}

/// Answer of `add-layer`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AddLayerResponse {
    /// `processing`, or `failure`.
    state: String,
    /// What happened.
    message: String,
    /// Always `"None"` here (the layer id comes with the CKAN report).
    layer_id: String,
    /// `"None"`, or `transformation-init-problem`.
    error_type: String,
    /// `"None"`, or the error's class.
    error_class: String,
}

/// Query of `add-layer`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AddLayerQuery {
    /// The URL of the GIS file.
    resource_download_url: Option<String>,
    /// CKAN's url type (default `api`).
    url_type: Option<String>,
}

/// Starts a geopreview import of a resource. A missing download URL is answered with state
/// `failure` and HTTP 200, as the old service did.
#[utoipa::path(
    get,
    path = "/api/add-layer/dataset/{dataset_id}/resource/{resource_id}",
    tag = "geopreview",
    params(
        ("dataset_id" = String, Path, description = "CKAN dataset id"),
        ("resource_id" = String, Path, description = "CKAN resource id"),
        AddLayerQuery
    ),
    responses(
        (status = 200, description = "Import enqueued, or refused (state failure)", body = AddLayerResponse),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)
    )
)]
pub async fn add_layer(
    State(state): State<AppState>,
    ApiPath((dataset_id, resource_id)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<AddLayerQuery>,
) -> Json<AddLayerResponse> {
    let processing = AddLayerResponse {
        state: "processing".into(),
        message: "The processing of the geo-preview has started".into(),
        layer_id: "None".into(),
        error_type: "None".into(),
        error_class: "None".into(),
    };
    let failure = |message: String, class: &str| AddLayerResponse {
        state: "failure".into(),
        message,
        layer_id: "None".into(),
        error_type: crate::error::DEFAULT_ERROR_TYPE.into(),
        error_class: class.into(),
    };
    let Some(download_url) = query.resource_download_url.filter(|u| !u.is_empty()) else {
        return Json(failure(
            "Url missing or has a problem".into(),
            "MissingUrlException",
        ));
    };
    let config = state.config();
    let geo = &config.core.geopreview;
    let ckan = &config.core.ckan;
    let dict = json!({
        "dataset_id": dataset_id,
        "resource_id": resource_id,
        "download_url": download_url,
        "url_type": query.url_type.unwrap_or_else(|| "api".into()),
        "download_chunk_size": geo.download_chunk_size_mb * 1024 * 1024,
        // The old service's name; the value is in bytes.
        "max_file_size_mb": geo.max_file_size_mb * 1024 * 1024,
        "timeout_sec": geo.timeout_sec,
        "ckan_api_base_url": ckan.api_base_url,
        "resource_update_action": ckan.resource_update_action,
        "gis_api_pattern": geo.gis_api_pattern,
        "table_name_prefix": geo.table_name_prefix,
        "tmp_download_directory": geo.tmp_dir,
        "ckan_server_url": ckan.domain,
        "verify_ckan_ssl": ckan.verify_ssl,
        "hdx_user_agent": ckan.user_agent,
    });
    match enqueue(
        &state,
        wire::GEO_QUEUE,
        JobSpec::new(wire::CREATE_PREVIEW).arg(dict),
    )
    .await
    {
        Ok(_) => Json(processing),
        Err(e) => Json(failure(e.body.message, "ConnectionError")),
    }
}

/// What `send-analytics` checks of its body before enqueueing it unchanged.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AnalyticsRequest {
    /// The event's name.
    #[schema(min_length = 1, pattern = r"\S")]
    pub event_name: String,
    /// Send to Mixpanel.
    #[serde(default)]
    pub send_mixpanel: Option<bool>,
    /// Send to Google Analytics.
    #[serde(default)]
    pub send_ga: Option<bool>,
    /// Mixpanel project token.
    #[serde(default)]
    pub mixpanel_token: Option<String>,
    /// Mixpanel distinct id.
    #[serde(default)]
    pub mixpanel_tracking_id: Option<String>,
    /// Mixpanel event properties.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub mixpanel_meta: Option<Map<String, Value>>,
    /// Google Analytics fields.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub ga_meta: Option<Map<String, Value>>,
}

/// `{"success": true}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SuccessResponse {
    /// Always true.
    success: bool,
}

/// Enqueues an analytics event on `analytics_q`.
#[utoipa::path(
    post,
    path = "/api/send-analytics",
    tag = "analytics",
    request_body = AnalyticsRequest,
    responses(
        (status = 200, description = "Event enqueued", body = SuccessResponse),
        JsonBodyErrors,
        (status = 500, description = "Redis unavailable", body = ErrorBody)
    )
)]
pub async fn send_analytics(
    State(state): State<AppState>,
    body: CheckedJson<AnalyticsRequest>,
) -> Result<Json<SuccessResponse>, ApiError> {
    if body.typed.event_name.trim().is_empty() {
        return Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "BadRequest",
            "422 Unprocessable Entity: Missing event name",
        ));
    }
    let spec = JobSpec::new(wire::SEND_EVENT).json_arg(body.text);
    enqueue(&state, wire::ANALYTICS_QUEUE, spec).await?;
    Ok(Json(SuccessResponse { success: true }))
}

/// What `create-change-events` checks of its body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChangeEventsRequest {
    /// Who made the change.
    pub username: String,
    /// The dataset before (`null` for a new dataset).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub old_dataset_dict: Option<AnyObject>,
    /// The dataset after.
    #[schema(value_type = Object)]
    pub new_dataset_dict: AnyObject,
}

/// `{"state": "success"}` or `{"state": "failure", "message": ...}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StateResponse {
    /// `success` or `failure`.
    state: String,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

/// Enqueues change detection for a dataset edit on `event_q` (only when `EVENTS_API_ENABLED` is
/// `true`; otherwise the request is checked and acknowledged, as before).
#[utoipa::path(
    post,
    path = "/api/create-change-events",
    tag = "events",
    request_body = ChangeEventsRequest,
    responses(
        (status = 200, description = "Enqueued (or events disabled), or failure", body = StateResponse),
        JsonBodyErrors
    )
)]
pub async fn create_change_events(
    State(state): State<AppState>,
    body: CheckedJson<ChangeEventsRequest>,
) -> Json<StateResponse> {
    if !state.config().events_api_enabled {
        return Json(StateResponse {
            state: "success".into(),
            message: None,
        });
    }
    let spec = JobSpec::new(wire::DETECT_CHANGES).json_arg(body.text);
    match enqueue(&state, wire::EVENT_QUEUE, spec).await {
        Ok(_) => Json(StateResponse {
            state: "success".into(),
            message: None,
        }),
        Err(e) => Json(StateResponse {
            state: "failure".into(),
            message: Some(e.body.message),
        }),
    }
}

/// What `file-structure-check` checks of its body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct FsCheckRequest {
    /// The HXL proxy's source-info URL of the resource (not blank).
    #[serde(deserialize_with = "not_blank")]
    #[schema(pattern = r"\S")]
    pub hxl_proxy_source_info_url: String,
    /// The resource's previous checks: CKAN's JSON string, or the list itself.
    #[serde(default)]
    pub fs_check_info: Option<FsCheckInfo>,
}

/// A resource's previous file-structure checks, as CKAN keeps them.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum FsCheckInfo {
    /// CKAN's JSON text of the list.
    Text(String),
    /// The list of checks.
    List(Vec<CheckRecord>),
}

/// One previous check (`{state, message, timestamp, hxl_proxy_response, ...}`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(value_type = Object)]
pub struct CheckRecord(Map<String, Value>);

fn not_blank<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    if text.trim().is_empty() {
        return Err(serde::de::Error::custom("must not be blank"));
    }
    Ok(text)
}

/// Enqueues a file-structure check of a resource on `fs_check_q`.
#[utoipa::path(
    post,
    path = "/api/file-structure-check/dataset/{dataset_id}/resource/{resource_id}",
    tag = "file structure",
    params(
        ("dataset_id" = String, Path, description = "CKAN dataset id"),
        ("resource_id" = String, Path, description = "CKAN resource id")
    ),
    request_body = FsCheckRequest,
    responses(
        (status = 200, description = "Check enqueued", body = SuccessResponse),
        JsonBodyErrors,
        (status = 500, description = "Redis unavailable", body = ErrorBody)
    )
)]
pub async fn file_structure_check(
    State(state): State<AppState>,
    ApiPath((dataset_id, resource_id)): ApiPath<(String, String)>,
    body: CheckedJson<FsCheckRequest>,
) -> Result<Json<SuccessResponse>, ApiError> {
    let config = state.config();
    let ckan = &config.core.ckan;
    let dict = json!({
        "dataset_id": dataset_id,
        "resource_id": resource_id,
        "hxl_proxy_source_info_url": body.typed.hxl_proxy_source_info_url,
        "ckan_api_base_url": ckan.api_base_url,
        "resource_update_action": ckan.fs_check_revise_action,
        "verify_ckan_ssl": ckan.verify_ssl,
        "hdx_user_agent": ckan.user_agent,
        "fs_check_info": body.typed.fs_check_info,
    });
    enqueue(
        &state,
        wire::FS_CHECK_QUEUE,
        JobSpec::new(wire::FS_CHECK).arg(dict),
    )
    .await?;
    Ok(Json(SuccessResponse { success: true }))
}
