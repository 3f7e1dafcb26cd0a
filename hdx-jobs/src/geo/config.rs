//! Geopreview settings, from the environment variables of the old service.

use crate::config::{ConfigError, Env};
use crate::secret::Secret;

/// The PostGIS database of the layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GisDbConfig {
    /// `HDX_GISDB_URL` (hdx-jobs addition): a `postgresql://` URL or `key=value` string that wins
    /// over the parts below.
    pub url: Option<Secret>,
    /// `HDX_GISDB_ADDR` (default `gisdb`); a path means a Unix socket directory.
    pub host: String,
    /// `HDX_GISDB_PORT` (default 5432).
    pub port: u16,
    /// `HDX_GISDB_DB` (default `gis`).
    pub dbname: String,
    /// `HDX_GISDB_USER` (default `gis`).
    pub user: String,
    /// `HDX_GISDB_PASS`.
    pub password: Option<Secret>,
}

impl GisDbConfig {
    /// Reads the section.
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        Ok(GisDbConfig {
            url: env.secret("HDX_GISDB_URL"),
            host: env.string_or("HDX_GISDB_ADDR", "gisdb"),
            port: env.parse("HDX_GISDB_PORT")?.unwrap_or(5432),
            dbname: env.string_or("HDX_GISDB_DB", "gis"),
            user: env.string_or("HDX_GISDB_USER", "gis"),
            password: env.secret("HDX_GISDB_PASS"),
        })
    }

    /// A connection config for tokio-postgres.
    pub fn pg_config(&self) -> Result<tokio_postgres::Config, tokio_postgres::Error> {
        if let Some(url) = &self.url {
            return url.expose().parse();
        }
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .dbname(&self.dbname)
            .user(&self.user);
        if let Some(password) = &self.password {
            config.password(password.expose());
        }
        config.application_name("hdx-jobs");
        Ok(config)
    }
}

/// Import settings: what the old API put in the geopreview job's argument dict.
#[derive(Debug, Clone, PartialEq)]
pub struct GeopreviewConfig {
    /// `MAX_FILE_SIZE_MB` (default 300).
    pub max_file_size_mb: u64,
    /// `DOWNLOAD_CHUNK_SIZE_MB` (default 5).
    pub download_chunk_size_mb: u64,
    /// `TIMEOUT_SEC`: the whole download (default 120).
    pub timeout_sec: u64,
    /// `TABLE_NAME_PREFIX` (default `pre`).
    pub table_name_prefix: String,
    /// `HDX_GIS_TMP`: the download folder (default `/tmp`).
    pub tmp_dir: String,
    /// `GIS_API_PATTERN` (default `http://gisapi/services/tables/{table_name}`), kept in the
    /// argument dict for the old workers.
    pub gis_api_pattern: String,
    /// `MAX_EXTRACTED_SIZE_MB` (hdx-jobs addition): the most an archive may unpack to (default
    /// ten times `MAX_FILE_SIZE_MB`); beyond it the import fails as `file-too-large`.
    pub max_extracted_mb: u64,
    /// `MAX_ARCHIVE_ENTRIES` (hdx-jobs addition): the most entries an archive may have (default
    /// 1000); beyond it the import fails as `file-too-large`.
    pub max_archive_entries: usize,
    /// `HDX_GEO_IMPORT_PROGRAM` (hdx-jobs addition): the program that runs an import in a child
    /// process, without arguments (default: `hdx-jobs-import` beside the running executable,
    /// where a deployment installs it beside `hdx-jobs`).
    pub import_program: Option<String>,
    /// `HDX_GEO_IMPORT_MAX_MEMORY_MB` (hdx-jobs addition): the address space an import child may
    /// use (default 4096); beyond it the import fails and the worker carries on.
    pub import_max_memory_mb: u64,
    /// `HDX_CLEANUP_MAX_SHARE` (hdx-jobs addition): the largest share of the layers one cleanup
    /// may drop unless forced, as a fraction (`0.1`) or a percentage (`10%`); default 10 %.
    pub cleanup_max_share: f64,
}

impl GeopreviewConfig {
    /// Reads the section.
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let max_file_size_mb = env.parse("MAX_FILE_SIZE_MB")?.unwrap_or(300);
        Ok(GeopreviewConfig {
            max_file_size_mb,
            download_chunk_size_mb: env.parse("DOWNLOAD_CHUNK_SIZE_MB")?.unwrap_or(5),
            timeout_sec: env.parse("TIMEOUT_SEC")?.unwrap_or(120),
            table_name_prefix: env.string_or("TABLE_NAME_PREFIX", "pre"),
            tmp_dir: env.string_or("HDX_GIS_TMP", "/tmp"),
            gis_api_pattern: env.string_or(
                "GIS_API_PATTERN",
                "http://gisapi/services/tables/{table_name}",
            ),
            max_extracted_mb: env
                .parse("MAX_EXTRACTED_SIZE_MB")?
                .unwrap_or(max_file_size_mb * 10),
            max_archive_entries: env.parse("MAX_ARCHIVE_ENTRIES")?.unwrap_or(1000),
            import_program: env.string("HDX_GEO_IMPORT_PROGRAM"),
            import_max_memory_mb: env
                .parse("HDX_GEO_IMPORT_MAX_MEMORY_MB")?
                .unwrap_or(super::child::DEFAULT_MAX_MEMORY_MB),
            cleanup_max_share: share(env, "HDX_CLEANUP_MAX_SHARE", 0.1)?,
        })
    }
}

/// A share between 0 and 1, written as a fraction (`0.1`) or a percentage (`10%`).
fn share(env: &Env<'_>, name: &'static str, default: f64) -> Result<f64, ConfigError> {
    let Some(text) = env.string(name) else {
        return Ok(default);
    };
    let text = text.trim();
    let (number, scale) = match text.strip_suffix('%') {
        Some(percent) => (percent.trim(), 100.0),
        None => (text, 1.0),
    };
    number
        .parse::<f64>()
        .ok()
        .map(|n| n / scale)
        .filter(|n| (0.0..=1.0).contains(n))
        .ok_or_else(|| ConfigError {
            name,
            value: text.to_string(),
            reason: "expected a fraction between 0 and 1 (0.1) or a percentage (10%)".into(),
        })
}

impl GisDbConfig {
    /// The settings as a libpq `key=value` string, for GDAL's `PG:` data source (which hands it
    /// to libpq). Values are quoted, so spaces and quotes in a password survive.
    pub fn libpq_conninfo(&self) -> Result<Secret, tokio_postgres::Error> {
        let pg = self.pg_config()?;
        let mut parts: Vec<String> = Vec::new();
        let hosts: Vec<String> = pg
            .get_hosts()
            .iter()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        if !hosts.is_empty() {
            parts.push(format!("host={}", libpq_quote(&hosts.join(","))));
        }
        let ports: Vec<String> = pg.get_ports().iter().map(u16::to_string).collect();
        if !ports.is_empty() {
            parts.push(format!("port={}", libpq_quote(&ports.join(","))));
        }
        if let Some(db) = pg.get_dbname() {
            parts.push(format!("dbname={}", libpq_quote(db)));
        }
        if let Some(user) = pg.get_user() {
            parts.push(format!("user={}", libpq_quote(user)));
        }
        if let Some(password) = pg.get_password() {
            parts.push(format!(
                "password={}",
                libpq_quote(&String::from_utf8_lossy(password))
            ));
        }
        let ssl = match pg.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => "disable",
            tokio_postgres::config::SslMode::Require => "require",
            _ => "prefer",
        };
        parts.push(format!("sslmode={ssl}"));
        parts.push("application_name=hdx-jobs-import".into());
        Ok(Secret::new(parts.join(" ")))
    }

    /// The host names, user and password: strings that must never appear in a message that
    /// leaves the worker (empty ones left out).
    pub fn sensitive_values(&self) -> Vec<String> {
        let mut values = Vec::new();
        if let Ok(pg) = self.pg_config() {
            for host in pg.get_hosts() {
                match host {
                    tokio_postgres::config::Host::Tcp(name) => values.push(name.clone()),
                    tokio_postgres::config::Host::Unix(path) => {
                        values.push(path.display().to_string())
                    }
                }
            }
            if let Some(user) = pg.get_user() {
                values.push(user.to_string());
            }
            if let Some(password) = pg.get_password() {
                values.push(String::from_utf8_lossy(password).into_owned());
            }
        }
        if let Some(password) = &self.password {
            values.push(password.expose().to_string());
        }
        values.retain(|v| !v.is_empty());
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        values
    }
}

/// Replaces every sensitive value in `text` with `*****`, as the old service did with ogr2ogr's
/// output.
pub fn scrub(text: &str, sensitive: &[String]) -> String {
    let mut out = text.to_string();
    for value in sensitive {
        if !value.is_empty() {
            out = out.replace(value.as_str(), "*****");
        }
    }
    out
}

/// A libpq connection-string value: single-quoted, with `\` and `'` escaped.
fn libpq_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_config(vars: &[(&str, &str)]) -> (GisDbConfig, GeopreviewConfig) {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = |k: &str| map.get(k).cloned();
        let env = Env::new(&lookup);
        (
            GisDbConfig::from_env(&env).expect("db"),
            GeopreviewConfig::from_env(&env).expect("geo"),
        )
    }

    #[test]
    fn conninfo_quotes_values_and_keeps_secrets_listed() {
        let (db, _) = env_config(&[
            ("HDX_GISDB_ADDR", "gis.internal"),
            ("HDX_GISDB_USER", "gis_user"),
            ("HDX_GISDB_PASS", "p'a ss\\word"),
        ]);
        let info = db.libpq_conninfo().expect("conninfo");
        assert_eq!(
            info.expose(),
            "host='gis.internal' port='5432' dbname='gis' user='gis_user' \
             password='p\\'a ss\\\\word' sslmode=prefer application_name=hdx-jobs-import"
        );
        let sensitive = db.sensitive_values();
        let message =
            "connection to server at \"gis.internal\" failed for user gis_user with p'a ss\\word";
        let clean = scrub(message, &sensitive);
        assert!(!clean.contains("gis.internal") && !clean.contains("gis_user"));
        assert!(!clean.contains("p'a ss"));
    }

    #[test]
    fn url_override_and_archive_limits() {
        let (db, geo) = env_config(&[
            (
                "HDX_GISDB_URL",
                "host=/var/run/postgresql user=me dbname=layers",
            ),
            ("MAX_FILE_SIZE_MB", "7"),
        ]);
        assert_eq!(
            db.libpq_conninfo().expect("conninfo").expose(),
            "host='/var/run/postgresql' dbname='layers' user='me' sslmode=prefer \
             application_name=hdx-jobs-import"
        );
        assert_eq!(geo.max_extracted_mb, 70);
        assert_eq!(geo.max_archive_entries, 1000);
        assert_eq!(geo.import_program, None);
    }
}
