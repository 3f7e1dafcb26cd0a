//! The per-queue job registries (docs/rq-protocol.md §1): sorted sets of job ids whose scores are
//! expiry deadlines (finished, failed), enqueue times (scheduled) or registration times.

use redis::aio::ConnectionLike;
use serde::Serialize;

use super::error::RqResult;

/// One of a queue's registries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Registry {
    /// Running jobs (`rq:wip:<q>`, members `<id>` or `<id>:<execution id>` (see
    /// [`StartedEntry`]), scores are lease deadlines).
    Started,
    /// Finished jobs, until their result TTL.
    Finished,
    /// Failed and stopped jobs, until their failure TTL.
    Failed,
    /// Jobs waiting for dependencies.
    Deferred,
    /// Jobs waiting for their time (delayed jobs, retry intervals).
    Scheduled,
    /// Canceled jobs.
    Canceled,
}

impl Registry {
    /// Every registry, in display order.
    pub const ALL: [Registry; 6] = [
        Registry::Started,
        Registry::Finished,
        Registry::Failed,
        Registry::Deferred,
        Registry::Scheduled,
        Registry::Canceled,
    ];

    /// The registry's name as operators see it.
    pub fn name(&self) -> &'static str {
        match self {
            Registry::Started => "started",
            Registry::Finished => "finished",
            Registry::Failed => "failed",
            Registry::Deferred => "deferred",
            Registry::Scheduled => "scheduled",
            Registry::Canceled => "canceled",
        }
    }

    /// Parses a registry name (`wip` is accepted for started).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "wip" => Some(Registry::Started),
            _ => Registry::ALL.into_iter().find(|r| r.name() == name),
        }
    }

    /// The sorted-set key of this registry for a queue.
    pub fn key(&self, queue: &str) -> String {
        match self {
            Registry::Started => format!("rq:wip:{queue}"),
            other => format!("rq:{}:{queue}", other.name()),
        }
    }

    /// How many entries the registry holds.
    pub async fn count<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        queue: &str,
    ) -> RqResult<u64> {
        Ok(redis::cmd("ZCARD")
            .arg(self.key(queue))
            .query_async(conn)
            .await?)
    }

    /// Job ids in score order, paged. Started-registry members are reduced to their job id.
    pub async fn job_ids<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        queue: &str,
        offset: u64,
        limit: u64,
    ) -> RqResult<Vec<String>> {
        let stop = if limit == 0 {
            -1
        } else {
            (offset + limit) as i64 - 1
        };
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.key(queue))
            .arg(offset)
            .arg(stop)
            .query_async(conn)
            .await?;
        Ok(members
            .into_iter()
            .map(|m| member_job_id(&m).to_string())
            .collect())
    }
}

/// How a worker writes its running jobs into the started registry (`rq:wip:<q>`).
///
/// RQ 2.x workers write `<job id>:<execution id>`; RQ 1.x workers and readers (rq-dashboard
/// 0.7, `rq info` 1.13, RQ 1.13's own cleanup) know only the bare job id, and find nothing, or
/// silently drop the lease, under the composite form. RQ 2.x reads both forms. So the bare id is
/// the default: every Python peer lists and recovers our running jobs. Either way, the worker
/// keeps its own execution identity (the bare form names it in the job hash's `hdx_lease`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartedEntry {
    /// `<job id>`: read by RQ 1.x and 2.x (the default).
    #[default]
    JobId,
    /// `<job id>:<execution id>`, as Python RQ 2.x workers write.
    Execution,
}

impl std::str::FromStr for StartedEntry {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "job" | "job_id" | "rq1" => Ok(StartedEntry::JobId),
            "execution" | "rq2" => Ok(StartedEntry::Execution),
            other => Err(format!(
                "unknown started-registry entry {other:?} (expected job or execution)"
            )),
        }
    }
}

/// The job id of a started-registry member: `<id>:<execution id>` in 2.x, `<id>` in 1.13.
pub fn member_job_id(member: &str) -> &str {
    member.split_once(':').map_or(member, |(id, _)| id)
}

/// Splits a started-registry member into job id and execution id (`""` for 1.13 members).
pub fn split_member(member: &str) -> (&str, &str) {
    member.split_once(':').unwrap_or((member, ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_members() {
        assert_eq!(Registry::Started.key("geo_q"), "rq:wip:geo_q");
        assert_eq!(Registry::Failed.key("geo_q"), "rq:failed:geo_q");
        assert_eq!(Registry::parse("wip"), Some(Registry::Started));
        assert_eq!(Registry::parse("canceled"), Some(Registry::Canceled));
        assert_eq!(member_job_id("job-1:52e0"), "job-1");
        assert_eq!(split_member("job-1"), ("job-1", ""));
    }
}
