//! The scheduler endpoints of the old API: schedule a CKAN API call after a delay, list what
//! waits, and (new) delete a scheduled call.
//!
//! Calls are scheduled with RQ's built-in scheduler (`rq:scheduled:default_scheduler_q`), which
//! `hdx-jobs scheduler` (or any worker `--with-scheduler`) promotes. Calls the old service left
//! in the rq-scheduler package's set are listed and deletable too, and are still enqueued at
//! their time by `hdx-jobs scheduler`.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use hdx_jobs::hdx::wire;
use hdx_jobs::rq::job::Job;
use hdx_jobs::rq::queue::{JobSpec, Queue};
use hdx_jobs::rq::registry::Registry;
use hdx_jobs::rq::scheduler::legacy;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiPath, CheckedJson, ErrorBody, JsonBodyErrors};
use crate::AppState;

/// What `add_job` checks of its body (the body itself goes to the job as `task_args`).
#[derive(Debug, Deserialize, ToSchema)]
pub struct AddJobRequest {
    /// The CKAN action to call.
    pub action: String,
    /// `post` for a JSON POST with the API key; anything else for a GET.
    #[serde(default)]
    pub method: Option<String>,
    /// Delay, minutes part.
    #[serde(default)]
    pub sch_minutes: Option<f64>,
    /// Delay, hours part.
    #[serde(default)]
    pub sch_hours: Option<f64>,
    /// Delay, days part.
    #[serde(default)]
    pub sch_days: Option<f64>,
    /// The action's parameters.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub api_params: Option<Map<String, Value>>,
}

/// `{"success": true}` or `{"success": false, "message": ...}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SchedulerResponse {
    /// Whether it worked.
    success: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

/// Schedules a CKAN API call after `sch_days` + `sch_hours` + `sch_minutes`.
#[utoipa::path(
    post,
    path = "/api/scheduler/add_job",
    tag = "scheduler",
    request_body = AddJobRequest,
    responses(
        (status = 200, description = "Scheduled, or not (success false)", body = SchedulerResponse),
        JsonBodyErrors
    )
)]
pub async fn add_job(
    State(state): State<AppState>,
    body: CheckedJson<AddJobRequest>,
) -> Json<SchedulerResponse> {
    let request = &body.typed;
    let seconds = request.sch_minutes.unwrap_or(0.0) * 60.0
        + request.sch_hours.unwrap_or(0.0) * 3600.0
        + request.sch_days.unwrap_or(0.0) * 86400.0;
    let failure = |message: String| {
        Json(SchedulerResponse {
            success: false,
            message: Some(format!("Could not schedule job: {message}")),
        })
    };
    if !seconds.is_finite() || seconds.abs() > 3650.0 * 86400.0 {
        return failure("the delay is out of range".into());
    }
    let task_args = match body.value() {
        Ok(value) => value,
        Err(e) => return failure(e.body.message),
    };
    let config = state.config();
    let ckan = &config.core.ckan;
    let dict = json!({
        "timedelta": seconds,
        "verify_ckan_ssl": ckan.verify_ssl,
        "ckan_api_base_url": ckan.api_base_url,
        "task_args": task_args,
        "hdx_user_agent": ckan.user_agent,
    });
    let queue = match Queue::new(state.redis().clone(), wire::SCHEDULER_QUEUE) {
        Ok(queue) => queue.with_default_timeout(config.core.job_timeout),
        Err(e) => return failure(e.to_string()),
    };
    let delay = Duration::from_secs_f64(seconds.max(0.0));
    match queue
        .enqueue_in(
            JobSpec::new(wire::SCHEDULE_API_CALL).kwarg("args", dict),
            delay,
        )
        .await
    {
        Ok(_) => Json(SchedulerResponse {
            success: true,
            message: None,
        }),
        Err(e) => failure(e.to_string()),
    }
}

/// A scheduled job.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduledJob {
    /// Job id.
    id: String,
    /// When the job was made, as Python printed it (`2026-11-28 15:16:06.472980+00:00`).
    created_at: String,
    /// Its description.
    description: String,
    /// When it will be enqueued (RFC 3339; an hdx-jobs addition).
    scheduled_for: Option<String>,
}

/// The list.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListJobsResponse {
    /// Jobs waiting for their time, soonest first.
    jobs: Vec<ScheduledJob>,
    /// Always true.
    success: bool,
}

/// Jobs waiting to be enqueued: the scheduler queue's and the rq-scheduler package's.
#[utoipa::path(
    get,
    path = "/api/scheduler/list_jobs",
    tag = "scheduler",
    responses(
        (status = 200, description = "Scheduled jobs", body = ListJobsResponse),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 500, description = "Redis unavailable", body = ErrorBody)
    )
)]
pub async fn list_jobs(State(state): State<AppState>) -> Result<Json<ListJobsResponse>, ApiError> {
    let mut conn = state.redis().conn().await.map_err(ApiError::internal)?;
    let key = Registry::Scheduled.key(wire::SCHEDULER_QUEUE);
    let mut waiting: Vec<(String, i64)> = redis::cmd("ZRANGE")
        .arg(&key)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut conn)
        .await
        .map_err(ApiError::internal)?;
    waiting.extend(
        legacy::waiting(&mut conn)
            .await
            .map_err(ApiError::internal)?,
    );
    waiting.sort_by_key(|(_, when)| *when);
    let mut jobs = Vec::with_capacity(waiting.len());
    for (id, when) in waiting {
        let Some(job) = Job::fetch(&mut conn, &id)
            .await
            .map_err(ApiError::internal)?
        else {
            continue;
        };
        jobs.push(ScheduledJob {
            created_at: job.time("created_at").map(python_str).unwrap_or_default(),
            description: job.description().unwrap_or_default(),
            scheduled_for: DateTime::from_timestamp(when, 0).map(|t| t.to_rfc3339()),
            id,
        });
    }
    Ok(Json(ListJobsResponse {
        jobs,
        success: true,
    }))
}

/// Python's `str()` of an aware UTC datetime.
fn python_str(at: DateTime<Utc>) -> String {
    if at.timestamp_subsec_micros() == 0 {
        at.format("%Y-%m-%d %H:%M:%S+00:00").to_string()
    } else {
        at.format("%Y-%m-%d %H:%M:%S%.6f+00:00").to_string()
    }
}

/// Deletes a scheduled job (one not yet enqueued).
#[utoipa::path(
    delete,
    path = "/api/scheduler/jobs/{id}",
    tag = "scheduler",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "Deleted", body = SchedulerResponse),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such scheduled job", body = SchedulerResponse),
        (status = 500, description = "Redis unavailable", body = ErrorBody)
    )
)]
pub async fn delete_job(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<SchedulerResponse>), ApiError> {
    let mut conn = state.redis().conn().await.map_err(ApiError::internal)?;
    let scheduled: Option<f64> = redis::cmd("ZSCORE")
        .arg(Registry::Scheduled.key(wire::SCHEDULER_QUEUE))
        .arg(&id)
        .query_async(&mut conn)
        .await
        .map_err(ApiError::internal)?;
    let deleted = if scheduled.is_some() {
        hdx_jobs::rq::jobs::delete(state.redis(), &id)
            .await
            .map_err(ApiError::internal)?;
        true
    } else {
        legacy::remove(&mut conn, &id)
            .await
            .map_err(ApiError::internal)?
    };
    if deleted {
        Ok((
            StatusCode::OK,
            Json(SchedulerResponse {
                success: true,
                message: None,
            }),
        ))
    } else {
        Ok((
            StatusCode::NOT_FOUND,
            Json(SchedulerResponse {
                success: false,
                message: Some(format!("No scheduled job {id}")),
            }),
        ))
    }
}
