//! Settings from the environment variables HDX deployments already set (see
//! `shared/spec/hdx-behaviour.md`, "Configuration"), with the old service's defaults.
//!
//! [`Config::from_env`] reads the process environment; [`Config::from_lookup`] takes any lookup
//! function so tests need not touch the environment. Binaries layer their flags on top (clap's
//! `env` support reads the same names).

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

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// Reads settings through `lookup` (variable name to value).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let redis_url = match lookup("HDX_REDIS_URL") {
            Some(url) => url,
            None => format!(
                "redis://{}:{}/{}",
                lookup("HDX_REDIS_ADDR").unwrap_or_else(|| "gisredis".into()),
                parse::<u16>(&lookup, "HDX_REDIS_PORT")?.unwrap_or(6379),
                parse::<u32>(&lookup, "HDX_REDIS_GISDB")?.unwrap_or(1),
            ),
        };
        Ok(Config {
            redis_url,
            worker_ttl: parse(&lookup, "HDX_REDIS_WORKER_TTL")?.unwrap_or(600),
            queues: lookup("QUEUES")
                .unwrap_or_else(|| "geo_q analytics_q".into())
                .split_whitespace()
                .map(str::to_string)
                .collect(),
            job_timeout: parse(&lookup, "RQ_WORKER_TIMEOUT")?.unwrap_or(180),
            log_level: lookup("LOG_LEVEL").unwrap_or_else(|| "INFO".into()),
        })
    }
}

fn parse<T: std::str::FromStr>(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<Option<T>, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match lookup(name) {
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
    fn bad_numbers_are_named() {
        let err = config(&[("HDX_REDIS_PORT", "abc")]).expect_err("bad");
        assert!(err.to_string().contains("HDX_REDIS_PORT"));
    }
}
