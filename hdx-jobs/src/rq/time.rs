//! RQ's timestamps.
//!
//! RQ stores three kinds of time and mixing them up breaks Python readers (docs/rq-protocol.md
//! §0.3): text timestamps in hashes (`YYYY-MM-DDTHH:MM:SS.ffffffZ`, always UTC with a literal `Z`),
//! float epoch seconds in execution hashes and result streams, and integer epoch seconds as
//! registry scores. [`Timestamp`] captures one instant in all three forms so a transaction writes
//! consistent values.
//!
//! Two clocks: [`Timestamp::now`] is this host's, good for what people read (`enqueued_at`,
//! `ended_at`); [`server_now`] is the Redis server's, for every decision several hosts must
//! agree on (lease deadlines and their expiry, due times). The Lua scripts read the server's
//! clock themselves (`server_now()` in `lua/common.lua`).

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use redis::aio::ConnectionLike;

use super::error::RqResult;

/// One instant, in every form RQ writes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timestamp {
    /// The instant itself.
    pub at: DateTime<Utc>,
}

impl Timestamp {
    /// The current UTC time.
    pub fn now() -> Self {
        Timestamp { at: Utc::now() }
    }

    /// Integer Unix seconds (truncated): registry scores.
    pub fn secs(&self) -> i64 {
        self.at.timestamp()
    }

    /// Float Unix seconds: execution hashes and result streams.
    pub fn secs_f64(&self) -> f64 {
        self.at.timestamp_micros() as f64 / 1_000_000.0
    }

    /// RQ's text timestamp, e.g. `2026-11-28T15:16:06.472980Z`.
    pub fn text(&self) -> String {
        format_ts(&self.at)
    }
}

/// Now on the Redis server's clock (`TIME`), so hosts with skewed clocks agree on what is due
/// or expired.
pub async fn server_now<C: ConnectionLike + Send>(conn: &mut C) -> RqResult<Timestamp> {
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(conn).await?;
    let at = DateTime::from_timestamp(secs, (micros.clamp(0, 999_999) * 1000) as u32)
        .unwrap_or_else(Utc::now);
    Ok(Timestamp { at })
}

/// Formats a time the way RQ does (`%Y-%m-%dT%H:%M:%S.%fZ`: six fraction digits and `Z`).
pub fn format_ts(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Parses RQ's text timestamp. Accepts 0 to 9 fraction digits and requires the `Z`, like
/// Python's reader; an offset such as `+00:00` is rejected because Python rejects it too.
pub fn parse_ts(text: &str) -> Option<DateTime<Utc>> {
    let body = text.strip_suffix('Z')?;
    NaiveDateTime::parse_from_str(body, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|naive| naive.and_utc())
}

/// Formats a float epoch value the way Python's `str(float)` would for RQ's fields.
pub fn format_epoch_f64(secs: f64) -> String {
    format!("{secs:.6}")
}

/// RFC 3339 text for humans and JSON output (not for Redis).
pub fn rfc3339(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_six_digits_and_z() {
        let at = parse_ts("2026-11-28T15:16:06.472980Z").expect("valid");
        assert_eq!(format_ts(&at), "2026-11-28T15:16:06.472980Z");
        let whole = parse_ts("2026-11-28T15:10:00Z").expect("valid");
        assert_eq!(format_ts(&whole), "2026-11-28T15:10:00.000000Z");
    }

    #[test]
    fn accepts_python_variants_and_rejects_offsets() {
        assert!(parse_ts("2026-11-28T15:10:00.000001Z").is_some());
        assert!(parse_ts("2026-11-28T15:10:00.123Z").is_some());
        assert!(parse_ts("2026-11-28T15:10:00Z").is_some());
        assert!(parse_ts("2026-11-28T15:10:00+00:00").is_none());
        assert!(parse_ts("2026-11-28 15:10:00Z").is_none());
        assert!(parse_ts("").is_none());
    }

    #[test]
    fn now_forms_agree() {
        let now = Timestamp::now();
        assert_eq!(now.secs(), now.secs_f64() as i64);
        assert_eq!(
            parse_ts(&now.text()).map(|t| t.timestamp()),
            Some(now.secs())
        );
    }
}
