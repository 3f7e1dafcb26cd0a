//! Redis connections: one shared, self-healing multiplexed connection per client, and
//! dedicated connections for long-lived users.
//!
//! A multiplexed connection already serves any number of concurrent callers, so there is no
//! pool: [`RedisClient::conn`] hands out clones of one `ConnectionManager`, which reconnects
//! with backoff after Redis goes away. (A pool such as deadpool-redis pings every connection it
//! lends, doubling the round trips of a one-command request.) Blocking commands and pub/sub get
//! connections of their own so they never stall other traffic.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::AsyncConnectionConfig;
use tokio::sync::OnceCell;

use crate::rq::error::RqResult;

/// How long a normal command may take before the connection is considered broken. Generous,
/// because a batch enqueue of many thousand jobs is one long reply.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The shared connection handed out by [`RedisClient::conn`].
pub type RedisConnection = ConnectionManager;

/// A handle on one Redis database: cheap to clone, shared by everything in a process.
#[derive(Clone)]
pub struct RedisClient {
    client: redis::Client,
    shared: Arc<OnceCell<ConnectionManager>>,
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
        Ok(RedisClient {
            client,
            shared: Arc::new(OnceCell::new()),
            display_url: mask_password(url),
        })
    }

    /// The shared connection (clone it freely; it reconnects by itself after failures).
    pub async fn conn(&self) -> RqResult<RedisConnection> {
        let manager = self
            .shared
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(3)
                    .set_max_delay(Duration::from_secs(2));
                ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            })
            .await?;
        Ok(manager.clone())
    }

    /// A connection of the caller's own, multiplexed (clone it to share it between tasks).
    /// `response_timeout` of `None` suits blocking commands.
    pub async fn dedicated(
        &self,
        response_timeout: Option<Duration>,
    ) -> RqResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(response_timeout);
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

/// Checks that Redis answers.
pub async fn ping<C: redis::aio::ConnectionLike + Send>(conn: &mut C) -> RqResult<()> {
    let _: String = redis::cmd("PING").query_async(conn).await?;
    Ok(())
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
