//! A multiplexed connection shared by a worker's tasks that reconnects, with backoff, after
//! Redis goes away.
//!
//! redis-rs' multiplexed connection stays broken once its socket closes. Every worker task uses
//! [`SharedConnection::run`], which hands out the current connection, and on a connection error
//! drops it so the next caller dials again, pausing with exponential backoff and jitter between
//! failed attempts.

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;

use crate::connection::RedisClient;
use crate::rq::error::RqResult;

/// First pause after a failure.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest pause between attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Exponential backoff with jitter.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff {
            next: BACKOFF_START,
        }
    }

    /// The pause to take now (between half and all of the current step); doubles the step.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        let jitter = rand::rng().random_range(0.5..=1.0);
        step.mul_f64(jitter)
    }

    pub(crate) fn reset(&mut self) {
        self.next = BACKOFF_START;
    }
}

/// One reconnecting connection.
pub(crate) struct SharedConnection {
    redis: RedisClient,
    response_timeout: Option<Duration>,
    current: Mutex<Option<MultiplexedConnection>>,
}

impl SharedConnection {
    pub(crate) fn new(redis: RedisClient, response_timeout: Option<Duration>) -> Self {
        SharedConnection {
            redis,
            response_timeout,
            current: Mutex::new(None),
        }
    }

    /// The current connection, dialing if there is none.
    pub(crate) async fn get(&self) -> RqResult<MultiplexedConnection> {
        let mut current = self.current.lock().await;
        if let Some(conn) = current.as_ref() {
            return Ok(conn.clone());
        }
        let conn = self.redis.dedicated(self.response_timeout).await?;
        *current = Some(conn.clone());
        Ok(conn)
    }

    /// Forgets the connection after an error on it, so the next `get` dials again.
    pub(crate) async fn reset(&self) {
        *self.current.lock().await = None;
    }

    /// Runs `op` once; a connection error resets the connection before being returned.
    pub(crate) async fn run<T, F, Fut>(&self, op: F) -> RqResult<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RqResult<T>>,
    {
        let conn = self.get().await?;
        let result = op(conn).await;
        if let Err(e) = &result {
            if e.is_connection_error() {
                self.reset().await;
            }
        }
        result
    }

    /// Runs `op` until it succeeds or fails with something other than a connection error,
    /// backing off between attempts; gives up with the last error when `give_up()` turns true.
    pub(crate) async fn run_retrying<T, F, Fut>(
        &self,
        what: &str,
        mut op: F,
        give_up: impl Fn() -> bool,
    ) -> RqResult<T>
    where
        F: FnMut(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RqResult<T>>,
    {
        let mut backoff = Backoff::new();
        loop {
            match self.run(&mut op).await {
                Err(e) if e.is_connection_error() && !give_up() => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "redis unavailable while {what}");
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_cap() {
        let mut b = Backoff::new();
        let first = b.next_delay();
        assert!(first <= BACKOFF_START && first >= BACKOFF_START / 2);
        for _ in 0..20 {
            assert!(b.next_delay() <= BACKOFF_MAX);
        }
        b.reset();
        assert!(b.next_delay() <= BACKOFF_START);
    }
}
