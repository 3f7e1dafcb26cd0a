//! Python pickles, read and written without trusting them.
//!
//! RQ stores a job's call as `zlib(pickle((func_name, None, args, kwargs)))`, and the job's meta
//! and result with the same serializer. Python producers write those bytes, but so can anything
//! else that reaches Redis, so a pickle here is hostile input: [`decode`] must neither overflow
//! the stack on a deeply nested pickle nor exhaust memory on a "billion laughs" (a list
//! memoized, then referenced twice, then that pair twice, ...), and must never panic. It reads a
//! pickle into JSON within [`Limits`] and fails with an error naming the limit otherwise.
//!
//! How: the unpickling machine keeps every container, string and object in an arena (a flat
//! `Vec`); its stack and memo hold small values, scalars or indexes into the arena, so DUP, GET
//! and the memo never copy, and objects are shared and mutable as in Python (an APPEND after a
//! PUT is seen through every reference; a list can contain itself). Each opcode creates at most
//! one value, so the machine is bounded by the input and by [`Limits::max_nodes`]. At STOP the
//! value graph is measured first (values, bytes of text and depth once expanded; a cycle counts
//! as infinitely deep) without building anything, then the JSON is built with an explicit work
//! stack. Nothing recurses on the input's nesting: not the machine, not the measure, not the
//! build, and not `Drop` (the arena is flat; the result is at most [`Limits::max_depth`] deep).
//!
//! Nothing Python is executed: globals are names. Python objects other than plain data do not
//! fail the payload: as serde-pickle's `keep_restore_state` did, an object becomes its
//! constructor arguments (a `datetime.timedelta(seconds=300)` reads as `[0, 300, 0]`) or, when
//! the pickle restores a state, that state (an instance's `__dict__`). The calls Python itself
//! uses for plain data in protocols 0 to 3 (`set(list)`, `_codecs.encode(text, 'latin1')` for
//! bytes, `bytearray(...)`, `copyreg._reconstructor`) are recognized and give the plain value.
//!
//! JSON has fewer types than Python: tuples and sets become arrays, bytes become text when they
//! are UTF-8 (else arrays of byte values), integers beyond `i64` decimal strings, non-finite
//! floats `null`, and dict keys that are not strings their JSON text.
//!
//! [`encode`] writes plain JSON data as a protocol 4 pickle that any Python 3 reads back.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};

use super::repr::ReprHead;

mod json;

/// Bounds on what [`decode`] builds from one pickle. A pickle over any of them is an error that
/// names the limit and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of lists, tuples, sets and dicts in the result (a container at the root
    /// is level 1). Bounds the work stacks, and the recursion of whatever later drops or
    /// serializes the resulting `Value`. A cyclic pickle (a list that contains itself) is
    /// infinitely deep, so it fails here rather than looping.
    pub max_depth: usize,
    /// Most values in the result, counting every container, scalar and dict key. The result
    /// expands shared references, so this is what stops a "billion laughs" pickle of a few
    /// hundred bytes; it is checked before anything is built. The unpickling machine itself may
    /// hold twice as many values while it runs (a Python object is written as several values).
    pub max_nodes: usize,
    /// Most bytes of string and bytes content in the result (counted before it is built), and,
    /// separately, in the unpickling machine, where calls such as `_codecs.encode` can copy text.
    pub max_bytes: usize,
}

impl Default for Limits {
    /// Depth 200, a million values and 64 MiB of text: far beyond any job's arguments, well
    /// within a worker's memory.
    fn default() -> Self {
        Limits {
            max_depth: 200,
            max_nodes: 1_000_000,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Why a pickle could not be read or written. The message is what a failed job records.
#[derive(Debug, thiserror::Error)]
pub enum PickleError {
    /// The value nests deeper than [`Limits::max_depth`], or contains itself.
    #[error("pickle nests deeper than {0} levels")]
    TooDeep(usize),
    /// A JSON argument to write is not one JSON value.
    #[error("argument is not JSON: {0}")]
    Json(String),
    /// The value expands to more than [`Limits::max_nodes`] values.
    #[error("pickle expands to more than {0} values")]
    TooManyValues(usize),
    /// The value expands to more than [`Limits::max_bytes`] bytes of strings.
    #[error("pickle expands to more than {0} bytes of strings")]
    TooManyBytes(usize),
    /// An integer longer than Python's own limit for converting integers to and from text.
    #[error("pickle holds an integer longer than {0} decimal digits")]
    IntegerTooLong(usize),
    /// The input ends in the middle of an opcode's argument.
    #[error("pickle is truncated: {opcode} at byte {offset} needs more bytes than remain")]
    Truncated {
        /// The opcode being read.
        opcode: &'static str,
        /// Its offset in the input.
        offset: usize,
    },
    /// The input ends before its STOP opcode.
    #[error("pickle ends without a STOP opcode")]
    MissingStop,
    /// Bytes follow the STOP opcode.
    #[error("pickle has {0} bytes after its STOP opcode")]
    TrailingBytes(usize),
    /// A protocol newer than 5.
    #[error("unsupported pickle protocol {0}")]
    UnsupportedProtocol(u8),
    /// An opcode this reader refuses (persistent ids, the extension registry, out-of-band
    /// buffers) or that does not exist.
    #[error("unsupported pickle opcode {name} (0x{code:02x}) at byte {offset}")]
    UnsupportedOpcode {
        /// The opcode's name in Python's `pickletools`.
        name: &'static str,
        /// Its byte.
        code: u8,
        /// Its offset in the input.
        offset: usize,
    },
    /// An opcode needs more values than the stack (above the last MARK) holds, or a MARK that
    /// is not there.
    #[error("pickle stack underflow: {opcode} at byte {offset}")]
    StackUnderflow {
        /// The opcode.
        opcode: &'static str,
        /// Its offset in the input.
        offset: usize,
    },
    /// A memo lookup of an index that was never stored.
    #[error("pickle refers to memo entry {id} that was never stored ({opcode} at byte {offset})")]
    BadMemoRef {
        /// The memo index.
        id: u64,
        /// The opcode.
        opcode: &'static str,
        /// Its offset in the input.
        offset: usize,
    },
    /// An opcode found a value of the wrong kind on the stack (APPEND to a dict, say).
    #[error("malformed pickle: {opcode} at byte {offset} expects {expected}")]
    WrongType {
        /// The opcode.
        opcode: &'static str,
        /// What it needs.
        expected: &'static str,
        /// Its offset in the input.
        offset: usize,
    },
    /// An opcode's argument cannot be read (a number that is not one, a bad escape, ...).
    #[error("malformed pickle: {opcode} at byte {offset}: {reason}")]
    Malformed {
        /// The opcode.
        opcode: &'static str,
        /// What is wrong.
        reason: &'static str,
        /// Its offset in the input.
        offset: usize,
    },
}

/// Reads a pickle (protocols 0 to 5) into JSON, within `limits`.
///
/// Plain data reads as itself (see the module doc for the JSON mapping); Python objects as
/// their constructor arguments or restored state. Persistent ids, the extension registry and
/// out-of-band buffers are refused. Bytes after STOP are an error.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Value, PickleError> {
    let (arena, root) = Machine::new(bytes, limits).run()?;
    let extent = Measure::new(&arena, limits).run(root)?;
    build_json(&arena, root, limits, extent.bytes)
}

/// The first text string a pickle pushes: for an RQ payload, the `func_name` (the first element
/// of the call tuple, or of the list [`encode`] writes). Reads opcodes only until then, so the
/// name of a poison payload can be logged without decoding it; `None` if anything but the
/// protocol header, framing, MARK, memo stores or one opening EMPTY_LIST comes first, or if the
/// input ends before.
pub fn leading_string(bytes: &[u8]) -> Option<String> {
    let mut input = Reader::new(bytes);
    let mut opened_list = false;
    loop {
        match input.opcode().ok()? {
            op::PROTO | op::BINPUT => {
                input.u8().ok()?;
            }
            op::FRAME => {
                input.take(8).ok()?;
            }
            op::LONG_BINPUT => {
                input.take(4).ok()?;
            }
            op::PUT => {
                input.line().ok()?;
            }
            op::MARK | op::MEMOIZE => {}
            op::EMPTY_LIST if !opened_list => opened_list = true,
            op::SHORT_BINUNICODE => return input.u8_prefixed().ok().map(utf8_text),
            op::BINUNICODE => return input.u32_prefixed().ok().map(utf8_text),
            op::BINUNICODE8 => return input.u64_prefixed().ok().map(utf8_text),
            op::UNICODE => return raw_unicode_escape(input.line().ok()?).ok(),
            op::SHORT_BINSTRING => {
                return String::from_utf8(input.u8_prefixed().ok()?.to_vec()).ok()
            }
            op::BINSTRING => return String::from_utf8(input.i32_prefixed().ok()?.to_vec()).ok(),
            op::STRING => {
                let quoted = unquote(input.line().ok()?)?;
                return String::from_utf8(escape_decode(quoted).ok()?).ok();
            }
            _ => return None,
        }
    }
}

/// Writes plain data as a pickle that Python 3 (and so RQ and rq-dashboard) reads back as the
/// same value: protocol 4 (unframed, as Python writes small pickles; framing is optional to
/// readers), dicts and lists in batches of 1000 items as Python writes them.
///
/// Numbers: `i64` and `u64` values are Python ints (BININT1, BININT2, BININT or LONG1 as Python
/// chooses; [`decode`] reads those beyond `i64` back as decimal strings), other numbers floats
/// (BINFLOAT). A number that is neither (possible only with serde_json's `arbitrary_precision`)
/// is written as the string of its JSON text. Objects become dicts with string keys, arrays
/// lists. Fails only on a value nested deeper than the default [`Limits::max_depth`], which
/// [`decode`] would not read back.
pub fn encode(value: &Value) -> Result<Vec<u8>, PickleError> {
    let mut out = vec![op::PROTO, 4];
    write_values(&mut out, vec![Write::Value(value, 0)])?;
    out.push(op::STOP);
    Ok(out)
}

/// A job's call as [`encode_call`] writes it.
#[derive(Debug)]
pub struct EncodedCall {
    /// The pickle.
    pub pickle: Vec<u8>,
    /// The beginning of the repr of each JSON argument (see [`ReprHead`]), for the job's
    /// description: those arguments are never parsed into values that could give it later.
    pub json_reprs: Vec<String>,
}

/// [`encode`] of RQ's call `(func_name, None, args, kwargs)` (as a list: RQ unpacks either),
/// from borrowed parts: a job's arguments are written without being copied into one value.
/// The positional arguments are `args`, then `json_args`, each the text of one JSON value
/// written straight into the pickle without being parsed into a `Value` first
/// ([`json::write_json`]); text that is not JSON is an error.
pub fn encode_call(
    func_name: &str,
    args: &[Value],
    json_args: &[String],
    kwargs: &Map<String, Value>,
) -> Result<EncodedCall, PickleError> {
    let max_depth = Limits::default().max_depth;
    let mut out = vec![op::PROTO, 4, op::EMPTY_LIST, op::MARK];
    write_text(&mut out, func_name);
    out.push(op::NONE);
    // The positional arguments: a list at level 1 (the call is level 0), its items at level 2.
    out.push(op::EMPTY_LIST);
    let count = args.len() + json_args.len();
    let mut json_reprs = Vec::with_capacity(json_args.len());
    for start in (0..count).step_by(BATCH_SIZE) {
        let end = count.min(start + BATCH_SIZE);
        let marked = end - start > 1;
        if marked {
            out.push(op::MARK);
        }
        for index in start..end {
            match args.get(index) {
                Some(value) => write_values(&mut out, vec![Write::Value(value, 2)])?,
                None => {
                    let mut repr = ReprHead::default();
                    json::write_json(
                        &mut out,
                        &json_args[index - args.len()],
                        2,
                        max_depth,
                        &mut repr,
                    )?;
                    json_reprs.push(repr.finish());
                }
            }
        }
        out.push(if marked { op::APPENDS } else { op::APPEND });
    }
    write_values(&mut out, vec![Write::Map(kwargs, 1)])?;
    out.extend([op::APPENDS, op::STOP]);
    Ok(EncodedCall {
        pickle: out,
        json_reprs,
    })
}

/// Appends the values of `tasks` (last first) to `out`.
fn write_values(out: &mut Vec<u8>, mut tasks: Vec<Write<'_>>) -> Result<(), PickleError> {
    let max_depth = Limits::default().max_depth;
    // Values carry the level of the container holding them.
    while let Some(task) = tasks.pop() {
        let (items, map, level) = match task {
            Write::Opcode(code) => {
                out.push(code);
                continue;
            }
            Write::Key(key) => {
                write_text(out, key);
                continue;
            }
            Write::Value(value, level) => match value {
                Value::Null => {
                    out.push(op::NONE);
                    continue;
                }
                Value::Bool(true) => {
                    out.push(op::NEWTRUE);
                    continue;
                }
                Value::Bool(false) => {
                    out.push(op::NEWFALSE);
                    continue;
                }
                Value::Number(number) => {
                    write_number(out, number);
                    continue;
                }
                Value::String(text) => {
                    write_text(out, text);
                    continue;
                }
                Value::Array(items) => (Some(items.as_slice()), None, level),
                Value::Object(map) => (None, Some(map), level),
            },
            Write::Map(map, level) => (None, Some(map), level),
        };
        let level = level + 1;
        if level > max_depth {
            return Err(PickleError::TooDeep(max_depth));
        }
        if let Some(items) = items {
            out.push(op::EMPTY_LIST);
            schedule_batches(
                &mut tasks,
                items,
                [op::APPEND, op::APPENDS],
                |item, tasks| {
                    tasks.push(Write::Value(item, level));
                },
            );
        } else if let Some(map) = map {
            out.push(op::EMPTY_DICT);
            let entries: Vec<(&String, &Value)> = map.iter().collect();
            schedule_batches(
                &mut tasks,
                &entries,
                [op::SETITEM, op::SETITEMS],
                |&(key, value), tasks| {
                    tasks.push(Write::Value(value, level));
                    tasks.push(Write::Key(key));
                },
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Opcodes

/// Declares the opcodes (`op::NAME`) and [`opcode_name`], as in Python's `pickletools`.
macro_rules! opcodes {
    ($($name:ident = $code:expr),* $(,)?) => {
        /// Pickle opcodes.
        mod op {
            $(pub const $name: u8 = $code;)*
        }

        /// The `pickletools` name of an opcode, for error messages.
        fn opcode_name(code: u8) -> &'static str {
            match code {
                $(op::$name => stringify!($name),)*
                _ => "an unknown opcode",
            }
        }
    };
}

opcodes! {
    MARK = b'(', STOP = b'.', POP = b'0', POP_MARK = b'1', DUP = b'2',
    FLOAT = b'F', INT = b'I', BININT = b'J', BININT1 = b'K', LONG = b'L', BININT2 = b'M',
    NONE = b'N', PERSID = b'P', BINPERSID = b'Q', REDUCE = b'R', STRING = b'S',
    BINSTRING = b'T', SHORT_BINSTRING = b'U', UNICODE = b'V', BINUNICODE = b'X',
    APPEND = b'a', BUILD = b'b', GLOBAL = b'c', DICT = b'd', EMPTY_DICT = b'}',
    APPENDS = b'e', GET = b'g', BINGET = b'h', INST = b'i', LONG_BINGET = b'j', LIST = b'l',
    EMPTY_LIST = b']', OBJ = b'o', PUT = b'p', BINPUT = b'q', LONG_BINPUT = b'r',
    SETITEM = b's', TUPLE = b't', EMPTY_TUPLE = b')', SETITEMS = b'u', BINFLOAT = b'G',
    PROTO = 0x80, NEWOBJ = 0x81, EXT1 = 0x82, EXT2 = 0x83, EXT4 = 0x84, TUPLE1 = 0x85,
    TUPLE2 = 0x86, TUPLE3 = 0x87, NEWTRUE = 0x88, NEWFALSE = 0x89, LONG1 = 0x8a, LONG4 = 0x8b,
    BINBYTES = b'B', SHORT_BINBYTES = b'C', SHORT_BINUNICODE = 0x8c, BINUNICODE8 = 0x8d,
    BINBYTES8 = 0x8e, EMPTY_SET = 0x8f, ADDITEMS = 0x90, FROZENSET = 0x91, NEWOBJ_EX = 0x92,
    STACK_GLOBAL = 0x93, MEMOIZE = 0x94, FRAME = 0x95, BYTEARRAY8 = 0x96, NEXT_BUFFER = 0x97,
    READONLY_BUFFER = 0x98,
}

/// Highest protocol read (Python 3.8+ writes 5).
const HIGHEST_PROTOCOL: u8 = 5;
/// Items per APPENDS/SETITEMS batch, as Python's pickler.
const BATCH_SIZE: usize = 1000;
/// Longest integer read, in decimal digits: Python's own default limit for converting integers
/// to and from text (`sys.get_int_max_str_digits()`), beyond which conversion is slow.
const MAX_INT_DIGITS: usize = 4300;
/// Longest binary integer (LONG1/LONG4) read: about [`MAX_INT_DIGITS`] decimal digits.
const MAX_INT_BYTES: usize = 1786;
/// How many values the machine may push per value allowed in the result: calls to Python
/// constructors push the callable, the arguments and the tuple of them for one result value.
const MACHINE_VALUES_PER_RESULT_VALUE: usize = 2;

// ---------------------------------------------------------------------------------------------
// Input

/// A cursor over the pickle that remembers the opcode being read, for error messages.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    opcode: u8,
    opcode_at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader {
            bytes,
            pos: 0,
            opcode: op::STOP,
            opcode_at: 0,
        }
    }

    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    /// Reads the next opcode and remembers it.
    fn opcode(&mut self) -> Result<u8, PickleError> {
        let code = *self.bytes.get(self.pos).ok_or(PickleError::MissingStop)?;
        self.opcode = code;
        self.opcode_at = self.pos;
        self.pos += 1;
        Ok(code)
    }

    /// The current opcode's name and offset.
    fn at(&self) -> (&'static str, usize) {
        (opcode_name(self.opcode), self.opcode_at)
    }

    fn truncated(&self) -> PickleError {
        let (opcode, offset) = self.at();
        PickleError::Truncated { opcode, offset }
    }

    /// The next `len` bytes; a length beyond the input is checked before anything is allocated.
    fn take(&mut self, len: usize) -> Result<&'a [u8], PickleError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| self.truncated())?;
        let slice = self
            .bytes
            .get(self.pos..end)
            .ok_or_else(|| self.truncated())?;
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PickleError> {
        let slice = self.take(N)?;
        <[u8; N]>::try_from(slice).map_err(|_| self.truncated())
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        let [byte] = self.array::<1>()?;
        Ok(byte)
    }

    fn u32_le(&mut self) -> Result<u32, PickleError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// A line without its `\n` (protocol 0 arguments).
    fn line(&mut self) -> Result<&'a [u8], PickleError> {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        let len = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.truncated())?;
        let line = self.take(len)?;
        self.pos += 1;
        Ok(line)
    }

    fn u8_prefixed(&mut self) -> Result<&'a [u8], PickleError> {
        let len = self.u8()?;
        self.take(usize::from(len))
    }

    fn u32_prefixed(&mut self) -> Result<&'a [u8], PickleError> {
        let len = self.u32_le()?;
        self.take(usize::try_from(len).map_err(|_| self.truncated())?)
    }

    fn u64_prefixed(&mut self) -> Result<&'a [u8], PickleError> {
        let len = u64::from_le_bytes(self.array()?);
        self.take(usize::try_from(len).map_err(|_| self.truncated())?)
    }

    /// A length-prefixed argument whose length is a signed 32-bit integer.
    fn i32_prefixed(&mut self) -> Result<&'a [u8], PickleError> {
        let len = i32::from_le_bytes(self.array()?);
        let len = usize::try_from(len).map_err(|_| {
            let (opcode, offset) = self.at();
            PickleError::Malformed {
                opcode,
                reason: "negative length",
                offset,
            }
        })?;
        self.take(len)
    }
}

// ---------------------------------------------------------------------------------------------
// The unpickling machine

/// An index into the arena.
type NodeId = usize;

/// A value on the machine's stack, in its memo or in a container: a scalar, or a reference.
#[derive(Debug, Clone, Copy)]
enum Item {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// A module global (a class or function), by what we make of it.
    Global(Global),
    Node(NodeId),
}

/// The globals whose calls Python uses for plain data; every other global is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Global {
    Set,
    FrozenSet,
    List,
    Bytes,
    ByteArray,
    Int,
    /// `_codecs.encode`: bytes in protocols 0 to 2.
    Encode,
    /// `copyreg._reconstructor`: instances in protocols 0 and 1.
    Reconstructor,
    Other,
}

impl Global {
    fn named(module: &[u8], name: &[u8]) -> Global {
        match (module, name) {
            (b"_codecs", b"encode") => Global::Encode,
            (b"copy_reg" | b"copyreg", b"_reconstructor") => Global::Reconstructor,
            (b"builtins" | b"__builtin__", b"set") => Global::Set,
            (b"builtins" | b"__builtin__", b"frozenset") => Global::FrozenSet,
            (b"builtins" | b"__builtin__", b"list") => Global::List,
            (b"builtins" | b"__builtin__", b"bytes") => Global::Bytes,
            (b"builtins" | b"__builtin__", b"bytearray") => Global::ByteArray,
            (b"builtins" | b"__builtin__", b"int") => Global::Int,
            _ => Global::Other,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SeqKind {
    List,
    Tuple,
    Set,
    FrozenSet,
}

/// What the arena holds.
#[derive(Debug)]
enum Node {
    Text(String),
    Bytes(Vec<u8>),
    /// An integer beyond `i64`, in decimal.
    BigInt(String),
    Seq(SeqKind, Vec<Item>),
    /// Key-value pairs in insertion order, duplicates included (the last wins in JSON).
    Dict(Vec<(Item, Item)>),
    /// A Python object: what it reads as (its arguments, its state, or the list or dict it was
    /// filled with), never itself an object. `filled` once APPEND or SETITEM added to it, after
    /// which a BUILD no longer replaces its contents.
    Object {
        value: Item,
        filled: bool,
    },
}

/// Which container APPEND(S), SETITEM(S) and ADDITEMS add to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contents {
    List,
    Dict,
    Set,
}

impl Contents {
    fn holds(self, node: &Node) -> bool {
        matches!(
            (self, node),
            (Contents::List, Node::Seq(SeqKind::List, _))
                | (Contents::Set, Node::Seq(SeqKind::Set, _))
                | (Contents::Dict, Node::Dict(_))
        )
    }

    fn empty(self) -> Node {
        match self {
            Contents::List => Node::Seq(SeqKind::List, Vec::new()),
            Contents::Set => Node::Seq(SeqKind::Set, Vec::new()),
            Contents::Dict => Node::Dict(Vec::new()),
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Contents::List => "a list",
            Contents::Set => "a set",
            Contents::Dict => "a dict",
        }
    }
}

/// A text encoding `_codecs.encode` or `bytearray(text, encoding)` may name.
#[derive(Debug, Clone, Copy)]
enum Codec {
    Latin1,
    Utf8,
    Ascii,
}

impl Codec {
    fn named(name: &str) -> Option<Codec> {
        match name.to_ascii_lowercase().replace('_', "-").as_str() {
            "latin1" | "latin-1" | "iso-8859-1" | "iso8859-1" | "l1" => Some(Codec::Latin1),
            "utf-8" | "utf8" => Some(Codec::Utf8),
            "ascii" | "us-ascii" => Some(Codec::Ascii),
            _ => None,
        }
    }

    /// The length of `text` encoded, or `None` if it cannot be.
    fn encoded_len(self, text: &str) -> Option<usize> {
        match self {
            Codec::Latin1 => text
                .chars()
                .all(|c| u32::from(c) <= 0xff)
                .then(|| text.chars().count()),
            Codec::Utf8 => Some(text.len()),
            Codec::Ascii => text.is_ascii().then_some(text.len()),
        }
    }

    fn encode(self, text: &str) -> Vec<u8> {
        match self {
            Codec::Latin1 => text
                .chars()
                .filter_map(|c| u8::try_from(u32::from(c)).ok())
                .collect(),
            Codec::Utf8 | Codec::Ascii => text.as_bytes().to_vec(),
        }
    }
}

/// Python's unpickler, minus the Python: the stack, the marks (the metastack), the memo and the
/// arena that all of them point into.
struct Machine<'a> {
    input: Reader<'a>,
    limits: &'a Limits,
    stack: Vec<Item>,
    /// Stack lengths at each open MARK.
    marks: Vec<usize>,
    memo: HashMap<u64, Item>,
    arena: Vec<Node>,
    /// Values pushed so far, against the machine's share of `max_nodes`.
    pushes: usize,
    /// Bytes of text created so far, against `max_bytes`.
    text_bytes: usize,
}

impl<'a> Machine<'a> {
    fn new(bytes: &'a [u8], limits: &'a Limits) -> Self {
        Machine {
            input: Reader::new(bytes),
            limits,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            arena: Vec::new(),
            pushes: 0,
            text_bytes: 0,
        }
    }

    /// Runs the pickle to its STOP: the arena and the root value.
    fn run(mut self) -> Result<(Vec<Node>, Item), PickleError> {
        loop {
            let code = self.input.opcode()?;
            if code == op::STOP {
                let root = self.pop()?;
                return match self.input.remaining() {
                    0 => Ok((self.arena, root)),
                    trailing => Err(PickleError::TrailingBytes(trailing)),
                };
            }
            self.step(code)?;
        }
    }

    /// Executes one opcode (its byte already read).
    fn step(&mut self, code: u8) -> Result<(), PickleError> {
        match code {
            op::PROTO => {
                let protocol = self.input.u8()?;
                if protocol > HIGHEST_PROTOCOL {
                    return Err(PickleError::UnsupportedProtocol(protocol));
                }
            }
            op::FRAME => {
                // Frames only help readers prefetch; the whole pickle is in memory.
                self.input.take(8)?;
            }
            op::MARK => self.mark()?,
            op::POP => {
                if self.stack.len() > self.floor() {
                    self.stack.pop();
                } else {
                    self.pop_mark()?;
                }
            }
            op::POP_MARK => {
                self.pop_mark()?;
            }
            op::DUP => {
                let top = self.top()?;
                self.push(top)?;
            }

            // Scalars.
            op::NONE => self.push(Item::None)?,
            op::NEWTRUE => self.push(Item::Bool(true))?,
            op::NEWFALSE => self.push(Item::Bool(false))?,
            op::INT => {
                let item = match self.input.line()? {
                    // Protocol 0 booleans.
                    b"01" => Item::Bool(true),
                    b"00" => Item::Bool(false),
                    digits => self.decimal_int(digits)?,
                };
                self.push(item)?;
            }
            op::LONG => {
                let line = self.input.line()?;
                let item = self.decimal_int(line.strip_suffix(b"L").unwrap_or(line))?;
                self.push(item)?;
            }
            op::BININT => {
                let value = i32::from_le_bytes(self.input.array()?);
                self.push(Item::Int(value.into()))?;
            }
            op::BININT1 => {
                let value = self.input.u8()?;
                self.push(Item::Int(value.into()))?;
            }
            op::BININT2 => {
                let value = u16::from_le_bytes(self.input.array()?);
                self.push(Item::Int(value.into()))?;
            }
            op::LONG1 => {
                let bytes = self.input.u8_prefixed()?;
                let item = self.binary_int(bytes)?;
                self.push(item)?;
            }
            op::LONG4 => {
                let bytes = self.input.i32_prefixed()?;
                let item = self.binary_int(bytes)?;
                self.push(item)?;
            }
            op::FLOAT => {
                let value = std::str::from_utf8(self.input.line()?)
                    .ok()
                    .and_then(|text| text.trim().parse::<f64>().ok())
                    .ok_or_else(|| self.malformed("not a float"))?;
                self.push(Item::Float(value))?;
            }
            op::BINFLOAT => {
                let value = f64::from_be_bytes(self.input.array()?);
                self.push(Item::Float(value))?;
            }

            // Strings and bytes.
            op::STRING => {
                let quoted = unquote(self.input.line()?)
                    .ok_or_else(|| self.malformed("the argument must be quoted"))?;
                let bytes = escape_decode(quoted).map_err(|reason| self.malformed(reason))?;
                self.push_bytes(bytes)?;
            }
            op::BINSTRING => {
                let bytes = self.input.i32_prefixed()?;
                self.push_bytes(bytes.to_vec())?;
            }
            op::SHORT_BINSTRING | op::SHORT_BINBYTES => {
                let bytes = self.input.u8_prefixed()?;
                self.push_bytes(bytes.to_vec())?;
            }
            op::BINBYTES => {
                let bytes = self.input.u32_prefixed()?;
                self.push_bytes(bytes.to_vec())?;
            }
            op::BINBYTES8 | op::BYTEARRAY8 => {
                let bytes = self.input.u64_prefixed()?;
                self.push_bytes(bytes.to_vec())?;
            }
            op::UNICODE => {
                let text = raw_unicode_escape(self.input.line()?)
                    .map_err(|reason| self.malformed(reason))?;
                self.push_text(text)?;
            }
            op::SHORT_BINUNICODE => {
                let text = utf8_text(self.input.u8_prefixed()?);
                self.push_text(text)?;
            }
            op::BINUNICODE => {
                let text = utf8_text(self.input.u32_prefixed()?);
                self.push_text(text)?;
            }
            op::BINUNICODE8 => {
                let text = utf8_text(self.input.u64_prefixed()?);
                self.push_text(text)?;
            }

            // Containers.
            op::EMPTY_TUPLE => self.push_node(Node::Seq(SeqKind::Tuple, Vec::new()))?,
            op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                let items = self.pop_n(usize::from(code - op::TUPLE1) + 1)?;
                self.push_node(Node::Seq(SeqKind::Tuple, items))?;
            }
            op::TUPLE => {
                let items = self.pop_mark()?;
                self.push_node(Node::Seq(SeqKind::Tuple, items))?;
            }
            op::EMPTY_LIST => self.push_node(Node::Seq(SeqKind::List, Vec::new()))?,
            op::LIST => {
                let items = self.pop_mark()?;
                self.push_node(Node::Seq(SeqKind::List, items))?;
            }
            op::APPEND => {
                let item = self.pop()?;
                self.add_items(Contents::List, vec![item])?;
            }
            op::APPENDS => {
                let items = self.pop_mark()?;
                self.add_items(Contents::List, items)?;
            }
            op::EMPTY_DICT => self.push_node(Node::Dict(Vec::new()))?,
            op::DICT => {
                let items = self.pop_mark()?;
                let pairs = self.pairs(items)?;
                self.push_node(Node::Dict(pairs))?;
            }
            op::SETITEM => {
                let items = self.pop_n(2)?;
                self.add_items(Contents::Dict, items)?;
            }
            op::SETITEMS => {
                let items = self.pop_mark()?;
                self.add_items(Contents::Dict, items)?;
            }
            op::EMPTY_SET => self.push_node(Node::Seq(SeqKind::Set, Vec::new()))?,
            op::ADDITEMS => {
                let items = self.pop_mark()?;
                self.add_items(Contents::Set, items)?;
            }
            op::FROZENSET => {
                let items = self.pop_mark()?;
                self.push_node(Node::Seq(SeqKind::FrozenSet, items))?;
            }

            // The memo.
            op::PUT => {
                let id = self.text_memo_id()?;
                self.memoize(id)?;
            }
            op::BINPUT => {
                let id = self.input.u8()?;
                self.memoize(id.into())?;
            }
            op::LONG_BINPUT => {
                let id = self.input.u32_le()?;
                self.memoize(id.into())?;
            }
            op::MEMOIZE => self.memoize(self.memo.len() as u64)?,
            op::GET => {
                let id = self.text_memo_id()?;
                self.memo_get(id)?;
            }
            op::BINGET => {
                let id = self.input.u8()?;
                self.memo_get(id.into())?;
            }
            op::LONG_BINGET => {
                let id = self.input.u32_le()?;
                self.memo_get(id.into())?;
            }

            // Python objects.
            op::GLOBAL => {
                let module = self.input.line()?;
                let name = self.input.line()?;
                self.push(Item::Global(Global::named(module, name)))?;
            }
            op::STACK_GLOBAL => {
                let name = self.pop()?;
                let module = self.pop()?;
                let global = match (self.text(module), self.text(name)) {
                    (Some(module), Some(name)) => Global::named(module.as_bytes(), name.as_bytes()),
                    _ => return Err(self.wrong_type("a module and a name")),
                };
                self.push(Item::Global(global))?;
            }
            op::REDUCE => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let result = self.call(callable, args)?;
                self.push(result)?;
            }
            op::NEWOBJ => {
                let args = self.pop()?;
                let _class = self.pop()?;
                let object = self.object(args);
                self.push(object)?;
            }
            op::NEWOBJ_EX => {
                let kwargs = self.pop()?;
                let args = self.pop()?;
                let _class = self.pop()?;
                let both = self.alloc(Node::Seq(SeqKind::Tuple, vec![args, kwargs]));
                let object = self.object(both);
                self.push(object)?;
            }
            op::BUILD => self.set_state()?,
            op::INST => {
                let _module = self.input.line()?;
                let _name = self.input.line()?;
                let args = self.pop_mark()?;
                let args = self.alloc(Node::Seq(SeqKind::Tuple, args));
                let object = self.object(args);
                self.push(object)?;
            }
            op::OBJ => {
                let items = self.pop_mark()?;
                let Some((_class, args)) = items.split_first() else {
                    return Err(self.underflow());
                };
                let args = self.alloc(Node::Seq(SeqKind::Tuple, args.to_vec()));
                let object = self.object(args);
                self.push(object)?;
            }

            // PERSID, BINPERSID, EXT1, EXT2, EXT4, NEXT_BUFFER, READONLY_BUFFER and unknown bytes.
            _ => {
                let (name, offset) = self.input.at();
                return Err(PickleError::UnsupportedOpcode { name, code, offset });
            }
        }
        Ok(())
    }

    // --- errors at the current opcode

    fn malformed(&self, reason: &'static str) -> PickleError {
        let (opcode, offset) = self.input.at();
        PickleError::Malformed {
            opcode,
            reason,
            offset,
        }
    }

    fn underflow(&self) -> PickleError {
        let (opcode, offset) = self.input.at();
        PickleError::StackUnderflow { opcode, offset }
    }

    fn wrong_type(&self, expected: &'static str) -> PickleError {
        let (opcode, offset) = self.input.at();
        PickleError::WrongType {
            opcode,
            expected,
            offset,
        }
    }

    // --- the stack

    /// The stack length at the last MARK: nothing below it may be popped.
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn push(&mut self, item: Item) -> Result<(), PickleError> {
        let allowed = self
            .limits
            .max_nodes
            .saturating_mul(MACHINE_VALUES_PER_RESULT_VALUE);
        if self.pushes >= allowed {
            return Err(PickleError::TooManyValues(self.limits.max_nodes));
        }
        self.pushes += 1;
        self.stack.push(item);
        Ok(())
    }

    fn alloc_id(&mut self, node: Node) -> NodeId {
        self.arena.push(node);
        self.arena.len() - 1
    }

    fn alloc(&mut self, node: Node) -> Item {
        Item::Node(self.alloc_id(node))
    }

    fn push_node(&mut self, node: Node) -> Result<(), PickleError> {
        let item = self.alloc(node);
        self.push(item)
    }

    fn charge_text(&mut self, len: usize) -> Result<(), PickleError> {
        self.text_bytes = self.text_bytes.saturating_add(len);
        if self.text_bytes > self.limits.max_bytes {
            return Err(PickleError::TooManyBytes(self.limits.max_bytes));
        }
        Ok(())
    }

    fn push_text(&mut self, text: String) -> Result<(), PickleError> {
        self.charge_text(text.len())?;
        self.push_node(Node::Text(text))
    }

    fn push_bytes(&mut self, bytes: Vec<u8>) -> Result<(), PickleError> {
        self.charge_text(bytes.len())?;
        self.push_node(Node::Bytes(bytes))
    }

    fn top(&self) -> Result<Item, PickleError> {
        match self.stack.last() {
            Some(&item) if self.stack.len() > self.floor() => Ok(item),
            _ => Err(self.underflow()),
        }
    }

    fn pop(&mut self) -> Result<Item, PickleError> {
        let item = self.top()?;
        self.stack.pop();
        Ok(item)
    }

    /// The top `count` items, in stack order.
    fn pop_n(&mut self, count: usize) -> Result<Vec<Item>, PickleError> {
        let available = self.stack.len().saturating_sub(self.floor());
        if available < count {
            return Err(self.underflow());
        }
        Ok(self.stack.split_off(self.stack.len() - count))
    }

    fn mark(&mut self) -> Result<(), PickleError> {
        // Python opens at most one MARK per level of nesting, two where a set or bytes is
        // written as a call (protocols 0 to 3), so open marks are bounded by the depth limit.
        let max_open = self.limits.max_depth.saturating_mul(2).saturating_add(2);
        if self.marks.len() >= max_open {
            return Err(PickleError::TooDeep(self.limits.max_depth));
        }
        self.marks.push(self.stack.len());
        Ok(())
    }

    /// The items above the last MARK, which is closed.
    fn pop_mark(&mut self) -> Result<Vec<Item>, PickleError> {
        let mark = self.marks.pop().ok_or_else(|| self.underflow())?;
        if mark > self.stack.len() {
            return Err(self.underflow());
        }
        Ok(self.stack.split_off(mark))
    }

    // --- the memo

    fn text_memo_id(&mut self) -> Result<u64, PickleError> {
        std::str::from_utf8(self.input.line()?)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .ok_or_else(|| self.malformed("not a memo index"))
    }

    fn memoize(&mut self, id: u64) -> Result<(), PickleError> {
        let item = self.top()?;
        if self.memo.len() >= self.limits.max_nodes && !self.memo.contains_key(&id) {
            return Err(PickleError::TooManyValues(self.limits.max_nodes));
        }
        self.memo.insert(id, item);
        Ok(())
    }

    fn memo_get(&mut self, id: u64) -> Result<(), PickleError> {
        let Some(&item) = self.memo.get(&id) else {
            let (opcode, offset) = self.input.at();
            return Err(PickleError::BadMemoRef { id, opcode, offset });
        };
        self.push(item)
    }

    // --- the arena

    fn node(&self, item: Item) -> Option<&Node> {
        match item {
            Item::Node(id) => self.arena.get(id),
            _ => None,
        }
    }

    fn text(&self, item: Item) -> Option<&str> {
        match self.node(item) {
            Some(Node::Text(text)) => Some(text),
            _ => None,
        }
    }

    // --- numbers

    fn decimal_int(&mut self, text: &[u8]) -> Result<Item, PickleError> {
        match parse_decimal(text) {
            Some(Integer::Small(value)) => Ok(Item::Int(value)),
            Some(Integer::Big(digits)) if digits.trim_start_matches('-').len() > MAX_INT_DIGITS => {
                Err(PickleError::IntegerTooLong(MAX_INT_DIGITS))
            }
            Some(Integer::Big(digits)) => {
                self.charge_text(digits.len())?;
                Ok(self.alloc(Node::BigInt(digits)))
            }
            None => Err(self.malformed("not an integer")),
        }
    }

    fn binary_int(&mut self, bytes: &[u8]) -> Result<Item, PickleError> {
        if bytes.len() > MAX_INT_BYTES {
            return Err(PickleError::IntegerTooLong(MAX_INT_DIGITS));
        }
        match twos_complement_int(bytes) {
            Integer::Small(value) => Ok(Item::Int(value)),
            Integer::Big(digits) => {
                self.charge_text(digits.len())?;
                Ok(self.alloc(Node::BigInt(digits)))
            }
        }
    }

    // --- containers

    fn pairs(&self, items: Vec<Item>) -> Result<Vec<(Item, Item)>, PickleError> {
        if !items.len().is_multiple_of(2) {
            return Err(self.malformed("odd number of keys and values"));
        }
        let mut items = items.into_iter();
        let mut pairs = Vec::with_capacity(items.len() / 2);
        while let (Some(key), Some(value)) = (items.next(), items.next()) {
            pairs.push((key, value));
        }
        Ok(pairs)
    }

    /// Adds items (keys and values alternating, for a dict) to the container at the top of the
    /// stack. A Python object there (a subclass of list or dict: `OrderedDict`, `defaultdict`)
    /// is filled: it reads as the list or dict of what was added.
    fn add_items(&mut self, contents: Contents, items: Vec<Item>) -> Result<(), PickleError> {
        if contents == Contents::Dict {
            let pairs = self.pairs(items)?;
            let target = self.container_at_top(contents)?;
            if let Some(Node::Dict(dict)) = self.arena.get_mut(target) {
                dict.extend(pairs);
            }
        } else {
            let target = self.container_at_top(contents)?;
            if let Some(Node::Seq(_, list)) = self.arena.get_mut(target) {
                list.extend(items);
            }
        }
        Ok(())
    }

    /// The container that `contents` go into: the one at the top of the stack, or the contents
    /// of the object there (created empty on the first addition).
    fn container_at_top(&mut self, contents: Contents) -> Result<NodeId, PickleError> {
        /// What stands at the top of the stack.
        enum Found {
            Container(NodeId),
            Unfilled(NodeId),
            Other,
        }
        let found = match self.top()? {
            Item::Node(id) => match self.arena.get(id) {
                Some(node) if contents.holds(node) => Found::Container(id),
                Some(Node::Object {
                    value: Item::Node(inner),
                    filled: true,
                }) if self.arena.get(*inner).is_some_and(|n| contents.holds(n)) => {
                    Found::Container(*inner)
                }
                Some(Node::Object { filled: false, .. }) => Found::Unfilled(id),
                _ => Found::Other,
            },
            _ => Found::Other,
        };
        match found {
            Found::Container(id) => Ok(id),
            Found::Unfilled(object) => {
                let id = self.alloc_id(contents.empty());
                if let Some(Node::Object { value, filled }) = self.arena.get_mut(object) {
                    *value = Item::Node(id);
                    *filled = true;
                }
                Ok(id)
            }
            Found::Other => Err(self.wrong_type(contents.expected())),
        }
    }

    // --- Python objects

    /// What an object reads as, never an object itself: an object's own value.
    fn unwrap_object(&self, item: Item) -> Item {
        match self.node(item) {
            Some(Node::Object { value, .. }) => *value,
            _ => item,
        }
    }

    /// A new object that reads as `value` until a BUILD or an addition changes it.
    fn object(&mut self, value: Item) -> Item {
        let value = self.unwrap_object(value);
        self.alloc(Node::Object {
            value,
            filled: false,
        })
    }

    /// REDUCE: `callable(*args)`. The calls Python uses for plain data give that data; any
    /// other call gives an object that reads as its arguments (as serde-pickle's
    /// `keep_restore_state`).
    fn call(&mut self, callable: Item, args: Item) -> Result<Item, PickleError> {
        let Some(Node::Seq(SeqKind::Tuple, items)) = self.node(args) else {
            return Err(self.wrong_type("a tuple of arguments"));
        };
        let (first, second, last) = (
            items.first().copied(),
            items.get(1).copied(),
            items.last().copied(),
        );
        let global = match callable {
            Item::Global(global) => global,
            _ => Global::Other,
        };
        let plain = match global {
            // set(list), frozenset(list), list(list): the same items. The argument is shared
            // rather than copied, so that no opcode copies a container.
            Global::Set | Global::FrozenSet | Global::List => match first {
                None => {
                    let kind = match global {
                        Global::Set => SeqKind::Set,
                        Global::FrozenSet => SeqKind::FrozenSet,
                        _ => SeqKind::List,
                    };
                    Some(self.alloc(Node::Seq(kind, Vec::new())))
                }
                Some(arg) if matches!(self.node(arg), Some(Node::Seq(..))) => Some(arg),
                Some(_) => None,
            },
            Global::Int => match first {
                Some(arg @ Item::Int(_)) => Some(arg),
                Some(arg) if matches!(self.node(arg), Some(Node::BigInt(_))) => Some(arg),
                _ => None,
            },
            // bytes(), bytearray(), bytearray(bytes), bytearray(text, encoding).
            Global::Bytes | Global::ByteArray => match first {
                None => Some(self.alloc(Node::Bytes(Vec::new()))),
                Some(arg) if matches!(self.node(arg), Some(Node::Bytes(_))) => Some(arg),
                Some(arg) => self.encode_text(arg, second)?,
            },
            // _codecs.encode(text, 'latin1'): bytes in protocols 0 to 2.
            Global::Encode => match first {
                Some(arg) => self.encode_text(arg, second)?,
                None => None,
            },
            // copyreg._reconstructor(class, base, state): reads as `state` until a BUILD.
            Global::Reconstructor => {
                let state = match last {
                    Some(state) => state,
                    None => self.alloc(Node::Dict(Vec::new())),
                };
                Some(self.object(state))
            }
            Global::Other => None,
        };
        Ok(match plain {
            Some(item) => item,
            None => self.object(args),
        })
    }

    /// `text` encoded as bytes, when it is text in a known encoding (UTF-8 when none is named).
    fn encode_text(
        &mut self,
        text: Item,
        encoding: Option<Item>,
    ) -> Result<Option<Item>, PickleError> {
        let codec = match encoding {
            None => Some(Codec::Utf8),
            Some(name) => self.text(name).and_then(Codec::named),
        };
        let Some(codec) = codec else {
            return Ok(None);
        };
        let Some(len) = self.text(text).and_then(|t| codec.encoded_len(t)) else {
            return Ok(None);
        };
        // The text may be referenced many times: each copy counts.
        self.charge_text(len)?;
        let bytes = self.text(text).map(|t| codec.encode(t)).unwrap_or_default();
        Ok(Some(self.alloc(Node::Bytes(bytes))))
    }

    /// BUILD: sets an object's state. The object reads as its state from then on, through every
    /// reference, unless it was filled with items (whose data matters more than attributes).
    /// Anything else at the top of the stack is replaced by the state, as serde-pickle does.
    fn set_state(&mut self) -> Result<(), PickleError> {
        let state = self.pop()?;
        let state = self.unwrap_object(state);
        let target = self.top()?;
        if let Item::Node(id) = target {
            if let Some(Node::Object { value, filled }) = self.arena.get_mut(id) {
                if !*filled {
                    *value = state;
                }
                return Ok(());
            }
        }
        self.stack.pop();
        self.stack.push(state);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Text and numbers

/// Text from UTF-8 (the BINUNICODE family). Python writes lone surrogates with `surrogatepass`;
/// Rust strings cannot hold them, so they (and any invalid byte) become U+FFFD.
fn utf8_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The argument of STRING without its quotes, or `None` when it is not quoted (Python refuses it).
fn unquote(line: &[u8]) -> Option<&[u8]> {
    match line {
        [open @ (b'"' | b'\''), inner @ .., close] if open == close => Some(inner),
        _ => None,
    }
}

/// Python's `codecs.escape_decode`, used by STRING (Python 2 `str` in protocol 0).
fn escape_decode(text: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some((&byte, tail)) = rest.split_first() {
        rest = tail;
        if byte != b'\\' {
            out.push(byte);
            continue;
        }
        let Some((&escape, tail)) = rest.split_first() else {
            return Err("\\ at end of string");
        };
        rest = tail;
        match escape {
            b'\n' => {}
            b'\\' | b'\'' | b'"' => out.push(escape),
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let mut value = u32::from(escape - b'0');
                for _ in 0..2 {
                    match rest.split_first() {
                        Some((&digit @ b'0'..=b'7', tail)) => {
                            value = value * 8 + u32::from(digit - b'0');
                            rest = tail;
                        }
                        _ => break,
                    }
                }
                out.push((value & 0xff) as u8);
            }
            b'x' => {
                let hex = rest.get(..2).ok_or("invalid \\x escape")?;
                out.push(parse_hex(hex).ok_or("invalid \\x escape")? as u8);
                rest = rest.get(2..).unwrap_or_default();
            }
            _ => out.extend([b'\\', escape]),
        }
    }
    Ok(out)
}

/// Python's `raw-unicode-escape` decoding, used by UNICODE (protocol 0): bytes are Latin-1,
/// except `\uXXXX` and `\UXXXXXXXX` after an odd run of backslashes.
fn raw_unicode_escape(line: &[u8]) -> Result<String, &'static str> {
    let mut text = String::with_capacity(line.len());
    let mut rest = line;
    while let Some((&byte, tail)) = rest.split_first() {
        rest = tail;
        if byte != b'\\' {
            text.push(char::from(byte));
            continue;
        }
        let mut backslashes = 1;
        while let Some((b'\\', tail)) = rest.split_first() {
            backslashes += 1;
            rest = tail;
        }
        let digits = match rest.first() {
            Some(b'u') if backslashes % 2 == 1 => 4,
            Some(b'U') if backslashes % 2 == 1 => 8,
            _ => 0,
        };
        let literal = if digits > 0 {
            backslashes - 1
        } else {
            backslashes
        };
        text.extend(std::iter::repeat_n('\\', literal));
        if digits == 0 {
            continue;
        }
        let hex = rest.get(1..=digits).ok_or("truncated \\uXXXX escape")?;
        let code = parse_hex(hex).ok_or("truncated \\uXXXX escape")?;
        if code > 0x10_ffff {
            return Err("\\Uxxxxxxxx out of range");
        }
        // Lone surrogates, which Python allows in text, become U+FFFD.
        text.push(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
        rest = rest.get(1 + digits..).unwrap_or_default();
    }
    Ok(text)
}

/// Hexadecimal digits (and nothing else) as a number.
fn parse_hex(hex: &[u8]) -> Option<u32> {
    if hex.is_empty() || hex.len() > 8 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

/// An integer read from a pickle.
#[derive(Debug, PartialEq, Eq)]
enum Integer {
    Small(i64),
    /// Beyond `i64`: its decimal digits, with a `-` if negative.
    Big(String),
}

/// A decimal integer as INT and LONG write it (optional sign, digits, surrounding spaces).
fn parse_decimal(text: &[u8]) -> Option<Integer> {
    let text = text.trim_ascii();
    let (negative, digits) = match text {
        [b'-', digits @ ..] => (true, digits),
        [b'+', digits @ ..] => (false, digits),
        digits => (false, digits),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let first_significant = digits.iter().position(|&d| d != b'0');
    let significant = first_significant.map_or(&b"0"[..], |start| &digits[start..]);
    let mut normalized = String::with_capacity(significant.len() + 1);
    if negative && first_significant.is_some() {
        normalized.push('-');
    }
    normalized.extend(significant.iter().map(|&d| char::from(d)));
    Some(match normalized.parse::<i64>() {
        Ok(value) => Integer::Small(value),
        Err(_) => Integer::Big(normalized),
    })
}

/// A little-endian two's complement integer (LONG1, LONG4).
fn twos_complement_int(bytes: &[u8]) -> Integer {
    let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
    if bytes.len() <= 8 {
        let mut word = [if negative { 0xff } else { 0 }; 8];
        word[..bytes.len()].copy_from_slice(bytes);
        return Integer::Small(i64::from_le_bytes(word));
    }
    // The magnitude, in 32-bit limbs, least significant first.
    let mut magnitude = bytes.to_vec();
    if negative {
        let mut carry = true;
        for byte in &mut magnitude {
            let (sum, overflow) = (!*byte).overflowing_add(u8::from(carry));
            *byte = sum;
            carry = overflow;
        }
    }
    let mut limbs: Vec<u32> = magnitude
        .chunks(4)
        .map(|chunk| {
            let mut word = [0; 4];
            word[..chunk.len()].copy_from_slice(chunk);
            u32::from_le_bytes(word)
        })
        .collect();
    // Base 10^9 digit groups, least significant first, by repeated division.
    const GROUP: u64 = 1_000_000_000;
    let mut groups = Vec::new();
    loop {
        while limbs.last() == Some(&0) {
            limbs.pop();
        }
        if limbs.is_empty() {
            break;
        }
        let mut remainder = 0u64;
        for limb in limbs.iter_mut().rev() {
            let current = (remainder << 32) | u64::from(*limb);
            *limb = (current / GROUP) as u32;
            remainder = current % GROUP;
        }
        groups.push(remainder);
    }
    let mut digits = String::from(if negative { "-" } else { "" });
    match groups.split_last() {
        None => digits.push('0'),
        Some((most, rest)) => {
            digits.push_str(&most.to_string());
            for group in rest.iter().rev() {
                digits.push_str(&format!("{group:09}"));
            }
        }
    }
    match digits.parse::<i64>() {
        Ok(value) => Integer::Small(value),
        Err(_) => Integer::Big(digits),
    }
}

// ---------------------------------------------------------------------------------------------
// From the arena to JSON

/// What a value expands to in JSON.
#[derive(Debug, Clone, Copy, Default)]
struct Extent {
    /// Values, counting containers, scalars and dict keys.
    values: usize,
    /// Bytes of strings and bytes.
    bytes: usize,
    /// Levels of containers (0 for a scalar).
    height: usize,
}

impl Extent {
    const SCALAR: Extent = Extent {
        values: 1,
        bytes: 0,
        height: 0,
    };

    fn add(&mut self, child: Extent) {
        self.values = self.values.saturating_add(child.values);
        self.bytes = self.bytes.saturating_add(child.bytes);
        self.height = self.height.max(child.height);
    }
}

/// How far a node has been measured.
#[derive(Debug, Clone, Copy)]
enum Visit {
    Unseen,
    /// On the current path: meeting it again is a cycle.
    Open,
    Done(Extent),
}

/// A container (or object) being measured.
struct MeasureFrame {
    id: NodeId,
    next_child: usize,
    sum: Extent,
    /// Its level (the root container is 1); an object has its parent's level.
    level: usize,
    container: bool,
}

/// Measures the expansion of the value graph before anything is built: each node once, so a
/// "billion laughs" costs the size of its arena, not of its expansion; a cycle is a depth error.
struct Measure<'a> {
    arena: &'a [Node],
    limits: &'a Limits,
    visits: Vec<Visit>,
    frames: Vec<MeasureFrame>,
}

impl<'a> Measure<'a> {
    fn new(arena: &'a [Node], limits: &'a Limits) -> Self {
        Measure {
            arena,
            limits,
            visits: vec![Visit::Unseen; arena.len()],
            frames: Vec::new(),
        }
    }

    fn run(mut self, root: Item) -> Result<Extent, PickleError> {
        // The extent of the value just measured, for the frame at the top.
        let mut finished = self.enter(root, 0)?;
        while let Some(frame) = self.frames.last_mut() {
            if let Some(extent) = finished.take() {
                frame.sum.add(extent);
                let (sum, deepest) = (frame.sum, frame.level.saturating_add(extent.height));
                self.check(sum, deepest)?;
                continue;
            }
            match child(self.arena, frame.id, frame.next_child) {
                Some(item) => {
                    frame.next_child += 1;
                    let level = frame.level;
                    finished = self.enter(item, level)?;
                }
                None => {
                    let (id, mut extent) = (frame.id, frame.sum);
                    if frame.container {
                        extent.values = extent.values.saturating_add(1);
                        extent.height += 1;
                    }
                    self.frames.pop();
                    if let Some(visit) = self.visits.get_mut(id) {
                        *visit = Visit::Done(extent);
                    }
                    finished = Some(extent);
                }
            }
        }
        let extent = finished.unwrap_or(Extent::SCALAR);
        self.check(extent, extent.height)?;
        Ok(extent)
    }

    fn check(&self, extent: Extent, deepest: usize) -> Result<(), PickleError> {
        if deepest > self.limits.max_depth {
            return Err(PickleError::TooDeep(self.limits.max_depth));
        }
        if extent.values > self.limits.max_nodes {
            return Err(PickleError::TooManyValues(self.limits.max_nodes));
        }
        if extent.bytes > self.limits.max_bytes {
            return Err(PickleError::TooManyBytes(self.limits.max_bytes));
        }
        Ok(())
    }

    /// The extent of `item` if known now; otherwise opens a frame for it and returns `None`.
    fn enter(&mut self, item: Item, parent_level: usize) -> Result<Option<Extent>, PickleError> {
        let Item::Node(id) = item else {
            return Ok(Some(Extent::SCALAR));
        };
        match self.visits.get(id) {
            Some(Visit::Done(extent)) => return Ok(Some(*extent)),
            Some(Visit::Open) => return Err(PickleError::TooDeep(self.limits.max_depth)),
            Some(Visit::Unseen) => {}
            None => return Ok(Some(Extent::SCALAR)),
        }
        let leaf = match self.arena.get(id) {
            Some(Node::Text(text) | Node::BigInt(text)) => Some(Extent {
                bytes: text.len(),
                ..Extent::SCALAR
            }),
            Some(Node::Bytes(bytes)) if std::str::from_utf8(bytes).is_ok() => Some(Extent {
                bytes: bytes.len(),
                ..Extent::SCALAR
            }),
            // Not UTF-8: an array of byte values.
            Some(Node::Bytes(bytes)) => Some(Extent {
                values: bytes.len().saturating_add(1),
                bytes: bytes.len(),
                height: 1,
            }),
            Some(Node::Seq(..) | Node::Dict(_) | Node::Object { .. }) | None => None,
        };
        if let Some(extent) = leaf {
            if let Some(visit) = self.visits.get_mut(id) {
                *visit = Visit::Done(extent);
            }
            return Ok(Some(extent));
        }
        let container = !matches!(self.arena.get(id), Some(Node::Object { .. }));
        let level = if container {
            parent_level + 1
        } else {
            parent_level
        };
        if level > self.limits.max_depth {
            return Err(PickleError::TooDeep(self.limits.max_depth));
        }
        if let Some(visit) = self.visits.get_mut(id) {
            *visit = Visit::Open;
        }
        self.frames.push(MeasureFrame {
            id,
            next_child: 0,
            sum: Extent::default(),
            level,
            container,
        });
        Ok(None)
    }
}

/// The `index`th child of a node: items of a sequence, keys and values of a dict alternating,
/// the value of an object.
fn child(arena: &[Node], id: NodeId, index: usize) -> Option<Item> {
    match arena.get(id)? {
        Node::Seq(_, items) => items.get(index).copied(),
        Node::Dict(pairs) => {
            pairs
                .get(index / 2)
                .map(|&(key, value)| if index.is_multiple_of(2) { key } else { value })
        }
        Node::Object { value, .. } => (index == 0).then_some(*value),
        Node::Text(_) | Node::Bytes(_) | Node::BigInt(_) => None,
    }
}

/// A JSON container being built.
enum Partial {
    Array(Vec<Value>),
    Object(Map<String, Value>, Option<String>),
}

/// Builds the JSON of a measured graph with an explicit stack (at most `max_depth` deep, since
/// it was measured). `measured_bytes` is the text the measure counted; keys that are not strings
/// add their JSON text to it.
fn build_json(
    arena: &[Node],
    root: Item,
    limits: &Limits,
    measured_bytes: usize,
) -> Result<Value, PickleError> {
    let mut frames: Vec<(NodeId, usize, Partial)> = Vec::new();
    let mut text_bytes = measured_bytes;
    // The value just built, for the frame at the top.
    let mut finished = open_json(arena, root, &mut frames);
    while let Some((id, next_child, partial)) = frames.last_mut() {
        if let Some(value) = finished.take() {
            match partial {
                Partial::Array(items) => items.push(value),
                Partial::Object(map, pending_key) => match pending_key.take() {
                    Some(key) => {
                        map.insert(key, value);
                    }
                    None => {
                        let key = match value {
                            Value::String(text) => text,
                            other => {
                                let text = other.to_string();
                                text_bytes = text_bytes.saturating_add(text.len());
                                if text_bytes > limits.max_bytes {
                                    return Err(PickleError::TooManyBytes(limits.max_bytes));
                                }
                                text
                            }
                        };
                        *pending_key = Some(key);
                    }
                },
            }
            continue;
        }
        match child(arena, *id, *next_child) {
            Some(item) => {
                *next_child += 1;
                finished = open_json(arena, item, &mut frames);
            }
            None => {
                finished = frames.pop().map(|(_, _, partial)| match partial {
                    Partial::Array(items) => Value::Array(items),
                    Partial::Object(map, _) => Value::Object(map),
                });
            }
        }
    }
    Ok(finished.unwrap_or(Value::Null))
}

/// The JSON of `item` if it is a leaf; otherwise opens a frame for it and returns `None`.
fn open_json(
    arena: &[Node],
    item: Item,
    frames: &mut Vec<(NodeId, usize, Partial)>,
) -> Option<Value> {
    // An object reads as its value, which is never an object; the bound is only a safeguard.
    let mut item = item;
    for _ in 0..2 {
        match item {
            Item::Node(id) => match arena.get(id) {
                Some(Node::Object { value, .. }) => item = *value,
                _ => break,
            },
            _ => break,
        }
    }
    let id = match item {
        Item::None | Item::Global(_) => return Some(Value::Null),
        Item::Bool(value) => return Some(Value::Bool(value)),
        Item::Int(value) => return Some(Value::from(value)),
        Item::Float(value) => {
            return Some(Number::from_f64(value).map_or(Value::Null, Value::Number))
        }
        Item::Node(id) => id,
    };
    match arena.get(id) {
        Some(Node::Text(text) | Node::BigInt(text)) => Some(Value::String(text.clone())),
        Some(Node::Bytes(bytes)) => Some(match std::str::from_utf8(bytes) {
            Ok(text) => Value::String(text.to_owned()),
            Err(_) => Value::Array(bytes.iter().map(|&b| Value::from(b)).collect()),
        }),
        Some(Node::Seq(_, items)) => {
            frames.push((id, 0, Partial::Array(Vec::with_capacity(items.len()))));
            None
        }
        Some(Node::Dict(pairs)) => {
            frames.push((
                id,
                0,
                Partial::Object(Map::with_capacity(pairs.len()), None),
            ));
            None
        }
        Some(Node::Object { .. }) | None => Some(Value::Null),
    }
}

// ---------------------------------------------------------------------------------------------
// Writing

/// What [`encode`] has left to write.
enum Write<'a> {
    /// A value, and the level of the container holding it (0 at the root).
    Value(&'a Value, usize),
    /// A dict not held in one [`Value`] (a call's keyword arguments), and its level.
    Map(&'a Map<String, Value>, usize),
    Key(&'a str),
    Opcode(u8),
}

/// Schedules a container's items as Python batches them: MARK, up to 1000 items, APPENDS (or
/// SETITEMS); a batch of one item is written without MARK, then APPEND (SETITEM). `schedule`
/// pushes one item's tasks, last first, as everything on the task stack.
fn schedule_batches<'a, 'items, T>(
    tasks: &mut Vec<Write<'a>>,
    items: &'items [T],
    [add_one, add_many]: [u8; 2],
    schedule: impl Fn(&'items T, &mut Vec<Write<'a>>),
) {
    for batch in items.chunks(BATCH_SIZE).rev() {
        let marked = batch.len() > 1;
        tasks.push(Write::Opcode(if marked { add_many } else { add_one }));
        for item in batch.iter().rev() {
            schedule(item, tasks);
        }
        if marked {
            tasks.push(Write::Opcode(op::MARK));
        }
    }
}

fn write_text(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    if let Ok(len) = u8::try_from(bytes.len()) {
        out.push(op::SHORT_BINUNICODE);
        out.push(len);
    } else if let Ok(len) = u32::try_from(bytes.len()) {
        out.push(op::BINUNICODE);
        out.extend(len.to_le_bytes());
    } else {
        out.push(op::BINUNICODE8);
        out.extend((bytes.len() as u64).to_le_bytes());
    }
    out.extend_from_slice(bytes);
}

fn write_number(out: &mut Vec<u8>, number: &Number) {
    if let Some(value) = number.as_i64() {
        write_int(out, value.into());
    } else if let Some(value) = number.as_u64() {
        write_int(out, value.into());
    } else if let Some(value) = number.as_f64() {
        out.push(op::BINFLOAT);
        out.extend(value.to_be_bytes());
    } else {
        write_text(out, &number.to_string());
    }
}

/// An integer with the opcode Python's pickler chooses.
fn write_int(out: &mut Vec<u8>, value: i128) {
    if let Ok(small) = u8::try_from(value) {
        out.extend([op::BININT1, small]);
    } else if let Ok(medium) = u16::try_from(value) {
        out.push(op::BININT2);
        out.extend(medium.to_le_bytes());
    } else if let Ok(word) = i32::try_from(value) {
        out.push(op::BININT);
        out.extend(word.to_le_bytes());
    } else {
        // The shortest little-endian two's complement, as Python's `encode_long`.
        let mut bytes = value.to_le_bytes().to_vec();
        while let [.., before, last] = bytes[..] {
            let redundant =
                (last == 0x00 && before & 0x80 == 0) || (last == 0xff && before & 0x80 != 0);
            if !redundant {
                break;
            }
            bytes.pop();
        }
        out.push(op::LONG1);
        out.push(bytes.len() as u8);
        out.extend(bytes);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::time::{Duration, Instant};

    use base64::Engine;
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn unzlib(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::ZlibDecoder::new(bytes)
            .read_to_end(&mut out)
            .expect("zlib");
        out
    }

    fn read(bytes: &[u8]) -> Result<Value, PickleError> {
        decode(bytes, &Limits::default())
    }

    /// A pickle: protocol 4, the given opcodes and arguments, STOP.
    fn pickle(body: &[u8]) -> Vec<u8> {
        let mut bytes = vec![op::PROTO, 4];
        bytes.extend_from_slice(body);
        bytes.push(op::STOP);
        bytes
    }

    /// Values (every container, scalar and dict key) and depth of a JSON value, as the limits
    /// count them.
    fn shape(value: &Value) -> (usize, usize) {
        let (mut values, mut deepest) = (0, 0);
        let mut pending = vec![(value, 0)];
        while let Some((value, level)) = pending.pop() {
            values += 1;
            match value {
                Value::Array(items) => {
                    deepest = deepest.max(level + 1);
                    pending.extend(items.iter().map(|item| (item, level + 1)));
                }
                Value::Object(map) => {
                    deepest = deepest.max(level + 1);
                    values += map.len();
                    pending.extend(map.values().map(|item| (item, level + 1)));
                }
                _ => {}
            }
        }
        (values, deepest)
    }

    /// A nested plain structure pickled by CPython 3.11 with protocols 0 to 5: unicode, big and
    /// negative ints, floats, bytes (UTF-8 or not, empty), a set, a frozenset, tuples, a list
    /// referenced twice (`a` and `b`), int and tuple keys, a bytearray.
    const PLAIN_BY_PROTOCOL: [&str; 6] = [
        "286470300a56746578740a70310a5668e96c6c6f205c7532363033205c5530303031643131650a70320a73566269670a70330a4c313230383932353831393631343632393137343730363137364c0a73566e65675f6269670a70340a4c2d313138303539313632303731373431313330333432394c0a73567536340a70350a4c31383434363734343037333730393535313631354c0a7356696e74730a70360a286c70370a49370a61493330300a614937303030300a61492d34320a614c2d393232333337323033363835343737353830384c0a617356666c6f61740a70380a462d312e3235652d30370a735662797465730a70390a635f636f646563730a656e636f64650a7031300a28567261775c75303030300a7031310a566c6174696e310a7031320a747031330a527031340a73566261645f757466380a7031350a6731300a2856fffe0a7031360a6731320a747031370a527031380a7356656d7074790a7031390a635f5f6275696c74696e5f5f0a62797465730a7032300a2874527032310a73567365740a7032320a635f5f6275696c74696e5f5f0a7365740a7032330a28286c7032340a49330a61747032350a527032360a735666726f7a656e0a7032370a635f5f6275696c74696e5f5f0a66726f7a656e7365740a7032380a28286c7032390a56610a7033300a61747033310a527033320a73567475706c650a7033330a2849310a2849320a49330a747033340a2874747033350a736733300a286c7033360a49310a615674776f0a7033370a6146332e350a617356620a7033380a6733360a73566e6f6e650a7033390a4e7356740a7034300a4930310a7356660a7034310a4930300a7349310a56696e74206b65790a7034320a732849310a49320a747034330a567475706c65206b65790a7034340a735662610a7034350a635f5f6275696c74696e5f5f0a6279746561727261790a7034360a286731300a285678790a7034370a6731320a747034380a527034390a747035300a527035310a732e",
        "7d7100285804000000746578747101580f00000068c3a96c6c6f20e2988320f09d849e7102580300000062696771034c313230383932353831393631343632393137343730363137364c0a58070000006e65675f62696771044c2d313138303539313632303731373431313330333432394c0a580300000075363471054c31383434363734343037333730393535313631354c0a5804000000696e747371065d7107284b074d2c014a701101004ad6ffffff4c2d393232333337323033363835343737353830384c0a655805000000666c6f6174710847be80c6f7a0b5ed8d580500000062797465737109635f636f646563730a656e636f64650a710a28580400000072617700710b58060000006c6174696e31710c74710d52710e58080000006261645f75746638710f680a285804000000c3bfc3be7110680c7471115271125805000000656d7074797113635f5f6275696c74696e5f5f0a62797465730a71142952711558030000007365747116635f5f6275696c74696e5f5f0a7365740a7117285d71184b036174711952711a580600000066726f7a656e711b635f5f6275696c74696e5f5f0a66726f7a656e7365740a711c285d711d580100000061711e6174711f52712058050000007475706c657121284b01284b024b0374712229747123681e5d7124284b01580300000074776f712547400c000000000000655801000000627126682458040000006e6f6e6571274e58010000007471284930310a58010000006671294930300a4b015807000000696e74206b6579712a284b014b0274712b58090000007475706c65206b6579712c58020000006261712d635f5f6275696c74696e5f5f0a6279746561727261790a712e28680a2858020000007879712f680c747130527131747132527133752e",
        "80027d7100285804000000746578747101580f00000068c3a96c6c6f20e2988320f09d849e7102580300000062696771038a0b000000000000000000000158070000006e65675f62696771048a09fbffffffffffffffbf580300000075363471058a09ffffffffffffffff005804000000696e747371065d7107284b074d2c014a701101004ad6ffffff8a080000000000000080655805000000666c6f6174710847be80c6f7a0b5ed8d580500000062797465737109635f636f646563730a656e636f64650a710a580400000072617700710b58060000006c6174696e31710c86710d52710e58080000006261645f75746638710f680a5804000000c3bfc3be7110680c8671115271125805000000656d7074797113635f5f6275696c74696e5f5f0a62797465730a71142952711558030000007365747116635f5f6275696c74696e5f5f0a7365740a71175d71184b036185711952711a580600000066726f7a656e711b635f5f6275696c74696e5f5f0a66726f7a656e7365740a711c5d711d580100000061711e6185711f52712058050000007475706c6571214b014b024b0386712229877123681e5d7124284b01580300000074776f712547400c000000000000655801000000627126682458040000006e6f6e6571274e5801000000747128885801000000667129894b015807000000696e74206b6579712a4b014b0286712b58090000007475706c65206b6579712c58020000006261712d635f5f6275696c74696e5f5f0a6279746561727261790a712e680a58020000007879712f680c867130527131857132527133752e",
        "80037d7100285804000000746578747101580f00000068c3a96c6c6f20e2988320f09d849e7102580300000062696771038a0b000000000000000000000158070000006e65675f62696771048a09fbffffffffffffffbf580300000075363471058a09ffffffffffffffff005804000000696e747371065d7107284b074d2c014a701101004ad6ffffff8a080000000000000080655805000000666c6f6174710847be80c6f7a0b5ed8d580500000062797465737109430472617700710a58080000006261645f75746638710b4302fffe710c5805000000656d707479710d4300710e5803000000736574710f636275696c74696e730a7365740a71105d71114b0361857112527113580600000066726f7a656e7114636275696c74696e730a66726f7a656e7365740a71155d711658010000006171176185711852711958050000007475706c65711a4b014b024b0386711b2987711c68175d711d284b01580300000074776f711e47400c00000000000065580100000062711f681d58040000006e6f6e6571204e5801000000747121885801000000667122894b015807000000696e74206b657971234b014b0286712458090000007475706c65206b65797125580200000062617126636275696c74696e730a6279746561727261790a712743027879712885712952712a752e",
        "80049559010000000000007d94288c0474657874948c0f68c3a96c6c6f20e2988320f09d849e948c03626967948a0b00000000000000000000018c076e65675f626967948a09fbffffffffffffffbf8c03753634948a09ffffffffffffffff008c04696e7473945d94284b074d2c014a701101004ad6ffffff8a080000000000000080658c05666c6f61749447be80c6f7a0b5ed8d8c05627974657394430472617700948c086261645f75746638944302fffe948c05656d707479944300948c03736574948f94284b03908c0666726f7a656e94288c01619491948c057475706c65944b014b024b03869429879468125d94284b018c0374776f9447400c000000000000658c01629468178c046e6f6e65944e8c017494888c016694894b018c07696e74206b6579944b014b0286948c097475706c65206b6579948c026261948c086275696c74696e73948c09627974656172726179949394430278799485945294752e",
        "80059543010000000000007d94288c0474657874948c0f68c3a96c6c6f20e2988320f09d849e948c03626967948a0b00000000000000000000018c076e65675f626967948a09fbffffffffffffffbf8c03753634948a09ffffffffffffffff008c04696e7473945d94284b074d2c014a701101004ad6ffffff8a080000000000000080658c05666c6f61749447be80c6f7a0b5ed8d8c05627974657394430472617700948c086261645f75746638944302fffe948c05656d707479944300948c03736574948f94284b03908c0666726f7a656e94288c01619491948c057475706c65944b014b024b03869429879468125d94284b018c0374776f9447400c000000000000658c01629468178c046e6f6e65944e8c017494888c016694894b018c07696e74206b6579944b014b0286948c097475706c65206b6579948c02626194960200000000000000787994752e",
    ];

    fn plain_value() -> Value {
        json!({
            "text": "héllo ☃ 𝄞",
            "big": "1208925819614629174706176",
            "neg_big": "-1180591620717411303429",
            "u64": "18446744073709551615",
            "ints": [7, 300, 70000, -42, i64::MIN],
            "float": -1.25e-7,
            "bytes": "raw\u{0}",
            "bad_utf8": [255, 254],
            "empty": "",
            "set": [3],
            "frozen": ["a"],
            "tuple": [1, [2, 3], []],
            "a": [1, "two", 3.5],
            "b": [1, "two", 3.5],
            "none": null,
            "t": true,
            "f": false,
            "1": "int key",
            "[1,2]": "tuple key",
            "ba": "xy"
        })
    }

    /// `l = [1]; l.append(l)`, pickled by CPython with protocols 0 to 5.
    const SELF_REFERENCING_BY_PROTOCOL: [&str; 6] = [
        "286c70300a49310a6167300a612e",
        "5d7100284b016800652e",
        "80025d7100284b016800652e",
        "80035d7100284b016800652e",
        "80049509000000000000005d94284b016800652e",
        "80059509000000000000005d94284b016800652e",
    ];

    /// Python objects pickled by CPython with protocols 0, 2 and 5: a timedelta, an
    /// OrderedDict, a defaultdict, an Enum member, a Decimal, an instance with a `__dict__`
    /// (class `m.Plain`), a complex.
    const OBJECTS_BY_PROTOCOL: [&str; 3] = [
        "286470300a5674640a70310a636461746574696d650a74696d6564656c74610a70320a2849300a493330300a49300a7470330a5270340a73566f640a70350a63636f6c6c656374696f6e730a4f726465726564446963740a70360a28745270370a567a0a70380a49310a7356610a70390a49320a73735664640a7031300a63636f6c6c656374696f6e730a64656661756c74646963740a7031310a28635f5f6275696c74696e5f5f0a6c6973740a7031320a747031330a527031340a566b0a7031350a286c7031360a49310a61737356656e756d0a7031370a636d0a436f6c6f720a7031380a2849310a747031390a527032300a73566465630a7032310a63646563696d616c0a446563696d616c0a7032320a2856312e350a7032330a747032340a527032350a7356706c61696e0a7032360a63636f70795f7265670a5f7265636f6e7374727563746f720a7032370a28636d0a506c61696e0a7032380a635f5f6275696c74696e5f5f0a6f626a6563740a7032390a4e747033300a527033310a28647033320a67390a49310a7356620a7033330a286c7033340a49310a6149320a617362735663706c780a7033350a635f5f6275696c74696e5f5f0a636f6d706c65780a7033360a2846312e300a46322e300a747033370a527033380a732e",
        "80027d710028580200000074647101636461746574696d650a74696d6564656c74610a71024b004d2c014b0087710352710458020000006f64710563636f6c6c656374696f6e730a4f726465726564446963740a7106295271072858010000007a71084b0158010000006171094b027558020000006464710a63636f6c6c656374696f6e730a64656661756c74646963740a710b635f5f6275696c74696e5f5f0a6c6973740a710c85710d52710e58010000006b710f5d71104b0161735804000000656e756d7111636d0a436f6c6f720a71124b018571135271145803000000646563711563646563696d616c0a446563696d616c0a71165803000000312e3571178571185271195805000000706c61696e711a636d0a506c61696e0a711b2981711c7d711d2868094b01580100000062711e5d711f284b014b02657562580400000063706c787120635f5f6275696c74696e5f5f0a636f6d706c65780a7121473ff0000000000000474000000000000000867122527123752e",
        "80059533010000000000007d94288c027464948c086461746574696d65948c0974696d6564656c74619493944b004d2c014b00879452948c026f64948c0b636f6c6c656374696f6e73948c0b4f72646572656444696374949394295294288c017a944b018c0161944b02758c0264649468088c0b64656661756c74646963749493948c086275696c74696e73948c046c697374949394859452948c016b945d944b0161738c04656e756d948c016d948c05436f6c6f729493944b01859452948c03646563948c07646563696d616c948c07446563696d616c9493948c03312e3594859452948c05706c61696e9468198c05506c61696e9493942981947d9428680d4b018c0162945d94284b014b026575628c0463706c789468118c07636f6d706c6578949394473ff000000000000047400000000000000086945294752e",
    ];

    #[test]
    fn limits_default() {
        let limits = Limits::default();
        assert_eq!(limits.max_depth, 200);
        assert_eq!(limits.max_nodes, 1_000_000);
        assert_eq!(limits.max_bytes, 64 << 20);
    }

    /// docs/rq-protocol.md §3.3: Python's zlib output of the pickle (protocol 5) payload.
    #[test]
    fn reads_python_call_payload() {
        let data = unzlib(&unhex("789c6b609deacf00011a3d4699b905f945258905997a2589c5d9c57ac945a98925a9f10545a96599a9e568dc78909a297eb5537a3821fae23353a6786b15b74ea99d5232450f00699d21bc"));
        assert_eq!(
            read(&data).expect("decode"),
            json!(["importapi.tasks.create_preview.create_preview_task", null, [{"import_id": 42}], {}])
        );
        assert_eq!(
            leading_string(&data).as_deref(),
            Some("importapi.tasks.create_preview.create_preview_task")
        );
    }

    /// The old scheduler pickled a `datetime.timedelta` and a `datetime` among plain arguments.
    #[test]
    fn python_objects_become_their_constructor_arguments() {
        let data = unzlib(&unhex("789c6b609d5aca00011a3d8c6953fc346ba7f4b02416a5174fa99da2d1c35992999b9a929a539238a5872325b12415c49f822c3c798a3783af0ea33743fb94a0293d8c1553bc197b58ca3352f3a664b02269993cc5998bfd152313330b2bd0aa29ad40c5a5c52553f400ed412c04"));
        let call = read(&data).expect("decode");
        assert_eq!(call[0], json!("f"));
        let args = &call[3]["args"];
        assert_eq!(args["timedelta"], json!([0, 300, 0]));
        assert_eq!(args["x"], json!(1));
        assert!(args["when"].is_array());
    }

    /// docs/rq-protocol.md §9: serialized values.
    #[test]
    fn reads_value_vectors() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let meta = b64
            .decode("gAWVLAAAAAAAAAB9lCiMBXN0YXRllIwHc3VjY2Vzc5SMCGxheWVyX2lklIwHcHJlX2FiY5R1Lg==")
            .expect("b64");
        assert_eq!(
            read(&meta).expect("decode"),
            json!({"state": "success", "layer_id": "pre_abc"})
        );
        assert_eq!(read(&unhex("80054b032e")).expect("decode"), json!(3));
        assert_eq!(
            read(&unhex("8005950c000000000000007d948c016b948c017694732e")).expect("decode"),
            json!({"k": "v"})
        );
    }

    #[test]
    fn every_protocol_reads_the_same_plain_data() {
        let expected = plain_value();
        let expected_keys: Vec<&String> = expected.as_object().expect("object").keys().collect();
        for (protocol, hex) in PLAIN_BY_PROTOCOL.iter().enumerate() {
            let value = read(&unhex(hex)).unwrap_or_else(|e| panic!("protocol {protocol}: {e}"));
            assert_eq!(value, expected, "protocol {protocol}");
            // Dict insertion order is kept.
            let keys: Vec<&String> = value.as_object().expect("object").keys().collect();
            assert_eq!(keys, expected_keys, "protocol {protocol}");
        }
    }

    #[test]
    fn self_referencing_list_is_too_deep() {
        for (protocol, hex) in SELF_REFERENCING_BY_PROTOCOL.iter().enumerate() {
            let err = read(&unhex(hex)).expect_err("a cycle");
            assert!(
                matches!(err, PickleError::TooDeep(200)),
                "protocol {protocol}: {err}"
            );
        }
        // A dict containing itself.
        let dict = pickle(&[
            op::EMPTY_DICT,
            op::MEMOIZE,
            op::BININT1,
            1,
            op::BINGET,
            0,
            op::SETITEM,
        ]);
        assert!(matches!(read(&dict), Err(PickleError::TooDeep(200))));
    }

    #[test]
    fn python_objects_read_as_arguments_state_or_items() {
        let expected = json!({
            "td": [0, 300, 0],
            "od": {"z": 1, "a": 2},
            "dd": {"k": [1]},
            "enum": [1],
            "dec": ["1.5"],
            "plain": {"a": 1, "b": [1, 2]},
            "cplx": [1.0, 2.0]
        });
        for hex in OBJECTS_BY_PROTOCOL {
            assert_eq!(read(&unhex(hex)).expect("decode"), expected);
        }
        // `p = Plain(); [p, p]`: BUILD sets the state of the object seen through both references.
        let shared = unhex("80025d710028636d0a506c61696e0a7101298171027d71032858010000006171044b0158010000006271055d7106284b014b026575626802652e");
        let state = json!({"a": 1, "b": [1, 2]});
        assert_eq!(read(&shared).expect("decode"), json!([state, state]));
        // A bare global (a class or function) reads as null; BUILD of an object with itself as
        // state changes nothing.
        let global = pickle(b"cm\nf\n");
        assert_eq!(read(&global).expect("decode"), Value::Null);
        let own_state = pickle(b"cm\nC\n)\x81\x94h\x00b");
        assert_eq!(read(&own_state).expect("decode"), json!([]));
    }

    /// Protocols 0 to 2 write bytes as `_codecs.encode(text, 'latin1')`, `bytes()` and
    /// `bytearray(...)`, and sets as `set([...])`.
    #[test]
    fn calls_python_uses_for_plain_data() {
        // CPython protocol 2 of [bytearray(b'xy'), bytearray(), b'', b'ab', {1}, frozenset()].
        let protocol_2 = unhex("80025d710028635f5f6275696c74696e5f5f0a6279746561727261790a7101635f636f646563730a656e636f64650a710258020000007879710358060000006c6174696e317104867105527106857107527108680129527109635f5f6275696c74696e5f5f0a62797465730a710a2952710b680258020000006162710c680486710d52710e635f5f6275696c74696e5f5f0a7365740a710f5d71104b0161857111527112635f5f6275696c74696e5f5f0a66726f7a656e7365740a71135d7114857115527116652e");
        assert_eq!(
            read(&protocol_2).expect("decode"),
            json!(["xy", "", "", "ab", [1], []])
        );
        // _codecs.encode of text beyond Latin-1 is not bytes: an object, its arguments.
        let beyond = pickle(b"c_codecs\nencode\n\x8c\x03\xe2\x98\x83\x8c\x06latin1\x86R");
        assert_eq!(read(&beyond).expect("decode"), json!(["☃", "latin1"]));
    }

    #[test]
    fn mutation_after_memoization_is_seen_through_every_reference() {
        // L = [] (memo 0), popped; O = [L]; L.append(5), popped.
        let bytes = pickle(b"]q\x000]h\x00ah\x00K\x05a0");
        assert_eq!(read(&bytes).expect("decode"), json!([[5]]));
    }

    #[test]
    fn protocol_0_text_numbers_and_strings() {
        let cases: [(&[u8], Value); 12] = [
            (b"I01\n.", json!(true)),
            (b"I00\n.", json!(false)),
            (b"I-5\n.", json!(-5)),
            (b"I12345678901234567890\n.", json!("12345678901234567890")),
            (b"L-0012L\n.", json!(-12)),
            (b"L-9223372036854775809L\n.", json!("-9223372036854775809")),
            (b"F1.5\n.", json!(1.5)),
            (b"Finf\n.", Value::Null),
            (b"Fnan\n.", Value::Null),
            (b"S'it\\'s \\x41\\n\\101'\n.", json!("it's A\nA")),
            (b"S\"\\xff\"\n.", json!([255])),
            (
                b"Vcaf\xe9 \\u2603 \\U0001d11e \\\\u0041 \\\\\\u0041\n.",
                json!("café ☃ 𝄞 \\\\u0041 \\\\A"),
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                read(bytes).expect("decode"),
                expected,
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        assert!(matches!(
            read(b"Sunquoted\n."),
            Err(PickleError::Malformed { .. })
        ));
        assert!(matches!(
            read(b"V\\u12\n."),
            Err(PickleError::Malformed { .. })
        ));
        assert!(matches!(read(b"Ix\n."), Err(PickleError::Malformed { .. })));
    }

    #[test]
    fn text_that_rust_cannot_hold_becomes_replacement_characters() {
        // "a\ud800b": Python writes the lone surrogate with surrogatepass.
        let value = read(&unhex("80049509000000000000008c0561eda08062942e")).expect("decode");
        assert!(value
            .as_str()
            .is_some_and(|text| text.starts_with('a') && text.contains('\u{fffd}')));
        assert_eq!(
            read(&unhex("56615c7564383030620a70300a2e")).expect("decode"),
            json!("a\u{fffd}b")
        );
    }

    #[test]
    fn binary_integers() {
        let long1 = |bytes: &[u8]| {
            let mut body = vec![op::LONG1, bytes.len() as u8];
            body.extend_from_slice(bytes);
            read(&pickle(&body)).expect("decode")
        };
        assert_eq!(long1(&[]), json!(0));
        assert_eq!(long1(&[0xff]), json!(-1));
        assert_eq!(
            long1(&[0, 0, 0, 0, 0, 0, 0, 0x80, 0]),
            json!("9223372036854775808")
        );
        assert_eq!(
            long1(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff]),
            json!("-9223372036854775809")
        );
        assert_eq!(long1(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0]), json!(1));
        assert_eq!(long1(&[0; 12]), json!(0));
        // 2**80 and -(2**70) - 5, as Python writes them.
        assert_eq!(
            long1(&unhex("0000000000000000000001")),
            json!("1208925819614629174706176")
        );
        assert_eq!(
            long1(&unhex("fbffffffffffffffbf")),
            json!("-1180591620717411303429")
        );
        let mut huge = vec![op::LONG4];
        huge.extend(2000u32.to_le_bytes());
        huge.extend([1; 2000]);
        assert!(matches!(
            read(&pickle(&huge)),
            Err(PickleError::IntegerTooLong(4300))
        ));
        let digits = format!("L{}\n.", "9".repeat(4301));
        assert!(matches!(
            read(digits.as_bytes()),
            Err(PickleError::IntegerTooLong(4300))
        ));
        assert_eq!(
            read(format!("L{}\n.", "9".repeat(4300)).as_bytes()).expect("decode"),
            json!("9".repeat(4300))
        );
    }

    #[test]
    fn dict_keys_become_strings_and_the_last_duplicate_wins() {
        // {None: 'a', True: 'b', 1: 'c', 1.5: None, '1': 'd'}
        let bytes = pickle(
            b"}(N\x8c\x01a\x88\x8c\x01bK\x01\x8c\x01cG?\xf8\0\0\0\0\0\0N\x8c\x011\x8c\x01du",
        );
        let value = read(&bytes).expect("decode");
        assert_eq!(
            value,
            json!({"null": "a", "true": "b", "1": "d", "1.5": null})
        );
        let keys: Vec<&String> = value.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["null", "true", "1", "1.5"]);
    }

    #[test]
    fn deep_nesting_is_a_depth_error_without_recursion() {
        const LEVELS: usize = 200_000;
        // [[[...]]] by EMPTY_LIST ... APPEND ...
        let mut lists = vec![op::EMPTY_LIST; LEVELS];
        lists.extend(vec![op::APPEND; LEVELS - 1]);
        // ((((),),),) by TUPLE1.
        let mut tuples = vec![op::EMPTY_TUPLE];
        tuples.extend(vec![op::TUPLE1; LEVELS]);
        // An open MARK per level.
        let marks = vec![op::MARK; LEVELS];
        // The poison payload of the incident: a 4-tuple's MARK, then lists.
        let mut incident = b"\x8c\x03m.f\x94(".to_vec();
        incident.extend(vec![op::EMPTY_LIST; LEVELS]);
        for body in [lists, tuples, marks] {
            let err = read(&pickle(&body)).expect_err("too deep");
            assert!(matches!(err, PickleError::TooDeep(200)), "{err}");
            assert_eq!(err.to_string(), "pickle nests deeper than 200 levels");
        }
        // (What the lists build is just the last one: the payload reads, as in Python.)
        assert_eq!(read(&pickle(&incident)).expect("decode"), json!([]));
        assert_eq!(leading_string(&pickle(&incident)).as_deref(), Some("m.f"));
        // At the limit it reads.
        let mut at_limit = vec![op::EMPTY_LIST; 200];
        at_limit.extend(vec![op::APPEND; 199]);
        assert_eq!(
            shape(&read(&pickle(&at_limit)).expect("decode")),
            (200, 200)
        );
    }

    /// A list memoized, then a list of two references to it, and so on: 2^60 values from 500
    /// bytes.
    fn billion_laughs(levels: u8) -> Vec<u8> {
        // memo[0] = [1, 2]
        let mut body = b"]\x94(K\x01K\x02e".to_vec();
        for level in 1..=levels {
            // memo[level] = [memo[level - 1], memo[level - 1]]
            body.extend([b']', 0x94, b'(', b'h', level - 1, b'h', level - 1, b'e']);
        }
        pickle(&body)
    }

    #[test]
    fn billion_laughs_fail_fast() {
        let started = Instant::now();
        let laughs = billion_laughs(60);
        assert!(laughs.len() < 1024);
        let err = read(&laughs).expect_err("too many values");
        assert!(
            matches!(err, PickleError::TooManyValues(1_000_000)),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "pickle expands to more than 1000000 values"
        );
        // DUP and TUPLE2: ((x, x), (x, x)) ...
        let mut body = vec![op::EMPTY_LIST];
        for _ in 0..60 {
            body.extend([op::DUP, op::TUPLE2]);
        }
        assert!(matches!(
            read(&pickle(&body)),
            Err(PickleError::TooManyValues(_))
        ));
        // A shared kilobyte string, referenced 2^40 times.
        let mut body = vec![op::BINUNICODE];
        body.extend(1000u32.to_le_bytes());
        body.extend([b'x'; 1000]);
        body.push(op::MEMOIZE);
        for _ in 0..40 {
            body.extend([op::DUP, op::TUPLE2]);
        }
        let unlimited_values = Limits {
            max_nodes: usize::MAX,
            ..Limits::default()
        };
        let err = decode(&pickle(&body), &unlimited_values).expect_err("too much text");
        assert!(matches!(err, PickleError::TooManyBytes(_)), "{err}");
        assert_eq!(
            err.to_string(),
            "pickle expands to more than 67108864 bytes of strings"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        // A few levels are fine.
        let value = read(&billion_laughs(3)).expect("decode");
        assert_eq!(
            value,
            json!([
                [[[1, 2], [1, 2]], [[1, 2], [1, 2]]],
                [[[1, 2], [1, 2]], [[1, 2], [1, 2]]]
            ])
        );
    }

    #[test]
    fn declared_lengths_beyond_the_input_are_truncation_errors() {
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for code in [op::BINUNICODE8, op::BINBYTES8, op::BYTEARRAY8] {
            let mut body = vec![code];
            body.extend(u64::MAX.to_le_bytes());
            cases.push(pickle(&body));
            let mut body = vec![code];
            body.extend((1u64 << 40).to_le_bytes());
            cases.push(pickle(&body));
        }
        for code in [op::BINUNICODE, op::BINBYTES] {
            let mut body = vec![code];
            body.extend(u32::MAX.to_le_bytes());
            cases.push(pickle(&body));
        }
        for code in [op::LONG4, op::BINSTRING] {
            let mut body = vec![code];
            body.extend(i32::MAX.to_le_bytes());
            cases.push(pickle(&body));
        }
        cases.push(pickle(&[op::SHORT_BINUNICODE, 200, b'x']));
        cases.push(pickle(&[op::BININT, 1]));
        for bytes in cases {
            let err = read(&bytes).expect_err("truncated");
            assert!(matches!(err, PickleError::Truncated { .. }), "{err}");
        }
        let mut negative = vec![op::LONG4];
        negative.extend((-1i32).to_le_bytes());
        assert!(matches!(
            read(&pickle(&negative)),
            Err(PickleError::Malformed { .. })
        ));
    }

    #[test]
    fn the_machine_is_bounded() {
        let small = Limits {
            max_depth: 50,
            max_nodes: 10_000,
            max_bytes: 1 << 20,
        };
        // APPENDS over a huge MARK span.
        let mut body = vec![op::EMPTY_LIST, op::MARK];
        body.extend([op::BININT1, 7].repeat(30_000));
        body.push(op::APPENDS);
        let many = pickle(&body);
        assert!(matches!(
            decode(&many, &small),
            Err(PickleError::TooManyValues(10_000))
        ));
        assert_eq!(
            read(&many).expect("decode").as_array().map(Vec::len),
            Some(30_000)
        );
        // TUPLE over one.
        let mut body = vec![op::MARK];
        body.extend(vec![op::NONE; 30_000]);
        body.push(op::TUPLE);
        assert!(matches!(
            decode(&pickle(&body), &small),
            Err(PickleError::TooManyValues(10_000))
        ));
        // Values pushed and popped still count.
        let churn = pickle(&[op::NONE, op::POP].repeat(30_000));
        assert!(matches!(
            decode(&churn, &small),
            Err(PickleError::TooManyValues(10_000))
        ));
        // The memo.
        let mut body = vec![op::NONE];
        body.extend(vec![op::MEMOIZE; 30_000]);
        assert!(matches!(
            decode(&pickle(&body), &small),
            Err(PickleError::TooManyValues(10_000))
        ));
        // Text copied by calls.
        let mut body = vec![op::BINUNICODE];
        body.extend(100_000u32.to_le_bytes());
        body.extend([b'x'; 100_000]);
        body.extend(b"\x94c_codecs\nencode\n\x94");
        for _ in 0..20 {
            // _codecs.encode(text), popped
            body.extend(b"h\x01h\x00\x85R0");
        }
        body.push(op::NONE);
        assert!(matches!(
            decode(&pickle(&body), &small),
            Err(PickleError::TooManyBytes(_))
        ));
        // Text and byte values against the result's limits.
        let tight = Limits {
            max_bytes: 50,
            ..Limits::default()
        };
        assert!(matches!(
            decode(
                &pickle(&[&[op::SHORT_BINUNICODE, 60][..], &[b'x'; 60]].concat()),
                &tight
            ),
            Err(PickleError::TooManyBytes(50))
        ));
        let few = Limits {
            max_nodes: 50,
            ..Limits::default()
        };
        let not_utf8 = pickle(&[&[op::SHORT_BINBYTES, 60][..], &[0xff; 60]].concat());
        assert!(matches!(
            decode(&not_utf8, &few),
            Err(PickleError::TooManyValues(50))
        ));
    }

    #[test]
    fn malformed_pickles_are_clear_errors() {
        let underflows: [&[u8]; 4] = [
            &[op::APPEND],
            &[op::NONE, op::MARK, op::NONE, op::TUPLE2],
            &[op::NONE, op::MARK, op::POP, op::POP],
            &[op::APPENDS],
        ];
        for body in underflows {
            let err = read(&pickle(body)).expect_err("underflow");
            assert!(matches!(err, PickleError::StackUnderflow { .. }), "{err}");
        }
        let err = read(&pickle(&[op::BINGET, 7])).expect_err("memo");
        assert!(
            matches!(err, PickleError::BadMemoRef { id: 7, .. }),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "pickle refers to memo entry 7 that was never stored (BINGET at byte 2)"
        );
        let err = read(&pickle(&[op::EMPTY_DICT, op::NONE, op::APPEND])).expect_err("type");
        assert_eq!(
            err.to_string(),
            "malformed pickle: APPEND at byte 4 expects a list"
        );
        let err =
            read(&pickle(&[op::EMPTY_DICT, op::MARK, op::NONE, op::SETITEMS])).expect_err("odd");
        assert!(matches!(err, PickleError::Malformed { .. }), "{err}");
        assert!(matches!(
            read(&unhex("80054b03")),
            Err(PickleError::MissingStop)
        ));
        assert!(matches!(
            read(&unhex("80054b032e00")),
            Err(PickleError::TrailingBytes(1))
        ));
        assert!(matches!(
            read(&unhex("80064b032e")),
            Err(PickleError::UnsupportedProtocol(6))
        ));
        assert!(matches!(read(b""), Err(PickleError::MissingStop)));
        for (body, name) in [
            (&b"Pid\n"[..], "PERSID"),
            (&[op::NONE, b'Q'][..], "BINPERSID"),
            (&[op::EXT1, 1][..], "EXT1"),
            (&[op::EXT2, 1, 0][..], "EXT2"),
            (&[op::EXT4, 1, 0, 0, 0][..], "EXT4"),
            (&[op::NEXT_BUFFER][..], "NEXT_BUFFER"),
            (&[op::READONLY_BUFFER][..], "READONLY_BUFFER"),
            (&[0xff][..], "an unknown opcode"),
        ] {
            let err = read(&pickle(body)).expect_err("unsupported");
            assert!(err.to_string().contains(name), "{err}");
        }
        // Every strict prefix of a valid pickle fails cleanly.
        let whole = unhex(PLAIN_BY_PROTOCOL[5]);
        for end in 0..whole.len() {
            assert!(read(&whole[..end]).is_err(), "prefix of {end} bytes");
        }
    }

    #[test]
    fn leading_string_reads_only_the_name() {
        // CPython protocol 2 of ("m.f", None, (1,), {}).
        let protocol_2 = unhex("80022858030000006d2e6671004e4b018571017d71027471032e");
        assert_eq!(leading_string(&protocol_2).as_deref(), Some("m.f"));
        assert_eq!(leading_string(b"(Vm.f\np0\nNt.").as_deref(), Some("m.f"));
        assert_eq!(leading_string(b"(S'm.f'\np0\nNt.").as_deref(), Some("m.f"));
        let ours = encode(&json!(["m.f", null, [], {}])).expect("encode");
        assert_eq!(leading_string(&ours).as_deref(), Some("m.f"));
        // Truncated, or something else first.
        assert_eq!(leading_string(&ours[..5]), None);
        assert_eq!(leading_string(&unhex("80054b032e")), None);
        assert_eq!(
            leading_string(&pickle(&[
                op::EMPTY_LIST,
                op::EMPTY_LIST,
                op::SHORT_BINUNICODE,
                1,
                b'x'
            ])),
            None
        );
        assert_eq!(leading_string(b""), None);
    }

    #[test]
    fn encodes_what_python_reads() {
        // Checked with CPython 3.11: pickle.loads gives {'state': 'success', 'layer_id': 'pre_abc'}.
        assert_eq!(
            encode(&json!({"state": "success", "layer_id": "pre_abc"})).expect("encode"),
            unhex("80047d288c0573746174658c07737563636573738c086c617965725f69648c077072655f616263752e")
        );
        let int = |value: Value| encode(&value).expect("encode");
        assert_eq!(int(json!(3)), unhex("80044b032e"));
        assert_eq!(int(json!(300)), unhex("80044d2c012e"));
        assert_eq!(int(json!(-1)), unhex("80044affffffff2e"));
        assert_eq!(int(json!(1u64 << 32)), unhex("80048a0500000000012e"));
        assert_eq!(int(json!(i64::MIN)), unhex("80048a0800000000000000802e"));
        assert_eq!(int(json!(u64::MAX)), unhex("80048a09ffffffffffffffff002e"));
        assert_eq!(int(json!(1.5)), unhex("8004473ff80000000000002e"));
        assert_eq!(int(json!([null, true, false])), unhex("80045d284e8889652e"));
    }

    #[test]
    fn encodes_in_batches_of_1000() {
        // As Python: batches of 1000 items, a batch of one with APPEND.
        let mut expected = vec![op::PROTO, 4, op::EMPTY_LIST];
        for _ in 0..2 {
            expected.push(op::MARK);
            expected.extend([op::BININT1, 0].repeat(1000));
            expected.push(op::APPENDS);
        }
        expected.extend([op::BININT1, 0, op::APPEND, op::STOP]);
        let list = json!(vec![0; 2001]);
        let bytes = encode(&list).expect("encode");
        assert!(bytes == expected, "batches of 1000");
        assert_eq!(read(&bytes).expect("decode"), list);
        let map: Map<String, Value> = (0..5000).map(|i| (format!("k{i}"), json!(i))).collect();
        let dict = Value::Object(map);
        assert_eq!(read(&encode(&dict).expect("encode")).expect("decode"), dict);
    }

    #[test]
    fn encode_round_trips() {
        let value = json!({
            "text": "héllo ☃ 𝄞 \u{0}",
            "long": "x".repeat(300),
            "ints": [0, 255, 256, 65535, 65536, -1, -129, i32::MIN, i32::MAX, i64::MIN, i64::MAX],
            "floats": [1.5, -0.0, 1e300, -2.5e-300],
            "nested": {"a": [[], {}, [[null]]], "b": {"c": true, "d": false}},
            "empty": "",
            "list": (0..1500).collect::<Vec<_>>()
        });
        let bytes = encode(&value).expect("encode");
        assert_eq!(read(&bytes).expect("decode"), value);
        assert_eq!(
            plain_value(),
            read(&encode(&plain_value()).expect("encode")).expect("decode")
        );
        // Integers beyond i64 read as decimal strings, so a u64 above i64::MAX comes back as one.
        let beyond = encode(&json!(u64::MAX)).expect("encode");
        assert_eq!(
            read(&beyond).expect("decode"),
            json!("18446744073709551615")
        );
    }

    #[test]
    fn encode_refuses_what_decode_would_not_read() {
        let mut deep = json!([]);
        for _ in 0..199 {
            deep = json!([deep]);
        }
        assert_eq!(
            read(&encode(&deep).expect("200 levels")).expect("decode"),
            deep
        );
        let deeper = json!([deep]);
        assert!(matches!(encode(&deeper), Err(PickleError::TooDeep(200))));
        // Dropping 200 levels of serde_json values is fine on the test thread.
    }

    // --- properties

    /// Valid pickles to mutate: Python's and ours.
    fn seeds() -> Vec<Vec<u8>> {
        let mut seeds: Vec<Vec<u8>> = PLAIN_BY_PROTOCOL
            .iter()
            .chain(&SELF_REFERENCING_BY_PROTOCOL)
            .chain(&OBJECTS_BY_PROTOCOL)
            .map(|hex| unhex(hex))
            .collect();
        seeds.push(billion_laughs(20));
        seeds.push(unhex("8005950c000000000000007d948c016b948c017694732e"));
        seeds.push(unhex(
            "80022858030000006d2e6671004e4b018571017d71027471032e",
        ));
        for value in [
            plain_value(),
            json!(["m.f", null, [1, {"k": [1.5, "v"]}], {"x": -300}]),
        ] {
            seeds.push(encode(&value).expect("encode"));
        }
        seeds
    }

    /// Edits to a valid pickle: flip a bit, insert, delete or set a byte.
    fn mutate(mut bytes: Vec<u8>, edits: &[(u8, usize, u8)]) -> Vec<u8> {
        for &(kind, position, byte) in edits {
            let len = bytes.len();
            match kind % 4 {
                0 if len > 0 => bytes[position % len] ^= 1 << (byte % 8),
                1 => bytes.insert(position % (len + 1), byte),
                2 if len > 0 => {
                    bytes.remove(position % len);
                }
                3 if len > 0 => bytes[position % len] = byte,
                _ => {}
            }
        }
        bytes
    }

    const PROPERTY_LIMITS: Limits = Limits {
        max_depth: 50,
        max_nodes: 10_000,
        max_bytes: 1 << 20,
    };

    /// Decodes on a thread with a 256 KiB stack (so any recursion on the input would overflow
    /// it): no panic, and a result within the limits that encodes and reads back the same.
    fn decodes_within_limits(bytes: Vec<u8>) -> Result<(), TestCaseError> {
        let outcome = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || -> Result<(), String> {
                let _ = leading_string(&bytes);
                let Ok(value) = decode(&bytes, &PROPERTY_LIMITS) else {
                    return Ok(());
                };
                let (values, depth) = shape(&value);
                if values > PROPERTY_LIMITS.max_nodes || depth > PROPERTY_LIMITS.max_depth {
                    return Err(format!("{values} values, depth {depth}"));
                }
                let again = encode(&value).map_err(|e| e.to_string())?;
                match decode(&again, &Limits::default()) {
                    Ok(read_back) if read_back == value => Ok(()),
                    other => Err(format!("round trip: {other:?}")),
                }
            })
            .expect("spawn")
            .join();
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(TestCaseError::fail(why)),
            Err(_) => Err(TestCaseError::fail("panicked")),
        }
    }

    /// Bytes biased towards opcodes, so that random input gets past the first byte.
    fn pickle_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            any::<u8>(),
            prop::sample::select(b"().0123FIJKLMNRSTUVXabcdeghjlopqrstuGBC]})\x80\x81\x85\x86\x87\x88\x89\x8a\x8b\x8c\x8d\x8e\x8f\x90\x91\x92\x93\x94\x95\x96".to_vec()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 2000,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn random_bytes_never_panic(
            protocol_header in any::<bool>(),
            body in prop::collection::vec(pickle_byte(), 0..200),
        ) {
            let mut bytes = if protocol_header { vec![op::PROTO, 4] } else { Vec::new() };
            bytes.extend(body);
            decodes_within_limits(bytes)?;
        }

        #[test]
        fn mutated_pickles_never_panic(
            seed in prop::sample::select(seeds()),
            edits in prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..6),
        ) {
            decodes_within_limits(mutate(seed, &edits))?;
        }
    }
}
