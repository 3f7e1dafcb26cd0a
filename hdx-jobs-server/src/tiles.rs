//! The tile service: a small PostgreSQL pool for tile queries, a cache of layer metadata, and an
//! in-memory tile cache with a size limit.
//!
//! Tiles are cached under the layer's table OID, which changes when an import swaps a new table
//! in, so a re-imported layer never shows old tiles. Layer metadata is what decides the OID; it
//! is dropped the moment a layer changes, because a task `LISTEN`s for the `NOTIFY` that imports
//! and deletions send ([`hdx_jobs::geo::tiles::notify_changed`]). Metadata also expires after a
//! minute, for changes made by other tools, and unknown layers are never cached, so a layer is
//! servable as soon as its import commits.
//!
//! Bounded work: every query of the pool runs under a `statement_timeout`
//! (`HDX_JOBS_TILE_STATEMENT_TIMEOUT`), and concurrent requests for one uncached tile share one
//! query (the cache coalesces them), so a burst for a slow tile costs one query, not hundreds.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use flate2::write::GzEncoder;
use flate2::Compression;
use futures_util::StreamExt;
use hdx_jobs::geo::config::GisDbConfig;
use hdx_jobs::geo::db::DbError;
use hdx_jobs::geo::tiles::{self, LayerInfo};
use moka::future::Cache;

/// A cached tile: the bytes, their gzip, and an ETag.
#[derive(Debug)]
pub struct Tile {
    /// The MVT bytes (empty: no feature).
    pub raw: Vec<u8>,
    /// The same, gzip-compressed.
    pub gzip: Vec<u8>,
    /// Strong validator of the bytes.
    pub etag: String,
}

impl Tile {
    fn new(raw: Vec<u8>) -> Self {
        let mut encoder =
            GzEncoder::new(Vec::with_capacity(raw.len() / 2 + 32), Compression::fast());
        let _ = encoder.write_all(&raw);
        let gzip = encoder.finish().unwrap_or_default();
        let etag = format!("\"{:016x}-{}\"", fnv1a(&raw), raw.len());
        Tile { raw, gzip, etag }
    }
}

/// FNV-1a: a fast, stable 64-bit hash for ETags (not for security).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TileKey {
    layer: String,
    oid: u32,
    z: u8,
    x: u32,
    y: u32,
}

/// Tiles and layer metadata for the HTTP handlers.
pub struct TileService {
    pool: Pool,
    db_config: GisDbConfig,
    prefix: String,
    layers: Cache<String, Arc<LayerInfo>>,
    tiles: Cache<TileKey, Arc<Tile>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Tile requests answered from the cache (hits) and by a query (misses), since the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheCounts {
    /// Served from the cache, or by waiting on another request's query for the same tile.
    pub hits: u64,
    /// Served by a query of their own.
    pub misses: u64,
}

impl std::fmt::Debug for TileService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TileService")
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Why a tile could not be served.
#[derive(Debug, thiserror::Error)]
pub enum TileError {
    /// No such layer.
    #[error("no layer {0}")]
    NoLayer(String),
    /// The database failed.
    #[error("{0}")]
    Db(String),
}

impl TileService {
    /// A service over the layer database (no connection until the first request), with a tile
    /// cache of `cache_bytes`.
    pub fn new(
        db_config: &GisDbConfig,
        prefix: &str,
        cache_bytes: u64,
        statement_timeout: Duration,
    ) -> Result<Self, DbError> {
        let mut pg = db_config
            .pg_config()
            .map_err(|_| DbError("the layer database settings are invalid (HDX_GISDB_*)".into()))?;
        let timeout_ms = statement_timeout.as_millis().clamp(1, i32::MAX as u128);
        let options = match pg.get_options() {
            Some(existing) => format!("{existing} -c statement_timeout={timeout_ms}"),
            None => format!("-c statement_timeout={timeout_ms}"),
        };
        pg.options(&options);
        let manager = Manager::from_config(
            pg,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(8)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| DbError(format!("cannot set up the tile database pool: {e}")))?;
        Ok(TileService {
            pool,
            db_config: db_config.clone(),
            prefix: prefix.to_string(),
            layers: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
            tiles: Cache::builder()
                .max_capacity(cache_bytes)
                .weigher(|key: &TileKey, tile: &Arc<Tile>| {
                    (tile.raw.len() + tile.gzip.len() + key.layer.len() + 64)
                        .try_into()
                        .unwrap_or(u32::MAX)
                })
                .support_invalidation_closures()
                .build(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// The layer prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A layer's metadata; `Err(NoLayer)` when it is not a servable layer.
    pub async fn layer(&self, name: &str) -> Result<Arc<LayerInfo>, TileError> {
        if !tiles::is_layer_name(&self.prefix, name) {
            return Err(TileError::NoLayer(name.into()));
        }
        if let Some(info) = self.layers.get(name).await {
            return Ok(info);
        }
        let client = self.pool.get().await.map_err(|e| {
            TileError::Db(format!("layer database unavailable: {}", pool_error(&e)))
        })?;
        match tiles::layer_info(&client, &self.prefix, name).await {
            Ok(Some(info)) => {
                let info = Arc::new(info);
                self.layers.insert(name.to_string(), info.clone()).await;
                Ok(info)
            }
            Ok(None) => Err(TileError::NoLayer(name.into())),
            Err(e) => Err(TileError::Db(e.to_string())),
        }
    }

    /// A tile (cached).
    pub async fn tile(&self, name: &str, z: u8, x: u32, y: u32) -> Result<Arc<Tile>, TileError> {
        let info = self.layer(name).await?;
        let key = TileKey {
            layer: info.name.clone(),
            oid: info.oid,
            z,
            x,
            y,
        };
        // One query per key at a time: concurrent misses wait for it (and count as hits: they
        // cost no query).
        let made = self
            .tiles
            .entry(key)
            .or_try_insert_with(async {
                let client = self.pool.get().await.map_err(|e| {
                    TileError::Db(format!("layer database unavailable: {}", pool_error(&e)))
                })?;
                tiles::tile(&client, &info, z, x, y)
                    .await
                    .map(|raw| Arc::new(Tile::new(raw)))
                    .map_err(|e| TileError::Db(e.to_string()))
            })
            .await;
        match made {
            Ok(entry) => {
                let counter = if entry.is_fresh() {
                    &self.misses
                } else {
                    &self.hits
                };
                counter.fetch_add(1, Ordering::Relaxed);
                Ok(entry.into_value())
            }
            Err(e) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                // The table may have been dropped or swapped since its metadata was read.
                self.forget(name).await;
                match self.layer(name).await {
                    Err(TileError::NoLayer(_)) => Err(TileError::NoLayer(name.into())),
                    _ => Err(TileError::Db(e.to_string())),
                }
            }
        }
    }

    /// Cache hits and misses of tile requests so far.
    pub fn cache_counts(&self) -> CacheCounts {
        CacheCounts {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// Drops everything cached about a layer.
    pub async fn forget(&self, name: &str) {
        self.layers.invalidate(name).await;
        let layer = name.to_string();
        let _ = self
            .tiles
            .invalidate_entries_if(move |key, _| key.layer == layer);
    }

    /// Listens for layer changes until the process ends, reconnecting after failures (and then
    /// dropping all cached metadata, since notices may have been missed).
    pub async fn listen_for_changes(self: Arc<Self>) {
        let mut delay = Duration::from_millis(200);
        loop {
            match self.listen_once().await {
                Ok(()) => delay = Duration::from_millis(200),
                Err(e) => tracing::debug!(error = %e, "layer change listener disconnected"),
            }
            self.layers.invalidate_all();
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    async fn listen_once(&self) -> Result<(), DbError> {
        let pg = self
            .db_config
            .pg_config()
            .map_err(|_| DbError("the layer database settings are invalid".into()))?;
        let (client, mut connection) = pg
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| DbError::from_pg("cannot listen for layer changes", &e))?;
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        let statement = format!("LISTEN {}", tiles::CHANNEL);
        let listen = client.batch_execute(&statement);
        tokio::pin!(listen);
        let mut listening = false;
        loop {
            tokio::select! {
                done = &mut listen, if !listening => {
                    done.map_err(|e| DbError::from_pg("cannot listen for layer changes", &e))?;
                    listening = true;
                    tracing::debug!("listening for layer changes");
                }
                message = messages.next() => match message {
                    Some(Ok(tokio_postgres::AsyncMessage::Notification(notice))) => {
                        tracing::debug!(layer = notice.payload(), "layer changed");
                        self.forget(notice.payload()).await;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(DbError::from_pg("layer change listener", &e)),
                    None => return Ok(()),
                },
            }
        }
    }
}

fn pool_error(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => DbError::from_pg("connect", e).to_string(),
        deadpool_postgres::PoolError::Timeout(_) => "timed out".into(),
        _ => "pool closed".into(),
    }
}
