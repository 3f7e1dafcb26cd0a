//! The database side of an import: a staging table per import, checked, indexed, analysed and
//! then swapped in for the layer in one transaction, so readers (the tile server, CKAN) see
//! either the old layer or the complete new one, never a half-filled or emptied table; a failed
//! or cancelled import drops its staging table and leaves the layer as it was.
//!
//! Staging tables are `public.hdx_stage_<unix seconds>_<random>`: outside the layer prefix (so
//! layer cleanup never mistakes them for layers), unique per import (so GDAL's index names
//! never collide), and dated, so [`sweep`] can drop the ones a killed worker left behind.
//! Imports of the same layer are serialised by a PostgreSQL advisory lock held for the whole
//! job ([`lock_layer`]), across every worker sharing the database.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::db::DbError;
use super::failure::Failure;
use super::layers::quote_ident;

/// Prefix of staging tables.
pub const STAGING_PREFIX: &str = "hdx_stage_";

/// Staging tables older than this are leftovers of dead imports.
pub const STAGING_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// First key of the advisory locks (the second is `hashtext(layer id)`).
const LOCK_CLASS: i32 = 0x4844_5847; // "HDXG"

/// A new staging table name.
pub fn staging_name() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{STAGING_PREFIX}{secs}_{:016x}", rand::random::<u64>())
}

/// When a staging table was made (from its name).
fn staging_created(name: &str) -> Option<u64> {
    name.strip_prefix(STAGING_PREFIX)?
        .split('_')
        .next()?
        .parse()
        .ok()
}

/// `name` + `suffix` within PostgreSQL's 63 bytes; when too long, the name is cut and a hash of
/// the whole name keeps it unique.
pub fn derived_name(name: &str, suffix: &str) -> String {
    const MAX: usize = 63;
    if name.len() + suffix.len() <= MAX {
        return format!("{name}{suffix}");
    }
    let hash = name.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let tag = format!("_{hash:08x}");
    let mut keep = MAX.saturating_sub(suffix.len() + tag.len());
    while keep > 0 && !name.is_char_boundary(keep) {
        keep -= 1;
    }
    let mut out = format!("{}{tag}{suffix}", &name[..keep]);
    while out.len() > MAX {
        out.pop();
    }
    out
}

fn db_failure(context: &str, e: &tokio_postgres::Error) -> Failure {
    Failure::pushing_because(format!(
        "Problem during ogr2ogr import to postgis: {}",
        DbError::from_pg(context, e)
    ))
}

/// Waits for the layer's advisory lock on this session (released when the connection closes),
/// at most `wait`.
pub async fn lock_layer(
    db: &tokio_postgres::Client,
    layer_id: &str,
    wait: Duration,
) -> Result<(), Failure> {
    let millis = wait.as_millis().clamp(1, i32::MAX as u128);
    db.batch_execute(&format!("SET lock_timeout = {millis}"))
        .await
        .map_err(|e| db_failure("cannot prepare the layer lock", &e))?;
    let result = db
        .execute(
            "SELECT pg_advisory_lock($1, hashtext($2))",
            &[&LOCK_CLASS, &layer_id],
        )
        .await;
    let _ = db.batch_execute("SET lock_timeout = 0").await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => Err(
            Failure::timeout("timeout reached: another import of this resource is still running"),
        ),
        Err(e) => Err(db_failure("cannot lock the layer", &e)),
    }
}

/// Drops staging tables older than [`STAGING_MAX_AGE`]; returns how many.
pub async fn sweep(db: &tokio_postgres::Client) -> Result<usize, DbError> {
    let rows = db
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname LIKE 'hdx\\_stage\\_%'",
            &[],
        )
        .await
        .map_err(|e| DbError::from_pg("cannot list staging tables", &e))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut dropped = 0;
    for row in rows {
        let name: String = row.get(0);
        let old = staging_created(&name)
            .is_some_and(|t| now.saturating_sub(t) > STAGING_MAX_AGE.as_secs());
        if old && drop_table(db, &name).await.is_ok() {
            dropped += 1;
        }
    }
    Ok(dropped)
}

/// `DROP TABLE IF EXISTS public.<name> CASCADE`.
pub async fn drop_table(db: &tokio_postgres::Client, name: &str) -> Result<(), DbError> {
    db.batch_execute(&format!(
        "SET client_min_messages = warning; SET lock_timeout = '30s'; \
         DROP TABLE IF EXISTS public.{} CASCADE; SET lock_timeout = 0",
        quote_ident(name)
    ))
    .await
    .map_err(|e| DbError::from_pg("cannot drop the staging table", &e))
}

/// What the loaded staging table holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// Rows.
    pub rows: u64,
    /// Rows with a geometry (`None`: no geometry column).
    pub with_geometry: Option<u64>,
    /// The extent of the geometries (`None`: none).
    pub extent: Option<Extent>,
}

/// A layer's extent.
#[derive(Debug, Clone, PartialEq)]
pub struct Extent {
    /// `ST_Extent(wkb_geometry)::text`, e.g. `BOX(2.51 49.52,6.15 51.47)`.
    pub text: String,
    /// West edge.
    pub xmin: f64,
    /// South edge.
    pub ymin: f64,
    /// East edge.
    pub xmax: f64,
    /// North edge.
    pub ymax: f64,
}

impl Extent {
    /// True when every feature is inside [-180,180]×[-90,90] (the extent covers them all, so
    /// nothing needs deleting).
    pub fn in_range(&self) -> bool {
        self.xmin >= -180.0 && self.xmax <= 180.0 && self.ymin >= -90.0 && self.ymax <= 90.0
    }
}

/// Counts what GDAL loaded and measures its extent, in one scan (`has_geometry`: the table has
/// the `wkb_geometry` column).
pub async fn inspect(
    db: &tokio_postgres::Client,
    table: &str,
    has_geometry: bool,
) -> Result<Loaded, Failure> {
    let t = quote_ident(table);
    if !has_geometry {
        let row = db
            .query_one(&format!("SELECT count(*) FROM public.{t}"), &[])
            .await
            .map_err(|e| db_failure("cannot count the imported rows", &e))?;
        let rows: i64 = row.get(0);
        return Ok(Loaded {
            rows: rows.max(0) as u64,
            with_geometry: None,
            extent: None,
        });
    }
    let row = db
        .query_one(
            &format!(
                "SELECT n, g, e::text, ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM \
                 (SELECT count(*) AS n, count(wkb_geometry) AS g, ST_Extent(wkb_geometry) AS e \
                 FROM public.{t}) s"
            ),
            &[],
        )
        .await
        .map_err(|e| db_failure("cannot measure the imported rows", &e))?;
    let rows: i64 = row.get(0);
    let with_geometry: i64 = row.get(1);
    let text: Option<String> = row.get(2);
    let extent = match (text, row.get(3), row.get(4), row.get(5), row.get(6)) {
        (Some(text), Some(xmin), Some(ymin), Some(xmax), Some(ymax)) => Some(Extent {
            text,
            xmin,
            ymin,
            xmax,
            ymax,
        }),
        _ => None,
    };
    Ok(Loaded {
        rows: rows.max(0) as u64,
        with_geometry: Some(with_geometry.max(0) as u64),
        extent,
    })
}

/// The spatial index and fresh statistics.
pub async fn index_and_analyze(
    db: &tokio_postgres::Client,
    table: &str,
    has_geometry: bool,
) -> Result<(), Failure> {
    let t = quote_ident(table);
    if has_geometry {
        let index = quote_ident(&derived_name(table, "_wkb_geometry_geom_idx"));
        db.batch_execute(&format!(
            "CREATE INDEX {index} ON public.{t} USING GIST (wkb_geometry)"
        ))
        .await
        .map_err(|e| db_failure("cannot index the layer", &e))?;
    }
    db.batch_execute(&format!("ANALYZE public.{t}"))
        .await
        .map_err(|e| db_failure("cannot analyse the layer", &e))
}

/// Replaces the layer with the staging table in one transaction (the old layer is dropped, the
/// staging table and its indexes and sequences take the layer's names), announcing the change
/// to tile servers ([`super::tiles::CHANNEL`]) on commit.
pub async fn swap(
    db: &mut tokio_postgres::Client,
    staging: &str,
    layer_id: &str,
) -> Result<(), Failure> {
    let fail = |e: tokio_postgres::Error| db_failure("cannot replace the layer", &e);
    // The table's indexes and the sequences it owns (serial or identity columns).
    let owned: Vec<(String, String)> = db
        .query(
            "SELECT s.relname::text, 'S' FROM pg_class t \
             JOIN pg_namespace n ON n.oid = t.relnamespace \
             JOIN pg_depend d ON d.refobjid = t.oid AND d.deptype IN ('a', 'i') \
             JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' \
             WHERE n.nspname = 'public' AND t.relname = $1 \
             UNION \
             SELECT i.relname::text, 'i' FROM pg_index x \
             JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid \
             JOIN pg_namespace n ON n.oid = t.relnamespace \
             WHERE n.nspname = 'public' AND t.relname = $1",
            &[&staging],
        )
        .await
        .map_err(fail)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let renamed = |name: &str| {
        let suffix = name
            .strip_prefix(staging)
            .map(str::to_string)
            .unwrap_or_else(|| format!("_{name}"));
        derived_name(layer_id, &suffix)
    };
    let mut sql = format!(
        "SET LOCAL lock_timeout = '60s';\n\
         DROP TABLE IF EXISTS public.{layer} CASCADE;\n\
         ALTER TABLE public.{stage} RENAME TO {layer};\n",
        layer = quote_ident(layer_id),
        stage = quote_ident(staging),
    );
    for (name, kind) in &owned {
        let what = if kind == "S" { "SEQUENCE" } else { "INDEX" };
        sql.push_str(&format!(
            "ALTER {what} public.{} RENAME TO {};\n",
            quote_ident(name),
            quote_ident(&renamed(name))
        ));
    }
    let tx = db.transaction().await.map_err(fail)?;
    tx.batch_execute(&sql).await.map_err(fail)?;
    // Tile servers drop what they cached of the layer when this commits.
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&super::tiles::CHANNEL, &layer_id],
    )
    .await
    .map_err(fail)?;
    tx.commit().await.map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_stay_unique() {
        let name = staging_name();
        assert!(name.starts_with(STAGING_PREFIX) && name.len() <= 63);
        assert!(staging_created(&name).is_some());
        assert_eq!(derived_name("pre_ab", "_pkey"), "pre_ab_pkey");
        let a = derived_name(&format!("pre_{}", "a".repeat(59)), "_wkb_geometry_geom_idx");
        let b = derived_name(
            &format!("pre_{}b", "a".repeat(58)),
            "_wkb_geometry_geom_idx",
        );
        assert!(a.len() <= 63 && b.len() <= 63);
        assert!(a.ends_with("_wkb_geometry_geom_idx"));
        assert_ne!(a, b);
        let unicode = derived_name(&format!("pre_{}", "é".repeat(29)), "_pkey");
        assert!(unicode.len() <= 63);
    }
}
