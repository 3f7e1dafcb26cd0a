//! `hdx-jobs events`: the event bus from the command line. `listen` is a consumer of the stream
//! (the old `read_redis_stream.py`, at least once); `diff` prints the events two dataset dicts
//! give, without pushing them (for operators and tests).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use hdx_jobs::config::Config;
use hdx_jobs::events::consumer::{
    Consumer, ConsumerOptions, EventHandler, PrintHandler, WebhookHandler,
};
use hdx_jobs::events::{detect_changes, event_time_now};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// `hdx-jobs events ...`.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Read the event stream with a consumer group: print each event as a JSON line, or POST
    /// `{"events": [event]}` to a webhook; acknowledged only once handled.
    Listen(ListenArgs),
    /// Print the change events between two dataset dicts (a JSON array); nothing is pushed.
    Diff(DiffArgs),
}

/// `hdx-jobs events listen`.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Stream Redis URL (default: REDIS_STREAM_URL, else REDIS_STREAM_HOST/PORT/DB).
    #[arg(long)]
    pub stream_url: Option<String>,
    /// The stream (default: REDIS_STREAM_STREAM_NAME, else hdx_event_stream).
    #[arg(long)]
    pub stream: Option<String>,
    /// Consumer group (default: REDIS_STREAM_GROUP_NAME, else default_group).
    #[arg(long)]
    pub group: Option<String>,
    /// Consumer name in the group (default: REDIS_STREAM_CONSUMER_NAME, else consumer-1).
    #[arg(long)]
    pub consumer: Option<String>,
    /// Only these event types (repeatable); others are acknowledged and skipped.
    #[arg(long = "type", value_name = "TYPE")]
    pub types: Vec<String>,
    /// POST each event to this URL instead of printing it.
    #[arg(long)]
    pub webhook: Option<String>,
    /// Seconds a webhook call may take.
    #[arg(long, default_value_t = 30.0)]
    pub webhook_timeout: f64,
    /// Seconds an unacknowledged event waits before it is delivered again (by any consumer).
    #[arg(long, default_value_t = 60.0)]
    pub claim_idle: f64,
    /// Events read per call.
    #[arg(long, default_value_t = 10)]
    pub batch: usize,
}

/// `hdx-jobs events diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The old dataset dict, a JSON file (omit for a new dataset).
    #[arg(long)]
    pub old: Option<PathBuf>,
    /// The new dataset dict, a JSON file.
    #[arg(long)]
    pub new: PathBuf,
    /// The user who made the change (`initiator_user_name`).
    #[arg(long, default_value = "")]
    pub user: String,
}

pub(crate) async fn run(command: EventsCommand, config: &Config) -> anyhow::Result<ExitCode> {
    match command {
        EventsCommand::Diff(args) => diff(args),
        EventsCommand::Listen(args) => listen(args, config).await,
    }
}

fn read_json(path: &PathBuf) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

fn diff(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let old = match &args.old {
        Some(path) => read_json(path)?,
        None => Value::Null,
    };
    let new = read_json(&args.new)?;
    let events = detect_changes(&Value::from(args.user), &old, &new, &event_time_now())?;
    println!("{}", serde_json::to_string_pretty(&events)?);
    Ok(ExitCode::SUCCESS)
}

async fn listen(args: ListenArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let seconds = |value: f64, flag: &str| {
        Duration::try_from_secs_f64(value)
            .map_err(|_| anyhow!("--{flag} must be a positive number of seconds"))
    };
    let mut options = ConsumerOptions::from_config(&config.events);
    if let Some(url) = args.stream_url {
        options.url = url;
    }
    if let Some(stream) = args.stream {
        options.stream = stream;
    }
    if let Some(group) = args.group {
        options.group = group;
    }
    if let Some(consumer) = args.consumer {
        options.consumer = consumer;
    }
    options.types = args.types;
    options.batch = args.batch.max(1);
    options.claim_idle = seconds(args.claim_idle, "claim-idle")?;
    let consumer = Consumer::new(options)?;
    let handler: Box<dyn EventHandler> = match args.webhook {
        Some(url) => Box::new(WebhookHandler::new(
            url,
            &config.ckan.user_agent,
            seconds(args.webhook_timeout, "webhook-timeout")?,
        )),
        None => Box::new(PrintHandler),
    };
    let stop = CancellationToken::new();
    tokio::spawn(cancel_on_signals(stop.clone()));
    let stats = consumer.run(handler.as_ref(), stop).await;
    tracing::info!(
        handled = stats.handled,
        failed = stats.failed,
        skipped = stats.skipped,
        dropped = stats.dropped,
        claimed = stats.claimed,
        "listener stopped"
    );
    Ok(ExitCode::SUCCESS)
}

/// Cancels on SIGINT or SIGTERM (the event being handled finishes first).
async fn cancel_on_signals(stop: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            stop.cancel();
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    stop.cancel();
}
