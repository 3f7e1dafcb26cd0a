//! Worker commands over pub/sub (docs/rq-protocol.md §5.9) and suspension (`rq:suspended`).

use serde::{Deserialize, Serialize};

use super::error::RqResult;
use super::keys;
use super::payload::to_python_json;
use crate::connection::RedisClient;

/// A command to one worker, as Python's `rq.command` sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Command {
    /// Warm shutdown: finish running jobs, then exit.
    Shutdown,
    /// Kill the running job(s) ("work-horse terminated unexpectedly").
    KillHorse,
    /// Stop one running job: it ends as `stopped`, without retry.
    StopJob {
        /// The job to stop.
        job_id: String,
    },
}

impl Command {
    /// The message text, with Python's `json.dumps` spacing.
    pub fn to_message(&self) -> String {
        let value = serde_json::to_value(self).unwrap_or_default();
        String::from_utf8(to_python_json(&value)).unwrap_or_default()
    }

    /// Parses a message; `None` for unknown commands (ignored, as Python does).
    pub fn parse(message: &str) -> Option<Self> {
        serde_json::from_str(message).ok()
    }
}

/// Publishes a command to a worker; returns how many subscribers got it.
pub async fn send(redis: &RedisClient, worker: &str, command: &Command) -> RqResult<()> {
    let mut conn = redis.conn().await?;
    let _: i64 = redis::cmd("PUBLISH")
        .arg(keys::pubsub(worker))
        .arg(command.to_message())
        .query_async(&mut conn)
        .await?;
    Ok(())
}

/// Suspends every worker of the database (`rq suspend`): they finish running jobs and take no
/// new ones until resumed or until `expire` seconds pass.
pub async fn suspend(redis: &RedisClient, expire: Option<u64>) -> RqResult<()> {
    let mut conn = redis.conn().await?;
    let mut cmd = redis::cmd("SET");
    cmd.arg(keys::SUSPENDED).arg(1);
    if let Some(secs) = expire {
        cmd.arg("EX").arg(secs);
    }
    let () = cmd.query_async(&mut conn).await?;
    Ok(())
}

/// Resumes suspended workers.
pub async fn resume(redis: &RedisClient) -> RqResult<()> {
    let mut conn = redis.conn().await?;
    let _: i64 = redis::cmd("DEL")
        .arg(keys::SUSPENDED)
        .query_async(&mut conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/rq-protocol.md §9: exact pub/sub payloads.
    #[test]
    fn messages_match_python() {
        assert_eq!(
            Command::StopJob {
                job_id: "job-1".into()
            }
            .to_message(),
            r#"{"command": "stop-job", "job_id": "job-1"}"#
        );
        assert_eq!(Command::Shutdown.to_message(), r#"{"command": "shutdown"}"#);
        assert_eq!(
            Command::KillHorse.to_message(),
            r#"{"command": "kill-horse"}"#
        );
        assert_eq!(
            Command::parse(r#"{"command": "shutdown"}"#),
            Some(Command::Shutdown)
        );
        assert_eq!(Command::parse(r#"{"command": "dance"}"#), None);
        assert_eq!(Command::parse("not json"), None);
    }
}
