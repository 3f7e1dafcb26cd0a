//! The HTTP API of hdx-jobs, a thin layer over the `hdx-jobs` library.
//!
//! For now it answers the health and version endpoints; CKAN's endpoints arrive with the HTTP
//! API issue. [`router`] builds the routes over an [`AppState`]; [`serve`] binds and runs them
//! until the shutdown future completes (the mini-redis shape: the binary only parses arguments).

use std::future::Future;
use std::net::SocketAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use hdx_jobs::RedisClient;
use serde_json::{json, Value};

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The queue Redis.
    pub redis: RedisClient,
}

/// The service's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/version", get(version))
        .route("/about", get(version))
        .with_state(state)
}

async fn version() -> Json<Value> {
    Json(json!({"version": env!("CARGO_PKG_VERSION")}))
}

/// Ready when Redis answers.
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let ping = async {
        let mut conn = state.redis.conn().await.map_err(|e| e.to_string())?;
        redis_ping(&mut conn).await
    };
    match ping.await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ready"}))),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "error": e})),
        ),
    }
}

async fn redis_ping(conn: &mut hdx_jobs::connection::PooledConnection) -> Result<(), String> {
    hdx_jobs::connection::ping(conn)
        .await
        .map_err(|e| e.to_string())
}

/// Errors of the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Binds `addr` and serves until `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    tracing::info!(addr = %listener.local_addr()?, "serving HTTP");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
