//! A layer's metadata, as the old service made it (docs/hdx-contract.md §3.6): features whose
//! bounding box leaves [-180,180]×[-90,90] are deleted, the bounding box is
//! `ST_Extent(wkb_geometry)::text`, and the fields are the table's columns (geometry and id
//! included) with their `information_schema` data types, in column order. No box or no fields is a
//! `fetch-bounding-box-problem` with the old messages.

use serde::{Deserialize, Serialize};

use super::db::DbError;
use super::failure::Failure;
use super::layers::quote_ident;
use super::staging::Extent;

/// One column of a layer, as CKAN gets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerField {
    /// Column name.
    pub field_name: String,
    /// `information_schema.columns.data_type` (`integer`, `character varying`,
    /// `USER-DEFINED` for the geometry, ...).
    pub data_type: String,
}

/// What the report needs about a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// `BOX(xmin ymin,xmax ymax)`.
    pub bounding_box: String,
    /// The columns.
    pub layer_fields: Vec<LayerField>,
    /// Features deleted for being out of range.
    pub invalid_deleted: u64,
}

fn metadata_failure(e: &tokio_postgres::Error) -> Failure {
    Failure::metadata(DbError::from_pg("Problem while fetching the layer metadata", e).0)
}

/// The columns of `table` (in `public`), as the old service listed them.
pub async fn fields(db: &tokio_postgres::Client, table: &str) -> Result<Vec<LayerField>, Failure> {
    Ok(db
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
            &[&table],
        )
        .await
        .map_err(|e| metadata_failure(&e))?
        .iter()
        .map(|row| LayerField {
            field_name: row.get(0),
            data_type: row.get(1),
        })
        .collect())
}

/// True when the fields include the geometry column.
pub fn has_geometry(fields: &[LayerField]) -> bool {
    fields.iter().any(|f| f.field_name == "wkb_geometry")
}

/// Deletes out-of-range features of `table` (in `public`) and gives its box and fields.
/// `extent` is the table's extent as measured ([`super::staging::inspect`]): when it lies
/// within range no feature can be out of range, and the scans for deleting and measuring again
/// are skipped.
pub async fn collect(
    db: &tokio_postgres::Client,
    table: &str,
    fields: Vec<LayerField>,
    extent: Option<Extent>,
) -> Result<Metadata, Failure> {
    if !has_geometry(&fields) {
        return Err(Failure::metadata("Bounding box was not retrieved "));
    }
    let t = quote_ident(table);
    let (bounding_box, invalid_deleted) = match extent {
        Some(extent) if extent.in_range() => (Some(extent.text), 0),
        _ => {
            let deleted = db
                .execute(
                    &format!(
                        "DELETE FROM public.{t} WHERE ST_XMax(BOX2D(wkb_geometry)) > 180 \
                         OR ST_XMin(BOX2D(wkb_geometry)) < -180 \
                         OR ST_YMax(BOX2D(wkb_geometry)) > 90 \
                         OR ST_YMin(BOX2D(wkb_geometry)) < -90"
                    ),
                    &[],
                )
                .await
                .map_err(|e| metadata_failure(&e))?;
            let bounding_box: Option<String> = db
                .query_one(
                    &format!("SELECT ST_Extent(wkb_geometry)::text FROM public.{t}"),
                    &[],
                )
                .await
                .map_err(|e| metadata_failure(&e))?
                .get(0);
            (bounding_box, deleted)
        }
    };
    let Some(bounding_box) = bounding_box.filter(|b| !b.is_empty()) else {
        return Err(Failure::metadata("Bounding box was not retrieved "));
    };
    if fields.is_empty() {
        return Err(Failure::metadata("Layer fields were not retrieved "));
    }
    Ok(Metadata {
        bounding_box,
        layer_fields: fields,
        invalid_deleted,
    })
}
