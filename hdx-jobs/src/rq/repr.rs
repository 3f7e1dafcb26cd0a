//! Python's `repr` of JSON values, as RQ shows a job's arguments in its description
//! (`func({'a': 1}, 'text')`, each argument's repr cut at 75 characters). rq-dashboard and
//! `rq info` show the description; Python's workers never parse it.

use serde_json::Value;

use crate::python_json;

/// Characters of an argument's repr that a description keeps (RQ's cut).
const DESCRIPTION_REPR_CHARS: usize = 75;

/// Python's `repr` of a JSON value, cut like RQ's description (75 characters + `...`). Only the
/// beginning is written (see [`ReprHead`]), so a big argument costs no more than a small one.
pub fn truncated_repr(value: &Value) -> String {
    let mut head = ReprHead::default();
    write_repr(&mut head.text, value, ReprHead::STOP);
    head.finish()
}

/// The beginning of a repr, written piece by piece (by a writer that never holds the whole
/// value, such as the JSON-to-pickle transcoder) and cut like RQ's description at the end.
/// Writing stops once the text holds enough bytes for 76 characters (4 bytes each at most):
/// what follows would be cut anyway.
#[derive(Debug, Default)]
pub struct ReprHead {
    text: String,
}

impl ReprHead {
    /// Bytes after which nothing more is written.
    const STOP: usize = 4 * (DESCRIPTION_REPR_CHARS + 1);

    /// Whether more text would still show in the cut repr.
    pub fn wants_more(&self) -> bool {
        self.text.len() < Self::STOP
    }

    /// Appends literal repr text (`{`, `, `, `True`, a number).
    pub fn push(&mut self, text: &str) {
        if self.wants_more() {
            self.text.push_str(text);
        }
    }

    /// Appends the repr of a string (quoted and escaped as Python does).
    pub fn push_str_repr(&mut self, s: &str) {
        if self.wants_more() {
            write_str_repr(&mut self.text, s, Self::STOP);
        }
    }

    /// The repr cut at 75 characters, with `...` when it was longer.
    pub fn finish(self) -> String {
        match self.text.char_indices().nth(DESCRIPTION_REPR_CHARS) {
            Some((cut, _)) => format!("{}...", &self.text[..cut]),
            None => self.text,
        }
    }
}

/// Python's `repr` of a JSON value: `{'a': 1}`, `'text'`, `True`, `None`, `[1, 2]`.
#[cfg(test)]
fn python_repr(value: &Value) -> String {
    let mut out = String::new();
    write_repr(&mut out, value, usize::MAX);
    out
}

/// Appends the repr of `value` to `out`, stopping (mid-way) once `out` holds `stop` bytes.
fn write_repr(out: &mut String, value: &Value, stop: usize) {
    if out.len() >= stop {
        return;
    }
    match value {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => out.push_str(&python_json::number(n)),
        Value::String(s) => write_str_repr(out, s, stop),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if out.len() >= stop {
                    return;
                }
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(out, item, stop);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if out.len() >= stop {
                    return;
                }
                if i > 0 {
                    out.push_str(", ");
                }
                write_str_repr(out, k, stop);
                out.push_str(": ");
                write_repr(out, v, stop);
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
fn python_str_repr(s: &str) -> String {
    let mut out = String::new();
    write_str_repr(&mut out, s, usize::MAX);
    out
}

/// Appends Python's repr of a string, stopping once `out` holds `stop` bytes.
fn write_str_repr(out: &mut String, s: &str, stop: usize) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    // Runs of characters that need no escape are copied whole (descriptions are long).
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let escape: Option<std::borrow::Cow<'static, str>> = match c {
            '\\' => Some("\\\\".into()),
            '\n' => Some("\\n".into()),
            '\r' => Some("\\r".into()),
            '\t' => Some("\\t".into()),
            c if c == quote => Some(if c == '\'' { "\\'" } else { "\\\"" }.into()),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                Some(format!("\\x{:02x}", c as u32).into())
            }
            _ => None,
        };
        if let Some(escape) = escape {
            out.push_str(&s[start..i]);
            out.push_str(&escape);
            start = i + c.len_utf8();
            if out.len() >= stop {
                return;
            }
        }
    }
    out.push_str(&s[start..]);
    out.push(quote);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_are_quoted_as_python_s_repr_quotes_them() {
        // Expected values printed by Python 3.11's repr().
        for (text, repr) in [
            ("it's", r#""it's""#),
            ("a'b\"c", r#"'a\'b"c'"#),
            ("tab\tend\n", r"'tab\tend\n'"),
            ("\u{1}\u{7f}", r"'\x01\x7f'"),
            ("é ünï", "'é ünï'"),
            ("back\\slash", r"'back\\slash'"),
            ("", "''"),
        ] {
            assert_eq!(python_str_repr(text), repr, "{text:?}");
        }
    }

    #[test]
    fn a_description_cut_early_equals_the_whole_repr_cut() {
        let cut = |text: String| -> String {
            if text.chars().count() > 75 {
                format!("{}...", text.chars().take(75).collect::<String>())
            } else {
                text
            }
        };
        let values = [
            json!({"name": "é".repeat(200), "tags": [{"a": "it's"}, null, true, 1.5]}),
            json!(["\u{1}\t'\"".repeat(40), {"k": "ünï"}]),
            json!({"short": 1}),
            json!("x".repeat(74)),
            json!("x".repeat(75)),
            json!("x".repeat(76)),
            json!("日本語".repeat(100)),
        ];
        for value in values {
            assert_eq!(truncated_repr(&value), cut(python_repr(&value)), "{value}");
        }
    }
}
