//! The HTTP API of hdx-jobs, thin over the `hdx-jobs` library.
//!
//! It keeps what CKAN relies on from the old service (docs/hdx-contract.md §2: same paths, methods,
//! JSON and status codes; the same jobs on the same queues), and adds health and readiness probes,
//! Prometheus `/metrics`, an operators' `/monitor`, access control ([`auth`]: closed by default off
//! loopback), and `/openapi.json` generated from the handlers. [`router`] builds the routes over an
//! [`AppState`]; [`run`] serves them on a listener until a shutdown future completes; [`serve`]
//! binds the configured address first (the shape of mini-redis: binaries only parse arguments).

pub mod auth;
pub mod config;
pub mod error;
pub mod http_metrics;
pub mod routes;
pub mod tiles;

use std::future::Future;
use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{middleware, Router};
use hdx_jobs::RedisClient;
use tokio::net::TcpListener;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use config::ServerConfig;
use error::ApiError;
use routes::{checks, enqueue, health, layers, metrics, monitor, preview, scheduler};

/// What every handler can reach. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    redis: RedisClient,
    stream_redis: RedisClient,
    config: ServerConfig,
    http_metrics: http_metrics::HttpMetrics,
    tiles: Arc<tiles::TileService>,
}

impl AppState {
    /// State over a Redis client and the configuration (no connection is made yet).
    pub fn new(redis: RedisClient, config: ServerConfig) -> Result<Self, ServeError> {
        let tiles = tiles::TileService::new(
            &config.core.gis_db,
            &config.core.geopreview.table_name_prefix,
            config.tile_cache_bytes,
            config.tile_statement_timeout,
        )
        .map_err(|e| ServeError::Config(e.to_string()))?;
        let stream_redis = RedisClient::open(&config.core.events.stream_url)
            .map_err(|e| ServeError::Config(format!("the event stream's Redis: {e}")))?;
        Ok(AppState {
            inner: Arc::new(Inner {
                redis,
                stream_redis,
                config,
                http_metrics: Default::default(),
                tiles: Arc::new(tiles),
            }),
        })
    }

    /// The tile service.
    pub fn tiles(&self) -> &tiles::TileService {
        &self.inner.tiles
    }

    /// The queue Redis.
    pub fn redis(&self) -> &RedisClient {
        &self.inner.redis
    }

    /// The event stream's Redis (often another database than the queues').
    pub fn stream_redis(&self) -> &RedisClient {
        &self.inner.stream_redis
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// This process's request metrics.
    pub fn http_metrics(&self) -> &http_metrics::HttpMetrics {
        &self.inner.http_metrics
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hdx-jobs",
        description = "Background jobs for the Humanitarian Data Exchange: the API CKAN calls, health, metrics and the monitor."
    ),
    components(schemas(error::ErrorBody))
)]
struct ApiDoc;

#[derive(OpenApi)]
#[openapi(paths(
    monitor::page,
    monitor::overview,
    monitor::job_list,
    monitor::job,
    monitor::history,
    monitor::worker,
    monitor::periodic_jobs,
    monitor::event_stream,
    monitor::requeue_job,
    monitor::delete_job,
    monitor::requeue_failed,
    monitor::empty_queue
))]
struct MonitorDoc;

/// The routes with their OpenAPI description.
fn documented_routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(enqueue::add_layer))
        .routes(routes!(enqueue::send_analytics))
        .routes(routes!(enqueue::create_change_events))
        .routes(routes!(enqueue::file_structure_check))
        .routes(routes!(layers::delete_layers_default))
        .routes(routes!(layers::delete_layers))
        .routes(routes!(layers::delete_one_layer))
        .routes(routes!(checks::run_checks))
        .routes(routes!(scheduler::add_job))
        .routes(routes!(scheduler::list_jobs))
        .routes(routes!(scheduler::delete_job))
        .routes(routes!(health::version))
        .routes(routes!(health::about))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(metrics::metrics))
        .routes(routes!(routes::tiles::tile))
        .routes(routes!(routes::tiles::legacy_tile))
        .routes(routes!(routes::tiles::tilejson))
        .routes(routes!(preview::page))
        .routes(routes!(preview::asset))
        .split_for_parts()
}

/// The OpenAPI document, with the monitor's paths under the configured `MONITOR_URL`.
pub fn openapi(config: &ServerConfig) -> utoipa::openapi::OpenApi {
    let (_, mut api) = documented_routes();
    let mut monitor_doc = MonitorDoc::openapi();
    let paths = std::mem::take(&mut monitor_doc.paths.paths);
    for (path, item) in paths {
        let rebased = format!(
            "{}{}",
            config.monitor_path,
            path.trim_start_matches("/monitor")
        );
        monitor_doc.paths.paths.insert(rebased, item);
    }
    api.merge(monitor_doc);
    describe_security(&mut api, config);
    api.paths.paths.insert(
        "/openapi.json".into(),
        utoipa::openapi::PathItem::new(
            utoipa::openapi::HttpMethod::Get,
            utoipa::openapi::path::OperationBuilder::new()
                .summary(Some("This document"))
                .tag("health")
                .response(
                    "200",
                    utoipa::openapi::ResponseBuilder::new()
                        .description("OpenAPI 3.1 document")
                        .content(
                            "application/json",
                            utoipa::openapi::ContentBuilder::new().build(),
                        ),
                ),
        ),
    );
    api
}

/// Declares how protected operations authenticate ([`auth`]): `/api/*` with the bearer token,
/// the monitor and `/metrics` with the bearer token or Basic auth (the token as password).
/// Callers in `HDX_JOBS_TRUSTED_NETWORKS` need neither, which OpenAPI cannot say.
fn describe_security(api: &mut utoipa::openapi::OpenApi, config: &ServerConfig) {
    use utoipa::openapi::security::{
        HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
    };
    let components = api.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "token",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    components.add_security_scheme(
        "basic",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
    );
    let bearer = SecurityRequirement::new("token", Vec::<String>::new());
    let basic = SecurityRequirement::new("basic", Vec::<String>::new());
    for (path, item) in api.paths.paths.iter_mut() {
        let area = auth::area(path, &axum::http::Method::GET, &config.monitor_path);
        let requirements = match area {
            auth::Area::Open => continue,
            auth::Area::Api => vec![bearer.clone()],
            auth::Area::Operators | auth::Area::MonitorAction => {
                vec![bearer.clone(), basic.clone()]
            }
        };
        for operation in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
        ]
        .into_iter()
        .flatten()
        {
            operation.security = Some(requirements.clone());
        }
    }
}

/// Every route of the service.
pub fn router(state: AppState) -> Router {
    let config = state.config().clone();
    let m = config.monitor_path.clone();
    // The OpenAPI document is written on the first request for it and kept as JSON text: built
    // at start and held as a tree (by the route and its copies), it was most of an idle server's
    // heap (~1 MB).
    let api_config = config.clone();
    let api_json: Arc<OnceLock<Bytes>> = Arc::default();
    let (documented, _) = documented_routes();
    documented
        .route(
            "/openapi.json",
            get(move || {
                let json = api_json
                    .get_or_init(|| match serde_json::to_vec(&openapi(&api_config)) {
                        Ok(json) => Bytes::from(json),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot write the OpenAPI document");
                            Bytes::new()
                        }
                    })
                    .clone();
                async move {
                    if json.is_empty() {
                        ApiError::internal("cannot write the OpenAPI document").into_response()
                    } else {
                        ([(header::CONTENT_TYPE, "application/json")], json).into_response()
                    }
                }
            }),
        )
        .route(&m, get(monitor::page))
        .route(&format!("{m}/"), get(monitor::page))
        .route(&format!("{m}/api/overview"), get(monitor::overview))
        .route(
            &format!("{m}/api/queues/{{queue}}/jobs"),
            get(monitor::job_list),
        )
        .route(&format!("{m}/api/jobs/{{id}}"), get(monitor::job))
        .route(&format!("{m}/api/history"), get(monitor::history))
        .route(&format!("{m}/api/workers/{{name}}"), get(monitor::worker))
        .route(&format!("{m}/api/periodic"), get(monitor::periodic_jobs))
        .route(&format!("{m}/api/events"), get(monitor::event_stream))
        .route(
            &format!("{m}/api/jobs/{{id}}/requeue"),
            post(monitor::requeue_job),
        )
        .route(
            &format!("{m}/api/jobs/{{id}}/delete"),
            post(monitor::delete_job),
        )
        .route(
            &format!("{m}/api/queues/{{queue}}/requeue-failed"),
            post(monitor::requeue_failed),
        )
        .route(
            &format!("{m}/api/queues/{{queue}}/empty"),
            post(monitor::empty_queue),
        )
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), auth::protect))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            http_metrics::record,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            // A bug, never input: answer it like any server error instead of dropping the connection.
            axum::response::IntoResponse::into_response(ApiError::internal("internal error"))
        }))
        .with_state(state)
}

/// Errors of the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The Redis URL is invalid.
    #[error(transparent)]
    Redis(#[from] hdx_jobs::rq::error::RqError),
    /// A setting is invalid.
    #[error("{0}")]
    Config(String),
    /// The server failed while running.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves `state` on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let config = state.config();
    let addr = listener.local_addr()?;
    auth::check_exposure(addr, &state).map_err(ServeError::Config)?;
    if config.api_token.is_none() && config.trusted_networks.is_empty() {
        tracing::warn!(%addr, "no HDX_JOBS_API_TOKEN and no HDX_JOBS_TRUSTED_NETWORKS: every endpoint is open to local callers");
    }
    tracing::info!(
        %addr,
        monitor = %config.monitor_path,
        redis = %state.redis().display_url(),
        "serving the hdx-jobs API"
    );
    let layer_changes = tokio::spawn(state.inner.tiles.clone().listen_for_changes());
    // The peer address decides whether a caller is in a trusted network.
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    layer_changes.abort();
    Ok(served?)
}

/// Binds the configured address and serves until `shutdown` completes.
pub async fn serve(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    config.core.apply_payload_settings();
    let redis = RedisClient::open(&config.core.redis_url)?;
    let addr = config.bind;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    run(listener, AppState::new(redis, config)?, shutdown).await
}
