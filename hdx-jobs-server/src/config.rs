//! The server's settings: the library's [`Config`] plus what only the HTTP layer needs.

use std::net::SocketAddr;
use std::time::Duration;

use hdx_jobs::config::{Config, ConfigError, Env};
use hdx_jobs::outbound::IpNet;
use hdx_jobs::secret::Secret;

/// Settings of the HTTP API.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Everything the library reads from the environment.
    pub core: Config,
    /// Where to listen: `--bind`, else `HDX_JOBS_BIND` (e.g. `0.0.0.0:5000`, as the container
    /// image sets it), else 127.0.0.1:`APP_PORT` (default port 5000).
    pub bind: SocketAddr,
    /// Path of the monitor (`MONITOR_URL`, default `/monitor`).
    pub monitor_path: String,
    /// `HDX_JOBS_API_TOKEN`: `/api/*`, the monitor and `/metrics` need it (as a bearer token,
    /// or the Basic-auth password for the monitor and `/metrics`) unless the caller is in a
    /// trusted network. Set but empty is an error, never "open".
    pub api_token: Option<Secret>,
    /// `HDX_JOBS_TRUSTED_NETWORKS`: CIDRs whose callers need no token (CKAN on the same private
    /// network), comma separated.
    pub trusted_networks: Vec<IpNet>,
    /// `HDX_JOBS_TRUST_PROXY` (default false): honour `X-Forwarded-Host`/`-Proto` (only behind a
    /// proxy that sets them).
    pub trust_proxy: bool,
    /// `HDX_JOBS_TILE_STATEMENT_TIMEOUT` in seconds (default 5): the longest a tile query may run.
    pub tile_statement_timeout: Duration,
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
        if let Some(raw) = lookup("HDX_JOBS_API_TOKEN") {
            if raw.trim().is_empty() {
                return Err(ConfigError {
                    name: "HDX_JOBS_API_TOKEN",
                    value: raw,
                    reason: "an empty token would open the API: unset it, or set a token".into(),
                });
            }
        }
        let trusted_networks = env
            .string("HDX_JOBS_TRUSTED_NETWORKS")
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(|item| {
                        IpNet::parse(item).map_err(|e| ConfigError {
                            name: "HDX_JOBS_TRUSTED_NETWORKS",
                            value: list.clone(),
                            reason: e.to_string(),
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        let port: u16 = env.parse("APP_PORT")?.unwrap_or(5000);
        let monitor = env.string_or("MONITOR_URL", "/monitor");
        let monitor_path = format!("/{}", monitor.trim_matches('/'));
        Ok(ServerConfig {
            core,
            bind: env
                .parse("HDX_JOBS_BIND")?
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], port))),
            monitor_path,
            api_token: env.secret("HDX_JOBS_API_TOKEN"),
            trusted_networks,
            trust_proxy: env.flag("HDX_JOBS_TRUST_PROXY", false)?,
            tile_statement_timeout: env.seconds("HDX_JOBS_TILE_STATEMENT_TIMEOUT", 5.0)?,
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
        let c = ServerConfig::from_lookup(|k| match k {
            "APP_PORT" => Some("8080".into()),
            "HDX_JOBS_BIND" => Some("0.0.0.0:5000".into()),
            _ => None,
        })
        .expect("config");
        assert_eq!(c.bind.to_string(), "0.0.0.0:5000");
        assert!(
            ServerConfig::from_lookup(|k| (k == "HDX_JOBS_BIND").then(|| "nope".into())).is_err()
        );
    }

    #[test]
    fn an_empty_token_is_an_error_not_open() {
        for empty in ["", "  "] {
            let err = ServerConfig::from_lookup(|k| {
                (k == "HDX_JOBS_API_TOKEN").then(|| empty.to_string())
            })
            .expect_err("empty token");
            assert!(err.to_string().contains("HDX_JOBS_API_TOKEN"));
        }
        let c = ServerConfig::from_lookup(|k| {
            (k == "HDX_JOBS_TRUSTED_NETWORKS").then(|| "10.0.0.0/8, fd00::/8".to_string())
        })
        .expect("networks");
        assert_eq!(c.trusted_networks.len(), 2);
        assert!(ServerConfig::from_lookup(|k| {
            (k == "HDX_JOBS_TRUSTED_NETWORKS").then(|| "10.0.0.0/33".to_string())
        })
        .is_err());
    }
}
