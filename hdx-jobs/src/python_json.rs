//! JSON text exactly as Python's `json.dumps` writes it by default: `", "` and `": "`
//! separators, non-ASCII characters escaped as `\uXXXX` (UTF-16 surrogate pairs beyond the
//! BMP), floats with a fraction (`1.0`). RQ payloads, command messages and the `shape_info` CKAN
//! stores are compared byte for byte or parsed by Python code, so they are written this way
//! whichever service writes them.
//!
//! Also Python's truth value of a decoded JSON value ([`truthy`]), which both the event
//! detector and the analytics job need: it lives here, in a module neither depends on the other
//! for, so that each can be built without the other.

use serde_json::Value;

/// Python's `bool(value)` (`if value:`) on the value `json.loads` would give: `None`, `False`,
/// zero, and empty strings, lists and dicts are false; everything else is true.
pub fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// `json.dumps(value)`.
pub fn dumps(value: &Value) -> String {
    let mut out = String::new();
    write_value(value, &mut out);
    out
}

/// A number as Python writes it: integers as integers, whole floats as `1.0`.
pub fn number(n: &serde_json::Number) -> String {
    match n.as_f64() {
        Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e16 => format!("{f:.1}"),
        _ => n.to_string(),
    }
}

fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&number(n)),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_string(key, out);
                out.push_str(": ");
                write_value(item, out);
            }
            out.push('}');
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn truthy_follows_python_bool() {
        for v in [
            json!(null),
            json!(false),
            json!(0),
            json!(0.0),
            json!(""),
            json!([]),
            json!({}),
        ] {
            assert!(!truthy(&v), "{v}");
        }
        for v in [
            json!(true),
            json!(-1),
            json!(0.5),
            json!("0"),
            json!([null]),
            json!({"a": null}),
        ] {
            assert!(truthy(&v), "{v}");
        }
    }

    #[test]
    fn escapes_and_separators_like_json_dumps() {
        let v = json!({"name": "São \"Paulo\"\n", "n": 1.0, "l": [true, null, 2]});
        assert_eq!(
            dumps(&v),
            r#"{"name": "S\u00e3o \"Paulo\"\n", "n": 1.0, "l": [true, null, 2]}"#
        );
        assert_eq!(dumps(&json!("😀\u{1}")), "\"\\ud83d\\ude00\\u0001\"");
    }
}
