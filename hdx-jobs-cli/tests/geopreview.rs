//! Geopreview end to end, with the real `hdx-jobs` binary (the worker runs each import in a
//! child process of itself), real Redis, PostGIS, GDAL and the real Python `rq` enqueueing jobs
//! the way the old API did (pickle); local HTTP servers serve the files and play CKAN, and the
//! tests assert the exact JSON CKAN receives. Also the CLI (`hdx-jobs geopreview ...`) and the
//! HTTP API's `GET /api/add-layer/...` on a real server with a real worker.
//!
//! The files are the project's own samples (`samples/geo/`, with the known results of
//! samples/README.md); shapefiles and KMZ are made from them here. Where a machine has the
//! shared fixtures (the old service's test files, with its known results: docs/hdx-contract.md
//! §3.9), tests on them add those results.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::WorkerProcess;
use serde_json::{json, Value};
use testkit::geo::sample_results::*;
use testkit::http::{FakeServer, Recorded, Reply};
use testkit::{TestPostgres, TestRedis};

const CREATE_PREVIEW: &str = "importapi.tasks.create_preview.create_preview_task";
const REPORT_PATH: &str = "/api/action/hdx_resource_update_metadata";
const API_KEY: &str = "gis-key-123";

/// The old service's known boxes of the shared fixtures (docs/hdx-contract.md §3.9; field
/// counts are in the tests).
const GEOJSON_BOX: &str = "BOX(2.513573 49.529484,6.156658 51.475024)";
const KML_BOX: &str =
    "BOX(-48.84245807546525 61.04985867307904,-42.29294689786775 66.20535503717753)";
const SHP_BOX: &str = "BOX(34.00334232 -4.408103235999988,41.814834959999985 4.475610393000011)";
const SHP2_BOX: &str =
    "BOX(-158.09007390217414 21.277505243918654,-67.78117667160467 62.145207116458835)";

/// `layer_fields` as CKAN gets them.
fn fields(pairs: &[(&str, &str)]) -> Vec<Value> {
    pairs
        .iter()
        .map(|(name, kind)| json!({"field_name": name, "data_type": kind}))
        .collect()
}

/// Everything a geopreview job talks to.
struct Geo {
    redis: TestRedis,
    pg: TestPostgres,
    /// Serves the GIS files; it is the "CKAN host" of the jobs (gets the API key).
    files: FakeServer,
    /// Another host, for redirects.
    elsewhere: FakeServer,
    /// Plays CKAN's action API.
    ckan: FakeServer,
    /// Holds `gis` (HDX_GIS_TMP) and the test's own files.
    root: tempfile::TempDir,
}

impl Geo {
    fn new() -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join("gis")).expect("gis tmp");
        std::fs::create_dir(root.path().join("made")).expect("made");
        Geo {
            redis: TestRedis::new(),
            pg: TestPostgres::new(),
            files: FakeServer::start(),
            elsewhere: FakeServer::start(),
            ckan: FakeServer::start(),
            root,
        }
    }

    /// HDX_GIS_TMP.
    fn tmp(&self) -> PathBuf {
        self.root.path().join("gis")
    }

    /// Where tests make their files.
    fn made(&self, name: &str) -> PathBuf {
        self.root.path().join("made").join(name)
    }

    fn env(&self) -> Vec<(String, String)> {
        [
            ("HDX_REDIS_URL", self.redis.url().to_string()),
            ("HDX_GISDB_URL", self.pg.conn_string()),
            ("HDX_GIS_API_KEY", API_KEY.to_string()),
            (
                "CKAN_API_BASE_URL",
                format!("{}/api/action", self.ckan.url()),
            ),
            ("HDX_GIS_TMP", self.tmp().display().to_string()),
            ("HDX_DOMAIN", format!("127.0.0.1:{}", self.files.port())),
            ("HDX_USER_AGENT", "HDX-TEST".to_string()),
            ("HDX_CKAN_ALLOW_HTTP", "true".to_string()),
            ("MAX_EXTRACTED_SIZE_MB", "10".to_string()),
            ("MAX_ARCHIVE_ENTRIES", "50".to_string()),
            ("RQ_WORKER_TIMEOUT", "120".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// `hdx-jobs` with the test's environment.
    fn command(&self) -> Command {
        let mut cmd = common::hdx_jobs(&self.redis);
        cmd.envs(self.env());
        cmd
    }

    /// `hdx-jobs work geo_q` with the test's environment plus `extra`.
    fn worker(&self, extra: &[(&str, &str)]) -> WorkerProcess {
        let log = self.root.path().join(format!(
            "worker-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let file = std::fs::File::create(&log).expect("log");
        let mut cmd = self.command();
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd
            .env("LOG_LEVEL", "info")
            .args(["work", "geo_q"])
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start the worker");
        WorkerProcess { child, log }
    }

    /// The argument dict the old API enqueued (and hdx-jobs-server enqueues).
    fn job_dict(&self, resource_id: &str, url: Option<&str>) -> Value {
        json!({
            "dataset_id": "ds-geo",
            "resource_id": resource_id,
            "download_url": url,
            "url_type": "upload",
            "download_chunk_size": 5 * 1024 * 1024,
            "max_file_size_mb": 10 * 1024 * 1024,
            "timeout_sec": 30,
            "ckan_api_base_url": format!("{}/api/action", self.ckan.url()),
            "resource_update_action": "hdx_resource_update_metadata",
            "gis_api_pattern": "http://gisapi/services/tables/{table_name}",
            "table_name_prefix": "pre",
            "tmp_download_directory": self.tmp().display().to_string(),
            "ckan_server_url": format!("127.0.0.1:{}", self.files.port()),
            "verify_ckan_ssl": false,
            "hdx_user_agent": "HDX-TEST",
        })
    }

    /// Enqueues the job with Python rq and its default (pickle) serializer, as the old API did.
    fn enqueue_pickle(&self, dict: &Value, timeout: u32) -> String {
        testkit::rq_peer(
            self.redis.url(),
            &[
                "enqueue",
                "--serializer",
                "pickle",
                "--queue",
                "geo_q",
                "--func",
                CREATE_PREVIEW,
                "--args",
                &json!([dict]).to_string(),
                "--timeout",
                &timeout.to_string(),
            ],
        )
    }

    /// Serves a file at `/<name>` with a Content-Disposition naming it.
    fn serve_file(&self, name: &str, content: Vec<u8>) -> String {
        self.files.reply(
            &format!("/{name}"),
            Reply::bytes(content).header(
                "Content-Disposition",
                &format!("attachment; filename=\"{name}\""),
            ),
        );
        format!("{}/{name}", self.files.url())
    }

    /// The report CKAN got for a resource (waits for it).
    fn report(&self, resource_id: &str) -> Recorded {
        testkit::eventually(
            &format!("the CKAN report for {resource_id}"),
            Duration::from_secs(90),
            || {
                self.ckan
                    .requests_to(REPORT_PATH)
                    .into_iter()
                    .find(|r| r.json()["id"] == resource_id)
            },
        )
    }

    /// The shape_info CKAN got, checked to be written as Python wrote it.
    fn shape_info(&self, resource_id: &str) -> Value {
        let report = self.report(resource_id);
        let body = report.json();
        let text = body["shape_info"].as_str().expect("shape_info is a string");
        let info: Value = serde_json::from_str(text).expect("shape_info is JSON");
        assert_eq!(
            text,
            python_dumps(&info),
            "shape_info is written like json.dumps"
        );
        info
    }

    /// Columns of a table as the old service reported them.
    fn fields_of(&self, table: &str) -> Vec<Value> {
        self.pg
            .client()
            .query(
                "SELECT column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_name = $1 ORDER BY ordinal_position",
                &[&table],
            )
            .expect("columns")
            .iter()
            .map(|r| {
                json!({"field_name": r.get::<_, String>(0), "data_type": r.get::<_, String>(1)})
            })
            .collect()
    }

    /// Imports `source` the old service's way (ogr2ogr without COPY) into `table`; returns its
    /// fields, the reference for ours.
    fn old_fields(&self, source: &str, table: &str, extra: &[&str]) -> Vec<Value> {
        let mut args = vec![
            "--config".to_string(),
            "PG_USE_COPY".into(),
            "NO".into(),
            "-f".into(),
            "PostgreSQL".into(),
            format!("PG:{}", self.pg.conn_string()),
            source.to_string(),
            "-nln".into(),
            table.into(),
            "-overwrite".into(),
            "-lco".into(),
            "OVERWRITE=YES".into(),
            "-fieldTypeToString".into(),
            "Real".into(),
            "-t_srs".into(),
            "EPSG:4326".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let output = Command::new("ogr2ogr")
            .args(&args)
            .output()
            .expect("ogr2ogr");
        testkit::check(&output, "ogr2ogr (old way)");
        self.fields_of(table)
    }

    fn rows(&self, table: &str) -> (i64, Option<String>) {
        let row = self
            .pg
            .client()
            .query_one(
                &format!("SELECT count(*), ST_Extent(wkb_geometry)::text FROM \"{table}\""),
                &[],
            )
            .expect("rows");
        (row.get(0), row.get(1))
    }

    /// Tables whose name starts with `prefix`.
    fn tables(&self, prefix: &str) -> Vec<String> {
        self.pg
            .client()
            .query(
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = 'public' AND starts_with(table_name, $1) ORDER BY 1",
                &[&prefix],
            )
            .expect("tables")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Every file under the test's root except the test's own (`made`, logs).
    fn leftover_files(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        walk(&self.tmp(), &mut found);
        for entry in std::fs::read_dir(self.root.path()).expect("root").flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != "gis" && name != "made" && !name.ends_with(".log") {
                found.push(entry.path());
            }
        }
        found
    }
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            found.push(entry.path());
            if entry.path().is_dir() {
                walk(&entry.path(), found);
            }
        }
    }
}

/// Python's `json.dumps` of a value: the oracle for the shape_info string.
fn python_dumps(value: &Value) -> String {
    let mut child = Command::new(testkit::python())
        .args([
            "-c",
            "import json,sys; sys.stdout.write(json.dumps(json.loads(sys.stdin.read())))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(value.to_string().as_bytes())
        .expect("write");
    let output = child.wait_with_output().expect("python output");
    testkit::check(&output, "python json.dumps");
    String::from_utf8(output.stdout).expect("utf-8")
}

/// Makes a zip with Python's zipfile: entries are (name, content); `deflate` compresses.
fn python_zip(path: &Path, entries: &[(&str, Vec<u8>)]) {
    let script = "import json,sys,zipfile,base64\n\
                  entries=json.load(sys.stdin)\n\
                  with zipfile.ZipFile(sys.argv[1],'w',zipfile.ZIP_DEFLATED) as z:\n\
                  \x20   for name,data in entries: z.writestr(name, base64.b64decode(data))\n";
    let payload: Vec<Value> = entries
        .iter()
        .map(|(name, data)| json!([name, base64_encode(data)]))
        .collect();
    let mut child = Command::new(testkit::python())
        .arg("-c")
        .arg(script)
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(Value::Array(payload).to_string().as_bytes())
        .expect("write");
    let output = child.wait_with_output().expect("zip");
    testkit::check(&output, "python zipfile");
}

fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run hdx-jobs")
}

fn success_info(layer_id: &str, bbox: &str, fields: &[Value]) -> Value {
    json!({
        "state": "success",
        "message": "Import successful",
        "layer_id": layer_id,
        "error_type": "None",
        "error_class": "None",
        "bounding_box": bbox,
        "layer_fields": fields,
    })
}

fn failure_info(layer_id: &str, class: &str, kind: &str, message: &str) -> Value {
    json!({
        "state": "failure",
        "message": message,
        "layer_id": layer_id,
        "error_type": "None",
        "error_class": class,
        "type": kind,
    })
}

/// A file of the shared fixtures' folder `dir`.
fn fixture_bytes(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).expect("fixture")
}

/// A sample of `samples/geo/`.
fn sample_bytes(name: &str) -> Vec<u8> {
    std::fs::read(testkit::sample(&format!("geo/{name}"))).expect("sample")
}

/// The zipped shapefile `<name>.shp.zip` made from `samples/geo/<name>.geojson`.
fn sample_shapefile_zip(geo: &Geo, name: &str) -> PathBuf {
    testkit::geo::shapefile_zip(
        &testkit::sample(&format!("geo/{name}.geojson")),
        &geo.made("shp"),
        name,
    )
}

/// The KMZ `name` of the KML `kml` (as `doc.kml`), made with `zip`.
fn make_kmz(geo: &Geo, kml: &Path, name: &str) -> PathBuf {
    let dir = geo.made(&format!("{name}-kmz"));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::copy(kml, dir.join("doc.kml")).expect("copy");
    let kmz = geo.made(name);
    let output = Command::new("zip")
        .arg("-q")
        .arg(&kmz)
        .arg("doc.kml")
        .current_dir(&dir)
        .output()
        .expect("zip (installed by scripts/setup.sh)");
    testkit::check(&output, "zip");
    kmz
}

/// A file for the worker and what CKAN must get for it.
struct WorkerCase {
    /// The served file name.
    name: &'static str,
    bytes: Vec<u8>,
    bbox: &'static str,
    /// The `layer_fields` CKAN must get.
    fields: Vec<Value>,
    /// The rows the layer must hold, when known.
    rows: Option<i64>,
}

/// Serves each case's file, enqueues its job (resource `<prefix>-<i>`) as the old API did, for
/// one worker, and checks what CKAN gets: the headers, exactly the success shape_info and body;
/// and the layer in PostGIS: its box (and rows). Returns the layer names.
fn through_the_worker(geo: &Geo, prefix: &str, cases: &[WorkerCase]) -> Vec<String> {
    let _worker = geo.worker(&[]);
    for (i, case) in cases.iter().enumerate() {
        let url = geo.serve_file(case.name, case.bytes.clone());
        geo.enqueue_pickle(&geo.job_dict(&format!("{prefix}-{i}"), Some(&url)), 120);
    }
    let mut layers = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let name = case.name;
        let resource_id = format!("{prefix}-{i}");
        let layer = format!("pre_{prefix}_{i}");
        let report = geo.report(&resource_id);
        assert_eq!(report.header("authorization"), Some(API_KEY), "{name}");
        assert_eq!(report.header("user-agent"), Some("HDX-TEST"), "{name}");
        assert!(report
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json")));
        let info = geo.shape_info(&resource_id);
        assert_eq!(
            info,
            success_info(&layer, case.bbox, &case.fields),
            "{name}"
        );
        assert_eq!(
            report.json(),
            json!({"id": resource_id, "shape_info": python_dumps(&info), "batch_mode": "KEEP_OLD"})
        );
        let (rows, bbox) = geo.rows(&layer);
        assert_eq!(bbox.as_deref(), Some(case.bbox), "{name} in PostGIS");
        if let Some(expected) = case.rows {
            assert_eq!(rows, expected, "{name}: rows in PostGIS");
        }
        layers.push(layer);
    }
    layers
}

/// The field names of a layer.
fn field_names(geo: &Geo, layer: &str) -> Vec<String> {
    geo.fields_of(layer)
        .iter()
        .map(|f| f["field_name"].as_str().unwrap_or("").to_string())
        .collect()
}

/// The samples (GeoJSON polygons and points, a KML of two folders, shapefiles, one of which
/// needs a repair rule, and a KMZ), enqueued as the old API did, give CKAN exactly their known
/// boxes and fields (the same fields as the old ogr2ogr import), and PostGIS their rows; KML and
/// KMZ keep their attributes and both folders, text keeps its accents.
#[test]
fn samples_through_the_worker_reach_ckan_exactly() {
    let geo = Geo::new();
    let kml = testkit::sample("geo/water_points.kml");
    let kmz = make_kmz(&geo, &kml, "water_points.kmz");
    let districts_zip = sample_shapefile_zip(&geo, "districts");
    let rivers_zip = sample_shapefile_zip(&geo, "rivers");
    let sample = |name: &str| {
        testkit::sample(&format!("geo/{name}"))
            .display()
            .to_string()
    };
    let vsizip = |zip: &Path, shp: &str| format!("/vsizip/{}/{shp}", zip.display());
    // What the old service's ogr2ogr call made of the same files: the reference for the types.
    let old = [
        geo.old_fields(&sample("districts.geojson"), "old_districts", &[]),
        geo.old_fields(&sample("health_sites.geojson"), "old_health_sites", &[]),
        geo.old_fields(&sample("water_points.kml"), "old_water_points", &[]),
        geo.old_fields(
            &vsizip(&districts_zip, "districts.shp"),
            "old_districts_shp",
            &[],
        ),
        geo.old_fields(
            &vsizip(&rivers_zip, "rivers.shp"),
            "old_rivers_shp",
            &["-nlt", "MultiLineString"],
        ),
    ];
    let cases = vec![
        WorkerCase {
            name: "districts.geojson",
            bytes: sample_bytes("districts.geojson"),
            bbox: DISTRICTS_BOX,
            fields: fields(DISTRICTS_FIELDS),
            rows: Some(4),
        },
        WorkerCase {
            name: "health_sites.geojson",
            bytes: sample_bytes("health_sites.geojson"),
            bbox: HEALTH_SITES_BOX,
            fields: fields(HEALTH_SITES_FIELDS),
            rows: Some(6),
        },
        WorkerCase {
            name: "water_points.kml",
            bytes: sample_bytes("water_points.kml"),
            bbox: WATER_POINTS_BOX,
            fields: fields(WATER_POINTS_FIELDS),
            rows: Some(4),
        },
        WorkerCase {
            name: "districts.shp.zip",
            bytes: std::fs::read(&districts_zip).expect("zip"),
            bbox: DISTRICTS_BOX,
            fields: fields(DISTRICTS_SHP_FIELDS),
            rows: Some(4),
        },
        WorkerCase {
            name: "rivers.shp.zip",
            bytes: std::fs::read(&rivers_zip).expect("zip"),
            bbox: RIVERS_BOX,
            fields: fields(RIVERS_SHP_FIELDS),
            rows: Some(3),
        },
        WorkerCase {
            name: "water_points.kmz",
            bytes: std::fs::read(&kmz).expect("kmz"),
            bbox: WATER_POINTS_BOX,
            fields: fields(WATER_POINTS_FIELDS),
            rows: Some(4),
        },
    ];
    for (case, old) in cases.iter().zip(&old) {
        assert_eq!(&case.fields, old, "{}: the old import's fields", case.name);
    }
    let layers = through_the_worker(&geo, "sample", &cases);

    // The downloads came from the CKAN host: they carried the key and the user agent.
    let download = &geo.files.requests_to("/districts.geojson")[0];
    assert_eq!(download.header("authorization"), Some(API_KEY));
    assert_eq!(download.header("user-agent"), Some("HDX-TEST"));
    // Text with accents arrives intact, from GeoJSON and from a shapefile.
    for layer in [&layers[0], &layers[3]] {
        let names: Vec<String> = geo
            .pg
            .client()
            .query(&format!("SELECT name FROM {layer} ORDER BY pcode"), &[])
            .expect("names")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            names,
            ["Équateur-Nord", "Kasaï-Lac", "Lomami-Sud", "Mbéli-Forêt"],
            "{layer}"
        );
    }
    // KML attributes survive in both forms, with the features of both folders.
    for layer in [&layers[2], &layers[5]] {
        let names = field_names(&geo, layer);
        for column in ["name", "description", "code", "district", "users"] {
            assert!(names.contains(&column.to_string()), "{layer}: {names:?}");
        }
        let rows: Vec<(String, String, Option<i32>, String)> = geo
            .pg
            .client()
            .query(
                &format!(
                    "SELECT code, district, users, ST_GeometryType(wkb_geometry) \
                     FROM {layer} ORDER BY code"
                ),
                &[],
            )
            .expect("rows")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        let expected = [
            ("WC-001", "Lomami-Sud", 3400, "ST_Polygon"),
            ("WP-001", "Équateur-Nord", 850, "ST_Point"),
            ("WP-002", "Kasaï-Lac", 1200, "ST_Point"),
            ("WP-003", "Mbéli-Forêt", 0, "ST_Point"),
        ]
        .map(|(c, d, u, g)| (c.to_string(), d.to_string(), Some(u), g.to_string()));
        assert_eq!(rows, expected, "{layer}");
    }
    assert!(
        geo.leftover_files().is_empty(),
        "{:?}",
        geo.leftover_files()
    );
    assert!(geo.tables("hdx_stage").is_empty());
}

/// The four shared fixtures (real HDX files) and a KMZ, enqueued as the old API did, give CKAN
/// exactly the old service's boxes and the fields its ogr2ogr import produced; KML and KMZ keep
/// their attributes. Ignored where the machine has no shared fixtures.
#[test]
#[cfg_attr(
    not(shared_fixtures),
    ignore = "needs ../shared/fixtures (the old service's known results)"
)]
fn fixtures_through_the_worker_reach_ckan_exactly() {
    let fixtures = testkit::require_shared_fixture("geofiles");
    let geo = Geo::new();
    let kmz = make_kmz(&geo, &fixtures.join("test.kml"), "test.kmz");
    // (served name, bytes, known box, known field count, fields of the old import)
    type FixtureCase = (&'static str, Vec<u8>, &'static str, usize, Vec<Value>);
    let cases: Vec<FixtureCase> = vec![
        (
            "test.geojson",
            fixture_bytes(&fixtures, "test.geojson"),
            GEOJSON_BOX,
            4,
            geo.old_fields(
                &fixtures.join("test.geojson").display().to_string(),
                "old_geojson",
                &[],
            ),
        ),
        (
            "test.kml",
            fixture_bytes(&fixtures, "test.kml"),
            KML_BOX,
            13,
            geo.old_fields(
                &fixtures.join("test.kml").display().to_string(),
                "old_kml",
                &[],
            ),
        ),
        (
            "test.shp.zip",
            fixture_bytes(&fixtures, "test.shp.zip"),
            SHP_BOX,
            45,
            geo.old_fields(
                &format!(
                    "/vsizip/{}/National_Natural_Disaster_Inventory.shp",
                    fixtures.join("test.shp.zip").display()
                ),
                "old_shp",
                &[],
            ),
        ),
        (
            "test2.shp.zip",
            fixture_bytes(&fixtures, "test2.shp.zip"),
            SHP2_BOX,
            7,
            geo.old_fields(
                &format!(
                    "/vsizip/{}/test2.shp",
                    fixtures.join("test2.shp.zip").display()
                ),
                "old_shp2",
                &["-nlt", "MultiLineString"],
            ),
        ),
        (
            "test.kmz",
            std::fs::read(&kmz).expect("kmz"),
            KML_BOX,
            13,
            geo.fields_of("old_kml"),
        ),
    ];
    let cases: Vec<WorkerCase> = cases
        .into_iter()
        .map(|(name, bytes, bbox, count, fields)| {
            assert_eq!(fields.len(), count, "{name}: the old import's field count");
            WorkerCase {
                name,
                bytes,
                bbox,
                fields,
                rows: None,
            }
        })
        .collect();
    let layers = through_the_worker(&geo, "fixture", &cases);
    // The downloads came from the CKAN host: they carried the key and the user agent.
    let download = &geo.files.requests_to("/test.geojson")[0];
    assert_eq!(download.header("authorization"), Some(API_KEY));
    assert_eq!(download.header("user-agent"), Some("HDX-TEST"));
    // KML attributes survive in both forms.
    for layer in [&layers[1], &layers[4]] {
        let names = field_names(&geo, layer);
        assert!(
            names.contains(&"name".to_string()) && names.contains(&"description".to_string()),
            "{layer}: {names:?}"
        );
    }
    assert!(
        geo.leftover_files().is_empty(),
        "{:?}",
        geo.leftover_files()
    );
    assert!(geo.tables("hdx_stage").is_empty());
}

/// A file that is not a valid layer, for a job that must fail.
struct Case {
    resource_id: &'static str,
    /// The download URL (None: missing).
    url: Option<String>,
    /// Changes to the job dict.
    dict: Value,
    class: &'static str,
    kind: &'static str,
    /// The exact message, or None to only check the class and type.
    message: Option<String>,
}

/// The hostile and broken corpus: each job ends as a failure report with the right type, the
/// worker survives, no file stays in or outside the download folder, and a layer that existed
/// is unchanged after failed re-imports.
#[test]
fn hostile_and_broken_inputs_fail_cleanly_and_the_worker_survives() {
    let geo = Geo::new();
    let mut worker = geo.worker(&[]);

    // A good layer first, to be re-imported badly later.
    let good = geo.serve_file("good.geojson", sample_bytes("districts.geojson"));
    geo.enqueue_pickle(&geo.job_dict("keep", Some(&good)), 60);
    assert_eq!(geo.shape_info("keep")["state"], "success");
    let before = geo.rows("pre_keep");
    assert_eq!(before, (4, Some(DISTRICTS_BOX.to_string())));

    // Archives.
    let traversal = geo.made("traversal.zip");
    python_zip(
        &traversal,
        &[
            ("ok.geojson", sample_bytes("districts.geojson")),
            ("../../evil.geojson", sample_bytes("health_sites.geojson")),
        ],
    );
    let absolute = geo.made("absolute.zip");
    python_zip(
        &absolute,
        &[(
            "/tmp/hdx-evil.geojson",
            sample_bytes("health_sites.geojson"),
        )],
    );
    let bomb = geo.made("bomb.zip");
    python_zip(&bomb, &[("big.geojson", vec![b' '; 40 * 1024 * 1024])]);
    assert!(std::fs::metadata(&bomb).expect("bomb").len() < 200 * 1024);
    let crowded = geo.made("crowded.zip");
    let many: Vec<(String, Vec<u8>)> = (0..60)
        .map(|i| (format!("f{i}.txt"), b"x".to_vec()))
        .collect();
    let many_refs: Vec<(&str, Vec<u8>)> =
        many.iter().map(|(n, d)| (n.as_str(), d.clone())).collect();
    python_zip(&crowded, &many_refs);
    // One entry, but an end record declaring 65,535: refused before the zip is parsed.
    let declares_many = geo.made("declares_many.zip");
    python_zip(
        &declares_many,
        &[("ok.geojson", sample_bytes("districts.geojson"))],
    );
    let mut bytes = std::fs::read(&declares_many).expect("zip");
    let end = bytes
        .windows(4)
        .rposition(|w| w == [0x50, 0x4b, 0x05, 0x06])
        .expect("end record");
    bytes[end + 8..end + 12].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
    std::fs::write(&declares_many, bytes).expect("patch");
    // Two KML folders (two layers, named in GDAL's argv), one named like an option.
    let placemark = |name: &str, x: f64| {
        format!("<Folder><name>{name}</name><Placemark><name>p</name><Point><coordinates>{x},1</coordinates></Point></Placemark></Folder>")
    };
    let dash_kml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><kml xmlns=\"http://www.opengis.net/kml/2.2\"><Document>{}{}</Document></kml>",
        placemark("ok", 1.0),
        placemark("-skipfailures", 2.0)
    );
    // The sample districts as a shapefile cut in the middle of its second polygon, zipped whole.
    let shp = testkit::geo::shapefile(
        &testkit::sample("geo/districts.geojson"),
        &geo.made("unpacked"),
        "districts",
    );
    let full = std::fs::read(&shp).expect("shp");
    std::fs::write(&shp, &full[..full.len() / 2]).expect("truncate");
    let truncated = testkit::geo::zip_shapefile(&shp, &geo.made("truncated.zip"));
    let noise = |n: usize, seed: u32| -> Vec<u8> {
        (0..n as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
            .collect()
    };
    let random_shp = geo.made("random_shp.zip");
    python_zip(
        &random_shp,
        &[
            ("x.shp", noise(3000, 1)),
            ("x.shx", noise(300, 2)),
            ("x.dbf", noise(300, 3)),
        ],
    );

    let serve = |name: &str, path: &Path| geo.serve_file(name, std::fs::read(path).expect("file"));
    let mut cases = vec![
        Case {
            resource_id: "traversal",
            url: Some(serve("traversal.zip", &traversal)),
            dict: json!({}),
            class: "UnsafeArchiveException",
            kind: "unknown",
            message: Some(
                "the archive has an entry outside its folder: \"../../evil.geojson\"".into(),
            ),
        },
        Case {
            resource_id: "absolute",
            url: Some(serve("absolute.zip", &absolute)),
            dict: json!({}),
            class: "UnsafeArchiveException",
            kind: "unknown",
            message: None,
        },
        Case {
            resource_id: "bomb",
            url: Some(serve("bomb.zip", &bomb)),
            dict: json!({}),
            class: "FileTooLargeException",
            kind: "file-too-large",
            message: Some("archive too large when unpacked (more than 10 MB)".into()),
        },
        Case {
            resource_id: "crowded",
            url: Some(serve("crowded.zip", &crowded)),
            dict: json!({}),
            class: "FileTooLargeException",
            kind: "file-too-large",
            message: Some("archive too large: 60 entries (at most 50)".into()),
        },
        Case {
            resource_id: "declares-many",
            url: Some(serve("declares_many.zip", &declares_many)),
            dict: json!({}),
            class: "FileTooLargeException",
            kind: "file-too-large",
            message: Some("archive too large: 65535 entries (at most 50)".into()),
        },
        Case {
            resource_id: "dash-layer",
            url: Some(geo.serve_file("dash.kml", dash_kml.into_bytes())),
            dict: json!({}),
            class: "PushingToPostgisException",
            kind: "pushing-to-postgis-problem",
            message: Some("Problem during ogr2ogr import to postgis".into()),
        },
        Case {
            resource_id: "truncated",
            url: Some(serve("truncated.zip", &truncated)),
            dict: json!({}),
            class: "PushingToPostgisException",
            kind: "pushing-to-postgis-problem",
            message: Some("Problem during ogr2ogr import to postgis".into()),
        },
        Case {
            resource_id: "random-shp",
            url: Some(serve("random_shp.zip", &random_shp)),
            dict: json!({}),
            class: "PushingToPostgisException",
            kind: "pushing-to-postgis-problem",
            message: Some("Problem during ogr2ogr import to postgis".into()),
        },
        Case {
            resource_id: "random-bare-shp",
            url: Some(geo.serve_file("random.shp", noise(3000, 5))),
            dict: json!({}),
            class: "PushingToPostgisException",
            kind: "pushing-to-postgis-problem",
            message: Some("Problem during ogr2ogr import to postgis".into()),
        },
        Case {
            resource_id: "random-geojson",
            url: Some(geo.serve_file("random.geojson", noise(5000, 4))),
            dict: json!({}),
            class: "PushingToPostgisException",
            kind: "pushing-to-postgis-problem",
            message: Some("Problem during ogr2ogr import to postgis".into()),
        },
        Case {
            resource_id: "html",
            url: Some({
                geo.files.reply(
                    "/page.geojson",
                    Reply::bytes(
                        b"<!DOCTYPE html><html><body><h1>Service Unavailable</h1></body></html>"
                            .to_vec(),
                    )
                    .header("Content-Type", "text/html"),
                );
                format!("{}/page.geojson", geo.files.url())
            }),
            dict: json!({}),
            class: "PushingToPostgisException",
            kind: "pushing-to-postgis-problem",
            message: Some("Problem during ogr2ogr import to postgis".into()),
        },
        Case {
            resource_id: "empty",
            url: Some(geo.serve_file("empty.geojson", Vec::new())),
            dict: json!({}),
            class: "PushingToPostgisException",
            kind: "pushing-to-postgis-problem",
            message: Some("Problem during ogr2ogr import to postgis".into()),
        },
        Case {
            resource_id: "zero",
            url: Some(geo.serve_file(
                "zero.geojson",
                br#"{"type":"FeatureCollection","features":[]}"#.to_vec(),
            )),
            dict: json!({}),
            class: "FetchLayerMetadataException",
            kind: "fetch-bounding-box-problem",
            message: Some("Bounding box was not retrieved ".into()),
        },
        Case {
            resource_id: "missing",
            url: Some({
                geo.files.reply("/missing.geojson", Reply::status(404));
                format!("{}/missing.geojson", geo.files.url())
            }),
            dict: json!({}),
            class: "HTTPError",
            kind: "unknown",
            message: Some(format!(
                "404 Client Error: Not Found for url: {}/missing.geojson",
                geo.files.url()
            )),
        },
        Case {
            resource_id: "declared-too-large",
            url: Some({
                geo.files.reply(
                    "/huge.geojson",
                    Reply::bytes(b"{}".to_vec()).declared_length(2_000_000_000),
                );
                format!("{}/huge.geojson", geo.files.url())
            }),
            dict: json!({}),
            class: "FileTooLargeException",
            kind: "file-too-large",
            message: Some("response too large".into()),
        },
        Case {
            resource_id: "grows-too-large",
            url: Some({
                geo.files.reply(
                    "/stream.geojson",
                    Reply::bytes(vec![b' '; 300 * 1024]).chunked(),
                );
                format!("{}/stream.geojson", geo.files.url())
            }),
            dict: json!({"max_file_size_mb": 100 * 1024}),
            class: "FileTooLargeException",
            kind: "file-too-large",
            message: Some("response too large".into()),
        },
        Case {
            resource_id: "stalls",
            url: Some({
                geo.files.reply(
                    "/stall.geojson",
                    Reply::bytes(sample_bytes("districts.geojson")).delay(Duration::from_secs(8)),
                );
                format!("{}/stall.geojson", geo.files.url())
            }),
            dict: json!({"timeout_sec": 1}),
            class: "TimeoutException",
            kind: "timeout",
            message: Some("timeout reached".into()),
        },
        Case {
            resource_id: "trickles",
            url: Some({
                geo.files.reply(
                    "/slow.geojson",
                    Reply::bytes(sample_bytes("districts.geojson"))
                        .trickle(20, Duration::from_millis(200)),
                );
                format!("{}/slow.geojson", geo.files.url())
            }),
            dict: json!({"timeout_sec": 1}),
            class: "TimeoutException",
            kind: "timeout",
            message: Some("timeout reached".into()),
        },
        Case {
            resource_id: "redirect-loop",
            url: Some({
                geo.files.reply(
                    "/loop.geojson",
                    Reply::status(302).header("Location", "/loop.geojson"),
                );
                format!("{}/loop.geojson", geo.files.url())
            }),
            dict: json!({}),
            class: "TooManyRedirects",
            kind: "unknown",
            message: Some("Exceeded 10 redirects.".into()),
        },
        Case {
            resource_id: "redirect-to-file",
            url: Some({
                geo.files.reply(
                    "/local.geojson",
                    Reply::status(301).header("Location", "file:///etc/passwd"),
                );
                format!("{}/local.geojson", geo.files.url())
            }),
            dict: json!({}),
            class: "MissingUrlException",
            kind: "missing-url",
            message: Some(
                "Url missing or has a problem: only http and https URLs are downloaded".into(),
            ),
        },
        Case {
            resource_id: "no-url",
            url: None,
            dict: json!({}),
            class: "MissingUrlException",
            kind: "missing-url",
            message: Some("Url missing or has a problem".into()),
        },
        Case {
            resource_id: "no-name",
            url: Some({
                geo.files
                    .reply("/download", Reply::bytes(sample_bytes("districts.geojson")));
                format!("{}/download", geo.files.url())
            }),
            dict: json!({}),
            class: "ValueError",
            kind: "unknown",
            message: Some("CKAN resource filename could not be deduced".into()),
        },
    ];
    // Failed re-imports of the layer that exists: one fails in GDAL, one after loading.
    cases.push(Case {
        resource_id: "keep",
        url: Some(geo.serve_file("keep-broken.geojson", noise(2000, 9))),
        dict: json!({}),
        class: "PushingToPostgisException",
        kind: "pushing-to-postgis-problem",
        message: None,
    });

    let mut ids = Vec::new();
    for case in &cases {
        let mut dict = geo.job_dict(case.resource_id, case.url.as_deref());
        for (k, v) in case.dict.as_object().expect("object") {
            dict[k] = v.clone();
        }
        ids.push(geo.enqueue_pickle(&dict, 60));
    }
    for case in &cases {
        let info = testkit::eventually(
            &format!("the failure report for {}", case.resource_id),
            Duration::from_secs(90),
            || {
                geo.ckan
                    .requests_to(REPORT_PATH)
                    .into_iter()
                    .filter(|r| r.json()["id"] == case.resource_id)
                    .map(|r| {
                        serde_json::from_str::<Value>(r.json()["shape_info"].as_str().unwrap_or(""))
                            .expect("shape_info")
                    })
                    .find(|info| info["state"] == "failure")
            },
        );
        let layer = format!("pre_{}", case.resource_id.replace('-', "_"));
        assert_eq!(
            info["error_class"], case.class,
            "{}: {info}",
            case.resource_id
        );
        assert_eq!(info["type"], case.kind, "{}: {info}", case.resource_id);
        if let Some(message) = &case.message {
            assert_eq!(
                info,
                failure_info(&layer, case.class, case.kind, message),
                "{}",
                case.resource_id
            );
        }
    }
    // The redirect to another host is followed, without the key or the user agent.
    geo.elsewhere.reply(
        "/moved.geojson",
        Reply::bytes(sample_bytes("districts.geojson")).header(
            "Content-Disposition",
            "attachment; filename=\"moved.geojson\"",
        ),
    );
    geo.files.reply(
        "/moving.geojson",
        Reply::status(302).header(
            "Location",
            &format!("{}/moved.geojson", geo.elsewhere.url()),
        ),
    );
    geo.enqueue_pickle(
        &geo.job_dict(
            "moved",
            Some(&format!("{}/moving.geojson", geo.files.url())),
        ),
        60,
    );
    assert_eq!(geo.shape_info("moved")["bounding_box"], DISTRICTS_BOX);
    let first_hop = &geo.files.requests_to("/moving.geojson")[0];
    assert_eq!(first_hop.header("authorization"), Some(API_KEY));
    let second_hop = &geo.elsewhere.requests_to("/moved.geojson")[0];
    assert_eq!(
        second_hop.header("authorization"),
        None,
        "no key for another host"
    );
    assert_ne!(second_hop.header("user-agent"), Some("HDX-TEST"));

    // A re-import that loads but has nothing to show fails too; the layer stays as it was.
    let zero_again = geo.serve_file(
        "keep-zero.geojson",
        br#"{"type":"FeatureCollection","features":[]}"#.to_vec(),
    );
    let before_reports = geo
        .ckan
        .requests_to(REPORT_PATH)
        .iter()
        .filter(|r| r.json()["id"] == "keep")
        .count();
    geo.enqueue_pickle(&geo.job_dict("keep", Some(&zero_again)), 60);
    testkit::eventually(
        "the second failed re-import report",
        Duration::from_secs(60),
        || {
            let reports: Vec<Value> = geo
                .ckan
                .requests_to(REPORT_PATH)
                .into_iter()
                .filter(|r| r.json()["id"] == "keep")
                .map(|r| r.json())
                .collect();
            (reports.len() > before_reports).then_some(())
        },
    );
    let last_keep = geo
        .ckan
        .requests_to(REPORT_PATH)
        .into_iter()
        .rfind(|r| r.json()["id"] == "keep")
        .expect("report");
    let last_info: Value =
        serde_json::from_str(last_keep.json()["shape_info"].as_str().expect("string"))
            .expect("json");
    assert_eq!(last_info["type"], "fetch-bounding-box-problem");
    assert_eq!(geo.rows("pre_keep"), before, "the layer is unchanged");

    // Every job finished (failures go to CKAN, not to RQ), the worker lives and still works.
    for id in &ids {
        let status = testkit::eventually("job finished", Duration::from_secs(30), || {
            common::status(&geo.redis, id).filter(|s| s == "finished")
        });
        assert_eq!(status, "finished");
    }
    assert!(
        worker.child.try_wait().expect("try_wait").is_none(),
        "worker alive"
    );
    let again = geo.serve_file("again.geojson", sample_bytes("health_sites.geojson"));
    geo.enqueue_pickle(&geo.job_dict("after", Some(&again)), 60);
    assert_eq!(geo.shape_info("after")["state"], "success");

    // Nothing left on disk (in the download folder, beside it, or where traversal aimed) or in
    // the database.
    assert!(
        geo.leftover_files().is_empty(),
        "{:?}",
        geo.leftover_files()
    );
    assert!(!geo.root.path().join("evil.geojson").exists());
    assert!(!Path::new("/tmp/hdx-evil.geojson").exists());
    assert!(
        geo.tables("hdx_stage").is_empty(),
        "{:?}",
        geo.tables("hdx_stage")
    );
    assert_eq!(
        geo.tables("pre_"),
        vec!["pre_after", "pre_keep", "pre_moved"],
        "only the successful imports made layers"
    );
    let log = worker.log();
    assert!(!log.contains("panicked"), "{log}");
}

/// Contributors control resource URLs: a URL (or a redirect) to the worker's loopback, its
/// private network or the cloud metadata address must never be fetched, whatever its spelling
/// (a name resolving to 127.0.0.1, IPv4-mapped IPv6, a decimal address). Each such job is
/// reported to CKAN as a failure saying the address is not allowed, with nothing about the
/// transport (no port, no connection error: no port-scan oracle), and ends without a retry;
/// the internal server sees no request.
#[test]
fn regression_resource_urls_never_reach_internal_addresses() {
    let geo = Geo::new();
    let internal = FakeServer::start();
    internal.reply(
        "/secret.geojson",
        Reply::bytes(sample_bytes("districts.geojson")).header(
            "Content-Disposition",
            "attachment; filename=\"secret.geojson\"",
        ),
    );
    let port = internal.port();
    let attacks = [
        (
            "loopback",
            format!("http://127.0.0.1:{port}/secret.geojson"),
        ),
        (
            "dns-name",
            format!("http://localhost:{port}/secret.geojson"),
        ),
        (
            "mapped",
            format!("http://[::ffff:127.0.0.1]:{port}/secret.geojson"),
        ),
        (
            "decimal",
            format!("http://2130706433:{port}/secret.geojson"),
        ),
        ("hex", format!("http://0x7f.0.0.1:{port}/secret.geojson")),
        ("v6-loopback", format!("http://[::1]:{port}/secret.geojson")),
        ("private", "http://10.20.30.40/secret.geojson".to_string()),
        ("cgnat", "http://100.64.0.1/secret.geojson".to_string()),
        (
            "metadata",
            "http://169.254.169.254/latest/meta-data/x.geojson".to_string(),
        ),
        ("ula", "http://[fd00::1]/secret.geojson".to_string()),
    ];
    let mut ids = Vec::new();
    {
        // CKAN's host is somewhere else: nothing local is exempt.
        let _worker = geo.worker(&[("HDX_DOMAIN", "ckan.invalid")]);
        for (name, url) in &attacks {
            ids.push(geo.enqueue_pickle(&geo.job_dict(&format!("ssrf-{name}"), Some(url)), 60));
        }
        for (name, url) in &attacks {
            let resource = format!("ssrf-{name}");
            let info = geo.shape_info(&resource);
            let host = url::Url::parse(url)
                .expect("url")
                .host_str()
                .expect("host")
                .to_string();
            assert_eq!(
                info,
                failure_info(
                    &format!("pre_ssrf_{}", name.replace('-', "_")),
                    "AddressNotAllowedException",
                    "missing-url",
                    &format!("Url missing or has a problem: the address of {host} is not allowed"),
                ),
                "{name}: {url}"
            );
            assert!(!info["message"]
                .as_str()
                .unwrap_or("")
                .contains(&port.to_string()));
        }
    }
    {
        // An allowed host that redirects to a forbidden one: the hop is refused too.
        let redirector = FakeServer::start();
        redirector.reply(
            "/moving.geojson",
            Reply::status(302).header(
                "Location",
                &format!("http://127.0.0.1:{port}/secret.geojson"),
            ),
        );
        let _worker = geo.worker(&[
            ("HDX_DOMAIN", "ckan.invalid"),
            ("HDX_OUTBOUND_ALLOW", "localhost"),
        ]);
        let url = format!("http://localhost:{}/moving.geojson", redirector.port());
        ids.push(geo.enqueue_pickle(&geo.job_dict("ssrf-redirect", Some(&url)), 60));
        let info = geo.shape_info("ssrf-redirect");
        assert_eq!(info["error_class"], "AddressNotAllowedException");
        assert_eq!(
            info["message"],
            "Url missing or has a problem: the address of 127.0.0.1 is not allowed"
        );
        assert_eq!(
            redirector.requests_to("/moving.geojson").len(),
            1,
            "the first hop is allowed"
        );
    }
    assert!(internal.requests().is_empty(), "{:?}", internal.requests());
    for id in &ids {
        // Finished: the failure went to CKAN, and RQ has nothing to retry.
        testkit::eventually("the job finished", Duration::from_secs(30), || {
            common::status(&geo.redis, id).filter(|s| s == "finished")
        });
    }
    assert!(geo.tables("pre_ssrf").is_empty());
}

/// Whether process `pid` runs: it exists and is not a zombie (killed, waiting to be reaped).
fn process_runs(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // "pid (comm) state ...": comm may hold spaces and parentheses, the state follows the
        // last ')'.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

/// A GDAL crash (here: the import child aborting) or a hanging import kills only the child:
/// the job is reported as failed and the worker carries on.
#[test]
fn a_crashing_or_hanging_import_child_only_fails_its_job() {
    let geo = Geo::new();
    let write_script = |name: &str, body: &str| {
        let path = geo.made(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("script");
        let output = Command::new("chmod")
            .arg("+x")
            .arg(&path)
            .output()
            .expect("chmod");
        testkit::check(&output, "chmod");
        path
    };
    let crash = write_script("crash.sh", "cat >/dev/null; kill -ABRT $$");
    // The hanging child records its PID ($$ stays the PID across `exec`), so the test can
    // watch that very process: the script's path is gone from the command line once `sleep`
    // replaces the shell, so `pgrep -f <script>` could never have found it.
    let hang_pid_file = geo.made("hang.pid");
    let hang = write_script(
        "hang.sh",
        &format!("echo $$ > '{}'\nexec sleep 600", hang_pid_file.display()),
    );
    let url = geo.serve_file("districts.geojson", sample_bytes("districts.geojson"));

    let mut crashing = geo.worker(&[("HDX_GEO_IMPORT_PROGRAM", crash.to_str().expect("utf-8"))]);
    geo.enqueue_pickle(&geo.job_dict("crash-1", Some(&url)), 60);
    geo.enqueue_pickle(&geo.job_dict("crash-2", Some(&url)), 60);
    for id in ["crash-1", "crash-2"] {
        assert_eq!(
            geo.shape_info(id),
            failure_info(
                &format!("pre_{}", id.replace('-', "_")),
                "PushingToPostgisException",
                "pushing-to-postgis-problem",
                "Problem during ogr2ogr import to postgis"
            )
        );
    }
    assert!(
        crashing.child.try_wait().expect("try_wait").is_none(),
        "worker alive"
    );
    drop(crashing);

    let mut hanging = geo.worker(&[("HDX_GEO_IMPORT_PROGRAM", hang.to_str().expect("utf-8"))]);
    // 20 s: the pipeline keeps a tenth of it (2 s) to kill the child and report, which a
    // loaded machine needs before the worker's own timeout strikes.
    let job = geo.enqueue_pickle(&geo.job_dict("hang", Some(&url)), 20);
    let hang_pid = testkit::eventually("the hanging child starts", Duration::from_secs(30), || {
        std::fs::read_to_string(&hang_pid_file)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
    });
    assert!(
        process_runs(hang_pid),
        "the hanging child {hang_pid} runs before its timeout"
    );
    assert_eq!(
        geo.shape_info("hang"),
        failure_info(
            "pre_hang",
            "TimeoutException",
            "timeout",
            "timeout reached during the import"
        )
    );
    let status = testkit::eventually("the job ends", Duration::from_secs(40), || {
        common::status(&geo.redis, &job).filter(|s| s == "finished")
    });
    assert_eq!(status, "finished");
    assert!(
        hanging.child.try_wait().expect("try_wait").is_none(),
        "worker alive"
    );
    testkit::eventually(
        "the hanging child is killed",
        Duration::from_secs(10),
        || (!process_runs(hang_pid)).then_some(()),
    );
    assert!(
        geo.leftover_files().is_empty(),
        "{:?}",
        geo.leftover_files()
    );
    assert!(geo.tables("hdx_stage").is_empty());
}

/// The import child, where hostile files are parsed, starts confined: its environment holds
/// only what GDAL and PROJ need (no API key, no database settings, nothing else of the
/// worker's), and it runs under limits on address space, CPU time and file size, with no core
/// dumps. A stand-in child records what it was given.
#[test]
fn the_import_child_starts_with_a_cleared_environment_and_limits() {
    let geo = Geo::new();
    let seen = geo.made("seen");
    let script = geo.made("record.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nenv > '{0}.env'\ncat /proc/self/limits > '{0}.limits'\ncat >/dev/null\n",
            seen.display()
        ),
    )
    .expect("script");
    let output = Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .output()
        .expect("chmod");
    testkit::check(&output, "chmod");
    let url = geo.serve_file("districts.geojson", sample_bytes("districts.geojson"));
    let _worker = geo.worker(&[
        ("HDX_GEO_IMPORT_PROGRAM", script.to_str().expect("utf-8")),
        ("HDX_GEO_IMPORT_MAX_MEMORY_MB", "1536"),
        ("GDAL_DATA", "/usr/share/gdal"),
        ("SOME_WORKER_SECRET", "do-not-leak"),
    ]);
    geo.enqueue_pickle(&geo.job_dict("confined", Some(&url)), 60);
    assert_eq!(
        geo.shape_info("confined")["state"],
        "failure",
        "no report from the stand-in"
    );
    let env = std::fs::read_to_string(seen.with_extension("env")).expect("env recorded");
    for leaked in [API_KEY, "do-not-leak", "HDX_", "PGPASSWORD", "REDIS"] {
        assert!(!env.contains(leaked), "{leaked} reached the child:\n{env}");
    }
    assert!(env.contains("GDAL_DATA=/usr/share/gdal"), "{env}");
    assert!(env.contains("PROJ_NETWORK=OFF"), "{env}");
    let limits = std::fs::read_to_string(seen.with_extension("limits")).expect("limits");
    let limit = |name: &str| -> String {
        limits
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| {
                l[name.len()..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        limit("Max address space"),
        (1536u64 * 1024 * 1024).to_string(),
        "{limits}"
    );
    assert_eq!(limit("Max core file size"), "0", "{limits}");
    for bounded in ["Max cpu time", "Max file size"] {
        let value = limit(bounded);
        assert!(
            value.parse::<u64>().is_ok(),
            "{bounded} is {value:?}:\n{limits}"
        );
    }
}

/// The import runs in `hdx-jobs-import`, beside `hdx-jobs` (which does not link GDAL): where it is
/// missing (here HDX_GEO_IMPORT_PROGRAM names a file that does not exist), the CLI says what
/// geopreview needs before starting, a worker says it at start, and a job fails as a failed
/// import, the worker carrying on.
#[test]
fn a_missing_import_executable_is_named() {
    let geo = Geo::new();
    let missing = geo.made("hdx-jobs-import");
    let missing_text = missing.to_str().expect("utf-8");
    let expected =
        format!("geopreview needs hdx-jobs-import beside hdx-jobs: {missing_text} is missing");
    let output = geo
        .command()
        .env("HDX_GEO_IMPORT_PROGRAM", &missing)
        .args(["geopreview", "import"])
        .arg(testkit::sample("geo/districts.geojson"))
        .args(["--resource-id", "no-import"])
        .output()
        .expect("run hdx-jobs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(geo.tables("pre_no_import").is_empty());

    let mut worker = geo.worker(&[("HDX_GEO_IMPORT_PROGRAM", missing_text)]);
    testkit::eventually("the worker's warning", Duration::from_secs(30), || {
        worker.log().contains(&expected).then_some(())
    });
    let url = geo.serve_file("districts.geojson", sample_bytes("districts.geojson"));
    geo.enqueue_pickle(&geo.job_dict("no-import", Some(&url)), 60);
    assert_eq!(
        geo.shape_info("no-import"),
        failure_info(
            "pre_no_import",
            "PushingToPostgisException",
            "pushing-to-postgis-problem",
            "Problem during ogr2ogr import to postgis"
        )
    );
    assert!(
        worker.child.try_wait().expect("try_wait").is_none(),
        "worker alive"
    );
}

/// The database's host, user and password never reach CKAN, whatever fails; without an API key
/// or CKAN URL nothing can be reported and the job itself fails as `WrongConfigurationException`.
#[test]
fn database_details_never_reach_ckan_and_missing_settings_fail_the_job() {
    let geo = Geo::new();
    let url = geo.serve_file("districts.geojson", sample_bytes("districts.geojson"));
    let unreachable = "host=gis-secret-host.invalid port=5432 user=secret_user \
                       password=hunter2-secret dbname=gis connect_timeout=2";
    let local_socket = format!(
        "host=/var/run/postgresql user=secret_user password=hunter2-secret dbname={}",
        geo.pg.dbname
    );
    for (i, db) in [unreachable.to_string(), local_socket].iter().enumerate() {
        let worker = geo.worker(&[("HDX_GISDB_URL", db.as_str())]);
        let resource_id = format!("db-{i}");
        geo.enqueue_pickle(&geo.job_dict(&resource_id, Some(&url)), 60);
        let report = geo.report(&resource_id);
        let info = geo.shape_info(&resource_id);
        assert_eq!(info["type"], "pushing-to-postgis-problem", "{info}");
        assert_eq!(info["error_class"], "PushingToPostgisException");
        let text = report.text();
        for secret in ["gis-secret-host", "secret_user", "hunter2-secret"] {
            assert!(!text.contains(secret), "{secret} reached CKAN: {text}");
        }
        assert!(
            !worker.log().contains("hunter2-secret"),
            "the password is not logged"
        );
        drop(worker);
    }

    let worker = geo.worker(&[("HDX_GIS_API_KEY", "")]);
    let mut dict = geo.job_dict("no-key", Some(&url));
    dict["ckan_api_base_url"] = Value::Null;
    let job = geo.enqueue_pickle(&dict, 60);
    let status = testkit::eventually("the job fails", Duration::from_secs(30), || {
        common::status(&geo.redis, &job).filter(|s| s == "failed")
    });
    assert_eq!(status, "failed");
    let fetched =
        testkit::rq_peer_json(geo.redis.url(), &["fetch", &job, "--serializer", "pickle"]);
    let exc = fetched["exc_string"].as_str().unwrap_or_default();
    assert!(
        exc.contains("WrongConfigurationException")
            && exc.contains("Either CKAN resource update url or importapi key missing"),
        "{fetched}"
    );
    assert!(geo
        .ckan
        .requests_to(REPORT_PATH)
        .iter()
        .all(|r| r.json()["id"] != "no-key"));
    assert!(
        geo.files.requests_to("/districts.geojson").is_empty(),
        "nothing is downloaded when the database or the settings are wrong"
    );
    drop(worker);
}

/// `hdx-jobs geopreview import <path> --resource-id <id>`: checks the exit status and that
/// stdout is the shape_info, written like `json.dumps`; returns it.
fn cli_import(geo: &Geo, what: &str, path: &Path, resource_id: &str) -> Value {
    let output = run(geo
        .command()
        .args(["geopreview", "import"])
        .arg(path)
        .args(["--resource-id", resource_id, "--dataset-id", "ds"]));
    testkit::check(&output, what);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let info: Value = serde_json::from_str(stdout.trim()).expect("shape_info on stdout");
    assert_eq!(stdout.trim(), python_dumps(&info), "{what}");
    info
}

/// The shared fixtures (real HDX files) and a KMZ through `hdx-jobs geopreview import`: the
/// old service's known boxes and field counts. Ignored where the machine has no shared fixtures.
#[test]
#[cfg_attr(
    not(shared_fixtures),
    ignore = "needs ../shared/fixtures (the old service's known results)"
)]
fn the_cli_imports_the_shared_fixtures_with_the_contract_results() {
    let fixtures = testkit::require_shared_fixture("geofiles");
    let geo = Geo::new();
    let kmz = make_kmz(&geo, &fixtures.join("test.kml"), "test.kmz");
    let cases = [
        (
            "test.geojson",
            fixtures.join("test.geojson"),
            GEOJSON_BOX,
            4,
        ),
        ("test.kml", fixtures.join("test.kml"), KML_BOX, 13),
        ("test.shp.zip", fixtures.join("test.shp.zip"), SHP_BOX, 45),
        ("test2.shp.zip", fixtures.join("test2.shp.zip"), SHP2_BOX, 7),
        ("test.kmz", kmz, KML_BOX, 13),
    ];
    for (i, (name, path, bbox, count)) in cases.iter().enumerate() {
        let info = cli_import(&geo, name, path, &format!("cli-fixture-{i}"));
        let layer = format!("pre_cli_fixture_{i}");
        assert_eq!(
            info,
            success_info(&layer, bbox, &geo.fields_of(&layer)),
            "{name}"
        );
        assert_eq!(
            info["layer_fields"].as_array().map(Vec::len),
            Some(*count),
            "{name}"
        );
        assert_eq!(geo.rows(&layer).1.as_deref(), Some(*bbox), "{name}");
    }
    assert!(
        geo.leftover_files().is_empty(),
        "{:?}",
        geo.leftover_files()
    );
}

/// `hdx-jobs geopreview import` runs the same pipeline locally: the samples' known boxes,
/// fields and rows, the shape_info JSON on stdout, exit 0 on success and 1 on failure;
/// `delete` and `cleanup`.
#[test]
fn the_cli_imports_deletes_and_cleans_up() {
    let geo = Geo::new();
    let kml = testkit::sample("geo/water_points.kml");
    let kmz = make_kmz(&geo, &kml, "water_points.kmz");
    let cases = [
        (
            "districts.geojson",
            testkit::sample("geo/districts.geojson"),
            DISTRICTS_BOX,
            DISTRICTS_FIELDS,
            4,
        ),
        (
            "water_points.kml",
            kml,
            WATER_POINTS_BOX,
            WATER_POINTS_FIELDS,
            4,
        ),
        (
            "districts.shp.zip",
            sample_shapefile_zip(&geo, "districts"),
            DISTRICTS_BOX,
            DISTRICTS_SHP_FIELDS,
            4,
        ),
        (
            "rivers.shp.zip",
            sample_shapefile_zip(&geo, "rivers"),
            RIVERS_BOX,
            RIVERS_SHP_FIELDS,
            3,
        ),
        (
            "water_points.kmz",
            kmz,
            WATER_POINTS_BOX,
            WATER_POINTS_FIELDS,
            4,
        ),
    ];
    for (i, (name, path, bbox, expected_fields, rows)) in cases.iter().enumerate() {
        let info = cli_import(&geo, name, path, &format!("cli-{i}"));
        let layer = format!("pre_cli_{i}");
        assert_eq!(
            info,
            success_info(&layer, bbox, &fields(expected_fields)),
            "{name}"
        );
        assert_eq!(geo.fields_of(&layer), fields(expected_fields), "{name}");
        assert_eq!(
            geo.rows(&layer),
            (*rows, Some(bbox.to_string())),
            "{name} in PostGIS"
        );
    }

    // A progress bar on stderr when stdout is a terminal (`script` gives it one), none otherwise.
    let output = run(geo
        .command()
        .args(["geopreview", "import"])
        .arg(&cases[2].1)
        .args(["--resource-id", "cli-2"]));
    assert!(!String::from_utf8_lossy(&output.stderr).contains('%'));
    let command = format!(
        "{} geopreview import {} --resource-id cli-2",
        env!("CARGO_BIN_EXE_hdx-jobs"),
        cases[2].1.display()
    );
    let output = run(Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .envs(geo.env())
        .env("LOG_LEVEL", "warn"));
    testkit::check(&output, "import on a terminal");
    let screen = String::from_utf8_lossy(&output.stdout);
    assert!(
        screen.contains("import   [") && screen.contains("100%"),
        "{screen}"
    );

    // From a URL, with --db-url instead of HDX_GISDB_URL.
    let url = geo.serve_file("by-url.geojson", sample_bytes("districts.geojson"));
    let output = run(geo
        .command()
        .env_remove("HDX_GISDB_URL")
        .args([
            "geopreview",
            "import",
            &url,
            "--resource-id",
            "cli-url",
            "--db-url",
        ])
        .arg(geo.pg.conn_string()));
    testkit::check(&output, "import by URL");
    let info: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(info["bounding_box"], DISTRICTS_BOX);

    // A failure: exit 1, the failure shape_info, nothing left behind.
    let broken = geo.made("broken.geojson");
    std::fs::write(&broken, b"not a layer").expect("write");
    let output = run(geo
        .command()
        .args(["geopreview", "import"])
        .arg(&broken)
        .args(["--resource-id", "cli-broken"]));
    assert_eq!(output.status.code(), Some(1));
    let info: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(
        info,
        failure_info(
            "pre_cli_broken",
            "PushingToPostgisException",
            "pushing-to-postgis-problem",
            "Problem during ogr2ogr import to postgis"
        )
    );
    assert!(broken.exists(), "the user's file is left alone");
    assert!(
        geo.leftover_files().is_empty(),
        "{:?}",
        geo.leftover_files()
    );

    // delete
    let output = run(geo
        .command()
        .args(["geopreview", "delete", "--resource-id", "cli-url"]));
    testkit::check(&output, "delete");
    assert!(!geo.tables("pre_").contains(&"pre_cli_url".to_string()));

    // cleanup: dry run by default, --apply drops, a broken CKAN list deletes nothing.
    let list = "/api/action/hdx_resource_id_list";
    geo.ckan.reply(
        list,
        Reply::json(json!({"success": true, "result": ["cli-0", "cli-1", "cli-2", "other"]})),
    );
    let output = run(geo.command().args(["geopreview", "cleanup"]));
    testkit::check(&output, "cleanup");
    let report: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(report["deletable"], json!(["pre_cli_3", "pre_cli_4"]));
    assert_eq!(report["deleted"], false);
    assert_eq!(geo.tables("pre_").len(), 5);
    assert_eq!(
        geo.ckan.requests_to(list)[0].header("authorization"),
        Some(API_KEY)
    );
    geo.ckan.reply(
        list,
        Reply::json(json!({"success": true, "result": ["cli-0"]})),
    );
    let output = run(geo.command().args(["geopreview", "cleanup", "--apply"]));
    assert_eq!(output.status.code(), Some(1), "a list of one id is refused");
    assert_eq!(geo.tables("pre_").len(), 5);
    geo.ckan.reply(
        list,
        Reply::json(json!({"success": true, "result": ["cli-0", "cli-1", "cli-2", "other"]})),
    );
    // Two of five layers are more than HDX_CLEANUP_MAX_SHARE (10 %): refused unless forced.
    let output = run(geo.command().args(["geopreview", "cleanup", "--apply"]));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("refusing to drop 2 of 5 layers"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(geo.tables("pre_").len(), 5);
    let output = run(geo
        .command()
        .args(["geopreview", "cleanup", "--apply", "--force"]));
    testkit::check(&output, "cleanup --apply --force");
    assert_eq!(
        geo.tables("pre_"),
        vec!["pre_cli_0", "pre_cli_1", "pre_cli_2"]
    );
}

/// The HTTP API's `GET /api/add-layer/...` on a real server, a real worker process, a file on
/// a local server and CKAN receiving the success shape_info: the whole path, end to end.
#[test]
fn add_layer_on_the_real_server_ends_in_a_ckan_report() {
    let geo = Geo::new();
    let url = geo.serve_file("districts.geojson", sample_bytes("districts.geojson"));
    let env: HashMap<String, String> = geo.env().into_iter().collect();
    let config =
        hdx_jobs_server::ServerConfig::from_lookup(|k| env.get(k).cloned()).expect("config");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let server = format!("http://{}", listener.local_addr().expect("addr"));
    let redis = hdx_jobs::RedisClient::open(geo.redis.url()).expect("redis");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    runtime.spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        hdx_jobs_server::run(
            listener,
            hdx_jobs_server::AppState::new(redis, config).expect("state"),
            shutdown,
        )
        .await
        .expect("server");
    });
    let _worker = geo.worker(&[]);

    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut response = agent
        .get(&format!(
            "{server}/api/add-layer/dataset/ds-e2e/resource/res-e2e"
        ))
        .query("resource_download_url", &url)
        .query("url_type", "upload")
        .call()
        .expect("add-layer");
    assert_eq!(response.status().as_u16(), 200);
    let body: Value =
        serde_json::from_str(&response.body_mut().read_to_string().expect("body")).expect("json");
    assert_eq!(
        body,
        json!({"state": "processing", "message": "The processing of the geo-preview has started",
               "layer_id": "None", "error_type": "None", "error_class": "None"})
    );
    let info = geo.shape_info("res-e2e");
    assert_eq!(
        info,
        success_info("pre_res_e2e", DISTRICTS_BOX, &fields(DISTRICTS_FIELDS))
    );
    assert_eq!(geo.fields_of("pre_res_e2e"), fields(DISTRICTS_FIELDS));

    // The new layer is served as tiles at once, and a re-import with other data changes them
    // right after (the import's swap tells the server), with no restart.
    // A tile of the west of the districts (Équateur-Nord and Mbéli-Forêt).
    let tile = testkit::geo::tile_of(22.0, -2.5, 6);
    let tile_url = format!(
        "{server}/tiles/pre_res_e2e/{}/{}/{}.pbf",
        tile.0, tile.1, tile.2
    );
    let fetch = |url: &str| {
        let mut response = agent.get(url).call().expect("tile");
        let status = response.status().as_u16();
        (
            status,
            response
                .body_mut()
                .with_config()
                .limit(16 << 20)
                .read_to_vec()
                .unwrap_or_default(),
        )
    };
    let (status, first) = fetch(&tile_url);
    assert_eq!(status, 200);
    let mut names: Vec<String> = testkit::geo::decode_mvt(&first, tile)
        .iter()
        .map(|f| f["properties"]["name"].as_str().unwrap_or("").to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["Mbéli-Forêt", "Équateur-Nord"]);
    let replacement = json!({"type": "FeatureCollection", "features": [{"type": "Feature",
        "properties": {"label": "replacement"},
        "geometry": {"type": "Polygon", "coordinates": [[[21.0, -3.5], [23.0, -3.5], [23.0, -1.5], [21.0, -1.5], [21.0, -3.5]]]}}]});
    let url = geo.serve_file("replacement.geojson", replacement.to_string().into_bytes());
    let reports_before = geo.ckan.requests_to(REPORT_PATH).len();
    agent
        .get(&format!(
            "{server}/api/add-layer/dataset/ds-e2e/resource/res-e2e"
        ))
        .query("resource_download_url", &url)
        .call()
        .expect("add-layer again");
    testkit::eventually("the second report", Duration::from_secs(90), || {
        (geo.ckan.requests_to(REPORT_PATH).len() > reports_before).then_some(())
    });
    // The server learns of the swap by a NOTIFY sent at the import's commit, which may reach
    // it a moment after CKAN's report reaches us: allow seconds, far below the minute after
    // which cached layer metadata expires anyway.
    let features = testkit::eventually("the re-imported data", Duration::from_secs(5), || {
        let (status, second) = fetch(&tile_url);
        assert_eq!(status, 200);
        let features = testkit::geo::decode_mvt(&second, tile);
        (features.len() == 1 && features[0]["properties"]["label"] == "replacement")
            .then_some(features)
    });
    assert_eq!(features.len(), 1);
    let _ = stop.send(());
    runtime.shutdown_timeout(Duration::from_secs(5));
}
