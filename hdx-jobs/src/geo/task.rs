//! The geopreview task, `importapi.tasks.create_preview.create_preview_task`: takes the argument
//! dict the old API enqueued (JSON or pickle; `max_file_size_mb` is in bytes there, as the old
//! service sent it), runs the [pipeline] and reports `shape_info` to CKAN on
//! success and on every failure. The database and the API key come from the worker's
//! environment (`HDX_GISDB_*`, `HDX_GIS_API_KEY`), as with the newest old worker; so do CKAN's
//! URL and host, TLS verification, the download folder and the table prefix (a differing value
//! in the dict is ignored with a warning: see [`worker_setting`]). Limits, the User-Agent and
//! the report's action come from the dict, falling back to the worker's settings.
//!
//! As before, a failed import is a finished job (the failure goes to CKAN, not to RQ): the job
//! fails only when it cannot report (no CKAN URL or API key: `WrongConfigurationException`,
//! permanent; CKAN unreachable after retries: retryable). The job's result is
//! `{"shape_info": ..., "detail": ...}` (detail: GDAL's messages for a failed import, scrubbed).
//! A share of the job's timeout is kept back so that an import running out of time is still
//! reported as `timeout` before RQ's own timeout strikes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use super::archive::ArchiveLimits;
use super::child::ChildCommand;
use super::config::{GeopreviewConfig, GisDbConfig};
use super::download::DownloadSettings;
use super::failure::Failure;
use super::layers::layer_id;
use super::pipeline::{self, Progress, Settings, Source};
use super::report;
use crate::ckan::CkanClient;
use crate::config::{worker_setting, CkanConfig, Config};
use crate::outbound::OutboundPolicy;
use crate::secret::Secret;
use crate::task::{JobContext, Task, TaskError};

/// Timeout of one report POST.
const REPORT_TIMEOUT: Duration = Duration::from_secs(20);

/// The argument dict of the old API (every field but `resource_id` may be missing: the worker's
/// settings fill in).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PreviewArgs {
    /// The dataset (for logs).
    #[serde(default, deserialize_with = "lenient_string")]
    pub dataset_id: Option<String>,
    /// The resource: names the layer.
    #[serde(deserialize_with = "required_string")]
    pub resource_id: String,
    /// The file's URL.
    #[serde(default, deserialize_with = "lenient_string")]
    pub download_url: Option<String>,
    /// CKAN's url type (`upload`, `api`); informational.
    #[serde(default, deserialize_with = "lenient_string")]
    pub url_type: Option<String>,
    /// Read buffer, bytes.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub download_chunk_size: Option<u64>,
    /// Largest file, in BYTES despite the name.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub max_file_size_mb: Option<u64>,
    /// The whole download, seconds.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub timeout_sec: Option<u64>,
    /// CKAN's action API.
    #[serde(default, deserialize_with = "lenient_string")]
    pub ckan_api_base_url: Option<String>,
    /// The action that receives the report.
    #[serde(default, deserialize_with = "lenient_string")]
    pub resource_update_action: Option<String>,
    /// Layer table prefix.
    #[serde(default, deserialize_with = "lenient_string")]
    pub table_name_prefix: Option<String>,
    /// Download folder.
    #[serde(default, deserialize_with = "lenient_string")]
    pub tmp_download_directory: Option<String>,
    /// CKAN's host.
    #[serde(default, deserialize_with = "lenient_string")]
    pub ckan_server_url: Option<String>,
    /// Verify CKAN's TLS certificate.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub verify_ckan_ssl: Option<bool>,
    /// User-Agent for CKAN.
    #[serde(default, deserialize_with = "lenient_string")]
    pub hdx_user_agent: Option<String>,
}

fn required_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    lenient_string(d)?
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| serde::de::Error::custom("resource_id is missing or empty"))
}

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| *f >= 0.0)
            .map(|f| f as u64),
        _ => None,
    })
}

fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Bool(b) => Some(b),
        Value::Number(n) => n.as_i64().map(|i| i != 0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Some(true),
            "false" | "0" | "no" | "off" => Some(false),
            _ => None,
        },
        _ => None,
    })
}

/// The task.
#[derive(Debug, Clone)]
pub struct CreatePreviewTask {
    gis_db: GisDbConfig,
    geo: GeopreviewConfig,
    ckan: CkanConfig,
    api_key: Option<Secret>,
    child: ChildCommand,
    outbound: Arc<OutboundPolicy>,
}

impl CreatePreviewTask {
    /// The task as `hdx-jobs work` runs it: imports in `hdx-jobs-import` children, the
    /// executable beside the running one (or `HDX_GEO_IMPORT_PROGRAM`).
    pub fn new(config: &Config) -> Self {
        Self::with_child(config, ChildCommand::from_config(&config.geopreview))
    }

    /// The task with an explicit import child (embedders, tests).
    pub fn with_child(config: &Config, child: ChildCommand) -> Self {
        CreatePreviewTask {
            gis_db: config.gis_db.clone(),
            geo: config.geopreview.clone(),
            ckan: config.ckan.clone(),
            api_key: config.ckan.gis_api_key.clone(),
            child,
            outbound: Arc::new(config.outbound.clone()),
        }
    }

    /// The import settings: limits and the User-Agent from the job (as the old API sent them),
    /// where secrets go and where files are written from the worker ([`worker_setting`]).
    fn settings(&self, args: &PreviewArgs, deadline: Option<Instant>) -> Settings {
        let chunk = args
            .download_chunk_size
            .unwrap_or(self.geo.download_chunk_size_mb * 1024 * 1024);
        let job_text = |value: &Option<String>| value.clone().filter(|v| !v.is_empty());
        Settings {
            table_prefix: worker_setting(
                "table_name_prefix",
                job_text(&args.table_name_prefix),
                self.geo.table_name_prefix.clone(),
            ),
            tmp_dir: worker_setting(
                "tmp_download_directory",
                job_text(&args.tmp_download_directory),
                self.geo.tmp_dir.clone(),
            )
            .into(),
            download: DownloadSettings {
                max_bytes: args
                    .max_file_size_mb
                    .unwrap_or(self.geo.max_file_size_mb * 1024 * 1024),
                chunk_size: usize::try_from(chunk).unwrap_or(usize::MAX),
                timeout: Duration::from_secs(args.timeout_sec.unwrap_or(self.geo.timeout_sec)),
                ckan_host: worker_setting(
                    "ckan_server_url",
                    job_text(&args.ckan_server_url),
                    self.ckan.domain.clone(),
                ),
                api_key: self.api_key.clone(),
                user_agent: args
                    .hdx_user_agent
                    .clone()
                    .unwrap_or_else(|| self.ckan.user_agent.clone()),
                verify_ckan_ssl: worker_setting(
                    "verify_ckan_ssl",
                    args.verify_ckan_ssl,
                    self.ckan.verify_ssl,
                ),
                ckan_allow_http: self.ckan.allow_http,
                outbound: self.outbound.clone(),
            },
            archive: ArchiveLimits {
                max_bytes: self.geo.max_extracted_mb.saturating_mul(1024 * 1024),
                max_entries: self.geo.max_archive_entries,
            },
            child: self.child.clone(),
            deadline,
        }
    }
}

/// Progress kept for the job's `meta`.
#[derive(Default)]
struct JobProgress {
    latest: Mutex<Option<(u64, Option<u64>, String)>>,
}

impl Progress for JobProgress {
    fn download(&self, done: u64, total: Option<u64>) {
        if let Ok(mut latest) = self.latest.lock() {
            *latest = Some((done, total, "download".into()));
        }
    }
    fn import(&self, fraction: f64) {
        if let Ok(mut latest) = self.latest.lock() {
            *latest = Some(((fraction * 100.0) as u64, Some(100), "import".into()));
        }
    }
    fn step(&self, name: &str) {
        if let Ok(mut latest) = self.latest.lock() {
            *latest = Some((0, None, name.to_string()));
        }
    }
}

#[async_trait]
impl Task for CreatePreviewTask {
    type Args = PreviewArgs;
    type Output = Value;

    async fn run(&self, ctx: &JobContext, args: PreviewArgs) -> Result<Value, TaskError> {
        let base_url = worker_setting(
            "ckan_api_base_url",
            args.ckan_api_base_url
                .clone()
                .filter(|u| !u.is_empty() && u != "None")
                .map(Some),
            self.ckan.api_base_url.clone(),
        )
        .filter(|u| !u.is_empty());
        let api_key = self.api_key.clone().filter(|k| !k.is_empty());
        let (Some(base_url), Some(api_key)) = (base_url, api_key) else {
            tracing::error!(
                resource_id = args.resource_id,
                "update url or API key missing: cannot report to CKAN"
            );
            let failure = Failure::wrong_configuration(
                "Either CKAN resource update url or importapi key missing",
            );
            return Err(TaskError::permanent(failure.class, failure.message));
        };
        let action = args
            .resource_update_action
            .clone()
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| self.ckan.resource_update_action.clone());

        // Keep a share of the job's time for the report.
        let job_deadline = ctx.deadline();
        let deadline = job_deadline.map(|d| {
            let left = d.saturating_duration_since(Instant::now());
            d - (left / 10)
                .clamp(Duration::from_secs(1), Duration::from_secs(15))
                .min(left)
        });
        let settings = self.settings(&args, deadline);
        let layer = layer_id(&settings.table_prefix, &args.resource_id);
        tracing::info!(
            dataset_id = args.dataset_id.as_deref().unwrap_or(""),
            resource_id = args.resource_id,
            url = args.download_url.as_deref().unwrap_or(""),
            layer,
            "geopreview import"
        );

        let progress = Arc::new(JobProgress::default());
        let outcome = match args.download_url.as_deref().map(str::trim) {
            None | Some("") | Some("None") => {
                Err(Failure::missing_url("Url missing or has a problem"))
            }
            Some(url) => {
                let run = pipeline::run(
                    Source::Url(url.to_string()),
                    &args.resource_id,
                    &settings,
                    &self.gis_db,
                    ctx.cancellation(),
                    progress.clone(),
                );
                tokio::pin!(run);
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tokio::select! {
                        outcome = &mut run => break outcome,
                        _ = tick.tick() => {
                            let latest = progress.latest.lock().ok().and_then(|mut l| l.take());
                            if let Some((done, total, step)) = latest {
                                let _ = ctx.set_progress(done, total, &step).await;
                            }
                        }
                    }
                }
            }
        };
        let (shape_info, detail) = match &outcome {
            Ok(imported) => {
                tracing::info!(layer, rows = imported.rows, fixes = ?imported.fixes, "layer imported");
                (
                    report::success(&imported.layer_id, &imported.metadata),
                    None,
                )
            }
            Err(failure) => {
                tracing::warn!(layer, failure = %failure, detail = failure.detail.as_deref().unwrap_or(""), "geopreview import failed");
                (report::failure(&layer, failure), failure.detail.clone())
            }
        };

        let mut ckan_config = self.ckan.clone();
        ckan_config.api_base_url = Some(base_url);
        ckan_config.user_agent = settings.download.user_agent.clone();
        ckan_config.verify_ssl = settings.download.verify_ckan_ssl;
        let posted = match CkanClient::new(&ckan_config, Some(api_key), REPORT_TIMEOUT) {
            Ok(client) => {
                report::post(
                    &client,
                    &action,
                    &args.resource_id,
                    &shape_info,
                    &report::BACKOFF,
                    job_deadline,
                )
                .await
            }
            Err(e) => Err(e),
        };
        match posted {
            Ok(answer) => {
                tracing::info!(resource_id = args.resource_id, answer = %answer, "shape_info pushed to CKAN");
                Ok(json!({"shape_info": shape_info, "detail": detail}))
            }
            Err(e) => {
                tracing::error!(resource_id = args.resource_id, error = %e, "cannot push shape_info to CKAN");
                Err(TaskError::retryable(
                    "CkanError",
                    format!("cannot report to CKAN: {e}"),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::CallArgs;

    #[test]
    fn old_argument_dicts_decode_leniently() {
        let call = CallArgs {
            args: vec![json!({
                "dataset_id": "d", "resource_id": "r-1", "download_url": "http://x/y.zip",
                "url_type": "upload", "download_chunk_size": 5242880,
                "max_file_size_mb": 314572800.0, "timeout_sec": "120",
                "ckan_api_base_url": "http://ckan/api/action",
                "resource_update_action": "hdx_resource_update_metadata",
                "gis_api_pattern": "x", "table_name_prefix": "pre",
                "tmp_download_directory": "/tmp", "ckan_server_url": "data.humdata.org",
                "verify_ckan_ssl": "False", "hdx_user_agent": "GISLAYER", "extra": 1
            })],
            ..Default::default()
        };
        let args: PreviewArgs = call.decode().expect("decode");
        assert_eq!(args.max_file_size_mb, Some(314_572_800));
        assert_eq!(args.timeout_sec, Some(120));
        assert_eq!(args.verify_ckan_ssl, Some(false));
        let missing = CallArgs {
            args: vec![json!({"resource_id": ""})],
            ..Default::default()
        };
        assert!(missing.decode::<PreviewArgs>().is_err());
        let minimal = CallArgs {
            args: vec![json!({"resource_id": "r", "download_url": null})],
            ..Default::default()
        };
        let args: PreviewArgs = minimal.decode().expect("minimal");
        assert_eq!(args.download_url, None);
    }
}
