//! Delivering one POST to an analytics service, safely: connect and read timeouts, retries
//! with exponential backoff and jitter on timeouts, connection failures, 429 and 5xx (honouring
//! `Retry-After`), never on other statuses (the service's own error text is returned instead),
//! and every text that leaves this module scrubbed of secrets.
//!
//! Why retries here and not only RQ's: jobs enqueued by the old API carry no RQ `Retry`, so a
//! single blip would lose the event. Retrying the same body is safe for Mixpanel, whose
//! `$insert_id` (fixed per job) makes a repeat a duplicate it drops. A wait longer than the
//! configured maximum, or past the job's deadline, ends the run with a retryable failure that
//! carries the wait, so RQ's retry (when the job has one) waits at least that long.
//!
//! ureq is blocking: each attempt runs in `spawn_blocking`; waits are async and end early when
//! the job is cancelled.

use std::time::Duration;

use base64::Engine;

use crate::config::AnalyticsConfig;
use crate::retry::{retry, Backoff, GaveUp, Limits, RetryError, Verdict};
use crate::secret::Secret;
use crate::task::JobContext;

/// Longest answer read from a service.
const MAX_RESPONSE: u64 = 256 * 1024;

/// Longest service text kept in an error.
const MAX_TEXT: usize = 500;

/// The services events go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Mixpanel's ingestion API.
    Mixpanel,
    /// GA4's Measurement Protocol.
    Ga4,
    /// A Universal Analytics `collect` endpoint (`GA_MODE=ua`).
    GaUa,
}

impl Service {
    /// The name people know it by.
    pub fn name(self) -> &'static str {
        match self {
            Service::Mixpanel => "Mixpanel",
            Service::Ga4 => "Google Analytics 4",
            Service::GaUa => "Universal Analytics collector",
        }
    }

    /// The prefix of its error types (`mixpanel-rejected`, `ga-unavailable`, ...).
    pub fn slug(self) -> &'static str {
        match self {
            Service::Mixpanel => "mixpanel",
            Service::Ga4 | Service::GaUa => "ga",
        }
    }
}

/// How hard to try: timeouts and retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Connect (and name resolution) timeout.
    pub connect_timeout: Duration,
    /// Timeout of sending the request and of receiving the answer, each.
    pub read_timeout: Duration,
    /// Attempts per delivery within one job run (at least 1).
    pub max_attempts: u32,
    /// First wait; doubled at each retry.
    pub backoff: Duration,
    /// Longest wait within a run.
    pub backoff_max: Duration,
}

impl Policy {
    /// The policy the configuration asks for.
    pub fn from_config(config: &AnalyticsConfig) -> Self {
        Policy {
            connect_timeout: config.connect_timeout,
            read_timeout: config.read_timeout,
            max_attempts: config.max_attempts.max(1),
            backoff: config.retry_backoff,
            backoff_max: config.retry_backoff_max,
        }
    }

    /// The retries of one delivery: `max_attempts` in all, waits from `backoff` doubling up to
    /// `backoff_max`, with equal jitter (workers retrying together spread out).
    pub fn backoff(&self) -> Backoff {
        Backoff {
            attempts: self.max_attempts.max(1),
            base: self.backoff,
            max: self.backoff_max,
            jitter: true,
        }
    }

    /// The wait before retry number `retry` (1 for the first retry): exponential backoff
    /// (`backoff * 2^(retry-1)`, at most `backoff_max`) with "equal jitter" (half fixed, half
    /// random; `jitter` in `[0, 1)` picks the random half), and never less than the service's
    /// `Retry-After` ([`Backoff::wait`]).
    pub fn wait(&self, retry: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        self.backoff().wait(retry, retry_after, jitter)
    }

    /// The longest one attempt can take.
    fn attempt_budget(&self) -> Duration {
        self.connect_timeout + self.read_timeout * 3
    }
}

/// The agent analytics calls use: HDX's User-Agent, the policy's timeouts, no redirects, and
/// enough pooled connections for a busy worker.
pub fn agent(user_agent: &str, policy: &Policy) -> ureq::Agent {
    ureq::Agent::config_builder()
        .user_agent(user_agent)
        .timeout_resolve(Some(policy.connect_timeout))
        .timeout_connect(Some(policy.connect_timeout))
        .timeout_send_request(Some(policy.read_timeout))
        .timeout_send_body(Some(policy.read_timeout))
        .timeout_recv_response(Some(policy.read_timeout))
        .timeout_recv_body(Some(policy.read_timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .max_idle_connections(256)
        .max_idle_connections_per_host(128)
        .build()
        .new_agent()
}

/// One POST to make.
#[derive(Debug, Clone)]
pub struct Post {
    /// Who it goes to.
    pub service: Service,
    /// The whole URL (it may carry a secret in its query: never print it, see
    /// [`Post::endpoint`]).
    pub url: String,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
    /// HTTP Basic credentials.
    pub basic_auth: Option<(String, Secret)>,
}

impl Post {
    /// The URL without its query, for logs and errors.
    pub fn endpoint(&self) -> &str {
        self.url.split(['?', '#']).next().unwrap_or_default()
    }
}

/// A 2xx answer.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The HTTP status.
    pub status: u16,
    /// The body (at most 256 KiB).
    pub body: String,
    /// Attempts it took.
    pub attempts: u32,
}

/// Why a delivery failed. Texts are already scrubbed of secrets.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeliveryError {
    /// The service refused the request (a 4xx other than 429, or a 2xx whose body says it
    /// failed): retrying would not help.
    #[error("{} rejected the event (HTTP {status} from {endpoint}): {text}", service.name())]
    Rejected {
        /// Who.
        service: Service,
        /// HTTP status.
        status: u16,
        /// The URL without its query.
        endpoint: String,
        /// The service's error text.
        text: String,
    },
    /// Timeouts, connection failures, 429 or 5xx on every attempt of this run.
    #[error("{} unavailable after {attempts} attempt(s) to {endpoint}: {reason}", service.name())]
    Unavailable {
        /// Who.
        service: Service,
        /// Attempts made.
        attempts: u32,
        /// The URL without its query.
        endpoint: String,
        /// The last failure.
        reason: String,
        /// The service's last `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// The request cannot be made (a malformed URL): a configuration problem.
    #[error("cannot send to {}: {reason}", service.name())]
    Config {
        /// Who.
        service: Service,
        /// What is wrong.
        reason: String,
    },
    /// The job was stopped (timeout, stop command, shutdown) during the delivery.
    #[error("delivery to {} stopped: the job was cancelled", service.name())]
    Cancelled {
        /// Who.
        service: Service,
    },
}

/// Replaces secrets with `***` in texts that leave the analytics module (errors, logs, results).
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// A redactor of nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also hides `secret`, as written and percent-encoded (as it appears in URLs).
    pub fn hide(&mut self, secret: &str) {
        if secret.is_empty() {
            return;
        }
        let encoded = form_encode_component(secret);
        for s in [secret.to_string(), encoded] {
            if !self.secrets.contains(&s) {
                self.secrets.push(s);
            }
        }
        // Longest first, so a secret containing another is hidden whole.
        self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    /// `text` with every secret replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "***");
            }
        }
        out
    }
}

/// What one attempt gave.
enum Attempt {
    Answer {
        status: u16,
        body: String,
        retry_after: Option<Duration>,
    },
    Transport {
        message: String,
        retryable: bool,
        /// The connection dropped before any answer (a pooled keep-alive connection the
        /// server had closed, a reset).
        disconnected: bool,
    },
}

/// Why one attempt did not deliver.
enum Failed {
    /// Worth another attempt (a timeout, a connection failure, 429, 5xx).
    Transient {
        /// What went wrong, scrubbed of secrets.
        reason: String,
        /// The service's `Retry-After`.
        retry_after: Option<Duration>,
        /// The connection dropped before any answer.
        disconnected: bool,
    },
    /// Final: a refusal or a configuration error.
    Final(DeliveryError),
}

/// Sends `post`, retrying as the policy says ([`crate::retry`]). Returns the 2xx answer or why
/// it failed.
pub async fn deliver(
    ctx: &JobContext,
    agent: &ureq::Agent,
    policy: &Policy,
    post: &Post,
    redactor: &Redactor,
) -> Result<Delivered, DeliveryError> {
    let service = post.service;
    let endpoint = redactor.redact(post.endpoint());
    let limits = Limits {
        deadline: ctx.deadline(),
        reserve: policy.attempt_budget(),
        cancel: Some(ctx.cancellation()),
    };
    let mut retried_at_once = false;
    let delivered = retry(
        &policy.backoff(),
        limits,
        |attempt| {
            let (agent, post, endpoint) = (agent.clone(), post.clone(), endpoint.clone());
            async move {
                let outcome = tokio::task::spawn_blocking(move || send_once(&agent, &post))
                    .await
                    .unwrap_or_else(|e| Attempt::Transport {
                        message: format!("the sending thread failed: {e}"),
                        retryable: true,
                        disconnected: false,
                    });
                judge(outcome, attempt, service, endpoint, redactor)
            }
        },
        |failed| match failed {
            Failed::Final(_) => Verdict::Fail,
            // The first dropped connection is retried at once: it is nearly always a pooled
            // connection the server closed, and a new one will do.
            Failed::Transient {
                disconnected: true, ..
            } if !retried_at_once => {
                retried_at_once = true;
                Verdict::RetryNow
            }
            Failed::Transient { retry_after, .. } => Verdict::Retry {
                retry_after: *retry_after,
            },
        },
        |failed, retrying| {
            let reason = match failed {
                Failed::Transient { reason, .. } => reason.as_str(),
                Failed::Final(_) => "",
            };
            tracing::warn!(
                service = service.name(),
                endpoint = %endpoint,
                job_id = ctx.job_id(),
                attempt = retrying.attempt,
                wait_ms = retrying.wait.as_millis() as u64,
                reason = %reason,
                "analytics delivery failed; retrying"
            );
        },
    )
    .await;
    delivered.map_err(|e| match e {
        RetryError::Cancelled { .. } => DeliveryError::Cancelled { service },
        RetryError::Failed {
            error: Failed::Final(error),
            ..
        } => error,
        RetryError::Failed {
            error:
                Failed::Transient {
                    reason,
                    retry_after,
                    ..
                },
            attempts,
            why,
        } => DeliveryError::Unavailable {
            service,
            attempts,
            endpoint,
            reason: match why {
                GaveUp::RetryAfterTooLong(_) => format!(
                    "{reason} (Retry-After is longer than ANALYTICS_RETRY_BACKOFF_MAX: left to the job's retry)"
                ),
                GaveUp::NoTimeLeft => format!(
                    "{reason} (no time left before the job's timeout for another attempt)"
                ),
                GaveUp::Exhausted | GaveUp::NotRetryable => reason,
            },
            retry_after,
        },
    })
}

/// What an attempt's outcome means: delivered (a 2xx), worth another attempt, or final.
fn judge(
    outcome: Attempt,
    attempt: u32,
    service: Service,
    endpoint: String,
    redactor: &Redactor,
) -> Result<Delivered, Failed> {
    match outcome {
        Attempt::Answer { status, body, .. } if (200..300).contains(&status) => Ok(Delivered {
            status,
            body,
            attempts: attempt,
        }),
        Attempt::Answer {
            status,
            body,
            retry_after,
        } if status == 429 || (500..600).contains(&status) => Err(Failed::Transient {
            reason: format!("HTTP {status}: {}", service_text(&body, redactor)),
            retry_after,
            disconnected: false,
        }),
        Attempt::Answer { status, body, .. } => Err(Failed::Final(DeliveryError::Rejected {
            service,
            status,
            endpoint,
            text: service_text(&body, redactor),
        })),
        Attempt::Transport {
            message,
            retryable: false,
            ..
        } => Err(Failed::Final(DeliveryError::Config {
            service,
            reason: redactor.redact(&message),
        })),
        Attempt::Transport {
            message,
            disconnected,
            ..
        } => Err(Failed::Transient {
            reason: redactor.redact(&message),
            retry_after: None,
            disconnected,
        }),
    }
}

/// One blocking attempt.
fn send_once(agent: &ureq::Agent, post: &Post) -> Attempt {
    let mut request = agent
        .post(&post.url)
        .header("Content-Type", post.content_type);
    if let Some((user, password)) = &post.basic_auth {
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{user}:{}", password.expose()));
        request = request.header("Authorization", format!("Basic {token}"));
    }
    let mut response = match request.send(&post.body[..]) {
        Ok(response) => response,
        Err(e) => return transport(e),
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
    match response
        .body_mut()
        .with_config()
        .limit(MAX_RESPONSE)
        .read_to_string()
    {
        Ok(body) => Attempt::Answer {
            status,
            body,
            retry_after,
        },
        // A 2xx whose body was cut off is not known to be accepted; retrying is safe.
        Err(e) => Attempt::Transport {
            message: format!("reading the HTTP {status} answer failed: {e}"),
            retryable: true,
            disconnected: false,
        },
    }
}

fn transport(e: ureq::Error) -> Attempt {
    let retryable = !matches!(
        e,
        ureq::Error::BadUri(_)
            | ureq::Error::Http(_)
            | ureq::Error::RequireHttpsOnly(_)
            | ureq::Error::InvalidProxyUrl
    );
    let disconnected = matches!(&e, ureq::Error::Io(io) if matches!(
        io.kind(),
        std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe
    ));
    let message = match &e {
        ureq::Error::Timeout(which) => format!("timed out ({which:?})"),
        other => other.to_string(),
    };
    Attempt::Transport {
        message,
        retryable,
        disconnected,
    }
}

/// `Retry-After`: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// A service's error text: the `error` field of a JSON answer (with Mixpanel's per-record
/// messages), else the start of the body; scrubbed of secrets.
pub fn service_text(body: &str, redactor: &Redactor) -> String {
    let text = match serde_json::from_str::<serde_json::Value>(body) {
        Ok(json) => {
            let mut parts = Vec::new();
            match json.get("error") {
                Some(serde_json::Value::String(s)) => parts.push(s.clone()),
                Some(serde_json::Value::Null) | None => {}
                Some(other) => parts.push(other.to_string()),
            }
            if let Some(records) = json.get("failed_records").and_then(|v| v.as_array()) {
                for record in records {
                    let field = record.get("field").and_then(|v| v.as_str()).unwrap_or("");
                    let message = record.get("message").and_then(|v| v.as_str()).unwrap_or("");
                    parts.push(format!("{field}: {message}"));
                }
            }
            if parts.is_empty() {
                body.trim().to_string()
            } else {
                parts.join("; ")
            }
        }
        Err(_) => body.trim().to_string(),
    };
    let text = if text.is_empty() {
        "(empty answer)".to_string()
    } else {
        text
    };
    let mut short: String = text.chars().take(MAX_TEXT).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    redactor.redact(&short)
}

/// `application/x-www-form-urlencoded` of pairs, as browsers and Python's `urlencode` write it
/// (`url::form_urlencoded`): GA and Mixpanel receive these bytes.
pub fn form_encode(pairs: &[(String, String)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// One form component: `A-Z a-z 0-9 - _ . *` kept, space as `+`, every other byte `%XX`
/// (upper-case hex).
pub fn form_encode_component(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use testkit::http::{FakeServer, Reply};
    use tokio_util::sync::CancellationToken;

    fn policy(attempts: u32) -> Policy {
        Policy {
            connect_timeout: Duration::from_millis(500),
            read_timeout: Duration::from_millis(300),
            max_attempts: attempts,
            backoff: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
        }
    }

    fn post(server: &FakeServer, path: &str) -> Post {
        Post {
            service: Service::Mixpanel,
            url: format!("{}{path}?api_secret=s3cr3t-value", server.url()),
            content_type: "application/json",
            body: b"[1]".to_vec(),
            basic_auth: Some(("user".into(), Secret::new("pa55word"))),
        }
    }

    fn redactor() -> Redactor {
        let mut r = Redactor::new();
        r.hide("s3cr3t-value");
        r.hide("pa55word");
        r
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_and_honours_retry_after() {
        let p = Policy {
            backoff: Duration::from_secs(2),
            backoff_max: Duration::from_secs(30),
            ..policy(9)
        };
        assert_eq!(p.wait(1, None, 0.0), Duration::from_secs(1));
        assert_eq!(p.wait(1, None, 0.999_999).as_millis(), 1999);
        assert_eq!(p.wait(3, None, 0.0), Duration::from_secs(4));
        assert_eq!(p.wait(20, None, 0.0), Duration::from_secs(15));
        assert!(p.wait(40, None, 1.0) <= Duration::from_secs(30));
        assert_eq!(
            p.wait(1, Some(Duration::from_secs(7)), 0.5),
            Duration::from_secs(7)
        );
        assert_eq!(
            p.wait(5, Some(Duration::from_millis(1)), 0.0),
            Duration::from_secs(15)
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z")
            .expect("date")
            .with_timezone(&chrono::Utc);
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn redaction_hides_plain_and_encoded_secrets() {
        let mut r = Redactor::new();
        r.hide("a b/c");
        r.hide("");
        assert_eq!(r.redact("x a b/c y a+b%2Fc"), "x *** y ***");
        assert_eq!(
            service_text(r#"{"error": "bad token a b/c", "status": 0}"#, &r),
            "bad token ***"
        );
        assert_eq!(
            service_text(
                r#"{"code":400,"error":"some data points in the request failed validation","failed_records":[{"index":0,"field":"properties.time","message":"'properties.time' is invalid"}]}"#,
                &r
            ),
            "some data points in the request failed validation; properties.time: 'properties.time' is invalid"
        );
        assert_eq!(service_text("", &r), "(empty answer)");
        assert_eq!(service_text(&"x".repeat(600), &r).chars().count(), 501);
    }

    #[test]
    fn forms_are_encoded_like_browsers_do() {
        assert_eq!(
            form_encode(&[
                ("data".into(), r#"[{"a":"b c"}]"#.into()),
                ("ip".into(), "0".into())
            ]),
            "data=%5B%7B%22a%22%3A%22b+c%22%7D%5D&ip=0"
        );
    }

    /// The hand-written encoder GA and Mixpanel posts used before `url::form_urlencoded` wrote
    /// these bytes; every byte value must still come out the same.
    #[test]
    fn regression_form_encoding_is_byte_identical_to_the_old_encoder() {
        let old = |text: &str| {
            let mut out = String::new();
            for b in text.bytes() {
                match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                        out.push(b as char)
                    }
                    b' ' => out.push('+'),
                    _ => out.push_str(&format!("%{b:02X}")),
                }
            }
            out
        };
        let ascii: String = (0u8..0x80).map(char::from).collect();
        for text in [ascii.as_str(), "café ☃ 𝄞", "", "a+b=c&d"] {
            assert_eq!(form_encode_component(text), old(text), "{text:?}");
        }
        let pairs = [
            ("k y".to_string(), ascii.clone()),
            ("é".into(), String::new()),
        ];
        assert_eq!(
            form_encode(&pairs),
            format!("{}={}&{}=", old("k y"), old(&ascii), old("é"))
        );
    }

    #[tokio::test]
    async fn retries_5xx_then_delivers_with_the_same_body_and_credentials() {
        let server = FakeServer::start();
        server.reply_once("/e", Reply::status(500).body("oops"));
        server.reply_once("/e", Reply::status(429));
        server.reply("/e", Reply::json(serde_json::json!({"status": 1})));
        let ctx = JobContext::detached("t", CancellationToken::new());
        let p = policy(3);
        let done = deliver(
            &ctx,
            &agent("ua-test", &p),
            &p,
            &post(&server, "/e"),
            &redactor(),
        )
        .await
        .expect("delivered");
        assert_eq!((done.status, done.attempts), (200, 3));
        let got = server.requests_to("/e");
        assert_eq!(got.len(), 3);
        for r in &got {
            assert_eq!(r.body, b"[1]");
            assert_eq!(
                r.header("authorization"),
                Some("Basic dXNlcjpwYTU1d29yZA==")
            );
            assert_eq!(r.header("user-agent"), Some("ua-test"));
        }
    }

    #[tokio::test]
    async fn other_4xx_fail_at_once_with_the_service_text_scrubbed() {
        let server = FakeServer::start();
        server.reply(
            "/e",
            Reply::json(serde_json::json!({"error": "token s3cr3t-value is invalid"}))
                .with_status(400),
        );
        let ctx = JobContext::detached("t", CancellationToken::new());
        let p = policy(5);
        let err = deliver(&ctx, &agent("x", &p), &p, &post(&server, "/e"), &redactor())
            .await
            .expect_err("400");
        assert_eq!(server.requests_to("/e").len(), 1);
        let text = err.to_string();
        assert!(
            text.contains("HTTP 400") && text.contains("token *** is invalid"),
            "{text}"
        );
        assert!(
            !text.contains("s3cr3t") && !text.contains("api_secret"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn stalls_time_out_and_exhausted_retries_say_so() {
        let server = FakeServer::start();
        server.reply("/e", Reply::status(200).delay(Duration::from_secs(2)));
        let ctx = JobContext::detached("t", CancellationToken::new());
        let p = policy(2);
        let err = deliver(&ctx, &agent("x", &p), &p, &post(&server, "/e"), &redactor())
            .await
            .expect_err("stalled");
        assert!(
            matches!(&err, DeliveryError::Unavailable { attempts: 2, reason, .. } if reason.contains("timed out")),
            "{err}"
        );
        assert_eq!(server.requests_to("/e").len(), 2);
    }

    #[tokio::test]
    async fn a_dropped_connection_is_retried_at_once() {
        // A server that closes the first connection without answering, then answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/e", listener.local_addr().expect("addr"));
        let server = std::thread::spawn(move || {
            use std::io::{Read, Write};
            for (i, stream) in listener.incoming().take(2).enumerate() {
                let mut stream = stream.expect("accept");
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                if i == 1 {
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                }
            }
        });
        let ctx = JobContext::detached("t", CancellationToken::new());
        let p = Policy {
            backoff: Duration::from_secs(600),
            backoff_max: Duration::from_secs(600),
            ..policy(3)
        };
        let post = Post {
            url,
            basic_auth: None,
            ..post(&FakeServer::start(), "/unused")
        };
        let done = tokio::time::timeout(
            Duration::from_secs(20),
            deliver(&ctx, &agent("x", &p), &p, &post, &redactor()),
        )
        .await
        .expect("retried without the 600 s backoff")
        .expect("delivered");
        assert_eq!(done.attempts, 2);
        server.join().expect("server");
    }

    #[tokio::test]
    async fn long_retry_after_is_left_to_the_job_retry() {
        let server = FakeServer::start();
        server.reply("/e", Reply::status(429).header("Retry-After", "90"));
        let ctx = JobContext::detached("t", CancellationToken::new());
        let p = policy(5);
        let err = deliver(&ctx, &agent("x", &p), &p, &post(&server, "/e"), &redactor())
            .await
            .expect_err("429");
        assert!(
            matches!(err, DeliveryError::Unavailable { attempts: 1, retry_after: Some(d), .. } if d == Duration::from_secs(90))
        );
        assert_eq!(server.requests_to("/e").len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancellation_stops_the_wait() {
        let server = std::sync::Arc::new(FakeServer::start());
        server.reply("/e", Reply::status(503));
        let cancel = CancellationToken::new();
        let ctx = JobContext::detached("t", cancel.clone());
        let p = Policy {
            backoff: Duration::from_secs(20),
            backoff_max: Duration::from_secs(40),
            ..policy(5)
        };
        let watched = server.clone();
        let stopper = tokio::spawn(async move {
            testkit::eventually_async("the first attempt", Duration::from_secs(10), || {
                (!watched.requests_to("/e").is_empty()).then_some(())
            })
            .await;
            cancel.cancel();
        });
        let err = deliver(&ctx, &agent("x", &p), &p, &post(&server, "/e"), &redactor())
            .await
            .expect_err("cancelled");
        stopper.await.expect("stopper");
        assert!(matches!(err, DeliveryError::Cancelled { .. }));
    }

    #[tokio::test]
    async fn malformed_urls_are_configuration_errors() {
        let ctx = JobContext::detached("t", CancellationToken::new());
        let p = policy(3);
        let bad = Post {
            service: Service::Ga4,
            url: "not a url?api_secret=s3cr3t-value".into(),
            content_type: "application/json",
            body: Vec::new(),
            basic_auth: None,
        };
        let err = deliver(&ctx, &agent("x", &p), &p, &bad, &redactor())
            .await
            .expect_err("bad url");
        assert!(matches!(err, DeliveryError::Config { .. }), "{err}");
        assert!(!err.to_string().contains("s3cr3t"));
    }
}
