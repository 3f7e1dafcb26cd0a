//! # hdx-jobs
//!
//! Background jobs for the Humanitarian Data Exchange: an [RQ](https://python-rq.org)-compatible
//! job queue on Redis, a worker, and HDX's tasks. Python RQ producers, workers and tools share a
//! Redis database with it: jobs enqueued by Python run here and the reverse.
//!
//! The pieces (those in plain code come with a cargo feature, below):
//! - [`task`]: the [`Task`] trait, the [`TaskRegistry`] mapping wire names (RQ's `func_name`) to
//!   tasks, and the [`JobContext`] a job runs with;
//! - [`rq`]: the protocol: [`Queue`] to enqueue, [`Worker`] to run jobs, registries, results,
//!   maintenance and the scheduler;
//! - [`builtin`]: operational tasks (`hdx_jobs.noop`, `.echo`, `.sleep`, `.fail`);
//! - [`hdx`]: HDX's tasks under the Python wire names of the old service;
//! - `analytics`: the analytics job (Mixpanel, Google Analytics 4);
//! - [`config`]: settings from the environment variables HDX deployments use;
//! - `ckan`, `http`, [`secret`]: CKAN's action API, outgoing HTTP, secrets kept out of logs;
//! - `geo`: geopreview (GIS files into PostGIS layers reported to CKAN), layer upkeep, tiles;
//! - `events`, `fs_check`: change events on the Redis Streams event bus, file-structure checks;
//! - [`python_json`]: JSON text written as Python's `json.dumps` writes it;
//! - [`signals`]: SIGTERM/SIGINT for the binaries (shutdown future, worker warm/cold stop).
//!
//! ## Features
//!
//! The queue core is always built: `rq`, `task`, `builtin`, `connection`, `secret`, `signals`,
//! `python_json`, `retry`, the core of `config` and `hdx`'s wire names. It needs Redis and no
//! system library. HDX's tasks come with cargo features, so a service that only wants the queue
//! builds none of their dependencies (`default-features = false`):
//!
//! - `hdx` (default): every feature below, what HDX's binaries run;
//! - `geo`: the `geo` module (geopreview: GIS files into PostGIS layers, layer upkeep, vector
//!   tiles) with tokio-postgres and zip. GDAL is not linked here: each import runs in a child
//!   process, the `hdx-jobs-import` executable (its code is the `hdx-jobs-import` crate, the only
//!   one that links libgdal), found beside the running executable or named by
//!   `HDX_GEO_IMPORT_PROGRAM` (`geo::child`);
//! - `analytics`: the `analytics` module (the Mixpanel and Google Analytics 4 job);
//! - `events`: the `events` module (change detection, the event bus on Redis Streams, its
//!   consumer, stream statistics) with pulldown-cmark;
//! - `fs-check`: the `fs_check` module (file-structure checks); turns on `events`, whose
//!   detector finds the sheet changes;
//! - `api-call`: the `api_call` module (the scheduled CKAN API call);
//! - `http`: turned on by each feature above: `http` (outgoing calls), `outbound` (the guard on
//!   URLs from jobs), `ckan` (CKAN's action API) and their `config` sections, with ureq and url.
//!
//! [`hdx::task_registry`] registers the tasks of the features that are on.
//!
//! ## Embedding
//!
//! Another Rust service defines its own task, enqueues it and runs a worker in-process:
//!
//! ```no_run
//! use hdx_jobs::{JobContext, JobSpec, Queue, RedisClient, Task, TaskError, TaskRegistry};
//! use hdx_jobs::{Worker, WorkerOptions};
//!
//! struct Greet;
//!
//! #[async_trait::async_trait]
//! impl Task for Greet {
//!     type Args = String;
//!     type Output = String;
//!     async fn run(&self, _ctx: &JobContext, name: String) -> Result<String, TaskError> {
//!         Ok(format!("hello, {name}"))
//!     }
//! }
//!
//! # async fn demo() -> Result<(), hdx_jobs::RqError> {
//! let redis = RedisClient::open("redis://127.0.0.1:6379/3")?;
//! let queue = Queue::new(redis.clone(), "greetings")?;
//! queue.enqueue(JobSpec::new("myservice.greet").arg("world")).await?;
//!
//! let mut tasks = TaskRegistry::with_builtins();
//! tasks.register("myservice.greet", Greet);
//! let options = WorkerOptions { queues: vec!["greetings".into()], burst: true, ..Default::default() };
//! Worker::new(redis, tasks, options)?.run().await?;
//! # Ok(()) }
//! ```
//!
//! The types an embedder needs are re-exported at the root (above); the modules hold the rest.
//! See `examples/` in the repository for complete services: an embedded worker, a producer that
//! enqueues for Python workers and reads their results, and a consumer of the change events.

#![warn(missing_docs)]
#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

#[cfg(feature = "analytics")]
pub mod analytics;
#[cfg(feature = "api-call")]
pub mod api_call;
pub mod builtin;
#[cfg(feature = "http")]
pub mod ckan;
pub mod config;
pub mod connection;
#[cfg(feature = "events")]
pub mod events;
#[cfg(feature = "fs-check")]
pub mod fs_check;
#[cfg(feature = "geo")]
pub mod geo;
pub mod hdx;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "http")]
pub mod outbound;
pub mod python_json;
pub mod retry;
pub mod rq;
pub mod secret;
pub mod signals;
pub mod task;

// The embedder's vocabulary, at the root: `use hdx_jobs::{Queue, JobSpec, Worker, Task, ...}`.
pub use connection::RedisClient;
pub use rq::error::{RqError, RqResult};
pub use rq::job::JobStatus;
pub use rq::jobs::{JobView, ViewStatus};
pub use rq::queue::{JobSpec, Queue, Retry};
pub use rq::results::JobResult;
pub use rq::worker::{StopHandle, Worker, WorkerOptions};
pub use task::{CallArgs, JobContext, Task, TaskError, TaskRegistry};

/// The README's Rust code, compiled by `cargo test --doc` so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
