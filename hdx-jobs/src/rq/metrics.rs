//! Job metrics shared by every process: counters per event (enqueued, finished, failed,
//! retried, stopped, abandoned, interrupted), queue and task, and a histogram of job durations, kept in two
//! Redis hashes of our own (`hdx:metrics:jobs`, `hdx:metrics:durations`). Workers update them
//! inside the scripts that record outcomes, enqueuers inside the enqueue transaction, so any
//! server instance can report the whole deployment on `/metrics`.

use std::collections::BTreeMap;

use super::error::RqResult;
use crate::connection::RedisClient;

/// Counters hash.
pub const JOBS_KEY: &str = "hdx:metrics:jobs";
/// Duration histogram hash.
pub const DURATIONS_KEY: &str = "hdx:metrics:durations";

/// Upper bounds of the duration buckets, in seconds (the last bucket is `+Inf`).
pub const DURATION_BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];

/// The bucket label of a duration: the first bound it does not exceed, else `+Inf`.
pub fn bucket_label(secs: f64) -> String {
    DURATION_BUCKETS
        .iter()
        .find(|b| secs <= **b)
        .map_or_else(|| "+Inf".to_string(), |b| b.to_string())
}

/// The counter field of an event.
pub fn counter_field(event: &str, queue: &str, func: &str) -> String {
    format!("{event}\t{queue}\t{func}")
}

/// One duration histogram, per queue and task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Cumulative counts per upper bound (`+Inf` last), as Prometheus wants them.
    pub buckets: Vec<(String, u64)>,
    /// Sum of the durations.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

/// A snapshot of the job metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobMetrics {
    /// `(event, queue, task) -> count`.
    pub counters: BTreeMap<(String, String, String), u64>,
    /// `(queue, task) -> histogram`.
    pub durations: BTreeMap<(String, String), Histogram>,
}

/// Reads the metrics.
pub async fn read(redis: &RedisClient) -> RqResult<JobMetrics> {
    let mut conn = redis.conn().await?;
    let (jobs, durations): (BTreeMap<String, u64>, BTreeMap<String, String>) = redis::pipe()
        .cmd("HGETALL")
        .arg(JOBS_KEY)
        .cmd("HGETALL")
        .arg(DURATIONS_KEY)
        .query_async(&mut conn)
        .await?;
    let mut metrics = JobMetrics::default();
    for (field, count) in jobs {
        let mut parts = field.splitn(3, '\t');
        if let (Some(event), Some(queue), Some(func)) = (parts.next(), parts.next(), parts.next()) {
            metrics
                .counters
                .insert((event.into(), queue.into(), func.into()), count);
        }
    }
    let mut raw: BTreeMap<(String, String), (BTreeMap<String, u64>, f64)> = BTreeMap::new();
    for (field, value) in durations {
        let mut parts = field.splitn(3, '\t');
        let (Some(queue), Some(func), Some(le)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let entry = raw.entry((queue.into(), func.into())).or_default();
        if le == "sum" {
            entry.1 = value.parse().unwrap_or(0.0);
        } else {
            entry.0.insert(le.into(), value.parse().unwrap_or(0));
        }
    }
    for (key, (counts, sum)) in raw {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(DURATION_BUCKETS.len() + 1);
        for bound in DURATION_BUCKETS
            .iter()
            .map(|b| b.to_string())
            .chain(["+Inf".to_string()])
        {
            cumulative += counts.get(&bound).copied().unwrap_or(0);
            buckets.push((bound, cumulative));
        }
        metrics.durations.insert(
            key,
            Histogram {
                buckets,
                sum,
                count: cumulative,
            },
        );
    }
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets() {
        assert_eq!(bucket_label(0.0), "0.005");
        assert_eq!(bucket_label(0.3), "0.5");
        assert_eq!(bucket_label(1.0), "1");
        assert_eq!(bucket_label(5000.0), "+Inf");
    }
}
