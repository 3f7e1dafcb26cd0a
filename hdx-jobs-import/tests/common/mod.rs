//! Helpers shared by the import crate's tests: an import request against a test database.
#![allow(dead_code)]

use std::path::Path;

use hdx_jobs::geo::config::GisDbConfig;
use hdx_jobs::geo::import::ImportRequest;
use hdx_jobs::secret::Secret;
use testkit::TestPostgres;

/// The layer database settings of a test database.
pub fn gis_db(pg: &TestPostgres) -> GisDbConfig {
    GisDbConfig {
        url: Some(Secret::new(pg.conn_string())),
        host: String::new(),
        port: 5432,
        dbname: String::new(),
        user: String::new(),
        password: None,
    }
}

/// A request to import `source` into `public.<table>` of the test database.
pub fn request(pg: &TestPostgres, source: &Path, table: &str) -> ImportRequest {
    ImportRequest {
        source: source.to_path_buf(),
        work_dir: source.parent().unwrap_or(Path::new("/tmp")).to_path_buf(),
        archive: hdx_jobs::geo::archive::ArchiveLimits {
            max_bytes: 1 << 30,
            max_entries: 1000,
        },
        schema: "public".into(),
        table: table.into(),
        conninfo: gis_db(pg)
            .libpq_conninfo()
            .expect("conninfo")
            .expose()
            .to_string(),
    }
}
