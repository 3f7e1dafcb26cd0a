//! Layer cleanup endpoints: drop one resource's layer, and find (and drop) layers whose CKAN
//! resource is gone. They call the library directly; nothing is enqueued.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use hdx_jobs::geo::{db, layers};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiPath, ApiQuery, ErrorBody};
use crate::AppState;

/// How long the CKAN resource list may take.
const CKAN_TIMEOUT: Duration = Duration::from_secs(120);

/// A count, or the old service's `"None"` when there is none.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Count {
    /// The count.
    Number(usize),
    /// `"None"`.
    None(String),
}

/// Answer of `delete-layers`, in the old shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeleteLayersResponse {
    /// `analysis-finished` (dry run), `successful`, or `failure`.
    state: String,
    /// What was found.
    message: String,
    /// How many layers are deletable (`"None"` on failure).
    count: Count,
    /// The deletable layers (table names).
    items: Vec<String>,
    /// Whether this was a dry run.
    #[serde(rename = "dry-run")]
    dry_run: bool,
    /// `"None"`.
    error_type: String,
    /// `"None"`, or the error's class.
    error_class: String,
    /// The error's type, on failure.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    error_kind: Option<String>,
}

/// Options of `delete-layers`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CleanupQuery {
    /// `true` to drop the layers even when they are more than `HDX_CLEANUP_MAX_SHARE` of all
    /// layers (a truncated CKAN list looks like that).
    force: Option<bool>,
}

/// Finds layers whose resource is gone from CKAN (dry run: nothing deleted).
#[utoipa::path(
    get,
    path = "/api/delete-layers",
    tag = "layers",
    responses(
        (status = 200, description = "Analysis result or failure", body = DeleteLayersResponse),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)
    )
)]
pub async fn delete_layers_default(state: State<AppState>) -> Json<DeleteLayersResponse> {
    run_cleanup(state, true, false).await
}

/// Finds layers whose resource is gone from CKAN and drops them unless `dry_run` is `true`
/// (anything but `false` counts as a dry run, as before). A run that would drop more than
/// `HDX_CLEANUP_MAX_SHARE` of the layers fails unless `force=true`.
#[utoipa::path(
    get,
    path = "/api/delete-layers/dry-run/{dry_run}",
    tag = "layers",
    params(("dry_run" = String, Path, description = "`false` to really delete"), CleanupQuery),
    responses(
        (status = 200, description = "Analysis or deletion result, or failure", body = DeleteLayersResponse),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)
    )
)]
pub async fn delete_layers(
    state: State<AppState>,
    ApiPath(dry_run): ApiPath<String>,
    ApiQuery(query): ApiQuery<CleanupQuery>,
) -> Json<DeleteLayersResponse> {
    run_cleanup(state, dry_run != "false", query.force.unwrap_or(false)).await
}

async fn run_cleanup(
    State(state): State<AppState>,
    dry_run: bool,
    force: bool,
) -> Json<DeleteLayersResponse> {
    let failure = |message: String, class: &str, kind: &str| DeleteLayersResponse {
        state: "failure".into(),
        message,
        count: Count::None("None".into()),
        items: Vec::new(),
        dry_run,
        error_type: "None".into(),
        error_class: class.into(),
        error_kind: Some(kind.into()),
    };
    let config = state.config();
    let ckan_config = config.core.ckan.clone();
    let resources =
        tokio::task::spawn_blocking(move || layers::ckan_resource_ids(&ckan_config, CKAN_TIMEOUT))
            .await
            .map_err(|e| e.to_string())
            .and_then(|ids| ids.map_err(|e| e.to_string()));
    let resources = match resources {
        Ok(ids) => ids,
        Err(e) => return Json(failure(e, "CkanInfoException", "ckan-info-problem")),
    };
    let prefix = &config.core.geopreview.table_name_prefix;
    let client = match db::connect(&config.core.gis_db).await {
        Ok(client) => client,
        Err(e) => {
            return Json(failure(
                e.to_string(),
                "FetchLayerIdsException",
                "fetch-layer-ids-problem",
            ))
        }
    };
    let options = layers::CleanupOptions {
        dry_run,
        max_share: config.core.geopreview.cleanup_max_share,
        force,
    };
    match layers::cleanup(&client, prefix, &resources, options).await {
        Ok(report) => Json(DeleteLayersResponse {
            state: if dry_run { "analysis-finished" } else { "successful" }.into(),
            message: format!(
                "Deleting {} layers from postgis out of {}. A total of {} resources was found on CKAN",
                report.deletable.len(),
                report.layers,
                report.ckan_resources
            ),
            count: Count::Number(report.deletable.len()),
            items: report.deletable,
            dry_run,
            error_type: "None".into(),
            error_class: "None".into(),
            error_kind: None,
        }),
        Err(e) => {
            let kind = match e {
                layers::CleanupError::BrokenResourceList | layers::CleanupError::TooMany { .. } => {
                    "ckan-info-problem"
                }
                layers::CleanupError::Db(_) => "fetch-layer-ids-problem",
            };
            Json(failure(e.to_string(), e.class(), kind))
        }
    }
}

/// Answer of `delete-one-layer`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeleteOneLayerResponse {
    /// `started`, or `failure`.
    state: String,
    /// `"None"`, or what went wrong.
    message: String,
    /// `"None"`.
    error_type: String,
    /// `"None"`, or the error's class.
    error_class: String,
    /// The error's type, on failure.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    error_kind: Option<String>,
}

/// Drops the layer of one resource. A missing layer is a failure in the old body shape, answered
/// 404 (the old service answered 500 for it, but nothing failed on the server's side); database
/// failures are 500 as before.
#[utoipa::path(
    post,
    path = "/api/delete-one-layer/{resource_id}",
    tag = "layers",
    params(("resource_id" = String, Path, description = "CKAN resource id")),
    responses(
        (status = 200, description = "Layer dropped", body = DeleteOneLayerResponse),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No layer for that resource", body = DeleteOneLayerResponse),
        (status = 500, description = "The database failed", body = DeleteOneLayerResponse)
    )
)]
pub async fn delete_one_layer(
    State(state): State<AppState>,
    ApiPath(resource_id): ApiPath<String>,
) -> (StatusCode, Json<DeleteOneLayerResponse>) {
    let config = state.config();
    let prefix = &config.core.geopreview.table_name_prefix;
    let failure = |status: StatusCode, message: String, class: &str| {
        (
            status,
            Json(DeleteOneLayerResponse {
                state: "failure".into(),
                message,
                error_type: "None".into(),
                error_class: class.into(),
                error_kind: Some("unknown".into()),
            }),
        )
    };
    let client = match db::connect(&config.core.gis_db).await {
        Ok(client) => client,
        Err(e) => {
            return failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                e.to_string(),
                "OperationalError",
            )
        }
    };
    match layers::drop_layer(&client, prefix, &resource_id).await {
        Ok(true) => (
            StatusCode::OK,
            Json(DeleteOneLayerResponse {
                state: "started".into(),
                message: "None".into(),
                error_type: "None".into(),
                error_class: "None".into(),
                error_kind: None,
            }),
        ),
        Ok(false) => failure(
            StatusCode::NOT_FOUND,
            format!(
                "table \"{}\" does not exist",
                layers::layer_id(prefix, &resource_id)
            ),
            "UndefinedTable",
        ),
        Err(e) => failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string(),
            "DatabaseError",
        ),
    }
}
