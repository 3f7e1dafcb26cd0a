//! The legacy Universal Analytics delivery (`GA_MODE=ua`): `ga_meta` form-posted to a
//! `collect` endpoint as the old service did (`requests.post(url, data=ga_meta, timeout=3)`),
//! for anyone still running a UA-compatible collector. Google's own UA stopped processing data
//! in July 2023, so this is off unless asked for.

use serde_json::Value;

use super::delivery::{form_encode, Post, Service};
use crate::config::AnalyticsConfig;

/// `ga_meta` as the form fields Python's `requests` would send for it: a dict's items with
/// `None` left out, `True`/`False` for booleans, one field per element of a list; a string is
/// sent as it is (it already is a form).
pub fn form_body(ga_meta: &Value) -> String {
    match ga_meta {
        Value::String(form) => form.clone(),
        Value::Object(map) => {
            let mut pairs = Vec::new();
            for (key, value) in map {
                match value {
                    Value::Array(items) => {
                        for item in items {
                            pairs.push((key.clone(), python_text(item)));
                        }
                    }
                    Value::Null => {}
                    other => pairs.push((key.clone(), python_text(other))),
                }
            }
            form_encode(&pairs)
        }
        _ => String::new(),
    }
}

fn python_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        other => other.to_string(),
    }
}

/// The form post of `ga_meta` to `GA_UA_URL`.
pub fn post(config: &AnalyticsConfig, ga_meta: &Value) -> Post {
    Post {
        service: Service::GaUa,
        url: config.ga_ua_url.clone(),
        content_type: "application/x-www-form-urlencoded",
        body: form_body(ga_meta).into_bytes(),
        basic_auth: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dicts_are_sent_like_requests_sends_them() {
        let body = form_body(&json!({
            "v": "1", "t": "event", "ec": "a b", "ev": 3, "ni": true, "x": null, "cd": ["p", "q"]
        }));
        assert_eq!(body, "v=1&t=event&ec=a+b&ev=3&ni=True&cd=p&cd=q");
        assert_eq!(
            crate::http::parse_form(&body)[2],
            ("ec".to_string(), "a b".to_string())
        );
        assert_eq!(form_body(&json!("v=1&t=pageview")), "v=1&t=pageview");
    }
}
