//! A queue's jobs, or one of its registries', as an operator pages through them: the monitor's
//! job list, optionally filtered by task and status.
//!
//! A page costs two round trips whatever its size: the list's length with the page's ids, then
//! every job with its latest result in one MULTI ([`jobs::views`]). A filter cannot be answered
//! by Redis, so the list is read in chunks of [`CHUNK`] ids, each chunk's tasks and statuses in
//! one round trip (which also fetches the next chunk's ids), up to [`SCAN_LIMIT`] entries: a
//! filtered page of a huge registry stays bounded in time and memory, and says how much of the
//! list it has looked at.

use redis::aio::ConnectionLike;
use redis::Value;

use super::error::{from_value, RqError, RqResult};
use super::job::{Job, JobStatus};
use super::jobs::{self, JobView};
use super::keys;
use super::registry::{member_job_id, Registry};
use crate::connection::RedisClient;

/// Ids read per round trip while filtering.
pub const CHUNK: u64 = 1_000;
/// Entries a filtered listing looks at, at most.
pub const SCAN_LIMIT: u64 = 10_000;

/// A list of jobs: the waiting list or a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobList {
    /// `rq:queue:<q>`, in order.
    Queued,
    /// One of the queue's registries, by score.
    Registry(Registry),
}

impl JobList {
    /// `queued`, or a registry name (see [`Registry::parse`]).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "queued" => Some(JobList::Queued),
            other => Registry::parse(other).map(JobList::Registry),
        }
    }

    /// The list's name.
    pub fn name(&self) -> &'static str {
        match self {
            JobList::Queued => "queued",
            JobList::Registry(r) => r.name(),
        }
    }

    fn key(&self, queue: &str) -> String {
        match self {
            JobList::Queued => keys::queue(queue),
            JobList::Registry(r) => r.key(queue),
        }
    }

    fn count_cmd(&self, queue: &str) -> redis::Cmd {
        let mut cmd = redis::cmd(match self {
            JobList::Queued => "LLEN",
            JobList::Registry(_) => "ZCARD",
        });
        cmd.arg(self.key(queue));
        cmd
    }

    /// Entries `offset .. offset + limit` (never empty-ranged: `limit` ≥ 1).
    fn range_cmd(&self, queue: &str, offset: u64, limit: u64) -> redis::Cmd {
        let mut cmd = redis::cmd(match self {
            JobList::Queued => "LRANGE",
            JobList::Registry(_) => "ZRANGE",
        });
        cmd.arg(self.key(queue))
            .arg(offset)
            .arg(offset + limit.max(1) - 1);
        cmd
    }
}

/// What the jobs of a page must match (every given condition).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// The task's wire name.
    pub task: Option<String>,
    /// The job's status.
    pub status: Option<JobStatus>,
}

impl Filter {
    /// True when nothing is filtered.
    pub fn is_empty(&self) -> bool {
        self.task.is_none() && self.status.is_none()
    }

    fn matches(&self, job: &Job) -> bool {
        self.task
            .as_ref()
            .is_none_or(|task| job.func_name().as_deref() == Some(task.as_str()))
            && self.status.is_none_or(|status| {
                job.fields.contains_key("status") && job.status() == Some(status)
            })
    }
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct Page {
    /// Entries in the list.
    pub total: u64,
    /// With a filter: entries that match among those looked at.
    pub matched: Option<u64>,
    /// With a filter: entries looked at (less than `total` when the list is longer than
    /// [`SCAN_LIMIT`]).
    pub scanned: Option<u64>,
    /// The page's jobs, in list order; `None` where the hash is gone.
    pub jobs: Vec<(String, Option<JobView>)>,
}

/// Entries `offset .. offset + limit` of a queue's list, or of the entries matching `filter`.
pub async fn page(
    redis: &RedisClient,
    queue: &str,
    list: JobList,
    filter: &Filter,
    offset: u64,
    limit: u64,
) -> RqResult<Page> {
    if limit == 0 {
        return Err(RqError::InvalidArgument("limit must be at least 1".into()));
    }
    let mut conn = redis.conn().await?;
    let (total, ids, matched, scanned) = if filter.is_empty() {
        let (total, members): (u64, Vec<String>) = redis::pipe()
            .add_command(list.count_cmd(queue))
            .add_command(list.range_cmd(queue, offset, limit))
            .query_async(&mut conn)
            .await?;
        (total, job_ids(members), None, None)
    } else {
        let (total, matching, scanned) = scan(&mut conn, queue, list, filter).await?;
        let ids: Vec<String> = matching
            .iter()
            .skip(offset.min(usize::MAX as u64) as usize)
            .take(limit as usize)
            .cloned()
            .collect();
        (total, ids, Some(matching.len() as u64), Some(scanned))
    };
    let views = jobs::views(redis, &ids).await?;
    Ok(Page {
        total,
        matched,
        scanned,
        jobs: ids.into_iter().zip(views).collect(),
    })
}

/// The ids of the list's first [`SCAN_LIMIT`] entries that match, with the list's length and
/// how many entries were looked at.
async fn scan<C: ConnectionLike + Send>(
    conn: &mut C,
    queue: &str,
    list: JobList,
    filter: &Filter,
) -> RqResult<(u64, Vec<String>, u64)> {
    let (total, mut chunk): (u64, Vec<String>) = redis::pipe()
        .add_command(list.count_cmd(queue))
        .add_command(list.range_cmd(queue, 0, CHUNK))
        .query_async(conn)
        .await?;
    let end = total.min(SCAN_LIMIT);
    let (mut scanned, mut matching) = (0u64, Vec::new());
    while !chunk.is_empty() && scanned < end {
        let ids = job_ids(std::mem::take(&mut chunk));
        scanned += ids.len() as u64;
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HMGET")
                .arg(keys::job(id))
                .arg("data")
                .arg("status");
        }
        let more = scanned < end;
        if more {
            pipe.add_command(list.range_cmd(queue, scanned, CHUNK.min(end - scanned)));
        }
        let mut replies: Vec<Value> = pipe.query_async(conn).await?;
        if more {
            chunk = from_value(replies.pop().unwrap_or(Value::Nil))?;
        }
        for (id, reply) in ids.into_iter().zip(replies) {
            let (data, status): (Option<Vec<u8>>, Option<Vec<u8>>) = from_value(reply)?;
            let fields = [("data", data), ("status", status)]
                .into_iter()
                .filter_map(|(k, v)| Some((k.to_string(), v?)))
                .collect();
            if filter.matches(&Job::from_fields(id.clone(), fields)) {
                matching.push(id);
            }
        }
    }
    Ok((total, matching, scanned))
}

/// Started-registry members carry an execution id after the job id.
fn job_ids(members: Vec<String>) -> Vec<String> {
    members
        .into_iter()
        .map(|m| member_job_id(&m).to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_names_parse_like_the_registries() {
        assert_eq!(JobList::parse("queued"), Some(JobList::Queued));
        assert_eq!(
            JobList::parse("wip"),
            Some(JobList::Registry(Registry::Started))
        );
        assert_eq!(JobList::parse("failed").map(|l| l.name()), Some("failed"));
        assert_eq!(JobList::parse("nope"), None);
    }

    #[test]
    fn a_status_filter_does_not_match_a_missing_hash() {
        let filter = Filter {
            task: None,
            status: Some(JobStatus::Created),
        };
        assert!(!filter.matches(&Job::from_fields("gone", Default::default())));
    }
}
