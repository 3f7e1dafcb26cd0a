//! Secrets (API keys, tokens) that never show in logs, errors, `Debug` output or job results,
//! and the redaction of job data shown to operators ([`redact_value`], [`redact_text`]): a job's
//! arguments, meta and result may carry tokens (Mixpanel's, an old job's CKAN key, a signed
//! download URL), and the monitor, `hdx-jobs job show` and the API must not show them.

use std::fmt;

use serde_json::Value;

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Parts of a (lowercased) key name that mark its value as secret.
const SECRET_KEY_PARTS: [&str; 6] = [
    "token",
    "key",
    "secret",
    "password",
    "passwd",
    "authorization",
];

/// A secret string: `Debug` and `Display` print `***`; read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// True when a dict key or query parameter name says its value is secret (it contains
/// `token`, `key`, `secret`, `password`, `passwd` or `authorization`, in any case).
pub fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_KEY_PARTS.iter().any(|part| lower.contains(part))
}

/// Redacts a JSON value in place: the value of every object key that [`is_secret_name`] is
/// replaced by [`REDACTED`], and every string goes through [`redact_text`]. Iterative, so a
/// deep value cannot exhaust the stack.
pub fn redact_value(value: &mut Value) {
    let mut pending: Vec<&mut Value> = vec![value];
    while let Some(current) = pending.pop() {
        match current {
            Value::Object(map) => {
                for (key, item) in map.iter_mut() {
                    if is_secret_name(key) && !item.is_null() {
                        *item = Value::String(REDACTED.into());
                    } else {
                        pending.push(item);
                    }
                }
            }
            Value::Array(items) => pending.extend(items.iter_mut()),
            Value::String(text) => {
                if let Some(clean) = redact_url_credentials(text) {
                    *text = clean;
                }
            }
            _ => {}
        }
    }
}

/// Redacts secrets in free text (an error message, a description): credentials in URLs
/// (`https://user:pass@host`) and the values of secret-named query parameters (`?token=...`).
pub fn redact_text(text: &str) -> String {
    redact_url_credentials(text).unwrap_or_else(|| text.to_string())
}

/// The text with URL credentials and secret query values replaced, or `None` when it has none.
fn redact_url_credentials(text: &str) -> Option<String> {
    if !text.contains("://") && !text.contains('?') {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    let mut rest = text;
    while let Some(start) = rest.find("://") {
        let (before, after) = rest.split_at(start + 3);
        out.push_str(before);
        // The authority ends at the first '/', '?', '#' or whitespace or quote.
        let end = after
            .find(|c: char| matches!(c, '/' | '?' | '#' | '\'' | '"') || c.is_whitespace())
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str(REDACTED);
                out.push_str(&authority[at..]);
                changed = true;
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    let (query_clean, query_changed) = redact_secret_parameters(&out);
    (changed || query_changed).then_some(query_clean)
}

/// Replaces the values of `name=value` pairs after `?` or `&` whose name is secret.
fn redact_secret_parameters(text: &str) -> (String, bool) {
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    let mut chars = text.char_indices().peekable();
    let mut last = 0;
    while let Some((i, c)) = chars.next() {
        if c != '?' && c != '&' {
            continue;
        }
        let name_start = i + 1;
        let tail = &text[name_start..];
        let Some(eq) = tail.find('=') else { continue };
        let name = &tail[..eq];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '%'))
            || !is_secret_name(name)
        {
            continue;
        }
        let value_start = name_start + eq + 1;
        let value_len = text[value_start..]
            .find(|c: char| matches!(c, '&' | '#' | '\'' | '"') || c.is_whitespace())
            .unwrap_or(text.len() - value_start);
        out.push_str(&text[last..value_start]);
        out.push_str(REDACTED);
        last = value_start + value_len;
        changed = true;
        while chars.peek().is_some_and(|(j, _)| *j < last) {
            chars.next();
        }
    }
    out.push_str(&text[last..]);
    (out, changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_keys_and_url_credentials_are_redacted() {
        let mut value = json!({
            "mixpanel_token": "abc",
            "args": [{"ckan_api_key": "k", "Authorization": "Bearer x", "nested": {"db_password": "p"}}],
            "download_url": "https://user:hunter2@files.example/x.zip?sig=1&api_key=SECRET&x=2",
            "empty_token": null,
            "name": "roads",
        });
        redact_value(&mut value);
        let text = value.to_string();
        for secret in ["abc", "\"k\"", "Bearer x", "\"p\"", "hunter2", "SECRET"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(value["name"], "roads");
        assert_eq!(value["empty_token"], Value::Null);
        assert_eq!(
            value["download_url"],
            "https://[redacted]@files.example/x.zip?sig=1&api_key=[redacted]&x=2"
        );
        assert_eq!(
            redact_text("cannot reach http://a:b@h/p: refused"),
            "cannot reach http://[redacted]@h/p: refused"
        );
        assert_eq!(
            redact_text("plain ? text & more=1"),
            "plain ? text & more=1"
        );
        assert_eq!(redact_text("x?token=t"), "x?token=[redacted]");
    }

    #[test]
    fn deep_values_do_not_exhaust_the_stack() {
        let mut value = json!(null);
        for _ in 0..100_000 {
            value = Value::Array(vec![value]);
        }
        redact_value(&mut value);
        // Dropping it recursively would overflow: take it apart iteratively.
        let mut pending = vec![value];
        while let Some(v) = pending.pop() {
            if let Value::Array(items) = v {
                pending.extend(items);
            }
        }
    }

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
    }
}
