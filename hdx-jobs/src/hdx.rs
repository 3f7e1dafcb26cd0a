//! HDX's tasks, registered under the Python wire names the old service used, so jobs enqueued
//! by the old Flask API (or by Python producers) run here unchanged, and the queues they go to.
//! Each task is built with its crate feature; the wire names are always here, so code that
//! enqueues HDX jobs for other workers needs none of them.

use crate::config::Config;
use crate::task::TaskRegistry;

/// The old service's queues and the wire names of its tasks.
pub mod wire {
    /// Geopreview jobs.
    pub const GEO_QUEUE: &str = "geo_q";
    /// Analytics jobs.
    pub const ANALYTICS_QUEUE: &str = "analytics_q";
    /// Change-event jobs.
    pub const EVENT_QUEUE: &str = "event_q";
    /// File-structure checks.
    pub const FS_CHECK_QUEUE: &str = "fs_check_q";
    /// Scheduled CKAN API calls.
    pub const SCHEDULER_QUEUE: &str = "default_scheduler_q";
    /// Every HDX queue.
    pub const QUEUES: [&str; 5] = [
        GEO_QUEUE,
        ANALYTICS_QUEUE,
        EVENT_QUEUE,
        FS_CHECK_QUEUE,
        SCHEDULER_QUEUE,
    ];

    /// The geopreview task.
    pub const CREATE_PREVIEW: &str = "importapi.tasks.create_preview.create_preview_task";
    /// The analytics task.
    pub const SEND_EVENT: &str = "analyticsapi.tasks.send_event.send_event_task";
    /// The change-detection task.
    pub const DETECT_CHANGES: &str = "eventapi.tasks.detect_changes.detect_changes";
    /// The file-structure check task.
    pub const FS_CHECK: &str = "filestructurecheckapi.tasks.file_structure_check.fs_check_task";
    /// The scheduled CKAN API call.
    pub const SCHEDULE_API_CALL: &str = "schedulerapi.tasks.make_api_call.schedule_api_task";
}

/// The registry `hdx-jobs work` runs: the built-in operational tasks and every HDX task this
/// build has, configured from `config`.
pub fn task_registry(config: &Config) -> TaskRegistry {
    let mut registry = TaskRegistry::with_builtins();
    register_hdx_tasks(&mut registry, config);
    registry
}

/// Registers the HDX tasks whose crate feature is on (`hdx`, the default, turns them all on).
/// A build with none of them registers nothing, so its arguments go unused there.
#[cfg_attr(
    not(any(
        feature = "analytics",
        feature = "api-call",
        feature = "events",
        feature = "fs-check",
        feature = "geo"
    )),
    allow(unused_variables)
)]
fn register_hdx_tasks(registry: &mut TaskRegistry, config: &Config) {
    #[cfg(feature = "analytics")]
    registry.register(
        crate::analytics::TASK_NAME,
        crate::analytics::SendEventTask::new(&config.analytics, &config.ckan.user_agent),
    );
    #[cfg(feature = "api-call")]
    registry.register(
        wire::SCHEDULE_API_CALL,
        crate::api_call::ScheduleApiCallTask::new(&config.ckan),
    );
    #[cfg(feature = "events")]
    crate::events::register(registry, config);
    #[cfg(feature = "fs-check")]
    crate::fs_check::register(registry, config);
    #[cfg(feature = "geo")]
    registry.register(
        wire::CREATE_PREVIEW,
        crate::geo::task::CreatePreviewTask::new(config),
    );
}
