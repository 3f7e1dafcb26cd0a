//! A layer's metadata, as the contract defines it: features whose bounding box leaves
//! [-180,180]×[-90,90] are deleted, the bounding box is `ST_Extent(wkb_geometry)::text`, and the
//! fields are the table's columns (geometry and id included) with their
//! `information_schema` data types, in column order. No box or no fields is a
//! `fetch-bounding-box-problem` with the old messages.

use serde::{Deserialize, Serialize};

use super::db::DbError;
use super::failure::Failure;
use super::layers::quote_ident;

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

/// Deletes out-of-range features of `table` (in `public`) and reads its box and fields.
pub async fn collect(db: &tokio_postgres::Client, table: &str) -> Result<Metadata, Failure> {
    let fields: Vec<LayerField> = db
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
        .collect();
    if !fields.iter().any(|f| f.field_name == "wkb_geometry") {
        return Err(Failure::metadata("Bounding box was not retrieved "));
    }
    let t = quote_ident(table);
    let invalid_deleted = db
        .execute(
            &format!(
                "DELETE FROM public.{t} WHERE ST_XMax(BOX2D(wkb_geometry)) > 180 \
                 OR ST_XMin(BOX2D(wkb_geometry)) < -180 OR ST_YMax(BOX2D(wkb_geometry)) > 90 \
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
