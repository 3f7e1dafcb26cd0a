//! Errors of the RQ layer.

use super::payload::PayloadError;

/// What can go wrong talking RQ's protocol.
#[derive(Debug, thiserror::Error)]
pub enum RqError {
    /// Redis answered with an error or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A payload, meta or result could not be encoded or decoded.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// A job id outside RQ 2.x's `[A-Za-z0-9_-]+`.
    #[error("invalid job id {0:?}: RQ 2.x accepts only letters, digits, '_' and '-'")]
    InvalidJobId(String),
    /// A queue name that RQ's key layout cannot hold.
    #[error("invalid queue name {0:?}: use letters, digits, '_', '-' and '.'")]
    InvalidQueueName(String),
    /// The job does not exist (its hash is gone).
    #[error("no such job: {0}")]
    NoSuchJob(String),
    /// The operation does not apply to the job in its current state.
    #[error("{0}")]
    Refused(String),
    /// A caller-supplied value is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl RqError {
    /// True when the error is a lost or refused connection, worth retrying after a pause.
    pub fn is_connection_error(&self) -> bool {
        match self {
            RqError::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                    || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
            }
            _ => false,
        }
    }
}

/// Result of the RQ layer.
pub type RqResult<T> = Result<T, RqError>;

/// Converts one reply of a pipeline whose replies differ in type (read as raw values).
pub(crate) fn from_value<T: redis::FromRedisValue>(value: redis::Value) -> RqResult<T> {
    redis::from_redis_value(value).map_err(|e| redis::RedisError::from(e).into())
}
