//! Periodic jobs: a call enqueued on a cron schedule (5 fields, in a time zone) or every N
//! seconds, fired exactly once per period however many schedulers run.
//!
//! Definitions live in Redis (our own keys: `hdx:periodic:jobs`, a hash of JSON definitions,
//! and `hdx:periodic:next`, a sorted set of each job's next due time), so they survive
//! restarts and every scheduler sees the same ones. Firing a period is one script that
//! compares-and-sets the due time and enqueues a job whose id is derived from the period
//! (`periodic-<id>-<due>`): two schedulers racing, or one retrying after a lost reply, can never
//! enqueue a period twice.
//!
//! Periods overdue by less than the misfire grace (a scheduler taking over from a dead one) are
//! each fired, late. Periods missed by more (every scheduler was down) are a misfire: by the
//! job's policy they fire once, for the latest missed period, or are skipped.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use croner::parser::{CronParser, Seconds};
use croner::Cron;
use redis::aio::ConnectionLike;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::rq::error::{RqError, RqResult};
use crate::rq::job::{is_valid_job_id, JobStatus};
use crate::rq::metrics;
use crate::rq::queue::{is_valid_queue_name, JobSpec};
use crate::rq::scripts;
use crate::rq::time::Timestamp;

/// Definitions: id -> JSON.
pub const JOBS_KEY: &str = "hdx:periodic:jobs";
/// Next due time of each job (Unix seconds).
pub const NEXT_KEY: &str = "hdx:periodic:next";

/// When a periodic job runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Schedule {
    /// A 5-field cron expression, evaluated in a time zone (IANA name, default UTC).
    Cron {
        /// `minute hour day-of-month month day-of-week`.
        cron: String,
        /// IANA time zone, e.g. `Europe/Paris`.
        #[serde(default = "utc")]
        timezone: String,
    },
    /// Every N seconds.
    Every {
        /// The period in seconds.
        every: u64,
    },
}

fn utc() -> String {
    "UTC".into()
}

impl Schedule {
    /// Checks the expression and the time zone.
    pub fn validate(&self) -> RqResult<()> {
        match self {
            Schedule::Cron { cron, timezone } => {
                parse_cron(cron)?;
                parse_tz(timezone)?;
            }
            Schedule::Every { every } if *every == 0 => {
                return Err(RqError::InvalidArgument(
                    "the period must be at least 1 second".into(),
                ))
            }
            Schedule::Every { .. } => {}
        }
        Ok(())
    }

    /// The first due time strictly after `after` (Unix seconds).
    pub fn next_after(&self, after: i64) -> RqResult<i64> {
        match self {
            Schedule::Every { every } => {
                let every = i64::try_from(*every)
                    .map_err(|_| RqError::InvalidArgument("period too long".into()))?;
                Ok(after + every)
            }
            Schedule::Cron { cron, timezone } => {
                let cron = parse_cron(cron)?;
                let tz = parse_tz(timezone)?;
                let start = tz
                    .timestamp_opt(after, 0)
                    .single()
                    .ok_or_else(|| RqError::InvalidArgument("time out of range".into()))?;
                let next = cron.find_next_occurrence(&start, false).map_err(|e| {
                    RqError::InvalidArgument(format!(
                        "cron {cron:?}: {e}",
                        cron = cron.pattern.to_string()
                    ))
                })?;
                Ok(next.timestamp())
            }
        }
    }

    /// The latest due time at or before `at`, searching from `from` (for misfires).
    fn latest_at_or_before(&self, from: i64, at: i64) -> RqResult<i64> {
        match self {
            Schedule::Every { every } => {
                let every = (*every).max(1) as i64;
                Ok(from + (at - from) / every * every)
            }
            Schedule::Cron { cron, timezone } => {
                let cron = parse_cron(cron)?;
                let tz = parse_tz(timezone)?;
                let at_tz = tz
                    .timestamp_opt(at, 0)
                    .single()
                    .ok_or_else(|| RqError::InvalidArgument("time out of range".into()))?;
                let previous = cron
                    .find_previous_occurrence(&at_tz, true)
                    .map(|t| t.timestamp())
                    .unwrap_or(from);
                Ok(previous.max(from))
            }
        }
    }
}

fn parse_cron(expression: &str) -> RqResult<Cron> {
    if expression.split_whitespace().count() != 5 {
        return Err(RqError::InvalidArgument(format!(
            "cron {expression:?}: use 5 fields (minute hour day-of-month month day-of-week)"
        )));
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .build()
        .parse(expression)
        .map_err(|e| RqError::InvalidArgument(format!("cron {expression:?}: {e}")))
}

fn parse_tz(name: &str) -> RqResult<chrono_tz::Tz> {
    chrono_tz::Tz::from_str(name)
        .map_err(|_| RqError::InvalidArgument(format!("unknown time zone {name:?}")))
}

/// What to do with periods missed while no scheduler ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Misfire {
    /// Fire once, for the latest missed period.
    #[default]
    FireOnce,
    /// Skip them; fire at the next period.
    Skip,
}

/// A periodic job definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeriodicJob {
    /// Its id (`[A-Za-z0-9_-]+`).
    pub id: String,
    /// The queue its jobs go to.
    pub queue: String,
    /// The task's wire name.
    pub func: String,
    /// Positional arguments.
    #[serde(default)]
    pub args: Vec<Value>,
    /// Keyword arguments.
    #[serde(default)]
    pub kwargs: Map<String, Value>,
    /// When it runs.
    #[serde(flatten)]
    pub schedule: Schedule,
    /// Missed periods: fire once or skip.
    #[serde(default)]
    pub misfire: Misfire,
    /// Timeout of its jobs.
    #[serde(default)]
    pub timeout: Option<i64>,
}

impl PeriodicJob {
    /// Checks the definition.
    pub fn validate(&self) -> RqResult<()> {
        if !is_valid_job_id(&self.id) {
            return Err(RqError::InvalidJobId(self.id.clone()));
        }
        if !is_valid_queue_name(&self.queue) {
            return Err(RqError::InvalidQueueName(self.queue.clone()));
        }
        if self.func.is_empty() {
            return Err(RqError::InvalidArgument("func is empty".into()));
        }
        self.schedule.validate()
    }

    /// The job id of one period.
    pub fn job_id(&self, due: i64) -> String {
        format!("periodic-{}-{due}", self.id)
    }
}

/// Periodic jobs declared in a TOML file, as `[[periodic]]` tables with the fields of
/// [`PeriodicJob`] (`cron` + `timezone`, or `every`).
pub fn parse_toml(text: &str) -> RqResult<Vec<PeriodicJob>> {
    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        periodic: Vec<PeriodicJob>,
    }
    let file: File = toml::from_str(text)
        .map_err(|e| RqError::InvalidArgument(format!("periodic jobs file: {e}")))?;
    for job in &file.periodic {
        job.validate()?;
    }
    Ok(file.periodic)
}

/// Adds or replaces a periodic job. An unchanged definition keeps its next due time (so
/// re-declaring jobs at every start fires nothing twice); a new or changed one is due at its
/// next period from now.
pub async fn save<C: ConnectionLike + Send>(conn: &mut C, job: &PeriodicJob) -> RqResult<()> {
    job.validate()?;
    let json = serde_json::to_string(job).map_err(|e| RqError::InvalidArgument(e.to_string()))?;
    let existing: Option<String> = redis::cmd("HGET")
        .arg(JOBS_KEY)
        .arg(&job.id)
        .query_async(conn)
        .await?;
    let unchanged = existing
        .as_deref()
        .and_then(|e| serde_json::from_str::<PeriodicJob>(e).ok())
        .is_some_and(|e| &e == job);
    let next = job.schedule.next_after(Timestamp::now().secs())?;
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("HSET")
        .arg(JOBS_KEY)
        .arg(&job.id)
        .arg(json)
        .ignore();
    if unchanged {
        pipe.cmd("ZADD")
            .arg(NEXT_KEY)
            .arg("NX")
            .arg(next)
            .arg(&job.id)
            .ignore();
    } else {
        pipe.cmd("ZADD")
            .arg(NEXT_KEY)
            .arg(next)
            .arg(&job.id)
            .ignore();
    }
    let () = pipe.query_async(conn).await?;
    Ok(())
}

/// Removes a periodic job; `false` when there was none.
pub async fn remove<C: ConnectionLike + Send>(conn: &mut C, id: &str) -> RqResult<bool> {
    let (removed, _): (i64, i64) = redis::pipe()
        .atomic()
        .cmd("HDEL")
        .arg(JOBS_KEY)
        .arg(id)
        .cmd("ZREM")
        .arg(NEXT_KEY)
        .arg(id)
        .query_async(conn)
        .await?;
    Ok(removed == 1)
}

/// A periodic job with its next due time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduledPeriodic {
    /// The definition.
    #[serde(flatten)]
    pub job: PeriodicJob,
    /// Next due time.
    pub next_run: Option<DateTime<Utc>>,
}

/// Every periodic job, sorted by id (unreadable definitions are skipped with a warning), in
/// one round trip.
pub async fn list<C: ConnectionLike + Send>(conn: &mut C) -> RqResult<Vec<ScheduledPeriodic>> {
    type Definitions = std::collections::BTreeMap<String, String>;
    let (definitions, next): (Definitions, std::collections::HashMap<String, i64>) = redis::pipe()
        .atomic()
        .cmd("HGETALL")
        .arg(JOBS_KEY)
        .cmd("ZRANGE")
        .arg(NEXT_KEY)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(conn)
        .await?;
    let mut out = Vec::with_capacity(definitions.len());
    for (id, json) in definitions {
        match serde_json::from_str::<PeriodicJob>(&json) {
            Ok(job) => out.push(ScheduledPeriodic {
                next_run: next.get(&id).and_then(|t| DateTime::from_timestamp(*t, 0)),
                job,
            }),
            Err(e) => {
                tracing::warn!(periodic = %id, error = %e, "unreadable periodic job definition")
            }
        }
    }
    Ok(out)
}

/// Fires every due period; returns how many jobs were enqueued.
pub async fn fire_due<C: ConnectionLike + Send>(
    conn: &mut C,
    now: i64,
    misfire_grace: i64,
) -> RqResult<u64> {
    let due = super::due_entries(conn, NEXT_KEY, now).await?;
    let mut fired = 0;
    for (id, first_due) in due {
        let json: Option<String> = redis::cmd("HGET")
            .arg(JOBS_KEY)
            .arg(&id)
            .query_async(conn)
            .await?;
        let Some(job) = json.and_then(|j| serde_json::from_str::<PeriodicJob>(&j).ok()) else {
            let _: i64 = redis::cmd("ZREM")
                .arg(NEXT_KEY)
                .arg(&id)
                .query_async(conn)
                .await?;
            continue;
        };
        fired += fire_job(conn, &job, first_due, now, misfire_grace).await?;
    }
    Ok(fired)
}

/// Fires the due periods of one job, catching up late ones, applying its misfire policy to
/// missed ones.
async fn fire_job<C: ConnectionLike + Send>(
    conn: &mut C,
    job: &PeriodicJob,
    mut due: i64,
    now: i64,
    misfire_grace: i64,
) -> RqResult<u64> {
    let mut fired = 0;
    while due <= now {
        let (fire_for, next) = if now - due <= misfire_grace {
            (Some(due), job.schedule.next_after(due)?)
        } else {
            let latest = job.schedule.latest_at_or_before(due, now)?;
            let fire_for = match job.misfire {
                Misfire::FireOnce => Some(latest),
                Misfire::Skip => None,
            };
            tracing::warn!(periodic = %job.id, missed_since = due, policy = ?job.misfire, "periods were missed while no scheduler ran");
            (fire_for, job.schedule.next_after(now)?)
        };
        let swapped = fire_period(conn, job, due, fire_for, next).await?;
        if !swapped {
            // Another scheduler handled this period.
            break;
        }
        if fire_for.is_some() {
            fired += 1;
        }
        due = next;
    }
    Ok(fired)
}

/// If `due` is still the job's next due time: enqueues the job of `period` (none when `None`:
/// a skipped misfire) and moves the next due time to `next`. Returns whether this call did it.
async fn fire_period<C: ConnectionLike + Send>(
    conn: &mut C,
    job: &PeriodicJob,
    due: i64,
    period: Option<i64>,
    next: i64,
) -> RqResult<bool> {
    let Some(period) = period else {
        let done: i64 = scripts::FIRE_PERIODIC
            .prepare_invoke()
            .arg(&job.id)
            .arg(due)
            .arg(next)
            .arg(&job.queue)
            .arg("")
            .arg("")
            .arg(0)
            .invoke_async(conn)
            .await?;
        return Ok(done == 1);
    };
    let now = Timestamp::now();
    let scheduled_for = DateTime::from_timestamp(period, 0)
        .map(|t| crate::rq::time::format_ts(&t))
        .unwrap_or_default();
    let mut spec = JobSpec::new(&job.func)
        .args(job.args.clone())
        .kwargs(job.kwargs.clone());
    spec.timeout = job.timeout;
    spec.description = Some(format!("periodic {} for {scheduled_for}", job.id));
    let mut meta = Map::new();
    meta.insert("periodic_id".into(), Value::String(job.id.clone()));
    meta.insert("scheduled_for".into(), Value::String(scheduled_for));
    spec.meta = Some(meta);
    let fields = spec.hash_fields(
        &job.queue,
        crate::rq::job::DEFAULT_TIMEOUT,
        &now,
        JobStatus::Queued,
    )?;
    let mut invocation = scripts::FIRE_PERIODIC.prepare_invoke();
    invocation
        .arg(&job.id)
        .arg(due)
        .arg(next)
        .arg(&job.queue)
        .arg(job.job_id(period))
        .arg(metrics::counter_field("enqueued", &job.queue, &job.func))
        .arg(fields.len());
    for (field, value) in &fields {
        invocation.arg(*field).arg(value.as_slice());
    }
    let done: i64 = invocation.invoke_async(conn).await?;
    Ok(done == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .expect("time")
            .timestamp()
    }

    #[test]
    fn cron_in_a_time_zone() {
        let daily = Schedule::Cron {
            cron: "30 2 * * *".into(),
            timezone: "Europe/Paris".into(),
        };
        // 02:30 in Paris in winter is 01:30 UTC.
        assert_eq!(
            daily.next_after(at("2026-11-28T12:00:00Z")).expect("next"),
            at("2026-11-29T01:30:00Z")
        );
        let every_5 = Schedule::Cron {
            cron: "*/5 * * * *".into(),
            timezone: "UTC".into(),
        };
        assert_eq!(
            every_5
                .next_after(at("2026-11-28T12:00:00Z"))
                .expect("next"),
            at("2026-11-28T12:05:00Z")
        );
        assert_eq!(
            every_5
                .latest_at_or_before(at("2026-11-28T12:05:00Z"), at("2026-11-28T13:02:00Z"))
                .expect("latest"),
            at("2026-11-28T13:00:00Z")
        );
    }

    #[test]
    fn intervals() {
        let every = Schedule::Every { every: 60 };
        assert_eq!(every.next_after(100).expect("next"), 160);
        assert_eq!(every.latest_at_or_before(100, 400).expect("latest"), 400);
        assert_eq!(every.latest_at_or_before(100, 399).expect("latest"), 340);
    }

    #[test]
    fn bad_definitions_are_refused() {
        assert!(Schedule::Cron {
            cron: "* * *".into(),
            timezone: "UTC".into()
        }
        .validate()
        .is_err());
        assert!(Schedule::Cron {
            cron: "0 0 * * * *".into(),
            timezone: "UTC".into()
        }
        .validate()
        .is_err());
        assert!(Schedule::Cron {
            cron: "61 * * * *".into(),
            timezone: "UTC".into()
        }
        .validate()
        .is_err());
        assert!(Schedule::Cron {
            cron: "* * * * *".into(),
            timezone: "Mars/Olympus".into()
        }
        .validate()
        .is_err());
        assert!(Schedule::Every { every: 0 }.validate().is_err());
    }

    #[test]
    fn toml_files() {
        let jobs = parse_toml(
            r#"
            [[periodic]]
            id = "nightly"
            queue = "default_scheduler_q"
            func = "schedulerapi.tasks.make_api_call.schedule_api_task"
            args = [{ task_args = { action = "hdx_cleanup", method = "post" } }]
            cron = "0 3 * * *"
            timezone = "Europe/Paris"
            misfire = "skip"

            [[periodic]]
            id = "ping"
            queue = "q"
            func = "hdx_jobs.noop"
            every = 60
            "#,
        )
        .expect("parse");
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].args[0]["task_args"]["action"], "hdx_cleanup");
        assert_eq!(jobs[1].schedule, Schedule::Every { every: 60 });
        assert!(parse_toml(
            "[[periodic]]\nid = \"x\"\nqueue = \"q\"\nfunc = \"f\"\ncron = \"bad\"\n"
        )
        .is_err());
    }

    #[test]
    fn definitions_read_as_json_and_toml_write() {
        let job: PeriodicJob = serde_json::from_str(
            r#"{"id": "nightly", "queue": "default_scheduler_q", "func": "f", "cron": "0 3 * * *", "timezone": "UTC", "misfire": "skip"}"#,
        )
        .expect("parse");
        assert_eq!(job.misfire, Misfire::Skip);
        assert!(matches!(job.schedule, Schedule::Cron { .. }));
        let every: PeriodicJob =
            serde_json::from_str(r#"{"id": "p", "queue": "q", "func": "f", "every": 5}"#)
                .expect("parse");
        assert_eq!(every.schedule, Schedule::Every { every: 5 });
        assert_eq!(every.misfire, Misfire::FireOnce);
        assert_eq!(every.job_id(1700000000), "periodic-p-1700000000");
    }
}
