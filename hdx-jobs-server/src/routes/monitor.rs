//! `/monitor` (path from `MONITOR_URL`): a dashboard for operators in the spirit of
//! rq-dashboard (queues with their registries, workers, jobs with paging, a job's arguments and
//! result or error; requeue, delete, empty), refreshing itself, and the JSON API behind it.
//! Access is [`crate::auth`]'s: the token or a trusted network, and for actions the monitor
//! page's header.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Html;
use axum::Json;
use hdx_jobs::events::stats;
use hdx_jobs::rq::browse::{self, Filter, JobList};
use hdx_jobs::rq::error::RqError;
use hdx_jobs::rq::job::JobStatus;
use hdx_jobs::rq::queue::{is_valid_queue_name, Queue};
use hdx_jobs::rq::scheduler::periodic;
use hdx_jobs::rq::{history, info, jobs};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiPath, ApiQuery, ErrorBody};
use crate::AppState;

const PAGE: &str = include_str!("../../assets/monitor.html");

/// The dashboard page.
#[utoipa::path(get, path = "/monitor", tag = "monitor", responses((status = 200, description = "HTML page", body = String, content_type = "text/html")))]
pub async fn page(State(state): State<AppState>) -> Html<String> {
    Html(PAGE.replace("__MONITOR_PATH__", &state.config().monitor_path))
}

fn rq_error(e: RqError) -> ApiError {
    match e {
        RqError::NoSuchJob(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "NoSuchJobError", e.to_string())
        }
        RqError::Refused(_) => {
            ApiError::new(StatusCode::CONFLICT, "InvalidJobOperation", e.to_string())
        }
        RqError::InvalidQueueName(_) | RqError::InvalidJobId(_) | RqError::InvalidArgument(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "BadRequest", e.to_string())
        }
        other => ApiError::internal(other),
    }
}

/// Queues and workers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Overview {
    /// Every queue with its counts per registry.
    #[schema(value_type = Vec<Object>)]
    queues: Vec<info::QueueSummary>,
    /// Every live worker.
    #[schema(value_type = Vec<Object>)]
    workers: Vec<info::WorkerSummary>,
}

/// Queues with counts per registry, and workers with state and current job.
#[utoipa::path(
    get,
    path = "/monitor/api/overview",
    tag = "monitor",
    responses((status = 200, body = Overview), (status = 500, body = ErrorBody))
)]
pub async fn overview(State(state): State<AppState>) -> Result<Json<Overview>, ApiError> {
    let redis = state.redis();
    let (queues, workers) =
        tokio::try_join!(info::queues(redis), info::workers(redis)).map_err(rq_error)?;
    Ok(Json(Overview { queues, workers }))
}

/// Paging and filters of a job list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobListQuery {
    /// `queued` (default) or a registry: started (or wip), finished, failed, deferred,
    /// scheduled, canceled.
    #[param(pattern = "^(queued|started|wip|finished|failed|deferred|scheduled|canceled)$")]
    registry: Option<String>,
    /// Page, from 1.
    #[param(minimum = 1, maximum = 10000000)]
    page: Option<u64>,
    /// Jobs per page (default 20).
    #[param(minimum = 1, maximum = 200)]
    per_page: Option<u64>,
    /// Only jobs of this task (wire name, e.g. `hdx_jobs.create_preview`).
    #[param(max_length = 200)]
    task: Option<String>,
    /// Only jobs with this status.
    #[param(
        pattern = "^(created|queued|started|finished|failed|deferred|scheduled|stopped|canceled)$"
    )]
    status: Option<String>,
}

/// One row of a job list.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobRow {
    /// Job id.
    id: String,
    /// Status (`missing` when the hash is gone).
    status: String,
    /// Task wire name.
    func_name: Option<String>,
    /// Description.
    description: Option<String>,
    /// When it was created.
    created_at: Option<String>,
    /// When it ended.
    ended_at: Option<String>,
    /// The error's last line, for failed jobs.
    error: Option<String>,
}

/// A page of jobs.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobPage {
    /// The queue.
    queue: String,
    /// The registry (or `queued`).
    registry: String,
    /// Jobs in that list.
    total: u64,
    /// With a filter: jobs matching it among those looked at.
    matched: Option<u64>,
    /// With a filter: jobs looked at (the first 10,000 of the list at most).
    scanned: Option<u64>,
    /// This page.
    page: u64,
    /// Page size.
    per_page: u64,
    /// The jobs.
    jobs: Vec<JobRow>,
}

/// Jobs of a queue or one of its registries, paged.
#[utoipa::path(
    get,
    path = "/monitor/api/queues/{queue}/jobs",
    tag = "monitor",
    params(("queue" = String, Path, description = "Queue name", pattern = r"^[A-Za-z0-9_.\-]{1,200}$"), JobListQuery),
    responses((status = 200, body = JobPage), (status = 400, body = ErrorBody), (status = 500, body = ErrorBody))
)]
pub async fn job_list(
    State(state): State<AppState>,
    ApiPath(queue): ApiPath<String>,
    ApiQuery(query): ApiQuery<JobListQuery>,
) -> Result<Json<JobPage>, ApiError> {
    let per_page = query.per_page.unwrap_or(20);
    let page = query.page.unwrap_or(1);
    if !(1..=200).contains(&per_page) || !(1..=10_000_000).contains(&page) {
        return Err(ApiError::bad_request(
            "page must be 1 to 10000000 and per_page 1 to 200",
        ));
    }
    let offset = (page - 1) * per_page;
    let list_name = query.registry.unwrap_or_else(|| "queued".into());
    let list = JobList::parse(&list_name)
        .ok_or_else(|| ApiError::bad_request(format!("unknown registry {list_name:?}")))?;
    let status = match query.status.as_deref() {
        Some(s) => Some(
            JobStatus::parse(s)
                .ok_or_else(|| ApiError::bad_request(format!("unknown status {s:?}")))?,
        ),
        None => None,
    };
    let filter = Filter {
        task: query.task.filter(|t| !t.is_empty()),
        status,
    };
    if filter.task.as_ref().is_some_and(|t| t.len() > 200) {
        return Err(ApiError::bad_request("task is at most 200 characters"));
    }
    if !is_valid_queue_name(&queue) {
        return Err(rq_error(RqError::InvalidQueueName(queue)));
    }
    let found = browse::page(state.redis(), &queue, list, &filter, offset, per_page)
        .await
        .map_err(rq_error)?;
    let jobs = found
        .jobs
        .into_iter()
        .map(|(id, view)| match view {
            Some(view) => JobRow {
                error: view
                    .latest_result
                    .as_ref()
                    .and_then(|r| r.exc_string.as_deref())
                    .and_then(|t| t.trim_end().lines().last())
                    .map(str::to_string),
                id: view.id,
                status: view.status.to_string(),
                func_name: view.func_name,
                description: view.description,
                created_at: view.created_at,
                ended_at: view.ended_at,
            },
            None => JobRow {
                id,
                status: "missing".into(),
                func_name: None,
                description: None,
                created_at: None,
                ended_at: None,
                error: None,
            },
        })
        .collect();
    Ok(Json(JobPage {
        queue,
        registry: list.name().to_string(),
        total: found.total,
        matched: found.matched,
        scanned: found.scanned,
        page,
        per_page,
        jobs,
    }))
}

/// A job: status, arguments, result or error.
#[utoipa::path(
    get,
    path = "/monitor/api/jobs/{id}",
    tag = "monitor",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody), (status = 500, body = ErrorBody))
)]
pub async fn job(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let view = jobs::view(state.redis(), &id)
        .await
        .map_err(rq_error)?
        .ok_or_else(|| rq_error(RqError::NoSuchJob(id)))?;
    // A geopreview job links to its layer's map.
    let preview_url = (view.func_name.as_deref() == Some(hdx_jobs::hdx::wire::CREATE_PREVIEW))
        .then(|| {
            view.args
                .as_ref()?
                .first()?
                .get("resource_id")?
                .as_str()
                .map(str::to_string)
        })
        .flatten()
        .map(|resource| {
            let prefix = &state.config().core.geopreview.table_name_prefix;
            format!(
                "/preview/{}",
                hdx_jobs::geo::layers::layer_id(prefix, &resource)
            )
        });
    let mut value = serde_json::to_value(view).map_err(ApiError::internal)?;
    if let (Some(url), Some(object)) = (preview_url, value.as_object_mut()) {
        object.insert("preview_url".into(), Value::String(url));
    }
    Ok(Json(value))
}

/// The header every monitor action must carry ([`crate::auth::MONITOR_ACTION_HEADER`]).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct MonitorHeader {
    /// Any value: the monitor page sends it, which no cross-site form can.
    #[param(rename = "X-HDX-Jobs-Monitor")]
    #[allow(dead_code)]
    x_hdx_jobs_monitor: String,
}

/// Result of an action.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionResult {
    /// Always true.
    ok: bool,
    /// How many jobs the action touched.
    count: u64,
}

/// Requeues a failed job.
#[utoipa::path(
    post,
    path = "/monitor/api/jobs/{id}/requeue",
    tag = "monitor",
    params(("id" = String, Path, description = "Job id"), MonitorHeader),
    responses(
        (status = 200, body = ActionResult),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Not from the monitor page, or cross-site", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
        (status = 500, body = ErrorBody)
    )
)]
pub async fn requeue_job(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ActionResult>, ApiError> {
    jobs::requeue(state.redis(), &id).await.map_err(rq_error)?;
    Ok(Json(ActionResult { ok: true, count: 1 }))
}

/// Deletes a job.
#[utoipa::path(
    post,
    path = "/monitor/api/jobs/{id}/delete",
    tag = "monitor",
    params(("id" = String, Path, description = "Job id"), MonitorHeader),
    responses(
        (status = 200, body = ActionResult),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Not from the monitor page, or cross-site", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 500, body = ErrorBody)
    )
)]
pub async fn delete_job(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ActionResult>, ApiError> {
    jobs::delete(state.redis(), &id).await.map_err(rq_error)?;
    Ok(Json(ActionResult { ok: true, count: 1 }))
}

/// Requeues every failed job of a queue.
#[utoipa::path(
    post,
    path = "/monitor/api/queues/{queue}/requeue-failed",
    tag = "monitor",
    params(("queue" = String, Path, description = "Queue name", pattern = r"^[A-Za-z0-9_.\-]{1,200}$"), MonitorHeader),
    responses((status = 200, body = ActionResult), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, description = "Not from the monitor page, or cross-site", body = ErrorBody), (status = 500, body = ErrorBody))
)]
pub async fn requeue_failed(
    State(state): State<AppState>,
    ApiPath(queue): ApiPath<String>,
) -> Result<Json<ActionResult>, ApiError> {
    let count = Queue::new(state.redis().clone(), queue)
        .map_err(rq_error)?
        .requeue_failed()
        .await
        .map_err(rq_error)?;
    Ok(Json(ActionResult { ok: true, count }))
}

/// Deletes every waiting job of a queue.
#[utoipa::path(
    post,
    path = "/monitor/api/queues/{queue}/empty",
    tag = "monitor",
    params(("queue" = String, Path, description = "Queue name", pattern = r"^[A-Za-z0-9_.\-]{1,200}$"), MonitorHeader),
    responses((status = 200, body = ActionResult), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, description = "Not from the monitor page, or cross-site", body = ErrorBody), (status = 500, body = ErrorBody))
)]
pub async fn empty_queue(
    State(state): State<AppState>,
    ApiPath(queue): ApiPath<String>,
) -> Result<Json<ActionResult>, ApiError> {
    let count = Queue::new(state.redis().clone(), queue)
        .map_err(rq_error)?
        .empty()
        .await
        .map_err(rq_error)?;
    Ok(Json(ActionResult { ok: true, count }))
}

/// The history's window.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Minutes back from now (default 180, at most 1440).
    #[param(minimum = 1, maximum = 1440)]
    minutes: Option<u32>,
    /// Only this queue.
    #[param(pattern = r"^[A-Za-z0-9_.\-]{1,200}$")]
    queue: Option<String>,
}

/// Jobs finished, failed, retried, stopped, abandoned and interrupted per minute, as recorded by
/// hdx-jobs workers (a day is kept).
#[utoipa::path(
    get,
    path = "/monitor/api/history",
    tag = "monitor",
    params(HistoryQuery),
    responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 500, body = ErrorBody))
)]
pub async fn history(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Json<history::History>, ApiError> {
    let minutes = query.minutes.unwrap_or(180);
    if let Some(q) = query.queue.as_deref().filter(|q| !is_valid_queue_name(q)) {
        return Err(rq_error(RqError::InvalidQueueName(q.to_string())));
    }
    history::read(state.redis(), minutes, query.queue.as_deref())
        .await
        .map(Json)
        .map_err(rq_error)
}

/// A worker: host, pid, queues, concurrency, heartbeat, and the jobs it runs now.
#[utoipa::path(
    get,
    path = "/monitor/api/workers/{name}",
    tag = "monitor",
    params(("name" = String, Path, description = "Worker name")),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody), (status = 500, body = ErrorBody))
)]
pub async fn worker(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<info::WorkerDetail>, ApiError> {
    info::worker(state.redis(), &name)
        .await
        .map_err(rq_error)?
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "NoSuchWorker",
                format!("no live worker {name:?}"),
            )
        })
}

/// Periodic jobs with their next due time.
#[utoipa::path(
    get,
    path = "/monitor/api/periodic",
    tag = "monitor",
    responses((status = 200, body = Vec<Object>), (status = 500, body = ErrorBody))
)]
pub async fn periodic_jobs(
    State(state): State<AppState>,
) -> Result<Json<Vec<periodic::ScheduledPeriodic>>, ApiError> {
    let mut conn = state.redis().conn().await.map_err(rq_error)?;
    periodic::list(&mut conn).await.map(Json).map_err(rq_error)
}

/// Newest events shown by the monitor.
const LATEST_EVENTS: usize = 10;

/// The event stream: length, consumer groups and the last events.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventStreamView {
    /// The stream's name.
    stream: String,
    /// Length and consumer groups.
    #[schema(value_type = Object)]
    stats: stats::StreamStats,
    /// The newest events, newest first.
    #[schema(value_type = Vec<Object>)]
    latest: Vec<stats::StreamEntry>,
}

/// The change-event stream: its length, each consumer group's pending events and lag, and the
/// newest events.
#[utoipa::path(
    get,
    path = "/monitor/api/events",
    tag = "monitor",
    responses((status = 200, body = EventStreamView), (status = 503, body = ErrorBody))
)]
pub async fn event_stream(
    State(state): State<AppState>,
) -> Result<Json<EventStreamView>, ApiError> {
    let stream = state.config().core.events.stream_name.clone();
    let redis = state.stream_redis();
    let read = async {
        tokio::try_join!(
            stats::stream_stats(redis, &stream),
            stats::latest_entries(redis, &stream, LATEST_EVENTS)
        )
    };
    let unavailable = |message: String| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "EventStreamUnavailable",
            message,
        )
    };
    let (stats, mut latest) = tokio::time::timeout(super::metrics::STREAM_READ_TIMEOUT, read)
        .await
        .map_err(|_| unavailable("the event stream's Redis did not answer in time".into()))?
        .map_err(|e| unavailable(e.to_string()))?;
    for entry in &mut latest {
        hdx_jobs::secret::redact_value(&mut entry.body);
    }
    Ok(Json(EventStreamView {
        stream,
        stats,
        latest,
    }))
}
