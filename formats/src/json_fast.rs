//! A JSON decoder specialised to a flat schema: one pass over each record's text, straight
//! into the Arrow builders of the columns, with no intermediate tape.
//!
//! It covers the common case and gives up ([`GiveUp`]) on everything else: a value that needs a
//! coercion beyond the ones below, a nested value for a configured column, a duplicate or
//! escaped key, a missing or null required field, any syntax it does not expect. The caller then
//! decodes the batch with arrow-json, which also finds and explains what is wrong. For every
//! record it accepts, the row equals arrow-json's with `coerce_primitive` (the property test in
//! `fast_json_tests.rs` checks this), so which decoder ran never shows in the table.
//!
//! Accepted: strings (escapes included) into text columns, and numbers and `true`/`false` into
//! text columns as their JSON text; integer literals into integer columns; numbers into float
//! columns (parsed by the same `lexical-core` functions arrow-json uses); `true`/`false` into
//! boolean columns; `null` or a missing field for a nullable column; unknown fields, skipped
//! (refused when unknown fields are rejected).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::array::{ArrayRef, BooleanBuilder, PrimitiveBuilder, RecordBatch, StringBuilder};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, SchemaRef,
};

/// Why the fast decoder gave up on a batch (for debug logs; the batch is decoded by arrow-json).
pub type GiveUp = &'static str;

/// Deepest nesting skipped inside an unknown field before giving up.
const MAX_SKIP_DEPTH: u32 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Utf8,
    Int8,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    Boolean,
}

/// Decodes JSON objects into a flat schema of text, integer, float and boolean columns.
#[derive(Debug)]
pub struct FastJsonDecoder {
    schema: SchemaRef,
    names: Vec<Box<[u8]>>,
    kinds: Vec<Kind>,
    nullable: Vec<bool>,
    /// Bit `f` set for every field.
    all_fields: u64,
    strict: bool,
    /// Text bytes per row of each column in the last batch, to size the next batch's buffers.
    text_bytes_per_row: Vec<AtomicUsize>,
}

impl FastJsonDecoder {
    /// A decoder for `schema`, or `None` when the schema has a type it does not handle (or more
    /// than 64 columns). `strict`: unknown fields make it give up.
    pub fn new(schema: SchemaRef, strict: bool) -> Option<Self> {
        if schema.fields().len() > 64 {
            return None;
        }
        let mut kinds = Vec::new();
        for f in schema.fields() {
            kinds.push(match f.data_type() {
                DataType::Utf8 => Kind::Utf8,
                DataType::Int8 => Kind::Int8,
                DataType::Int16 => Kind::Int16,
                DataType::Int32 => Kind::Int32,
                DataType::Int64 => Kind::Int64,
                DataType::Float32 => Kind::Float32,
                DataType::Float64 => Kind::Float64,
                DataType::Boolean => Kind::Boolean,
                _ => return None,
            });
        }
        let n = kinds.len();
        Some(Self {
            names: schema
                .fields()
                .iter()
                .map(|f| f.name().as_bytes().into())
                .collect(),
            nullable: schema.fields().iter().map(|f| f.is_nullable()).collect(),
            all_fields: if n == 64 { u64::MAX } else { (1u64 << n) - 1 },
            kinds,
            strict,
            text_bytes_per_row: (0..n).map(|_| AtomicUsize::new(16)).collect(),
            schema,
        })
    }

    /// Decodes `rows` (each one JSON object) into one batch of the schema, or gives up.
    pub fn decode<'a>(
        &self,
        rows: impl ExactSizeIterator<Item = &'a str>,
    ) -> Result<RecordBatch, GiveUp> {
        let n = rows.len();
        let mut columns: Vec<Column> = self
            .kinds
            .iter()
            .zip(&self.text_bytes_per_row)
            .map(|(k, hint)| Column::new(*k, n, hint.load(Ordering::Relaxed)))
            .collect();
        let mut scratch = String::new();
        for row in rows {
            self.record(row, &mut columns, &mut scratch)?;
        }
        let arrays: Vec<ArrayRef> = columns
            .into_iter()
            .zip(&self.text_bytes_per_row)
            .map(|(c, hint)| {
                if let Column::Utf8(b) = &c
                    && n > 0
                {
                    hint.store(b.values_slice().len() / n + 1, Ordering::Relaxed);
                }
                c.finish()
            })
            .collect();
        RecordBatch::try_new(self.schema.clone(), arrays).map_err(|_| "the batch does not fit")
    }

    /// The column a key names: usually the one after the previous key's, as producers tend to
    /// write fields in the same order.
    #[inline]
    fn field(&self, key: &[u8], guess: usize) -> Option<usize> {
        if self.names.get(guess).is_some_and(|n| **n == *key) {
            return Some(guess);
        }
        self.names.iter().position(|n| **n == *key)
    }

    fn record(
        &self,
        text: &str,
        columns: &mut [Column],
        scratch: &mut String,
    ) -> Result<(), GiveUp> {
        let mut c = Cursor::new(text);
        c.ws();
        c.eat(b'{')?;
        c.ws();
        let mut seen = 0u64;
        if c.peek() == Some(b'}') {
            c.i += 1;
        } else {
            let mut guess = 0;
            loop {
                c.eat(b'"')?;
                let key = c.key()?;
                c.ws();
                c.eat(b':')?;
                c.ws();
                match self.field(key, guess) {
                    Some(f) => {
                        let bit = 1u64 << f;
                        if seen & bit != 0 {
                            return Err("a key appears twice");
                        }
                        seen |= bit;
                        self.value(&mut c, f, &mut columns[f], scratch)?;
                        guess = f + 1;
                    }
                    None if self.strict => return Err("an unknown field (rejected by config)"),
                    None => c.skip(0, scratch)?,
                }
                c.ws();
                match c.next() {
                    Some(b',') => c.ws(),
                    Some(b'}') => break,
                    _ => return Err("expected ',' or '}'"),
                }
            }
        }
        c.ws();
        if c.i != c.b.len() {
            return Err("something follows the object");
        }
        if seen != self.all_fields {
            for (f, col) in columns.iter_mut().enumerate() {
                if seen & (1u64 << f) == 0 {
                    if !self.nullable[f] {
                        return Err("a required field is missing");
                    }
                    col.append_null();
                }
            }
        }
        Ok(())
    }

    #[inline]
    fn value(
        &self,
        c: &mut Cursor<'_>,
        f: usize,
        col: &mut Column,
        scratch: &mut String,
    ) -> Result<(), GiveUp> {
        if c.peek() == Some(b'n') {
            c.literal(b"null")?;
            if !self.nullable[f] {
                return Err("null for a required field");
            }
            col.append_null();
            return Ok(());
        }
        match col {
            Column::Utf8(b) => match c.peek() {
                Some(b'"') => {
                    c.i += 1;
                    b.append_value(c.string(scratch)?);
                }
                Some(b't') => {
                    c.literal(b"true")?;
                    b.append_value("true");
                }
                Some(b'f') => {
                    c.literal(b"false")?;
                    b.append_value("false");
                }
                _ => b.append_value(c.number()?.0),
            },
            Column::Int8(b) => append_integer(b, c)?,
            Column::Int16(b) => append_integer(b, c)?,
            Column::Int32(b) => append_integer(b, c)?,
            Column::Int64(b) => append_integer(b, c)?,
            Column::Float32(b) => {
                let text = c.number()?.0;
                b.append_value(lexical_core::parse(text.as_bytes()).map_err(|_| "not a float")?);
            }
            Column::Float64(b) => {
                let text = c.number()?.0;
                b.append_value(lexical_core::parse(text.as_bytes()).map_err(|_| "not a float")?);
            }
            Column::Boolean(b) => match c.peek() {
                Some(b't') => {
                    c.literal(b"true")?;
                    b.append_value(true);
                }
                _ => {
                    c.literal(b"false")?;
                    b.append_value(false);
                }
            },
        }
        Ok(())
    }
}

#[inline]
fn append_integer<T>(b: &mut PrimitiveBuilder<T>, c: &mut Cursor<'_>) -> Result<(), GiveUp>
where
    T: ArrowPrimitiveType,
    T::Native: lexical_core::FromLexical,
{
    let (text, integral) = c.number()?;
    if !integral {
        return Err("a fraction or exponent for an integer column");
    }
    b.append_value(lexical_core::parse(text.as_bytes()).map_err(|_| "an integer out of range")?);
    Ok(())
}

/// One column being built.
enum Column {
    Utf8(StringBuilder),
    Int8(PrimitiveBuilder<Int8Type>),
    Int16(PrimitiveBuilder<Int16Type>),
    Int32(PrimitiveBuilder<Int32Type>),
    Int64(PrimitiveBuilder<Int64Type>),
    Float32(PrimitiveBuilder<Float32Type>),
    Float64(PrimitiveBuilder<Float64Type>),
    Boolean(BooleanBuilder),
}

impl Column {
    fn new(kind: Kind, rows: usize, text_bytes_per_row: usize) -> Self {
        match kind {
            Kind::Utf8 => Self::Utf8(StringBuilder::with_capacity(
                rows,
                rows.saturating_mul(text_bytes_per_row + text_bytes_per_row / 8),
            )),
            Kind::Int8 => Self::Int8(PrimitiveBuilder::with_capacity(rows)),
            Kind::Int16 => Self::Int16(PrimitiveBuilder::with_capacity(rows)),
            Kind::Int32 => Self::Int32(PrimitiveBuilder::with_capacity(rows)),
            Kind::Int64 => Self::Int64(PrimitiveBuilder::with_capacity(rows)),
            Kind::Float32 => Self::Float32(PrimitiveBuilder::with_capacity(rows)),
            Kind::Float64 => Self::Float64(PrimitiveBuilder::with_capacity(rows)),
            Kind::Boolean => Self::Boolean(BooleanBuilder::with_capacity(rows)),
        }
    }

    fn append_null(&mut self) {
        match self {
            Self::Utf8(b) => b.append_null(),
            Self::Int8(b) => b.append_null(),
            Self::Int16(b) => b.append_null(),
            Self::Int32(b) => b.append_null(),
            Self::Int64(b) => b.append_null(),
            Self::Float32(b) => b.append_null(),
            Self::Float64(b) => b.append_null(),
            Self::Boolean(b) => b.append_null(),
        }
    }

    fn finish(mut self) -> ArrayRef {
        match &mut self {
            Self::Utf8(b) => Arc::new(b.finish()),
            Self::Int8(b) => Arc::new(b.finish()),
            Self::Int16(b) => Arc::new(b.finish()),
            Self::Int32(b) => Arc::new(b.finish()),
            Self::Int64(b) => Arc::new(b.finish()),
            Self::Float32(b) => Arc::new(b.finish()),
            Self::Float64(b) => Arc::new(b.finish()),
            Self::Boolean(b) => Arc::new(b.finish()),
        }
    }
}

/// A position in one record's text.
struct Cursor<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a str) -> Self {
        Self {
            s,
            b: s.as_bytes(),
            i: 0,
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        Some(b)
    }

    /// Skips JSON whitespace (space, tab, line feed, carriage return).
    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    #[inline]
    fn eat(&mut self, want: u8) -> Result<(), GiveUp> {
        if self.peek() == Some(want) {
            self.i += 1;
            Ok(())
        } else {
            Err("unexpected character")
        }
    }

    #[inline]
    fn literal(&mut self, word: &[u8]) -> Result<(), GiveUp> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err("unexpected literal")
        }
    }

    /// After the opening quote: a key's bytes, which must have no escapes.
    #[inline]
    fn key(&mut self) -> Result<&'a [u8], GiveUp> {
        let rest = &self.b[self.i..];
        match memchr::memchr2(b'"', b'\\', rest) {
            Some(n) if rest[n] == b'"' => {
                self.i += n + 1;
                Ok(&rest[..n])
            }
            _ => Err("an escaped or unterminated key"),
        }
    }

    /// After the opening quote: the string's value, borrowed from the record when it has no
    /// escapes, otherwise unescaped into `scratch`.
    #[inline]
    fn string<'x>(&mut self, scratch: &'x mut String) -> Result<&'x str, GiveUp>
    where
        'a: 'x,
    {
        let start = self.i;
        match memchr::memchr2(b'"', b'\\', &self.b[start..]) {
            Some(n) if self.b[start + n] == b'"' => {
                self.i = start + n + 1;
                // The quote is ASCII, so both ends are character boundaries.
                self.s
                    .get(start..start + n)
                    .ok_or("not a character boundary")
            }
            Some(n) => {
                scratch.clear();
                scratch.push_str(self.s.get(start..start + n).ok_or("bad boundary")?);
                self.i = start + n;
                self.escaped_rest(scratch)?;
                Ok(scratch.as_str())
            }
            None => Err("an unterminated string"),
        }
    }

    /// From a backslash: unescapes up to and past the closing quote, as arrow-json does.
    fn escaped_rest(&mut self, out: &mut String) -> Result<(), GiveUp> {
        loop {
            match self.next() {
                Some(b'"') => return Ok(()),
                Some(b'\\') => {}
                _ => return Err("an unterminated string"),
            }
            let c = match self.next() {
                Some(b'"') => '"',
                Some(b'\\') => '\\',
                Some(b'/') => '/',
                Some(b'b') => '\u{8}',
                Some(b'f') => '\u{c}',
                Some(b'n') => '\n',
                Some(b'r') => '\r',
                Some(b't') => '\t',
                Some(b'u') => {
                    let high = self.hex4()?;
                    match char::from_u32(u32::from(high)) {
                        Some(c) => c,
                        None => {
                            self.eat(b'\\')?;
                            self.eat(b'u')?;
                            let low = self.hex4()?;
                            if !(0xD800..=0xDBFF).contains(&high)
                                || !(0xDC00..=0xDFFF).contains(&low)
                            {
                                return Err("an invalid surrogate pair");
                            }
                            let n = ((u32::from(high) - 0xD800) << 10)
                                | (u32::from(low) - 0xDC00 + 0x1_0000);
                            char::from_u32(n).ok_or("an invalid surrogate pair")?
                        }
                    }
                }
                _ => return Err("an invalid escape"),
            };
            out.push(c);
            let start = self.i;
            let n = memchr::memchr2(b'"', b'\\', &self.b[start..]).ok_or("unterminated")?;
            out.push_str(self.s.get(start..start + n).ok_or("bad boundary")?);
            self.i = start + n;
        }
    }

    fn hex4(&mut self) -> Result<u16, GiveUp> {
        let mut v = 0u16;
        for _ in 0..4 {
            let d = match self.next() {
                Some(b @ b'0'..=b'9') => b - b'0',
                Some(b @ b'a'..=b'f') => b - b'a' + 10,
                Some(b @ b'A'..=b'F') => b - b'A' + 10,
                _ => return Err("an invalid unicode escape"),
            };
            v = (v << 4) | u16::from(d);
        }
        Ok(v)
    }

    #[inline]
    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    /// A number by JSON's grammar: its text and whether it is an integer literal. Gives up on
    /// anything arrow-json would read differently (it takes any run of `0-9 + - . e E`).
    #[inline]
    fn number(&mut self) -> Result<(&'a str, bool), GiveUp> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err("not a number"),
        }
        let mut integral = true;
        if self.peek() == Some(b'.') {
            self.i += 1;
            integral = false;
            if self.digits() == 0 {
                return Err("a number without fraction digits");
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            integral = false;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err("a number without exponent digits");
            }
        }
        if let Some(b'0'..=b'9' | b'+' | b'-' | b'.' | b'e' | b'E') = self.peek() {
            return Err("a malformed number");
        }
        let text = self.s.get(start..self.i).ok_or("bad boundary")?;
        Ok((text, integral))
    }

    /// Skips one value of any type (an unknown field's), checking its syntax.
    fn skip(&mut self, depth: u32, scratch: &mut String) -> Result<(), GiveUp> {
        if depth > MAX_SKIP_DEPTH {
            return Err("nesting too deep");
        }
        match self.peek() {
            Some(b'"') => {
                self.i += 1;
                self.string(scratch).map(|_| ())
            }
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'{') => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.eat(b'"')?;
                    self.string(scratch)?;
                    self.ws();
                    self.eat(b':')?;
                    self.ws();
                    self.skip(depth + 1, scratch)?;
                    self.ws();
                    match self.next() {
                        Some(b',') => self.ws(),
                        Some(b'}') => return Ok(()),
                        _ => return Err("expected ',' or '}'"),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.skip(depth + 1, scratch)?;
                    self.ws();
                    match self.next() {
                        Some(b',') => self.ws(),
                        Some(b']') => return Ok(()),
                        _ => return Err("expected ',' or ']'"),
                    }
                }
            }
            _ => self.number().map(|_| ()),
        }
    }
}

#[cfg(test)]
#[path = "json_fast_tests.rs"]
mod tests;
