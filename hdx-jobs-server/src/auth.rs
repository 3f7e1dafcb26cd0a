//! Who may call what. The server is closed by default:
//!
//! - `/api/*` (what CKAN calls), the monitor (page and API) and `/metrics` are protected; the
//!   probes (`/healthz`, `/readyz`, `/version`, `/about`), `/openapi.json`, the tiles and the
//!   preview map stay open (browsers of HDX's users load tiles directly);
//! - a protected request passes when its TCP peer is in `HDX_JOBS_TRUSTED_NETWORKS` (how CKAN on
//!   the same private network keeps calling the old endpoints unchanged), or when it carries
//!   `Authorization: Bearer <HDX_JOBS_API_TOKEN>`; the monitor and `/metrics` also take the token
//!   as the password of HTTP Basic auth, so a browser can open the monitor and Prometheus can
//!   scrape with `basic_auth`;
//! - with neither a token nor trusted networks, everything is open, and [`check_exposure`] lets
//!   the server start like that only on a loopback address;
//! - browsers must not be usable against the API from another site (cross-site request
//!   forgery: `/api/*` has GET endpoints that enqueue and delete, and a browser inside a trusted
//!   network, or one holding Basic credentials, would lend its standing to any page). A
//!   protected request that a browser marks as cross-site (`Sec-Fetch-Site`), or whose `Origin`
//!   is not this server, is refused; and the monitor's actions need the header
//!   [`MONITOR_ACTION_HEADER`], which the monitor page sends and which no cross-site form or
//!   simple request can carry.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::error::ApiError;
use crate::AppState;

/// The header the monitor page sends with every call; its actions are refused without it.
pub const MONITOR_ACTION_HEADER: &str = "x-hdx-jobs-monitor";

/// How a path is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// Anyone: probes, the OpenAPI document, tiles, the preview map.
    Open,
    /// `/api/*`: bearer token or trusted network.
    Api,
    /// The monitor's page and read API, `/metrics`: bearer or Basic token, or trusted network.
    Operators,
    /// The monitor's actions (POSTs under its API): as [`Area::Operators`], and only from the
    /// monitor page ([`MONITOR_ACTION_HEADER`]).
    MonitorAction,
}

/// The area of a request.
pub fn area(path: &str, method: &Method, monitor_path: &str) -> Area {
    if path.starts_with("/api/") || path == "/api" {
        return Area::Api;
    }
    if path == "/metrics" {
        return Area::Operators;
    }
    let in_monitor = path == monitor_path || path.starts_with(&format!("{monitor_path}/"));
    if !in_monitor {
        return Area::Open;
    }
    // Actions are POSTs; any other method is routed (and refused with 405) as a read.
    if path.starts_with(&format!("{monitor_path}/api/")) && method == Method::POST {
        Area::MonitorAction
    } else {
        Area::Operators
    }
}

/// Refuses to serve on a non-loopback address with neither a token nor trusted networks: that
/// would open every endpoint to whoever reaches the port.
pub fn check_exposure(addr: SocketAddr, state: &AppState) -> Result<(), String> {
    let config = state.config();
    if addr.ip().is_loopback() || config.api_token.is_some() || !config.trusted_networks.is_empty()
    {
        return Ok(());
    }
    Err(format!(
        "refusing to listen on {addr} with no HDX_JOBS_API_TOKEN and no HDX_JOBS_TRUSTED_NETWORKS: \
         every endpoint would be open to anyone who reaches it (set one of them, or bind to 127.0.0.1)"
    ))
}

/// The middleware.
pub async fn protect(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let config = state.config();
    let area = area(request.uri().path(), request.method(), &config.monitor_path);
    if area == Area::Open {
        return next.run(request).await;
    }
    let headers = request.headers();
    if let Err(why) = same_site(headers) {
        return forbidden(why);
    }
    if area == Area::MonitorAction && !headers.contains_key(MONITOR_ACTION_HEADER) {
        return forbidden("monitor actions are taken from the monitor page only");
    }
    let open = config.api_token.is_none() && config.trusted_networks.is_empty();
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let trusted = peer.is_some_and(|ip| is_trusted(ip, &config.trusted_networks));
    let token_ok = config
        .api_token
        .as_ref()
        .is_some_and(|token| token_matches(headers, token.expose(), area != Area::Api));
    if open || trusted || token_ok {
        return next.run(request).await;
    }
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "401 Unauthorized: a valid token is required",
    )
    .into_response();
    let challenge = if area == Area::Api {
        "Bearer"
    } else {
        "Basic realm=\"hdx-jobs\", charset=\"UTF-8\""
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

fn forbidden(why: &str) -> Response {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "Forbidden",
        format!("403 Forbidden: {why}"),
    )
    .into_response()
}

/// True when `ip` is in one of the trusted networks (IPv4-mapped IPv6 peers count as IPv4).
pub fn is_trusted(ip: IpAddr, networks: &[hdx_jobs::outbound::IpNet]) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    networks.iter().any(|net| net.contains(ip))
}

/// Refuses requests a browser marks as coming from another site: `Sec-Fetch-Site` other than
/// `same-origin` or `none` (typed or bookmarked), or an `Origin` whose host is not the `Host`
/// this request was sent to. Servers (CKAN, Prometheus, curl) send neither header.
pub fn same_site(headers: &HeaderMap) -> Result<(), &'static str> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        if !matches!(site, "same-origin" | "none") {
            return Err("cross-site requests are refused");
        }
    }
    if let Some(origin) = text("origin") {
        let origin_host = origin
            .split_once("://")
            .map(|(_, rest)| rest.trim_end_matches('/'));
        if origin_host.is_none() || origin_host != text("host") {
            return Err("requests from another origin are refused");
        }
    }
    Ok(())
}

/// True when the request carries the token: `Authorization: Bearer <token>`, or (when
/// `allow_basic`) `Authorization: Basic base64(<any user>:<token>)`. Compared in constant time.
pub fn token_matches(headers: &HeaderMap, token: &str, allow_basic: bool) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    if let Some(presented) = value.strip_prefix("Bearer ") {
        return constant_time_eq(presented.trim().as_bytes(), token.as_bytes());
    }
    if let (true, Some(encoded)) = (allow_basic, value.strip_prefix("Basic ")) {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let password = match decoded.iter().position(|b| *b == b':') {
            Some(colon) => &decoded[colon + 1..],
            None => return false,
        };
        return constant_time_eq(password, token.as_bytes());
    }
    false
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_protected() {
        let m = "/monitor";
        assert_eq!(area("/api/send-analytics", &Method::POST, m), Area::Api);
        assert_eq!(area("/api/delete-layers", &Method::GET, m), Area::Api);
        assert_eq!(area("/metrics", &Method::GET, m), Area::Operators);
        assert_eq!(area("/monitor", &Method::GET, m), Area::Operators);
        assert_eq!(
            area("/monitor/api/overview", &Method::GET, m),
            Area::Operators
        );
        assert_eq!(
            area("/monitor/api/jobs/x/requeue", &Method::POST, m),
            Area::MonitorAction
        );
        for open in [
            "/healthz",
            "/readyz",
            "/version",
            "/about",
            "/openapi.json",
            "/tiles/x.json",
            "/preview/x",
            "/monitorx",
        ] {
            assert_eq!(area(open, &Method::GET, m), Area::Open, "{open}");
        }
    }

    #[test]
    fn tokens_compare_as_bearer_or_basic_password() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        assert!(token_matches(&headers, "s3cret", false));
        assert!(!token_matches(&headers, "s3cre", false));
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("ops:s3cret")
        );
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&basic).expect("header"),
        );
        assert!(token_matches(&headers, "s3cret", true));
        assert!(
            !token_matches(&headers, "s3cret", false),
            "no Basic for the API"
        );
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert!(!token_matches(&headers, "s3cret", true));
    }

    #[test]
    fn cross_site_browser_requests_are_spotted() {
        let mut headers = HeaderMap::new();
        assert!(same_site(&headers).is_ok());
        headers.insert("host", HeaderValue::from_static("jobs.internal:5000"));
        headers.insert(
            "origin",
            HeaderValue::from_static("http://jobs.internal:5000"),
        );
        assert!(same_site(&headers).is_ok());
        headers.insert("origin", HeaderValue::from_static("https://evil.example"));
        assert!(same_site(&headers).is_err());
        headers.insert("origin", HeaderValue::from_static("null"));
        assert!(same_site(&headers).is_err());
        headers.remove("origin");
        headers.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(same_site(&headers).is_err());
        headers.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_site(&headers).is_ok());
    }
}
