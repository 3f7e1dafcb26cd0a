//! A client of CKAN's action API (`{CKAN_API_BASE_URL}/{action}`), as HDX's tasks call it: the
//! API key in `Authorization` (CKAN's convention, no `Bearer`), HDX's `User-Agent`, optional TLS
//! verification. Blocking (ureq): call it from `spawn_blocking` in async code.

use std::time::Duration;

use serde_json::Value;

use crate::config::CkanConfig;
use crate::secret::Secret;

/// Longest answer read from CKAN.
const MAX_RESPONSE: u64 = 64 * 1024 * 1024;

/// Failures of a CKAN call.
#[derive(Debug, thiserror::Error)]
pub enum CkanError {
    /// A setting is missing (no base URL, no API key).
    #[error("wrong configuration: {0}")]
    Config(String),
    /// CKAN answered with a non-2xx status.
    #[error("CKAN answered {status} to {action}: {body}")]
    Status {
        /// The action called.
        action: String,
        /// HTTP status.
        status: u16,
        /// CKAN's error text (its `error` object when JSON, else the start of the body).
        body: String,
    },
    /// CKAN could not be reached or the answer was cut off.
    #[error("cannot reach CKAN for {action}: {message}")]
    Transport {
        /// The action called.
        action: String,
        /// What failed.
        message: String,
    },
    /// The answer is not CKAN's JSON envelope.
    #[error("CKAN's answer to {action} is not JSON: {message}")]
    BadResponse {
        /// The action called.
        action: String,
        /// Why.
        message: String,
    },
}

impl CkanError {
    /// True for failures worth retrying: transport errors, 429 and 5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            CkanError::Transport { .. } => true,
            CkanError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

/// A CKAN action API client.
#[derive(Debug, Clone)]
pub struct CkanClient {
    base_url: String,
    api_key: Option<Secret>,
    agent: ureq::Agent,
}

impl CkanClient {
    /// A client for the configured CKAN, sending `api_key` (if any), with a per-call timeout.
    pub fn new(
        config: &CkanConfig,
        api_key: Option<Secret>,
        timeout: Duration,
    ) -> Result<Self, CkanError> {
        let base_url = config
            .api_base_url
            .clone()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| CkanError::Config("CKAN_API_BASE_URL is not set".into()))?;
        Ok(CkanClient {
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key: api_key.filter(|k| !k.is_empty()),
            agent: crate::http::agent(&config.user_agent, config.verify_ssl, timeout),
        })
    }

    /// The action's URL.
    pub fn action_url(&self, action: &str) -> String {
        format!("{}/{action}", self.base_url)
    }

    /// POSTs a JSON body to an action; returns CKAN's whole JSON answer.
    pub fn post(&self, action: &str, body: &Value) -> Result<Value, CkanError> {
        let mut request = self
            .agent
            .post(&self.action_url(action))
            .header("Content-Type", "application/json");
        if let Some(key) = &self.api_key {
            request = request.header("Authorization", key.expose());
        }
        let response = request.send(body.to_string());
        self.answer(action, response)
    }

    /// GETs an action with query parameters; returns CKAN's whole JSON answer.
    pub fn get(&self, action: &str, params: &[(String, String)]) -> Result<Value, CkanError> {
        let mut request = self.agent.get(&self.action_url(action));
        for (k, v) in params {
            request = request.query(k, v);
        }
        if let Some(key) = &self.api_key {
            request = request.header("Authorization", key.expose());
        }
        self.answer(action, request.call())
    }

    fn answer(
        &self,
        action: &str,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value, CkanError> {
        let mut response = response.map_err(|e| CkanError::Transport {
            action: action.into(),
            message: e.to_string(),
        })?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE)
            .read_to_string()
            .map_err(|e| CkanError::Transport {
                action: action.into(),
                message: e.to_string(),
            })?;
        if !(200..300).contains(&status) {
            let body = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("error").map(Value::to_string))
                .unwrap_or_else(|| text.chars().take(500).collect());
            return Err(CkanError::Status {
                action: action.into(),
                status,
                body,
            });
        }
        serde_json::from_str(&text).map_err(|e| CkanError::BadResponse {
            action: action.into(),
            message: e.to_string(),
        })
    }
}
