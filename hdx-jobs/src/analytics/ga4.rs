//! Google Analytics 4: the old Universal Analytics fields of `ga_meta` mapped to one GA4
//! Measurement Protocol event, validated against GA4's limits before it is sent (GA answers
//! 2xx to anything and silently drops what breaks its rules), and the validation server's
//! `validationMessages` read back when `GA_DEBUG` is on.
//!
//! The mapping (UA parameter → GA4):
//!
//! | UA | GA4 |
//! |---|---|
//! | `cid` | `client_id` (required; `uid` stands in when there is none) |
//! | `uid` | `user_id` |
//! | `uip` | `ip_override` |
//! | `t=pageview` | event `page_view`; any other hit type: the job's `event_name` in snake case (`first login` → `first_login`) |
//! | `ec`, `ea`, `el` | `event_category`, `event_action`, `event_label` |
//! | `ev` | `value` (a number) |
//! | `dl`, `dr`, `dt`, `dp`, `dh` | `page_location`, `page_referrer`, `page_title`, `page_path`, `page_hostname` |
//! | `ds` | `data_source` |
//! | `cd<N>` / `cm<N>` | `dimension<N>` / `metric<N>` (a number) |
//!
//! Other UA parameters (`v`, `tid`, `z`, `ni`, ...) have no GA4 meaning and are left out.
//! String values longer than GA4 keeps (100 characters; 1,000 for `page_location`, 420 for
//! `page_referrer`, 300 for `page_title`) are cut to that length; a name GA4 would refuse, more
//! than 25 parameters or a non-numeric value fail the job before anything is sent.
//! The event time (`timestamp_micros`) is the job's event time when GA4 still accepts it
//! (within 72 hours).

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::delivery::{form_encode_component, Post, Service};
use crate::config::AnalyticsConfig;

/// Longest event or parameter name.
pub const MAX_NAME: usize = 40;
/// Most parameters per event.
pub const MAX_PARAMS: usize = 25;
/// Longest string parameter value (standard properties).
pub const MAX_VALUE: usize = 100;
/// Longest `user_id`.
pub const MAX_USER_ID: usize = 256;
/// How far back `timestamp_micros` may go (GA4: 72 hours; one hour kept as margin).
const MAX_BACKDATE_HOURS: i64 = 71;

/// Event names the Measurement Protocol reserves.
pub const RESERVED_EVENT_NAMES: &[&str] = &[
    "ad_activeview",
    "ad_click",
    "ad_exposure",
    "ad_impression",
    "ad_query",
    "ad_reward",
    "adunit_exposure",
    "app_background",
    "app_clear_data",
    "app_exception",
    "app_install",
    "app_remove",
    "app_store_refund",
    "app_update",
    "app_upgrade",
    "dynamic_link_app_open",
    "dynamic_link_app_update",
    "dynamic_link_first_open",
    "error",
    "firebase_campaign",
    "firebase_in_app_message_action",
    "firebase_in_app_message_dismiss",
    "firebase_in_app_message_impression",
    "first_open",
    "first_visit",
    "in_app_purchase",
    "notification_dismiss",
    "notification_foreground",
    "notification_open",
    "notification_receive",
    "os_update",
    "session_start",
    "session_start_with_rollout",
    "user_engagement",
];

/// Prefixes no event or parameter name may start with.
pub const RESERVED_PREFIXES: &[&str] = &["_", "firebase_", "ga_", "google_", "gtag."];

/// UA text parameters and their GA4 names.
const TEXT_PARAMS: &[(&str, &str)] = &[
    ("ec", "event_category"),
    ("ea", "event_action"),
    ("el", "event_label"),
    ("dl", "page_location"),
    ("dr", "page_referrer"),
    ("dt", "page_title"),
    ("dp", "page_path"),
    ("dh", "page_hostname"),
    ("ds", "data_source"),
];

/// UA parameters used elsewhere in the payload.
const CONSUMED: &[&str] = &["cid", "uid", "uip", "t", "ev"];

/// The longest string GA4 keeps for a parameter.
pub fn value_limit(param: &str) -> usize {
    match param {
        "page_location" => 1000,
        "page_referrer" => 420,
        "page_title" => 300,
        _ => MAX_VALUE,
    }
}

/// A GA4 event name from an HDX event name: lower case, runs of anything but ASCII letters and
/// digits turned into one `_`, no `_` at either end (`"Dataset Download - CSV"` →
/// `dataset_download_csv`). The result is validated, not trusted.
pub fn event_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_string()
}

/// The mapped payload and what the mapping changed or left out (for the logs).
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// The Measurement Protocol JSON body.
    pub payload: Value,
    /// Values cut to GA4's limits, parameters left out.
    pub notes: Vec<String>,
}

/// `ga_meta` as text values: a dict (values turned to text the way a form post does), or a
/// form-encoded string.
pub fn meta_fields(ga_meta: &Value) -> Vec<(String, Value)> {
    match ga_meta {
        Value::Object(map) => map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        Value::String(form) => crate::http::parse_form(form)
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
        _ => Vec::new(),
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn number(value: &Value) -> Option<Value> {
    match value {
        Value::Number(_) => Some(value.clone()),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(i) = s.parse::<i64>() {
                Some(json!(i))
            } else {
                s.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .map(|f| json!(f))
            }
        }
        _ => None,
    }
}

fn truncate(value: &str, limit: usize) -> Option<String> {
    (value.chars().count() > limit).then(|| value.chars().take(limit).collect())
}

/// Maps the job's event to a GA4 payload and validates it. `event_time` is the job's event
/// time; `debug` asks the validation server to enforce GA's recommendations too.
pub fn map(
    hdx_event_name: &str,
    ga_meta: &Value,
    event_time: DateTime<Utc>,
    now: DateTime<Utc>,
    debug: bool,
) -> Result<Mapped, Vec<String>> {
    let fields = meta_fields(ga_meta);
    let get = |key: &str| fields.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    let mut notes = Vec::new();
    let mut errors = Vec::new();

    let mut payload = Map::new();
    match get("cid").or_else(|| get("uid")).map(text) {
        Some(cid) if !cid.trim().is_empty() => {
            payload.insert("client_id".into(), json!(cid));
        }
        _ => errors.push("ga_meta has no cid (client id), which GA4 requires".to_string()),
    }
    if let Some(uid) = get("uid").map(text).filter(|u| !u.is_empty()) {
        payload.insert("user_id".into(), json!(uid));
    }
    let age = now - event_time;
    if age >= chrono::Duration::zero() && age < chrono::Duration::hours(MAX_BACKDATE_HOURS) {
        payload.insert(
            "timestamp_micros".into(),
            json!(event_time.timestamp_micros()),
        );
    }
    if let Some(ip) = get("uip").map(text).filter(|ip| !ip.is_empty()) {
        // HDX sends the X-Real-IP header, possibly a list: the first one is the user's.
        let first = ip.split(',').next().unwrap_or_default().trim().to_string();
        payload.insert("ip_override".into(), json!(first));
    }
    if debug {
        payload.insert(
            "validation_behavior".into(),
            json!("ENFORCE_RECOMMENDATIONS"),
        );
    }

    let name = match get("t").map(text).as_deref() {
        Some("pageview") => "page_view".to_string(),
        _ => event_name(hdx_event_name),
    };
    let mut params = Map::new();
    for (ua, ga4) in TEXT_PARAMS {
        if let Some(value) = get(ua).map(text) {
            let value = match truncate(&value, value_limit(ga4)) {
                Some(cut) => {
                    notes.push(format!("{ga4} cut to {} characters", value_limit(ga4)));
                    cut
                }
                None => value,
            };
            params.insert((*ga4).to_string(), json!(value));
        }
    }
    if let Some(ev) = get("ev") {
        match number(ev) {
            Some(n) => {
                params.insert("value".into(), n);
            }
            None => errors.push(format!("ev (event value) must be a number, not {ev}")),
        }
    }
    for (key, value) in &fields {
        let custom = |prefix: &str| {
            key.strip_prefix(prefix)
                .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        };
        if let Some(n) = custom("cd") {
            let name = format!("dimension{n}");
            let mut value = text(value);
            if let Some(cut) = truncate(&value, MAX_VALUE) {
                notes.push(format!("{name} cut to {MAX_VALUE} characters"));
                value = cut;
            }
            params.insert(name, json!(value));
        } else if let Some(n) = custom("cm") {
            match number(value) {
                Some(v) => {
                    params.insert(format!("metric{n}"), v);
                }
                None => errors.push(format!(
                    "{key} (custom metric) must be a number, not {value}"
                )),
            }
        } else if !CONSUMED.contains(&key.as_str()) && !TEXT_PARAMS.iter().any(|(ua, _)| ua == key)
        {
            notes.push(format!("{key} has no GA4 equivalent: left out"));
        }
    }
    payload.insert(
        "events".into(),
        json!([{"name": name, "params": Value::Object(params)}]),
    );
    let payload = Value::Object(payload);
    if let Err(mut found) = validate(&payload) {
        errors.append(&mut found);
    }
    if errors.is_empty() {
        Ok(Mapped { payload, notes })
    } else {
        Err(errors)
    }
}

/// Whether `name` is a name GA4 accepts for an event or a parameter: 1 to 40 characters,
/// ASCII letters, digits and `_`, starting with a letter, no reserved prefix.
fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".into());
    }
    if name.chars().count() > MAX_NAME {
        return Some(format!("is longer than {MAX_NAME} characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Some("must start with a letter".into());
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Some("may only have letters, digits and _".into());
    }
    RESERVED_PREFIXES
        .iter()
        .find(|p| name.starts_with(*p))
        .map(|p| format!("starts with the reserved prefix {p}"))
}

/// Checks a Measurement Protocol payload against GA4's limits; the problems found, if any.
pub fn validate(payload: &Value) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    match payload.get("client_id") {
        Some(Value::String(s)) if !s.is_empty() => {}
        _ => problems.push("client_id is missing".to_string()),
    }
    if let Some(uid) = payload.get("user_id").and_then(Value::as_str) {
        if uid.chars().count() > MAX_USER_ID {
            problems.push(format!("user_id is longer than {MAX_USER_ID} characters"));
        }
    }
    let events = payload
        .get("events")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if events.is_empty() || events.len() > 25 {
        problems.push(format!(
            "a request carries 1 to 25 events, not {}",
            events.len()
        ));
    }
    for event in events {
        let name = event.get("name").and_then(Value::as_str).unwrap_or("");
        if let Some(problem) = name_problem(name) {
            problems.push(format!("event name {name:?} {problem}"));
        } else if RESERVED_EVENT_NAMES.contains(&name) {
            problems.push(format!("event name {name:?} is reserved by GA4"));
        }
        let empty = Map::new();
        let params = event
            .get("params")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        if params.len() > MAX_PARAMS {
            problems.push(format!(
                "event {name:?} has {} parameters; GA4 keeps at most {MAX_PARAMS}",
                params.len()
            ));
        }
        for (key, value) in params {
            if let Some(problem) = name_problem(key) {
                problems.push(format!("parameter name {key:?} {problem}"));
            }
            match value {
                Value::String(s) if s.chars().count() > value_limit(key) => problems.push(format!(
                    "parameter {key:?} is longer than {} characters",
                    value_limit(key)
                )),
                Value::String(_) | Value::Number(_) => {}
                other => problems.push(format!(
                    "parameter {key:?} must be a string or a number, not {other}"
                )),
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// The POST of a payload: `GA_MP_URL`, or its `/debug/mp/collect` validation server when
/// `GA_DEBUG` is on, with the measurement id and API secret in the query (GA4's design; the URL
/// is never printed whole).
pub fn post(config: &AnalyticsConfig, payload: &Value) -> Post {
    let base = config.ga_mp_url.trim_end_matches('/');
    let base = if config.ga_debug {
        let stem = base.strip_suffix("/mp/collect").unwrap_or(base);
        format!("{stem}/debug/mp/collect")
    } else {
        base.to_string()
    };
    let id = config.ga_measurement_id.as_deref().unwrap_or_default();
    let secret = config
        .ga_api_secret
        .as_ref()
        .map(|s| s.expose())
        .unwrap_or_default();
    let join = if base.contains('?') { '&' } else { '?' };
    Post {
        service: Service::Ga4,
        url: format!(
            "{base}{join}measurement_id={}&api_secret={}",
            form_encode_component(id),
            form_encode_component(secret)
        ),
        content_type: "application/json",
        body: payload.to_string().into_bytes(),
        basic_auth: None,
    }
}

/// The validation server's verdict: `Ok` when `validationMessages` is empty, else each message
/// as `fieldPath: description (validationCode)`.
pub fn validation_messages(body: &str) -> Result<(), Vec<String>> {
    let json: Value = match serde_json::from_str(body) {
        Ok(json) => json,
        Err(e) => {
            return Err(vec![format!(
                "the validation server's answer is not JSON: {e}"
            )])
        }
    };
    let messages = json
        .get("validationMessages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if messages.is_empty() {
        return Ok(());
    }
    Err(messages
        .iter()
        .map(|m| {
            let field = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("");
            format!(
                "{}: {} ({})",
                field("fieldPath"),
                field("description"),
                field("validationCode")
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).expect("time")
    }

    fn mapped(event: &str, meta: Value) -> Result<Mapped, Vec<String>> {
        map(
            event,
            &meta,
            now() - chrono::Duration::seconds(5),
            now(),
            false,
        )
    }

    #[test]
    fn names_become_snake_case() {
        assert_eq!(event_name("first login"), "first_login");
        assert_eq!(event_name("Dataset Download - CSV"), "dataset_download_csv");
        assert_eq!(event_name("  x__y  "), "x_y");
        assert_eq!(event_name("登录"), "");
    }

    #[test]
    fn hdx_fields_map_to_a_ga4_event() {
        let m = mapped(
            "first login",
            json!({
                "ec": "organization", "ea": "first login", "el": "new account", "ev": "3",
                "cd1": "onboarding", "cm2": 4.5, "uip": "8.8.8.8, 10.0.0.1",
                "dl": "https://data.humdata.org/user/x", "ds": "direct", "v": "1",
                "t": "event", "cid": "anonymous", "uid": "u-1", "tid": "UA-1"
            }),
        )
        .expect("valid");
        let p = &m.payload;
        assert_eq!(p["client_id"], "anonymous");
        assert_eq!(p["user_id"], "u-1");
        assert_eq!(p["ip_override"], "8.8.8.8");
        assert_eq!(p["timestamp_micros"], 1_699_999_995_000_000i64);
        assert!(p.get("validation_behavior").is_none());
        let event = &p["events"][0];
        assert_eq!(event["name"], "first_login");
        assert_eq!(
            event["params"],
            json!({
                "event_category": "organization", "event_action": "first login",
                "event_label": "new account", "page_location": "https://data.humdata.org/user/x",
                "data_source": "direct", "value": 3, "dimension1": "onboarding", "metric2": 4.5
            })
        );
        assert!(m.notes.iter().any(|n| n.contains("tid")), "{:?}", m.notes);
    }

    #[test]
    fn pageviews_form_posts_and_old_times() {
        let m = map(
            "ignored",
            &json!("v=1&t=pageview&cid=c1&dt=Home+page"),
            now() - chrono::Duration::hours(80),
            now(),
            true,
        )
        .expect("valid");
        assert_eq!(m.payload["events"][0]["name"], "page_view");
        assert_eq!(m.payload["events"][0]["params"]["page_title"], "Home page");
        assert!(
            m.payload.get("timestamp_micros").is_none(),
            "too old to backdate"
        );
        assert_eq!(m.payload["validation_behavior"], "ENFORCE_RECOMMENDATIONS");
    }

    #[test]
    fn long_values_are_cut_to_ga4_limits() {
        let long = "x".repeat(1500);
        let m = mapped(
            "e",
            json!({"cid": "c", "el": long, "dl": long, "dt": long, "cd3": long}),
        )
        .expect("valid");
        let params = &m.payload["events"][0]["params"];
        let len = |k: &str| params[k].as_str().expect("text").chars().count();
        assert_eq!(len("event_label"), 100);
        assert_eq!(len("page_location"), 1000);
        assert_eq!(len("page_title"), 300);
        assert_eq!(len("dimension3"), 100);
        assert_eq!(m.notes.len(), 4, "{:?}", m.notes);
    }

    #[test]
    fn what_ga4_would_refuse_is_refused_before_sending() {
        let fail = |event: &str, meta: Value| mapped(event, meta).expect_err(event).join("; ");
        assert!(fail("2fa enabled", json!({"cid": "c"})).contains("must start with a letter"));
        assert!(fail(&"a".repeat(41), json!({"cid": "c"})).contains("longer than 40"));
        assert!(fail("session start", json!({"cid": "c"})).contains("reserved"));
        assert!(fail("google search", json!({"cid": "c"})).contains("reserved prefix"));
        assert!(fail("登录", json!({"cid": "c"})).contains("is empty"));
        assert!(fail("e", json!({})).contains("cid"));
        assert!(fail("e", json!({"cid": "c", "ev": "lots"})).contains("ev (event value)"));
        let many: Map<String, Value> = (1..=26)
            .map(|i| (format!("cd{i}"), json!("v")))
            .chain([("cid".to_string(), json!("c"))])
            .collect();
        assert!(fail("e", Value::Object(many)).contains("26 parameters"));
    }

    #[test]
    fn the_validator_checks_every_rule() {
        let event =
            |params: Value| json!({"client_id": "c", "events": [{"name": "ok", "params": params}]});
        assert!(validate(&event(json!({"a": "b", "n": 1.5}))).is_ok());
        assert!(validate(&event(json!({"ga_x": "b"}))).is_err());
        assert!(validate(&event(json!({"a": "x".repeat(101)}))).is_err());
        assert!(validate(&event(json!({"page_location": "x".repeat(1000)}))).is_ok());
        assert!(validate(&event(json!({"a": true}))).is_err());
        assert!(validate(&json!({"client_id": "c", "events": []})).is_err());
        assert!(validate(&json!({"events": [{"name": "ok"}]})).is_err());
    }

    #[test]
    fn debug_answers_are_read() {
        assert!(validation_messages(r#"{"validationMessages": []}"#).is_ok());
        let err = validation_messages(
            r#"{"validationMessages":[{"fieldPath":"events","description":"Event at index: [0] has invalid name [_badEventName]. Names must start with an alphabetic character.","validationCode":"NAME_INVALID"}]}"#,
        )
        .expect_err("invalid");
        assert_eq!(
            err,
            vec!["events: Event at index: [0] has invalid name [_badEventName]. Names must start with an alphabetic character. (NAME_INVALID)"]
        );
        assert!(validation_messages("<html>").is_err());
    }

    #[test]
    fn urls_carry_the_stream_and_switch_to_the_validation_server() {
        let config = |debug: &str| {
            crate::config::Config::from_lookup(|k| match k {
                "GA_MEASUREMENT_ID" => Some("G-ABC".into()),
                "GA_API_SECRET" => Some("s/cret".into()),
                "GA_DEBUG" => Some(debug.into()),
                _ => None,
            })
            .expect("config")
            .analytics
        };
        let p = post(&config("false"), &json!({}));
        assert_eq!(
            p.url,
            "https://www.google-analytics.com/mp/collect?measurement_id=G-ABC&api_secret=s%2Fcret"
        );
        assert_eq!(p.endpoint(), "https://www.google-analytics.com/mp/collect");
        let p = post(&config("true"), &json!({}));
        assert!(p
            .url
            .starts_with("https://www.google-analytics.com/debug/mp/collect?"));
    }
}
