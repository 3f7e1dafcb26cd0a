//! The server's settings: the library's [`Config`] plus what only the HTTP layer needs.

use std::net::SocketAddr;

use hdx_jobs::config::{Config, ConfigError, Env};
use hdx_jobs::secret::Secret;

/// Settings of the HTTP API.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Everything the library reads from the environment.
    pub core: Config,
    /// Where to listen (`--bind`, else 127.0.0.1:`APP_PORT`, default port 5000).
    pub bind: SocketAddr,
    /// Path of the monitor (`MONITOR_URL`, default `/monitor`).
    pub monitor_path: String,
    /// `HDX_JOBS_API_TOKEN`: when set, `/api/*` and the monitor's actions need
    /// `Authorization: Bearer <token>`.
    pub api_token: Option<Secret>,
    /// `EVENTS_API_ENABLED` (`true` enables the change-events endpoint).
    pub events_api_enabled: bool,
    /// Largest request body accepted (`HDX_JOBS_MAX_BODY_BYTES`, default 32 MiB: CKAN dataset
    /// dicts with hundreds of resources are big).
    pub max_body_bytes: usize,
    /// Memory for cached tiles (`HDX_JOBS_TILE_CACHE_MB`, default 256).
    pub tile_cache_bytes: u64,
}

impl ServerConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let core = Config::from_lookup(&lookup)?;
        let env = Env::new(&lookup);
        let port: u16 = env.parse("APP_PORT")?.unwrap_or(5000);
        let monitor = env.string_or("MONITOR_URL", "/monitor");
        let monitor_path = format!("/{}", monitor.trim_matches('/'));
        Ok(ServerConfig {
            core,
            bind: SocketAddr::from(([127, 0, 0, 1], port)),
            monitor_path,
            api_token: env.secret("HDX_JOBS_API_TOKEN"),
            events_api_enabled: env
                .string("EVENTS_API_ENABLED")
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
            max_body_bytes: env
                .parse("HDX_JOBS_MAX_BODY_BYTES")?
                .unwrap_or(32 * 1024 * 1024),
            tile_cache_bytes: env.parse::<u64>("HDX_JOBS_TILE_CACHE_MB")?.unwrap_or(256)
                * 1024
                * 1024,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c = ServerConfig::from_lookup(|_| None).expect("config");
        assert_eq!(c.bind.to_string(), "127.0.0.1:5000");
        assert_eq!(c.monitor_path, "/monitor");
        assert!(!c.events_api_enabled);
        let c = ServerConfig::from_lookup(|k| match k {
            "APP_PORT" => Some("8080".into()),
            "MONITOR_URL" => Some("ops/rq/".into()),
            "EVENTS_API_ENABLED" => Some("True".into()),
            _ => None,
        })
        .expect("config");
        assert_eq!(c.bind.port(), 8080);
        assert_eq!(c.monitor_path, "/ops/rq");
        assert!(c.events_api_enabled);
    }
}
