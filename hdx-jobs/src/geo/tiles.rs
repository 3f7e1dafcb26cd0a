//! Mapbox Vector Tiles of imported layers, made by PostGIS (`ST_AsMVT` over `ST_TileEnvelope`).
//!
//! A layer is reachable only if its name has the layer prefix, is made of the characters layer
//! ids are made of, and is a table in `public` with a geometry column: the name is checked, then
//! looked up in the catalogue with a bound parameter, and only the catalogue's own spelling is
//! quoted into SQL; tile coordinates and the simplification tolerance are bound parameters.
//! Geometry is first clipped to the tile (with its buffer) by bounding box, then simplified by
//! zoom (half a tile-grid cell), then clipped exactly and quantised: low-zoom tiles of big
//! layers stay small, and a high-zoom tile inside a huge polygon costs the few vertices near the
//! tile, not the whole polygon's.
//!
//! Layers change under a running server (imports swap tables in, cleanups drop them): whoever
//! changes one calls [`notify_changed`], a PostgreSQL `NOTIFY` on [`CHANNEL`] that servers
//! `LISTEN` to, so caches drop the layer at once.

use serde::Serialize;
use serde_json::{json, Value};

use super::db::DbError;
use super::layers::quote_ident;

/// The `LISTEN`/`NOTIFY` channel of layer changes; the payload is the layer name.
pub const CHANNEL: &str = "hdx_jobs_layers";
/// The MVT grid of a tile.
pub const EXTENT: u32 = 4096;
/// Pixels of context around a tile, so lines and polygons crossing its edge draw seamlessly.
const BUFFER: u32 = 64;
/// Deepest zoom served.
pub const MAX_ZOOM: u8 = 22;

/// What a tile needs to know about a layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerInfo {
    /// The table name (the layer id).
    pub name: String,
    /// The table's OID: it changes when an import swaps a new table in, so caches keyed by it
    /// never serve the old data.
    pub oid: u32,
    /// The geometry column.
    pub geometry_column: String,
    /// Its type (`POINT`, `MULTIPOLYGON`, `GEOMETRY`, ...).
    pub geometry_type: String,
    /// An integer primary-key column, used as the features' ids.
    pub id_column: Option<String>,
    /// Attribute columns with their MVT type.
    pub fields: Vec<Field>,
    /// `[west, south, east, north]`, when the layer has features.
    pub bounds: Option<[f64; 4]>,
}

/// An attribute column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Field {
    /// Column name.
    pub name: String,
    /// `Number`, `Boolean` or `String` (TileJSON's names).
    pub kind: &'static str,
}

/// Whether `name` can be a layer of `prefix`: `<prefix>_` then letters, digits and `_` only.
pub fn is_layer_name(prefix: &str, name: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|rest| {
            !rest.is_empty() && rest.chars().all(|c| c.is_alphanumeric() || c == '_')
        })
        && name.len() <= 63
}

/// Looks a layer up; `None` when it is not a servable layer.
pub async fn layer_info(
    db: &tokio_postgres::Client,
    prefix: &str,
    name: &str,
) -> Result<Option<LayerInfo>, DbError> {
    if !is_layer_name(prefix, name) {
        return Ok(None);
    }
    let err = |e: tokio_postgres::Error| DbError::from_pg("cannot read the layer", &e);
    let Some(table) = db
        .query_opt(
            "SELECT c.oid, c.relname::text, g.f_geometry_column::text, g.type::text \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN geometry_columns g ON g.f_table_schema = n.nspname AND g.f_table_name = c.relname \
             WHERE n.nspname = 'public' AND c.relname = $1 AND c.relkind IN ('r', 'p') LIMIT 1",
            &[&name],
        )
        .await
        .map_err(err)?
    else {
        return Ok(None);
    };
    let oid: u32 = table.get(0);
    let name: String = table.get(1);
    let geometry_column: String = table.get(2);
    let columns = db
        .query(
            "SELECT a.attname::text, t.typname::text, \
                    coalesce((SELECT true FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indisprimary \
                              AND a.attnum = ANY(i.indkey) AND array_length(i.indkey, 1) = 1), false) \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(err)?;
    let mut fields = Vec::new();
    let mut id_column = None;
    for column in columns {
        let (column_name, type_name, primary): (String, String, bool) =
            (column.get(0), column.get(1), column.get(2));
        if column_name == geometry_column || type_name == "geometry" || type_name == "geography" {
            continue;
        }
        if primary && matches!(type_name.as_str(), "int2" | "int4" | "int8") && id_column.is_none()
        {
            id_column = Some(column_name);
            continue;
        }
        let kind = match type_name.as_str() {
            "int2" | "int4" | "int8" | "float4" | "float8" | "numeric" => "Number",
            "bool" => "Boolean",
            _ => "String",
        };
        fields.push(Field {
            name: column_name,
            kind,
        });
    }
    let extent_sql = format!(
        "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT ST_Extent({}) AS e FROM public.{}) x",
        quote_ident(&geometry_column),
        quote_ident(&name)
    );
    let extent = db.query_one(&extent_sql, &[]).await.map_err(err)?;
    let bounds = match (
        extent.get::<_, Option<f64>>(0),
        extent.get::<_, Option<f64>>(1),
        extent.get::<_, Option<f64>>(2),
        extent.get::<_, Option<f64>>(3),
    ) {
        (Some(w), Some(s), Some(e), Some(n)) => Some([w, s, e, n]),
        _ => None,
    };
    Ok(Some(LayerInfo {
        name,
        oid,
        geometry_column,
        geometry_type: table.get(3),
        id_column,
        fields,
        bounds,
    }))
}

impl LayerInfo {
    /// The tile query of this layer: `$1..$3` are z, x, y, `$4` the simplification tolerance
    /// in degrees. Identifiers come from the catalogue, quoted.
    pub fn tile_sql(&self) -> String {
        let geom = quote_ident(&self.geometry_column);
        let mut columns = String::new();
        for field in &self.fields {
            let column = quote_ident(&field.name);
            let cast = match field.kind {
                "Number" => format!("t.{column}::float8"),
                "Boolean" => format!("t.{column}"),
                _ => format!("t.{column}::text"),
            };
            columns.push_str(&format!(", {cast} AS {column}"));
        }
        let (id_select, id_arg) = match &self.id_column {
            Some(id) => (
                format!(", t.{}::int8 AS {}", quote_ident(id), quote_ident(id)),
                format!(", {}", literal(id)),
            ),
            None => (String::new(), String::new()),
        };
        let margin = f64::from(BUFFER) / f64::from(EXTENT);
        format!(
            "WITH env AS (SELECT ST_TileEnvelope($1::int, $2::int, $3::int) AS tile, \
                                 ST_Transform(ST_TileEnvelope($1::int, $2::int, $3::int, margin => {margin}), 4326) AS area) \
             SELECT ST_AsMVT(q, {layer}, {EXTENT}, 'geom'{id_arg}) FROM ( \
               SELECT ST_AsMVTGeom(ST_Transform(ST_Simplify(ST_ClipByBox2D(t.{geom}, env.area::box2d), $4::float8, true), 3857), env.tile, {EXTENT}, {BUFFER}, true) AS geom \
                      {id_select}{columns} \
               FROM public.{table} t, env WHERE t.{geom} && env.area \
             ) q WHERE q.geom IS NOT NULL",
            layer = literal(&self.name),
            table = quote_ident(&self.name),
        )
    }

    /// TileJSON 3.0 of the layer, with `tiles_url` as its tile template.
    pub fn tilejson(&self, tiles_url: &str) -> Value {
        let fields: serde_json::Map<String, Value> = self
            .fields
            .iter()
            .map(|f| (f.name.clone(), Value::String(f.kind.into())))
            .collect();
        let mut doc = json!({
            "tilejson": "3.0.0",
            "name": self.name,
            "tiles": [tiles_url],
            "minzoom": 0,
            "maxzoom": MAX_ZOOM,
            "vector_layers": [{"id": self.name, "fields": fields, "minzoom": 0, "maxzoom": MAX_ZOOM}],
        });
        if let Some([w, s, e, n]) = self.bounds {
            let clamp_lat = |v: f64| v.clamp(-85.051_129, 85.051_129);
            doc["bounds"] = json!([w.max(-180.0), clamp_lat(s), e.min(180.0), clamp_lat(n)]);
            doc["center"] = json!([
                (w + e) / 2.0,
                clamp_lat((s + n) / 2.0),
                zoom_for(w, s, e, n)
            ]);
        }
        doc
    }
}

/// A zoom at which the bounds fit in a few tiles, for TileJSON's `center`.
fn zoom_for(w: f64, s: f64, e: f64, n: f64) -> u8 {
    let span = (e - w).max(n - s).max(1e-6);
    let zoom = (360.0 / span).log2().floor();
    zoom.clamp(0.0, 16.0) as u8
}

/// A SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The simplification tolerance of a zoom, in degrees: half a tile-grid cell at the equator.
pub fn tolerance(z: u8) -> f64 {
    360.0 / (f64::from(EXTENT) * 2f64.powi(i32::from(z))) / 2.0
}

/// Whether z/x/y names a tile.
pub fn is_tile(z: u8, x: u32, y: u32) -> bool {
    z <= MAX_ZOOM && u64::from(x) < (1u64 << z) && u64::from(y) < (1u64 << z)
}

/// One tile of a layer (empty bytes: no feature in it).
pub async fn tile(
    db: &tokio_postgres::Client,
    info: &LayerInfo,
    z: u8,
    x: u32,
    y: u32,
) -> Result<Vec<u8>, DbError> {
    let statement = db
        .prepare(&info.tile_sql())
        .await
        .map_err(|e| DbError::from_pg("cannot prepare the tile query", &e))?;
    let row = db
        .query_one(
            &statement,
            &[&i32::from(z), &(x as i32), &(y as i32), &tolerance(z)],
        )
        .await
        .map_err(|e| DbError::from_pg("cannot make the tile", &e))?;
    Ok(row.get::<_, Option<Vec<u8>>>(0).unwrap_or_default())
}

/// Tells servers that a layer changed (imported, replaced, dropped). Call it in the transaction
/// that changes the layer: PostgreSQL delivers it on commit only.
pub async fn notify_changed(db: &tokio_postgres::Client, layer: &str) -> Result<(), DbError> {
    db.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &layer])
        .await
        .map(|_| ())
        .map_err(|e| DbError::from_pg("cannot announce the layer change", &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_names() {
        assert!(is_layer_name("pre", "pre_1a2b_3c"));
        assert!(!is_layer_name("pre", "pre_"));
        assert!(!is_layer_name("pre", "other_1"));
        assert!(!is_layer_name("pre", "pre_x\"; DROP TABLE y; --"));
        assert!(!is_layer_name("pre", "pre_a b"));
        assert!(!is_layer_name("pre", &format!("pre_{}", "a".repeat(70))));
    }

    #[test]
    fn tiles_and_tolerances() {
        assert!(is_tile(0, 0, 0));
        assert!(!is_tile(0, 1, 0));
        assert!(is_tile(3, 7, 7));
        assert!(!is_tile(23, 0, 0));
        assert!(tolerance(0) > tolerance(10));
    }

    #[test]
    fn sql_quotes_identifiers_and_binds_values() {
        let info = LayerInfo {
            name: "pre_a".into(),
            oid: 1,
            geometry_column: "wkb_geometry".into(),
            geometry_type: "POINT".into(),
            id_column: Some("ogc_fid".into()),
            fields: vec![
                Field {
                    name: "na\"me".into(),
                    kind: "String",
                },
                Field {
                    name: "pop".into(),
                    kind: "Number",
                },
            ],
            bounds: Some([1.0, 2.0, 3.0, 4.0]),
        };
        let sql = info.tile_sql();
        assert!(sql.contains("public.\"pre_a\""));
        assert!(sql.contains("t.\"na\"\"me\"::text AS \"na\"\"me\""));
        assert!(sql.contains("t.\"pop\"::float8"));
        assert!(sql.contains("'ogc_fid'"));
        assert!(sql.contains("$1::int, $2::int, $3::int") && sql.contains("$4::float8"));
        assert!(
            sql.contains("ST_Simplify(ST_ClipByBox2D(t.\"wkb_geometry\", env.area::box2d)"),
            "clipped before it is simplified: {sql}"
        );
        let doc = info.tilejson("http://h/tiles/pre_a/{z}/{x}/{y}.pbf");
        assert_eq!(doc["bounds"], json!([1.0, 2.0, 3.0, 4.0]));
        assert_eq!(doc["vector_layers"][0]["fields"]["pop"], "Number");
    }
}
