//! The one retry loop of the outgoing calls a job makes (analytics deliveries, the geopreview
//! report to CKAN, event-stream pushes): how many attempts, how long to wait between them, and
//! when to stop early.
//!
//! Why one helper: the loops it replaces each had their own idea of counting attempts, of
//! doubling waits and of deadlines, and one of them slept a whole thread with
//! `std::thread::sleep`. Here waits are `tokio::time::sleep` (a blocking call goes inside the
//! operation, in `spawn_blocking`), and every call site states its policy in one [`Backoff`].
//!
//! A call site gives [`retry`]:
//! - the operation, called with the attempt number (1 for the first);
//! - a classification of its errors ([`Verdict`]): permanent, worth another attempt (with the
//!   server's `Retry-After` when it sent one), or worth another attempt at once;
//! - a hook called before each wait, for its own log line.
//!
//! [`Limits`] adds what only some call sites have: the job's deadline (no attempt is started
//! that could not end before it) and its cancellation (which ends the attempt and the wait).
//!
//! Retries of whole jobs are RQ's (`Retry` on the job), not this module's: a call site that
//! makes one attempt and fails the job as retryable (the scheduled CKAN API call, the
//! file-structure check) needs no loop here.

use std::future::Future;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio_util::sync::CancellationToken;

/// How many attempts, and the waits between them: `base`, then doubled at each retry, at most
/// `max`; with `jitter`, each wait is drawn between half and all of its step ("equal jitter",
/// so that workers retrying together spread out without any wait becoming tiny).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Attempts in all, the first included (0 counts as 1).
    pub attempts: u32,
    /// The wait before the first retry.
    pub base: Duration,
    /// The longest wait. A server's `Retry-After` longer than this is not waited for: the call
    /// gives up at once ([`GaveUp::RetryAfterTooLong`]) and leaves the wait to the job's retry.
    pub max: Duration,
    /// Equal jitter on every wait.
    pub jitter: bool,
}

impl Backoff {
    /// One attempt, no retry.
    pub const ONCE: Backoff = Backoff {
        attempts: 1,
        base: Duration::ZERO,
        max: Duration::ZERO,
        jitter: false,
    };

    /// The wait before retry number `retry` (1 for the first retry): `base * 2^(retry-1)`, at
    /// most `max`; with jitter, `random` in `[0, 1)` picks where between half and all of it;
    /// never less than `retry_after`.
    pub fn wait(&self, retry: u32, retry_after: Option<Duration>, random: f64) -> Duration {
        let step = self
            .base
            .saturating_mul(
                1u32.checked_shl(retry.saturating_sub(1))
                    .unwrap_or(u32::MAX),
            )
            .min(self.max);
        let wait = if self.jitter {
            step / 2 + step.mul_f64(random.clamp(0.0, 1.0) / 2.0)
        } else {
            step
        };
        retry_after.map_or(wait, |after| after.max(wait))
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A permanent failure (a refusal, a configuration error): return it now.
    Fail,
    /// A transient failure (a timeout, a dropped connection, 429, 5xx): try again after the
    /// backoff wait, and not before the server's `Retry-After` when it sent one.
    Retry {
        /// The server's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// Try again at once, without waiting (a pooled keep-alive connection the server had
    /// closed: a new connection will do). Still counts as an attempt.
    RetryNow,
}

impl Verdict {
    /// [`Verdict::Retry`] without a `Retry-After`.
    pub const RETRY: Verdict = Verdict::Retry { retry_after: None };
}

/// What bounds a call besides its attempts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits<'a> {
    /// The job's deadline: no retry is started unless its wait plus `reserve` ends before it.
    pub deadline: Option<Instant>,
    /// The time one attempt may take, kept free before the deadline.
    pub reserve: Duration,
    /// Ends the current attempt and the wait, with [`RetryError::Cancelled`].
    pub cancel: Option<&'a CancellationToken>,
}

/// Why a call gave up with the last attempt's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaveUp {
    /// The error was classified [`Verdict::Fail`].
    NotRetryable,
    /// Every attempt of the [`Backoff`] failed.
    Exhausted,
    /// The server asked for a wait longer than [`Backoff::max`].
    RetryAfterTooLong(Duration),
    /// The next attempt could not end before [`Limits::deadline`].
    NoTimeLeft,
}

/// A call that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryError<E> {
    /// The last attempt's error, and why no further attempt was made.
    Failed {
        /// The last attempt's error.
        error: E,
        /// Attempts made.
        attempts: u32,
        /// Why it stopped.
        why: GaveUp,
    },
    /// [`Limits::cancel`] fired (during an attempt or a wait).
    Cancelled {
        /// Attempts started.
        attempts: u32,
    },
}

impl<E> RetryError<E> {
    /// The last attempt's error (`None` when cancelled).
    pub fn into_error(self) -> Option<E> {
        match self {
            RetryError::Failed { error, .. } => Some(error),
            RetryError::Cancelled { .. } => None,
        }
    }
}

/// A retry about to happen, for the call site's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retrying {
    /// The attempt that failed (1 for the first).
    pub attempt: u32,
    /// The wait before the next one.
    pub wait: Duration,
}

/// Runs `op` (given the attempt number, from 1) until it succeeds, `classify` calls its error
/// permanent, the attempts of `backoff` are used up, a `Retry-After` exceeds `backoff.max`, the
/// next attempt could not finish before `limits.deadline`, or `limits.cancel` fires.
/// `on_retry` is called before each wait. Waits are async: a blocking operation must run
/// itself in `spawn_blocking`.
pub async fn retry<T, E, Op, Fut>(
    backoff: &Backoff,
    limits: Limits<'_>,
    mut op: Op,
    mut classify: impl FnMut(&E) -> Verdict,
    mut on_retry: impl FnMut(&E, Retrying),
) -> Result<T, RetryError<E>>
where
    Op: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = match limits.cancel {
            Some(cancel) => tokio::select! {
                result = op(attempt) => result,
                () = cancel.cancelled() => return Err(RetryError::Cancelled { attempts: attempt }),
            },
            None => op(attempt).await,
        };
        let error = match result {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let verdict = classify(&error);
        let gave_up = |error, why| {
            Err(RetryError::Failed {
                error,
                attempts: attempt,
                why,
            })
        };
        let retry_after = match verdict {
            Verdict::Fail => return gave_up(error, GaveUp::NotRetryable),
            Verdict::Retry { retry_after } => retry_after,
            Verdict::RetryNow => None,
        };
        if attempt >= backoff.attempts {
            return gave_up(error, GaveUp::Exhausted);
        }
        if let Some(after) = retry_after.filter(|after| *after > backoff.max) {
            return gave_up(error, GaveUp::RetryAfterTooLong(after));
        }
        let wait = match verdict {
            Verdict::RetryNow => Duration::ZERO,
            _ => backoff.wait(attempt, retry_after, rand::rng().random::<f64>()),
        };
        if let Some(deadline) = limits.deadline {
            if Instant::now() + wait + limits.reserve > deadline {
                return gave_up(error, GaveUp::NoTimeLeft);
            }
        }
        on_retry(&error, Retrying { attempt, wait });
        match limits.cancel {
            Some(cancel) => tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = cancel.cancelled() => return Err(RetryError::Cancelled { attempts: attempt }),
            },
            None => tokio::time::sleep(wait).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A backoff of milliseconds, without jitter, so waits are exact.
    fn ms(attempts: u32, base: u64, max: u64) -> Backoff {
        Backoff {
            attempts,
            base: Duration::from_millis(base),
            max: Duration::from_millis(max),
            jitter: false,
        }
    }

    /// Runs `retry` over a script of results; returns the outcome, the attempts made and the
    /// waits announced.
    async fn run(
        backoff: Backoff,
        limits: Limits<'_>,
        script: Vec<Result<u32, Verdict>>,
    ) -> (Result<u32, RetryError<Verdict>>, u32, Vec<Duration>) {
        let calls = Arc::new(Mutex::new(0u32));
        let mut waits = Vec::new();
        let outcome = retry(
            &backoff,
            limits,
            |attempt| {
                let calls = calls.clone();
                let result = script[(attempt - 1) as usize];
                async move {
                    *calls.lock().expect("calls") += 1;
                    result
                }
            },
            |verdict: &Verdict| *verdict,
            |_, retrying| waits.push(retrying.wait),
        )
        .await;
        let calls = *calls.lock().expect("calls");
        (outcome, calls, waits)
    }

    #[test]
    fn waits_double_up_to_the_cap_with_equal_jitter_and_honour_retry_after() {
        let b = Backoff {
            attempts: 9,
            base: Duration::from_secs(2),
            max: Duration::from_secs(30),
            jitter: true,
        };
        assert_eq!(b.wait(1, None, 0.0), Duration::from_secs(1));
        assert_eq!(b.wait(1, None, 0.999_999).as_millis(), 1999);
        assert_eq!(b.wait(3, None, 0.0), Duration::from_secs(4));
        assert_eq!(b.wait(20, None, 0.0), Duration::from_secs(15));
        assert!(b.wait(40, None, 1.0) <= Duration::from_secs(30));
        assert_eq!(
            b.wait(1, Some(Duration::from_secs(7)), 0.5),
            Duration::from_secs(7)
        );
        let plain = Backoff { jitter: false, ..b };
        assert_eq!(plain.wait(1, None, 0.7), Duration::from_secs(2));
        assert_eq!(plain.wait(2, None, 0.7), Duration::from_secs(4));
        assert_eq!(plain.wait(9, None, 0.7), Duration::from_secs(30));
    }

    #[tokio::test]
    async fn transient_failures_are_retried_after_the_backoff_waits() {
        let (outcome, calls, waits) = run(
            ms(4, 5, 15),
            Limits::default(),
            vec![
                Err(Verdict::RETRY),
                Err(Verdict::RETRY),
                Err(Verdict::RETRY),
                Ok(7),
            ],
        )
        .await;
        assert_eq!(outcome, Ok(7));
        assert_eq!(calls, 4);
        assert_eq!(
            waits,
            [5, 10, 15].map(Duration::from_millis),
            "doubled, capped"
        );
    }

    #[tokio::test]
    async fn exhausted_attempts_return_the_last_error() {
        let (outcome, calls, waits) = run(
            ms(2, 1, 1),
            Limits::default(),
            vec![Err(Verdict::RETRY), Err(Verdict::RetryNow)],
        )
        .await;
        assert_eq!(
            outcome,
            Err(RetryError::Failed {
                error: Verdict::RetryNow,
                attempts: 2,
                why: GaveUp::Exhausted
            })
        );
        assert_eq!((calls, waits.len()), (2, 1));
        let (outcome, calls, _) =
            run(Backoff::ONCE, Limits::default(), vec![Err(Verdict::RETRY)]).await;
        assert!(matches!(
            outcome,
            Err(RetryError::Failed { attempts: 1, .. })
        ));
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried() {
        let (outcome, calls, waits) =
            run(ms(5, 1, 1), Limits::default(), vec![Err(Verdict::Fail)]).await;
        assert_eq!(
            outcome,
            Err(RetryError::Failed {
                error: Verdict::Fail,
                attempts: 1,
                why: GaveUp::NotRetryable
            })
        );
        assert_eq!((calls, waits.len()), (1, 0));
    }

    #[tokio::test]
    async fn retry_now_skips_the_wait_and_retry_after_lengthens_it() {
        let after = Duration::from_millis(30);
        let (outcome, _, waits) = run(
            ms(3, 1, 50),
            Limits::default(),
            vec![
                Err(Verdict::RetryNow),
                Err(Verdict::Retry {
                    retry_after: Some(after),
                }),
                Ok(1),
            ],
        )
        .await;
        assert_eq!(outcome, Ok(1));
        assert_eq!(waits, [Duration::ZERO, after]);
    }

    #[tokio::test]
    async fn a_retry_after_beyond_the_cap_is_not_waited_for() {
        let after = Duration::from_secs(90);
        let (outcome, calls, waits) = run(
            ms(5, 1, 1000),
            Limits::default(),
            vec![Err(Verdict::Retry {
                retry_after: Some(after),
            })],
        )
        .await;
        assert!(matches!(
            outcome,
            Err(RetryError::Failed { attempts: 1, why: GaveUp::RetryAfterTooLong(d), .. }) if d == after
        ));
        assert_eq!((calls, waits.len()), (1, 0));
    }

    #[tokio::test]
    async fn no_attempt_starts_that_could_not_end_before_the_deadline() {
        let limits = Limits {
            deadline: Some(Instant::now() + Duration::from_secs(2)),
            reserve: Duration::from_secs(1),
            cancel: None,
        };
        // 1.5 s of wait + 1 s reserved passes the deadline 2 s away.
        let (outcome, calls, waits) =
            run(ms(5, 1500, 1500), limits, vec![Err(Verdict::RETRY)]).await;
        assert!(matches!(
            outcome,
            Err(RetryError::Failed {
                attempts: 1,
                why: GaveUp::NoTimeLeft,
                ..
            })
        ));
        assert_eq!((calls, waits.len()), (1, 0));
    }

    #[tokio::test]
    async fn cancellation_ends_the_wait() {
        let cancel = CancellationToken::new();
        let limits = Limits {
            cancel: Some(&cancel),
            ..Limits::default()
        };
        let canceller = cancel.clone();
        let started = Instant::now();
        let outcome: Result<(), _> = retry(
            &ms(3, 60_000, 60_000),
            limits,
            |_| async { Err::<(), _>("down") },
            |_| Verdict::RETRY,
            |_, _| canceller.cancel(),
        )
        .await;
        assert_eq!(outcome, Err(RetryError::Cancelled { attempts: 1 }));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not the 60 s wait"
        );
    }

    /// The geopreview report used `std::thread::sleep` between its attempts, holding a thread
    /// for the whole wait. The waits here must leave the runtime free: on a single-threaded
    /// runtime another task keeps running while a call waits to retry.
    #[tokio::test(flavor = "current_thread")]
    async fn regression_waits_do_not_block_the_runtime_thread() {
        let ticks = Arc::new(Mutex::new(0u32));
        let ticker = {
            let ticks = ticks.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    *ticks.lock().expect("ticks") += 1;
                }
            })
        };
        let (outcome, _, _) = run(
            ms(3, 100, 100),
            Limits::default(),
            vec![Err(Verdict::RETRY), Err(Verdict::RETRY), Ok(1)],
        )
        .await;
        ticker.abort();
        assert_eq!(outcome, Ok(1));
        let ticks = *ticks.lock().expect("ticks");
        assert!(
            ticks >= 10,
            "the other task ran during the 200 ms of waits: {ticks} ticks"
        );
    }
}
