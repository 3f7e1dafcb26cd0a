//! The event bus writer: a run's events go to the stream Redis as
//! `XADD <stream> MAXLEN ~ <maxlen> * event_type <type> body <JSON>` (the wire format of
//! hdx-redis-lib, which HDX's consumers read).
//!
//! Unlike the old service, which logged and dropped events when Redis failed, a push either lands
//! or fails the job so it is retried, and it lands once: one Lua script appends all of a run's
//! events and records a marker for the run (the job id), so a retry after a failure, or after a
//! timeout that hid a success, appends nothing twice. Failed attempts are retried a few times
//! with backoff inside the job before the job itself fails.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use tokio::sync::Mutex;

use super::event::ChangeEvent;
use crate::config::EventsConfig;
use crate::connection::mask_password;
use crate::retry::{retry, Backoff, Limits, RetryError, Verdict};

/// The Lua script of a push (tests preload it with `SCRIPT LOAD`).
pub const PUSH_SCRIPT: &str = include_str!("push.lua");

/// How a run's marker is named: `hdx_jobs:events_pushed:<stream>:<run id>`.
pub const MARKER_PREFIX: &str = "hdx_jobs:events_pushed:";

/// Settings of an [`EventBus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventBusOptions {
    /// `redis://host:port/db` of the stream Redis.
    pub url: String,
    /// The stream (`hdx_event_stream`).
    pub stream: String,
    /// Approximate cap of the stream (`MAXLEN ~`).
    pub maxlen: u64,
    /// How long a run's marker is kept (retries of a job must come within it).
    pub marker_ttl: Duration,
    /// Connect and reply timeout of each attempt.
    pub timeout: Duration,
    /// Attempts of a push and the waits between them (every Redis error is retried: the push
    /// is idempotent per run).
    pub retry: Backoff,
}

impl EventBusOptions {
    /// The deployed settings: the configured stream, markers kept 7 days, 10 s per attempt, four
    /// attempts 0.5, 1 and 2 s apart.
    pub fn from_config(config: &EventsConfig) -> Self {
        EventBusOptions {
            url: config.stream_url.clone(),
            stream: config.stream_name.clone(),
            maxlen: config.maxlen,
            marker_ttl: Duration::from_secs(7 * 24 * 3600),
            timeout: Duration::from_secs(10),
            retry: Backoff {
                attempts: 4,
                base: Duration::from_millis(500),
                max: Duration::from_secs(2),
                jitter: false,
            },
        }
    }
}

/// Failures of the event bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The URL does not parse.
    #[error("bad stream Redis URL {url}: {message}")]
    Url {
        /// The URL, password hidden.
        url: String,
        /// Why.
        message: String,
    },
    /// Redis failed on every attempt.
    #[error("cannot push {events} events to stream {stream} at {url} after {attempts} attempts: {message}")]
    Redis {
        /// The stream.
        stream: String,
        /// The URL, password hidden.
        url: String,
        /// How many events.
        events: usize,
        /// Attempts made.
        attempts: usize,
        /// The last error.
        message: String,
    },
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushOutcome {
    /// True when this call appended the events; false when an earlier call for the same run had
    /// (or there was nothing to push).
    pub appended: bool,
    /// The stream entry ids of the run's events.
    pub ids: Vec<String>,
}

/// A writer of the event stream. Cheap to share (`Arc`); one multiplexed connection, made again
/// after a failure.
pub struct EventBus {
    client: redis::Client,
    options: EventBusOptions,
    script: redis::Script,
    conn: Mutex<Option<MultiplexedConnection>>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("url", &mask_password(&self.options.url))
            .field("stream", &self.options.stream)
            .finish()
    }
}

impl EventBus {
    /// A bus with these options; no connection is made until the first push.
    pub fn new(options: EventBusOptions) -> Result<Self, BusError> {
        let client = redis::Client::open(options.url.as_str()).map_err(|e| BusError::Url {
            url: mask_password(&options.url),
            message: e.to_string(),
        })?;
        Ok(EventBus {
            client,
            options,
            script: redis::Script::new(PUSH_SCRIPT),
            conn: Mutex::new(None),
        })
    }

    /// The stream name.
    pub fn stream(&self) -> &str {
        &self.options.stream
    }

    /// The marker key of a run.
    pub fn marker_key(&self, run_id: &str) -> String {
        format!("{MARKER_PREFIX}{}:{run_id}", self.options.stream)
    }

    /// Pushes a run's events (with retries): they are appended once per `run_id`, however often
    /// this is called.
    pub async fn push(
        &self,
        run_id: &str,
        events: &[ChangeEvent],
    ) -> Result<PushOutcome, BusError> {
        let entries: Vec<(String, String)> = events
            .iter()
            .map(|e| {
                let body = serde_json::to_string(e).unwrap_or_else(|_| "null".into());
                (e.event_type.to_string(), body)
            })
            .collect();
        self.push_entries(run_id, &entries).await
    }

    /// Pushes `(event_type, body)` entries for a run, retrying failed attempts as
    /// [`EventBusOptions::retry`] says.
    pub async fn push_entries(
        &self,
        run_id: &str,
        entries: &[(String, String)],
    ) -> Result<PushOutcome, BusError> {
        if entries.is_empty() {
            return Ok(PushOutcome {
                appended: false,
                ids: Vec::new(),
            });
        }
        let pushed = retry(
            &self.options.retry,
            Limits::default(),
            |attempt| async move {
                let result = self.push_once(run_id, entries).await;
                if let Err(e) = &result {
                    tracing::warn!(
                        stream = %self.options.stream,
                        run = run_id,
                        attempt,
                        "event push failed: {e}"
                    );
                }
                result
            },
            |_| Verdict::RETRY,
            |_, _| {},
        )
        .await;
        pushed.map_err(|e| {
            let (attempts, message) = match e {
                RetryError::Failed {
                    error, attempts, ..
                } => (attempts, error.to_string()),
                RetryError::Cancelled { attempts } => (attempts, "cancelled".into()),
            };
            BusError::Redis {
                stream: self.options.stream.clone(),
                url: mask_password(&self.options.url),
                events: entries.len(),
                attempts: attempts as usize,
                message,
            }
        })
    }

    /// One attempt: the script appends every entry and sets the marker, or, when the marker is
    /// there, appends nothing.
    pub async fn push_once(
        &self,
        run_id: &str,
        entries: &[(String, String)],
    ) -> Result<PushOutcome, redis::RedisError> {
        let mut conn = self.connection().await?;
        let mut invocation = self.script.key(&self.options.stream);
        invocation
            .key(self.marker_key(run_id))
            .arg(self.options.maxlen)
            .arg(self.options.marker_ttl.as_secs().max(1));
        for (event_type, body) in entries {
            invocation.arg(event_type).arg(body);
        }
        let result: Result<(i64, String), _> = invocation.invoke_async(&mut conn).await;
        match result {
            Ok((appended, ids)) => Ok(PushOutcome {
                appended: appended == 1,
                ids: ids.split(' ').map(str::to_string).collect(),
            }),
            Err(e) => {
                // The connection may be broken (or a reply may arrive late on it): start afresh.
                *self.conn.lock().await = None;
                Err(e)
            }
        }
    }

    async fn connection(&self) -> Result<MultiplexedConnection, redis::RedisError> {
        let mut cached = self.conn.lock().await;
        if let Some(conn) = cached.as_ref() {
            return Ok(conn.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.options.timeout))
            .set_response_timeout(Some(self.options.timeout));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *cached = Some(conn.clone());
        Ok(conn)
    }
}
