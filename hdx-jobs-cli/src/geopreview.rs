//! `hdx-jobs geopreview`: the geopreview pipeline run locally (no queue, no CKAN report), layer
//! deletion and cleanup. The import itself runs in a child process, `hdx-jobs-import` beside
//! `hdx-jobs`, as in the worker: `hdx-jobs` does not link GDAL.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use hdx_jobs::config::Config;
use hdx_jobs::geo::archive::ArchiveLimits;
use hdx_jobs::geo::child::ChildCommand;
use hdx_jobs::geo::config::GisDbConfig;
use hdx_jobs::geo::download::DownloadSettings;
use hdx_jobs::geo::pipeline::{self, Progress, Settings, Source};
use hdx_jobs::geo::{db, layers, report};
use hdx_jobs::outbound::OutboundPolicy;
use hdx_jobs::secret::Secret;
use tokio_util::sync::CancellationToken;

/// `hdx-jobs geopreview ...`.
#[derive(Debug, Subcommand)]
pub enum GeopreviewCommand {
    /// Import a GIS file (a path or an http(s) URL) as a resource's layer, as the worker does but
    /// without a queue or CKAN; prints the shape_info JSON, exits 1 on failure.
    Import(ImportArgs),
    /// Drop one resource's layer.
    Delete {
        /// The CKAN resource id.
        #[arg(long)]
        resource_id: String,
        /// PostGIS connection (URL or key=value; default: HDX_GISDB_URL or HDX_GISDB_*).
        #[arg(long)]
        db_url: Option<String>,
    },
    /// List layers whose resource is gone from CKAN (CKAN_API_BASE_URL,
    /// RESOURCE_ID_LIST_ACTION); drop them with --apply.
    Cleanup {
        /// Really drop them (default: dry run).
        #[arg(long)]
        apply: bool,
        /// Drop them even when they are more than HDX_CLEANUP_MAX_SHARE of all layers.
        #[arg(long, requires = "apply")]
        force: bool,
        /// PostGIS connection (URL or key=value; default: HDX_GISDB_URL or HDX_GISDB_*).
        #[arg(long)]
        db_url: Option<String>,
    },
}

/// `hdx-jobs geopreview import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A local file or an http(s) URL.
    pub source: String,
    /// The CKAN resource id (names the layer).
    #[arg(long)]
    pub resource_id: String,
    /// The CKAN dataset id (for the logs).
    #[arg(long)]
    pub dataset_id: Option<String>,
    /// PostGIS connection (URL or key=value; default: HDX_GISDB_URL or HDX_GISDB_*).
    #[arg(long)]
    pub db_url: Option<String>,
    /// Give up after this many seconds (default: no limit besides TIMEOUT_SEC for downloads).
    #[arg(long)]
    pub timeout: Option<u64>,
}

fn gis_db(config: &Config, db_url: Option<String>) -> GisDbConfig {
    let mut db = config.gis_db.clone();
    if let Some(url) = db_url {
        db.url = Some(Secret::new(url));
    }
    db
}

/// Runs a geopreview subcommand.
pub async fn run(command: GeopreviewCommand, config: &Config) -> anyhow::Result<ExitCode> {
    match command {
        GeopreviewCommand::Import(args) => import(args, config).await,
        GeopreviewCommand::Delete {
            resource_id,
            db_url,
        } => {
            let client = db::connect(&gis_db(config, db_url)).await?;
            let prefix = &config.geopreview.table_name_prefix;
            let table = layers::layer_id(prefix, &resource_id);
            if layers::drop_layer(&client, prefix, &resource_id).await? {
                println!("dropped layer {table}");
            } else {
                println!("no layer {table}");
            }
            Ok(ExitCode::SUCCESS)
        }
        GeopreviewCommand::Cleanup {
            apply,
            force,
            db_url,
        } => cleanup(config, db_url, apply, force).await,
    }
}

async fn import(args: ImportArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let source = if args.source.starts_with("http://") || args.source.starts_with("https://") {
        Source::Url(args.source.clone())
    } else {
        Source::File(PathBuf::from(&args.source))
    };
    let geo = &config.geopreview;
    // The import runs in `hdx-jobs-import` (HDX_GEO_IMPORT_PROGRAM): said before anything starts.
    let child = ChildCommand::from_config(geo);
    child.check()?;
    let settings = Settings {
        table_prefix: geo.table_name_prefix.clone(),
        tmp_dir: geo.tmp_dir.clone().into(),
        download: DownloadSettings {
            max_bytes: geo.max_file_size_mb.saturating_mul(1024 * 1024),
            chunk_size: usize::try_from(geo.download_chunk_size_mb * 1024 * 1024)
                .unwrap_or(usize::MAX),
            timeout: Duration::from_secs(geo.timeout_sec),
            ckan_host: config.ckan.domain.clone(),
            api_key: config.ckan.gis_api_key.clone(),
            user_agent: config.ckan.user_agent.clone(),
            verify_ckan_ssl: config.ckan.verify_ssl,
            ckan_allow_http: config.ckan.allow_http,
            // The operator typed this URL: it may go anywhere, as curl would.
            outbound: Arc::new(OutboundPolicy::unrestricted()),
        },
        archive: ArchiveLimits {
            max_bytes: geo.max_extracted_mb.saturating_mul(1024 * 1024),
            max_entries: geo.max_archive_entries,
        },
        child,
        deadline: args
            .timeout
            .map(|secs| Instant::now() + Duration::from_secs(secs)),
    };
    let db = gis_db(config, args.db_url);
    let layer = layers::layer_id(&settings.table_prefix, &args.resource_id);
    let progress: Arc<dyn Progress> = if std::io::stdout().is_terminal() {
        Arc::new(Bar::default())
    } else {
        Arc::new(pipeline::NoProgress)
    };
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            stop.cancel();
        }
    });
    tracing::info!(
        dataset_id = args.dataset_id.as_deref().unwrap_or(""),
        resource_id = args.resource_id,
        layer,
        "geopreview import"
    );
    let outcome = pipeline::run(
        source,
        &args.resource_id,
        &settings,
        &db,
        &cancel,
        progress.clone(),
    )
    .await;
    if std::io::stdout().is_terminal() {
        eprintln!();
    }
    let (info, code) = match &outcome {
        Ok(imported) => (
            report::success(&imported.layer_id, &imported.metadata),
            ExitCode::SUCCESS,
        ),
        Err(failure) => {
            if let Some(detail) = &failure.detail {
                eprintln!("{detail}");
            }
            (report::failure(&layer, failure), ExitCode::FAILURE)
        }
    };
    println!("{}", hdx_jobs::python_json::dumps(&info));
    Ok(code)
}

async fn cleanup(
    config: &Config,
    db_url: Option<String>,
    apply: bool,
    force: bool,
) -> anyhow::Result<ExitCode> {
    let ckan = config.ckan.clone();
    let ids = tokio::task::spawn_blocking(move || {
        layers::ckan_resource_ids(&ckan, Duration::from_secs(120))
    })
    .await??;
    let client = db::connect(&gis_db(config, db_url)).await?;
    let options = layers::CleanupOptions {
        dry_run: !apply,
        max_share: config.geopreview.cleanup_max_share,
        force,
    };
    let report =
        layers::cleanup(&client, &config.geopreview.table_name_prefix, &ids, options).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

/// A one-line progress bar on stderr.
#[derive(Default)]
struct Bar {
    state: Mutex<BarState>,
}

#[derive(Default)]
struct BarState {
    step: String,
    drawn: Option<Instant>,
}

impl Bar {
    fn draw(&self, step: &str, fraction: Option<f64>, text: &str) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let now = Instant::now();
        let same_step = state.step == step;
        let finished = fraction.is_some_and(|f| f >= 1.0);
        if same_step
            && !finished
            && state
                .drawn
                .is_some_and(|t| now - t < Duration::from_millis(100))
        {
            return;
        }
        state.drawn = Some(now);
        state.step = step.to_string();
        let bar = match fraction {
            Some(f) => {
                let filled = (f.clamp(0.0, 1.0) * 30.0).round() as usize;
                format!(
                    "[{}{}] {:3.0}%",
                    "#".repeat(filled),
                    " ".repeat(30 - filled),
                    f.clamp(0.0, 1.0) * 100.0
                )
            }
            None => String::new(),
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{step:<9}{bar} {text}");
        let _ = err.flush();
    }
}

impl Progress for Bar {
    fn download(&self, done: u64, total: Option<u64>) {
        let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
        let text = match total {
            Some(t) => format!("{:.1}/{:.1} MB", mb(done), mb(t)),
            None => format!("{:.1} MB", mb(done)),
        };
        self.draw(
            "download",
            total.filter(|t| *t > 0).map(|t| done as f64 / t as f64),
            &text,
        );
    }
    fn import(&self, fraction: f64) {
        self.draw("import", Some(fraction), "");
    }
    fn step(&self, name: &str) {
        self.draw(name, None, "");
    }
}
