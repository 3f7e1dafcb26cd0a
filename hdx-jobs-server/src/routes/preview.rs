//! `/preview/{layer}`: a page showing a layer on a map, with MapLibre GL JS served by hdx-jobs
//! itself (embedded at build time from the npm registry: no CDN), fitted to the layer's bounds,
//! with feature properties on click.

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
    let bundled = MAPLIBRE_JS.is_some();
    Ok(Html(
        PAGE.replace("__LAYER__", &info.name)
            .replace("__BUNDLED__", if bundled { "true" } else { "false" })
            .replace("__GEOMETRY_TYPE__", &info.geometry_type),
    ))
}

/// The map library's files.
#[utoipa::path(
    get,
    path = "/preview/assets/{file}",
    tag = "tiles",
    params(("file" = String, Path, description = "`maplibre-gl.js` or `maplibre-gl.css`")),
    responses(
        (status = 200, description = "The file", content(
            (String = "application/javascript"),
            (String = "text/css")
        )),
        (status = 404, description = "No such file", body = ErrorBody),
        (status = 503, description = "MapLibre is not bundled in this build", body = ErrorBody)
    )
)]
pub async fn asset(ApiPath(file): ApiPath<String>) -> Result<Response, ApiError> {
    let (bytes, content_type) = match file.as_str() {
        "maplibre-gl.js" => (MAPLIBRE_JS, "application/javascript"),
        "maplibre-gl.css" => (MAPLIBRE_CSS, "text/css"),
        _ => return Err(ApiError::not_found()),
    };
    let bytes = bytes.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "AssetMissing",
            "MapLibre GL JS is not bundled in this build (run scripts/fetch-assets.sh and rebuild)",
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
