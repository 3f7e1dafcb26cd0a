//! The subcommands: each turns its flags into library calls.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use hdx_jobs::config::Config;
use hdx_jobs::rq::error::RqResult;
use hdx_jobs::rq::queue::{JobSpec, Queue, Retry};
use hdx_jobs::rq::worker::{StartedEntry, Worker, WorkerOptions};
use hdx_jobs::rq::{commands as rq_commands, info, jobs};
use hdx_jobs::signals::{shutdown_signal, stop_on_signals};
use hdx_jobs::RedisClient;
use serde_json::{Map, Value};
use tokio::time::MissedTickBehavior;

use crate::output;
use crate::Command;

/// `hdx-jobs work`.
#[derive(Debug, Args)]
pub struct WorkArgs {
    /// Queues in priority order (default: QUEUES).
    pub queues: Vec<String>,
    /// Worker name (default: unique per process, `<host>.<pid>.<random>`).
    #[arg(long)]
    pub name: Option<String>,
    /// Seconds the worker's registration lives between heartbeats.
    #[arg(long, env = "HDX_REDIS_WORKER_TTL", default_value_t = 600)]
    pub worker_ttl: u64,
    /// Jobs run at once.
    #[arg(long, short = 'c', env = "HDX_WORKER_CONCURRENCY", default_value_t = 4)]
    pub concurrency: usize,
    /// Exit once the queues are empty.
    #[arg(long, short = 'b')]
    pub burst: bool,
    /// Do not run the scheduler (by default a worker also promotes due delayed jobs, retries
    /// and periodic jobs; RQ's locks make several schedulers safe).
    #[arg(long, conflicts_with = "with_scheduler")]
    pub without_scheduler: bool,
    /// Run the scheduler (the default; accepted for RQ's command line).
    #[arg(long, hide = true)]
    pub with_scheduler: bool,
    /// Seconds a stop (SIGTERM) waits for running jobs; those still running then go back to the
    /// front of their queue before the process exits.
    #[arg(long, env = "HDX_WORKER_SHUTDOWN_TIMEOUT", default_value_t = 25.0)]
    pub shutdown_timeout: f64,
    /// Seconds between lease renewals of running jobs (RQ: 30).
    #[arg(long, default_value_t = 30.0)]
    pub job_monitoring_interval: f64,
    /// Seconds a lease outlives the monitoring interval (RQ: 60).
    #[arg(long, default_value_t = 60.0)]
    pub lease_grace: f64,
    /// Seconds between maintenance rounds that recover jobs of dead workers.
    #[arg(long, default_value_t = 60.0)]
    pub maintenance_interval: f64,
    /// How running jobs are listed in the started registry: `job` (the bare job id, which
    /// rq-dashboard 0.7 and RQ 1.x read as well as RQ 2.x) or `execution` (RQ 2's
    /// `<id>:<execution id>`).
    #[arg(long, env = "HDX_JOBS_STARTED_ENTRY", default_value = "job")]
    pub started_entry: StartedEntry,
}

/// A task call on the command line, for `enqueue` and `schedule add`.
#[derive(Debug, Args)]
pub struct TaskCall {
    /// The queue.
    #[arg(long, short = 'q')]
    pub queue: String,
    /// The task's wire name (RQ's func_name).
    #[arg(long)]
    pub func: String,
    /// Positional arguments, a JSON array.
    #[arg(long, default_value = "[]")]
    pub args: String,
    /// Keyword arguments, a JSON object.
    #[arg(long, default_value = "{}")]
    pub kwargs: String,
}

impl TaskCall {
    /// The decoded `--args` and `--kwargs`.
    pub fn arguments(&self) -> anyhow::Result<(Vec<Value>, Map<String, Value>)> {
        let positional = serde_json::from_str(&self.args).context("--args must be a JSON array")?;
        let keywords =
            serde_json::from_str(&self.kwargs).context("--kwargs must be a JSON object")?;
        Ok((positional, keywords))
    }
}

/// `hdx-jobs enqueue`.
#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// What to run, and where.
    #[command(flatten)]
    pub call: TaskCall,
    /// Timeout in seconds (-1: none; default RQ_WORKER_TIMEOUT, else 180).
    #[arg(long, allow_negative_numbers = true)]
    pub timeout: Option<i64>,
    /// Retries after a failure.
    #[arg(long)]
    pub retry: Option<u32>,
    /// Seconds between retries, comma separated (the last repeats).
    #[arg(long, value_delimiter = ',', requires = "retry")]
    pub retry_interval: Vec<u64>,
    /// Run in this many seconds (needs a worker started with --with-scheduler).
    #[arg(long = "in", conflicts_with = "at")]
    pub in_secs: Option<f64>,
    /// Run at this time (RFC 3339, e.g. 2026-11-28T15:00:00Z, or Unix seconds).
    #[arg(long)]
    pub at: Option<String>,
    /// Enqueue this many copies (in one transaction).
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// A custom job id (only with --count 1).
    #[arg(long)]
    pub id: Option<String>,
    /// Seconds to keep a successful result (-1 forever).
    #[arg(long, allow_negative_numbers = true)]
    pub result_ttl: Option<i64>,
    /// Seconds to keep a failed job (-1 forever).
    #[arg(long, allow_negative_numbers = true)]
    pub failure_ttl: Option<i64>,
    /// Description shown by the tools.
    #[arg(long)]
    pub description: Option<String>,
    /// Put the job at the front of the queue.
    #[arg(long)]
    pub at_front: bool,
}

/// `hdx-jobs info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// JSON output (with --watch: one JSON document per line and frame).
    #[arg(long)]
    pub json: bool,
    /// Redraw every --interval seconds until Ctrl-C or SIGTERM, like `rq info --interval`.
    /// A Redis error, even on the first frame, is shown in its frame and retried at the next
    /// (rq exits instead), so a watch kept open through a Redis restart recovers by itself.
    #[arg(long)]
    pub watch: bool,
    /// Seconds between frames of --watch (default 2, at least 0.1); implies --watch, as in rq.
    #[arg(long, value_name = "SECONDS", value_parser = parse_interval, allow_negative_numbers = true)]
    pub interval: Option<Duration>,
}

/// `info --watch` without `--interval`: 2 seconds, `watch(1)`'s default (rq has none: its
/// `--interval` always takes a value).
const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// The shortest `--interval`: below it the watch would hammer Redis for frames nobody can read.
const MIN_WATCH_INTERVAL_SECS: f64 = 0.1;

impl InfoArgs {
    /// How often to redraw; `None` for the single view of plain `info`.
    fn watch_interval(&self) -> Option<Duration> {
        self.interval
            .or(self.watch.then_some(DEFAULT_WATCH_INTERVAL))
    }
}

/// `--interval`: finite seconds, at least [`MIN_WATCH_INTERVAL_SECS`] (0, NaN or `inf` would
/// make a busy loop or a watch that never redraws).
fn parse_interval(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !secs.is_finite() || secs < MIN_WATCH_INTERVAL_SECS {
        return Err(format!(
            "must be a finite number of seconds, at least {MIN_WATCH_INTERVAL_SECS}"
        ));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{text} seconds is too long"))
}

/// `hdx-jobs job ...`.
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Status, arguments, result or error of a job.
    Show {
        /// The job id.
        id: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job (a running one keeps running: use stop).
    Cancel {
        /// The job id.
        id: String,
    },
    /// Delete a job and its results.
    Delete {
        /// The job id.
        id: String,
    },
    /// Stop a running job (it ends as `stopped`).
    Stop {
        /// The job id.
        id: String,
    },
}

/// `hdx-jobs requeue`.
#[derive(Debug, Args)]
pub struct RequeueArgs {
    /// Job ids to requeue.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub ids: Vec<String>,
    /// Requeue every failed job (of --queue, or of every queue).
    #[arg(long)]
    pub all: bool,
    /// Limit --all to one queue.
    #[arg(long, short = 'q')]
    pub queue: Option<String>,
}

pub(crate) async fn run(
    command: Command,
    redis: RedisClient,
    config: &Config,
) -> anyhow::Result<ExitCode> {
    match command {
        Command::Work(args) => work(args, redis, config).await,
        Command::Enqueue(args) => enqueue(args, redis, config).await,
        Command::Info(args) => match args.watch_interval() {
            Some(interval) => watch_info(&redis, args.json, interval).await,
            None => {
                let (queues, workers) = info_snapshot(&redis).await?;
                if args.json {
                    println!(
                        "{}",
                        serde_json::json!({"queues": queues, "workers": workers})
                    );
                } else {
                    print!("{}", output::info_text(&queues, &workers));
                }
                Ok(ExitCode::SUCCESS)
            }
        },
        Command::Job(command) => job(command, redis).await,
        Command::Requeue(args) => requeue(args, redis).await,
        Command::Empty { queue } => {
            let removed = Queue::new(redis, queue.clone())?.empty().await?;
            println!("{removed} jobs removed from {queue}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Suspend { duration } => {
            rq_commands::suspend(&redis, duration).await?;
            println!("workers suspended");
            Ok(ExitCode::SUCCESS)
        }
        Command::Resume => {
            rq_commands::resume(&redis).await?;
            println!("workers resumed");
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { bind } => serve(config.clone(), bind).await,
        Command::Scheduler(args) => crate::scheduling::scheduler(args, redis).await,
        Command::Schedule(command) => crate::scheduling::schedule(command, redis).await,
        Command::Events(command) => crate::events::run(command, config).await,
        Command::Geopreview(command) => crate::geopreview::run(command, config).await,
    }
}

/// What `info` shows: every queue, then every worker.
async fn info_snapshot(redis: &RedisClient) -> RqResult<output::InfoSnapshot> {
    Ok((info::queues(redis).await?, info::workers(redis).await?))
}

/// `hdx-jobs info --watch`: a frame every `interval` until SIGTERM or SIGINT, which end it
/// with success (stopping is the only way out of a watch, not a failure).
async fn watch_info(
    redis: &RedisClient,
    json: bool,
    interval: Duration,
) -> anyhow::Result<ExitCode> {
    // `biased`: the signal handlers are installed (on the first poll) before the first frame is
    // drawn, so a signal sent once output has appeared never meets the default action, which
    // would kill the process. A signal also interrupts a frame stuck on an unreachable Redis.
    tokio::select! {
        biased;
        () = shutdown_signal() => Ok(ExitCode::SUCCESS),
        result = watch_frames(redis, json, interval) => result,
    }
}

/// Draws frames forever; returns only when stdout's reader has gone or stdout fails.
async fn watch_frames(
    redis: &RedisClient,
    json: bool,
    interval: Duration,
) -> anyhow::Result<ExitCode> {
    // Escape codes only for a person at a terminal: a pipe or a log gets plain frames, and
    // NDJSON stays one document per line wherever it goes.
    let terminal = !json && std::io::stdout().is_terminal();
    let mut ticks = tokio::time::interval(interval);
    // A frame slower than the interval (Redis timing out) is followed by a full interval, not
    // by a burst of catch-up frames.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut first = true;
    loop {
        ticks.tick().await;
        let time = Utc::now();
        let snapshot = info_snapshot(redis).await;
        let text = if json {
            output::watch_json(time, &snapshot)
        } else {
            let lead = output::frame_lead(terminal, first);
            let header = output::watch_header(time, redis.display_url(), interval);
            format!("{lead}{header}{}", output::watch_body(&snapshot, interval))
        };
        if !print_frame(&text)? {
            return Ok(ExitCode::SUCCESS);
        }
        first = false;
    }
}

/// Writes one frame and flushes it, so a pipe or a log sees whole frames as they are drawn.
/// `false` once the reader has gone (`| head`): that ends a watch as quietly as Ctrl-C.
fn print_frame(text: &str) -> anyhow::Result<bool> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("writing to stdout"),
    }
}

/// `hdx-jobs serve`: the HTTP API until SIGINT/SIGTERM.
async fn serve(core: Config, bind: Option<std::net::SocketAddr>) -> anyhow::Result<ExitCode> {
    let mut config = hdx_jobs_server::ServerConfig::from_env()?;
    config.core = core;
    if let Some(bind) = bind {
        config.bind = bind;
    }
    hdx_jobs_server::serve(config, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

async fn work(args: WorkArgs, redis: RedisClient, config: &Config) -> anyhow::Result<ExitCode> {
    let queues = if args.queues.is_empty() {
        config.queues.clone()
    } else {
        args.queues
    };
    let seconds = |value: f64, flag: &str| {
        Duration::try_from_secs_f64(value)
            .map_err(|_| anyhow!("--{flag} must be a positive number of seconds"))
    };
    let options = WorkerOptions {
        name: args.name,
        queues,
        concurrency: args.concurrency,
        worker_ttl: args.worker_ttl,
        burst: args.burst,
        with_scheduler: !args.without_scheduler,
        shutdown_timeout: Some(seconds(args.shutdown_timeout, "shutdown-timeout")?),
        job_monitoring_interval: seconds(args.job_monitoring_interval, "job-monitoring-interval")?,
        lease_grace: seconds(args.lease_grace, "lease-grace")?,
        maintenance_interval: seconds(args.maintenance_interval, "maintenance-interval")?,
        started_entry: args.started_entry,
        ..WorkerOptions::default()
    };
    // Geopreview jobs run `hdx-jobs-import` beside `hdx-jobs`: say at once when it is missing,
    // rather than at each job.
    let import = hdx_jobs::geo::child::ChildCommand::from_config(&config.geopreview);
    if let Err(e) = import.check() {
        tracing::warn!("{e}; geopreview jobs will fail");
    }
    let worker = Worker::new(redis, hdx_jobs::hdx::task_registry(config), options)?;
    tokio::spawn(stop_on_signals(worker.stop_handle()));
    worker.run().await?;
    Ok(ExitCode::SUCCESS)
}

async fn enqueue(
    args: EnqueueArgs,
    redis: RedisClient,
    config: &Config,
) -> anyhow::Result<ExitCode> {
    let (positional, keywords) = args.call.arguments()?;
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    if args.id.is_some() && args.count > 1 {
        bail!("--id needs --count 1");
    }
    let mut spec = JobSpec::new(&args.call.func)
        .args(positional)
        .kwargs(keywords);
    spec.id = args.id;
    spec.timeout = Some(args.timeout.unwrap_or(config.job_timeout));
    spec.result_ttl = args.result_ttl;
    spec.failure_ttl = args.failure_ttl;
    spec.description = args.description;
    spec.at_front = args.at_front;
    if let Some(max) = args.retry {
        spec.retry = Some(Retry::new(max).intervals(args.retry_interval));
    }
    let queue = Queue::new(redis, args.call.queue)?;
    let when = match (args.in_secs, args.at) {
        (Some(secs), _) => {
            let delay = Duration::try_from_secs_f64(secs)
                .map_err(|_| anyhow!("--in must be a positive number of seconds"))?;
            Some(Utc::now() + chrono::Duration::from_std(delay)?)
        }
        (None, Some(at)) => Some(parse_time(&at)?),
        (None, None) => None,
    };
    let ids = match when {
        Some(at) => {
            let mut ids = Vec::with_capacity(args.count);
            for _ in 0..args.count {
                ids.push(queue.enqueue_at(spec.clone(), at).await?);
            }
            ids
        }
        None => queue.enqueue_many(vec![spec; args.count]).await?,
    };
    for id in ids {
        println!("{id}");
    }
    Ok(ExitCode::SUCCESS)
}

/// RFC 3339 or Unix seconds.
fn parse_time(text: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(secs) = text.parse::<i64>() {
        return DateTime::from_timestamp(secs, 0)
            .ok_or_else(|| anyhow!("--at {text} is out of range"));
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .with_context(|| {
            format!("--at {text:?} is neither RFC 3339 (2026-11-28T15:00:00Z) nor Unix seconds")
        })
}

async fn job(command: JobCommand, redis: RedisClient) -> anyhow::Result<ExitCode> {
    match command {
        JobCommand::Show { id, json } => {
            let Some(view) = jobs::view(&redis, &id).await? else {
                bail!("no such job: {id}");
            };
            if json {
                println!("{}", serde_json::to_string(&view)?);
            } else {
                print!("{}", output::job_text(&view));
            }
        }
        JobCommand::Cancel { id } => {
            jobs::cancel(&redis, &id).await?;
            println!("canceled {id}");
        }
        JobCommand::Delete { id } => {
            jobs::delete(&redis, &id).await?;
            println!("deleted {id}");
        }
        JobCommand::Stop { id } => {
            jobs::stop(&redis, &id).await?;
            println!("stop requested for {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn requeue(args: RequeueArgs, redis: RedisClient) -> anyhow::Result<ExitCode> {
    if args.all {
        let queues = match args.queue {
            Some(q) => vec![q],
            None => info::queues(&redis)
                .await?
                .into_iter()
                .map(|q| q.name)
                .collect(),
        };
        let mut total = 0;
        for q in queues {
            total += Queue::new(redis.clone(), q)?.requeue_failed().await?;
        }
        println!("{total} jobs requeued");
        return Ok(ExitCode::SUCCESS);
    }
    let mut failures = 0;
    for id in &args.ids {
        match jobs::requeue(&redis, id).await {
            Ok(()) => println!("requeued {id}"),
            Err(e) => {
                eprintln!("cannot requeue {id}: {e}");
                failures += 1;
            }
        }
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse() {
        assert_eq!(parse_time("0").expect("unix").timestamp(), 0);
        assert_eq!(
            parse_time("2026-11-28T15:00:00Z").expect("rfc").timestamp(),
            1795878000
        );
        assert!(parse_time("tomorrow").is_err());
    }

    #[test]
    fn intervals_are_finite_and_not_too_short() {
        assert_eq!(parse_interval("0.2"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_interval("0.1"), Ok(Duration::from_millis(100)));
        for bad in ["0", "0.09", "-1", "inf", "NaN", "1e300", "soon"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }
}
