//! # hdx-jobs
//!
//! Background jobs for the Humanitarian Data Exchange: an [RQ](https://python-rq.org)-compatible
//! job queue on Redis, a worker, and HDX's tasks. Python RQ producers, workers and tools share a
//! Redis database with it: jobs enqueued by Python run here and the reverse.
//!
//! The pieces:
//! - [`task`]: the [`Task`](task::Task) trait, the [`TaskRegistry`](task::TaskRegistry) mapping
//!   wire names (RQ's `func_name`) to tasks, and the [`JobContext`](task::JobContext) a job runs
//!   with;
//! - [`rq`]: the protocol: [`Queue`](rq::queue::Queue) to enqueue, [`Worker`](rq::worker::Worker)
//!   to run jobs, registries, results, maintenance and the scheduler;
//! - [`builtin`]: operational tasks (`hdx_jobs.noop`, `.echo`, `.sleep`, `.fail`);
//! - [`hdx`]: HDX's tasks under the Python wire names of the old service;
//! - [`analytics`]: the analytics job (Mixpanel, Google Analytics 4);
//! - [`config`]: settings from the environment variables HDX deployments use;
//! - [`ckan`], [`http`], [`secret`]: CKAN's action API, outgoing HTTP, secrets kept out of logs;
//! - [`geo`]: geopreview (GIS files into PostGIS layers reported to CKAN), layer upkeep, tiles;
//! - [`events`], [`fs_check`]: change events on the Redis Streams event bus, file-structure checks;
//! - [`python_json`]: JSON text written as Python's `json.dumps` writes it;
//! - [`signals`]: SIGTERM/SIGINT for the binaries (shutdown future, worker warm/cold stop).
//!
//! ## Embedding
//!
//! Another Rust service defines its own task, enqueues it and runs a worker in-process:
//!
//! ```no_run
//! use hdx_jobs::rq::queue::{JobSpec, Queue};
//! use hdx_jobs::rq::worker::{Worker, WorkerOptions};
//! use hdx_jobs::task::{JobContext, Task, TaskError, TaskRegistry};
//! use hdx_jobs::RedisClient;
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
//! # async fn demo() -> Result<(), hdx_jobs::rq::error::RqError> {
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
//! See `examples/` in the repository for a complete service.

#![warn(missing_docs)]
#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod analytics;
pub mod api_call;
pub mod builtin;
pub mod ckan;
pub mod config;
pub mod connection;
pub mod events;
pub mod fs_check;
pub mod geo;
pub mod hdx;
pub mod http;
pub mod outbound;
pub mod python_json;
pub mod rq;
pub mod secret;
pub mod signals;
pub mod task;

pub use connection::RedisClient;
