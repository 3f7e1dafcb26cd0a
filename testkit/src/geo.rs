//! Geo helpers for tests: which tile holds a point, and vector tiles decoded by GDAL's MVT
//! driver (the independent reader the tile tests check our tiles with).

use std::path::PathBuf;
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
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "testkit-mvt-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
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
