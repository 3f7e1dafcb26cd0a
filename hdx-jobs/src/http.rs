//! Outgoing HTTP (ureq): one way to build an agent, so every call carries HDX's User-Agent and
//! real timeouts, and turns non-2xx answers into values callers inspect (not errors).

use std::time::Duration;

/// Connect timeout of every outgoing call.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(12);

/// An agent with a User-Agent, TLS verification on or off, a connect timeout and a total
/// timeout per call. Redirects are not followed (callers that want them follow them, checking
/// each hop).
pub fn agent(user_agent: &str, verify_tls: bool, timeout: Duration) -> ureq::Agent {
    let tls = ureq::tls::TlsConfig::builder()
        .disable_verification(!verify_tls)
        .build();
    ureq::Agent::config_builder()
        .user_agent(user_agent)
        .timeout_connect(Some(CONNECT_TIMEOUT.min(timeout)))
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .tls_config(tls)
        .build()
        .new_agent()
}
