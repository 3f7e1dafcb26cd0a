//! Geo helpers for tests: which tile holds a point, vector tiles decoded by GDAL's MVT
//! driver (the independent reader the tile tests check our tiles with), and zipped shapefiles
//! made at test time from the GeoJSON samples (no binary shapefile is kept in the repository).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The z/x/y tile containing a point.
pub fn tile_of(lon: f64, lat: f64, z: u8) -> (u8, u32, u32) {
    let n = f64::from(1u32 << z);
    let x = ((lon + 180.0) / 360.0 * n).floor() as u32;
    let lat = lat.to_radians();
    let y = ((1.0 - (lat.tan() + 1.0 / lat.cos()).ln() / std::f64::consts::PI) / 2.0 * n).floor()
        as u32;
    (z, x, y)
}

/// The features of a Mapbox Vector Tile as GeoJSON (lon/lat), read by `ogr2ogr`.
pub fn decode_mvt(tile: &[u8], (z, x, y): (u8, u32, u32)) -> Vec<Value> {
    let dir = crate::temp_dir("testkit-mvt");
    let pbf = dir.join("tile.pbf");
    std::fs::write(&pbf, tile).expect("write tile");
    let out = dir.join("tile.geojson");
    let output = Command::new("ogr2ogr")
        .args(["-f", "GeoJSON"])
        .arg(&out)
        .arg(&pbf)
        .args([
            "-oo",
            &format!("Z={z}"),
            "-oo",
            &format!("X={x}"),
            "-oo",
            &format!("Y={y}"),
            "-t_srs",
            "EPSG:4326",
        ])
        .output()
        .expect("ogr2ogr (gdal-bin) reads the tile");
    crate::check(&output, "ogr2ogr MVT");
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("geojson")).expect("json");
    let _ = std::fs::remove_dir_all(&dir);
    doc["features"].as_array().cloned().unwrap_or_default()
}

/// Writes the GeoJSON `geojson` as the shapefile `<dir>/<name>.shp` with `ogr2ogr` (and its
/// `.shx`, `.dbf`, `.prj`, and a `.cpg` saying UTF-8); returns the `.shp` path. A multi-part
/// feature in a layer of single lines or polygons stays multi-part, as in real shapefiles.
pub fn shapefile(geojson: &Path, dir: &Path, name: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("shapefile folder");
    let shp = dir.join(format!("{name}.shp"));
    let output = Command::new("ogr2ogr")
        .args(["-f", "ESRI Shapefile", "-lco", "ENCODING=UTF-8"])
        .arg(&shp)
        .arg(geojson)
        .output()
        .expect("ogr2ogr (gdal-bin) makes the shapefile");
    crate::check(&output, "ogr2ogr to a shapefile");
    shp
}

/// Zips the parts of the shapefile `shp` (every `<stem>.*` beside it) flat into `zip` with the
/// `zip` command, as HDX users upload shapefiles; returns `zip`.
pub fn zip_shapefile(shp: &Path, zip: &Path) -> PathBuf {
    let dir = shp.parent().expect("the shapefile's folder");
    let stem = shp
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("a UTF-8 shapefile name");
    let mut parts: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read the shapefile's folder")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_stem().and_then(|s| s.to_str()) == Some(stem))
        .collect();
    parts.sort();
    let _ = std::fs::remove_file(zip);
    let output = Command::new("zip")
        .args(["-q", "-j"])
        .arg(zip)
        .args(&parts)
        .output()
        .expect("zip (installed by scripts/setup.sh)");
    crate::check(&output, "zip the shapefile");
    zip.to_path_buf()
}

/// A zipped shapefile `<dir>/<name>.shp.zip` made from the GeoJSON `geojson`
/// ([`shapefile`] into `<dir>/<name>/`, then [`zip_shapefile`]); e.g. the samples'
/// `districts.shp.zip` from `samples/geo/districts.geojson`.
pub fn shapefile_zip(geojson: &Path, dir: &Path, name: &str) -> PathBuf {
    let shp = shapefile(geojson, &dir.join(name), name);
    zip_shapefile(&shp, &dir.join(format!("{name}.shp.zip")))
}

/// The known results of the geo samples (samples/README.md, "Geo samples"): bounding boxes as
/// CKAN receives them, and layer fields (column, information_schema type) in column order.
pub mod sample_results {
    pub const DISTRICTS_BOX: &str = "BOX(21.5 -4.25,24.75 -1.5)";
    pub const HEALTH_SITES_BOX: &str = "BOX(21.85 -3.75,24.4 -1.85)";
    pub const WATER_POINTS_BOX: &str = "BOX(21.9 -3.9,24.2 -2.05)";
    pub const RIVERS_BOX: &str = "BOX(21.6 -4.2,24.7 -1.6)";
    pub const VARCHAR: &str = "character varying";
    pub const GEOMETRY: (&str, &str) = ("wkb_geometry", "USER-DEFINED");
    pub const DISTRICTS_FIELDS: &[(&str, &str)] = &[
        ("ogc_fid", "integer"),
        ("name", VARCHAR),
        ("pcode", VARCHAR),
        ("population", "integer"),
        ("area_km2", VARCHAR),
        ("updated", "date"),
        GEOMETRY,
    ];
    pub const DISTRICTS_SHP_FIELDS: &[(&str, &str)] = &[
        ("ogc_fid", "integer"),
        ("name", VARCHAR),
        ("pcode", VARCHAR),
        ("population", "numeric"),
        ("area_km2", VARCHAR),
        ("updated", "date"),
        GEOMETRY,
    ];
    pub const HEALTH_SITES_FIELDS: &[(&str, &str)] = &[
        ("ogc_fid", "integer"),
        ("name", VARCHAR),
        ("kind", VARCHAR),
        ("beds", "integer"),
        ("functional", "boolean"),
        ("pcode", VARCHAR),
        GEOMETRY,
    ];
    pub const WATER_POINTS_FIELDS: &[(&str, &str)] = &[
        ("ogc_fid", "integer"),
        ("name", VARCHAR),
        ("description", VARCHAR),
        ("timestamp", "timestamp with time zone"),
        ("begin", "timestamp with time zone"),
        ("end", "timestamp with time zone"),
        ("altitudemode", VARCHAR),
        ("tessellate", "integer"),
        ("extrude", "integer"),
        ("visibility", "integer"),
        ("draworder", "integer"),
        ("icon", VARCHAR),
        ("code", VARCHAR),
        ("district", VARCHAR),
        ("users", "integer"),
        ("depth_m", VARCHAR),
        GEOMETRY,
    ];
    pub const RIVERS_FIELDS: &[(&str, &str)] = &[
        ("ogc_fid", "integer"),
        ("name", VARCHAR),
        ("strahler", "integer"),
        ("length_km", VARCHAR),
        GEOMETRY,
    ];
    pub const RIVERS_SHP_FIELDS: &[(&str, &str)] = &[
        ("ogc_fid", "integer"),
        ("name", VARCHAR),
        ("strahler", "numeric"),
        ("length_km", VARCHAR),
        GEOMETRY,
    ];
}
