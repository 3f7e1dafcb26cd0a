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
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

impl GeopreviewConfig {
    /// Reads the section.
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        Ok(GeopreviewConfig {
            max_file_size_mb: env.parse("MAX_FILE_SIZE_MB")?.unwrap_or(300),
            download_chunk_size_mb: env.parse("DOWNLOAD_CHUNK_SIZE_MB")?.unwrap_or(5),
            timeout_sec: env.parse("TIMEOUT_SEC")?.unwrap_or(120),
            table_name_prefix: env.string_or("TABLE_NAME_PREFIX", "pre"),
            tmp_dir: env.string_or("HDX_GIS_TMP", "/tmp"),
            gis_api_pattern: env.string_or(
                "GIS_API_PATTERN",
                "http://gisapi/services/tables/{table_name}",
            ),
        })
    }
}
