//! HDX's tasks, registered under the Python wire names the old service used, so jobs enqueued
//! by the old Flask API (or by Python producers) run here unchanged.

use crate::config::Config;
use crate::task::TaskRegistry;

/// The registry `hdx-jobs work` runs: the built-in operational tasks and every HDX task,
/// configured from `config`.
pub fn task_registry(config: &Config) -> TaskRegistry {
    let mut registry = TaskRegistry::with_builtins();
    crate::events::register(&mut registry, config);
    crate::fs_check::register(&mut registry, config);
    registry
}
