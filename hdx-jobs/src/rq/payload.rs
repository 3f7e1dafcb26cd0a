//! The job payload and RQ's two serializers (docs/rq-protocol.md §3).
//!
//! `data` is `zlib(serializer((func_name, instance, args, kwargs)))`. RQ records nowhere which
//! serializer wrote it, so readers detect it: a pickle starts with the PROTO opcode `0x80`, JSON
//! with `[`. Whatever serializer a job's payload used is also used for its `meta` and result, so a
//! Python client that enqueued with pickle can read what we write back.
//!
//! We write pickle by default ([`default_serializer`]), because every Python reader with RQ's
//! default serializer (rq-dashboard, rq 1.13 workers, scripts calling `Job.fetch`) fails on JSON;
//! JSON (Python's `json.dumps` spacing, ASCII-escaped) by setting (`HDX_JOBS_SERIALIZER=json`,
//! for deployments whose Python side uses RQ's `JSONSerializer`). Both are always read; results
//! and meta of a job are written with the serializer of its payload.
//!
//! Payloads come from anything that can write Redis, so reading one is bounded: the zlib output is
//! capped ([`max_payload_bytes`], `HDX_JOBS_MAX_PAYLOAD_MB`), pickles are read within the limits of
//! our reader (`rq/pickle.rs`, `Limits`), JSON within serde_json's nesting limit. A payload over a
//! limit is an error naming the limit, which fails its job; nothing here can abort the process.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use flate2::{read::ZlibDecoder, write::ZlibEncoder, Compression};
use serde::Serialize;
use serde_json::{Map, Value};

use super::pickle;
use crate::python_json;

/// Default cap of a decompressed payload, meta or result: 64 MiB.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 64 * 1024 * 1024;

static MAX_PAYLOAD_BYTES: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_PAYLOAD_BYTES);

/// The cap on decompressed payloads in this process.
pub fn max_payload_bytes() -> usize {
    MAX_PAYLOAD_BYTES.load(Ordering::Relaxed)
}

/// Sets the cap on decompressed payloads for this process (`HDX_JOBS_MAX_PAYLOAD_MB`; the
/// binaries call it at start). Process-wide because payloads are decoded wherever a job is
/// read, far from any configuration.
pub fn set_max_payload_bytes(bytes: usize) {
    MAX_PAYLOAD_BYTES.store(bytes.max(1024), Ordering::Relaxed);
}

/// The serializer of a job's payload, meta and results.
///
/// No `Default`: which one new jobs get is a process setting, [`default_serializer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Serializer {
    /// `rq.serializers.JSONSerializer`.
    Json,
    /// Python's pickle, RQ's default serializer (plain data only).
    Pickle,
}

impl std::str::FromStr for Serializer {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "pickle" => Ok(Serializer::Pickle),
            "json" => Ok(Serializer::Json),
            _ => Err("expected pickle or json".into()),
        }
    }
}

static WRITE_JSON: AtomicBool = AtomicBool::new(false);

/// The serializer new jobs are written with in this process: pickle unless
/// [`set_default_serializer`] chose JSON.
pub fn default_serializer() -> Serializer {
    if WRITE_JSON.load(Ordering::Relaxed) {
        Serializer::Json
    } else {
        Serializer::Pickle
    }
}

/// Chooses the serializer new jobs are written with in this process (`HDX_JOBS_SERIALIZER`;
/// the binaries call it at start, like [`set_max_payload_bytes`]).
pub fn set_default_serializer(serializer: Serializer) {
    WRITE_JSON.store(serializer == Serializer::Json, Ordering::Relaxed);
}

/// Errors decoding or encoding payloads.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The bytes are neither a pickle nor a JSON document.
    #[error("payload is neither pickle nor JSON: {0}")]
    Undecodable(String),
    /// The document is not RQ's `(func_name, instance, args, kwargs)`.
    #[error("payload is not RQ's (func_name, instance, args, kwargs) tuple: {0}")]
    BadShape(String),
    /// The pickle cannot be read (malformed, or over one of its limits).
    #[error("pickle payload cannot be read: {0}")]
    Pickle(#[from] pickle::PickleError),
    /// The payload decompresses to more than [`max_payload_bytes`].
    #[error("payload decompresses to more than {0} bytes (HDX_JOBS_MAX_PAYLOAD_MB)")]
    TooLarge(usize),
    /// A value could not be encoded.
    #[error("cannot encode value: {0}")]
    Encode(String),
}

/// A decoded job call: what to run and with which arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct CallPayload {
    /// RQ's `func_name`: the wire name of the task.
    pub func_name: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// The serializer the payload was written with.
    pub serializer: Serializer,
}

impl CallPayload {
    /// Encodes the call as a job's `data` field: zlib of the serialized 4-tuple.
    pub fn encode(&self) -> Result<Vec<u8>, PayloadError> {
        let tuple = Value::Array(vec![
            Value::String(self.func_name.clone()),
            Value::Null,
            Value::Array(self.args.clone()),
            Value::Object(self.kwargs.clone()),
        ]);
        let bytes = match self.serializer {
            Serializer::Json => to_python_json(&tuple),
            // A list where Python writes a tuple: RQ unpacks either.
            Serializer::Pickle => {
                pickle::encode(&tuple).map_err(|e| PayloadError::Encode(e.to_string()))?
            }
        };
        Ok(zlib_compress(&bytes))
    }

    /// Decodes a job's `data` field, detecting the serializer.
    pub fn decode(data: &[u8]) -> Result<Self, PayloadError> {
        let raw = decompress_bounded(data, max_payload_bytes())?;
        let (value, serializer) = decode_value(&raw)?;
        let Value::Array(mut parts) = value else {
            return Err(PayloadError::BadShape("not a tuple".into()));
        };
        if parts.len() != 4 {
            return Err(PayloadError::BadShape(format!(
                "{} elements, not 4",
                parts.len()
            )));
        }
        let kwargs = match parts.pop() {
            Some(Value::Object(map)) => map,
            Some(Value::Null) => Map::new(),
            _ => return Err(PayloadError::BadShape("kwargs is not a dict".into())),
        };
        let args = match parts.pop() {
            Some(Value::Array(args)) => args,
            Some(Value::Null) => Vec::new(),
            _ => return Err(PayloadError::BadShape("args is not a tuple or list".into())),
        };
        match parts.pop() {
            Some(Value::Null) => {}
            _ => {
                return Err(PayloadError::BadShape(
                    "instance methods are not supported".into(),
                ))
            }
        }
        let func_name = match parts.pop() {
            Some(Value::String(name)) if !name.is_empty() => name,
            _ => return Err(PayloadError::BadShape("func_name is not a string".into())),
        };
        Ok(CallPayload {
            func_name,
            args,
            kwargs,
            serializer,
        })
    }

    /// The task name of a job's `data` field, read without decoding the payload: the first
    /// string of the pickle, or of the JSON array. For logs and metrics of jobs whose payload
    /// may be poison (maintenance recovering an abandoned job).
    pub fn func_name_of(data: &[u8]) -> Option<String> {
        // The name comes first: a few kilobytes of output hold it.
        let head = decompress_bounded(data, 64 * 1024).or_else(|e| match e {
            PayloadError::TooLarge(_) => Ok(decompress_prefix(data, 64 * 1024)),
            other => Err(other),
        });
        let head = head.ok()?;
        if head.first() == Some(&0x80) {
            return pickle::leading_string(&head);
        }
        let rest = head.strip_prefix(b"[")?;
        let start = rest.iter().position(|b| !b.is_ascii_whitespace())?;
        let mut stream = serde_json::Deserializer::from_slice(&rest[start..]).into_iter::<String>();
        stream.next()?.ok()
    }

    /// RQ's default description: a Python-style call string, each argument's repr cut to 75
    /// characters, keyword arguments sorted. E.g. `mod.func({'import_id': 42}, k='v')`.
    pub fn description(&self) -> String {
        let mut parts: Vec<String> = self.args.iter().map(truncated_repr).collect();
        let mut keys: Vec<&String> = self.kwargs.keys().collect();
        keys.sort();
        for k in keys {
            parts.push(format!("{k}={}", truncated_repr(&self.kwargs[k])));
        }
        format!("{}({})", self.func_name, parts.join(", "))
    }
}

/// Encodes a value (a result or meta) with the given serializer.
pub fn encode_value(value: &Value, serializer: Serializer) -> Result<Vec<u8>, PayloadError> {
    match serializer {
        Serializer::Json => Ok(to_python_json(value)),
        Serializer::Pickle => {
            pickle::encode(value).map_err(|e| PayloadError::Encode(e.to_string()))
        }
    }
}

/// Decodes a serialized value (result, meta), detecting the serializer. Python objects other
/// than plain data in a pickle (a `datetime.timedelta` in the old scheduler's arguments, say)
/// come out as the list of their constructor arguments rather than failing the whole payload.
pub fn decode_value(bytes: &[u8]) -> Result<(Value, Serializer), PayloadError> {
    if bytes.len() > max_payload_bytes() {
        return Err(PayloadError::TooLarge(max_payload_bytes()));
    }
    if bytes.first() == Some(&0x80) {
        let limits = pickle::Limits {
            max_bytes: max_payload_bytes(),
            ..Default::default()
        };
        return Ok((pickle::decode(bytes, &limits)?, Serializer::Pickle));
    }
    serde_json::from_slice(bytes)
        .map(|v| (v, Serializer::Json))
        .map_err(|e| PayloadError::Undecodable(e.to_string()))
}

/// The serializer of a job's `data` field, from its first byte (no decoding).
pub fn serializer_of(data: &[u8]) -> Serializer {
    match decompress_prefix(data, 1).first() {
        Some(0x80) => Serializer::Pickle,
        _ => Serializer::Json,
    }
}

/// zlib with the default level, as Python's `zlib.compress`.
pub fn zlib_compress(bytes: &[u8]) -> Vec<u8> {
    let mut enc = ZlibEncoder::new(
        Vec::with_capacity(bytes.len() / 2 + 16),
        Compression::default(),
    );
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(bytes);
    enc.finish().unwrap_or_default()
}

/// Decompresses zlib data, at most `max` bytes of output (more is [`PayloadError::TooLarge`]);
/// like RQ, takes the bytes as they are when they are not zlib.
pub fn decompress_bounded(bytes: &[u8], max: usize) -> Result<Vec<u8>, PayloadError> {
    let mut out = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    match ZlibDecoder::new(bytes).take(limit).read_to_end(&mut out) {
        Ok(_) if out.len() > max => Err(PayloadError::TooLarge(max)),
        Ok(_) => Ok(out),
        Err(_) if bytes.len() > max => Err(PayloadError::TooLarge(max)),
        Err(_) => Ok(bytes.to_vec()),
    }
}

/// The first `n` bytes of the decompressed data (or of the raw bytes when they are not zlib).
fn decompress_prefix(bytes: &[u8], n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    let mut decoder = ZlibDecoder::new(bytes);
    let mut filled = 0;
    while filled < n {
        match decoder.read(&mut out[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(_) => return bytes[..n.min(bytes.len())].to_vec(),
        }
    }
    out.truncate(filled);
    out
}

/// Decompresses zlib data for display (exception texts), capped at [`max_payload_bytes`]; like
/// RQ, uses the bytes as they are when they are not zlib.
pub fn zlib_decompress_or_raw(bytes: &[u8]) -> Vec<u8> {
    decompress_bounded(bytes, max_payload_bytes())
        .unwrap_or_else(|_| decompress_prefix(bytes, max_payload_bytes()))
}

/// JSON text exactly as Python's `json.dumps` writes it by default (see [`crate::python_json`]).
pub fn to_python_json(value: &Value) -> Vec<u8> {
    python_json::dumps(value).into_bytes()
}

/// Python's `repr` of a JSON value, cut like RQ's description (75 characters + `...`).
fn truncated_repr(value: &Value) -> String {
    let repr = python_repr(value);
    if repr.chars().count() > 75 {
        let cut: String = repr.chars().take(75).collect();
        format!("{cut}...")
    } else {
        repr
    }
}

/// Python's `repr` of a JSON value: `{'a': 1}`, `'text'`, `True`, `None`, `[1, 2]`.
pub fn python_repr(value: &Value) -> String {
    match value {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => python_json::number(n),
        Value::String(s) => python_str_repr(s),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(python_repr).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", python_str_repr(k), python_repr(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

fn python_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use serde_json::json;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    const FUNC: &str = "importapi.tasks.create_preview.create_preview_task";

    /// docs/rq-protocol.md §3.3: the JSON bytes before zlib.
    #[test]
    fn json_payload_matches_python_bytes() {
        let call = CallPayload {
            func_name: FUNC.into(),
            args: vec![json!({"import_id": 42})],
            kwargs: Map::new(),
            serializer: Serializer::Json,
        };
        let data = call.encode().expect("encode");
        assert_eq!(&data[..2], &[0x78, 0x9c]);
        let raw = zlib_decompress_or_raw(&data);
        assert_eq!(
            String::from_utf8(raw).expect("utf8"),
            format!("[\"{FUNC}\", null, [{{\"import_id\": 42}}], {{}}]")
        );
        assert_eq!(CallPayload::decode(&data).expect("decode"), call);
    }

    /// docs/rq-protocol.md §3.3: Python's zlib output of the pickle (protocol 5) payload.
    #[test]
    fn reads_python_pickle_payload() {
        let data = unhex("789c6b609deacf00011a3d4699b905f945258905997a2589c5d9c57ac945a98925a9f10545a96599a9e568dc78909a297eb5537a3821fae23353a6786b15b74ea99d5232450f00699d21bc");
        let call = CallPayload::decode(&data).expect("decode");
        assert_eq!(call.func_name, FUNC);
        assert_eq!(call.args, vec![json!({"import_id": 42})]);
        assert!(call.kwargs.is_empty());
        assert_eq!(call.serializer, Serializer::Pickle);
    }

    /// The old service's scheduler pickled a `datetime.timedelta` (and callers may pass a
    /// `datetime`) among plain arguments: they must not make the payload unreadable.
    #[test]
    fn python_objects_in_pickles_become_their_constructor_arguments() {
        let data = unhex("789c6b609d5aca00011a3d8c6953fc346ba7f4b02416a5174fa99da2d1c35992999b9a929a539238a5872325b12415c49f822c3c798a3783af0ea33743fb94a0293d8c1553bc197b58ca3352f3a664b02269993cc5998bfd152313330b2bd0aa29ad40c5a5c52553f400ed412c04");
        let call = CallPayload::decode(&data).expect("decode");
        assert_eq!(call.func_name, "f");
        assert_eq!(call.kwargs["args"]["timedelta"], json!([0, 300, 0]));
        assert_eq!(call.kwargs["args"]["x"], json!(1));
        assert!(call.kwargs["args"]["when"].is_array());
    }

    /// docs/rq-protocol.md §3.3: Python's zlib output of the JSON payload.
    #[test]
    fn reads_python_json_payload() {
        let data = unhex("789c8b56cacc2dc82f2a492cc8d42b492cce2ed64b2e4a4d2c498d2f284a2dcb4c2d47e3c683d428e928e495e6e4e82844574375c767a62859299818d5c6ea2854d7c6020077ff1f50");
        let call = CallPayload::decode(&data).expect("decode");
        assert_eq!(call.func_name, FUNC);
        assert_eq!(call.serializer, Serializer::Json);
    }

    #[test]
    fn uncompressed_payload_is_read_as_is() {
        let call = CallPayload::decode(br#"["m.f", null, [1], {"a": 2}]"#).expect("decode");
        assert_eq!(call.args, vec![json!(1)]);
        assert_eq!(call.kwargs["a"], json!(2));
    }

    #[test]
    fn garbage_is_a_clear_error() {
        for bad in [
            &b"\x00\x01garbage"[..],
            b"",
            b"{\"not\": \"a tuple\"}",
            b"[1, null, [], {}]",
            b"\x80\x05junk",
        ] {
            let err = CallPayload::decode(&zlib_compress(bad)).expect_err("must fail");
            assert!(!err.to_string().is_empty());
        }
    }

    /// docs/rq-protocol.md §9: serialized values.
    #[test]
    fn value_vectors() {
        let b64 = base64::engine::general_purpose::STANDARD;
        assert_eq!(
            b64.encode(encode_value(&json!(3), Serializer::Json).expect("json")),
            "Mw=="
        );
        let v = json!({"state": "success", "layer_id": "pre_abc"});
        assert_eq!(
            b64.encode(encode_value(&v, Serializer::Json).expect("json")),
            "eyJzdGF0ZSI6ICJzdWNjZXNzIiwgImxheWVyX2lkIjogInByZV9hYmMifQ=="
        );
        let python_pickle = b64
            .decode("gAWVLAAAAAAAAAB9lCiMBXN0YXRllIwHc3VjY2Vzc5SMCGxheWVyX2lklIwHcHJlX2FiY5R1Lg==")
            .expect("b64");
        assert_eq!(
            decode_value(&python_pickle).expect("pickle"),
            (v.clone(), Serializer::Pickle)
        );
        // What we write in pickle reads back the same.
        let ours = encode_value(&v, Serializer::Pickle).expect("pickle");
        assert_eq!(decode_value(&ours).expect("pickle").0, v);
        assert_eq!(
            decode_value(&unhex("80054b032e")).expect("pickle").0,
            json!(3)
        );
        let meta = unhex("8005950c000000000000007d948c016b948c017694732e");
        assert_eq!(decode_value(&meta).expect("meta").0, json!({"k": "v"}));
    }

    /// The task name of a poison payload is read without decoding it.
    #[test]
    fn func_names_are_read_without_decoding() {
        let call = CallPayload {
            func_name: FUNC.into(),
            args: vec![json!({"import_id": 42})],
            kwargs: Map::new(),
            serializer: Serializer::Json,
        };
        let json_data = call.encode().expect("json");
        assert_eq!(CallPayload::func_name_of(&json_data).as_deref(), Some(FUNC));
        let pickle_data = CallPayload {
            serializer: Serializer::Pickle,
            ..call
        }
        .encode()
        .expect("pickle");
        assert_eq!(
            CallPayload::func_name_of(&pickle_data).as_deref(),
            Some(FUNC)
        );
        assert_eq!(serializer_of(&pickle_data), Serializer::Pickle);
        assert_eq!(serializer_of(&json_data), Serializer::Json);
        let mut deep = vec![0x80, 0x04, 0x8c, 0x03, b'm', b'.', b'f', 0x94, b'('];
        deep.extend(std::iter::repeat_n(b']', 100_000));
        let deep = zlib_compress(&deep);
        assert_eq!(CallPayload::func_name_of(&deep).as_deref(), Some("m.f"));
        assert!(CallPayload::decode(&deep).is_err());
    }

    #[test]
    fn decompression_is_capped() {
        let bomb = zlib_compress(&vec![b' '; 3 * 1024 * 1024]);
        assert!(matches!(
            decompress_bounded(&bomb, 1024 * 1024),
            Err(PayloadError::TooLarge(_))
        ));
        assert_eq!(
            decompress_bounded(&bomb, 4 * 1024 * 1024)
                .expect("fits")
                .len(),
            3 * 1024 * 1024
        );
        assert_eq!(decompress_bounded(b"raw", 10).expect("raw"), b"raw");
    }

    #[test]
    fn description_is_python_call_string() {
        let call = CallPayload {
            func_name: FUNC.into(),
            args: vec![json!({"import_id": 42})],
            kwargs: Map::new(),
            serializer: Serializer::Json,
        };
        assert_eq!(call.description(), format!("{FUNC}({{'import_id': 42}})"));
        let mut kwargs = Map::new();
        kwargs.insert("z".into(), json!("it's"));
        kwargs.insert("a".into(), json!(null));
        let call = CallPayload {
            func_name: "m.f".into(),
            args: vec![json!("x".repeat(80))],
            kwargs,
            serializer: Serializer::Json,
        };
        assert_eq!(
            call.description(),
            format!("m.f('{}..., a=None, z=\"it's\")", "x".repeat(74))
        );
    }
}
