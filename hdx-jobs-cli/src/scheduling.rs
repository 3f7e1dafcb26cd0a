//! `hdx-jobs scheduler` (a standalone scheduler process) and `hdx-jobs schedule` (periodic
//! jobs: add, list, remove).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand, ValueEnum};
use hdx_jobs::rq::scheduler::periodic::{self, Misfire, PeriodicJob, Schedule};
use hdx_jobs::rq::scheduler::{Queues, Scheduler, SchedulerOptions};
use hdx_jobs::RedisClient;
use tokio_util::sync::CancellationToken;

use crate::commands::TaskCall;

/// `hdx-jobs scheduler`.
#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Queues whose delayed jobs to enqueue (default: every queue).
    pub queues: Vec<String>,
    /// Seconds between rounds.
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// Seconds a dead scheduler's locks last before another takes over.
    #[arg(long, default_value_t = 15)]
    pub lock_ttl: u64,
    /// Periods overdue by more seconds than this count as missed and follow the job's misfire
    /// policy.
    #[arg(long, default_value_t = 300)]
    pub misfire_grace: u64,
    /// A TOML file of `[[periodic]]` jobs to declare at start.
    #[arg(long, env = "HDX_JOBS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Do not fire periodic jobs.
    #[arg(long)]
    pub no_periodic: bool,
    /// Do not enqueue jobs waiting in the rq-scheduler package's set.
    #[arg(long)]
    pub no_legacy: bool,
}

/// `hdx-jobs schedule ...`.
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Add (or replace) a periodic job.
    Add(AddArgs),
    /// List periodic jobs with their next run.
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Remove a periodic job.
    Remove {
        /// Its id.
        id: String,
    },
}

/// `hdx-jobs schedule add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// The periodic job's id.
    pub id: String,
    /// What each period runs, and where.
    #[command(flatten)]
    pub call: TaskCall,
    /// A 5-field cron expression.
    #[arg(long, required_unless_present = "every", conflicts_with = "every")]
    pub cron: Option<String>,
    /// Time zone of the cron expression (IANA name).
    #[arg(long = "tz", default_value = "UTC", requires = "cron")]
    pub timezone: String,
    /// Period in seconds.
    #[arg(long)]
    pub every: Option<u64>,
    /// What to do with periods missed while no scheduler ran.
    #[arg(long, value_enum, default_value_t = MisfireArg::FireOnce)]
    pub misfire: MisfireArg,
    /// Timeout of its jobs in seconds.
    #[arg(long, allow_negative_numbers = true)]
    pub timeout: Option<i64>,
}

/// Misfire policies.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MisfireArg {
    /// Fire once for the latest missed period.
    FireOnce,
    /// Skip missed periods.
    Skip,
}

pub(crate) async fn scheduler(args: SchedulerArgs, redis: RedisClient) -> anyhow::Result<ExitCode> {
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let jobs = periodic::parse_toml(&text)?;
        let mut conn = redis.conn().await?;
        for job in &jobs {
            periodic::save(&mut conn, job).await?;
        }
        tracing::info!(file = %path.display(), jobs = jobs.len(), "periodic jobs declared");
    }
    let options = SchedulerOptions {
        queues: if args.queues.is_empty() {
            Queues::All
        } else {
            Queues::Only(args.queues)
        },
        interval: Duration::try_from_secs_f64(args.interval)
            .map_err(|_| anyhow!("--interval must be positive"))?,
        lock_ttl: Duration::from_secs(args.lock_ttl.max(1)),
        periodic: !args.no_periodic,
        legacy: !args.no_legacy,
        misfire_grace: Duration::from_secs(args.misfire_grace),
    };
    let stop = CancellationToken::new();
    let scheduler = Scheduler::new(redis, options);
    let signals = stop.clone();
    tokio::spawn(async move {
        hdx_jobs::signals::shutdown_signal().await;
        signals.cancel();
    });
    scheduler.run(stop).await;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn schedule(
    command: ScheduleCommand,
    redis: RedisClient,
) -> anyhow::Result<ExitCode> {
    let mut conn = redis.conn().await?;
    match command {
        ScheduleCommand::Add(add) => {
            let (args, kwargs) = add.call.arguments()?;
            let job = PeriodicJob {
                id: add.id,
                queue: add.call.queue,
                func: add.call.func,
                args,
                kwargs,
                schedule: match (add.cron, add.every) {
                    (Some(cron), _) => Schedule::Cron {
                        cron,
                        timezone: add.timezone,
                    },
                    (None, Some(every)) => Schedule::Every { every },
                    (None, None) => return Err(anyhow!("give --cron or --every")),
                },
                misfire: match add.misfire {
                    MisfireArg::FireOnce => Misfire::FireOnce,
                    MisfireArg::Skip => Misfire::Skip,
                },
                timeout: add.timeout,
            };
            periodic::save(&mut conn, &job).await?;
            println!("scheduled {}", job.id);
        }
        ScheduleCommand::List { json } => {
            let jobs = periodic::list(&mut conn).await?;
            if json {
                println!("{}", serde_json::to_string(&jobs)?);
            } else {
                for entry in &jobs {
                    let when = match &entry.job.schedule {
                        Schedule::Cron { cron, timezone } => format!("cron '{cron}' ({timezone})"),
                        Schedule::Every { every } => format!("every {every} s"),
                    };
                    let next = entry
                        .next_run
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| "-".into());
                    println!(
                        "{}  {}  {}  {when}  next {next}",
                        entry.job.id, entry.job.queue, entry.job.func
                    );
                }
                println!("{} periodic jobs", jobs.len());
            }
        }
        ScheduleCommand::Remove { id } => {
            if periodic::remove(&mut conn, &id).await? {
                println!("removed {id}");
            } else {
                return Err(anyhow!("no periodic job {id}"));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
