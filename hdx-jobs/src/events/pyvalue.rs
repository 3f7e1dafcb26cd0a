//! Python's `==` and truthiness on JSON values, because the old detector compared the decoded
//! dataset dicts with Python's rules (`True == 1`, `1 == 1.0`) and tested values with `if value`.

use serde_json::Value;

/// Python's `a == b` on the values `json.loads` would give.
pub fn py_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| py_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|other| py_eq(v, other)))
        }
        _ => match (number(a), number(b)) {
            (Some(x), Some(y)) => x.eq(&y),
            _ => false,
        },
    }
}

/// Python's `bool(value)`: shared with the analytics job, so kept in [`crate::python_json`].
pub use crate::python_json::truthy;

/// Python's `str(value)` for the scalar values CKAN sends (`True`, `5`, `1.5`); containers and
/// `None` as their JSON text.
pub fn py_str(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        other => other.to_string(),
    }
}

/// A number as Python sees it (bools are ints).
#[derive(Debug, Clone, Copy)]
enum PyNum {
    Int(i128),
    Float(f64),
}

impl PyNum {
    fn eq(&self, other: &PyNum) -> bool {
        match (*self, *other) {
            (PyNum::Int(a), PyNum::Int(b)) => a == b,
            (PyNum::Float(a), PyNum::Float(b)) => a == b,
            (PyNum::Int(i), PyNum::Float(f)) | (PyNum::Float(f), PyNum::Int(i)) => {
                f.fract() == 0.0 && f.is_finite() && (i as f64) == f && (f as i128) == i
            }
        }
    }
}

fn number(value: &Value) -> Option<PyNum> {
    match value {
        Value::Bool(b) => Some(PyNum::Int(i128::from(*b))),
        Value::Number(n) => n
            .as_i64()
            .map(|i| PyNum::Int(i128::from(i)))
            .or_else(|| n.as_u64().map(|u| PyNum::Int(i128::from(u))))
            .or_else(|| n.as_f64().map(PyNum::Float)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equality_follows_python() {
        assert!(py_eq(&json!(true), &json!(1)));
        assert!(py_eq(&json!(false), &json!(0.0)));
        assert!(py_eq(&json!(1), &json!(1.0)));
        assert!(!py_eq(&json!("1"), &json!(1)));
        assert!(!py_eq(&json!(null), &json!("")));
        assert!(py_eq(&json!({"a": [1, true]}), &json!({"a": [1.0, 1]})));
        assert!(!py_eq(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!py_eq(&json!(1.5), &json!(1)));
    }

    #[test]
    fn py_str_writes_python_s_str() {
        assert_eq!(py_str(&json!(true)), "True");
        assert_eq!(py_str(&json!(5)), "5");
    }
}
