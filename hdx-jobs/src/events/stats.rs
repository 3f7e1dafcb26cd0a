//! What an operator asks of the event stream: how long it is and, per consumer group, how many
//! events were delivered but not yet acknowledged (pending) and how many were never delivered
//! at all (lag, from Redis 7's `XINFO GROUPS`), and what the last events were. Read-only;
//! `/metrics` exports the counts and the monitor shows all of it.

use redis::Value;
use serde::Serialize;

use crate::connection::RedisClient;
use crate::rq::error::RqResult;

/// One consumer group of the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupStats {
    /// The group's name.
    pub name: String,
    /// Events delivered to the group's consumers and not acknowledged.
    pub pending: u64,
    /// Events the group has not read yet; `None` when Redis cannot tell (before Redis 7, or
    /// after entries were deleted from the middle of the stream).
    pub lag: Option<u64>,
}

/// The stream and its consumer groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamStats {
    /// Entries in the stream (0 when it does not exist yet).
    pub length: u64,
    /// Its consumer groups, by name.
    pub groups: Vec<GroupStats>,
}

/// Reads the length and the consumer groups of `stream`, in two round trips.
pub async fn stream_stats(redis: &RedisClient, stream: &str) -> RqResult<StreamStats> {
    let mut conn = redis.conn().await?;
    // XINFO GROUPS fails on a missing key, hence EXISTS first (XLEN of a missing key is 0).
    let (length, exists): (u64, bool) = redis::pipe()
        .cmd("XLEN")
        .arg(stream)
        .cmd("EXISTS")
        .arg(stream)
        .query_async(&mut conn)
        .await?;
    if !exists {
        return Ok(StreamStats {
            length,
            groups: Vec::new(),
        });
    }
    let replies: Vec<Vec<Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(&mut conn)
        .await?;
    let mut groups: Vec<GroupStats> = replies.iter().filter_map(|r| group(r)).collect();
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(StreamStats { length, groups })
}

/// An event as the stream holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamEntry {
    /// The entry id (`<ms>-<seq>`: when Redis appended it).
    pub id: String,
    /// `event_type`.
    pub event_type: Option<String>,
    /// `body`, parsed (a string when it is not JSON).
    pub body: serde_json::Value,
}

/// The newest `count` entries of `stream`, newest first (one round trip).
pub async fn latest_entries(
    redis: &RedisClient,
    stream: &str,
    count: usize,
) -> RqResult<Vec<StreamEntry>> {
    let mut conn = redis.conn().await?;
    let reply: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(count)
        .query_async(&mut conn)
        .await?;
    Ok(reply
        .ids
        .into_iter()
        .map(|entry| {
            let field = |name: &str| entry.map.get(name).and_then(text);
            let body = field("body").map_or(serde_json::Value::Null, |b| {
                serde_json::from_str(&b).unwrap_or(serde_json::Value::String(b))
            });
            StreamEntry {
                event_type: field("event_type"),
                body,
                id: entry.id,
            }
        })
        .collect())
}

/// One group from its `XINFO GROUPS` field list (`name`, `pending`, `lag`, ...).
fn group(fields: &[Value]) -> Option<GroupStats> {
    let field = |wanted: &str| {
        fields
            .chunks(2)
            .find(|pair| text(&pair[0]).as_deref() == Some(wanted))
            .and_then(|pair| pair.get(1))
    };
    let count = |value: Option<&Value>| match value {
        Some(Value::Int(n)) => u64::try_from(*n).ok(),
        _ => None,
    };
    Some(GroupStats {
        name: text(field("name")?)?,
        pending: count(field("pending")).unwrap_or(0),
        lag: count(field("lag")),
    })
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}
