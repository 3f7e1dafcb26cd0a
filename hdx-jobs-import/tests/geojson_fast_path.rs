//! The native GeoJSON import against GDAL, table for table: each file is imported twice, once
//! by `hdx_jobs_import::import` (the native reader when it takes the file) and once by
//! `hdx_jobs_import::import_with_gdal` (GDAL forced), and the two tables must be the same:
//! columns with their types in order, the `geometry_columns` entry, constraints, indexes and
//! column defaults, the sequence, and every row's values as text with the geometry as
//! `ST_AsEWKB`, in `ogc_fid` order. Each file also says which path it must take: the common
//! files (the samples, the shared test.geojson, the benchmark's files) must be imported
//! natively, so that a native reader that always declines fails here; files with what the
//! native reader does not reproduce must be declined (and then GDAL's table is what they get).

mod common;

use std::path::{Path, PathBuf};

use common::request;

use hdx_jobs::geo::import::{Fix, ImportReport, NativeGeojson};
use testkit::TestPostgres;

#[path = "../../benches/common/geojson_files.rs"]
mod geojson_files;

/// Which path a file must take.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// The native reader imports it.
    Native,
    /// The native reader declines it, with a reason containing this text.
    Declined(&'static str),
}

/// Everything the pipeline (and anyone) can see of a staging table, with the table's own name
/// replaced by `T` in the names of its constraints, indexes, sequence and defaults.
#[derive(Debug, PartialEq)]
struct TableDump {
    columns: Vec<(String, String, Option<String>)>,
    geometry_column: Vec<(String, i32, i32, String)>,
    constraints: Vec<(String, String)>,
    indexes: Vec<String>,
    sequence_last_value: Option<i64>,
    rows: Vec<Vec<Option<String>>>,
}

fn dump(pg: &TestPostgres, table: &str) -> TableDump {
    let mut client = pg.client();
    let qualified = format!("public.{table}");
    let anonymous = |text: String| text.replace(table, "T");
    let columns: Vec<(String, String, Option<String>)> = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), \
                    pg_get_expr(d.adbin, d.adrelid) \
             FROM pg_attribute a LEFT JOIN pg_attrdef d \
               ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
             WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&qualified],
        )
        .expect("columns")
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get::<_, Option<String>>(2).map(anonymous),
            )
        })
        .collect();
    let geometry_column = client
        .query(
            "SELECT f_geometry_column::text, coord_dimension, srid, type::text \
             FROM geometry_columns WHERE f_table_schema = 'public' AND f_table_name = $1",
            &[&table],
        )
        .expect("geometry_columns")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let constraints = client
        .query(
            "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid = $1::text::regclass ORDER BY conname",
            &[&qualified],
        )
        .expect("constraints")
        .iter()
        .map(|r| (anonymous(r.get(0)), r.get(1)))
        .collect();
    let indexes = client
        .query(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = $1 \
             ORDER BY indexname",
            &[&table],
        )
        .expect("indexes")
        .iter()
        .map(|r| anonymous(r.get(0)))
        .collect();
    let sequence_last_value = client
        .query_one(
            "SELECT pg_sequence_last_value(pg_get_serial_sequence($1, 'ogc_fid')::regclass)",
            &[&qualified],
        )
        .expect("sequence")
        .get(0);
    let values: Vec<String> = columns
        .iter()
        .map(|(name, kind, _)| {
            let quoted = format!("\"{}\"", name.replace('"', "\"\""));
            if kind.starts_with("geometry") {
                format!("encode(ST_AsEWKB({quoted}), 'hex')")
            } else {
                format!("{quoted}::text")
            }
        })
        .collect();
    let rows = client
        .query(
            &format!(
                "SELECT {} FROM {qualified} ORDER BY ogc_fid",
                values.join(", ")
            ),
            &[],
        )
        .expect("rows")
        .iter()
        .map(|r| (0..r.len()).map(|i| r.get(i)).collect())
        .collect();
    TableDump {
        columns,
        geometry_column,
        constraints,
        indexes,
        sequence_last_value,
        rows,
    }
}

/// Imports `file` both ways (tables `n_<name>` and `g_<name>`), checks the path taken and
/// that the tables are the same; returns the native-first report.
fn compare(pg: &TestPostgres, name: &str, file: &Path, expect: Expect) -> ImportReport {
    let native_table = format!("n_{name}");
    let gdal_table = format!("g_{name}");
    let mut fractions = Vec::new();
    let native = hdx_jobs_import::import(&request(pg, file, &native_table), file, &mut |f| {
        fractions.push(f)
    });
    let gdal =
        hdx_jobs_import::import_with_gdal(&request(pg, file, &gdal_table), file, &mut |_| {});
    match (expect, &native.native_geojson) {
        (Expect::Native, NativeGeojson::Imported) => {
            assert!(native.ok);
            assert!(
                fractions.last().is_some_and(|f| *f >= 0.99),
                "{name}: progress reaches the end: {fractions:?}"
            );
            assert!(
                fractions.windows(2).all(|w| w[0] <= w[1]),
                "{name}: progress only grows: {fractions:?}"
            );
        }
        (Expect::Declined(why), NativeGeojson::Declined { reason }) => assert!(
            reason.contains(why),
            "{name}: declined for {reason:?}, expected a reason containing {why:?}"
        ),
        (expect, got) => panic!("{name}: expected {expect:?}, got {got:?}"),
    }
    assert_eq!(gdal.native_geojson, NativeGeojson::NotTried);
    assert_eq!(native.ok, gdal.ok, "{name}: both imports succeed or fail");
    if !gdal.ok {
        return native;
    }
    assert_eq!(native.fixes, gdal.fixes, "{name}: the same repair rules");
    if let (Some(a), Some(b)) = (native.source_features, gdal.source_features) {
        assert_eq!(a, b, "{name}: source_features");
    }
    let (ours, theirs) = (dump(pg, &native_table), dump(pg, &gdal_table));
    assert_eq!(ours.columns, theirs.columns, "{name}: columns");
    assert_eq!(
        ours.geometry_column, theirs.geometry_column,
        "{name}: geometry_columns"
    );
    assert_eq!(ours.constraints, theirs.constraints, "{name}: constraints");
    assert_eq!(ours.indexes, theirs.indexes, "{name}: indexes");
    assert_eq!(
        ours.sequence_last_value, theirs.sequence_last_value,
        "{name}: sequence"
    );
    assert_eq!(ours.rows.len(), theirs.rows.len(), "{name}: row count");
    for (index, (a, b)) in ours.rows.iter().zip(&theirs.rows).enumerate() {
        assert_eq!(a, b, "{name}: row {} (native, GDAL)", index + 1);
    }
    native
}

fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write test file");
    path
}

#[test]
#[cfg_attr(
    not(shared_fixtures),
    ignore = "needs ../shared/fixtures (the old service's known results)"
)]
fn the_shared_test_geojson_is_imported_natively_as_gdal_does() {
    let pg = TestPostgres::new();
    let file = testkit::require_shared_fixture("geofiles/test.geojson");
    compare(&pg, "shared_test", &file, Expect::Native);
}

#[test]
fn the_geojson_samples_are_imported_natively_as_gdal_does() {
    let pg = TestPostgres::new();
    let dir = testkit::workspace_root().join("samples/geo");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("samples/geo") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "geojson") {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("utf-8 name")
                .to_ascii_lowercase();
            compare(&pg, &stem, &path, Expect::Native);
            seen += 1;
        }
    }
    assert!(seen >= 3, "the samples are there");
}

#[test]
fn the_benchmark_files_are_imported_natively_as_gdal_does() {
    let pg = TestPostgres::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let points = dir.path().join("points.geojson");
    geojson_files::write_points(&points, 3000);
    let report = compare(&pg, "bench_points", &points, Expect::Native);
    assert_eq!(report.source_features, Some(3000));
    let polygons = dir.path().join("polygons.geojson");
    geojson_files::write_polygons(&polygons, 300, 50);
    compare(&pg, "bench_polygons", &polygons, Expect::Native);
}

/// A feature with these properties (JSON object members) and geometry (JSON).
fn feature(properties: &str, geometry: &str) -> String {
    format!(r#"{{"type":"Feature","properties":{{{properties}}},"geometry":{geometry}}}"#)
}

/// A FeatureCollection of these features.
fn collection(features: &[String]) -> String {
    format!(
        r#"{{"type":"FeatureCollection","features":[{}]}}"#,
        features.join(",\n")
    )
}

const POINT: &str = r#"{"type":"Point","coordinates":[1.5,2.25]}"#;

/// The edge cases: (name, file content, expected path).
fn edge_cases() -> Vec<(&'static str, String, Expect)> {
    let square = "[[0,0],[10,0],[10,10],[0,10],[0,0]]";
    let hole = "[[2,2],[2,3],[3,3],[3,2],[2,2]]";
    let point = |x: &str, y: &str| format!(r#"{{"type":"Point","coordinates":[{x},{y}]}}"#);
    let with_id = |id: &str, props: &str| {
        format!(r#"{{"type":"Feature","id":{id},"properties":{{{props}}},"geometry":{POINT}}}"#)
    };
    let with_crs = |crs: &str| {
        format!(
            r#"{{"type":"FeatureCollection","crs":{{"type":"name","properties":{{"name":"{crs}"}}}},"features":[{}]}}"#,
            feature(r#""a":1"#, POINT)
        )
    };
    vec![
        (
            "mixed_geometries",
            collection(&[
                feature(r#""n":"p""#, POINT),
                feature(
                    r#""n":"l""#,
                    r#"{"type":"LineString","coordinates":[[0,0],[1,1]]}"#,
                ),
                feature(
                    r#""n":"a""#,
                    &format!(r#"{{"type":"Polygon","coordinates":[{square}]}}"#),
                ),
                feature(
                    r#""n":"m""#,
                    r#"{"type":"MultiPoint","coordinates":[[0,0],[1,1]]}"#,
                ),
            ]),
            Expect::Native,
        ),
        (
            "null_geometries",
            collection(&[
                feature(r#""n":1"#, "null"),
                feature(r#""n":2"#, POINT),
                feature(r#""n":3"#, "null"),
                r#"{"type":"Feature","properties":{"n":4}}"#.to_string(),
            ]),
            Expect::Native,
        ),
        (
            "only_null_geometries",
            collection(&[feature(r#""n":1"#, "null"), feature(r#""n":2"#, "null")]),
            Expect::Native,
        ),
        (
            "empty_geometry",
            collection(&[
                feature(r#""n":1"#, r#"{"type":"Point","coordinates":[]}"#),
                feature(r#""n":2"#, POINT),
            ]),
            Expect::Declined("empty"),
        ),
        (
            "empty_multipolygon",
            collection(&[feature(
                r#""n":1"#,
                r#"{"type":"MultiPolygon","coordinates":[]}"#,
            )]),
            Expect::Declined("empty"),
        ),
        (
            "nested_object",
            collection(&[feature(r#""n":{"a":1}"#, POINT)]),
            Expect::Declined("nested object"),
        ),
        (
            "nested_array",
            collection(&[feature(r#""n":[1,2]"#, POINT)]),
            Expect::Declined("array"),
        ),
        (
            "big_integers",
            collection(&[
                feature(r#""a":1,"b":3000000000,"c":-2147483648,"d":1"#, POINT),
                feature(
                    r#""a":2147483648,"b":9223372036854775807,"c":2147483647,"d":2147483647"#,
                    POINT,
                ),
                feature(r#""a":1,"b":-9223372036854775808,"c":0,"d":-5"#, POINT),
            ]),
            Expect::Native,
        ),
        (
            "integers_beyond_64_bits",
            collection(&[feature(r#""a":9223372036854775808"#, POINT)]),
            Expect::Declined("64"),
        ),
        (
            "integer_literal_beyond_u64",
            collection(&[feature(r#""a":100000000000000000000"#, POINT)]),
            Expect::Declined("64"),
        ),
        (
            "numbers_like_dates",
            collection(&[
                feature(r#""a":20240102,"b":2024.0102,"c":"20240102""#, POINT),
                feature(r#""a":19991231,"b":1999.1231,"c":"19991231""#, POINT),
            ]),
            Expect::Native,
        ),
        (
            "plain_dates",
            collection(&[
                feature(
                    r#""d":"2024-01-02","e":"2024-02-29","f":"1999-12-31""#,
                    POINT,
                ),
                feature(r#""d":"1900-03-01","e":null,"f":"not a date""#, POINT),
                feature(r#""d":null,"e":"0001-01-01","f":"2000-01-01""#, POINT),
            ]),
            Expect::Native,
        ),
        (
            "short_dates",
            collection(&[feature(r#""d":"2024-1-2""#, POINT)]),
            Expect::Declined("date"),
        ),
        (
            "slashed_dates",
            collection(&[feature(r#""d":"2024/01/02""#, POINT)]),
            Expect::Declined("date"),
        ),
        (
            "date_times",
            collection(&[feature(r#""d":"2024-01-02T10:11:12Z""#, POINT)]),
            Expect::Declined("date"),
        ),
        (
            "times",
            collection(&[feature(r#""t":"10:11:12""#, POINT)]),
            Expect::Declined("date"),
        ),
        (
            "iso_times",
            collection(&[feature(r#""t":"T10:11""#, POINT)]),
            Expect::Declined("date"),
        ),
        (
            "age_groups",
            collection(&[
                feature(r#""g":"0-4""#, POINT),
                feature(r#""g":"5-9""#, POINT),
            ]),
            Expect::Declined("date"),
        ),
        (
            "impossible_date",
            collection(&[feature(r#""d":"2023-02-29""#, POINT)]),
            Expect::Declined("date"),
        ),
        (
            "unicode_values",
            collection(&[
                feature(
                    r#""name":"Hôpital général d'Équateur","x":"日本語 🌍""#,
                    POINT,
                ),
                feature(
                    r#""name":"\u00e9\u4e2d\ud83c\udf0d","x":"tab\there \"q\" \\ /""#,
                    POINT,
                ),
                feature(r#""name":"line\nbreak","x":"""#, POINT),
            ]),
            Expect::Native,
        ),
        (
            "unicode_names",
            collection(&[feature(r#""Ünï":1"#, POINT)]),
            Expect::Declined("property name"),
        ),
        (
            "duplicate_keys",
            collection(&[feature(r#""a":1,"b":2,"a":3"#, POINT)]),
            Expect::Declined("duplicate"),
        ),
        (
            "colliding_names",
            collection(&[feature(r#""Name":1,"name":2"#, POINT)]),
            Expect::Declined("collides"),
        ),
        (
            "empty_collection",
            r#"{"type":"FeatureCollection","features":[]}"#.to_string(),
            Expect::Native,
        ),
        (
            "three_d",
            collection(&[feature(
                r#""a":1"#,
                r#"{"type":"Point","coordinates":[1,2,3]}"#,
            )]),
            Expect::Declined("3D"),
        ),
        (
            "holes",
            collection(&[
                feature(
                    r#""a":1"#,
                    &format!(r#"{{"type":"Polygon","coordinates":[{square},{hole}]}}"#),
                ),
                feature(
                    r#""a":2"#,
                    &format!(r#"{{"type":"Polygon","coordinates":[{square}]}}"#),
                ),
            ]),
            Expect::Native,
        ),
        (
            "multipolygons_with_holes",
            collection(&[feature(
                r#""a":1"#,
                &format!(
                    r#"{{"type":"MultiPolygon","coordinates":[[{square},{hole}],[[[20,20],[21,20],[21,21],[20,20]]]]}}"#
                ),
            )]),
            Expect::Native,
        ),
        (
            "unclosed_ring",
            collection(&[feature(
                r#""a":1"#,
                r#"{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,1]]]}"#,
            )]),
            Expect::Declined("close"),
        ),
        (
            "antimeridian",
            collection(&[
                feature(r#""a":1"#, &point("180", "0")),
                feature(r#""a":2"#, &point("-180", "-90")),
                feature(r#""a":3"#, &point("179.9999999999", "89.99999999")),
                feature(r#""a":4"#, &point("-179.99999999999997", "90")),
            ]),
            Expect::Native,
        ),
        (
            "antimeridian_lines",
            collection(&[
                feature(
                    r#""a":1"#,
                    r#"{"type":"LineString","coordinates":[[179,10],[-179,11]]}"#,
                ),
                feature(
                    r#""a":2"#,
                    r#"{"type":"LineString","coordinates":[[170,10],[190,11]]}"#,
                ),
            ]),
            Expect::Native,
        ),
        (
            "odd_names",
            collection(&[feature(
                r#""Name":"a","POP-2020":1,"it's":2,"a b":3,"x.y":4,"N#":5,"_u":6,"9lives":7,"SELECT":8"#,
                POINT,
            )]),
            Expect::Native,
        ),
        (
            "missing_properties",
            collection(&[
                feature(r#""a":1,"b":"x","c":1.5"#, POINT),
                feature(r#""a":2,"c":2.5"#, POINT),
                feature(r#""b":"y""#, POINT),
                feature("", POINT),
                feature(r#""a":3,"b":"z","c":3.5,"d":true"#, POINT),
                feature(r#""d":false"#, POINT),
            ]),
            Expect::Native,
        ),
        (
            "properties_null_or_absent",
            format!(
                r#"{{"type":"FeatureCollection","features":[{},{{"type":"Feature","properties":null,"geometry":{POINT}}},{{"type":"Feature","geometry":{POINT}}}]}}"#,
                feature(r#""a":1"#, POINT)
            ),
            Expect::Native,
        ),
        (
            "reordered_properties",
            collection(&[
                feature(r#""a":1,"c":1"#, POINT),
                feature(r#""a":1,"b":1,"c":1"#, POINT),
            ]),
            Expect::Declined("properties"),
        ),
        (
            "long_reals",
            collection(&[
                feature(
                    r#""r":0.30000000000000004,"s":3.141592653589793,"t":1.0000000000000002"#,
                    POINT,
                ),
                feature(
                    r#""r":123456.78901234567,"s":9007199254740993.0,"t":2.5e-300"#,
                    POINT,
                ),
                feature(r#""r":1e18,"s":1e15,"t":1e16"#, POINT),
                feature(r#""r":12,"s":-1.5e-7,"t":0.1"#, POINT),
                feature(r#""r":9.2e18,"s":5e-324,"t":123456789012345678"#, POINT),
            ]),
            Expect::Native,
        ),
        (
            // serde_json cannot tell 1e21 from an integer literal json-c would clamp.
            "huge_reals",
            collection(&[feature(r#""r":1e21"#, POINT)]),
            Expect::Declined("64"),
        ),
        (
            "long_coordinates",
            collection(&[
                feature(r#""a":1"#, &point("0.30000000000000004", "-0.1")),
                feature(r#""a":2"#, &point("12.345678901234567", "1e-10")),
                feature(r#""a":3"#, &point("5e-324", "123456789012345678")),
            ]),
            Expect::Native,
        ),
        (
            "negative_zero",
            collection(&[feature(r#""a":-0.0"#, POINT)]),
            Expect::Declined("zero"),
        ),
        (
            "booleans",
            collection(&[
                feature(r#""b":true,"c":null"#, POINT),
                feature(r#""b":false,"c":true"#, POINT),
            ]),
            Expect::Native,
        ),
        (
            "booleans_and_integers",
            collection(&[feature(r#""b":true"#, POINT), feature(r#""b":1"#, POINT)]),
            Expect::Declined("mixing"),
        ),
        (
            "strings_and_numbers",
            collection(&[feature(r#""s":"x""#, POINT), feature(r#""s":1"#, POINT)]),
            Expect::Declined("mixing"),
        ),
        (
            "integer_ids",
            collection(&[
                with_id("10", r#""a":1"#),
                with_id("3", r#""a":2"#),
                with_id("3", r#""a":3"#),
            ]),
            Expect::Native,
        ),
        (
            "string_ids",
            collection(&[
                with_id(r#""BEL""#, r#""a":1"#),
                with_id(r#""x""#, r#""a":2"#),
            ]),
            Expect::Native,
        ),
        (
            "mixed_ids",
            collection(&[with_id("1", r#""a":1"#), with_id(r#""x""#, r#""a":2"#)]),
            Expect::Declined("id"),
        ),
        (
            "big_ids",
            collection(&[with_id("3000000000", r#""a":1"#)]),
            Expect::Declined("id"),
        ),
        (
            "id_and_id_property",
            collection(&[with_id(r#""x""#, r#""ID":1"#)]),
            Expect::Declined("collides"),
        ),
        (
            "crs84",
            with_crs("urn:ogc:def:crs:OGC:1.3:CRS84"),
            Expect::Native,
        ),
        ("crs_epsg_4326", with_crs("EPSG:4326"), Expect::Native),
        (
            "crs_urn_4326",
            with_crs("urn:ogc:def:crs:EPSG::4326"),
            Expect::Native,
        ),
        ("crs_3857", with_crs("EPSG:3857"), Expect::Declined("crs")),
        (
            "geometry_type_last",
            collection(&[feature(
                r#""a":1"#,
                r#"{"coordinates":[[0,0],[1,1]],"type":"LineString"}"#,
            )]),
            Expect::Native,
        ),
        (
            "geometry_collection",
            collection(&[feature(
                r#""a":1"#,
                &format!(r#"{{"type":"GeometryCollection","geometries":[{POINT}]}}"#),
            )]),
            Expect::Declined("GeometryCollection"),
        ),
        (
            "foreign_members",
            collection(&[format!(
                r#"{{"type":"Feature","title":"x","properties":{{"a":1}},"geometry":{POINT}}}"#
            )]),
            Expect::Declined("title"),
        ),
        (
            "single_feature",
            feature(r#""a":1"#, POINT),
            Expect::Declined("FeatureCollection"),
        ),
        (
            "topojson",
            r#"{"type":"Topology","objects":{},"arcs":[]}"#.to_string(),
            Expect::Declined("Topology"),
        ),
        (
            "all_null_field",
            collection(&[
                feature(r#""a":null,"b":1"#, POINT),
                feature(r#""a":null,"b":2"#, POINT),
            ]),
            Expect::Native,
        ),
    ]
}

#[test]
fn edge_cases_give_gdals_table_natively_or_fall_back_to_gdal() {
    let pg = TestPostgres::new();
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, content, expect) in edge_cases() {
        let file = write(dir.path(), &format!("{name}.geojson"), content.as_bytes());
        compare(&pg, name, &file, expect);
    }
}

#[test]
fn latin1_files_fall_back_to_gdal_and_its_repair_rule() {
    let pg = TestPostgres::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut content =
        br#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"name":"H"#
            .to_vec();
    content.push(0xF4); // ô in latin1: not UTF-8
    content.extend_from_slice(br#"pital"},"geometry":{"type":"Point","coordinates":[1,2]}}]}"#);
    let file = write(dir.path(), "latin1.geojson", &content);
    let report = compare(&pg, "latin1", &file, Expect::Declined("feature 1:"));
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.fixes, vec![Fix::Latin1]);
}
