//! Redis key names of RQ 2.x (docs/rq-protocol.md §1).
//!
//! Every key the crate touches is spelled here and nowhere else, so a reader can check the
//! layout against the protocol table in one place. Sets hold *full* keys (`rq:queue:<q>`,
//! `rq:worker:<w>`), not bare names: a bare name makes Python raise.

/// Set of every queue key ever enqueued to.
pub const QUEUES: &str = "rq:queues";
/// Set of every live worker key.
pub const WORKERS: &str = "rq:workers";
/// Present when workers are suspended (`rq suspend`).
pub const SUSPENDED: &str = "rq:suspended";
/// Prefix of queue keys.
pub const QUEUE_PREFIX: &str = "rq:queue:";
/// Prefix of worker keys.
pub const WORKER_PREFIX: &str = "rq:worker:";

/// The job list of a queue.
pub fn queue(q: &str) -> String {
    format!("{QUEUE_PREFIX}{q}")
}

/// The queue name of a full queue key, if it is one.
pub fn queue_name(key: &str) -> Option<&str> {
    key.strip_prefix(QUEUE_PREFIX)
}

/// Ids taken off a queue by a Python single-queue worker and not yet started.
pub fn intermediate(q: &str) -> String {
    format!("{QUEUE_PREFIX}{q}:intermediate")
}

/// Maintenance's note of when it first saw an id in the intermediate list.
pub fn intermediate_first_seen(q: &str, id: &str) -> String {
    format!("{QUEUE_PREFIX}{q}:intermediate:first_seen:{id}")
}

/// The job hash.
pub fn job(id: &str) -> String {
    format!("rq:job:{id}")
}

/// Ids of the jobs waiting on this job.
pub fn dependents(id: &str) -> String {
    format!("rq:job:{id}:dependents")
}

/// Ids this job waits on. The double colon is RQ's real key name.
pub fn dependencies(id: &str) -> String {
    format!("rq:job::{id}:dependencies")
}

/// The results stream of a job.
pub fn results(id: &str) -> String {
    format!("rq:results:{id}")
}

/// One running execution of a job.
pub fn execution(id: &str, execution_id: &str) -> String {
    format!("rq:execution:{id}:{execution_id}")
}

/// The executions of a job.
pub fn executions(id: &str) -> String {
    format!("rq:executions:{id}")
}

/// A worker hash.
pub fn worker(w: &str) -> String {
    format!("{WORKER_PREFIX}{w}")
}

/// The worker name of a full worker key, if it is one.
pub fn worker_name(key: &str) -> Option<&str> {
    key.strip_prefix(WORKER_PREFIX)
}

/// The set of workers listening on a queue.
pub fn queue_workers(q: &str) -> String {
    format!("rq:workers:{q}")
}

/// A worker's command channel.
pub fn pubsub(w: &str) -> String {
    format!("rq:pubsub:{w}")
}

/// Maintenance lock of a queue.
pub fn clean_registries_lock(q: &str) -> String {
    format!("rq:clean_registries:{q}")
}

/// The built-in scheduler's lock of a queue.
pub fn scheduler_lock(q: &str) -> String {
    format!("rq:scheduler-lock:{q}")
}

/// A built-in scheduler's identity hash.
pub fn scheduler(name: &str) -> String {
    format!("rq:scheduler:{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vectors of docs/rq-protocol.md §9.
    #[test]
    fn matches_protocol_vectors() {
        let x = "52e09cd50c364b01a367430d479cd903";
        assert_eq!(queue("geo_q"), "rq:queue:geo_q");
        assert_eq!(intermediate("geo_q"), "rq:queue:geo_q:intermediate");
        assert_eq!(job("job-1"), "rq:job:job-1");
        assert_eq!(dependents("job-1"), "rq:job:job-1:dependents");
        assert_eq!(dependencies("job-1"), "rq:job::job-1:dependencies");
        assert_eq!(results("job-1"), "rq:results:job-1");
        assert_eq!(execution("job-1", x), format!("rq:execution:job-1:{x}"));
        assert_eq!(executions("job-1"), "rq:executions:job-1");
        assert_eq!(worker("worker-7"), "rq:worker:worker-7");
        assert_eq!(queue_workers("geo_q"), "rq:workers:geo_q");
        assert_eq!(pubsub("worker-7"), "rq:pubsub:worker-7");
        assert_eq!(clean_registries_lock("geo_q"), "rq:clean_registries:geo_q");
        assert_eq!(scheduler_lock("geo_q"), "rq:scheduler-lock:geo_q");
        assert_eq!(queue_name("rq:queue:geo_q"), Some("geo_q"));
        assert_eq!(worker_name("rq:worker:w"), Some("w"));
    }
}
