//! `/api/run-checks`: real checks of everything the service depends on, in the old result
//! shape (`{"result": [{name, result, error_message, type, description, subchecks}]}`).

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use hdx_jobs::ckan::CkanClient;
use hdx_jobs::geo::db;
use hdx_jobs::rq::info;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ErrorBody;
use crate::AppState;

const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// One check.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CheckResult {
    /// What is checked.
    pub name: String,
    /// `Passed` or `Failed`.
    pub result: String,
    /// Why it failed (`""` when passed).
    pub error_message: String,
    /// The kind of check.
    #[serde(rename = "type")]
    pub kind: String,
    /// What the check does.
    pub description: String,
    /// Parts of the check.
    #[schema(no_recursion)]
    pub subchecks: Vec<CheckResult>,
}

impl CheckResult {
    fn new(name: &str, kind: &str, description: &str, outcome: Result<(), String>) -> Self {
        let (result, error_message) = match outcome {
            Ok(()) => ("Passed".to_string(), String::new()),
            Err(e) => ("Failed".to_string(), e),
        };
        CheckResult {
            name: name.into(),
            result,
            error_message,
            kind: kind.into(),
            description: description.into(),
            subchecks: Vec::new(),
        }
    }
}

/// All checks.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChecksResponse {
    /// One entry per check.
    result: Vec<CheckResult>,
}

/// Runs the checks.
#[utoipa::path(
    get,
    path = "/api/run-checks",
    tag = "health",
    responses(
        (status = 200, description = "Check results", body = ChecksResponse),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)
    )
)]
pub async fn run_checks(State(state): State<AppState>) -> Json<ChecksResponse> {
    let (redis, postgis, ckan, workers, bus) = tokio::join!(
        check_redis(&state),
        check_postgis(&state),
        check_ckan(&state),
        check_workers(&state),
        check_event_bus(&state)
    );
    Json(ChecksResponse {
        result: vec![redis, postgis, ckan, workers, bus],
    })
}

async fn check_redis(state: &AppState) -> CheckResult {
    let outcome = tokio::time::timeout(CHECK_TIMEOUT, async {
        let mut conn = state.redis().conn().await?;
        hdx_jobs::connection::ping(&mut conn).await
    })
    .await
    .map_err(|_| "timed out".to_string())
    .and_then(|r| r.map_err(|e| e.to_string()));
    CheckResult::new(
        "Redis check",
        "Redis ping",
        "The queue Redis answers PING",
        outcome,
    )
}

async fn check_event_bus(state: &AppState) -> CheckResult {
    let events = &state.config().core.events;
    let outcome = tokio::time::timeout(CHECK_TIMEOUT, async {
        let client = hdx_jobs::RedisClient::open(&events.stream_url).map_err(|e| e.to_string())?;
        let mut conn = client
            .dedicated(Some(CHECK_TIMEOUT))
            .await
            .map_err(|e| e.to_string())?;
        let kind: String = redis::cmd("TYPE")
            .arg(&events.stream_name)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        match kind.as_str() {
            "stream" | "none" => Ok(()),
            other => Err(format!("{} is a {other}, not a stream", events.stream_name)),
        }
    })
    .await
    .map_err(|_| "timed out".to_string())
    .and_then(|r| r);
    CheckResult::new(
        "Event bus check",
        "Redis stream",
        "The event stream's Redis answers and the stream key holds a stream (or does not exist yet)",
        outcome,
    )
}

async fn check_postgis(state: &AppState) -> CheckResult {
    let config = state.config();
    let outcome = tokio::time::timeout(CHECK_TIMEOUT, async {
        let client = db::connect(&config.core.gis_db)
            .await
            .map_err(|e| e.to_string())?;
        client
            .query_one("SELECT postgis_version()", &[])
            .await
            .map(|_| ())
            .map_err(|e| db::DbError::from_pg("PostGIS is not available", &e).to_string())
    })
    .await
    .map_err(|_| "timed out".to_string())
    .and_then(|r| r);
    CheckResult::new(
        "PostGIS check",
        "Database query",
        "The layer database answers and has PostGIS",
        outcome,
    )
}

async fn check_ckan(state: &AppState) -> CheckResult {
    let ckan = state.config().core.ckan.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let client = CkanClient::new(&ckan, ckan.gis_api_key.clone(), CHECK_TIMEOUT)
            .map_err(|e| e.to_string())?;
        let answer = client.get("status_show", &[]).map_err(|e| e.to_string())?;
        if answer.get("success").and_then(|s| s.as_bool()) == Some(true) {
            Ok(())
        } else {
            Err(format!("unexpected answer from status_show: {answer}"))
        }
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    CheckResult::new(
        "CKAN action API check",
        "HTTP request",
        "CKAN's action API answers status_show with the configured API key",
        outcome,
    )
}

/// The queues this deployment serves: `QUEUES` and every queue a live worker listens on. Each
/// must have a live worker (a queue nobody is meant to serve is not a failure).
async fn check_workers(state: &AppState) -> CheckResult {
    let workers = info::workers(state.redis()).await;
    let workers = match workers {
        Ok(workers) => workers,
        Err(e) => {
            return CheckResult::new(
                "Workers check",
                "Worker registry",
                "Every served queue has a live worker",
                Err(e.to_string()),
            )
        }
    };
    let mut served: Vec<String> = state.config().core.queues.clone();
    for worker in &workers {
        for queue in &worker.queues {
            if !served.contains(queue) {
                served.push(queue.clone());
            }
        }
    }
    let mut subchecks = Vec::new();
    for queue in &served {
        let live = workers.iter().filter(|w| w.queues.contains(queue)).count();
        let outcome = if live > 0 {
            Ok(())
        } else {
            Err(format!("no live worker listens on {queue}"))
        };
        subchecks.push(CheckResult::new(
            queue,
            "Worker registry",
            "At least one live worker",
            outcome,
        ));
    }
    let failed: Vec<&str> = subchecks
        .iter()
        .filter(|c| c.result == "Failed")
        .map(|c| c.name.as_str())
        .collect();
    let outcome = if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("queues without workers: {}", failed.join(", ")))
    };
    let mut check = CheckResult::new(
        "Workers check",
        "Worker registry",
        "Every served queue (QUEUES, and the queues of live workers) has a live worker",
        outcome,
    );
    check.subchecks = subchecks;
    check
}
