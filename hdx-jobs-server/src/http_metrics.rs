//! Every request observed once: the access log (one line per request: method, route, status,
//! duration; an error line with the cause for every 5xx) and the request counts and latencies
//! of this server process for `/metrics`, keyed by the matched route (not the raw path, so ids
//! do not explode the series) and by a method from a closed set (any other method counts as `OTHER`): every label comes
//! from a bounded set, so no request can grow the series.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use crate::error::ErrorCause;
use crate::AppState;

/// Latency bucket bounds in seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default)]
struct Series {
    /// `(method, route, status) -> count`.
    requests: BTreeMap<(String, String, u16), u64>,
    /// `(method, route) -> (bucket counts (non-cumulative, +Inf last), sum)`.
    latencies: BTreeMap<(String, String), (Vec<u64>, f64)>,
}

/// The recorded series.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    series: Mutex<Series>,
}

impl HttpMetrics {
    fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let Ok(mut series) = self.series.lock() else {
            return;
        };
        *series
            .requests
            .entry((method.into(), route.into(), status))
            .or_default() += 1;
        let (buckets, sum) = series
            .latencies
            .entry((method.into(), route.into()))
            .or_insert_with(|| (vec![0; LATENCY_BUCKETS.len() + 1], 0.0));
        let index = LATENCY_BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        buckets[index] += 1;
        *sum += seconds;
    }

    /// Renders the series in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let Ok(series) = self.series.lock() else {
            return;
        };
        crate::routes::metrics::header(
            out,
            "hdx_jobs_http_requests_total",
            "counter",
            "HTTP requests served, by method, route and status.",
        );
        for ((method, route, status), count) in &series.requests {
            let labels = crate::routes::metrics::labels(&[
                ("method", method),
                ("route", route),
                ("status", &status.to_string()),
            ]);
            out.push_str(&format!("hdx_jobs_http_requests_total{labels} {count}\n"));
        }
        crate::routes::metrics::header(
            out,
            "hdx_jobs_http_request_duration_seconds",
            "histogram",
            "HTTP request latency, by method and route.",
        );
        for ((method, route), (buckets, sum)) in &series.latencies {
            let mut cumulative = 0;
            for (i, count) in buckets.iter().enumerate() {
                cumulative += count;
                let le = LATENCY_BUCKETS
                    .get(i)
                    .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
                let labels = crate::routes::metrics::labels(&[
                    ("method", method),
                    ("route", route),
                    ("le", &le),
                ]);
                out.push_str(&format!(
                    "hdx_jobs_http_request_duration_seconds_bucket{labels} {cumulative}\n"
                ));
            }
            let labels = crate::routes::metrics::labels(&[("method", method), ("route", route)]);
            out.push_str(&format!(
                "hdx_jobs_http_request_duration_seconds_sum{labels} {sum}\n"
            ));
            out.push_str(&format!(
                "hdx_jobs_http_request_duration_seconds_count{labels} {cumulative}\n"
            ));
        }
    }
}

/// The `method` label: one of the standard methods, else `OTHER` (HTTP allows any token as a
/// method, so a client could otherwise create a series per request).
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// The middleware.
pub async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    let ms = elapsed.as_secs_f64() * 1000.0;
    match response.extensions().get::<ErrorCause>() {
        Some(ErrorCause(cause)) => {
            tracing::error!(target: "hdx_jobs_server::access", method, route, status, ms, cause = %cause, "request failed");
        }
        None if status >= 500 => {
            tracing::error!(target: "hdx_jobs_server::access", method, route, status, ms, "request failed");
        }
        None => {
            tracing::info!(target: "hdx_jobs_server::access", method, route, status, ms, "request");
        }
    }
    state
        .http_metrics()
        .observe(method, &route, status, elapsed.as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_come_from_a_closed_set() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::OPTIONS), "OPTIONS");
        for made_up in ["FOO", "X-1", "PROPFIND", "CONNECT"] {
            let method = Method::from_bytes(made_up.as_bytes()).expect("method");
            assert_eq!(method_label(&method), "OTHER");
        }
    }
}
