//! `/preview/{layer}`: a page showing a layer on a map, with MapLibre GL JS served by hdx-jobs
//! itself (embedded at build time from the npm registry: no CDN), fitted to the layer's bounds,
//! with feature properties on click. Under the layer, a light reference layer of country
//! outlines (Natural Earth 1:110m, public domain, attributed on the map) shows where on Earth it
//! is; `scripts/fetch-assets.sh` fetches both from the npm registry (maplibre-gl, and
//! world-atlas converted to GeoJSON), and a build without them still serves the page, saying
//! what is missing.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};

use crate::error::{ApiError, ApiPath, ErrorBody};
use crate::tiles::TileError;
use crate::AppState;

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

const PAGE: &str = include_str!("../../assets/preview.html");

/// The preview page of a layer.
#[utoipa::path(
    get,
    path = "/preview/{layer}",
    tag = "tiles",
    params(("layer" = String, Path, description = "Layer id (table name)")),
    responses(
        (status = 200, description = "HTML page", body = String, content_type = "text/html"),
        (status = 404, description = "No such layer", body = ErrorBody),
        (status = 503, description = "The layer database is unavailable", body = ErrorBody)
    )
)]
pub async fn page(
    State(state): State<AppState>,
    ApiPath(layer): ApiPath<String>,
) -> Result<Html<String>, ApiError> {
    let info = state.tiles().layer(&layer).await.map_err(|e| match e {
        TileError::NoLayer(l) => {
            ApiError::new(StatusCode::NOT_FOUND, "NotFound", format!("no layer {l:?}"))
        }
        TileError::Db(m) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "LayerDatabaseUnavailable",
            m,
        ),
    })?;
    let flag = |bundled: bool| if bundled { "true" } else { "false" };
    Ok(Html(
        PAGE.replace("__LAYER__", &info.name)
            .replace("__BUNDLED__", flag(MAPLIBRE_JS.is_some()))
            .replace("__COUNTRIES__", flag(COUNTRIES_GEOJSON.is_some()))
            .replace("__GEOMETRY_TYPE__", &info.geometry_type),
    ))
}

/// The preview page's files: the map library, and the country outlines of its reference layer
/// (Natural Earth 1:110m Admin 0 boundaries, public domain, as GeoJSON).
#[utoipa::path(
    get,
    path = "/preview/assets/{file}",
    tag = "tiles",
    params(("file" = String, Path, description = "`maplibre-gl.js`, `maplibre-gl.css` or `countries.geojson`")),
    responses(
        (status = 200, description = "The file", content(
            (String = "application/javascript"),
            (String = "text/css"),
            (String = "application/geo+json")
        )),
        (status = 404, description = "No such file", body = ErrorBody),
        (status = 503, description = "The file is not bundled in this build", body = ErrorBody)
    )
)]
pub async fn asset(ApiPath(file): ApiPath<String>) -> Result<Response, ApiError> {
    let (bytes, content_type, what) = match file.as_str() {
        "maplibre-gl.js" => (MAPLIBRE_JS, "application/javascript", "MapLibre GL JS is"),
        "maplibre-gl.css" => (MAPLIBRE_CSS, "text/css", "MapLibre GL JS is"),
        "countries.geojson" => (
            COUNTRIES_GEOJSON,
            "application/geo+json",
            "The country outlines are",
        ),
        _ => return Err(ApiError::not_found()),
    };
    let bytes = bytes.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "AssetMissing",
            format!("{what} not bundled in this build (run scripts/fetch-assets.sh and rebuild)"),
        )
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        bytes,
    )
        .into_response())
}
