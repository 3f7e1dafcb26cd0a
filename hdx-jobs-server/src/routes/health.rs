//! Liveness, readiness and version.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;

/// `{"version": "...", "commit": "..."}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionResponse {
    /// The service version.
    version: String,
    /// The commit it was built from (`unknown` when the build could not tell).
    commit: String,
}

/// The service version.
#[utoipa::path(get, path = "/version", tag = "health", responses((status = 200, body = VersionResponse)))]
pub async fn version() -> Json<VersionResponse> {
    Json(VersionResponse {
        version: env!("CARGO_PKG_VERSION").into(),
        commit: env!("HDX_JOBS_COMMIT").into(),
    })
}

/// The service version (same as `/version`).
#[utoipa::path(get, path = "/about", tag = "health", responses((status = 200, body = VersionResponse)))]
pub async fn about() -> Json<VersionResponse> {
    version().await
}

/// Health state.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthResponse {
    /// `ok`, `ready` or `unavailable`.
    status: String,
    /// Why it is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = HealthResponse)))]
pub async fn healthz() -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok".into(),
        error: None,
    })
}

/// Ready when Redis answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses((status = 200, body = HealthResponse), (status = 503, body = HealthResponse))
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<HealthResponse>) {
    let ping = async {
        let mut conn = state.redis().conn().await?;
        hdx_jobs::connection::ping(&mut conn).await
    };
    match ping.await {
        Ok(()) => (
            StatusCode::OK,
            Json(HealthResponse {
                status: "ready".into(),
                error: None,
            }),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(HealthResponse {
                status: "unavailable".into(),
                error: Some(e.to_string()),
            }),
        ),
    }
}
