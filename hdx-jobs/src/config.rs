//! Settings from the environment variables HDX deployments already set (listed in README.md,
//! "Configuration"), with the old service's defaults.
//!
//! [`Config::from_env`] reads the process environment; [`Config::from_lookup`] takes any lookup
//! function so tests need not touch the environment. Each area has its own section struct,
//! read through [`Env`]. Binaries layer their flags on top (clap's `env` reads the same names).
//! The sections of HDX's tasks exist with their crate feature (`geo`, `analytics`, `events`,
//! `http` for CKAN and outgoing calls): without them `Config` is the queue core's settings alone
//! and reads no variable of a task that is not built.
//! Secrets are [`Secret`]s: `Debug` never prints them.

use std::time::Duration;

use crate::secret::Secret;

/// Settings shared by the CLI, the worker and the server.
#[derive(Debug, Clone, PartialEq)]
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
    #[cfg(feature = "http")]
    pub ckan: CkanConfig,
    /// The PostGIS database of the layers.
    #[cfg(feature = "geo")]
    pub gis_db: crate::geo::config::GisDbConfig,
    /// Geopreview import settings.
    #[cfg(feature = "geo")]
    pub geopreview: crate::geo::config::GeopreviewConfig,
    /// Where analytics events go (Mixpanel, Google Analytics) and how they are delivered.
    #[cfg(feature = "analytics")]
    pub analytics: AnalyticsConfig,
    /// The event bus (Redis stream) of change events.
    #[cfg(feature = "events")]
    pub events: EventsConfig,
    /// Addresses that outgoing requests whose target comes from a job may reach besides public
    /// ones (`HDX_OUTBOUND_ALLOW`: CIDRs and host names, comma separated; default none).
    #[cfg(feature = "http")]
    pub outbound: crate::outbound::OutboundPolicy,
    /// Largest decompressed job payload, meta or result read from Redis
    /// (`HDX_JOBS_MAX_PAYLOAD_MB`, default 64): a payload over it fails its job.
    pub max_payload_bytes: usize,
    /// The serializer of jobs this process writes (`HDX_JOBS_SERIALIZER`: `pickle`, RQ's
    /// default, or `json` for Python sides using RQ's `JSONSerializer`; default pickle).
    pub serializer: crate::rq::payload::Serializer,
}

impl Config {
    /// Applies the process-wide settings of payloads (size cap, serializer of new jobs): the
    /// binaries call it once at start.
    pub fn apply_payload_settings(&self) {
        crate::rq::payload::set_max_payload_bytes(self.max_payload_bytes);
        crate::rq::payload::set_default_serializer(self.serializer);
    }
}

/// Event bus settings (the Redis stream change events go to).
#[cfg(feature = "events")]
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

#[cfg(feature = "events")]
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
#[cfg(feature = "http")]
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
    /// `HDX_CKAN_ALLOW_HTTP` (default false): downloads from the CKAN host over plain http carry
    /// the API key too (local stacks, tests). Otherwise only https does.
    pub allow_http: bool,
    /// `HDX_HXL_PROXY_URL`: when set, file-structure checks fetch only URLs under it.
    pub hxl_proxy_url: Option<String>,
}

#[cfg(feature = "http")]
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
            allow_http: env.flag("HDX_CKAN_ALLOW_HTTP", false)?,
            hxl_proxy_url: env.string("HDX_HXL_PROXY_URL"),
        })
    }
}

/// How `send_ga` jobs reach Google Analytics (`GA_MODE`).
#[cfg(feature = "analytics")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaMode {
    /// GA4 Measurement Protocol (`ga4`, the default).
    Ga4,
    /// The old Universal Analytics form post of `ga_meta` (`ua`), for UA-compatible collectors.
    Ua,
}

/// Analytics settings: Mixpanel, Google Analytics and delivery (timeouts, retries).
#[cfg(feature = "analytics")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalyticsConfig {
    /// `MIXPANEL_API_URL` (default `https://api.mixpanel.com`; `https://api-eu.mixpanel.com` or
    /// `https://api-in.mixpanel.com` for EU or India data residency).
    pub mixpanel_api_url: String,
    /// `MIXPANEL_API_SECRET`: the project secret; events then go to `/import`.
    pub mixpanel_api_secret: Option<Secret>,
    /// `MIXPANEL_SERVICE_ACCOUNT`: a service account's username; with
    /// `MIXPANEL_SERVICE_ACCOUNT_SECRET` and `MIXPANEL_PROJECT_ID`, events go to `/import`
    /// (preferred over the project secret).
    pub mixpanel_service_account: Option<String>,
    /// `MIXPANEL_SERVICE_ACCOUNT_SECRET`: the service account's secret.
    pub mixpanel_service_account_secret: Option<Secret>,
    /// `MIXPANEL_PROJECT_ID`: the project of the service account.
    pub mixpanel_project_id: Option<String>,
    /// `GA_MODE`: `ga4` (default) or `ua`.
    pub ga_mode: GaMode,
    /// `GA_MEASUREMENT_ID` (`G-...`); with `GA_API_SECRET` it turns GA4 delivery on.
    pub ga_measurement_id: Option<String>,
    /// `GA_API_SECRET`: the Measurement Protocol API secret of the stream.
    pub ga_api_secret: Option<Secret>,
    /// `GA_MP_URL` (default `https://www.google-analytics.com/mp/collect`).
    pub ga_mp_url: String,
    /// `GA_DEBUG`: send to the validation server (`.../debug/mp/collect`) and fail jobs on its
    /// validation messages; events sent there are not recorded by GA (default false).
    pub ga_debug: bool,
    /// `GA_UA_URL`: where `GA_MODE=ua` posts (default `https://ssl.google-analytics.com/collect`).
    pub ga_ua_url: String,
    /// `ANALYTICS_CONNECT_TIMEOUT` in seconds (default 3).
    pub connect_timeout: Duration,
    /// `ANALYTICS_READ_TIMEOUT` in seconds (default 3): sending the request and reading the
    /// answer, each.
    pub read_timeout: Duration,
    /// `ANALYTICS_MAX_ATTEMPTS`: tries per event and service within one job run (default 4).
    pub max_attempts: u32,
    /// `ANALYTICS_RETRY_BACKOFF` in seconds (default 2): the first wait, doubled each retry.
    pub retry_backoff: Duration,
    /// `ANALYTICS_RETRY_BACKOFF_MAX` in seconds (default 30): the longest wait within a run;
    /// a longer `Retry-After` ends the run with a retryable failure that carries it.
    pub retry_backoff_max: Duration,
}

#[cfg(feature = "analytics")]
impl AnalyticsConfig {
    /// Reads the section.
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let ga_mode = match env.string("GA_MODE") {
            None => GaMode::Ga4,
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "ga4" => GaMode::Ga4,
                "ua" => GaMode::Ua,
                _ => {
                    return Err(ConfigError {
                        name: "GA_MODE",
                        value: v,
                        reason: "expected ga4 or ua".into(),
                    })
                }
            },
        };
        let config = AnalyticsConfig {
            mixpanel_api_url: env
                .string_or("MIXPANEL_API_URL", "https://api.mixpanel.com")
                .trim_end_matches('/')
                .to_string(),
            mixpanel_api_secret: env.secret("MIXPANEL_API_SECRET"),
            mixpanel_service_account: env.string("MIXPANEL_SERVICE_ACCOUNT"),
            mixpanel_service_account_secret: env.secret("MIXPANEL_SERVICE_ACCOUNT_SECRET"),
            mixpanel_project_id: env.string("MIXPANEL_PROJECT_ID"),
            ga_mode,
            ga_measurement_id: env.string("GA_MEASUREMENT_ID"),
            ga_api_secret: env.secret("GA_API_SECRET"),
            ga_mp_url: env.string_or("GA_MP_URL", "https://www.google-analytics.com/mp/collect"),
            ga_debug: env.flag("GA_DEBUG", false)?,
            ga_ua_url: env.string_or("GA_UA_URL", "https://ssl.google-analytics.com/collect"),
            connect_timeout: env.seconds("ANALYTICS_CONNECT_TIMEOUT", 3.0)?,
            read_timeout: env.seconds("ANALYTICS_READ_TIMEOUT", 3.0)?,
            max_attempts: env.parse("ANALYTICS_MAX_ATTEMPTS")?.unwrap_or(4).max(1),
            retry_backoff: env.seconds("ANALYTICS_RETRY_BACKOFF", 2.0)?,
            retry_backoff_max: env.seconds("ANALYTICS_RETRY_BACKOFF_MAX", 30.0)?,
        };
        if let Some(account) = &config.mixpanel_service_account {
            if config.mixpanel_service_account_secret.is_none()
                || config.mixpanel_project_id.is_none()
            {
                return Err(ConfigError {
                    name: "MIXPANEL_SERVICE_ACCOUNT",
                    value: account.clone(),
                    reason: "a service account needs MIXPANEL_SERVICE_ACCOUNT_SECRET and \
                             MIXPANEL_PROJECT_ID too"
                        .into(),
                });
            }
        }
        if config.ga_debug
            && !config
                .ga_mp_url
                .trim_end_matches('/')
                .ends_with("/mp/collect")
        {
            return Err(ConfigError {
                name: "GA_MP_URL",
                value: config.ga_mp_url.clone(),
                reason: "GA_DEBUG needs a URL ending in /mp/collect (its validation server is \
                         .../debug/mp/collect)"
                    .into(),
            });
        }
        Ok(config)
    }

    /// True when GA4 delivery is configured (measurement id and API secret).
    pub fn ga4_configured(&self) -> bool {
        self.ga_measurement_id.is_some() && self.ga_api_secret.is_some()
    }
}

/// The worker's value of a setting that old jobs also carry in their argument dict (the old API
/// copied its environment into every job). Where the setting decides where secrets go or what
/// is written (CKAN's URL and host, TLS verification, the download folder, the table prefix),
/// the worker's configuration wins: anything that can write the queue could otherwise send the
/// API key elsewhere or write outside the download folder. A differing value in the job is
/// ignored with a warning.
pub fn worker_setting<T: PartialEq + std::fmt::Debug>(
    name: &str,
    from_job: Option<T>,
    configured: T,
) -> T {
    if let Some(value) = from_job.filter(|v| *v != configured) {
        tracing::warn!(
            setting = name,
            job = ?value,
            worker = ?configured,
            "the job's value of a worker setting is ignored"
        );
    }
    configured
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

    /// A duration given in seconds (decimals allowed), with a default.
    pub fn seconds(&self, name: &'static str, default: f64) -> Result<Duration, ConfigError> {
        let secs = self.parse::<f64>(name)?.unwrap_or(default);
        Duration::try_from_secs_f64(secs).map_err(|e| ConfigError {
            name,
            value: secs.to_string(),
            reason: e.to_string(),
        })
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
            #[cfg(feature = "http")]
            ckan: CkanConfig::from_env(&env)?,
            #[cfg(feature = "geo")]
            gis_db: crate::geo::config::GisDbConfig::from_env(&env)?,
            #[cfg(feature = "geo")]
            geopreview: crate::geo::config::GeopreviewConfig::from_env(&env)?,
            #[cfg(feature = "analytics")]
            analytics: AnalyticsConfig::from_env(&env)?,
            #[cfg(feature = "events")]
            events: EventsConfig::from_env(&env)?,
            #[cfg(feature = "http")]
            outbound: match env.string("HDX_OUTBOUND_ALLOW") {
                None => Default::default(),
                Some(list) => {
                    crate::outbound::OutboundPolicy::parse(&list).map_err(|e| ConfigError {
                        name: "HDX_OUTBOUND_ALLOW",
                        value: list.clone(),
                        reason: e.to_string(),
                    })?
                }
            },
            max_payload_bytes: env
                .parse::<usize>("HDX_JOBS_MAX_PAYLOAD_MB")?
                .unwrap_or(64)
                .saturating_mul(1024 * 1024),
            serializer: env
                .parse("HDX_JOBS_SERIALIZER")?
                .unwrap_or(crate::rq::payload::Serializer::Pickle),
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
    fn new_jobs_are_pickled_unless_json_is_chosen() {
        use crate::rq::payload::Serializer;
        assert_eq!(config(&[]).expect("config").serializer, Serializer::Pickle);
        for json in ["json", "JSON", " Json "] {
            let c = config(&[("HDX_JOBS_SERIALIZER", json)]).expect("config");
            assert_eq!(c.serializer, Serializer::Json, "{json:?}");
        }
        let err = config(&[("HDX_JOBS_SERIALIZER", "yaml")]).expect_err("refused");
        assert!(err.to_string().contains("HDX_JOBS_SERIALIZER"), "{err}");
    }

    #[test]
    fn defaults_are_the_deployed_ones() {
        let c = config(&[]).expect("config");
        assert_eq!(c.redis_url, "redis://gisredis:6379/1");
        assert_eq!(c.worker_ttl, 600);
        assert_eq!(c.queues, vec!["geo_q", "analytics_q"]);
        assert_eq!(c.job_timeout, 180);
        #[cfg(feature = "http")]
        {
            assert_eq!(c.ckan.user_agent, "GISLAYER");
            assert!(c.ckan.verify_ssl);
            assert_eq!(
                c.ckan.resource_update_action,
                "hdx_resource_update_metadata"
            );
        }
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
        #[cfg(feature = "http")]
        {
            let err = config(&[("VERIFY_CKAN_SSL", "maybe")]).expect_err("bad");
            assert!(err.to_string().contains("VERIFY_CKAN_SSL"));
        }
    }

    #[test]
    #[cfg(feature = "analytics")]
    fn analytics_defaults_and_checks() {
        let c = config(&[]).expect("config").analytics;
        assert_eq!(c.mixpanel_api_url, "https://api.mixpanel.com");
        assert_eq!(c.ga_mode, GaMode::Ga4);
        assert!(!c.ga4_configured() && !c.ga_debug);
        assert_eq!(c.ga_mp_url, "https://www.google-analytics.com/mp/collect");
        assert_eq!(c.connect_timeout, Duration::from_secs(3));
        assert_eq!(c.read_timeout, Duration::from_secs(3));
        let c = config(&[
            ("MIXPANEL_API_URL", "https://api-eu.mixpanel.com/"),
            ("GA_MODE", "UA"),
            ("ANALYTICS_READ_TIMEOUT", "0.25"),
            ("GA_API_SECRET", "ga-s3cret"),
            ("GA_MEASUREMENT_ID", "G-1"),
        ])
        .expect("config");
        assert_eq!(c.analytics.mixpanel_api_url, "https://api-eu.mixpanel.com");
        assert_eq!(c.analytics.ga_mode, GaMode::Ua);
        assert_eq!(c.analytics.read_timeout, Duration::from_millis(250));
        assert!(c.analytics.ga4_configured());
        assert!(!format!("{c:?}").contains("ga-s3cret"));
        for bad in [
            vec![("GA_MODE", "ga3")],
            vec![("ANALYTICS_CONNECT_TIMEOUT", "-1")],
            vec![("MIXPANEL_SERVICE_ACCOUNT", "sa.user")],
            vec![("GA_DEBUG", "true"), ("GA_MP_URL", "http://x/collect")],
        ] {
            assert!(config(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    #[cfg(feature = "events")]
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
    #[cfg(feature = "http")]
    fn fs_check_key_falls_back_and_keys_stay_hidden() {
        let c = config(&[("HDX_GIS_API_KEY", "k-123")]).expect("config");
        assert_eq!(
            c.ckan.fs_check_api_key.as_ref().map(Secret::expose),
            Some("k-123")
        );
        assert!(!format!("{c:?}").contains("k-123"));
    }
}
