//! One geopreview import from start to end, shared by the worker's task and the CLI:
//! lock the layer → download (or take a local file) → unpack and import in a child process into
//! a staging table → check what was loaded → delete out-of-range features, read the box and
//! fields → index, analyse → swap the staging table in. The download folder and the staging
//! table are removed whatever happens (guards, so even a dropped future cleans up).
//!
//! Time: everything must end by `deadline` (the job's, less a reserve for the report). The
//! download also has its own `TIMEOUT_SEC`; the child gets what is left minus a share kept for
//! the database work after it; the database work runs under a `statement_timeout`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::archive::ArchiveLimits;
use super::child::{self, ChildCommand, ChildError, ChildLimits};
use super::config::{scrub, GisDbConfig};
use super::db;
use super::download::{self, DownloadSettings};
use super::failure::Failure;
use super::import::{Fix, ImportRequest};
use super::layers::layer_id;
use super::metadata::{self, Metadata};
use super::staging;

/// CPU seconds of an import child when the import has no deadline (the CLI without
/// `--timeout`).
const CHILD_CPU_SECS_WITHOUT_DEADLINE: u64 = 6 * 3600;

/// Room above the unpacked-archive limit for what else the child may write (GDAL's temporary
/// files).
const CHILD_FILE_MARGIN: u64 = 64 * 1024 * 1024;

/// Where the file comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Downloaded from a URL.
    Url(String),
    /// A local file (the CLI); it is read, never moved or deleted.
    File(PathBuf),
}

/// How to run an import.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `TABLE_NAME_PREFIX`.
    pub table_prefix: String,
    /// `HDX_GIS_TMP`: the job's folder is `<tmp_dir>/<layer id>`.
    pub tmp_dir: PathBuf,
    /// Download limits and CKAN credentials.
    pub download: DownloadSettings,
    /// Archive limits.
    pub archive: ArchiveLimits,
    /// The import child.
    pub child: ChildCommand,
    /// Everything must end by then.
    pub deadline: Option<Instant>,
}

/// What a successful import produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The layer (table) name.
    pub layer_id: String,
    /// Box, fields, deleted features.
    pub metadata: Metadata,
    /// Repair rules that were needed.
    pub fixes: Vec<Fix>,
    /// Rows in the layer.
    pub rows: u64,
}

/// Progress callbacks (called from blocking threads too).
pub trait Progress: Send + Sync {
    /// Bytes downloaded, and the declared size.
    fn download(&self, _done: u64, _total: Option<u64>) {}
    /// Fraction of the import done (each repair attempt starts again at 0).
    fn import(&self, _fraction: f64) {}
    /// A step begins (`download`, `unpack`, `import`, `finish`).
    fn step(&self, _name: &str) {}
}

/// No progress reporting.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// Removes a folder when dropped.
struct FolderGuard(Option<PathBuf>);

impl Drop for FolderGuard {
    fn drop(&mut self) {
        if let Some(folder) = self.0.take() {
            if folder.exists() {
                if let Err(e) = std::fs::remove_dir_all(&folder) {
                    tracing::warn!(folder = %folder.display(), error = %e, "cannot delete the download folder");
                }
            }
        }
    }
}

/// Drops the staging table when dropped, unless disarmed (after the swap).
struct StagingGuard {
    table: Option<String>,
    db: GisDbConfig,
}

impl StagingGuard {
    async fn drop_now(&mut self) {
        if let Some(table) = self.table.take() {
            if let Ok(client) = db::connect(&self.db).await {
                if let Err(e) = staging::drop_table(&client, &table).await {
                    tracing::warn!(table, error = %e, "cannot drop the staging table");
                }
            }
        }
    }
}

impl Drop for StagingGuard {
    fn drop(&mut self) {
        // Only reached when the import future was dropped half-way (timeout, stop): clean up on
        // the runtime in the background.
        if let Some(table) = self.table.take() {
            let config = self.db.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    if let Ok(client) = db::connect(&config).await {
                        let _ = staging::drop_table(&client, &table).await;
                    }
                });
            }
        }
    }
}

fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

fn check_time(deadline: Option<Instant>) -> Result<(), Failure> {
    match remaining(deadline) {
        Some(left) if left.is_zero() => Err(Failure::timeout("timeout reached")),
        _ => Ok(()),
    }
}

/// Runs the import of one resource.
pub async fn run(
    source: Source,
    resource_id: &str,
    settings: &Settings,
    db_config: &GisDbConfig,
    cancel: &CancellationToken,
    progress: Arc<dyn Progress>,
) -> Result<Imported, Failure> {
    let layer = layer_id(&settings.table_prefix, resource_id);
    let sensitive = db_config.sensitive_values();
    let pushing_db = |e: db::DbError| {
        Failure::pushing_because(format!(
            "Problem during ogr2ogr import to postgis: {}",
            scrub(&e.0, &sensitive)
        ))
    };

    let started = Instant::now();
    let mut timings: Vec<(&str, Duration)> = Vec::new();
    let mut mark = |step: &'static str, since: &mut Instant| {
        timings.push((step, since.elapsed()));
        *since = Instant::now();
    };
    let mut since = started;
    // Start the import child now: it loads GDAL while we connect and download.
    let limits = ChildLimits {
        memory_bytes: settings.child.max_memory_bytes,
        cpu_secs: remaining(settings.deadline).map_or(CHILD_CPU_SECS_WITHOUT_DEADLINE, |left| {
            left.as_secs().saturating_mul(2).saturating_add(10)
        }),
        file_bytes: settings
            .archive
            .max_bytes
            .max(settings.download.max_bytes)
            .saturating_add(CHILD_FILE_MARGIN),
    };
    let child_process = child::ChildProcess::spawn(&settings.child, limits);
    let mut client = db::connect(db_config).await.map_err(pushing_db)?;
    // DROP ... IF EXISTS notices are not news.
    let _ = client
        .batch_execute("SET client_min_messages = warning")
        .await;
    staging::lock_layer(
        &client,
        &layer,
        remaining(settings.deadline).unwrap_or(Duration::from_secs(24 * 3600)),
    )
    .await?;
    if let Err(e) = staging::sweep(&client).await {
        tracing::warn!(error = %e, "cannot sweep old staging tables");
    }

    mark("lock", &mut since);

    // Download (or take the local file) and unpack.
    let folder = settings.tmp_dir.join(&layer);
    let _folder_guard = FolderGuard(Some(folder.clone()));
    let downloaded: PathBuf = match &source {
        Source::Url(url) => {
            progress.step("download");
            download_blocking(url, settings, &folder, cancel, progress.clone()).await?
        }
        Source::File(path) => {
            if !path.is_file() {
                return Err(Failure::unknown(
                    "FileNotFoundError",
                    format!("no such file: {}", path.display()),
                ));
            }
            download::recreate_folder(&folder)?;
            path.clone()
        }
    };
    mark("download", &mut since);

    // Unpack (archives) and import into a staging table, in the child process.
    check_time(settings.deadline)?;
    progress.step("import");
    let conninfo = db_config
        .libpq_conninfo()
        .map_err(|_| Failure::pushing_because("the layer database settings are invalid"))?;
    let staging_table = staging::staging_name();
    let mut staging_guard = StagingGuard {
        table: Some(staging_table.clone()),
        db: db_config.clone(),
    };
    let request = ImportRequest {
        source: absolute(&downloaded),
        work_dir: absolute(&folder),
        archive: settings.archive,
        schema: "public".into(),
        table: staging_table.clone(),
        conninfo: conninfo.expose().to_string(),
    };
    let child_deadline = settings.deadline.map(|d| {
        let left = d.saturating_duration_since(Instant::now());
        d - (left / 5)
            .clamp(Duration::from_millis(500), Duration::from_secs(30))
            .min(left)
    });
    // A second connection, opened while the child imports, builds the index and the statistics
    // while the first one measures the table.
    let second_connection = {
        let config = db_config.clone();
        tokio::spawn(async move { db::connect(&config).await })
    };
    let report = {
        let progress = progress.clone();
        let mut on_progress = move |fraction: f64| progress.import(fraction);
        match child_process {
            Ok(process) => {
                process
                    .run(&request, child_deadline, cancel, &mut on_progress)
                    .await
            }
            Err(e) => Err(e),
        }
    };
    let report = match report {
        Ok(report) => report,
        Err(ChildError::Timeout) => {
            staging_guard.drop_now().await;
            return Err(Failure::timeout("timeout reached during the import"));
        }
        Err(ChildError::Cancelled) => {
            staging_guard.drop_now().await;
            return Err(Failure::timeout("the import was cancelled"));
        }
        Err(e) => {
            staging_guard.drop_now().await;
            let detail = match &e {
                ChildError::Died { stderr, .. } => format!("{e}: {}", scrub(stderr, &sensitive)),
                other => other.to_string(),
            };
            return Err(Failure::pushing().with_detail(detail));
        }
    };
    if let Some(failure) = report.unpack_failure {
        staging_guard.drop_now().await;
        return Err(failure);
    }
    let detail = scrub(&report.last_messages(), &sensitive);
    if !report.ok {
        staging_guard.drop_now().await;
        return Err(Failure::pushing().with_detail(detail));
    }
    if !report.fixes.is_empty() {
        tracing::info!(layer, fixes = ?report.fixes, "imported with repair rules");
    }

    mark("import", &mut since);

    // Check, clean, describe, index and swap in.
    progress.step("finish");
    let finish = async {
        let limits = match remaining(settings.deadline) {
            Some(left) => format!(
                "SET statement_timeout = {}",
                left.as_millis().clamp(1, i32::MAX as u128)
            ),
            None => "SET statement_timeout = 0".to_string(),
        };
        let second = second_connection
            .await
            .map_err(|e| Failure::unknown("RuntimeError", e.to_string()))?
            .map_err(pushing_db)?;
        for connection in [&client, &second] {
            connection
                .batch_execute(&format!("SET client_min_messages = warning; {limits}"))
                .await
                .map_err(|e| pushing_db(db::DbError::from_pg("cannot set a time limit", &e)))?;
        }
        let step = Instant::now();
        let fields = metadata::fields(&client, &staging_table).await?;
        let has_geometry = metadata::has_geometry(&fields);
        let (loaded, indexed) = tokio::join!(
            async {
                let measured = staging::inspect(&client, &staging_table, has_geometry).await;
                tracing::debug!(
                    ms = step.elapsed().as_millis() as u64,
                    "fields, count, extent"
                );
                measured
            },
            async {
                let indexed =
                    staging::index_and_analyze(&second, &staging_table, has_geometry).await;
                tracing::debug!(ms = step.elapsed().as_millis() as u64, "index, analyze");
                indexed
            },
        );
        let (loaded, ()) = (loaded?, indexed?);
        drop(second);
        if loaded.rows > 0 && loaded.with_geometry == Some(0) {
            return Err(Failure::pushing().with_detail(format!(
                "degraded import: none of the {} rows has a geometry. {detail}",
                loaded.rows
            )));
        }
        if let Some(expected) = report.source_features {
            if loaded.rows < expected {
                return Err(Failure::pushing().with_detail(format!(
                    "degraded import: {} of {expected} features loaded. {detail}",
                    loaded.rows
                )));
            }
        }
        let metadata =
            metadata::collect(&client, &staging_table, fields, loaded.extent.clone()).await?;
        if metadata.invalid_deleted > 0 {
            staging::index_and_analyze(&client, &staging_table, false).await?;
        }
        let step = Instant::now();
        staging::swap(&mut client, &staging_table, &layer).await?;
        tracing::debug!(ms = step.elapsed().as_millis() as u64, "swap");
        let rows = loaded.rows.saturating_sub(metadata.invalid_deleted);
        Ok::<_, Failure>((metadata, rows))
    };
    match finish.await {
        Ok((metadata, rows)) => {
            staging_guard.table = None;
            mark("finish", &mut since);
            tracing::info!(
                layer,
                rows,
                total_ms = started.elapsed().as_millis() as u64,
                steps = %timings
                    .iter()
                    .map(|(step, d)| format!("{step} {} ms", d.as_millis()))
                    .collect::<Vec<_>>()
                    .join(", "),
                "layer imported"
            );
            Ok(Imported {
                layer_id: layer,
                metadata,
                fixes: report.fixes,
                rows,
            })
        }
        Err(failure) => {
            staging_guard.drop_now().await;
            let failure = if failure
                .message
                .contains("canceling statement due to statement timeout")
            {
                Failure::timeout("timeout reached while finishing the layer")
            } else {
                failure
            };
            Err(failure)
        }
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

async fn download_blocking(
    url: &str,
    settings: &Settings,
    folder: &Path,
    cancel: &CancellationToken,
    progress: Arc<dyn Progress>,
) -> Result<PathBuf, Failure> {
    let mut download_settings = settings.download.clone();
    if let Some(left) = remaining(settings.deadline) {
        download_settings.timeout = download_settings.timeout.min(left);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (url, folder, stop_flag) = (url.to_string(), folder.to_path_buf(), stop.clone());
    let task = tokio::task::spawn_blocking(move || {
        let should_stop = || stop_flag.load(Ordering::Relaxed);
        let mut on_progress = |done: u64, total: Option<u64>| progress.download(done, total);
        download::download(
            &url,
            &download_settings,
            &folder,
            &should_stop,
            &mut on_progress,
        )
    });
    // Stop the blocking download when the job is cancelled or this future is dropped.
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _stop_on_drop = StopOnDrop(stop.clone());
    let result = tokio::select! {
        result = task => result.map_err(|e| Failure::unknown("RuntimeError", e.to_string()))?,
        () = cancel.cancelled() => {
            stop.store(true, Ordering::Relaxed);
            return Err(Failure::timeout("the import was cancelled"));
        }
    };
    result.map(|d| d.path)
}
