//! The Lua scripts that make multi-step RQ operations atomic.
//!
//! Python RQ spreads a dequeue, a start or a failure over several round trips and transactions; a
//! process dying between them leaves jobs half moved (docs/rq-protocol.md §5.2, §5.11). Each script
//! here does one whole step on the server, leaving exactly the end state Python would, so RQ tools
//! read it unchanged. Every script is `lua/common.lua` followed by its own file.

use std::sync::LazyLock;

use redis::Script;

macro_rules! script {
    ($name:ident, $file:literal, $doc:literal) => {
        #[doc = $doc]
        pub(crate) static $name: LazyLock<Script> = LazyLock::new(|| {
            Script::new(concat!(
                include_str!("lua/common.lua"),
                "\n",
                include_str!(concat!("lua/", $file, ".lua"))
            ))
        });
    };
}

script!(
    DEQUEUE,
    "dequeue",
    "Pop and start up to N jobs in queue priority order."
);
script!(FINISH, "finish", "Record a success.");
script!(
    FAIL,
    "fail",
    "Record a failure, a stop or an abandoned lease; retry when allowed."
);
script!(
    HEARTBEAT,
    "heartbeat",
    "Refresh a worker and the leases of its running jobs."
);
script!(
    PROMOTE,
    "promote",
    "Move due scheduled jobs into their queue."
);
script!(REQUEUE, "requeue", "Requeue a failed job.");
script!(CANCEL, "cancel", "Cancel a job.");
script!(DELETE, "delete", "Delete a job and its traces.");
script!(
    ENQUEUE_DEPENDENT,
    "enqueue_dependent",
    "Enqueue a job with dependencies."
);
script!(
    RESCUE_INTERMEDIATE,
    "rescue_intermediate",
    "Requeue a job stuck in an intermediate list."
);
script!(EMPTY, "empty", "Empty a queue, deleting its jobs.");
script!(
    FIRE_PERIODIC,
    "fire_periodic",
    "Fire one period of a periodic job, exactly once."
);
script!(
    PROMOTE_LEGACY,
    "promote_legacy",
    "Enqueue one due job of rq-scheduler's sorted set."
);
script!(
    MAINTENANCE_LOCK,
    "maintenance_lock",
    "Take a queue's maintenance lock, or one a dead cleaner left."
);
script!(LOCK, "lock", "Acquire or refresh a named lock.");
script!(UNLOCK, "unlock", "Release a named lock if still held.");
