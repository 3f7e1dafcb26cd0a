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

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use flate2::{write::ZlibEncoder, Compression};
use serde::Serialize;
use serde_json::{Map, Value};

use super::pickle;
use super::repr::truncated_repr;
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

/// Payloads up to this size are stored as they are. RQ (1.x and 2.x) reads a `data` field
/// that is not zlib as it is (its fallback on `zlib.error`), and so do we; compressing a payload
/// of a few kilobytes cost more than anything else in an enqueue (a fifth of the CPU of the
/// change-events endpoint) to save a few kilobytes of Redis memory for the minutes the job lives.
/// Bigger payloads are compressed, as Python does.
pub const UNCOMPRESSED_MAX: usize = 64 * 1024;

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
    /// Encodes the call as a job's `data` field (see [`encode_call`]).
    pub fn encode(&self) -> Result<Vec<u8>, PayloadError> {
        let (data, _) = encode_call(
            &self.func_name,
            &self.args,
            &[],
            &self.kwargs,
            self.serializer,
        )?;
        Ok(data)
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
        call_description(&self.func_name, &self.args, &[], &self.kwargs)
    }
}

/// A job's `data` field for a call: the serialized 4-tuple `(func_name, None, args, kwargs)`,
/// zlib-compressed when it is longer than [`UNCOMPRESSED_MAX`]. Takes the parts by reference:
/// an enqueue does not copy its arguments. The positional arguments are `args`, then
/// `json_args` (each the text of one JSON value, written into a pickle as it is parsed: see
/// `JobSpec::json_arg`); the second part of the answer is the cut repr of each JSON argument,
/// for [`call_description`].
pub fn encode_call(
    func_name: &str,
    args: &[Value],
    json_args: &[String],
    kwargs: &Map<String, Value>,
    serializer: Serializer,
) -> Result<(Vec<u8>, Vec<String>), PayloadError> {
    let (bytes, json_reprs) = match serializer {
        Serializer::Json => {
            let mut all = args.to_vec();
            for text in json_args {
                all.push(
                    serde_json::from_str(text)
                        .map_err(|e| PayloadError::Encode(format!("argument is not JSON: {e}")))?,
                );
            }
            let json_reprs = all[args.len()..].iter().map(truncated_repr).collect();
            let call = Value::Array(vec![
                Value::String(func_name.to_string()),
                Value::Null,
                Value::Array(all),
                Value::Object(kwargs.clone()),
            ]);
            (to_python_json(&call), json_reprs)
        }
        // A list where Python writes a tuple: RQ unpacks either.
        Serializer::Pickle => {
            let call = pickle::encode_call(func_name, args, json_args, kwargs)
                .map_err(|e| PayloadError::Encode(e.to_string()))?;
            (call.pickle, call.json_reprs)
        }
    };
    let data = if bytes.len() <= UNCOMPRESSED_MAX {
        bytes
    } else {
        zlib_compress(&bytes)
    };
    Ok((data, json_reprs))
}

/// RQ's description of a call: `func(repr(arg), key=repr(value))`, each repr cut at 75
/// characters, keyword arguments sorted. `json_reprs` are the cut reprs of the positional
/// arguments that follow `args` (given as JSON text: [`encode_call`] makes them).
pub fn call_description(
    func_name: &str,
    args: &[Value],
    json_reprs: &[String],
    kwargs: &Map<String, Value>,
) -> String {
    let mut parts: Vec<String> = args.iter().map(truncated_repr).collect();
    parts.extend(json_reprs.iter().cloned());
    let mut keys: Vec<&String> = kwargs.keys().collect();
    keys.sort();
    for k in keys {
        parts.push(format!("{k}={}", truncated_repr(&kwargs[k])));
    }
    format!("{func_name}({})", parts.join(", "))
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
    if !looks_like_zlib(bytes) {
        return if bytes.len() > max {
            Err(PayloadError::TooLarge(max))
        } else {
            Ok(bytes.to_vec())
        };
    }
    match inflate(bytes, max.saturating_add(1)) {
        Inflated::Whole(out) if out.len() <= max => Ok(out),
        Inflated::Whole(_) | Inflated::Cut(_) => Err(PayloadError::TooLarge(max)),
        Inflated::Broken if bytes.len() > max => Err(PayloadError::TooLarge(max)),
        Inflated::Broken => Ok(bytes.to_vec()),
    }
}

/// What [`inflate`] made of a zlib stream.
enum Inflated {
    /// The whole output (the stream ended within the limit).
    Whole(Vec<u8>),
    /// The first `limit` bytes of a longer output.
    Cut(Vec<u8>),
    /// Not a valid zlib stream (corrupt or truncated).
    Broken,
}

/// Inflates `bytes` (a zlib stream), stopping after `limit` bytes of output. miniz_oxide's
/// one-shot decoder writes into the output vector itself, without the 32 KiB window a streaming
/// decoder zeroes for every payload (it cost a worker more than the rest of a small job), and
/// refuses back-references past the start of the output.
fn inflate(bytes: &[u8], limit: usize) -> Inflated {
    use miniz_oxide::inflate::{decompress_to_vec_zlib_with_limit, TINFLStatus};
    match decompress_to_vec_zlib_with_limit(bytes, limit) {
        Ok(out) => Inflated::Whole(out),
        Err(e) if e.status == TINFLStatus::HasMoreOutput => {
            let mut out = e.output;
            out.truncate(limit);
            Inflated::Cut(out)
        }
        Err(_) => Inflated::Broken,
    }
}

/// True when `bytes` start with a zlib header (deflate, a window of at most 32 KiB, the check
/// bits right). Anything else is taken as it is without setting up a decoder, whose state
/// (tens of KB, zeroed) costs more than reading a small payload.
fn looks_like_zlib(bytes: &[u8]) -> bool {
    match bytes {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) * 256 + u16::from(*flg)) % 31 == 0
        }
        _ => false,
    }
}

/// The first `n` bytes of the decompressed data (or of the raw bytes when they are not zlib).
fn decompress_prefix(bytes: &[u8], n: usize) -> Vec<u8> {
    if !looks_like_zlib(bytes) {
        return bytes[..n.min(bytes.len())].to_vec();
    }
    match inflate(bytes, n) {
        Inflated::Whole(out) | Inflated::Cut(out) => out,
        Inflated::Broken => bytes[..n.min(bytes.len())].to_vec(),
    }
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

    #[test]
    fn pickled_calls_from_borrowed_parts_equal_the_whole_value_pickled() {
        let args = vec![json!({"a": [1, 2, {"b": null}]}), json!("x")];
        let mut kwargs = Map::new();
        kwargs.insert("k".into(), json!([true, 2.5]));
        let whole = json!(["f.g", null, args.clone(), kwargs.clone()]);
        assert_eq!(
            pickle::encode_call("f.g", &args, &[], &kwargs)
                .expect("call")
                .pickle,
            pickle::encode(&whole).expect("value")
        );
    }

    #[test]
    fn zlib_headers_are_told_from_pickles_and_json() {
        assert!(looks_like_zlib(&zlib_compress(b"x")));
        for raw in [&b"\x80\x04..."[..], b"[\"f\", null]", b"{}", b"", b"x"] {
            assert!(!looks_like_zlib(raw), "{raw:?}");
        }
    }

    #[test]
    fn small_payloads_are_stored_raw_and_big_ones_compressed() {
        let call = |text: &str| CallPayload {
            func_name: "f".into(),
            args: vec![json!(text)],
            kwargs: Map::new(),
            serializer: Serializer::Pickle,
        };
        let small = call("x").encode().expect("encode");
        assert_eq!(small[0], 0x80, "a raw pickle");
        let big = call(&"y".repeat(UNCOMPRESSED_MAX))
            .encode()
            .expect("encode");
        assert_eq!(big[0], 0x78, "zlib");
        for data in [small, big] {
            assert_eq!(CallPayload::decode(&data).expect("decode").func_name, "f");
        }
    }

    /// docs/rq-protocol.md §3.3: the JSON bytes Python writes (before its zlib; a payload this
    /// small is stored as it is).
    #[test]
    fn json_payload_matches_python_bytes() {
        let call = CallPayload {
            func_name: FUNC.into(),
            args: vec![json!({"import_id": 42})],
            kwargs: Map::new(),
            serializer: Serializer::Json,
        };
        let data = call.encode().expect("encode");
        let raw = zlib_decompress_or_raw(&data);
        assert_eq!(raw, data, "stored uncompressed");
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
        // An uncompressed payload over the limit fails like a compressed one.
        assert!(matches!(
            decompress_bounded(&[b' '; 100], 10),
            Err(PayloadError::TooLarge(10))
        ));
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

    /// Whole, cut and broken streams, one after another: each is read on its own.
    #[test]
    fn whole_cut_and_broken_streams_are_told_apart() {
        let long: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let short = b"short payload".to_vec();
        let long_z = zlib_compress(&long);
        let short_z = zlib_compress(&short);
        let truncated = &long_z[..long_z.len() / 2];
        assert_eq!(decompress_prefix(&long_z, 10), long[..10].to_vec());
        assert_eq!(decompress_bounded(&short_z, 100).expect("short"), short);
        // A stream that stops early is not zlib to RQ: taken as it is.
        assert_eq!(
            decompress_bounded(truncated, 10_000_000).expect("raw"),
            truncated
        );
        assert_eq!(decompress_bounded(&long_z, 10_000_000).expect("long"), long);
        assert_eq!(decompress_bounded(&short_z, 100).expect("short"), short);
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
