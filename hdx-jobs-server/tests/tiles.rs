//! Vector tiles against a real PostGIS: decoded with GDAL's MVT driver into the layer's features
//! and attributes; empty tiles, unknown and hostile layer names, the old tile server's path,
//! TileJSON, caching (ETag, gzip), and layers replaced or deleted under a running server.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::TestServer;
use serde_json::{json, Value};
use testkit::geo::{decode_mvt as decode, tile_of};

const LAYER: &str = "pre_tiles_test_1";

/// Writes a GeoJSON layer: 3 polygons and 2 points around Brussels, with attributes.
fn geojson(dir: &Path, label: &str) -> std::path::PathBuf {
    let feature = |geometry: Value, name: &str, population: i64| json!({"type": "Feature", "geometry": geometry, "properties": {"name": name, "population": population, "label": label}});
    let square = |x: f64, y: f64| json!({"type": "Polygon", "coordinates": [[[x, y], [x + 0.2, y], [x + 0.2, y + 0.2], [x, y + 0.2], [x, y]]]});
    let doc = json!({"type": "FeatureCollection", "features": [
        feature(square(4.2, 50.7), "west", 100),
        feature(square(4.5, 50.7), "east", 200),
        feature(square(4.35, 50.95), "north", 300),
        feature(json!({"type": "Point", "coordinates": [4.35, 50.85]}), "centre", 400),
        feature(json!({"type": "Point", "coordinates": [4.9, 51.1]}), "far", 500),
    ]});
    let path = dir.join(format!("{label}.geojson"));
    std::fs::write(&path, doc.to_string()).expect("write geojson");
    path
}

/// Imports a file into the test database as a layer, the way the old service ran ogr2ogr.
fn import(server: &TestServer, file: &Path, table: &str) {
    let output = Command::new("ogr2ogr")
        .args(["-f", "PostgreSQL"])
        .arg(format!("PG:{}", server.postgres.conn_string()))
        .arg(file)
        .args([
            "-nln",
            table,
            "-overwrite",
            "-lco",
            "OVERWRITE=YES",
            "-nlt",
            "PROMOTE_TO_MULTI",
            "-t_srs",
            "EPSG:4326",
        ])
        .output()
        .expect("ogr2ogr");
    testkit::check(&output, "ogr2ogr");
}

/// Announces a layer change, as imports and deletions do.
fn notify(server: &TestServer, table: &str) {
    server
        .postgres
        .client()
        .execute(
            "SELECT pg_notify($1, $2)",
            &[&hdx_jobs::geo::tiles::CHANNEL, &table],
        )
        .expect("notify");
}

fn get(
    server: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut request = TestServer::agent().get(&format!("{}{path}", server.url));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let mut response = request.call().expect("GET");
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .unwrap_or_default();
    (status, headers, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn tiles_decode_into_the_layers_features_and_attributes() {
    let server = TestServer::start(&[]);
    let dir = testkit::temp_dir("hdx-jobs-tiles");
    import(&server, &geojson(&dir, "first"), LAYER);

    let coords = tile_of(4.45, 50.85, 8);
    let (status, headers, body) = get(
        &server,
        &format!("/tiles/{LAYER}/{}/{}/{}.pbf", coords.0, coords.1, coords.2),
        &[],
    );
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/vnd.mapbox-vector-tile")
    );
    assert_eq!(header(&headers, "access-control-allow-origin"), Some("*"));
    let features = decode(&body, coords);
    let mut names: Vec<&str> = features
        .iter()
        .filter_map(|f| f["properties"]["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, vec!["centre", "east", "far", "north", "west"]);
    let centre = features
        .iter()
        .find(|f| f["properties"]["name"] == "centre")
        .expect("centre");
    assert_eq!(centre["properties"]["population"], json!(400.0));
    assert_eq!(centre["properties"]["label"], "first");
    let point = centre["geometry"]["coordinates"].as_array().expect("point");
    assert!(
        (point[0].as_f64().unwrap_or(0.0) - 4.35).abs() < 0.01
            && (point[1].as_f64().unwrap_or(0.0) - 50.85).abs() < 0.01
    );

    // Far from the layer: no content.
    let (status, _, body) = get(&server, "/tiles/pre_tiles_test_1/8/10/10.pbf", &[]);
    assert_eq!((status, body.len()), (204, 0));
    // Bad names and coordinates.
    for path in [
        "/tiles/pre_nope/8/1/1.pbf",
        "/tiles/other_table/8/1/1.pbf",
        "/tiles/pre_x%22%3B%20DROP%20TABLE%20pre_tiles_test_1%3B%20--/8/1/1.pbf",
        "/tiles/spatial_ref_sys/0/0/0.pbf",
    ] {
        assert_eq!(get(&server, path, &[]).0, 404, "{path}");
    }
    assert_eq!(
        get(&server, &format!("/tiles/{LAYER}/8/256/1.pbf"), &[]).0,
        404,
        "outside the grid: no such tile"
    );
    assert_eq!(
        get(&server, &format!("/tiles/{LAYER}/8/1/1.png"), &[]).0,
        400
    );
    assert_eq!(
        server.get("/tiles/pre_tiles_test_1/0/0/0.pbf").0,
        200,
        "the layer survived the hostile names"
    );

    // The old tile server's path.
    let legacy = format!(
        "/services/postgis/{LAYER}/wkb_geometry/vector-tiles/{}/{}/{}.pbf",
        coords.0, coords.1, coords.2
    );
    let (status, _, legacy_body) = get(&server, &legacy, &[]);
    assert_eq!(
        (status, legacy_body.len()),
        (200, body.len().max(legacy_body.len()))
    );
    assert_eq!(
        get(
            &server,
            &format!("/services/postgis/{LAYER}/geom/vector-tiles/0/0/0.pbf"),
            &[]
        )
        .0,
        404
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn caching_etags_and_gzip() {
    let server = TestServer::start(&[]);
    let dir = testkit::temp_dir("hdx-jobs-tiles");
    import(&server, &geojson(&dir, "first"), LAYER);
    let path = format!("/tiles/{LAYER}/0/0/0.pbf");
    let (_, headers, raw) = get(&server, &path, &[]);
    let etag = header(&headers, "etag").expect("etag").to_string();
    assert!(header(&headers, "cache-control").is_some());
    let (status, _, body) = get(&server, &path, &[("If-None-Match", &etag)]);
    assert_eq!((status, body.len()), (304, 0));
    let (status, headers, gz) = get(&server, &path, &[("Accept-Encoding", "gzip")]);
    assert_eq!(status, 200);
    // ureq decompresses gzip itself when it asked; this request set the header by hand, so
    // the body may come either way: compare what it decodes to.
    let decoded =
        if header(&headers, "content-encoding") == Some("gzip") && gz.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(gz.as_slice())
                .read_to_end(&mut out)
                .expect("gunzip");
            out
        } else {
            gz
        };
    assert_eq!(decoded, raw);
    // One query, then the cache: /metrics counts one miss and the other requests as hits.
    let (_, metrics) = server.get("/metrics");
    let metrics = metrics.as_str().expect("text");
    for line in [
        "hdx_jobs_tile_cache_requests_total{result=\"miss\"} 1",
        "hdx_jobs_tile_cache_requests_total{result=\"hit\"} 2",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in:\n{metrics}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_replaced_or_deleted_layer_changes_its_tiles_at_once() {
    let server = TestServer::start(&[]);
    let dir = testkit::temp_dir("hdx-jobs-tiles");
    import(&server, &geojson(&dir, "first"), LAYER);
    let coords = tile_of(4.45, 50.85, 8);
    let path = format!("/tiles/{LAYER}/{}/{}/{}.pbf", coords.0, coords.1, coords.2);
    let (_, _, before) = get(&server, &path, &[]);
    assert_eq!(decode(&before, coords)[0]["properties"]["label"], "first");

    import(&server, &geojson(&dir, "second"), LAYER);
    notify(&server, LAYER);
    let after = testkit::eventually("the new data in the tile", Duration::from_secs(10), || {
        let (_, _, body) = get(&server, &path, &[]);
        (!body.is_empty() && decode(&body, coords)[0]["properties"]["label"] == "second")
            .then_some(body)
    });
    assert_ne!(after, before);

    let resource = LAYER.trim_start_matches("pre_").replace('_', "-");
    assert_eq!(
        server
            .post_json(&format!("/api/delete-one-layer/{resource}"), &json!({}))
            .0,
        200
    );
    testkit::eventually(
        "the deleted layer to be gone",
        Duration::from_secs(10),
        || (get(&server, &path, &[]).0 == 404).then_some(()),
    );
    assert_eq!(server.get(&format!("/tiles/{LAYER}.json")).0, 404);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tilejson_describes_the_layer() {
    let server = TestServer::start(&[]);
    let dir = testkit::temp_dir("hdx-jobs-tiles");
    import(&server, &geojson(&dir, "first"), LAYER);
    let (status, doc) = server.get(&format!("/tiles/{LAYER}.json"));
    assert_eq!(status, 200);
    assert_eq!(doc["tilejson"], "3.0.0");
    let host = server.url.trim_start_matches("http://");
    assert_eq!(
        doc["tiles"],
        json!([format!("http://{host}/tiles/{LAYER}/{{z}}/{{x}}/{{y}}.pbf")])
    );
    let bounds: Vec<f64> = doc["bounds"]
        .as_array()
        .expect("bounds")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert_eq!(bounds.len(), 4);
    for (got, want) in bounds.iter().zip([4.2, 50.7, 4.9, 51.15]) {
        assert!((got - want).abs() < 1e-6, "{bounds:?}");
    }
    assert_eq!(doc["vector_layers"][0]["id"], LAYER);
    assert_eq!(
        doc["vector_layers"][0]["fields"],
        json!({"name": "String", "population": "Number", "label": "String"})
    );
    assert!(doc["center"].as_array().is_some_and(|c| c.len() == 3));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The shared shapefile fixture, when this machine has it (ignored elsewhere).
#[test]
#[cfg_attr(
    not(shared_fixtures),
    ignore = "needs ../shared/fixtures (the old service's known results)"
)]
fn the_shapefile_fixture_serves_tiles_over_its_extent() {
    let zip = testkit::require_shared_fixture("geofiles/test.shp.zip");
    let server = TestServer::start(&[]);
    import(
        &server,
        Path::new(&format!("/vsizip/{}", zip.display())),
        "pre_fixture_shp",
    );
    // BOX(34.00334232 -4.408103235999988,41.814834959999985 4.475610393000011)
    let coords = tile_of(37.9, 0.03, 4);
    let (status, _, body) = get(
        &server,
        &format!(
            "/tiles/pre_fixture_shp/{}/{}/{}.pbf",
            coords.0, coords.1, coords.2
        ),
        &[],
    );
    assert_eq!(status, 200);
    let features = decode(&body, coords);
    assert!(features.len() > 100, "{} features", features.len());
    // MVT leaves out null values, so collect the attributes over all features.
    let mut seen: Vec<String> = features
        .iter()
        .flat_map(|f| {
            f["properties"]
                .as_object()
                .map(|p| p.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .filter(|k| k != "mvt_id")
        .collect();
    seen.sort();
    seen.dedup();
    let (_, tilejson) = server.get("/tiles/pre_fixture_shp.json");
    let mut fields: Vec<String> = tilejson["vector_layers"][0]["fields"]
        .as_object()
        .expect("fields")
        .keys()
        .cloned()
        .collect();
    fields.sort();
    assert_eq!(
        fields.len(),
        43,
        "45 columns less the geometry and the feature id"
    );
    // (Two columns are null in every feature of this area, so they never appear.)
    assert!(seen.iter().all(|k| fields.contains(k)), "{seen:?}");
    assert!(seen.len() >= 41, "the attributes reach the tiles: {seen:?}");
    assert_eq!(get(&server, "/tiles/pre_fixture_shp/4/0/0.pbf", &[]).0, 204);
}

/// Tile queries are bounded: each runs under `HDX_JOBS_TILE_STATEMENT_TIMEOUT`, so a slow tile
/// fails with 503 instead of holding a connection; and a high-zoom tile inside a huge polygon
/// (clipped to the tile before it is simplified) is the polygon's piece of the tile.
#[test]
fn tile_queries_run_under_a_statement_timeout_and_clip_first() {
    let build = "CREATE TABLE pre_heavy (ogc_fid serial PRIMARY KEY, name text, wkb_geometry geometry(Geometry, 4326));
         INSERT INTO pre_heavy (name, wkb_geometry)
           SELECT 'p' || i, ST_SetSRID(ST_MakePoint(-180 + (i % 3600) * 0.1, -80 + (i / 3600) * 0.1), 4326)
           FROM generate_series(1, 200000) AS i;
         CREATE TABLE pre_huge (ogc_fid serial PRIMARY KEY, name text, wkb_geometry geometry(Polygon, 4326));
         INSERT INTO pre_huge (name, wkb_geometry)
           VALUES ('disc', ST_Buffer(ST_SetSRID(ST_MakePoint(20, 0), 4326), 30, 25000));
         ANALYZE pre_heavy; ANALYZE pre_huge;";

    let strict = TestServer::start(&[("HDX_JOBS_TILE_STATEMENT_TIMEOUT", "0.001")]);
    strict
        .postgres
        .client()
        .batch_execute(build)
        .expect("layers");
    let (status, _, body) = get(&strict, "/tiles/pre_heavy/0/0/0.pbf", &[]);
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("statement timeout"));
    assert_eq!(strict.get("/healthz").0, 200);

    let normal = TestServer::start(&[]);
    normal
        .postgres
        .client()
        .batch_execute(build)
        .expect("layers");
    let (status, _, body) = get(&normal, "/tiles/pre_heavy/0/0/0.pbf", &[]);
    assert_eq!(status, 200);
    assert!(!decode(&body, (0, 0, 0)).is_empty());
    let (z, x, y) = tile_of(20.0, 0.0, 14);
    let (status, _, body) = get(&normal, &format!("/tiles/pre_huge/{z}/{x}/{y}.pbf"), &[]);
    assert_eq!(status, 200);
    let features = decode(&body, (z, x, y));
    assert_eq!(features.len(), 1, "{features:?}");
    assert_eq!(features[0]["properties"]["name"], "disc");
}
