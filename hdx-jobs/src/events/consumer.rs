//! The event bus reader (`hdx-jobs events listen`, and any Rust service that wants HDX's
//! events): a consumer group on the stream, at least once.
//!
//! The old reader (hdx-redis-lib) read with `NOACK` and acknowledged before handling, so an event
//! whose handler failed, or whose reader died, was lost. Here an entry is acknowledged only after
//! its handler succeeded; a failed one stays pending and is claimed again (`XAUTOCLAIM`) once it
//! has been idle for `claim_idle`, by this consumer or another one, which also recovers entries
//! of a consumer that crashed. At start a consumer first re-reads its own pending entries (a
//! restart under the same name resumes at once). Entries of other types than the wanted ones,
//! entries whose body is not JSON, and entries trimmed from the stream are acknowledged without
//! handling (logged), so they never block the group.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value as RedisValue};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::EventsConfig;
use crate::connection::mask_password;

/// Settings of a [`Consumer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerOptions {
    /// `redis://host:port/db` of the stream Redis.
    pub url: String,
    /// The stream.
    pub stream: String,
    /// The consumer group (created at the start of the stream when missing).
    pub group: String,
    /// This consumer's name in the group.
    pub consumer: String,
    /// Event types to handle (others are acknowledged and skipped); empty: all.
    pub types: Vec<String>,
    /// Entries read per call.
    pub batch: usize,
    /// Longest wait for new entries in one read.
    pub block: Duration,
    /// Entries pending (unacknowledged) for this long are claimed again.
    pub claim_idle: Duration,
}

impl ConsumerOptions {
    /// The configured stream, group and consumer name; batches of 10, reads blocking up to 5 s,
    /// pending entries claimed after 60 s.
    pub fn from_config(config: &EventsConfig) -> Self {
        ConsumerOptions {
            url: config.stream_url.clone(),
            stream: config.stream_name.clone(),
            group: config.group_name.clone(),
            consumer: config.consumer_name.clone(),
            types: Vec::new(),
            batch: 10,
            block: Duration::from_secs(5),
            claim_idle: Duration::from_secs(60),
        }
    }
}

/// One entry of the stream, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent {
    /// The entry id.
    pub id: String,
    /// The `event_type` field.
    pub event_type: String,
    /// The `body` field, parsed.
    pub body: Value,
}

/// A handler's failure: the entry stays pending and is delivered again later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

/// What a consumer does with each event.
#[async_trait]
pub trait EventHandler: Send + Sync {
    /// Handles one event; `Ok` acknowledges it.
    async fn handle(&self, event: &StreamEvent) -> Result<(), HandlerError>;
}

/// Prints each event's body as one JSON line on stdout.
#[derive(Debug, Default, Clone, Copy)]
pub struct PrintHandler;

#[async_trait]
impl EventHandler for PrintHandler {
    async fn handle(&self, event: &StreamEvent) -> Result<(), HandlerError> {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", event.body)
            .and_then(|()| out.flush())
            .map_err(|e| HandlerError(format!("cannot write to stdout: {e}")))
    }
}

/// POSTs `{"events": [event]}` to a webhook (the old reader's n8n hook); any answer but 2xx is a
/// failure.
#[derive(Debug, Clone)]
pub struct WebhookHandler {
    url: String,
    agent: ureq::Agent,
}

impl WebhookHandler {
    /// A handler posting to `url` with HDX's User-Agent and a timeout per call.
    pub fn new(url: impl Into<String>, user_agent: &str, timeout: Duration) -> Self {
        WebhookHandler {
            url: url.into(),
            agent: crate::http::agent(user_agent, true, timeout),
        }
    }
}

#[async_trait]
impl EventHandler for WebhookHandler {
    async fn handle(&self, event: &StreamEvent) -> Result<(), HandlerError> {
        let body = serde_json::json!({ "events": [event.body] }).to_string();
        let (agent, url) = (self.agent.clone(), self.url.clone());
        let status = tokio::task::spawn_blocking(move || {
            agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body)
                .map(|response| response.status().as_u16())
        })
        .await
        .map_err(|e| HandlerError(format!("webhook call crashed: {e}")))?
        .map_err(|e| HandlerError(format!("webhook unreachable: {e}")))?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(HandlerError(format!("webhook answered {status}")))
        }
    }
}

/// Failures that stop a consumer.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// The URL does not parse.
    #[error("bad stream Redis URL {url}: {message}")]
    Url {
        /// The URL, password hidden.
        url: String,
        /// Why.
        message: String,
    },
}

/// Counts of what a consumer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Events handled and acknowledged.
    pub handled: u64,
    /// Handler failures (those entries stayed pending).
    pub failed: u64,
    /// Entries of unwanted types, acknowledged without handling.
    pub skipped: u64,
    /// Entries without a JSON body, or trimmed from the stream, acknowledged without handling.
    pub dropped: u64,
    /// Entries taken over from idle pending ones.
    pub claimed: u64,
}

/// A consumer of the event stream.
#[derive(Debug)]
pub struct Consumer {
    client: redis::Client,
    options: ConsumerOptions,
}

/// Where a round reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// This consumer's own pending entries (at start).
    OwnPending,
    /// Idle entries of any consumer.
    Claimed,
    /// New entries.
    New,
}

impl Consumer {
    /// A consumer with these options; connects when run.
    pub fn new(options: ConsumerOptions) -> Result<Self, ConsumerError> {
        let client = redis::Client::open(options.url.as_str()).map_err(|e| ConsumerError::Url {
            url: mask_password(&options.url),
            message: e.to_string(),
        })?;
        Ok(Consumer { client, options })
    }

    /// The options.
    pub fn options(&self) -> &ConsumerOptions {
        &self.options
    }

    /// Reads and handles events until `stop` fires; Redis failures are logged and retried with
    /// backoff (the consumer outlives Redis restarts). Returns what it did.
    pub async fn run<H: EventHandler + ?Sized>(
        &self,
        handler: &H,
        stop: CancellationToken,
    ) -> ConsumerStats {
        let mut stats = ConsumerStats::default();
        let mut own_pending_done = false;
        let mut failures = 0u32;
        while !stop.is_cancelled() {
            let result = self
                .session(handler, &stop, &mut stats, &mut own_pending_done)
                .await;
            match result {
                Ok(()) => break,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let wait = Duration::from_millis(200)
                        .saturating_mul(1 << failures.min(5))
                        .min(Duration::from_secs(5));
                    tracing::warn!(
                        stream = %self.options.stream,
                        "event stream read failed ({e}); retrying in {wait:?}"
                    );
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
        stats
    }

    /// One connection's life: ends `Ok` when stopped, `Err` on a Redis failure.
    async fn session<H: EventHandler + ?Sized>(
        &self,
        handler: &H,
        stop: &CancellationToken,
        stats: &mut ConsumerStats,
        own_pending_done: &mut bool,
    ) -> Result<(), redis::RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(self.options.block + Duration::from_secs(10)));
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        self.ensure_group(&mut conn).await?;
        tracing::info!(
            stream = %self.options.stream,
            group = %self.options.group,
            consumer = %self.options.consumer,
            "listening for events"
        );
        if !*own_pending_done {
            let mut after = "0".to_string();
            loop {
                let entries = self.read(&mut conn, &after, None).await?;
                let Some(last) = entries.last() else { break };
                after = last.0.clone();
                if self
                    .process(&mut conn, handler, entries, Source::OwnPending, stop, stats)
                    .await?
                {
                    return Ok(());
                }
            }
            *own_pending_done = true;
        }
        let claim_every = (self.options.claim_idle / 2)
            .clamp(Duration::from_millis(100), Duration::from_secs(30));
        let mut next_claim = Instant::now();
        while !stop.is_cancelled() {
            if Instant::now() >= next_claim {
                let entries = self.claim(&mut conn).await?;
                if self
                    .process(&mut conn, handler, entries, Source::Claimed, stop, stats)
                    .await?
                {
                    return Ok(());
                }
                next_claim = Instant::now() + claim_every;
            }
            let block = next_claim
                .saturating_duration_since(Instant::now())
                .min(self.options.block)
                .max(Duration::from_millis(1));
            let entries = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                read = self.read(&mut conn, ">", Some(block)) => read?,
            };
            if self
                .process(&mut conn, handler, entries, Source::New, stop, stats)
                .await?
            {
                return Ok(());
            }
        }
        Ok(())
    }

    async fn ensure_group(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> Result<(), redis::RedisError> {
        let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.options.stream)
            .arg(&self.options.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(conn)
            .await;
        match created {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    /// `XREADGROUP` after `id` (`>`: new entries; an id: own pending entries after it).
    async fn read(
        &self,
        conn: &mut MultiplexedConnection,
        id: &str,
        block: Option<Duration>,
    ) -> Result<Vec<Entry>, redis::RedisError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.options.group)
            .arg(&self.options.consumer)
            .arg("COUNT")
            .arg(self.options.batch.max(1));
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(block.as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS").arg(&self.options.stream).arg(id);
        let reply: RedisValue = cmd.query_async(conn).await?;
        // [[stream, [[id, fields], ...]]] or nil
        let mut entries = Vec::new();
        if let RedisValue::Array(streams) = reply {
            for stream in streams {
                if let RedisValue::Array(mut parts) = stream {
                    if parts.len() == 2 {
                        if let RedisValue::Array(list) = parts.remove(1) {
                            entries.extend(list.into_iter().filter_map(parse_entry));
                        }
                    }
                }
            }
        }
        Ok(entries)
    }

    /// `XAUTOCLAIM` of entries idle for `claim_idle` (at most a few batches per call).
    async fn claim(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> Result<Vec<Entry>, redis::RedisError> {
        let mut cursor = "0-0".to_string();
        let mut entries = Vec::new();
        for _ in 0..10 {
            let reply: RedisValue = redis::cmd("XAUTOCLAIM")
                .arg(&self.options.stream)
                .arg(&self.options.group)
                .arg(&self.options.consumer)
                .arg(self.options.claim_idle.as_millis() as u64)
                .arg(&cursor)
                .arg("COUNT")
                .arg(self.options.batch.max(1))
                .query_async(conn)
                .await?;
            // [next cursor, [[id, fields], ...], [deleted ids]] (the last since Redis 7)
            let RedisValue::Array(mut parts) = reply else {
                break;
            };
            if parts.len() < 2 {
                break;
            }
            let list = parts.remove(1);
            let next = text(&parts[0]).unwrap_or_else(|| "0-0".into());
            if let RedisValue::Array(list) = list {
                entries.extend(list.into_iter().filter_map(parse_entry));
            }
            if next == "0-0" || entries.len() >= self.options.batch.max(1) {
                break;
            }
            cursor = next;
        }
        Ok(entries)
    }

    /// Handles entries in order; returns true when stopped part-way (the rest stay pending).
    async fn process<H: EventHandler + ?Sized>(
        &self,
        conn: &mut MultiplexedConnection,
        handler: &H,
        entries: Vec<Entry>,
        source: Source,
        stop: &CancellationToken,
        stats: &mut ConsumerStats,
    ) -> Result<bool, redis::RedisError> {
        for (id, fields) in entries {
            if stop.is_cancelled() {
                return Ok(true);
            }
            if source == Source::Claimed {
                stats.claimed += 1;
            }
            let Some(fields) = fields else {
                // Trimmed from the stream while pending: nothing left to deliver.
                stats.dropped += 1;
                self.ack(conn, &id).await?;
                continue;
            };
            let event_type = fields.get("event_type").cloned().unwrap_or_default();
            if !self.options.types.is_empty() && !self.options.types.contains(&event_type) {
                stats.skipped += 1;
                self.ack(conn, &id).await?;
                continue;
            }
            let body = fields
                .get("body")
                .and_then(|b| serde_json::from_str::<Value>(b).ok());
            let Some(body) = body else {
                tracing::error!(id, event_type, "stream entry without a JSON body: dropped");
                stats.dropped += 1;
                self.ack(conn, &id).await?;
                continue;
            };
            let event = StreamEvent {
                id: id.clone(),
                event_type,
                body,
            };
            match handler.handle(&event).await {
                Ok(()) => {
                    stats.handled += 1;
                    self.ack(conn, &id).await?;
                }
                Err(e) => {
                    stats.failed += 1;
                    tracing::warn!(
                        id,
                        event_type = %event.event_type,
                        "event not handled ({e}); it stays pending and is retried after {:?}",
                        self.options.claim_idle
                    );
                }
            }
        }
        Ok(false)
    }

    async fn ack(
        &self,
        conn: &mut MultiplexedConnection,
        id: &str,
    ) -> Result<(), redis::RedisError> {
        let _: i64 = redis::cmd("XACK")
            .arg(&self.options.stream)
            .arg(&self.options.group)
            .arg(id)
            .query_async(conn)
            .await?;
        Ok(())
    }
}

/// An entry id with its fields (`None`: trimmed from the stream).
type Entry = (String, Option<HashMap<String, String>>);

fn parse_entry(value: RedisValue) -> Option<Entry> {
    let RedisValue::Array(mut parts) = value else {
        return None;
    };
    if parts.len() != 2 {
        return None;
    }
    let fields = parts.pop()?;
    let id = text(&parts[0])?;
    let fields = match fields {
        RedisValue::Array(items) => {
            let mut map = HashMap::new();
            let mut iter = items.iter();
            while let (Some(k), Some(v)) = (iter.next(), iter.next()) {
                if let (Some(k), Some(v)) = (text(k), text(v)) {
                    map.insert(k, v);
                }
            }
            Some(map)
        }
        _ => None,
    };
    Some((id, fields))
}

fn text(value: &RedisValue) -> Option<String> {
    match value {
        RedisValue::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        RedisValue::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}
