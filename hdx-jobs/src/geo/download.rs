//! Downloading the GIS file of a resource, as the old service did (docs/hdx-contract.md §3.3) and
//! safer: http and https only, every connection (each redirect hop too) through the [outbound
//! guard](crate::outbound), so a contributor's URL never reaches the worker's loopback, private
//! network or cloud metadata, redirects followed by hand (at most [`MAX_REDIRECTS`]), HDX's
//! User-Agent only for the CKAN host and the API key only over https to the CKAN host's configured
//! port (plain http only with `HDX_CKAN_ALLOW_HTTP`), and never again once a redirect left the host
//! or downgraded to plain http; a 12 s limit to connect and for each read, the whole download
//! within `TIMEOUT_SEC`, the size checked against the declared Content-Length and again while
//! streaming. The file name comes from Content-Disposition or the URL and is reduced to a safe
//! single name inside the job's folder.
//!
//! Blocking (ureq): run it in `spawn_blocking`; `should_stop` is polled between chunks.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use url::Url;

use super::failure::Failure;
use crate::outbound::{self, OutboundPolicy};
use crate::secret::Secret;

/// Redirects followed before giving up.
pub const MAX_REDIRECTS: u32 = 10;

/// Limit to connect, to get the first byte, and for every read (the old service's 12 s).
pub const READ_TIMEOUT: Duration = Duration::from_secs(12);

/// Extensions the URL's last segment may have to be used as the file name.
const ACCEPTED_EXTENSIONS: [&str; 5] = ["json", "geojson", "zip", "kml", "kmz"];

/// Longest file name kept (bytes).
const MAX_NAME_LEN: usize = 150;

/// How to download.
#[derive(Debug, Clone)]
pub struct DownloadSettings {
    /// Largest accepted file, in bytes.
    pub max_bytes: u64,
    /// Read buffer size, in bytes.
    pub chunk_size: usize,
    /// The whole download must end within this.
    pub timeout: Duration,
    /// The CKAN server's host (`data.humdata.org`, `host:port` or a URL): downloads from it
    /// carry the API key and the User-Agent.
    pub ckan_host: String,
    /// CKAN's API key (sent as `Authorization`).
    pub api_key: Option<Secret>,
    /// HDX's User-Agent.
    pub user_agent: String,
    /// Verify TLS certificates of the CKAN host (other hosts are always verified).
    pub verify_ckan_ssl: bool,
    /// Send the API key to the CKAN host over plain http too (`HDX_CKAN_ALLOW_HTTP`: local
    /// stacks and tests); otherwise only https carries it.
    pub ckan_allow_http: bool,
    /// Which addresses downloads may reach (`HDX_OUTBOUND_ALLOW`); the CKAN host is exempt.
    pub outbound: Arc<OutboundPolicy>,
}

/// A downloaded file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// Where it was written.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
}

/// Downloads `url` into `folder` (created, or emptied when it exists). `progress` gets the
/// bytes so far and the declared length.
pub fn download(
    url: &str,
    settings: &DownloadSettings,
    folder: &Path,
    should_stop: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<Downloaded, Failure> {
    let started = Instant::now();
    let original = parse_http_url(url)?;
    let policy = Arc::new(
        settings
            .outbound
            .as_ref()
            .clone()
            .exempt_host(&settings.ckan_host),
    );
    let ckan_agent = agent(settings.verify_ckan_ssl, policy.clone());
    let strict_agent = agent(true, policy);
    let mut trusted = is_ckan_host(&original, &settings.ckan_host);
    let mut current = original.clone();
    let mut previous_https = current.scheme() == "https";
    let mut redirects = 0;
    let mut response = loop {
        let on_ckan = is_ckan_host(&current, &settings.ckan_host);
        trusted &= on_ckan && !(previous_https && current.scheme() == "http");
        previous_https = current.scheme() == "https";
        let remaining = remaining(started, settings.timeout)?;
        let agent = if on_ckan { &ckan_agent } else { &strict_agent };
        let mut request = agent
            .get(current.as_str())
            .config()
            .timeout_global(Some(remaining))
            .build();
        if trusted {
            request = request.header("User-Agent", &settings.user_agent);
            if key_allowed(&current, &settings.ckan_host, settings.ckan_allow_http) {
                if let Some(key) = settings.api_key.as_ref().filter(|k| !k.is_empty()) {
                    request = request.header("Authorization", key.expose());
                }
            }
        }
        let response = request
            .call()
            .map_err(|e| transport_failure(&e, &current))?;
        let status = response.status();
        if status.is_redirection() {
            let Some(location) = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
            else {
                return Err(http_error(status.as_u16(), &current));
            };
            redirects += 1;
            if redirects > MAX_REDIRECTS {
                return Err(Failure::unknown(
                    "TooManyRedirects",
                    format!("Exceeded {MAX_REDIRECTS} redirects."),
                ));
            }
            let next = current.join(location).map_err(|_| {
                Failure::missing_url(format!(
                    "Url missing or has a problem: bad redirect location {location:?}"
                ))
            })?;
            current = check_scheme(next)?;
            continue;
        }
        if !status.is_success() {
            return Err(http_error(status.as_u16(), &current));
        }
        break response;
    };

    let declared = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > settings.max_bytes) {
        return Err(Failure::too_large("response too large"));
    }
    let disposition = response
        .headers()
        .get("content-disposition")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let name = file_name(disposition.as_deref(), &original, &current).ok_or_else(|| {
        Failure::unknown("ValueError", "CKAN resource filename could not be deduced")
    })?;
    recreate_folder(folder)?;
    let path = folder.join(&name);
    let mut file = File::create(&path).map_err(|e| {
        Failure::folder(format!(
            "A problem occured while creating file {}: {e}",
            path.display()
        ))
    })?;

    let mut reader = response.body_mut().with_config().reader();
    let mut buffer = vec![0u8; settings.chunk_size.clamp(8 * 1024, 16 * 1024 * 1024)];
    let mut size: u64 = 0;
    loop {
        if should_stop() {
            return Err(Failure::timeout("timeout reached"));
        }
        let n = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_failure(&e)),
        };
        size += n as u64;
        if size > settings.max_bytes {
            return Err(Failure::too_large("response too large"));
        }
        if started.elapsed() > settings.timeout {
            return Err(Failure::timeout("timeout reached"));
        }
        file.write_all(&buffer[..n]).map_err(|e| {
            Failure::unknown("OSError", format!("cannot write the downloaded file: {e}"))
        })?;
        progress(size, declared);
    }
    file.flush().map_err(|e| {
        Failure::unknown("OSError", format!("cannot write the downloaded file: {e}"))
    })?;
    Ok(Downloaded { path, bytes: size })
}

/// Deletes `folder` if it exists and makes it again (`folder-creation-problem` on failure).
pub fn recreate_folder(folder: &Path) -> Result<(), Failure> {
    let result = (|| {
        if folder.exists() {
            std::fs::remove_dir_all(folder)?;
        }
        std::fs::create_dir_all(folder)
    })();
    result.map_err(|e| {
        Failure::folder(format!(
            "A problem occured while creating folder {}: {e}",
            folder.display()
        ))
    })
}

/// An agent whose every connection passes the outbound guard.
fn agent(verify_tls: bool, policy: Arc<OutboundPolicy>) -> ureq::Agent {
    let tls = ureq::tls::TlsConfig::builder()
        .disable_verification(!verify_tls)
        .build();
    let config = ureq::Agent::config_builder()
        .timeout_connect(Some(READ_TIMEOUT))
        .timeout_recv_response(Some(READ_TIMEOUT))
        .timeout_per_read(Some(READ_TIMEOUT))
        .http_status_as_error(false)
        .max_redirects(0)
        .tls_config(tls);
    outbound::guarded_agent(config, policy)
}

fn remaining(started: Instant, timeout: Duration) -> Result<Duration, Failure> {
    timeout
        .checked_sub(started.elapsed())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| Failure::timeout("timeout reached"))
}

/// Parses a download URL; only http and https are accepted.
pub fn parse_http_url(url: &str) -> Result<Url, Failure> {
    let parsed =
        Url::parse(url.trim()).map_err(|_| Failure::missing_url("Url missing or has a problem"))?;
    check_scheme(parsed)
}

fn check_scheme(url: Url) -> Result<Url, Failure> {
    match url.scheme() {
        "http" | "https" if url.host_str().is_some_and(|h| !h.is_empty()) => Ok(url),
        _ => Err(Failure::missing_url(
            "Url missing or has a problem: only http and https URLs are downloaded",
        )),
    }
}

/// True when `url` is on the CKAN host. `ckan` is a host, `host:port`, or a URL; without a port
/// any port of that host matches.
pub fn is_ckan_host(url: &Url, ckan: &str) -> bool {
    let Some(spec) = ckan_spec(ckan) else {
        return false;
    };
    let (Some(want), Some(have)) = (spec.host_str(), url.host_str()) else {
        return false;
    };
    if !want.eq_ignore_ascii_case(have) {
        return false;
    }
    match spec.port() {
        Some(port) => url.port_or_known_default() == Some(port),
        None => true,
    }
}

/// True when a request to `url` may carry the API key: it is on the CKAN host, at the CKAN
/// host's configured port (443 for https, 80 for http, unless `HDX_DOMAIN` names one), over
/// https, or over plain http when `allow_http` (`HDX_CKAN_ALLOW_HTTP`) says so.
pub fn key_allowed(url: &Url, ckan: &str, allow_http: bool) -> bool {
    let Some(spec) = ckan_spec(ckan) else {
        return false;
    };
    if !is_ckan_host(url, ckan) {
        return false;
    }
    let scheme_ok = url.scheme() == "https" || (url.scheme() == "http" && allow_http);
    let port = spec.port().or_else(|| {
        if url.scheme() == "https" {
            Some(443)
        } else {
            Some(80)
        }
    });
    scheme_ok && url.port_or_known_default() == port
}

/// `HDX_DOMAIN` as a URL (a bare host or `host:port` gets `http://`).
fn ckan_spec(ckan: &str) -> Option<Url> {
    let ckan = ckan.trim().trim_end_matches('/');
    if ckan.is_empty() {
        return None;
    }
    if ckan.contains("://") {
        Url::parse(ckan).ok()
    } else {
        Url::parse(&format!("http://{ckan}")).ok()
    }
}

/// The file name: Content-Disposition's `filename*=` or `filename=`, else the last segment of
/// the URL (original, then final) when its extension is one the importer takes. Made safe:
/// one name, letters, digits, `.`, `-` and `_` only.
pub fn file_name(disposition: Option<&str>, original: &Url, last: &Url) -> Option<String> {
    if let Some(name) = disposition.and_then(disposition_name) {
        if let Some(safe) = sanitize_file_name(&name) {
            return Some(safe);
        }
    }
    for url in [original, last] {
        let segment = url
            .path_segments()
            .and_then(|mut s| s.next_back())
            .unwrap_or("");
        let segment = crate::http::percent_decode(segment);
        let extension = segment
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase());
        if extension.is_some_and(|e| ACCEPTED_EXTENSIONS.contains(&e.as_str())) {
            if let Some(safe) = sanitize_file_name(&segment) {
                return Some(safe);
            }
        }
    }
    None
}

/// The file name in a Content-Disposition value (RFC 6266; `filename*` wins).
fn disposition_name(value: &str) -> Option<String> {
    let params: Vec<(String, String)> = split_params(value)
        .into_iter()
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    if let Some((_, v)) = params.iter().find(|(k, _)| k == "filename*") {
        // charset'language'percent-encoded
        let encoded = v.splitn(3, '\'').nth(2).unwrap_or(v);
        let decoded = crate::http::percent_decode(encoded.trim_matches('"'));
        if !decoded.is_empty() {
            return Some(decoded);
        }
    }
    params
        .into_iter()
        .find(|(k, _)| k == "filename")
        .map(|(_, v)| v.replace('"', ""))
        .filter(|v| !v.is_empty())
}

/// Splits on `;` outside double quotes.
fn split_params(value: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in value.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ';' if !quoted => parts.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    parts.push(current);
    parts
}

/// One safe file name: the part after the last `/` or `\`, characters other than letters,
/// digits, `.`, `-`, `_` turned into `_`, no leading dot, at most `MAX_NAME_LEN` (150) bytes
/// (keeping the extension). `None` when nothing usable is left.
pub fn sanitize_file_name(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("").trim();
    let mut safe: String = base
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.starts_with('.') {
        safe.insert(0, '_');
    }
    if safe.len() > MAX_NAME_LEN {
        let extension = safe
            .rsplit_once('.')
            .map(|(_, e)| format!(".{e}"))
            .filter(|e| e.len() < 20)
            .unwrap_or_default();
        let mut end = MAX_NAME_LEN - extension.len();
        while !safe.is_char_boundary(end) {
            end -= 1;
        }
        safe.truncate(end);
        safe.push_str(&extension);
    }
    let meaningful = safe.chars().any(|c| c.is_alphanumeric());
    (meaningful && safe != "." && safe != "..").then_some(safe)
}

/// The URL without its query (signed URLs carry tokens), for messages.
fn shown(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.set_fragment(None);
    let _ = url.set_password(None);
    let _ = url.set_username("");
    url.to_string()
}

fn http_error(status: u16, url: &Url) -> Failure {
    let reason = ureq::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let side = if status >= 500 {
        "Server Error"
    } else {
        "Client Error"
    };
    Failure::unknown(
        "HTTPError",
        format!("{status} {side}: {reason} for url: {}", shown(url)),
    )
}

fn transport_failure(error: &ureq::Error, url: &Url) -> Failure {
    if outbound::refusal(error).is_some() {
        return Failure::address_not_allowed(url.host_str().unwrap_or(""));
    }
    match error {
        ureq::Error::Timeout(_) => Failure::timeout("timeout reached"),
        ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            Failure::timeout("timeout reached")
        }
        other => Failure::unknown(
            "ConnectionError",
            format!("cannot download {}: {other}", shown(url)),
        ),
    }
}

fn read_failure(error: &std::io::Error) -> Failure {
    let inner_timeout = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<ureq::Error>())
        .is_some_and(|e| matches!(e, ureq::Error::Timeout(_)));
    if error.kind() == std::io::ErrorKind::TimedOut || inner_timeout {
        Failure::timeout("timeout reached")
    } else {
        Failure::unknown(
            "ConnectionError",
            format!("the download was cut off: {error}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).expect("url")
    }

    #[test]
    fn only_http_and_https() {
        assert!(parse_http_url("https://data.humdata.org/x.zip").is_ok());
        for bad in [
            "file:///etc/passwd",
            "ftp://x/y.zip",
            "",
            "not a url",
            "http://",
        ] {
            let failure = parse_http_url(bad).expect_err(bad);
            assert_eq!(failure.kind.as_str(), "missing-url", "{bad}");
        }
    }

    #[test]
    fn ckan_host_matching_is_by_host_not_substring() {
        let ckan = "data.humdata.org";
        assert!(is_ckan_host(
            &url("https://data.humdata.org/dataset/x"),
            ckan
        ));
        assert!(is_ckan_host(&url("https://DATA.humdata.org:8443/x"), ckan));
        assert!(!is_ckan_host(
            &url("https://evil.example/?data.humdata.org"),
            ckan
        ));
        assert!(!is_ckan_host(
            &url("https://data.humdata.org.evil.example/"),
            ckan
        ));
        assert!(is_ckan_host(
            &url("http://127.0.0.1:8080/f"),
            "127.0.0.1:8080"
        ));
        assert!(!is_ckan_host(
            &url("http://127.0.0.1:8081/f"),
            "127.0.0.1:8080"
        ));
        assert!(is_ckan_host(&url("https://a.org/f"), "https://a.org/"));
        assert!(!is_ckan_host(&url("https://a.org/f"), ""));
    }

    /// The API key goes over https to the CKAN host's configured port only (or plain http with
    /// `HDX_CKAN_ALLOW_HTTP`): never to another port of that host, nor to plain http by default.
    #[test]
    fn the_api_key_goes_only_over_https_to_the_configured_port() {
        let ckan = "data.humdata.org";
        assert!(key_allowed(&url("https://data.humdata.org/x"), ckan, false));
        assert!(!key_allowed(
            &url("https://data.humdata.org:8443/x"),
            ckan,
            false
        ));
        assert!(!key_allowed(&url("http://data.humdata.org/x"), ckan, false));
        assert!(key_allowed(&url("http://data.humdata.org/x"), ckan, true));
        assert!(!key_allowed(&url("https://evil.example/x"), ckan, true));
        assert!(key_allowed(&url("https://h:8443/x"), "h:8443", false));
        assert!(!key_allowed(&url("https://h/x"), "h:8443", false));
        assert!(!key_allowed(
            &url("http://127.0.0.1:9/x"),
            "127.0.0.1:9",
            false
        ));
        assert!(key_allowed(
            &url("http://127.0.0.1:9/x"),
            "127.0.0.1:9",
            true
        ));
        assert!(!key_allowed(&url("http://127.0.0.1:9/x"), "", true));
    }

    #[test]
    fn file_names_follow_the_old_rules_and_stay_inside_the_folder() {
        let u = url("http://h/download/data.geojson?x=1");
        let other = url("http://h/download/file");
        assert_eq!(
            file_name(Some("attachment; filename=\"a b.zip\""), &other, &other),
            Some("a_b.zip".into())
        );
        assert_eq!(
            file_name(Some("attachment; filename=x.kml; size=3"), &other, &other),
            Some("x.kml".into())
        );
        assert_eq!(
            file_name(
                Some("attachment; filename*=UTF-8''S%C3%A3o%20Paulo.geojson"),
                &other,
                &other
            ),
            Some("São_Paulo.geojson".into())
        );
        assert_eq!(
            file_name(
                Some("attachment; filename=\"../../etc/passwd\""),
                &other,
                &other
            ),
            Some("passwd".into())
        );
        assert_eq!(
            file_name(Some("attachment; filename=\"..\""), &u, &u),
            Some("data.geojson".into())
        );
        assert_eq!(file_name(None, &u, &other), Some("data.geojson".into()));
        assert_eq!(file_name(None, &other, &u), Some("data.geojson".into()));
        assert_eq!(file_name(None, &other, &other), None);
        assert_eq!(
            file_name(None, &url("http://h/x.csv"), &url("http://h/x.csv")),
            None
        );
        assert_eq!(sanitize_file_name(".geojson"), Some("_.geojson".into()));
        let long = format!("{}.geojson", "a".repeat(400));
        let safe = sanitize_file_name(&long).expect("long");
        assert!(safe.len() <= MAX_NAME_LEN && safe.ends_with(".geojson"));
    }

    #[test]
    fn errors_read_like_requests() {
        let f = http_error(404, &url("http://h:1/a/b.zip?sig=secret"));
        assert_eq!(f.class, "HTTPError");
        assert_eq!(
            f.message,
            "404 Client Error: Not Found for url: http://h:1/a/b.zip"
        );
        assert_eq!(f.kind.as_str(), "unknown");
    }
}
