//! Outgoing HTTP (ureq): one way to build an agent, so every call carries HDX's User-Agent and
//! real timeouts, and turns non-2xx answers into values callers inspect (not errors); calls
//! whose target comes from a job use [`guarded_agent`] (see [`crate::outbound`]). Also the one
//! percent-decoder, for URLs, `Content-Disposition` names and forms.

use std::sync::Arc;
use std::time::Duration;

use crate::outbound::OutboundPolicy;

/// Connect timeout of every outgoing call.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(12);

/// An agent with a User-Agent, TLS verification on or off, a connect timeout and a total
/// timeout per call. Redirects are not followed (callers that want them follow them, checking
/// each hop).
pub fn agent(user_agent: &str, verify_tls: bool, timeout: Duration) -> ureq::Agent {
    agent_config(user_agent, verify_tls, timeout)
        .build()
        .new_agent()
}

/// [`agent`] whose every connection passes the outbound guard: for calls whose target comes
/// from a job (redirects are followed by hand, each hop on this agent, so each is checked).
pub fn guarded_agent(
    user_agent: &str,
    verify_tls: bool,
    timeout: Duration,
    policy: Arc<OutboundPolicy>,
) -> ureq::Agent {
    crate::outbound::guarded_agent(agent_config(user_agent, verify_tls, timeout), policy)
}

fn agent_config(
    user_agent: &str,
    verify_tls: bool,
    timeout: Duration,
) -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> {
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
}

/// Decodes `%XX` escapes (RFC 3986), with the `url` crate's own decoder. A `%` not followed by
/// two hex digits stays as it is, and bytes that are not UTF-8 once decoded become U+FFFD.
pub fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// Decodes an `application/x-www-form-urlencoded` body (`a=1&b=two+words`) into its pairs
/// (`url::form_urlencoded::parse`: `+` is a space, empty pieces are skipped, a piece without
/// `=` has an empty value).
pub fn parse_form(form: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(form.as_bytes())
        .into_owned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_decoded_and_broken_ones_kept() {
        assert_eq!(percent_decode("a%20b%2Fc"), "a b/c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%+1"), "%+1");
        assert_eq!(percent_decode("caf%C3%A9"), "café");
        assert_eq!(percent_decode("a+b"), "a+b");
    }

    #[test]
    fn forms_decode_plus_as_space() {
        assert_eq!(
            parse_form("a=%zz&b=%41&c=two+words%2B&d&"),
            vec![
                ("a".to_string(), "%zz".to_string()),
                ("b".to_string(), "A".to_string()),
                ("c".to_string(), "two words+".to_string()),
                ("d".to_string(), String::new()),
            ]
        );
    }
}
