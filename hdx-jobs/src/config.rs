//! Settings from the environment variables HDX deployments already set (see
//! `shared/spec/hdx-behaviour.md`, "Configuration"), with the old service's defaults.
//!
//! [`Config::from_env`] reads the process environment; [`Config::from_lookup`] takes any lookup
//! function so tests need not touch the environment. Each area has its own section struct,
//! read through [`Env`]. Binaries layer their flags on top (clap's `env` reads the same names).
//! Secrets are [`Secret`]s: `Debug` never prints them.

use crate::secret::Secret;

/// Settings shared by the CLI, the worker and the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The queue Redis: `HDX_REDIS_URL`, else built from `HDX_REDIS_ADDR`, `HDX_REDIS_PORT`,
    /// `HDX_REDIS_GISDB` (defaults `gisredis`, 6379, 1).
    pub redis_url: String,
    /// Worker TTL in seconds (`HDX_REDIS_WORKER_TTL`, default 600).
    pub worker_ttl: u64,
    /// Queues a worker listens on (`QUEUES`, space separated, default `geo_q analytics_q`).
    pub queues: Vec<String>,
    /// Timeout given to enqueued jobs (`RQ_WORKER_TIMEOUT`, default 180).
    pub job_timeout: i64,
    /// Log level (`LOG_LEVEL`, default `INFO`).
    pub log_level: String,
    /// CKAN and how HDX's tasks talk to it.
    pub ckan: CkanConfig,
    /// The event bus (Redis stream) of change events.
    pub events: EventsConfig,
}

/// Event bus settings (the Redis stream change events go to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    /// The stream Redis: `REDIS_STREAM_URL` (hdx-jobs addition), else built from
    /// `REDIS_STREAM_HOST`, `REDIS_STREAM_PORT`, `REDIS_STREAM_DB` (defaults `redis`, 6379, 7).
    pub stream_url: String,
    /// The stream: `REDIS_STREAM_STREAM_NAME` (hdx-redis-lib's name), default `hdx_event_stream`.
    pub stream_name: String,
    /// Approximate cap of the stream (`MAXLEN ~`): `REDIS_STREAM_MAXLEN`, default 50000.
    pub maxlen: u64,
    /// Consumer group of `hdx-jobs events listen`: `REDIS_STREAM_GROUP_NAME`, default
    /// `default_group` (the old reader's).
    pub group_name: String,
    /// Consumer name of `hdx-jobs events listen`: `REDIS_STREAM_CONSUMER_NAME`, default
    /// `consumer-1` (the old reader's).
    pub consumer_name: String,
}

impl EventsConfig {
    /// Reads the section.
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let stream_url = match env.string("REDIS_STREAM_URL") {
            Some(url) => url,
            None => format!(
                "redis://{}:{}/{}",
                env.string_or("REDIS_STREAM_HOST", "redis"),
                env.parse::<u16>("REDIS_STREAM_PORT")?.unwrap_or(6379),
                env.parse::<u32>("REDIS_STREAM_DB")?.unwrap_or(7),
            ),
        };
        Ok(EventsConfig {
            stream_url,
            stream_name: env.string_or("REDIS_STREAM_STREAM_NAME", "hdx_event_stream"),
            maxlen: env.parse("REDIS_STREAM_MAXLEN")?.unwrap_or(50_000),
            group_name: env.string_or("REDIS_STREAM_GROUP_NAME", "default_group"),
            consumer_name: env.string_or("REDIS_STREAM_CONSUMER_NAME", "consumer-1"),
        })
    }
}

/// CKAN settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CkanConfig {
    /// `CKAN_API_BASE_URL`, e.g. `http://ckan:5000/api/action`.
    pub api_base_url: Option<String>,
    /// `HDX_GIS_API_KEY`: geopreview's key (sent as `Authorization`).
    pub gis_api_key: Option<Secret>,
    /// `HDX_FSCHECK_API_KEY`, falling back to `HDX_GIS_API_KEY`.
    pub fs_check_api_key: Option<Secret>,
    /// `HDX_USER_AGENT` (default `GISLAYER`) for every outgoing call.
    pub user_agent: String,
    /// `VERIFY_CKAN_SSL` (default true).
    pub verify_ssl: bool,
    /// `HDX_DOMAIN`: CKAN's host; downloads from it carry the API key (default
    /// `data.humdata.org`).
    pub domain: String,
    /// `RESOURCE_UPDATE_ACTION` (default `hdx_resource_update_metadata`).
    pub resource_update_action: String,
    /// `HDX_FS_CHECK_RESOURCE_REVISE` (default `hdx_fs_check_resource_revise`).
    pub fs_check_revise_action: String,
    /// `RESOURCE_ID_LIST_ACTION` (default `hdx_resource_id_list`).
    pub resource_id_list_action: String,
}

impl CkanConfig {
    /// Reads the section.
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let gis_api_key = env.secret("HDX_GIS_API_KEY");
        Ok(CkanConfig {
            api_base_url: env.string("CKAN_API_BASE_URL"),
            fs_check_api_key: env
                .secret("HDX_FSCHECK_API_KEY")
                .or_else(|| gis_api_key.clone()),
            gis_api_key,
            user_agent: env.string_or("HDX_USER_AGENT", "GISLAYER"),
            verify_ssl: env.flag("VERIFY_CKAN_SSL", true)?,
            domain: env.string_or("HDX_DOMAIN", "data.humdata.org"),
            resource_update_action: env
                .string_or("RESOURCE_UPDATE_ACTION", "hdx_resource_update_metadata"),
            fs_check_revise_action: env.string_or(
                "HDX_FS_CHECK_RESOURCE_REVISE",
                "hdx_fs_check_resource_revise",
            ),
            resource_id_list_action: env
                .string_or("RESOURCE_ID_LIST_ACTION", "hdx_resource_id_list"),
        })
    }
}

/// A setting that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}={value:?} is invalid: {reason}")]
pub struct ConfigError {
    /// Variable name.
    pub name: &'static str,
    /// Its value.
    pub value: String,
    /// What is wrong.
    pub reason: String,
}

/// Typed reads of environment variables through a lookup function. Empty values count as unset.
pub struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Env<'a> {
    /// Wraps a lookup (variable name to value).
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Env { lookup }
    }

    /// A string, `None` when unset or empty.
    pub fn string(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.is_empty())
    }

    /// A string with a default.
    pub fn string_or(&self, name: &str, default: &str) -> String {
        self.string(name).unwrap_or_else(|| default.to_string())
    }

    /// A secret.
    pub fn secret(&self, name: &str) -> Option<Secret> {
        self.string(name).map(Secret::new)
    }

    /// A parsed value.
    pub fn parse<T: std::str::FromStr>(&self, name: &'static str) -> Result<Option<T>, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.string(name) {
            None => Ok(None),
            Some(value) => value
                .trim()
                .parse()
                .map(Some)
                .map_err(|e: T::Err| ConfigError {
                    name,
                    value,
                    reason: e.to_string(),
                }),
        }
    }

    /// A boolean: `true/false`, `1/0`, `yes/no`, `on/off`, any case.
    pub fn flag(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.string(name) {
            None => Ok(default),
            Some(value) => match value.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(ConfigError {
                    name,
                    value,
                    reason: "expected true or false".into(),
                }),
            },
        }
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (variable name to value).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env::new(&lookup);
        let redis_url = match env.string("HDX_REDIS_URL") {
            Some(url) => url,
            None => format!(
                "redis://{}:{}/{}",
                env.string_or("HDX_REDIS_ADDR", "gisredis"),
                env.parse::<u16>("HDX_REDIS_PORT")?.unwrap_or(6379),
                env.parse::<u32>("HDX_REDIS_GISDB")?.unwrap_or(1),
            ),
        };
        Ok(Config {
            redis_url,
            worker_ttl: env.parse("HDX_REDIS_WORKER_TTL")?.unwrap_or(600),
            queues: env
                .string_or("QUEUES", "geo_q analytics_q")
                .split_whitespace()
                .map(str::to_string)
                .collect(),
            job_timeout: env.parse("RQ_WORKER_TIMEOUT")?.unwrap_or(180),
            log_level: env.string_or("LOG_LEVEL", "INFO"),
            ckan: CkanConfig::from_env(&env)?,
            events: EventsConfig::from_env(&env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_are_the_deployed_ones() {
        let c = config(&[]).expect("config");
        assert_eq!(c.redis_url, "redis://gisredis:6379/1");
        assert_eq!(c.worker_ttl, 600);
        assert_eq!(c.queues, vec!["geo_q", "analytics_q"]);
        assert_eq!(c.job_timeout, 180);
        assert_eq!(c.ckan.user_agent, "GISLAYER");
        assert!(c.ckan.verify_ssl);
        assert_eq!(
            c.ckan.resource_update_action,
            "hdx_resource_update_metadata"
        );
    }

    #[test]
    fn url_wins_over_parts() {
        let c =
            config(&[("HDX_REDIS_URL", "redis://x/3"), ("HDX_REDIS_ADDR", "y")]).expect("config");
        assert_eq!(c.redis_url, "redis://x/3");
        let c = config(&[
            ("HDX_REDIS_ADDR", "redis"),
            ("HDX_REDIS_PORT", "6380"),
            ("HDX_REDIS_GISDB", "4"),
        ])
        .expect("config");
        assert_eq!(c.redis_url, "redis://redis:6380/4");
    }

    #[test]
    fn bad_values_are_named() {
        let err = config(&[("HDX_REDIS_PORT", "abc")]).expect_err("bad");
        assert!(err.to_string().contains("HDX_REDIS_PORT"));
        let err = config(&[("VERIFY_CKAN_SSL", "maybe")]).expect_err("bad");
        assert!(err.to_string().contains("VERIFY_CKAN_SSL"));
    }

    #[test]
    fn event_stream_defaults_and_overrides() {
        let c = config(&[]).expect("config");
        assert_eq!(c.events.stream_url, "redis://redis:6379/7");
        assert_eq!(c.events.stream_name, "hdx_event_stream");
        assert_eq!(c.events.maxlen, 50_000);
        let c = config(&[("REDIS_STREAM_HOST", "r"), ("REDIS_STREAM_DB", "9")]).expect("config");
        assert_eq!(c.events.stream_url, "redis://r:6379/9");
        let c = config(&[
            ("REDIS_STREAM_URL", "redis://x/3"),
            ("REDIS_STREAM_DB", "9"),
        ])
        .expect("config");
        assert_eq!(c.events.stream_url, "redis://x/3");
    }

    #[test]
    fn fs_check_key_falls_back_and_keys_stay_hidden() {
        let c = config(&[("HDX_GIS_API_KEY", "k-123")]).expect("config");
        assert_eq!(
            c.ckan.fs_check_api_key.as_ref().map(Secret::expose),
            Some("k-123")
        );
        assert!(!format!("{c:?}").contains("k-123"));
    }
}
