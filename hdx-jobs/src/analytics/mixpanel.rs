//! Mixpanel: the event the old `mixpanel.Mixpanel(token).track(distinct_id, event, meta)` call
//! sent, plus a `$insert_id` fixed per job so a retried job is never counted twice, sent to
//! `/import` (project secret or service account configured) or `/track` (the project token
//! only, like the old service).
//!
//! Mixpanel drops an event as a duplicate when its event name, `distinct_id`, `time` and
//! `$insert_id` are all the same as an earlier one's. The `$insert_id` is a UUID v5 of the job
//! id, and the time comes from the job (its `mixpanel_meta.time`, which HDX's CKAN sets, else
//! the job's creation time), so every attempt of a job sends the same four values.

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::delivery::{form_encode, Delivered, DeliveryError, Post, Redactor, Service};
use crate::config::AnalyticsConfig;
use crate::secret::Secret;

/// The namespace of `$insert_id`s (a fixed random UUID: changing it would break deduplication
/// of jobs retried across a deploy).
const INSERT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6c1d_2f0e_8a43_4d6b_9e57_b3a1_c0de_4a11);

/// The `mp_lib` property (the old service sent `python`, from the Python library).
pub const LIB: &str = "hdx-jobs";

/// The `$insert_id` of a job's event: a UUID v5 of the job id (36 characters of hex digits and
/// dashes, which Mixpanel accepts), the same on every attempt of the job.
pub fn insert_id(job_id: &str) -> String {
    Uuid::new_v5(&INSERT_ID_NAMESPACE, job_id.as_bytes()).to_string()
}

/// Where events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `/track`, authenticated by the token in the event (what the old service used).
    Track,
    /// `/import?strict=1`, authenticated by a service account (with its project id) or the
    /// project secret.
    Import {
        /// HTTP Basic user and password (`secret:` for a project secret).
        user: String,
        /// The password.
        password: Secret,
        /// `project_id` (service accounts).
        project_id: Option<String>,
    },
}

impl Endpoint {
    /// The endpoint the configuration selects: a service account, else the project secret,
    /// else `/track`.
    pub fn from_config(config: &AnalyticsConfig) -> Self {
        if let (Some(user), Some(password), Some(project)) = (
            &config.mixpanel_service_account,
            &config.mixpanel_service_account_secret,
            &config.mixpanel_project_id,
        ) {
            return Endpoint::Import {
                user: user.clone(),
                password: password.clone(),
                project_id: Some(project.clone()),
            };
        }
        match &config.mixpanel_api_secret {
            Some(secret) => Endpoint::Import {
                user: secret.expose().to_string(),
                password: Secret::new(""),
                project_id: None,
            },
            None => Endpoint::Track,
        }
    }

    /// `/track` or `/import`.
    pub fn path(&self) -> &'static str {
        match self {
            Endpoint::Track => "/track",
            Endpoint::Import { .. } => "/import",
        }
    }
}

/// Builds the event: `token`, `distinct_id`, `time`, `$insert_id`, `mp_lib`, `$lib_version`,
/// then the meta's properties on top (as the old library did, so the meta may set any of them).
/// `time` is written in milliseconds since the epoch (the meta's seconds are converted), which
/// both endpoints accept.
pub fn event(
    event_name: &str,
    distinct_id: &str,
    token: &Secret,
    meta: &Map<String, Value>,
    insert_id: &str,
    created_at: DateTime<Utc>,
) -> Value {
    let mut properties = Map::new();
    properties.insert("token".into(), json!(token.expose()));
    properties.insert("distinct_id".into(), json!(distinct_id));
    properties.insert("time".into(), json!(created_at.timestamp_millis()));
    properties.insert("$insert_id".into(), json!(insert_id));
    properties.insert("mp_lib".into(), json!(LIB));
    properties.insert("$lib_version".into(), json!(env!("CARGO_PKG_VERSION")));
    for (k, v) in meta {
        properties.insert(k.clone(), v.clone());
    }
    if let Some(time) = properties.get("time").and_then(millis) {
        properties.insert("time".into(), json!(time));
    }
    json!({"event": event_name, "properties": properties})
}

/// A numeric time in seconds or milliseconds since the epoch, as milliseconds.
fn millis(time: &Value) -> Option<i64> {
    let t = time.as_f64()?;
    if !t.is_finite() || t < 0.0 {
        return None;
    }
    Some(if t < 1e11 {
        (t * 1000.0).round() as i64
    } else {
        t.round() as i64
    })
}

/// The POST of one event to `endpoint`.
pub fn post(config: &AnalyticsConfig, endpoint: &Endpoint, event: &Value) -> Post {
    let batch = Value::Array(vec![event.clone()]).to_string();
    let base = &config.mixpanel_api_url;
    match endpoint {
        Endpoint::Track => Post {
            service: Service::Mixpanel,
            url: format!("{base}/track"),
            content_type: "application/x-www-form-urlencoded",
            // As the official Python library sends it: verbose answers, and ip=0 so Mixpanel
            // does not geolocate our server (HDX puts the user's address in the `ip` property).
            body: form_encode(&[
                ("data".into(), batch),
                ("verbose".into(), "1".into()),
                ("ip".into(), "0".into()),
            ])
            .into_bytes(),
            basic_auth: None,
        },
        Endpoint::Import {
            user,
            password,
            project_id,
        } => {
            let mut url = format!("{base}/import?strict=1");
            if let Some(project) = project_id {
                url.push_str("&project_id=");
                url.push_str(&super::delivery::form_encode_component(project));
            }
            Post {
                service: Service::Mixpanel,
                url,
                content_type: "application/json",
                body: batch.into_bytes(),
                basic_auth: Some((user.clone(), password.clone())),
            }
        }
    }
}

/// Checks a 2xx answer: `/track` answers `{"status": 1}` (verbose) when it took the event and
/// `{"status": 0, "error": ...}` when not; `/import` reports `num_records_imported`.
pub fn check(
    endpoint: &Endpoint,
    post: &Post,
    delivered: &Delivered,
    redactor: &Redactor,
) -> Result<(), DeliveryError> {
    let body: Value = serde_json::from_str(delivered.body.trim()).unwrap_or(Value::Null);
    let accepted = match endpoint {
        Endpoint::Track => body.get("status").and_then(Value::as_i64) == Some(1) || body == 1,
        Endpoint::Import { .. } => {
            body.get("num_records_imported").and_then(Value::as_i64) == Some(1)
                || body.get("status").and_then(Value::as_str) == Some("OK")
        }
    };
    if accepted {
        return Ok(());
    }
    Err(DeliveryError::Rejected {
        service: Service::Mixpanel,
        status: delivered.status,
        endpoint: redactor.redact(post.endpoint()),
        text: super::delivery::service_text(&delivered.body, redactor),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> AnalyticsConfig {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        crate::config::Config::from_lookup(|k| {
            vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
        .expect("config")
        .analytics
    }

    #[test]
    fn insert_ids_are_stable_per_job_and_valid_for_mixpanel() {
        let a = insert_id("0b8f2c1e-5f7a-4d3e-9c2b-1a2b3c4d5e6f");
        assert_eq!(a, insert_id("0b8f2c1e-5f7a-4d3e-9c2b-1a2b3c4d5e6f"));
        assert_ne!(a, insert_id("another-job"));
        assert_eq!(a.len(), 36);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit() || c == '-'));
    }

    #[test]
    fn the_event_has_what_track_sent_and_the_meta_wins() {
        let created = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        let meta = json!({"page": "home", "time": 1_700_000_123.5, "ip": "1.2.3.4"});
        let event = event(
            "page view",
            "user-1",
            &Secret::new("tok"),
            meta.as_object().expect("object"),
            "iid",
            created,
        );
        assert_eq!(event["event"], "page view");
        let p = &event["properties"];
        assert_eq!(p["token"], "tok");
        assert_eq!(p["distinct_id"], "user-1");
        assert_eq!(p["$insert_id"], "iid");
        assert_eq!(p["page"], "home");
        assert_eq!(p["ip"], "1.2.3.4");
        assert_eq!(p["time"], 1_700_000_123_500i64);
        let no_time = super::event("e", "u", &Secret::new("t"), &Map::new(), "i", created);
        assert_eq!(no_time["properties"]["time"], 1_700_000_000_000i64);
    }

    #[test]
    fn the_endpoint_follows_the_credentials() {
        assert_eq!(Endpoint::from_config(&config(&[])), Endpoint::Track);
        let secret = Endpoint::from_config(&config(&[("MIXPANEL_API_SECRET", "sec")]));
        assert!(
            matches!(&secret, Endpoint::Import { user, project_id: None, .. } if user == "sec")
        );
        let account = config(&[
            ("MIXPANEL_API_SECRET", "sec"),
            ("MIXPANEL_SERVICE_ACCOUNT", "sa.user"),
            ("MIXPANEL_SERVICE_ACCOUNT_SECRET", "sa-secret"),
            ("MIXPANEL_PROJECT_ID", "42"),
        ]);
        let endpoint = Endpoint::from_config(&account);
        let post = post(&account, &endpoint, &json!({"event": "e"}));
        assert_eq!(
            post.url,
            "https://api.mixpanel.com/import?strict=1&project_id=42"
        );
        assert_eq!(post.endpoint(), "https://api.mixpanel.com/import");
        let (user, password) = post.basic_auth.expect("auth");
        assert_eq!((user.as_str(), password.expose()), ("sa.user", "sa-secret"));
        assert_eq!(post.body, br#"[{"event":"e"}]"#);
    }

    #[test]
    fn answers_are_checked() {
        let post = post(&config(&[]), &Endpoint::Track, &json!({}));
        let answer = |body: &str| Delivered {
            status: 200,
            body: body.into(),
            attempts: 1,
        };
        let r = Redactor::new();
        assert!(check(
            &Endpoint::Track,
            &post,
            &answer(r#"{"status":1,"error":null}"#),
            &r
        )
        .is_ok());
        assert!(check(&Endpoint::Track, &post, &answer("1"), &r).is_ok());
        let err = check(
            &Endpoint::Track,
            &post,
            &answer(r#"{"status":0,"error":"data, missing or empty"}"#),
            &r,
        )
        .expect_err("status 0");
        assert!(err.to_string().contains("data, missing or empty"), "{err}");
        let import = Endpoint::from_config(&config(&[("MIXPANEL_API_SECRET", "s")]));
        assert!(check(
            &import,
            &post,
            &answer(r#"{"code":200,"num_records_imported":1,"status":"OK"}"#),
            &r
        )
        .is_ok());
    }
}
