//! Streaming reading of a GeoJSON FeatureCollection: a scanner over the top-level object hands
//! the features of its `features` array, one at a time, to serde visitors and then to a
//! callback, so memory stays constant in the number of features (the file is never held whole,
//! nor as a `Value`).
//!
//! A feature is decoded into a reused [`FeatureBuf`]: property keys are interned ([`Keys`]),
//! string values go into one text buffer, and the geometry is checked and encoded as EWKB
//! ([`super::geometry`]) as soon as its object ends. Everything the native import does not
//! reproduce exactly is refused here as a deserialization error whose message is the reason
//! (nested values, numbers GDAL would clamp, foreign members, duplicate keys...): the parse
//! stops and the import falls back to GDAL.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

use std::io::BufRead;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::geometry::{self, Coord, GeometryKind};

/// The largest magnitude a number may have: json-c clamps integer literals beyond `i64` (and
/// a float literal of that size cannot be told from such an integer by serde_json).
const MAX_MAGNITUDE: f64 = 9_223_372_036_854_775_808.0;

/// A property value the native import handles.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// JSON `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer literal within `i64`.
    Int(i64),
    /// A number with a fraction or an exponent.
    Float(f64),
    /// A string: its bytes in [`FeatureBuf::text`].
    Str(Range<usize>),
}

/// A feature's `id` member.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum FeatureId {
    /// No `id` member.
    #[default]
    Absent,
    /// An integer id.
    Int(i64),
    /// A string id: its bytes in [`FeatureBuf::text`].
    Str(Range<usize>),
}

/// Property keys in order of first appearance; a key's index is its position here.
#[derive(Debug, Default)]
pub struct Keys {
    index: HashMap<String, u32>,
    names: Vec<String>,
    /// The index expected next: features usually list the same keys in the same order, so the
    /// next key is checked against it before hashing.
    next: usize,
}

impl Keys {
    /// The index of `key`, interning it when new.
    fn intern(&mut self, key: &str) -> u32 {
        let index = match self.names.get(self.next) {
            Some(name) if name == key => self.next as u32,
            _ => match self.index.get(key) {
                Some(&index) => index,
                None => {
                    let index = self.names.len() as u32;
                    self.index.insert(key.to_string(), index);
                    self.names.push(key.to_string());
                    index
                }
            },
        };
        self.next = index as usize + 1;
        if self.next == self.names.len() {
            self.next = 0;
        }
        index
    }

    /// The keys, by index.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// One decoded feature; reused from feature to feature so that reading allocates little.
#[derive(Debug, Default)]
pub struct FeatureBuf {
    /// The `id` member.
    pub id: FeatureId,
    /// `(key index, value)` in the order of the file.
    pub properties: Vec<(u32, Scalar)>,
    /// The bytes of the string values and of a string id.
    pub text: String,
    /// The geometry's type, `None` for a null geometry.
    pub geometry: Option<GeometryKind>,
    /// The geometry as EWKB (SRID 4326), empty for a null geometry.
    pub ewkb: Vec<u8>,
    coords: Vec<Coord>,
}

impl FeatureBuf {
    /// The text of a string value or id.
    pub fn str(&self, range: &Range<usize>) -> &str {
        self.text.get(range.clone()).unwrap_or_default()
    }

    fn clear(&mut self) {
        self.id = FeatureId::Absent;
        self.properties.clear();
        self.text.clear();
        self.geometry = None;
        self.ewkb.clear();
    }
}

/// What the top-level object said besides its features.
#[derive(Debug, Default)]
pub struct Collection {
    /// Features read.
    pub features: u64,
}

/// Reads a GeoJSON FeatureCollection from `reader`, calling `on_feature` for each feature. The
/// error is the reason the native import cannot take the file (or the callback's error).
///
/// The top-level object is scanned here byte by byte (strings and nesting only), and each
/// member's and each feature's bytes are then parsed with serde_json from a slice: much faster
/// than serde_json's reader-based parsing, and still one feature in memory at a time.
pub fn read_collection<R: BufRead>(
    reader: R,
    keys: &mut Keys,
    on_feature: &mut dyn FnMut(&FeatureBuf, &Keys) -> Result<(), String>,
) -> Result<Collection, String> {
    let mut scanner = Scanner { reader };
    let mut buf = FeatureBuf::default();
    let mut bytes = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    let mut is_collection = false;
    let mut collection = None;
    scanner.expect(b'{')?;
    if scanner.peek()? == Some(b'}') {
        scanner.expect(b'}')?;
    } else {
        loop {
            if scanner.peek()? != Some(b'"') {
                return Err("the top-level object is not valid JSON".into());
            }
            scanner.value(&mut bytes)?;
            let key: String = parse(&bytes, "a top-level member name")?;
            scanner.expect(b':')?;
            if seen.contains(&key) {
                return Err(format!("duplicate top-level member {key:?}"));
            }
            match key.as_str() {
                "features" => {
                    collection = Some(read_features(
                        &mut scanner,
                        &mut bytes,
                        &mut buf,
                        keys,
                        on_feature,
                    )?);
                }
                "type" => {
                    scanner.value(&mut bytes)?;
                    let kind: String = parse(&bytes, "the top-level type")?;
                    if kind != "FeatureCollection" {
                        return Err(format!("a GeoJSON {kind:?}, not a FeatureCollection"));
                    }
                    is_collection = true;
                }
                "crs" => {
                    scanner.value(&mut bytes)?;
                    let crs: serde_json::Value = parse(&bytes, "the crs member")?;
                    if !is_default_crs(&crs) {
                        return Err(format!("a crs member other than WGS 84: {crs}"));
                    }
                }
                _ => {
                    scanner.value(&mut bytes)?;
                    parse::<IgnoredAny>(&bytes, "a top-level member")?;
                }
            }
            seen.push(key);
            match scanner.next_byte()? {
                Some(b',') => continue,
                Some(b'}') => break,
                _ => return Err("the top-level object is not valid JSON".into()),
            }
        }
    }
    if scanner.next_byte()?.is_some() {
        return Err("trailing characters after the top-level object".into());
    }
    if !is_collection {
        return Err("no \"type\": \"FeatureCollection\" member".into());
    }
    collection.ok_or_else(|| "no features member".to_string())
}

/// The `features` array: each feature's bytes, parsed into `buf` and handed to `on_feature`.
fn read_features<R: BufRead>(
    scanner: &mut Scanner<R>,
    bytes: &mut Vec<u8>,
    buf: &mut FeatureBuf,
    keys: &mut Keys,
    on_feature: &mut dyn FnMut(&FeatureBuf, &Keys) -> Result<(), String>,
) -> Result<Collection, String> {
    let mut collection = Collection::default();
    scanner.expect(b'[')?;
    if scanner.peek()? == Some(b']') {
        scanner.expect(b']')?;
        return Ok(collection);
    }
    loop {
        let number = collection.features + 1;
        if scanner.peek()? != Some(b'{') {
            return Err(format!("feature {number} is not an object"));
        }
        scanner.value(bytes)?;
        buf.clear();
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        FeatureSeed {
            keys: &mut *keys,
            buf: &mut *buf,
        }
        .deserialize(&mut deserializer)
        .and_then(|()| deserializer.end())
        .map_err(|e| format!("feature {number}: {e}"))?;
        on_feature(buf, keys).map_err(|e| format!("feature {number}: {e}"))?;
        collection.features = number;
        match scanner.next_byte()? {
            Some(b',') => continue,
            Some(b']') => return Ok(collection),
            _ => return Err("the features array is not valid JSON".into()),
        }
    }
}

/// `bytes` parsed as a `T`, or why not.
fn parse<T: de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("{what}: {e}"))
}

/// The largest feature (or top-level member) read: GDAL's GeoJSON reader refuses objects over
/// 200 MB too, and memory stays bounded on hostile files.
const MAX_VALUE_BYTES: usize = 200 * 1024 * 1024;

/// Finds the ends of JSON values in a stream without parsing them: tracks strings (with their
/// escapes) and the nesting of objects and arrays. serde_json checks the values afterwards.
struct Scanner<R> {
    reader: R,
}

/// JSON's whitespace.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl<R: BufRead> Scanner<R> {
    /// The next byte that is not whitespace, not consumed; `None` at the end.
    fn peek(&mut self) -> Result<Option<u8>, String> {
        loop {
            let chunk = self.reader.fill_buf().map_err(read_error)?;
            if chunk.is_empty() {
                return Ok(None);
            }
            match chunk.iter().position(|b| !is_space(*b)) {
                Some(at) => {
                    let b = chunk[at];
                    self.reader.consume(at);
                    return Ok(Some(b));
                }
                None => {
                    let len = chunk.len();
                    self.reader.consume(len);
                }
            }
        }
    }

    /// The next byte that is not whitespace, consumed.
    fn next_byte(&mut self) -> Result<Option<u8>, String> {
        let b = self.peek()?;
        if b.is_some() {
            self.reader.consume(1);
        }
        Ok(b)
    }

    fn expect(&mut self, wanted: u8) -> Result<(), String> {
        match self.next_byte()? {
            Some(b) if b == wanted => Ok(()),
            _ => Err(format!(
                "not a JSON object as GeoJSON has it (expected {:?})",
                wanted as char
            )),
        }
    }

    /// Copies the next value's bytes into `out` (cleared first) and consumes them.
    fn value(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        out.clear();
        let first = self
            .peek()?
            .ok_or_else(|| "the file ends where a value should be".to_string())?;
        let mut state = ValueEnd {
            bare: !matches!(first, b'"' | b'{' | b'['),
            ..ValueEnd::default()
        };
        loop {
            let chunk = self.reader.fill_buf().map_err(read_error)?;
            if chunk.is_empty() {
                return Err("the file ends inside a value".into());
            }
            let end = state.find(chunk);
            let taken = end.unwrap_or(chunk.len());
            if out.len() + taken > MAX_VALUE_BYTES {
                return Err("a feature or member over 200 MB".into());
            }
            out.extend_from_slice(&chunk[..taken]);
            self.reader.consume(taken);
            if end.is_some() {
                return Ok(());
            }
        }
    }
}

/// Where a JSON value ends, found chunk by chunk: the state carried between chunks.
#[derive(Default)]
struct ValueEnd {
    /// A number, `true`, `false` or `null`: ends before a delimiter.
    bare: bool,
    /// Objects and arrays open.
    depth: u32,
    in_string: bool,
    /// The previous chunk ended with a backslash in a string.
    escaped: bool,
}

impl ValueEnd {
    /// The index just after the value's last byte in `chunk`, or `None` when it goes on.
    fn find(&mut self, chunk: &[u8]) -> Option<usize> {
        let mut at = 0;
        if self.escaped {
            self.escaped = false;
            at = 1;
        }
        while at < chunk.len() {
            let rest = &chunk[at..];
            if self.bare {
                return rest
                    .iter()
                    .position(|&b| matches!(b, b',' | b'}' | b']') || is_space(b))
                    .map(|p| at + p);
            }
            if self.in_string {
                at += rest.iter().position(|&b| b == b'"' || b == b'\\')?;
                if chunk[at] == b'\\' {
                    if at + 1 == chunk.len() {
                        self.escaped = true;
                        return None;
                    }
                    at += 2;
                    continue;
                }
                self.in_string = false;
                at += 1;
                if self.depth == 0 {
                    return Some(at);
                }
                continue;
            }
            at += rest
                .iter()
                .position(|&b| matches!(b, b'"' | b'{' | b'[' | b'}' | b']'))?;
            match chunk[at] {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                _ => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        return Some(at + 1);
                    }
                }
            }
            at += 1;
        }
        None
    }
}

fn read_error(e: std::io::Error) -> String {
    format!("cannot read the file: {e}")
}

/// The names of the coordinate reference systems that mean what GeoJSON's default means:
/// WGS 84 longitude/latitude, which GDAL transforms to EPSG:4326 without changing a coordinate.
const DEFAULT_CRS_NAMES: [&str; 4] = [
    "urn:ogc:def:crs:OGC:1.3:CRS84",
    "urn:ogc:def:crs:OGC::CRS84",
    "urn:ogc:def:crs:EPSG::4326",
    "EPSG:4326",
];

/// Whether a `crs` member names GeoJSON's default system (`{"type": "name", "properties":
/// {"name": ...}}` with one of [`DEFAULT_CRS_NAMES`]).
fn is_default_crs(crs: &serde_json::Value) -> bool {
    let Some(object) = crs.as_object() else {
        return false;
    };
    object.len() == 2
        && object.get("type").and_then(|t| t.as_str()) == Some("name")
        && object
            .get("properties")
            .and_then(|p| p.as_object())
            .filter(|p| p.len() == 1)
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
            .is_some_and(|name| DEFAULT_CRS_NAMES.contains(&name))
}

struct FeatureSeed<'a> {
    keys: &'a mut Keys,
    buf: &'a mut FeatureBuf,
}

impl<'de> DeserializeSeed<'de> for FeatureSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

/// A feature member the reader knows.
#[derive(Clone, Copy, PartialEq)]
enum FeatureMember {
    Type,
    Id,
    Properties,
    Geometry,
    Bbox,
}

impl FeatureMember {
    const ALL: [FeatureMember; 5] = [
        FeatureMember::Type,
        FeatureMember::Id,
        FeatureMember::Properties,
        FeatureMember::Geometry,
        FeatureMember::Bbox,
    ];

    fn name(self) -> &'static str {
        match self {
            FeatureMember::Type => "type",
            FeatureMember::Id => "id",
            FeatureMember::Properties => "properties",
            FeatureMember::Geometry => "geometry",
            FeatureMember::Bbox => "bbox",
        }
    }

    fn from_name(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|member| member.name() == name)
            .ok_or_else(|| {
                format!("a feature member {name:?} besides type, id, properties, geometry, bbox")
            })
    }
}

/// A string mapped by a function as it is read, without allocating it.
struct MapStr<F>(F);

impl<'de, T, F: FnOnce(&str) -> T> DeserializeSeed<'de> for MapStr<F> {
    type Value = T;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de, T, F: FnOnce(&str) -> T> Visitor<'de> for MapStr<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        Ok((self.0)(v))
    }
}

impl<'de> Visitor<'de> for FeatureSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a GeoJSON Feature object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen: Vec<FeatureMember> = Vec::with_capacity(5);
        while let Some(member) = map.next_key_seed(MapStr(FeatureMember::from_name))? {
            let member = member.map_err(de::Error::custom)?;
            if seen.contains(&member) {
                return Err(de::Error::custom(format!(
                    "duplicate feature member {:?}",
                    member.name()
                )));
            }
            seen.push(member);
            match member {
                FeatureMember::Type => {
                    map.next_value_seed(MapStr(|kind: &str| {
                        if kind == "Feature" {
                            Ok(())
                        } else {
                            Err(format!("a feature of type {kind:?}"))
                        }
                    }))?
                    .map_err(de::Error::custom)?;
                }
                FeatureMember::Id => {
                    self.buf.id = map.next_value_seed(IdSeed {
                        buf: &mut *self.buf,
                    })?;
                }
                FeatureMember::Properties => map.next_value_seed(PropertiesSeed {
                    keys: &mut *self.keys,
                    buf: &mut *self.buf,
                })?,
                FeatureMember::Geometry => map.next_value_seed(GeometrySeed {
                    buf: &mut *self.buf,
                })?,
                FeatureMember::Bbox => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !seen.contains(&FeatureMember::Type) {
            return Err(de::Error::custom("a feature without \"type\": \"Feature\""));
        }
        Ok(())
    }
}

struct IdSeed<'a> {
    buf: &'a mut FeatureBuf,
}

impl<'de> DeserializeSeed<'de> for IdSeed<'_> {
    type Value = FeatureId;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<FeatureId, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for IdSeed<'_> {
    type Value = FeatureId;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer or string feature id")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<FeatureId, E> {
        Ok(FeatureId::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<FeatureId, E> {
        i64::try_from(v)
            .map(FeatureId::Int)
            .map_err(|_| E::custom("a feature id beyond 64-bit integers"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<FeatureId, E> {
        Ok(FeatureId::Str(push_text(&mut self.buf.text, v)?))
    }
}

/// Appends `v` to the text buffer; refuses NUL characters (GDAL cuts strings there).
fn push_text<E: de::Error>(text: &mut String, v: &str) -> Result<Range<usize>, E> {
    if v.contains('\0') {
        return Err(E::custom("a string with a NUL character"));
    }
    let start = text.len();
    text.push_str(v);
    Ok(start..text.len())
}

struct PropertiesSeed<'a> {
    keys: &'a mut Keys,
    buf: &'a mut FeatureBuf,
}

impl<'de> DeserializeSeed<'de> for PropertiesSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PropertiesSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a properties object or null")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(KeySeed {
            keys: &mut *self.keys,
        })? {
            let value = map.next_value_seed(ScalarSeed {
                text: &mut self.buf.text,
            })?;
            self.buf.properties.push((key, value));
        }
        Ok(())
    }
}

/// A property key, interned without allocating when already known.
struct KeySeed<'a> {
    keys: &'a mut Keys,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = u32;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<u32, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = u32;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a property name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u32, E> {
        Ok(self.keys.intern(v))
    }
}

struct ScalarSeed<'a> {
    text: &'a mut String,
}

impl<'de> DeserializeSeed<'de> for ScalarSeed<'_> {
    type Value = Scalar;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Scalar, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScalarSeed<'_> {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string, number, boolean or null")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        i64::try_from(v)
            .map(Scalar::Int)
            .map_err(|_| E::custom("an integer beyond 64 bits"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar::Float(checked_float(v)?))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(push_text(self.text, v)?))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<Scalar, A::Error> {
        Err(de::Error::custom("an array property"))
    }

    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<Scalar, A::Error> {
        Err(de::Error::custom("a nested object property"))
    }
}

/// A float literal as GDAL would read it, or why not: negative zero (serde_json cannot tell
/// `-0` from `-0.0`, which GDAL types differently) and magnitudes json-c may clamp.
fn checked_float<E: de::Error>(v: f64) -> Result<f64, E> {
    if v == 0.0 && v.is_sign_negative() {
        return Err(E::custom("a negative zero"));
    }
    if v.abs() >= MAX_MAGNITUDE {
        return Err(E::custom("a number beyond 64-bit integers"));
    }
    Ok(v)
}

struct GeometrySeed<'a> {
    buf: &'a mut FeatureBuf,
}

impl<'de> DeserializeSeed<'de> for GeometrySeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for GeometrySeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a geometry object or null")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut kind = None;
        let mut has_coordinates = false;
        let mut has_bbox = false;
        self.buf.coords.clear();
        while let Some(member) = map.next_key_seed(MapStr(GeometryMember::from_name))? {
            match member {
                GeometryMember::Type if kind.is_none() => {
                    let parsed = map.next_value_seed(MapStr(|name: &str| {
                        GeometryKind::from_name(name)
                            .ok_or_else(|| format!("a geometry of type {name:?}"))
                    }))?;
                    kind = Some(parsed.map_err(de::Error::custom)?);
                }
                GeometryMember::Coordinates if !has_coordinates => {
                    has_coordinates = true;
                    map.next_value_seed(CoordsSeed {
                        coords: &mut self.buf.coords,
                        depth: 1,
                    })?;
                }
                GeometryMember::Bbox if !has_bbox => {
                    has_bbox = true;
                    map.next_value::<IgnoredAny>()?;
                }
                GeometryMember::Other(name) => {
                    return Err(de::Error::custom(format!(
                        "a geometry member {name:?} besides type, coordinates, bbox"
                    )))
                }
                _ => return Err(de::Error::custom("a duplicate geometry member")),
            }
        }
        let kind = kind.ok_or_else(|| de::Error::custom("a geometry without a type"))?;
        if !has_coordinates {
            return Err(de::Error::custom("a geometry without coordinates"));
        }
        geometry::encode_ewkb(kind, &self.buf.coords, &mut self.buf.ewkb)
            .map_err(de::Error::custom)?;
        self.buf.geometry = Some(kind);
        Ok(())
    }
}

/// A member of a geometry object.
enum GeometryMember {
    Type,
    Coordinates,
    Bbox,
    Other(String),
}

impl GeometryMember {
    fn from_name(name: &str) -> Self {
        match name {
            "type" => GeometryMember::Type,
            "coordinates" => GeometryMember::Coordinates,
            "bbox" => GeometryMember::Bbox,
            other => GeometryMember::Other(other.to_string()),
        }
    }
}

/// Nested coordinate arrays, flattened into [`Coord`] items in document order.
struct CoordsSeed<'a> {
    coords: &'a mut Vec<Coord>,
    depth: usize,
}

/// Deepest nesting of coordinates (a MultiPolygon's: polygons, rings, positions, numbers).
const MAX_COORD_DEPTH: usize = 4;

impl<'de> DeserializeSeed<'de> for CoordsSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CoordsSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("coordinates (nested arrays of numbers)")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.visit_f64(v as f64)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.visit_f64(v as f64)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        if v.abs() >= MAX_MAGNITUDE {
            return Err(E::custom("a coordinate beyond 64-bit integers"));
        }
        self.coords.push(Coord::Number(v));
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth > MAX_COORD_DEPTH {
            return Err(de::Error::custom("coordinates nested too deep"));
        }
        let slot = self.coords.len();
        self.coords.push(Coord::Array(0));
        let mut len: u32 = 0;
        while seq
            .next_element_seed(CoordsSeed {
                coords: &mut *self.coords,
                depth: self.depth + 1,
            })?
            .is_some()
        {
            len = len
                .checked_add(1)
                .ok_or_else(|| de::Error::custom("too many coordinates"))?;
        }
        self.coords[slot] = Coord::Array(len);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A feature as the tests look at it: id, properties by key name, geometry kind.
    type Decoded = (FeatureId, Vec<(String, Scalar)>, Option<GeometryKind>);

    /// The features of `json`, or the reason.
    fn read(json: &str) -> Result<Vec<Decoded>, String> {
        let mut keys = Keys::default();
        let mut features = Vec::new();
        read_collection(json.as_bytes(), &mut keys, &mut |feature, keys| {
            let properties = feature
                .properties
                .iter()
                .map(|(key, value)| (keys.names()[*key as usize].clone(), value.clone()))
                .collect();
            features.push((feature.id.clone(), properties, feature.geometry));
            Ok(())
        })?;
        Ok(features)
    }

    #[test]
    fn features_stream_out_with_their_members_in_any_order() {
        let json = r#"{"features":[
            {"properties":{"a":1,"b":"x"},"geometry":{"coordinates":[1,2],"type":"Point"},"type":"Feature","id":"k"},
            {"type":"Feature","id":7,"properties":null,"geometry":null,"bbox":[0,0,1,1]}
        ],"type":"FeatureCollection","name":"layer","bbox":[0,0,1,1]}"#;
        let features = read(json).expect("read");
        assert_eq!(features.len(), 2);
        assert_eq!(features[0].0, FeatureId::Str(1..2), "after the value x");
        assert_eq!(features[0].1[0], ("a".to_string(), Scalar::Int(1)));
        assert_eq!(features[0].2, Some(GeometryKind::Point));
        assert_eq!(features[1], (FeatureId::Int(7), Vec::new(), None));
    }

    #[test]
    fn values_are_found_across_any_chunk_boundary() {
        let json = r#" { "type" : "FeatureCollection", "x": [1, {"]": "}\\\"["}], "features" : [
            {"type":"Feature","properties":{"s":"a\\\\\"b}]","n":-1.5e3,"t":true},"geometry":null} ,
            {"type":"Feature","properties":{"s":"\u00e9"},"geometry":{"type":"Point","coordinates":[1,2]}}
        ] } "#;
        let whole = read(json).expect("whole");
        assert_eq!(whole.len(), 2);
        for capacity in 1..16 {
            let mut keys = Keys::default();
            let mut texts = Vec::new();
            let reader = std::io::BufReader::with_capacity(capacity, json.as_bytes());
            read_collection(reader, &mut keys, &mut |feature, _| {
                texts.push(feature.text.clone());
                Ok(())
            })
            .expect("chunked");
            assert_eq!(texts, ["a\\\\\"b}]", "é"], "chunks of {capacity}");
        }
    }

    #[test]
    fn what_gdal_reads_otherwise_is_refused_with_a_reason() {
        let refused = |json: &str, why: &str| {
            let reason = read(json).expect_err(json);
            assert!(reason.contains(why), "{json}: {reason}");
        };
        let point = r#""geometry":{"type":"Point","coordinates":[1,2]}"#;
        refused(
            &format!(
                r#"{{"type":"FeatureCollection","features":[{{"type":"Feature","properties":{{"a":-0}},{point}}}]}}"#
            ),
            "zero",
        );
        refused(
            r#"{"type":"FeatureCollection","type":"FeatureCollection","features":[]}"#,
            "duplicate",
        );
        refused(r#"{"type":"FeatureCollection"}"#, "no features");
        refused(r#"{"features":[]}"#, "FeatureCollection");
        refused(
            r#"{"type":"FeatureCollection","features":[]} x"#,
            "trailing",
        );
        refused(
            &format!(
                r#"{{"type":"FeatureCollection","features":[{{"type":"Feature","properties":{{"a":"\u0000"}},{point}}}]}}"#
            ),
            "NUL",
        );
        refused(
            r#"{"type":"FeatureCollection","features":[{"type":"Feature","geometry":{"type":"Point","coordinates":[[[[[1]]]]]}}]}"#,
            "deep",
        );
        refused(
            r#"{"type":"FeatureCollection","features":[{"type":"Feature","id":1.5,"geometry":null}]}"#,
            "id",
        );
    }
}
