//! Jobs finished, failed, retried… per minute, for the monitor's chart.
//!
//! The workers' outcome scripts (`lua/common.lua`, `tally_job`) add one to
//! `hdx:history:<hour start>`, field `<minute start>\t<event>\t<queue>`, in the same atomic step
//! that records the outcome, on Redis's clock. One hash per hour keeps a day of history in a
//! few dozen small hashes, each expiring a day after its hour ends: nothing has to trim it, and
//! reading six hours is one pipelined round trip of seven `HGETALL`s. Outcomes recorded by
//! Python RQ workers are not counted (they do not run our scripts).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use super::error::{RqError, RqResult};
use super::time::server_now;
use crate::connection::RedisClient;

/// The key prefix of the hourly hashes.
pub const KEY_PREFIX: &str = "hdx:history:";
/// How far back the history reaches (the hashes expire a day after their hour).
pub const MAX_MINUTES: u32 = 24 * 60;
/// The events the chart draws; the others (stopped, abandoned, interrupted) are counted too.
pub const EVENTS: [&str; 6] = [
    "finished",
    "failed",
    "retried",
    "stopped",
    "abandoned",
    "interrupted",
];

/// Per-minute counts over a window ending with the current minute.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct History {
    /// Unix time of the first minute.
    pub start: i64,
    /// Seconds per point (always 60).
    pub step_seconds: u32,
    /// Per event, one count per minute, oldest first (every array has the window's length).
    pub events: BTreeMap<String, Vec<u64>>,
    /// Queues seen in the window (whatever the filter).
    pub queues: Vec<String>,
}

/// The last `minutes` minutes of outcomes (1 to [`MAX_MINUTES`]), of one queue or all.
pub async fn read(redis: &RedisClient, minutes: u32, queue: Option<&str>) -> RqResult<History> {
    if !(1..=MAX_MINUTES).contains(&minutes) {
        return Err(RqError::InvalidArgument(format!(
            "minutes must be 1 to {MAX_MINUTES}"
        )));
    }
    let mut conn = redis.conn().await?;
    let now = server_now(&mut conn).await?.secs();
    let last = now - now.rem_euclid(60);
    let start = last - 60 * (i64::from(minutes) - 1);
    let mut pipe = redis::pipe();
    let mut hour = start - start.rem_euclid(3600);
    while hour <= last {
        pipe.cmd("HGETALL").arg(format!("{KEY_PREFIX}{hour}"));
        hour += 3600;
    }
    let hashes: Vec<HashMap<String, u64>> = pipe.query_async(&mut conn).await?;
    Ok(fold(hashes, start, minutes, queue))
}

/// Sums hash fields into per-minute series.
fn fold(
    hashes: Vec<HashMap<String, u64>>,
    start: i64,
    minutes: u32,
    queue: Option<&str>,
) -> History {
    let mut events: BTreeMap<String, Vec<u64>> = EVENTS
        .iter()
        .map(|e| (e.to_string(), vec![0; minutes as usize]))
        .collect();
    let mut queues = BTreeSet::new();
    for (field, count) in hashes.into_iter().flatten() {
        let mut parts = field.splitn(3, '\t');
        let (Some(minute), Some(event), Some(q)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Ok(minute) = minute.parse::<i64>() else {
            continue;
        };
        let index = (minute - start).div_euclid(60);
        if index < 0 || index >= i64::from(minutes) {
            continue;
        }
        queues.insert(q.to_string());
        if queue.is_some_and(|wanted| wanted != q) {
            continue;
        }
        if let Some(series) = events.get_mut(event) {
            series[index as usize] += count;
        }
    }
    History {
        start,
        step_seconds: 60,
        events,
        queues: queues.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_fold_into_minutes_of_the_window_only() {
        let start = 1_800_000_000; // a whole minute
        let hash: HashMap<String, u64> = [
            (format!("{start}\tfinished\tgeo"), 3),
            (format!("{}\tfinished\tanalytics", start + 60), 2),
            (format!("{}\tfailed\tgeo", start + 60), 1),
            (format!("{}\tfinished\tgeo", start - 60), 9),
            (format!("{}\tfinished\tgeo", start + 180), 9),
            ("garbage".to_string(), 5),
        ]
        .into_iter()
        .collect();
        let all = fold(vec![hash.clone()], start, 3, None);
        assert_eq!(all.events["finished"], vec![3, 2, 0]);
        assert_eq!(all.events["failed"], vec![0, 1, 0]);
        assert_eq!(all.queues, vec!["analytics", "geo"]);
        let geo = fold(vec![hash], start, 3, Some("geo"));
        assert_eq!(geo.events["finished"], vec![3, 0, 0]);
    }
}
