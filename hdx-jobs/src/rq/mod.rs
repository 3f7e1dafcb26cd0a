//! RQ's Redis protocol (2.x layout), with nothing HDX-specific in it.
//!
//! Everything here reads and writes exactly the keys, fields and encodings of
//! `docs/rq-protocol.md`, so Python's `rq` (workers, `rq info`, rq-dashboard) shares a database
//! with us. Multi-step changes are Lua scripts (`rq/scripts.rs`, `rq/lua/`) so no crash can
//! leave a job half moved.

pub mod browse;
pub mod commands;
pub mod error;
pub mod history;
pub mod info;
pub mod job;
pub mod jobs;
pub mod keys;
pub mod maintenance;
pub mod metrics;
pub mod payload;
pub(crate) mod pickle;
pub mod queue;
pub mod registry;
pub(crate) mod repr;
pub mod results;
pub mod scheduler;
mod scripts;
pub mod time;
pub mod worker;
