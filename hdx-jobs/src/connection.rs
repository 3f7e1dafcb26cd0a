//! Redis connections: one pool for short commands, dedicated connections for long-lived users.
//!
//! The pool (deadpool-redis) suits callers that run a few commands and give the connection back
//! (the CLI, the HTTP server). It pings a connection each time it is taken, so hot loops (the
//! worker) take a multiplexed connection once and share it between their tasks instead; blocking
//! commands and pub/sub get connections of their own so they never stall other traffic.

use std::time::Duration;

use deadpool_redis::{Manager, Pool, Runtime};
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

use crate::rq::error::{RqError, RqResult};

/// How long a normal command may take before the connection is considered broken. Generous,
/// because a batch enqueue of many thousand jobs is one long reply.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A handle on one Redis database: cheap to clone, shared by everything in a process.
#[derive(Clone)]
pub struct RedisClient {
    client: redis::Client,
    pool: Pool,
    display_url: String,
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClient")
            .field("url", &self.display_url)
            .finish()
    }
}

impl RedisClient {
    /// Opens a client for a `redis://host:port/db` URL. No connection is made until first use.
    pub fn open(url: &str) -> RqResult<Self> {
        let client = redis::Client::open(url)?;
        let config = connection_config(Some(RESPONSE_TIMEOUT));
        let manager = Manager::new_with_config(url, config)?;
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| RqError::Pool(e.to_string()))?;
        Ok(RedisClient {
            client,
            pool,
            display_url: mask_password(url),
        })
    }

    /// A pooled connection for a few commands.
    pub async fn conn(&self) -> RqResult<PooledConnection> {
        Ok(self.pool.get().await?)
    }

    /// A connection of the caller's own, multiplexed (clone it to share it between tasks).
    /// `response_timeout` of `None` suits blocking commands.
    pub async fn dedicated(
        &self,
        response_timeout: Option<Duration>,
    ) -> RqResult<MultiplexedConnection> {
        let config = connection_config(response_timeout);
        Ok(self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }

    /// A pub/sub connection.
    pub async fn pubsub(&self) -> RqResult<redis::aio::PubSub> {
        Ok(self.client.get_async_pubsub().await?)
    }

    /// The URL with any password replaced by `***`, for logs and output.
    pub fn display_url(&self) -> &str {
        &self.display_url
    }

    /// The database number this client uses.
    pub fn db(&self) -> i64 {
        self.client.get_connection_info().redis_settings().db()
    }
}

/// A connection taken from the pool.
pub type PooledConnection = deadpool_redis::Connection;

/// Checks that Redis answers.
pub async fn ping<C: redis::aio::ConnectionLike + Send>(conn: &mut C) -> RqResult<()> {
    let _: String = redis::cmd("PING").query_async(conn).await?;
    Ok(())
}

fn connection_config(response_timeout: Option<Duration>) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(response_timeout)
}

/// Hides the password of a URL: `redis://:secret@host` -> `redis://:***@host`.
pub fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}")
            } else {
                format!("{scheme}://***@{host}")
            }
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_passwords() {
        assert_eq!(
            mask_password("redis://:s3cret@host:6379/1"),
            "redis://:***@host:6379/1"
        );
        assert_eq!(
            mask_password("redis://user:pw@host/1"),
            "redis://user:***@host/1"
        );
        assert_eq!(mask_password("redis://host:6379/1"), "redis://host:6379/1");
    }
}
