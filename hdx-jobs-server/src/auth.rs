//! Optional bearer-token protection of the API and of the monitor's actions
//! (`HDX_JOBS_API_TOKEN`). Without a token the API stays open, as the old service was.

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::AppState;

/// Which requests need the token: everything under `/api/`, and the monitor's API calls that
/// change something (anything but GET/HEAD).
pub fn needs_token(path: &str, method: &Method, monitor_path: &str) -> bool {
    if path.starts_with("/api/") {
        return true;
    }
    let monitor_api = format!("{monitor_path}/api/");
    path.starts_with(&monitor_api) && method != Method::GET && method != Method::HEAD
}

/// The middleware.
pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let config = state.config();
    let Some(token) = &config.api_token else {
        return next.run(request).await;
    };
    if !needs_token(request.uri().path(), request.method(), &config.monitor_path) {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.expose().as_bytes())) {
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "401 Unauthorized: a valid bearer token is required",
        )
        .into_response()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_protected() {
        assert!(needs_token(
            "/api/send-analytics",
            &Method::POST,
            "/monitor"
        ));
        assert!(needs_token("/api/delete-layers", &Method::GET, "/monitor"));
        assert!(needs_token(
            "/monitor/api/jobs/x/requeue",
            &Method::POST,
            "/monitor"
        ));
        assert!(!needs_token(
            "/monitor/api/overview",
            &Method::GET,
            "/monitor"
        ));
        assert!(!needs_token("/monitor", &Method::GET, "/monitor"));
        assert!(!needs_token("/healthz", &Method::GET, "/monitor"));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
    }
}
