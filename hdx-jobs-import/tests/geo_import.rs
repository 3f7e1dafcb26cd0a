//! The GDAL import and the database steps of geopreview, against real GDAL and PostGIS: each
//! repair rule exercised by a file that needs it (made here with ogr2ogr), degraded imports
//! refused, staging tables swapped in with tidy names, leftovers swept; and the project's
//! samples (`samples/geo/`) give their known results (samples/README.md); the child's entry point
//! speaks the protocol of `hdx_jobs::geo::child`. The whole pipeline (the `hdx-jobs-import` child
//! process, worker, CKAN) is tested in hdx-jobs-cli/tests/geopreview.rs, where the `hdx-jobs` and
//! `hdx-jobs-import` executables exist.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{gis_db, request};

use hdx_jobs::geo::import::{Fix, ImportReport};
use hdx_jobs::geo::{db, metadata, staging};
use testkit::geo::sample_results::*;
use testkit::TestPostgres;

fn run_import(pg: &TestPostgres, source: &Path, table: &str) -> ImportReport {
    let request = request(pg, source, table);
    let mut fractions = Vec::new();
    let report = hdx_jobs_import::import(&request, source, &mut |f| fractions.push(f));
    if report.ok {
        assert!(
            fractions.last().is_some_and(|f| *f >= 0.99),
            "progress reaches the end: {fractions:?}"
        );
    }
    report
}

fn ogr2ogr(args: &[&str]) {
    let output = Command::new("ogr2ogr")
        .args(args)
        .output()
        .expect("ogr2ogr (gdal-bin) is installed by scripts/setup.sh");
    testkit::check(&output, &format!("ogr2ogr {}", args.join(" ")));
}

fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write test file");
    path
}

const MIXED_POLYGONS: &str = r#"{"type":"FeatureCollection","features":[
{"type":"Feature","properties":{"n":"a"},"geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,0]]]}},
{"type":"Feature","properties":{"n":"b"},"geometry":{"type":"MultiPolygon","coordinates":[[[[2,2],[3,2],[3,3],[2,2]]],[[[4,4],[5,4],[5,5],[4,4]]]]}}
]}"#;

const MIXED_LINES: &str = r#"{"type":"FeatureCollection","features":[
{"type":"Feature","properties":{"n":"a"},"geometry":{"type":"LineString","coordinates":[[0,0],[1,1]]}},
{"type":"Feature","properties":{"n":"b"},"geometry":{"type":"MultiLineString","coordinates":[[[2,2],[3,3]],[[4,4],[5,5]]]}}
]}"#;

/// A shapefile (polygon or line type) whose second feature is multi-part: the layer says
/// Polygon/LineString, the feature comes back Multi*, PostGIS refuses it.
fn multipart_shapefile(dir: &Path, name: &str, geojson: &str) -> PathBuf {
    let source = write(dir, &format!("{name}.geojson"), geojson.as_bytes());
    let shp = dir.join(format!("{name}.shp"));
    ogr2ogr(&[
        "-f",
        "ESRI Shapefile",
        shp.to_str().expect("utf-8"),
        source.to_str().expect("utf-8"),
    ]);
    shp
}

fn field_pairs(fields: &[metadata::LayerField]) -> Vec<(&str, &str)> {
    fields
        .iter()
        .map(|f| (f.field_name.as_str(), f.data_type.as_str()))
        .collect()
}

fn query_one(pg: &TestPostgres, sql: &str) -> String {
    pg.client()
        .query_one(sql, &[])
        .expect(sql)
        .get::<_, Option<String>>(0)
        .unwrap_or_default()
}

#[test]
fn each_repair_rule_is_applied_when_a_file_needs_it() {
    let pg = TestPostgres::new();
    let dir = tempfile::tempdir().expect("tempdir");

    let polygons = multipart_shapefile(dir.path(), "polygons", MIXED_POLYGONS);
    let report = run_import(&pg, &polygons, "t_polygons");
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.fixes, vec![Fix::MultiPolygon]);
    assert!(!report.attempts[0].ok, "the file needs the fix");
    assert!(report.attempts[0]
        .messages
        .iter()
        .any(|m| m.contains("does not match column type (Polygon)")));
    assert_eq!(
        query_one(
            &pg,
            "SELECT type::text FROM geometry_columns WHERE f_table_name = 't_polygons'"
        ),
        "MULTIPOLYGON"
    );

    let lines = multipart_shapefile(dir.path(), "lines", MIXED_LINES);
    let report = run_import(&pg, &lines, "t_lines");
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.fixes, vec![Fix::MultiLineString]);
    assert_eq!(
        query_one(
            &pg,
            "SELECT type::text FROM geometry_columns WHERE f_table_name = 't_lines'"
        ),
        "MULTILINESTRING"
    );

    // No .prj: GDAL cannot reproject to EPSG:4326 until told the source SRS.
    let points = write(
        dir.path(),
        "points.geojson",
        br#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"n":"p"},"geometry":{"type":"Point","coordinates":[10.5,20.25]}}]}"#,
    );
    let noprj = dir.path().join("noprj.shp");
    ogr2ogr(&[
        "-f",
        "ESRI Shapefile",
        noprj.to_str().expect("utf-8"),
        points.to_str().expect("utf-8"),
    ]);
    std::fs::remove_file(dir.path().join("noprj.prj")).expect("drop the .prj");
    let report = run_import(&pg, &noprj, "t_noprj");
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.fixes, vec![Fix::SourceSrs]);
    assert_eq!(
        query_one(
            &pg,
            "SELECT ST_AsText(wkb_geometry) || ' ' || ST_SRID(wkb_geometry) FROM t_noprj"
        ),
        "POINT(10.5 20.25) 4326"
    );

    // A GeoJSON in latin1: with COPY, GDAL refuses the bytes until the client encoding is
    // latin1; then the text arrives right.
    let latin1 = write(
        dir.path(),
        "latin1.geojson",
        b"{\"type\":\"FeatureCollection\",\"features\":[{\"type\":\"Feature\",\"properties\":{\"name\":\"S\xe3o Paulo\"},\"geometry\":{\"type\":\"Point\",\"coordinates\":[-46.6,-23.5]}}]}",
    );
    let report = run_import(&pg, &latin1, "t_latin1");
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.fixes, vec![Fix::Latin1]);
    assert_eq!(query_one(&pg, "SELECT name FROM t_latin1"), "São Paulo");

    // Two rules in one file, one after the other.
    let both = multipart_shapefile(dir.path(), "both", MIXED_POLYGONS);
    std::fs::remove_file(dir.path().join("both.prj")).expect("drop the .prj");
    let report = run_import(&pg, &both, "t_both");
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.fixes, vec![Fix::SourceSrs, Fix::MultiPolygon]);
    assert_eq!(report.attempts.len(), 3);
}

/// Each sample (and the shapefiles made from them) imports with the results samples/README.md
/// gives: the repair rules it needs, its rows, box and fields, and its non-ASCII text intact.
/// `hdx-jobs-import`'s entry point, as the worker drives it: the request as one JSON line in,
/// progress lines and one report out; a bad request gets exit code 2 and no report.
#[test]
fn the_child_entry_point_speaks_the_protocol() {
    let pg = TestPostgres::new();
    let source = testkit::sample("geo/districts.geojson");
    let request = serde_json::to_vec(&request(&pg, &source, "t_child")).expect("json");
    let mut output = Vec::new();
    assert_eq!(
        hdx_jobs_import::child_main(request.as_slice(), &mut output),
        0
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(output)
        .expect("utf-8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    let (report, progress) = lines.split_last().expect("lines");
    assert!(
        progress.iter().all(|line| line["progress"].is_f64()),
        "{lines:?}"
    );
    assert_eq!(
        progress.last().map(|l| l["progress"].clone()),
        Some(1.0.into())
    );
    let report: ImportReport = serde_json::from_value(report["report"].clone()).expect("a report");
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.source_features, Some(4));
    assert_eq!(
        query_one(&pg, "SELECT count(*)::text FROM public.t_child"),
        "4"
    );

    let mut output = Vec::new();
    assert_eq!(hdx_jobs_import::child_main(&b"{}\n"[..], &mut output), 2);
    assert!(output.is_empty());
}

#[test]
fn the_samples_import_with_their_known_results() {
    let pg = TestPostgres::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let districts = testkit::sample("geo/districts.geojson");
    let rivers = testkit::sample("geo/rivers.geojson");
    type SampleCase<'a> = (
        &'a str,
        PathBuf,
        Vec<Fix>,
        u64,
        &'a str,
        &'a [(&'a str, &'a str)],
    );
    let cases: Vec<SampleCase> = vec![
        (
            "districts",
            districts.clone(),
            vec![],
            4,
            DISTRICTS_BOX,
            DISTRICTS_FIELDS,
        ),
        (
            "health_sites",
            testkit::sample("geo/health_sites.geojson"),
            vec![],
            6,
            HEALTH_SITES_BOX,
            HEALTH_SITES_FIELDS,
        ),
        (
            "water_points",
            testkit::sample("geo/water_points.kml"),
            vec![],
            4,
            WATER_POINTS_BOX,
            WATER_POINTS_FIELDS,
        ),
        (
            "rivers",
            rivers.clone(),
            vec![],
            3,
            RIVERS_BOX,
            RIVERS_FIELDS,
        ),
        (
            "districts_shp",
            testkit::geo::shapefile(&districts, dir.path(), "districts"),
            vec![],
            4,
            DISTRICTS_BOX,
            DISTRICTS_SHP_FIELDS,
        ),
        (
            "rivers_shp",
            testkit::geo::shapefile(&rivers, dir.path(), "rivers"),
            vec![Fix::MultiLineString],
            3,
            RIVERS_BOX,
            RIVERS_SHP_FIELDS,
        ),
    ];
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let client = runtime
        .block_on(db::connect(&gis_db(&pg)))
        .expect("connect");
    for (table, source, fixes, rows, bbox, fields) in &cases {
        let report = run_import(&pg, source, table);
        assert!(report.ok, "{table}: {report:#?}");
        assert_eq!(&report.fixes, fixes, "{table}");
        assert_eq!(report.source_features, Some(*rows), "{table}");
        let meta = runtime.block_on(async {
            let columns = metadata::fields(&client, table).await.expect("fields");
            let loaded = staging::inspect(&client, table, true)
                .await
                .expect("inspect");
            assert_eq!(
                (loaded.rows, loaded.with_geometry),
                (*rows, Some(*rows)),
                "{table}: every row has a geometry"
            );
            metadata::collect(&client, table, columns, loaded.extent)
                .await
                .expect("metadata")
        });
        assert_eq!(meta.bounding_box, *bbox, "{table}");
        assert_eq!(meta.invalid_deleted, 0, "{table}");
        assert_eq!(field_pairs(&meta.layer_fields), *fields, "{table}");
    }
    for table in ["districts", "districts_shp"] {
        assert_eq!(
            query_one(
                &pg,
                &format!("SELECT string_agg(name, ', ' ORDER BY pcode) FROM {table}")
            ),
            "Équateur-Nord, Kasaï-Lac, Lomami-Sud, Mbéli-Forêt",
            "{table}"
        );
    }
    assert_eq!(
        query_one(
            &pg,
            "SELECT string_agg(code || ' ' || district || ' ' || ST_GeometryType(wkb_geometry), \
             ', ' ORDER BY code) FROM water_points"
        ),
        "WC-001 Lomami-Sud ST_Polygon, WP-001 Équateur-Nord ST_Point, \
         WP-002 Kasaï-Lac ST_Point, WP-003 Mbéli-Forêt ST_Point",
        "both folders of the KML, with their SchemaData"
    );
    assert_eq!(
        query_one(
            &pg,
            "SELECT string_agg(coalesce(beds::text, 'null') || ' ' || functional, ', ' \
             ORDER BY ogc_fid) FROM health_sites"
        ),
        "120 true, 12 true, 85 true, null false, 20 true, 4 true"
    );
}

/// Features whose box leaves [-180,180]×[-90,90] are deleted and counted; the box is the rest's.
#[test]
fn out_of_range_features_are_deleted_and_counted() {
    let pg = TestPostgres::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "range.geojson",
        br#"{"type":"FeatureCollection","features":[
{"type":"Feature","properties":{"n":"in"},"geometry":{"type":"Point","coordinates":[10,20]}},
{"type":"Feature","properties":{"n":"in too"},"geometry":{"type":"Point","coordinates":[-30,-40]}},
{"type":"Feature","properties":{"n":"east"},"geometry":{"type":"Point","coordinates":[200,10]}},
{"type":"Feature","properties":{"n":"south"},"geometry":{"type":"LineString","coordinates":[[0,0],[1,-95]]}}]}"#,
    );
    let report = run_import(&pg, &file, "t_range");
    assert!(report.ok, "{report:#?}");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let meta = runtime.block_on(async {
        let client = db::connect(&gis_db(&pg)).await.expect("connect");
        let fields = metadata::fields(&client, "t_range").await.expect("fields");
        let loaded = staging::inspect(&client, "t_range", true)
            .await
            .expect("inspect");
        assert_eq!(loaded.rows, 4);
        assert!(!loaded.extent.as_ref().expect("extent").in_range());
        metadata::collect(&client, "t_range", fields, loaded.extent)
            .await
            .expect("metadata")
    });
    assert_eq!(meta.invalid_deleted, 2);
    assert_eq!(meta.bounding_box, "BOX(-30 -40,10 20)");
    assert_eq!(
        hdx_jobs::geo::report::success_message(meta.invalid_deleted),
        "Import successful. But 2 invalid features were deleted"
    );
}

/// A KML with several folders is several GDAL layers: all of them land in the one table (the
/// old ogr2ogr call kept only the last folder), points and polygons side by side.
#[test]
fn every_layer_of_a_multi_layer_file_is_imported() {
    let pg = TestPostgres::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let kml = write(
        dir.path(),
        "folders.kml",
        br#"<?xml version="1.0" encoding="UTF-8"?>
<kml xmlns="http://www.opengis.net/kml/2.2"><Document>
<Folder><name>points</name>
<Placemark><name>a1</name><Point><coordinates>1,1</coordinates></Point></Placemark>
<Placemark><name>a2</name><Point><coordinates>2,2</coordinates></Point></Placemark>
</Folder>
<Folder><name>areas</name>
<Placemark><name>b1</name><description>an area</description><Polygon><outerBoundaryIs><LinearRing>
<coordinates>4,4 5,4 5,5 4,4</coordinates></LinearRing></outerBoundaryIs></Polygon></Placemark>
</Folder>
</Document></kml>"#,
    );
    let report = run_import(&pg, &kml, "t_folders");
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.source_features, Some(3));
    let rows: Vec<(String, String)> = pg
        .client()
        .query(
            "SELECT name, ST_GeometryType(wkb_geometry) FROM t_folders ORDER BY name",
            &[],
        )
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("a1".to_string(), "ST_Point".to_string()),
            ("a2".into(), "ST_Point".into()),
            ("b1".into(), "ST_Polygon".into())
        ]
    );
}

#[test]
fn broken_files_fail_instead_of_importing_half() {
    let pg = TestPostgres::new();
    let dir = tempfile::tempdir().expect("tempdir");

    // A truncated shapefile (the sample districts, cut in the middle of the second polygon):
    // GDAL returns a dataset, but reported read errors.
    let truncated = testkit::geo::shapefile(
        &testkit::sample("geo/districts.geojson"),
        dir.path(),
        "truncated",
    );
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&truncated)
        .expect("open shp");
    let full = file.metadata().expect("shp size").len();
    file.set_len(full / 2).expect("truncate");
    let report = run_import(&pg, &truncated, "t_truncated");
    assert!(!report.ok, "{report:#?}");
    assert!(report.last_messages().contains("ERROR"), "{report:#?}");
    assert!(report.fixes.is_empty());

    for (name, content) in [
        (
            "random.geojson",
            (0..4000u32)
                .map(|i| (i * 7919 % 251) as u8)
                .collect::<Vec<u8>>(),
        ),
        ("empty.geojson", Vec::new()),
        (
            "page.geojson",
            b"<html><body><h1>502 Bad Gateway</h1></body></html>".to_vec(),
        ),
        (
            "random.shp",
            (0..4000u32).map(|i| (i * 31 % 253) as u8).collect(),
        ),
    ] {
        let path = write(dir.path(), name, &content);
        let report = run_import(&pg, &path, "t_broken");
        assert!(!report.ok, "{name}: {report:#?}");
        assert_eq!(report.attempts.len(), 1, "{name}: no rule applies");
    }
    let leftovers: i64 = pg
        .client()
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 't_broken'",
            &[],
        )
        .expect("count")
        .get(0);
    assert_eq!(leftovers, 0, "nothing was created for unreadable files");
}

#[test]
fn staging_tables_swap_in_with_the_layer_names_and_old_ones_are_swept() {
    let pg = TestPostgres::new();
    let geojson = testkit::sample("geo/districts.geojson");
    let config = gis_db(&pg);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut client = runtime.block_on(db::connect(&config)).expect("connect");

    for round in 0..2 {
        let stage = staging::staging_name();
        let report = run_import(&pg, &geojson, &stage);
        assert!(report.ok, "round {round}: {report:#?}");
        runtime.block_on(async {
            let fields = metadata::fields(&client, &stage).await.expect("fields");
            let loaded = staging::inspect(&client, &stage, true)
                .await
                .expect("inspect");
            assert_eq!((loaded.rows, loaded.with_geometry), (4, Some(4)));
            let meta = metadata::collect(&client, &stage, fields, loaded.extent)
                .await
                .expect("metadata");
            assert_eq!(meta.bounding_box, DISTRICTS_BOX);
            assert_eq!(field_pairs(&meta.layer_fields), DISTRICTS_FIELDS);
            staging::index_and_analyze(&client, &stage, true)
                .await
                .expect("index");
            staging::swap(&mut client, &stage, "pre_layer_1")
                .await
                .expect("swap");
        });
    }
    let mut names: Vec<String> = pg
        .client()
        .query(
            "SELECT indexname::text FROM pg_indexes WHERE tablename = 'pre_layer_1' \
             UNION ALL SELECT relname::text FROM pg_class WHERE relkind = 'S' \
             UNION ALL SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_name LIKE 'hdx_stage%'",
            &[],
        )
        .expect("names")
        .iter()
        .map(|r| r.get(0))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "pre_layer_1_ogc_fid_seq",
            "pre_layer_1_pkey",
            "pre_layer_1_wkb_geometry_geom_idx"
        ]
    );

    // A staging table left by a killed worker long ago goes; a fresh one stays.
    let old = format!("{}{}_deadbeef", staging::STAGING_PREFIX, 1_000_000_000);
    let fresh = staging::staging_name();
    pg.client()
        .batch_execute(&format!(
            "CREATE TABLE public.{old} (x int); CREATE TABLE public.{fresh} (x int);"
        ))
        .expect("create");
    let swept = runtime.block_on(staging::sweep(&client)).expect("sweep");
    assert_eq!(swept, 1);
    let left: Vec<String> = pg
        .client()
        .query(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_name LIKE 'hdx_stage%'",
            &[],
        )
        .expect("list")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, vec![fresh]);
}
