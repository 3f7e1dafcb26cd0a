//! The `hdx-jobs` command line, in the spirit of `rq`'s: each subcommand parses its flags and
//! calls the library. `main` only parses and calls [`run`].
//!
//! The Redis URL comes from `--url`, else `HDX_REDIS_URL`, else `HDX_REDIS_ADDR`,
//! `HDX_REDIS_PORT`, `HDX_REDIS_GISDB` as deployed.

mod commands;
mod events;
mod geopreview;
mod logging;
mod output;
mod scheduling;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use commands::{EnqueueArgs, InfoArgs, JobCommand, RequeueArgs, WorkArgs};
pub use events::EventsCommand;
pub use geopreview::{GeopreviewCommand, ImportArgs};
pub use logging::{LogFormat, LogLevel};
pub use scheduling::{AddArgs, MisfireArg, ScheduleCommand, SchedulerArgs};

/// Background jobs for HDX on an RQ-compatible Redis queue.
#[derive(Debug, Parser)]
#[command(name = "hdx-jobs", version, about)]
pub struct Cli {
    /// Redis URL of the queues (default: HDX_REDIS_URL, else HDX_REDIS_ADDR/PORT/GISDB).
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// Log format: human text or JSON lines.
    #[arg(long, global = true, env = "HDX_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    /// Log level: DEBUG, INFO, WARNING, ERROR, CRITICAL (Python's names, any case) or trace.
    #[arg(long, global = true, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: LogLevel,
    /// The old console handler's level: the stricter of it and --log-level applies.
    #[arg(long, global = true, env = "LOG_LEVEL_CONSOLE")]
    pub log_level_console: Option<LogLevel>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a worker on some queues (default: QUEUES, else `geo_q analytics_q`). Also
    /// `worker`, which takes the old service's command line unchanged (`worker --url URL
    /// --name NAME --worker-ttl 600 geo_q analytics_q`).
    #[command(visible_alias = "worker")]
    Work(WorkArgs),
    /// Enqueue jobs; prints their ids.
    Enqueue(EnqueueArgs),
    /// Queues with their counts, and workers with their state.
    Info(InfoArgs),
    /// Inspect or act on one job.
    #[command(subcommand)]
    Job(JobCommand),
    /// Requeue failed jobs.
    Requeue(RequeueArgs),
    /// Delete every waiting job of a queue.
    Empty {
        /// The queue.
        queue: String,
    },
    /// Suspend all workers: they finish running jobs and take no new ones.
    Suspend {
        /// Resume by itself after this many seconds.
        #[arg(long)]
        duration: Option<u64>,
    },
    /// Resume suspended workers.
    Resume,
    /// Run a scheduler: delayed jobs, retries, periodic jobs, rq-scheduler's jobs.
    Scheduler(SchedulerArgs),
    /// Periodic jobs: add, list, remove.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Geopreview layers: import a GIS file locally, delete a layer, clean up old layers.
    #[command(subcommand)]
    Geopreview(GeopreviewCommand),
    /// Serve the HTTP API (CKAN's endpoints, /monitor, /metrics, /openapi.json).
    Serve {
        /// Address to listen on (default: HDX_JOBS_BIND, else 127.0.0.1:APP_PORT, port 5000).
        #[arg(long)]
        bind: Option<std::net::SocketAddr>,
    },
    /// The change events bus: listen to it, or diff two dataset dicts.
    #[command(subcommand)]
    Events(EventsCommand),
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    logging::init(
        cli.log_format,
        LogLevel::effective(cli.log_level, cli.log_level_console),
    );
    let mut config = hdx_jobs::config::Config::from_env()?;
    config.apply_payload_settings();
    if let Some(url) = &cli.url {
        config.redis_url = url.clone();
    }
    let redis = hdx_jobs::RedisClient::open(&config.redis_url)?;
    commands::run(cli.command, redis, &config).await
}
