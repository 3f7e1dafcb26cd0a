//! Vector tiles of imported layers, their TileJSON, and the old tile server's path shape
//! (`/services/postgis/{table}/{geom_column}/vector-tiles/{z}/{x}/{y}.pbf`) so HDX's front end
//! works unchanged. Tiles carry an ETag (304 on `If-None-Match`), are gzip-compressed when the
//! client accepts it, and are open to other origins (the map runs on CKAN's pages).

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hdx_jobs::geo::tiles::is_tile;
use serde_json::Value;

use crate::error::{ApiError, ApiPath, ErrorBody};
use crate::tiles::TileError;
use crate::AppState;

const MVT: &str = "application/vnd.mapbox-vector-tile";

fn tile_error(e: TileError) -> ApiError {
    match e {
        TileError::NoLayer(layer) => ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no layer {layer:?}"),
        ),
        TileError::Db(message) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "LayerDatabaseUnavailable",
            message,
        ),
    }
}

/// Parses `{y}.pbf` (or `.mvt`).
fn tile_y(file: &str) -> Option<u32> {
    file.strip_suffix(".pbf")
        .or_else(|| file.strip_suffix(".mvt"))?
        .parse()
        .ok()
}

fn coordinates(z: &str, x: &str, file: &str) -> Result<(u8, u32, u32), ApiError> {
    let bad = || {
        ApiError::bad_request("tile coordinates must be z/x/y.pbf with 0 <= x, y < 2^z and z <= 22")
    };
    let z: u8 = z.parse().map_err(|_| bad())?;
    let x: u32 = x.parse().map_err(|_| bad())?;
    let y = tile_y(file).ok_or_else(bad)?;
    if is_tile(z, x, y) {
        Ok((z, x, y))
    } else {
        Err(bad())
    }
}

async fn serve_tile(
    state: &AppState,
    layer: &str,
    (z, x, y): (u8, u32, u32),
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let tile = state
        .tiles()
        .tile(layer, z, x, y)
        .await
        .map_err(tile_error)?;
    let common = |builder: axum::http::response::Builder| {
        builder
            .header(header::ETAG, &tile.etag)
            .header(header::CACHE_CONTROL, "public, max-age=0, must-revalidate")
            .header(header::VARY, "Accept-Encoding")
            .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
    };
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == tile.etag || t.trim() == "*")
        });
    let response = if matches {
        common(Response::builder().status(StatusCode::NOT_MODIFIED)).body(Body::empty())
    } else if tile.raw.is_empty() {
        common(Response::builder().status(StatusCode::NO_CONTENT)).body(Body::empty())
    } else {
        let gzip = headers
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|e| e.trim().split(';').next() == Some("gzip"))
            });
        let builder =
            common(Response::builder().status(StatusCode::OK)).header(header::CONTENT_TYPE, MVT);
        if gzip {
            builder
                .header(header::CONTENT_ENCODING, "gzip")
                .body(Body::from(tile.gzip.clone()))
        } else {
            builder.body(Body::from(tile.raw.clone()))
        }
    };
    response.map_err(ApiError::internal)
}

/// A vector tile of a layer.
#[utoipa::path(
    get,
    path = "/tiles/{layer}/{z}/{x}/{tile}",
    tag = "tiles",
    params(
        ("layer" = String, Path, description = "Layer id (table name), e.g. pre_1a2b..."),
        ("z" = String, Path, description = "Zoom, 0 to 22"),
        ("x" = String, Path, description = "Column"),
        ("tile" = String, Path, description = "Row with extension: `{y}.pbf`")
    ),
    responses(
        (status = 200, description = "Mapbox Vector Tile", content_type = "application/vnd.mapbox-vector-tile", body = Vec<u8>),
        (status = 204, description = "No feature in this tile"),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 400, description = "Bad tile coordinates", body = ErrorBody),
        (status = 404, description = "No such layer", body = ErrorBody),
        (status = 503, description = "The layer database is unavailable", body = ErrorBody)
    )
)]
pub async fn tile(
    State(state): State<AppState>,
    ApiPath((layer, z, x, file)): ApiPath<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let coordinates = coordinates(&z, &x, &file)?;
    serve_tile(&state, &layer, coordinates, &headers).await
}

/// A vector tile at the old tile server's path.
#[utoipa::path(
    get,
    path = "/services/postgis/{table}/{geom_column}/vector-tiles/{z}/{x}/{tile}",
    tag = "tiles",
    params(
        ("table" = String, Path, description = "Layer id (table name)"),
        ("geom_column" = String, Path, description = "Geometry column (`wkb_geometry`)"),
        ("z" = String, Path, description = "Zoom"),
        ("x" = String, Path, description = "Column"),
        ("tile" = String, Path, description = "`{y}.pbf`")
    ),
    responses(
        (status = 200, description = "Mapbox Vector Tile", content_type = "application/vnd.mapbox-vector-tile", body = Vec<u8>),
        (status = 204, description = "No feature in this tile"),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 400, description = "Bad tile coordinates", body = ErrorBody),
        (status = 404, description = "No such layer or geometry column", body = ErrorBody),
        (status = 503, description = "The layer database is unavailable", body = ErrorBody)
    )
)]
pub async fn legacy_tile(
    State(state): State<AppState>,
    ApiPath((table, column, z, x, file)): ApiPath<(String, String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let coordinates = coordinates(&z, &x, &file)?;
    let info = state.tiles().layer(&table).await.map_err(tile_error)?;
    if info.geometry_column != column {
        return Err(tile_error(TileError::NoLayer(format!("{table}/{column}"))));
    }
    serve_tile(&state, &table, coordinates, &headers).await
}

/// The base URL clients reached us by (behind a proxy: `X-Forwarded-Proto`/`-Host`).
pub fn public_base(headers: &HeaderMap) -> String {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let host = text("x-forwarded-host")
        .or_else(|| text("host"))
        .unwrap_or_else(|| "localhost".into());
    let proto = text("x-forwarded-proto").unwrap_or_else(|| "http".into());
    format!("{proto}://{host}")
}

/// TileJSON 3.0 of a layer: tile URL, bounds, center, zooms, fields.
#[utoipa::path(
    get,
    path = "/tiles/{file}",
    tag = "tiles",
    params(("file" = String, Path, description = "`{layer}.json`")),
    responses(
        (status = 200, description = "TileJSON 3.0", body = Object),
        (status = 404, description = "No such layer", body = ErrorBody),
        (status = 503, description = "The layer database is unavailable", body = ErrorBody)
    )
)]
pub async fn tilejson(
    State(state): State<AppState>,
    ApiPath(file): ApiPath<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let layer = file
        .strip_suffix(".json")
        .ok_or_else(|| tile_error(TileError::NoLayer(file.clone())))?;
    let info = state.tiles().layer(layer).await.map_err(tile_error)?;
    let url = format!(
        "{}/tiles/{}/{{z}}/{{x}}/{{y}}.pbf",
        public_base(&headers),
        info.name
    );
    let doc: Value = info.tilejson(&url);
    Ok((
        [(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        )],
        Json(doc),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinates_are_checked() {
        assert!(coordinates("0", "0", "0.pbf").is_ok());
        assert!(coordinates("3", "7", "7.mvt").is_ok());
        assert!(coordinates("3", "8", "0.pbf").is_err());
        assert!(coordinates("23", "0", "0.pbf").is_err());
        assert!(coordinates("a", "0", "0.pbf").is_err());
        assert!(coordinates("1", "0", "0.png").is_err());
    }
}
