//! Layers: one PostGIS table per CKAN resource, named `<prefix>_<resource id>` with every
//! character that is not a letter or digit turned into `_`. That name is the only identifier
//! from outside that reaches SQL, always quoted.
//!
//! Cleanup finds tables whose resource is gone from CKAN (the contract's "Layer cleanup"): a
//! table's resource id is its name without the prefix, `_` turned back into `-`; CKAN's list
//! of resource ids with one id or fewer is treated as broken and nothing is deleted.

use std::collections::BTreeSet;

use serde::Serialize;

use super::db::DbError;

/// PostgreSQL keeps at most this many bytes of an identifier.
const MAX_IDENTIFIER_BYTES: usize = 63;

/// The layer id (table name) of a resource. Like PostgreSQL itself, it keeps only the first 63
/// bytes (whole characters), so the name we look up is the name a table would really have.
pub fn layer_id(prefix: &str, resource_id: &str) -> String {
    let main: String = resource_id
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { '_' })
        .collect();
    let mut id = format!("{prefix}_{main}");
    if id.len() > MAX_IDENTIFIER_BYTES {
        let mut end = MAX_IDENTIFIER_BYTES;
        while !id.is_char_boundary(end) {
            end -= 1;
        }
        id.truncate(end);
    }
    id
}

/// The resource id a layer table stands for (`_` back to `-`).
pub fn resource_id_of(prefix: &str, table: &str) -> Option<String> {
    table
        .strip_prefix(prefix)?
        .strip_prefix('_')
        .map(|rest| rest.replace('_', "-"))
}

/// A double-quoted SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Layer tables in `public` whose name starts with `<prefix>_`, sorted.
pub async fn list_layers(
    db: &tokio_postgres::Client,
    prefix: &str,
) -> Result<Vec<String>, DbError> {
    let pattern = format!(
        "{}\\_%",
        prefix
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    );
    let rows = db
        .query(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_name LIKE $1 ORDER BY table_name",
            &[&pattern],
        )
        .await
        .map_err(|e| DbError::from_pg("Problem while fetching layer list", &e))?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

/// Drops the layer of one resource. `Ok(false)` when there was none.
pub async fn drop_layer(
    db: &tokio_postgres::Client,
    prefix: &str,
    resource_id: &str,
) -> Result<bool, DbError> {
    let table = layer_id(prefix, resource_id);
    let exists = db
        .query_opt(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = 'public' AND table_name = $1",
            &[&table],
        )
        .await
        .map_err(|e| DbError::from_pg("cannot look up the layer", &e))?
        .is_some();
    if !exists {
        return Ok(false);
    }
    db.batch_execute(&format!(
        "DROP TABLE IF EXISTS public.{}",
        quote_ident(&table)
    ))
    .await
    .map_err(|e| DbError::from_pg("cannot drop the layer", &e))?;
    super::tiles::notify_changed(db, &table).await?;
    Ok(true)
}

/// What a cleanup found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CleanupReport {
    /// Resource ids of the layers whose resource is gone.
    pub deletable: Vec<String>,
    /// How many layers exist.
    pub layers: usize,
    /// How many resources CKAN listed.
    pub ckan_resources: usize,
    /// Whether the layers were dropped.
    pub deleted: bool,
}

/// Why a cleanup refused to run.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    /// CKAN's list is implausible (one id or fewer): deleting would drop every layer.
    #[error("Seems like the ckan list of resources is not correct")]
    BrokenResourceList,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl CleanupError {
    /// The old service's error class name.
    pub fn class(&self) -> &'static str {
        match self {
            CleanupError::BrokenResourceList => "CkanInfoException",
            CleanupError::Db(_) => "FetchLayerIdsException",
        }
    }
}

/// Finds the layers whose resource is not in `ckan_resource_ids`, and drops them unless
/// `dry_run`.
pub async fn cleanup(
    db: &tokio_postgres::Client,
    prefix: &str,
    ckan_resource_ids: &[String],
    dry_run: bool,
) -> Result<CleanupReport, CleanupError> {
    if ckan_resource_ids.len() <= 1 {
        return Err(CleanupError::BrokenResourceList);
    }
    let known: BTreeSet<&str> = ckan_resource_ids.iter().map(String::as_str).collect();
    let tables = list_layers(db, prefix).await?;
    let deletable: Vec<String> = tables
        .iter()
        .filter_map(|t| resource_id_of(prefix, t))
        .filter(|id| !known.contains(id.as_str()))
        .collect();
    if !dry_run {
        for id in &deletable {
            drop_layer(db, prefix, id).await?;
        }
    }
    Ok(CleanupReport {
        layers: tables.len(),
        ckan_resources: ckan_resource_ids.len(),
        deletable,
        deleted: !dry_run,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_ids_follow_the_old_rule() {
        assert_eq!(layer_id("pre", "1a2b-3c4d-e5"), "pre_1a2b_3c4d_e5");
        assert_eq!(
            layer_id("pre", "x'; DROP TABLE y; --"),
            "pre_x___DROP_TABLE_y____"
        );
        assert_eq!(
            resource_id_of("pre", "pre_1a2b_3c4d"),
            Some("1a2b-3c4d".into())
        );
        assert_eq!(resource_id_of("pre", "other_1"), None);
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        let long = layer_id("pre", &"é".repeat(40));
        assert!(long.len() <= 63 && long.starts_with("pre_é"));
    }
}
