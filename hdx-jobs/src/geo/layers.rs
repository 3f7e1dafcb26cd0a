//! Layers: one PostGIS table per CKAN resource, named `<prefix>_<resource id>` with every
//! character that is not a letter or digit turned into `_`. That name is the only identifier
//! from outside that reaches SQL, always quoted.
//!
//! Cleanup finds tables whose resource is gone from CKAN (the old service's "layer cleanup"):
//! each id in CKAN's list is turned into its table name with the same [`layer_id`] an import
//! uses, and layer tables with no such id are deletable. (The old service turned table names
//! back into ids, `_` into `-`, which dropped the layer of every resource whose id contains `_`
//! or other characters.) Two guards keep a broken CKAN answer from emptying the layer database:
//! a list with one id or fewer is refused, and a run that would drop more than a share of the
//! layers (`HDX_CLEANUP_MAX_SHARE`, default 10 %) is refused unless forced: a truncated list
//! looks just like that.

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
    drop_table(db, &layer_id(prefix, resource_id)).await
}

/// Drops a layer table by name (and tells the tile servers). `Ok(false)` when there was none.
async fn drop_table(db: &tokio_postgres::Client, table: &str) -> Result<bool, DbError> {
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
        quote_ident(table)
    ))
    .await
    .map_err(|e| DbError::from_pg("cannot drop the layer", &e))?;
    super::tiles::notify_changed(db, table).await?;
    Ok(true)
}

/// What a cleanup found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CleanupReport {
    /// The layer tables whose resource is gone from CKAN.
    pub deletable: Vec<String>,
    /// How many layers exist.
    pub layers: usize,
    /// How many resources CKAN listed.
    pub ckan_resources: usize,
    /// Whether the layers were dropped.
    pub deleted: bool,
}

/// How a cleanup runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CleanupOptions {
    /// Only report what would be dropped.
    pub dry_run: bool,
    /// Largest share of the layers one run may drop (`HDX_CLEANUP_MAX_SHARE`); at least one
    /// layer may always go.
    pub max_share: f64,
    /// Drop even beyond `max_share`.
    pub force: bool,
}

/// Why a cleanup refused to run.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    /// CKAN's list is implausible (one id or fewer): deleting would drop every layer.
    #[error("Seems like the ckan list of resources is not correct")]
    BrokenResourceList,
    /// The run would drop more than the allowed share of the layers.
    #[error(
        "refusing to drop {deletable} of {layers} layers: more than HDX_CLEANUP_MAX_SHARE \
         ({share} %) of them; CKAN's resource list may be incomplete (force to drop anyway)"
    )]
    TooMany {
        /// Layers that would go.
        deletable: usize,
        /// Layers there are.
        layers: usize,
        /// The allowed share, in percent.
        share: f64,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl CleanupError {
    /// The old service's error class name.
    pub fn class(&self) -> &'static str {
        match self {
            CleanupError::BrokenResourceList | CleanupError::TooMany { .. } => "CkanInfoException",
            CleanupError::Db(_) => "FetchLayerIdsException",
        }
    }
}

/// Every resource id CKAN lists (`RESOURCE_ID_LIST_ACTION`), with the GIS API key. Blocking.
pub fn ckan_resource_ids(
    ckan: &crate::config::CkanConfig,
    timeout: std::time::Duration,
) -> Result<Vec<String>, crate::ckan::CkanError> {
    let client = crate::ckan::CkanClient::new(ckan, ckan.gis_api_key.clone(), timeout)?;
    let answer = client.get(&ckan.resource_id_list_action, &[])?;
    let ids = answer
        .get("result")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| crate::ckan::CkanError::BadResponse {
            action: ckan.resource_id_list_action.clone(),
            message: "the answer has no result list".into(),
        })?;
    Ok(ids
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect())
}

/// The layer tables with no resource in `ckan_resource_ids` (both sides named by [`layer_id`]).
pub fn orphan_layers(tables: &[String], prefix: &str, ckan_resource_ids: &[String]) -> Vec<String> {
    let known: BTreeSet<String> = ckan_resource_ids
        .iter()
        .map(|id| layer_id(prefix, id))
        .collect();
    tables
        .iter()
        .filter(|t| !known.contains(t.as_str()))
        .cloned()
        .collect()
}

/// Finds the layers whose resource is not in `ckan_resource_ids`, and drops them unless
/// `options.dry_run` (refusing beyond `options.max_share` unless `options.force`).
pub async fn cleanup(
    db: &tokio_postgres::Client,
    prefix: &str,
    ckan_resource_ids: &[String],
    options: CleanupOptions,
) -> Result<CleanupReport, CleanupError> {
    if ckan_resource_ids.len() <= 1 {
        return Err(CleanupError::BrokenResourceList);
    }
    let tables = list_layers(db, prefix).await?;
    let deletable = orphan_layers(&tables, prefix, ckan_resource_ids);
    let allowed = ((tables.len() as f64 * options.max_share).floor() as usize).max(1);
    if !options.dry_run && !options.force && deletable.len() > allowed {
        return Err(CleanupError::TooMany {
            deletable: deletable.len(),
            layers: tables.len(),
            share: options.max_share * 100.0,
        });
    }
    if !options.dry_run {
        for table in &deletable {
            drop_table(db, table).await?;
        }
    }
    Ok(CleanupReport {
        layers: tables.len(),
        ckan_resources: ckan_resource_ids.len(),
        deletable,
        deleted: !options.dry_run,
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
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        let long = layer_id("pre", &"é".repeat(40));
        assert!(long.len() <= 63 && long.starts_with("pre_é"));
    }

    /// The old cleanup turned `pre_a_b` back into the id `a-b`, so the layer of a resource
    /// whose id really is `a_b` (or `a.b`) was deleted though the resource exists.
    #[test]
    fn regression_cleanup_keeps_layers_of_ids_with_underscores() {
        let tables: Vec<String> = ["pre_a_b", "pre_c_d", "pre_gone"]
            .iter()
            .map(|t| t.to_string())
            .collect();
        let ckan = vec!["a_b".to_string(), "c.d".to_string()];
        assert_eq!(orphan_layers(&tables, "pre", &ckan), vec!["pre_gone"]);
    }
}
