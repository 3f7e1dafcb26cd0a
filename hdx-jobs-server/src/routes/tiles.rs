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

/// Tile coordinates: malformed ones are a bad request (400); well-formed ones outside the grid
/// (`z` over 22, `x` or `y` from `2^z` on) name no tile (404).
fn coordinates(z: &str, x: &str, file: &str) -> Result<(u8, u32, u32), ApiError> {
    let bad = || ApiError::bad_request("tile coordinates must be {z}/{x}/{y}.pbf (or .mvt)");
    let digits = |text: &str, max: usize| {
        !text.is_empty() && text.len() <= max && text.bytes().all(|b| b.is_ascii_digit())
    };
    let y_text = file
        .strip_suffix(".pbf")
        .or_else(|| file.strip_suffix(".mvt"))
        .unwrap_or("");
    if !(digits(z, 2) && digits(x, 9) && digits(y_text, 9)) {
        return Err(bad());
    }
    let (z, x, y): (u8, u32, u32) = match (z.parse(), x.parse(), y_text.parse()) {
        (Ok(z), Ok(x), Ok(y)) => (z, x, y),
        _ => return Err(bad()),
    };
    if is_tile(z, x, y) {
        Ok((z, x, y))
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no tile {z}/{x}/{y}: 0 <= x, y < 2^z and z <= 22"),
        ))
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
        ("z" = String, Path, description = "Zoom, 0 to 22", pattern = "^[0-9]{1,2}$"),
        ("x" = String, Path, description = "Column", pattern = "^[0-9]{1,9}$"),
        ("tile" = String, Path, description = "Row with extension: `{y}.pbf`", pattern = r"^[0-9]{1,9}\.(pbf|mvt)$")
    ),
    responses(
        (status = 200, description = "Mapbox Vector Tile", content_type = "application/vnd.mapbox-vector-tile", body = Vec<u8>),
        (status = 204, description = "No feature in this tile"),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 400, description = "Malformed tile coordinates", body = ErrorBody),
        (status = 404, description = "No such layer, or coordinates outside the tile grid", body = ErrorBody),
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
        ("z" = String, Path, description = "Zoom", pattern = "^[0-9]{1,2}$"),
        ("x" = String, Path, description = "Column", pattern = "^[0-9]{1,9}$"),
        ("tile" = String, Path, description = "`{y}.pbf`", pattern = r"^[0-9]{1,9}\.(pbf|mvt)$")
    ),
    responses(
        (status = 200, description = "Mapbox Vector Tile", content_type = "application/vnd.mapbox-vector-tile", body = Vec<u8>),
        (status = 204, description = "No feature in this tile"),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 400, description = "Malformed tile coordinates", body = ErrorBody),
        (status = 404, description = "No such layer or geometry column, or coordinates outside the tile grid", body = ErrorBody),
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

/// The base URL clients reached us by: the `Host` header, or behind a proxy (only when
/// `HDX_JOBS_TRUST_PROXY` says one sets them) `X-Forwarded-Host`/`-Proto`. A value that is not a
/// plain host (or `http`/`https`) is ignored, so a request cannot make the TileJSON point
/// elsewhere with a crafted header.
pub fn public_base(headers: &HeaderMap, trust_proxy: bool) -> String {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(',').next().unwrap_or("").trim().to_string())
    };
    let plain_host = |host: &String| {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
    };
    let forwarded = |name: &str| if trust_proxy { text(name) } else { None };
    let host = forwarded("x-forwarded-host")
        .filter(plain_host)
        .or_else(|| text("host").filter(plain_host))
        .unwrap_or_else(|| "localhost".into());
    let proto = forwarded("x-forwarded-proto")
        .filter(|p| p == "http" || p == "https")
        .unwrap_or_else(|| "http".into());
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
        public_base(&headers, state.config().trust_proxy),
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
    fn forwarded_headers_count_only_behind_a_trusted_proxy() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("jobs:5000"));
        headers.insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert_eq!(public_base(&headers, false), "http://jobs:5000");
        assert_eq!(public_base(&headers, true), "https://evil.example");
        headers.insert("x-forwarded-host", HeaderValue::from_static("a/b@c"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("javascript"));
        assert_eq!(public_base(&headers, true), "http://jobs:5000");
    }

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
