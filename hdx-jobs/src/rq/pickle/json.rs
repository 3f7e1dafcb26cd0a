//! JSON text written straight into a pickle, with the beginning of its Python repr alongside,
//! in one pass and without building a `serde_json::Value`.
//!
//! Why: the API's enqueue endpoints pass a request body on as the job's argument, unchanged. A
//! change-events body is tens of kilobytes of nested dicts; parsing it into a tree, pickling
//! the tree and dropping it again cost most of the request (memory allocation alone was a
//! quarter of it). Here serde_json's parser drives a visitor that appends each value's opcodes
//! as it is read: strings are copied once, from the input into the pickle.
//!
//! The bytes are those [`super::encode`] writes for the same value parsed first, with one
//! exception for crafted input: an object with a repeated key is written with both entries
//! (Python's unpickler, like `json.loads`, keeps the last value at the first key's place, so
//! the job reads the same dict), where a parsed `Value` would already hold one.

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::Number;

use super::{op, write_text, PickleError, BATCH_SIZE};
use crate::python_json;
use crate::rq::repr::ReprHead;

/// Appends the pickle opcodes of the JSON value in `text` to `out` (a value at nesting `level`,
/// counted as [`super::encode_call`] counts it, checked against `max_depth`), and its repr to
/// `repr`. Fails on text that is not one JSON value; `out` then holds a partial write.
pub(super) fn write_json(
    out: &mut Vec<u8>,
    text: &str,
    level: usize,
    max_depth: usize,
    repr: &mut ReprHead,
) -> Result<(), PickleError> {
    let mut writer = Writer {
        out,
        repr,
        max_depth,
        unmarked: Vec::new(),
        too_deep: false,
        separator: None,
    };
    let start = writer.out.len();
    let mut parser = serde_json::Deserializer::from_str(text);
    let parsed = ValueSeed {
        writer: &mut writer,
        level,
    }
    .deserialize(&mut parser)
    .and_then(|()| parser.end());
    if writer.too_deep {
        return Err(PickleError::TooDeep(max_depth));
    }
    parsed.map_err(|e| PickleError::Json(e.to_string()))?;
    let unmarked = std::mem::take(&mut writer.unmarked);
    drop_marks(out, start, unmarked);
    Ok(())
}

/// Where the visitor writes.
struct Writer<'a> {
    out: &'a mut Vec<u8>,
    repr: &'a mut ReprHead,
    max_depth: usize,
    /// Offsets of MARKs written at the start of a batch that turned out to hold one item:
    /// Python writes those without MARK (then APPEND or SETITEM), which is known only at the
    /// batch's end, so they are removed in one pass at the end.
    unmarked: Vec<usize>,
    /// Set when the value nests deeper than `max_depth` (serde's error type cannot carry ours).
    too_deep: bool,
    /// The repr's separator before the next item (`, `) or value (`: `), written with it.
    separator: Option<&'static str>,
}

impl Writer<'_> {
    /// Appends repr text, after the separator of the item it starts, if any.
    fn repr(&mut self, text: &str) {
        if let Some(separator) = self.separator.take() {
            self.repr.push(separator);
        }
        self.repr.push(text);
    }

    /// Appends the repr of a string, after the pending separator.
    fn repr_str(&mut self, text: &str) {
        if let Some(separator) = self.separator.take() {
            self.repr.push(separator);
        }
        self.repr.push_str_repr(text);
    }

    fn number(&mut self, number: Number) {
        super::write_number(self.out, &number);
        if self.repr.wants_more() {
            self.repr(&python_json::number(&number));
        }
    }
}

/// A container's items, written in Python's batches: MARK, up to [`BATCH_SIZE`] items, then
/// APPENDS (SETITEMS); a batch of one item loses its MARK and ends with APPEND (SETITEM).
/// Whether another item follows is known only once it is read, so a batch's MARK is written
/// where its first item would start, and taken back if none does.
struct Batches {
    /// Items written.
    len: usize,
    /// Offset of the current batch's MARK.
    mark: usize,
    /// Where the item being read starts.
    at: usize,
    /// The opcodes that end a batch of one item and of several.
    ends: [u8; 2],
}

impl Batches {
    fn new(ends: [u8; 2]) -> Self {
        Batches {
            len: 0,
            mark: 0,
            at: 0,
            ends,
        }
    }

    /// Before reading what may be another item: a new batch's MARK, the repr's separator.
    fn before_item(&mut self, writer: &mut Writer) {
        self.at = writer.out.len();
        if self.len.is_multiple_of(BATCH_SIZE) {
            self.mark = self.at;
            writer.out.push(op::MARK);
        }
        writer.separator = (self.len > 0).then_some(", ");
    }

    /// After an item was written: ends a full batch.
    fn after_item(&mut self, writer: &mut Writer) {
        self.len += 1;
        if self.len.is_multiple_of(BATCH_SIZE) {
            self.end_batch(writer, BATCH_SIZE);
        }
    }

    /// No item followed: takes back what [`Batches::before_item`] wrote, ends the last batch.
    fn end(self, writer: &mut Writer) {
        writer.out.truncate(self.at);
        writer.separator = None;
        if !self.len.is_multiple_of(BATCH_SIZE) {
            self.end_batch(writer, self.len % BATCH_SIZE);
        }
    }

    fn end_batch(&self, writer: &mut Writer, len: usize) {
        let [one, many] = self.ends;
        if len == 1 {
            writer.unmarked.push(self.mark);
            writer.out.push(one);
        } else {
            writer.out.push(many);
        }
    }
}

/// Removes the MARKs at `offsets` (all at or after `start`) from `out`, moving the bytes between
/// them once.
fn drop_marks(out: &mut Vec<u8>, start: usize, mut offsets: Vec<usize>) {
    if offsets.is_empty() {
        return;
    }
    offsets.sort_unstable();
    let mut write = offsets[0];
    for (i, &offset) in offsets.iter().enumerate() {
        debug_assert!(offset >= start && out[offset] == op::MARK);
        let end = offsets.get(i + 1).copied().unwrap_or(out.len());
        out.copy_within(offset + 1..end, write);
        write += end - offset - 1;
    }
    out.truncate(write);
}

/// One JSON value at a nesting level.
struct ValueSeed<'w, 'a> {
    writer: &'w mut Writer<'a>,
    level: usize,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl ValueSeed<'_, '_> {
    /// The level of this value's items, or an error past the depth limit.
    fn enter<E: serde::de::Error>(&mut self) -> Result<usize, E> {
        let level = self.level + 1;
        if level > self.writer.max_depth {
            self.writer.too_deep = true;
            return Err(E::custom("too deep"));
        }
        Ok(level)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.writer.out.push(op::NONE);
        self.writer.repr("None");
        Ok(())
    }

    fn visit_bool<E>(self, value: bool) -> Result<(), E> {
        self.writer
            .out
            .push(if value { op::NEWTRUE } else { op::NEWFALSE });
        self.writer.repr(if value { "True" } else { "False" });
        Ok(())
    }

    fn visit_i64<E>(self, value: i64) -> Result<(), E> {
        self.writer.number(value.into());
        Ok(())
    }

    fn visit_u64<E>(self, value: u64) -> Result<(), E> {
        self.writer.number(value.into());
        Ok(())
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<(), E> {
        // serde_json parses only finite numbers.
        let number = Number::from_f64(value).ok_or_else(|| E::custom("non-finite number"))?;
        self.writer.number(number);
        Ok(())
    }

    fn visit_str<E>(self, text: &str) -> Result<(), E> {
        write_text(self.writer.out, text);
        self.writer.repr_str(text);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut items: A) -> Result<(), A::Error> {
        let level = self.enter()?;
        let writer = self.writer;
        writer.out.push(op::EMPTY_LIST);
        writer.repr("[");
        let mut batches = Batches::new([op::APPEND, op::APPENDS]);
        loop {
            batches.before_item(writer);
            let item = ValueSeed {
                writer: &mut *writer,
                level,
            };
            if items.next_element_seed(item)?.is_none() {
                batches.end(writer);
                break;
            }
            batches.after_item(writer);
        }
        writer.repr("]");
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut entries: A) -> Result<(), A::Error> {
        let level = self.enter()?;
        let writer = self.writer;
        writer.out.push(op::EMPTY_DICT);
        writer.repr("{");
        let mut batches = Batches::new([op::SETITEM, op::SETITEMS]);
        loop {
            batches.before_item(writer);
            let key = KeySeed {
                writer: &mut *writer,
            };
            if entries.next_key_seed(key)?.is_none() {
                batches.end(writer);
                break;
            }
            writer.separator = Some(": ");
            entries.next_value_seed(ValueSeed {
                writer: &mut *writer,
                level,
            })?;
            batches.after_item(writer);
        }
        writer.repr("}");
        Ok(())
    }
}

/// An object's key: a string, written as one.
struct KeySeed<'w, 'a> {
    writer: &'w mut Writer<'a>,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E>(self, text: &str) -> Result<(), E> {
        write_text(self.writer.out, text);
        self.writer.repr_str(text);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{json, Map, Value};

    use super::super::{decode, encode_call, Limits};
    use crate::rq::repr::truncated_repr;

    /// The pickle and repr of `text` as a JSON argument, and of the same text parsed first.
    fn both_ways(text: &str) -> ((Vec<u8>, String), (Vec<u8>, String)) {
        let call = encode_call("f", &[], &[text.to_string()], &Map::new()).expect("transcoded");
        let value: Value = serde_json::from_str(text).expect("JSON");
        let parsed =
            encode_call("f", std::slice::from_ref(&value), &[], &Map::new()).expect("encoded");
        (
            (call.pickle, call.json_reprs[0].clone()),
            (parsed.pickle, truncated_repr(&value)),
        )
    }

    #[test]
    fn json_text_pickles_as_the_parsed_value_does() {
        let long = "é".repeat(300);
        for text in [
            "null",
            "true",
            "false",
            "0",
            "-1",
            "255",
            "256",
            "65535",
            "65536",
            "-2147483649",
            "9223372036854775807",
            "18446744073709551615",
            "1.5",
            "-0.0",
            "1e300",
            "123456789012345678901234567890",
            r#""""#,
            r#""it's \"quoted\" \u00e9 \ud83d\ude00 \n\t""#,
            &format!("{:?}", long),
            "[]",
            "{}",
            "[1]",
            r#"{"a": 1}"#,
            r#"[[], [[]], {}, {"": {}}]"#,
            r#"{"username": "u", "old_dataset_dict": null, "new_dataset_dict": {"resources": [{"id": "r", "name": "x", "n": 2.5, "t": true}]}}"#,
        ] {
            let (transcoded, parsed) = both_ways(text);
            assert_eq!(transcoded, parsed, "{text}");
        }
    }

    #[test]
    fn containers_are_batched_as_python_batches_them() {
        // Batches of 1000: a batch of one is written without MARK (APPEND, SETITEM).
        for len in [2, 999, 1000, 1001, 1002, 2000, 2001] {
            let list = Value::Array((0..len).map(|i| json!([i])).collect());
            let dict = Value::Object(
                (0..len)
                    .map(|i| (format!("k{i}"), json!({"v": i})))
                    .collect(),
            );
            for value in [list, dict] {
                let (transcoded, parsed) = both_ways(&value.to_string());
                assert_eq!(transcoded, parsed, "{len}");
            }
        }
    }

    #[test]
    fn json_arguments_follow_value_arguments_in_one_list() {
        let mut kwargs = Map::new();
        kwargs.insert("k".into(), json!([true, null]));
        for count in [1, 2, 999, 1000, 1001] {
            let values: Vec<Value> = (0..count).map(|i| json!({"i": i})).collect();
            let texts = vec![r#"{"x": [1, "y"]}"#.to_string(), "2".to_string()];
            let mut all = values.clone();
            all.extend(
                texts
                    .iter()
                    .map(|t| serde_json::from_str::<Value>(t).expect("JSON")),
            );
            let mixed = encode_call("f.g", &values, &texts, &kwargs).expect("mixed");
            let whole = encode_call("f.g", &all, &[], &kwargs).expect("whole");
            assert_eq!(mixed.pickle, whole.pickle, "{count}");
            assert_eq!(mixed.json_reprs, ["{'x': [1, 'y']}", "2"]);
        }
    }

    #[test]
    fn a_repeated_key_reads_back_as_json_parses_it() {
        // Both entries are written; the unpickler keeps the last value at the first key's place.
        let text = r#"{"a": 1, "b": 2, "a": {"c": 3}}"#;
        let call = encode_call("f", &[], &[text.to_string()], &Map::new()).expect("call");
        let read = decode(&call.pickle, &Limits::default()).expect("pickle");
        let parsed: Value = serde_json::from_str(text).expect("JSON");
        assert_eq!(read, json!(["f", null, [parsed], {}]));
    }

    #[test]
    fn text_that_is_not_one_json_value_is_refused() {
        let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
        for text in [
            "",
            "{",
            "[1,]",
            "{\"a\"}",
            "1 2",
            "{} x",
            "NaN",
            "'a'",
            deep.as_str(),
        ] {
            let result = encode_call("f", &[], &[text.to_string()], &Map::new());
            assert!(result.is_err(), "{text:?}");
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 96, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::vec((".{0,6}", inner), 0..8)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 500,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn any_json_value_transcodes_as_it_encodes(value in json_value(), pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_string_pretty(&value).expect("text")
            } else {
                value.to_string()
            };
            let (transcoded, parsed) = both_ways(&text);
            prop_assert_eq!(transcoded, parsed);
        }
    }
}
