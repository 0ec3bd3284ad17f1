//! The document an XGBoost model file holds, and its two encodings: UBJSON (`model.ubj`, the
//! default since XGBoost 2.1, and MLflow's `model.xgb`) and JSON (`model.json`). Both decode
//! into one [`Value`] tree, read the way XGBoost reads them: numbers are `i64` or `f32` (its
//! JSON number is a float, so `0.1` is the nearest f32), `NaN` and `Infinity` are numbers, and
//! numeric arrays stay flat vectors, so a model of a million nodes is not a million boxed
//! values. Hand-written rather than serde_json because XGBoost writes `NaN`, and because a
//! count or a length in a file is checked against the bytes left before anything is allocated:
//! a forged count fails instead of reserving memory.

use anyhow::{anyhow, bail, Result};

/// Deeper nesting than any model has (XGBoost's is 6 levels); it bounds the recursion.
const MAX_DEPTH: usize = 64;

/// A decoded document.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f32),
    Str(String),
    Array(Vec<Value>),
    /// Keys in file order; XGBoost keeps the first of duplicate keys, and so does [`Value::get`].
    Object(Vec<(String, Value)>),
    /// An array of integers: a UBJSON typed array (`[$i`, `$U`, `$I`, `$l`, `$L`) or a JSON array
    /// whose elements are all integers. An empty array of any kind is an empty `Ints`.
    Ints(Vec<i64>),
    /// An array of numbers with at least one float (`[$d`, `[$D`).
    Floats(Vec<f32>),
}

impl Value {
    /// The value of `key` in an object; `None` for a missing key or a non-object.
    pub(super) fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// What kind of value this is, for error messages.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Array(_) | Value::Ints(_) | Value::Floats(_) => "an array",
            Value::Object(_) => "an object",
        }
    }
}

/// Collects an array's elements, flat while they are all numbers.
enum ArrayBuilder {
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    Mixed(Vec<Value>),
}

impl ArrayBuilder {
    fn with_capacity(n: usize) -> Self {
        ArrayBuilder::Ints(Vec::with_capacity(n))
    }

    fn push(&mut self, v: Value) {
        match (&mut *self, v) {
            (ArrayBuilder::Ints(xs), Value::Int(i)) => xs.push(i),
            (ArrayBuilder::Floats(xs), Value::Float(f)) => xs.push(f),
            (ArrayBuilder::Floats(xs), Value::Int(i)) => xs.push(i as f32),
            (ArrayBuilder::Ints(xs), Value::Float(f)) => {
                let mut fs: Vec<f32> = xs.iter().map(|&i| i as f32).collect();
                fs.push(f);
                *self = ArrayBuilder::Floats(fs);
            }
            (ArrayBuilder::Mixed(xs), v) => xs.push(v),
            (ArrayBuilder::Ints(xs), v) => {
                let mut vs: Vec<Value> = xs.iter().map(|&i| Value::Int(i)).collect();
                vs.push(v);
                *self = ArrayBuilder::Mixed(vs);
            }
            (ArrayBuilder::Floats(xs), v) => {
                let mut vs: Vec<Value> = xs.iter().map(|&f| Value::Float(f)).collect();
                vs.push(v);
                *self = ArrayBuilder::Mixed(vs);
            }
        }
    }

    fn finish(self) -> Value {
        match self {
            ArrayBuilder::Ints(xs) => Value::Ints(xs),
            ArrayBuilder::Floats(xs) => Value::Floats(xs),
            ArrayBuilder::Mixed(xs) => Value::Array(xs),
        }
    }
}

/// A cursor over the input with the checks every read needs.
struct Input<'a> {
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
}

impl<'a> Input<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Input {
            bytes,
            pos: 0,
            depth: 0,
        }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn truncated(&self) -> anyhow::Error {
        anyhow!("truncated: the file ends at byte {}", self.bytes.len())
    }

    fn peek(&self) -> Result<u8> {
        self.bytes
            .get(self.pos)
            .copied()
            .ok_or_else(|| self.truncated())
    }

    fn next(&mut self) -> Result<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.truncated());
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            bail!(
                "nested more than {MAX_DEPTH} levels deep at byte {}",
                self.pos
            );
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }
}

/// Decodes a UBJSON document (draft 12, as XGBoost writes it; big-endian numbers).
pub(super) fn decode_ubjson(bytes: &[u8]) -> Result<Value> {
    let mut input = Input::new(bytes);
    let v = ubj_value(&mut input)?;
    skip_noops(&mut input);
    if input.remaining() > 0 {
        bail!("unexpected bytes after the document at byte {}", input.pos);
    }
    Ok(v)
}

fn skip_noops(input: &mut Input) {
    while input.peek().ok() == Some(b'N') {
        input.pos += 1;
    }
}

fn ubj_value(input: &mut Input) -> Result<Value> {
    skip_noops(input);
    let at = input.pos;
    let marker = input.next()?;
    match marker {
        b'{' => ubj_object(input),
        b'[' => ubj_array(input),
        b'S' => Ok(Value::Str(ubj_string(input)?)),
        b'H' => {
            let s = ubj_string(input)?;
            number(&s).ok_or_else(|| anyhow!("invalid high-precision number {s:?} at byte {at}"))
        }
        b'Z' => Ok(Value::Null),
        b'T' => Ok(Value::Bool(true)),
        b'F' => Ok(Value::Bool(false)),
        _ => ubj_scalar(input, marker)?
            .ok_or_else(|| anyhow!("unknown UBJSON marker {:?} at byte {at}", marker as char)),
    }
}

/// The payload of a number or a char after its marker; `None` for other markers.
fn ubj_scalar(input: &mut Input, marker: u8) -> Result<Option<Value>> {
    Ok(Some(match marker {
        b'i' => Value::Int(i8::from_be_bytes(input.array()?) as i64),
        b'U' | b'C' => Value::Int(u8::from_be_bytes(input.array()?) as i64),
        b'I' => Value::Int(i16::from_be_bytes(input.array()?) as i64),
        b'l' => Value::Int(i32::from_be_bytes(input.array()?) as i64),
        b'L' => Value::Int(i64::from_be_bytes(input.array()?)),
        b'd' => Value::Float(f32::from_be_bytes(input.array()?)),
        // XGBoost reads doubles into its f32 number.
        b'D' => Value::Float(f64::from_be_bytes(input.array()?) as f32),
        _ => return Ok(None),
    }))
}

/// A length or a count: an integer marker and a non-negative value.
fn ubj_length(input: &mut Input) -> Result<usize> {
    let at = input.pos;
    let marker = input.next()?;
    match ubj_scalar(input, marker)? {
        Some(Value::Int(n)) if marker != b'C' => {
            usize::try_from(n).map_err(|_| anyhow!("negative length {n} at byte {at}"))
        }
        _ => bail!("expected a length at byte {at}, found {:?}", marker as char),
    }
}

/// A string's length and bytes (after its `S` marker, or an object key).
fn ubj_string(input: &mut Input) -> Result<String> {
    let at = input.pos;
    let n = ubj_length(input)?;
    if n > input.remaining() {
        bail!("string of {n} bytes at byte {at} is longer than the file");
    }
    let bytes = input.take(n)?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| anyhow!("invalid UTF-8 in the string at byte {at}"))
}

/// The `$type#count` or `#count` header of an optimized container.
struct Header {
    typed: Option<u8>,
    count: Option<usize>,
}

fn ubj_header(input: &mut Input) -> Result<Header> {
    let mut h = Header {
        typed: None,
        count: None,
    };
    if input.peek()? == b'$' {
        input.pos += 1;
        let at = input.pos;
        let t = input.next()?;
        if element_size(t).is_none() {
            bail!(
                "typed container of {:?} at byte {at} is not supported",
                t as char
            );
        }
        h.typed = Some(t);
        if input.peek()? != b'#' {
            bail!("typed container without a count at byte {}", input.pos);
        }
    }
    if input.peek()? == b'#' {
        input.pos += 1;
        h.count = Some(ubj_length(input)?);
    }
    Ok(h)
}

/// The payload size of the element types a typed container may hold: numbers only (a typed
/// array of nulls would take no bytes, so its count could not be checked).
fn element_size(t: u8) -> Option<usize> {
    match t {
        b'i' | b'U' | b'C' => Some(1),
        b'I' => Some(2),
        b'l' | b'd' => Some(4),
        b'L' | b'D' => Some(8),
        _ => None,
    }
}

/// Checks a container's count against the input left: each element takes at least
/// `min_size` bytes.
fn check_count(input: &Input, n: usize, min_size: usize, at: usize) -> Result<()> {
    match n.checked_mul(min_size) {
        Some(bytes) if bytes <= input.remaining() => Ok(()),
        _ => bail!("container at byte {at} claims {n} elements, more than the file holds"),
    }
}

fn ubj_array(input: &mut Input) -> Result<Value> {
    let at = input.pos - 1;
    input.enter()?;
    let h = ubj_header(input)?;
    let v = match (h.typed, h.count) {
        (Some(t), Some(n)) => {
            let size = element_size(t).unwrap_or(1);
            check_count(input, n, size, at)?;
            let data = input.take(n * size)?;
            match t {
                b'd' => Value::Floats(
                    data.chunks_exact(4)
                        .map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                ),
                b'D' => Value::Floats(
                    data.chunks_exact(8)
                        .map(|c| {
                            f64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
                                as f32
                        })
                        .collect(),
                ),
                _ => {
                    let mut sub = Input::new(data);
                    let mut xs = Vec::with_capacity(n);
                    for _ in 0..n {
                        match ubj_scalar(&mut sub, t)? {
                            Some(Value::Int(i)) => xs.push(i),
                            _ => bail!("typed array of {:?} at byte {at}", t as char),
                        }
                    }
                    Value::Ints(xs)
                }
            }
        }
        (None, Some(n)) => {
            check_count(input, n, 1, at)?;
            let mut b = ArrayBuilder::with_capacity(n.min(4096));
            for _ in 0..n {
                b.push(ubj_value(input)?);
            }
            b.finish()
        }
        (_, None) => {
            let mut b = ArrayBuilder::with_capacity(0);
            loop {
                skip_noops(input);
                if input.peek()? == b']' {
                    input.pos += 1;
                    break;
                }
                b.push(ubj_value(input)?);
            }
            b.finish()
        }
    };
    input.leave();
    Ok(v)
}

fn ubj_object(input: &mut Input) -> Result<Value> {
    let at = input.pos - 1;
    input.enter()?;
    let h = ubj_header(input)?;
    let mut entries = Vec::new();
    match h.count {
        Some(n) => {
            // A key takes at least two bytes (a length marker and its value), a value one.
            check_count(input, n, 3, at)?;
            entries.reserve(n.min(4096));
            for _ in 0..n {
                let key = ubj_string(input)?;
                let value = match h.typed {
                    Some(t) => ubj_scalar(input, t)?.unwrap_or(Value::Null),
                    None => ubj_value(input)?,
                };
                entries.push((key, value));
            }
        }
        None => loop {
            skip_noops(input);
            if input.peek()? == b'}' {
                input.pos += 1;
                break;
            }
            let key = ubj_string(input)?;
            entries.push((key, ubj_value(input)?));
        },
    }
    input.leave();
    Ok(Value::Object(entries))
}

/// A number as XGBoost's JSON reader takes it: an integer without `.` or an exponent, else
/// an f32 (`NaN`, `Infinity`, `-Infinity` included).
fn number(s: &str) -> Option<Value> {
    match s {
        "NaN" => return Some(Value::Float(f32::NAN)),
        "Infinity" | "+Infinity" => return Some(Value::Float(f32::INFINITY)),
        "-Infinity" => return Some(Value::Float(f32::NEG_INFINITY)),
        _ => {}
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if digits.is_empty() || !digits.as_bytes()[0].is_ascii_digit() {
        return None;
    }
    if !digits
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
    {
        return None;
    }
    if digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = s.parse::<i64>() {
            return Some(Value::Int(i));
        }
    }
    s.parse::<f32>().ok().map(Value::Float)
}

/// Decodes a JSON document as XGBoost writes it.
pub(super) fn decode_json(bytes: &[u8]) -> Result<Value> {
    let mut input = Input::new(bytes);
    let v = json_value(&mut input)?;
    json_space(&mut input);
    if input.remaining() > 0 {
        bail!("unexpected text after the document at byte {}", input.pos);
    }
    Ok(v)
}

fn json_space(input: &mut Input) {
    while matches!(input.peek(), Ok(b' ' | b'\t' | b'\n' | b'\r')) {
        input.pos += 1;
    }
}

fn json_expect(input: &mut Input, b: u8) -> Result<()> {
    json_space(input);
    let at = input.pos;
    let got = input.next()?;
    if got != b {
        bail!(
            "expected {:?} at byte {at}, found {:?}",
            b as char,
            got as char
        );
    }
    Ok(())
}

fn json_value(input: &mut Input) -> Result<Value> {
    json_space(input);
    let at = input.pos;
    match input.peek()? {
        b'{' => {
            input.pos += 1;
            input.enter()?;
            let mut entries = Vec::new();
            json_space(input);
            if input.peek()? == b'}' {
                input.pos += 1;
            } else {
                loop {
                    json_space(input);
                    let key = json_string(input)?;
                    json_expect(input, b':')?;
                    entries.push((key, json_value(input)?));
                    json_space(input);
                    match input.next()? {
                        b',' => continue,
                        b'}' => break,
                        c => bail!(
                            "expected ',' or '}}' at byte {}, found {:?}",
                            input.pos - 1,
                            c as char
                        ),
                    }
                }
            }
            input.leave();
            Ok(Value::Object(entries))
        }
        b'[' => {
            input.pos += 1;
            input.enter()?;
            let mut b = ArrayBuilder::with_capacity(0);
            json_space(input);
            if input.peek()? == b']' {
                input.pos += 1;
            } else {
                loop {
                    b.push(json_value(input)?);
                    json_space(input);
                    match input.next()? {
                        b',' => continue,
                        b']' => break,
                        c => bail!(
                            "expected ',' or ']' at byte {}, found {:?}",
                            input.pos - 1,
                            c as char
                        ),
                    }
                }
            }
            input.leave();
            Ok(b.finish())
        }
        b'"' => Ok(Value::Str(json_string(input)?)),
        b't' => json_word(input, "true", Value::Bool(true)),
        b'f' => json_word(input, "false", Value::Bool(false)),
        b'n' => json_word(input, "null", Value::Null),
        _ => {
            let start = input.pos;
            while matches!(input.peek(), Ok(b) if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.'))
            {
                input.pos += 1;
            }
            let text = std::str::from_utf8(&input.bytes[start..input.pos]).unwrap_or("");
            if text.is_empty() {
                bail!("unexpected {:?} at byte {at}", input.peek()? as char);
            }
            number(text).ok_or_else(|| anyhow!("invalid number {text:?} at byte {at}"))
        }
    }
}

fn json_word(input: &mut Input, word: &str, v: Value) -> Result<Value> {
    let at = input.pos;
    if input.take(word.len()).ok() != Some(word.as_bytes()) {
        bail!("invalid literal at byte {at}");
    }
    Ok(v)
}

fn json_string(input: &mut Input) -> Result<String> {
    let at = input.pos;
    if input.next()? != b'"' {
        bail!("expected a string at byte {at}");
    }
    let mut out: Vec<u8> = Vec::new();
    loop {
        let b = input.next()?;
        match b {
            b'"' => break,
            b'\\' => {
                let e = input.next()?;
                match e {
                    b'"' | b'\\' | b'/' => out.push(e),
                    b'b' => out.push(0x08),
                    b'f' => out.push(0x0c),
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'u' => {
                        let mut c = json_hex4(input)?;
                        if (0xD800..0xDC00).contains(&c)
                            && input.bytes[input.pos..].starts_with(b"\\u")
                        {
                            input.pos += 2;
                            let low = json_hex4(input)?;
                            if (0xDC00..0xE000).contains(&low) {
                                c = 0x10000 + ((c - 0xD800) << 10) + (low - 0xDC00);
                            }
                        }
                        let ch = char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER);
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                    }
                    _ => bail!("invalid escape in the string at byte {at}"),
                }
            }
            _ => out.push(b),
        }
    }
    String::from_utf8(out).map_err(|_| anyhow!("invalid UTF-8 in the string at byte {at}"))
}

fn json_hex4(input: &mut Input) -> Result<u32> {
    let at = input.pos;
    let s = input.take(4)?;
    std::str::from_utf8(s)
        .ok()
        .and_then(|s| u32::from_str_radix(s, 16).ok())
        .ok_or_else(|| anyhow!("invalid \\u escape at byte {at}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_numbers_are_ints_or_f32() {
        let v = decode_json(br#"{"a": [1, 2], "b": [1E0, 0.1, NaN, -Infinity], "c": 7, "d": []}"#)
            .unwrap();
        assert_eq!(v.get("a"), Some(&Value::Ints(vec![1, 2])));
        let Some(Value::Floats(b)) = v.get("b") else {
            panic!()
        };
        assert_eq!(b[0], 1.0);
        assert_eq!(b[1], 0.1f32);
        assert!(b[2].is_nan());
        assert_eq!(b[3], f32::NEG_INFINITY);
        assert_eq!(v.get("c"), Some(&Value::Int(7)));
        assert_eq!(v.get("d"), Some(&Value::Ints(vec![])));
    }

    #[test]
    fn json_strings_and_errors() {
        let v = decode_json(br#"["a\"b\u00e9\ud83d\ude00", true, null]"#).unwrap();
        assert_eq!(
            v,
            Value::Array(vec![
                Value::Str("a\"b\u{e9}\u{1F600}".into()),
                Value::Bool(true),
                Value::Null
            ])
        );
        for bad in [
            &b"{\"a\": 1"[..],
            b"[1,",
            b"{\"a\" 1}",
            b"[1] x",
            b"\"abc",
            b"[01x]",
        ] {
            assert!(
                decode_json(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let deep = "[".repeat(1000);
        assert!(decode_json(deep.as_bytes()).is_err());
    }

    #[test]
    fn ubjson_containers() {
        // {"a": [$d#i2 1.0 2.5], "b": [#i2 i1 SU1"x"], "c": [i-1 ]}
        let mut b = vec![b'{', b'i', 1, b'a', b'[', b'$', b'd', b'#', b'i', 2];
        b.extend(1.0f32.to_be_bytes());
        b.extend(2.5f32.to_be_bytes());
        b.extend([
            b'i', 1, b'b', b'[', b'#', b'i', 2, b'i', 1, b'S', b'U', 1, b'x',
        ]);
        b.extend([b'i', 1, b'c', b'[', b'i', 0xff, b']', b'}']);
        let v = decode_ubjson(&b).unwrap();
        assert_eq!(v.get("a"), Some(&Value::Floats(vec![1.0, 2.5])));
        assert_eq!(
            v.get("b"),
            Some(&Value::Array(vec![Value::Int(1), Value::Str("x".into())]))
        );
        assert_eq!(v.get("c"), Some(&Value::Ints(vec![-1])));
    }

    #[test]
    fn ubjson_forged_counts_fail_without_allocating() {
        // A typed array claiming 2^62 floats, an untyped one claiming 2^40 elements, a string
        // claiming 2^40 bytes, a typed array of nulls.
        let mut a = vec![b'[', b'$', b'd', b'#', b'L'];
        a.extend((1i64 << 62).to_be_bytes());
        let mut b = vec![b'[', b'#', b'L'];
        b.extend((1i64 << 40).to_be_bytes());
        let mut c = vec![b'S', b'L'];
        c.extend((1i64 << 40).to_be_bytes());
        let mut d = vec![b'[', b'$', b'Z', b'#', b'L'];
        d.extend((1i64 << 40).to_be_bytes());
        let mut e = vec![b'S', b'L'];
        e.extend((-5i64).to_be_bytes());
        for bad in [a, b, c, d, e] {
            assert!(decode_ubjson(&bad).is_err());
        }
    }
}
