//! The file-structure check, `filestructurecheckapi.tasks.file_structure_check.fs_check_task`:
//! when a spreadsheet resource is uploaded, CKAN asks for its structure. The job fetches the HXL
//! proxy's source-info JSON for the file (sheets with their sizes and header hashes), computes
//! the sheet changes against the last successful check in the resource's `fs_check_info`, and
//! posts the result to CKAN's `hdx_fs_check_resource_revise` action:
//! `{id, package_id, key: "fs_check_info", value: {state: "success", message: "File structure
//! check completed", timestamp, sheet_changes: [{name, event_type, changed_fields}],
//! hxl_proxy_response}}`.
//!
//! The job's arguments are the old API's: `dataset_id`, `resource_id`,
//! `hxl_proxy_source_info_url`, `fs_check_info` (the resource's JSON string list of checks),
//! and the CKAN settings the API copied from its environment (`ckan_api_base_url`,
//! `resource_update_action`, `verify_ckan_ssl`, `hdx_user_agent`); those win over the worker's
//! configuration, as they did, and the worker's configuration fills in what is missing. The API
//! key is the worker's (`HDX_FSCHECK_API_KEY`, else `HDX_GIS_API_KEY`).
//!
//! Departures from the old task, which logged and reported success on most failures: an HXL
//! proxy answer that is not 2xx JSON and a CKAN call that fails now fail the job (retryable when
//! the service was unreachable, answered 429 or 5xx), so the resource is not left without a
//! check; an unreadable `fs_check_info` history only means no sheet changes.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::ckan::CkanClient;
use crate::config::{worker_setting, CkanConfig, Config};
use crate::events::detect::sheet_changes;
use crate::events::event::python_isoformat;
use crate::events::pyvalue::truthy;
use crate::outbound::OutboundPolicy;
use crate::task::{JobContext, Task, TaskError, TaskRegistry};

/// The wire name of the old service.
pub const FS_CHECK: &str = "filestructurecheckapi.tasks.file_structure_check.fs_check_task";

/// Timeout of each outgoing call when the job gives none (`timeout_sec`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest HXL proxy answer read.
const MAX_SOURCE_INFO: u64 = 32 * 1024 * 1024;

/// Redirects followed from the source-info URL (the old task's `requests.get` followed them).
const MAX_REDIRECTS: usize = 5;

/// The job's argument (one dict).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FsCheckArgs {
    /// The dataset (`package_id` in the CKAN call).
    #[serde(default)]
    pub dataset_id: Value,
    /// The resource (`id` in the CKAN call).
    #[serde(default)]
    pub resource_id: Value,
    /// `{HXL proxy}/api/source-info?url=<the file>`.
    #[serde(default)]
    pub hxl_proxy_source_info_url: Option<String>,
    /// The resource's check history: a JSON string list of `{state, hxl_proxy_response, ...}`.
    #[serde(default)]
    pub fs_check_info: Value,
    /// CKAN's action API base (the API copied its `CKAN_API_BASE_URL`).
    #[serde(default)]
    pub ckan_api_base_url: Option<String>,
    /// The action to post to (`hdx_fs_check_resource_revise`).
    #[serde(default)]
    pub resource_update_action: Option<String>,
    /// Verify CKAN's TLS certificate.
    #[serde(default)]
    pub verify_ckan_ssl: Option<Value>,
    /// User-Agent of outgoing calls.
    #[serde(default)]
    pub hdx_user_agent: Option<String>,
    /// Seconds per outgoing call.
    #[serde(default)]
    pub timeout_sec: Option<f64>,
}

/// The file-structure check task.
#[derive(Debug, Clone)]
pub struct FsCheck {
    ckan: CkanConfig,
    outbound: Arc<OutboundPolicy>,
}

impl FsCheck {
    /// The task with the worker's CKAN settings and outbound policy.
    pub fn new(config: &Config) -> Self {
        FsCheck {
            ckan: config.ckan.clone(),
            outbound: Arc::new(config.outbound.clone()),
        }
    }
}

/// Registers the file-structure check task.
pub fn register(registry: &mut TaskRegistry, config: &Config) {
    registry.register(FS_CHECK, FsCheck::new(config));
}

/// Sheet changes between the last successful check of `fs_check_info` and a new HXL proxy
/// answer, as CKAN stores them: `[{name, event_type, changed_fields}]` (`changed_fields` is ""
/// for created and deleted sheets, as the old task wrote).
pub fn fs_sheet_changes(fs_check_info: &Value, hxl_proxy_response: &Value) -> Vec<Value> {
    let parsed;
    let history = match fs_check_info {
        Value::String(text) if !text.is_empty() => match serde_json::from_str::<Value>(text) {
            Ok(value) => {
                parsed = value;
                &parsed
            }
            Err(e) => {
                tracing::warn!("fs_check_info is not JSON ({e}): no sheet changes");
                return Vec::new();
            }
        },
        other => other,
    };
    let Some(items) = history.as_array() else {
        return Vec::new();
    };
    let Some(last_success) = items
        .iter()
        .rev()
        .find(|item| item.get("state").and_then(Value::as_str) == Some("success"))
    else {
        return Vec::new();
    };
    let current = json!({
        "state": "success",
        "message": "",
        "timestamp": "",
        "hxl_proxy_response": hxl_proxy_response,
    });
    sheet_changes(last_success, &current)
        .into_iter()
        .map(|change| {
            json!({
                "name": change.sheet_id,
                "event_type": change.event_type,
                "changed_fields": change
                    .changed_fields
                    .map(|f| serde_json::to_value(f).unwrap_or(Value::Null))
                    .unwrap_or_else(|| Value::from("")),
            })
        })
        .collect()
}

#[async_trait]
impl Task for FsCheck {
    type Args = FsCheckArgs;
    type Output = Value;

    async fn run(&self, ctx: &JobContext, args: FsCheckArgs) -> Result<Value, TaskError> {
        let mut ckan = self.ckan.clone();
        ckan.api_base_url = worker_setting(
            "ckan_api_base_url",
            args.ckan_api_base_url
                .clone()
                .filter(|u| !u.is_empty())
                .map(Some),
            ckan.api_base_url,
        );
        if let Some(action) = args
            .resource_update_action
            .clone()
            .filter(|a| !a.is_empty())
        {
            ckan.fs_check_revise_action = action;
        }
        if let Some(agent) = args.hdx_user_agent.clone().filter(|a| !a.is_empty()) {
            ckan.user_agent = agent;
        }
        let job_verify = args.verify_ckan_ssl.as_ref().map(|verify| match verify {
            Value::String(s) => !matches!(
                s.to_ascii_lowercase().as_str(),
                "false" | "0" | "no" | "off" | ""
            ),
            other => truthy(other),
        });
        ckan.verify_ssl = worker_setting("verify_ckan_ssl", job_verify, ckan.verify_ssl);
        let timeout = args
            .timeout_sec
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_TIMEOUT);
        let api_key = ckan.fs_check_api_key.clone().filter(|k| !k.is_empty());
        if ckan.api_base_url.as_deref().unwrap_or("").is_empty() || api_key.is_none() {
            return Err(TaskError::permanent(
                "wrong-configuration",
                "Either CKAN resource update url or import api key missing",
            ));
        }
        let client = CkanClient::new(&ckan, api_key, timeout)
            .map_err(|e| TaskError::permanent("wrong-configuration", e.to_string()))?;
        let source_url = args
            .hxl_proxy_source_info_url
            .clone()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                TaskError::permanent(
                    "missing-task-argument",
                    "hxl_proxy_source_info_url is missing",
                )
            })?;
        tracing::info!(
            job = ctx.job_id(),
            dataset = %args.dataset_id,
            resource = %args.resource_id,
            "file structure check"
        );

        let source = url::Url::parse(source_url.trim())
            .ok()
            .filter(|u| source_url_allowed(u, ckan.hxl_proxy_url.as_deref()))
            .ok_or_else(|| {
                TaskError::permanent(
                    "hxl-proxy",
                    match &ckan.hxl_proxy_url {
                        Some(proxy) => format!(
                            "hxl_proxy_source_info_url must be an http(s) URL under {proxy}"
                        ),
                        None => "hxl_proxy_source_info_url must be an http(s) URL".to_string(),
                    },
                )
            })?;
        // The configured HXL proxy is the operator's choice: exempt from the guard like CKAN.
        let mut policy = self.outbound.as_ref().clone();
        if let Some(proxy) = &ckan.hxl_proxy_url {
            policy = policy.exempt_host(proxy);
        }
        let agent = crate::http::guarded_agent(&ckan.user_agent, true, timeout, Arc::new(policy));
        let source_info = tokio::task::spawn_blocking(move || fetch_source_info(&agent, source))
            .await
            .map_err(|e| TaskError::permanent("InternalError", format!("fetch crashed: {e}")))??;

        let sheet_changes = fs_sheet_changes(&args.fs_check_info, &source_info);
        let body = json!({
            "id": args.resource_id,
            "package_id": args.dataset_id,
            "key": "fs_check_info",
            "value": {
                "state": "success",
                "message": "File structure check completed",
                "timestamp": python_isoformat(chrono::Local::now().naive_local()),
                "sheet_changes": sheet_changes,
                "hxl_proxy_response": source_info,
            },
        });
        let action = ckan.fs_check_revise_action.clone();
        let answer = tokio::task::spawn_blocking(move || client.post(&action, &body))
            .await
            .map_err(|e| TaskError::permanent("InternalError", format!("CKAN call crashed: {e}")))?
            .map_err(|e| {
                if e.is_transient() {
                    TaskError::retryable("ckan", e.to_string())
                } else {
                    TaskError::permanent("ckan", e.to_string())
                }
            })?;
        tracing::info!(
            job = ctx.job_id(),
            resource = %args.resource_id,
            sheet_changes = sheet_changes.len(),
            "fs_check_info pushed to CKAN"
        );
        Ok(json!({
            "sheet_changes": sheet_changes,
            "ckan_success": answer.get("success").cloned().unwrap_or(Value::Null),
        }))
    }
}

/// True when the source-info URL may be fetched: http or https, and under `HDX_HXL_PROXY_URL`
/// (same scheme, host and port, path below the proxy's) when that is set.
pub fn source_url_allowed(url: &url::Url, hxl_proxy: Option<&str>) -> bool {
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return false;
    }
    let Some(proxy) = hxl_proxy else {
        return true;
    };
    let Ok(proxy) = url::Url::parse(proxy.trim()) else {
        return false;
    };
    let path = proxy.path().trim_end_matches('/');
    url.scheme() == proxy.scheme()
        && url.host() == proxy.host()
        && url.port_or_known_default() == proxy.port_or_known_default()
        && (url.path() == path || url.path().starts_with(&format!("{path}/")))
}

/// GETs the source-info JSON, following redirects (each hop through the outbound guard).
fn fetch_source_info(agent: &ureq::Agent, url: url::Url) -> Result<Value, TaskError> {
    let fail = |retryable: bool, message: String| {
        if retryable {
            TaskError::retryable("hxl-proxy", message)
        } else {
            TaskError::permanent("hxl-proxy", message)
        }
    };
    let mut current = url.clone();
    for _ in 0..=MAX_REDIRECTS {
        let mut response =
            agent
                .get(current.as_str())
                .call()
                .map_err(|e| match crate::outbound::refusal(&e) {
                    Some(refused) => fail(false, refused.to_string()),
                    None => fail(true, format!("cannot reach the HXL proxy: {e}")),
                })?;
        let status = response.status().as_u16();
        if matches!(status, 301 | 302 | 303 | 307 | 308) {
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    fail(
                        false,
                        format!("the HXL proxy answered {status} without a Location"),
                    )
                })?;
            current = current
                .join(location)
                .ok()
                .filter(|next| matches!(next.scheme(), "http" | "https"))
                .ok_or_else(|| fail(false, format!("bad redirect {location:?}")))?;
            continue;
        }
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_SOURCE_INFO)
            .read_to_string()
            .map_err(|e| fail(true, format!("cannot read the HXL proxy's answer: {e}")))?;
        if !(200..300).contains(&status) {
            let start: String = text.chars().take(300).collect();
            return Err(fail(
                status == 429 || status >= 500,
                format!("the HXL proxy answered {status}: {start}"),
            ));
        }
        return serde_json::from_str(&text)
            .map_err(|e| fail(false, format!("the HXL proxy's answer is not JSON: {e}")));
    }
    Err(fail(
        false,
        format!("more than {MAX_REDIRECTS} redirects from {url}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(items: Value) -> Value {
        Value::String(items.to_string())
    }

    #[test]
    fn changes_against_the_last_success() {
        let info = history(json!([
            {"state": "success", "hxl_proxy_response": {"sheets": [{"name": "Old", "nrows": 1}]}},
            {"state": "success", "hxl_proxy_response": {"sheets": [
                {"name": "Sheet1", "nrows": 10, "ncols": 22},
                {"name": "Gone", "nrows": 1}
            ]}},
            {"state": "failure"}
        ]));
        let now = json!({"sheets": [
            {"name": "Sheet1", "nrows": 17, "ncols": 27},
            {"name": "Sheet2", "nrows": 17, "ncols": 27}
        ]});
        let changes = fs_sheet_changes(&info, &now);
        assert_eq!(
            changes,
            vec![
                json!({"name": "Sheet2", "event_type": "spreadsheet-sheet-created", "changed_fields": ""}),
                json!({"name": "Gone", "event_type": "spreadsheet-sheet-deleted", "changed_fields": ""}),
                json!({"name": "Sheet1", "event_type": "spreadsheet-sheet-changed", "changed_fields": [
                    {"field": "nrows", "new_value": 17, "new_display_value": 17, "old_value": 10, "old_display_value": 10},
                    {"field": "ncols", "new_value": 27, "new_display_value": 27, "old_value": 22, "old_display_value": 22}
                ]}),
            ]
        );
    }

    #[test]
    fn source_urls_stay_under_the_configured_proxy() {
        let url = |u: &str| url::Url::parse(u).expect("url");
        let proxy = Some("https://proxy.hxlstandard.org/api/");
        assert!(source_url_allowed(
            &url("https://proxy.hxlstandard.org/api/source-info?url=x"),
            proxy
        ));
        for bad in [
            "http://proxy.hxlstandard.org/api/source-info",
            "https://proxy.hxlstandard.org:8443/api/source-info",
            "https://proxy.hxlstandard.org/apix/source-info",
            "https://proxy.hxlstandard.org.evil.example/api/source-info",
            "https://evil.example/api/source-info?u=https://proxy.hxlstandard.org/api/",
        ] {
            assert!(!source_url_allowed(&url(bad), proxy), "{bad}");
        }
        assert!(source_url_allowed(&url("http://anything.example/x"), None));
        assert!(!source_url_allowed(&url("file:///etc/passwd"), None));
    }

    #[test]
    fn no_history_or_no_success_gives_no_changes() {
        let now = json!({"sheets": [{"name": "S"}]});
        assert!(fs_sheet_changes(&Value::Null, &now).is_empty());
        assert!(fs_sheet_changes(&history(json!([{"state": "failure"}])), &now).is_empty());
        assert!(fs_sheet_changes(&Value::from("not json"), &now).is_empty());
        let csv = json!({"format": "CSV"});
        let info = history(
            json!([{"state": "success", "hxl_proxy_response": {"sheets": [{"name": "S"}]}}]),
        );
        assert!(fs_sheet_changes(&info, &csv).is_empty());
    }
}
