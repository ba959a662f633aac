//! Column types as users write them in `schema = [...]`: Delta's type names, with nested types
//! in the familiar DDL form: `array<string>`, `map<string, long>`,
//! `struct<lat: double, lon: double>`, `decimal(10, 2)`.

use std::fmt;

use crate::ValueError;

/// A column's type, independent of any Arrow or Delta library.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ColumnType {
    /// UTF-8 text.
    String,
    /// 64-bit integer.
    Long,
    /// 32-bit integer.
    Integer,
    /// 16-bit integer.
    Short,
    /// 8-bit integer.
    Byte,
    /// 64-bit float.
    Double,
    /// 32-bit float.
    Float,
    /// true / false.
    Boolean,
    /// Raw bytes.
    Binary,
    /// A calendar date.
    Date,
    /// An instant, stored as microseconds since the epoch in UTC.
    Timestamp,
    /// A fixed-point decimal with precision and scale.
    Decimal(u8, i8),
    /// A nested record.
    Struct(Vec<StructField>),
    /// A list of values.
    Array(Box<ColumnType>),
    /// A map from keys to values.
    Map(Box<ColumnType>, Box<ColumnType>),
}

/// A field of a nested struct type (always nullable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StructField {
    /// The field's name.
    pub name: String,
    /// The field's type.
    pub ty: ColumnType,
}

impl ColumnType {
    /// Parses a type name such as `long`, `decimal(10,2)` or `array<struct<a: int>>`.
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        let mut p = Parser {
            s: text.as_bytes(),
            pos: 0,
        };
        let bad = |why: String| ValueError::new(format!("invalid type {text:?}: {why}"));
        let ty = p.ty().map_err(|e| bad(e.0))?;
        p.ws();
        if p.pos != p.s.len() {
            return Err(bad(format!("unexpected text at position {}", p.pos)));
        }
        Ok(ty)
    }

    /// True for types without children.
    pub fn is_primitive(&self) -> bool {
        !matches!(self, Self::Struct(_) | Self::Array(_) | Self::Map(..))
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::String => f.write_str("string"),
            Self::Long => f.write_str("long"),
            Self::Integer => f.write_str("integer"),
            Self::Short => f.write_str("short"),
            Self::Byte => f.write_str("byte"),
            Self::Double => f.write_str("double"),
            Self::Float => f.write_str("float"),
            Self::Boolean => f.write_str("boolean"),
            Self::Binary => f.write_str("binary"),
            Self::Date => f.write_str("date"),
            Self::Timestamp => f.write_str("timestamp"),
            Self::Decimal(p, s) => write!(f, "decimal({p},{s})"),
            Self::Struct(fields) => {
                f.write_str("struct<")?;
                for (i, field) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{}:{}", field.name, field.ty)?;
                }
                f.write_str(">")
            }
            Self::Array(t) => write!(f, "array<{t}>"),
            Self::Map(k, v) => write!(f, "map<{k},{v}>"),
        }
    }
}

/// Why a type name does not parse (the part after "invalid type ...:").
struct Syntax(String);

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

const KNOWN: &str = "string, long, integer, short, byte, double, float, boolean, binary, date, \
                     timestamp, decimal(p,s), array<T>, map<K,V>, struct<name: T, ...>";

impl Parser<'_> {
    fn ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }
    fn ident(&mut self) -> Result<String, Syntax> {
        self.ws();
        let start = self.pos;
        while self.pos < self.s.len()
            && (self.s[self.pos].is_ascii_alphanumeric() || self.s[self.pos] == b'_')
        {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(Syntax(format!("expected a name at position {start}")));
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.pos]).into_owned())
    }
    fn expect(&mut self, c: u8) -> Result<(), Syntax> {
        self.ws();
        if self.s.get(self.pos) == Some(&c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(Syntax(format!(
                "expected '{}' at position {}",
                c as char, self.pos
            )))
        }
    }
    fn peek(&mut self, c: u8) -> bool {
        self.ws();
        self.s.get(self.pos) == Some(&c)
    }
    fn number(&mut self) -> Result<i64, Syntax> {
        self.ws();
        let start = self.pos;
        if self.s.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_digit() {
            self.pos += 1;
        }
        std::str::from_utf8(&self.s[start..self.pos])
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| Syntax(format!("expected a number at position {start}")))
    }
    fn ty(&mut self) -> Result<ColumnType, Syntax> {
        let name = self.ident()?.to_ascii_lowercase();
        Ok(match name.as_str() {
            "string" | "str" | "varchar" => ColumnType::String,
            "long" | "bigint" | "int64" => ColumnType::Long,
            "integer" | "int" | "int32" => ColumnType::Integer,
            "short" | "smallint" => ColumnType::Short,
            "byte" | "tinyint" => ColumnType::Byte,
            "double" | "float64" => ColumnType::Double,
            "float" | "real" | "float32" => ColumnType::Float,
            "boolean" | "bool" => ColumnType::Boolean,
            "binary" | "bytes" => ColumnType::Binary,
            "date" => ColumnType::Date,
            "timestamp" => ColumnType::Timestamp,
            "decimal" => {
                self.expect(b'(')?;
                let p = self.number()?;
                self.expect(b',')?;
                let s = self.number()?;
                self.expect(b')')?;
                if !(1..=38).contains(&p) || s < 0 || s > p {
                    return Err(Syntax(format!(
                        "decimal({p},{s}) needs 1 <= precision <= 38 and 0 <= scale <= precision"
                    )));
                }
                ColumnType::Decimal(p as u8, s as i8)
            }
            "array" => {
                self.expect(b'<')?;
                let t = self.ty()?;
                self.expect(b'>')?;
                ColumnType::Array(Box::new(t))
            }
            "map" => {
                self.expect(b'<')?;
                let k = self.ty()?;
                self.expect(b',')?;
                let v = self.ty()?;
                self.expect(b'>')?;
                if !k.is_primitive() {
                    return Err(Syntax("map keys must be a primitive type".into()));
                }
                ColumnType::Map(Box::new(k), Box::new(v))
            }
            "struct" => {
                self.expect(b'<')?;
                let mut fields = Vec::new();
                loop {
                    let name = self.ident()?;
                    self.expect(b':')?;
                    let ty = self.ty()?;
                    if fields.iter().any(|f: &StructField| f.name == name) {
                        return Err(Syntax(format!("struct field {name:?} appears twice")));
                    }
                    fields.push(StructField { name, ty });
                    if self.peek(b',') {
                        self.pos += 1;
                        continue;
                    }
                    self.expect(b'>')?;
                    break;
                }
                ColumnType::Struct(fields)
            }
            other => {
                return Err(Syntax(format!(
                    "unknown type {other:?}; known types: {KNOWN}"
                )));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_primitive_and_nested_types() {
        assert_eq!(ColumnType::parse("long").unwrap(), ColumnType::Long);
        assert_eq!(
            ColumnType::parse(" Decimal(10, 2) ").unwrap(),
            ColumnType::Decimal(10, 2)
        );
        let t = ColumnType::parse("struct<lat: double, tags: array<string>, m: map<string,long>>")
            .unwrap();
        assert_eq!(
            t.to_string(),
            "struct<lat:double,tags:array<string>,m:map<string,long>>"
        );
        assert_eq!(ColumnType::parse(&t.to_string()).unwrap(), t);
    }

    #[test]
    fn rejects_bad_types_with_a_useful_message() {
        assert!(
            ColumnType::parse("strin")
                .unwrap_err()
                .to_string()
                .contains("known types")
        );
        assert!(
            ColumnType::parse("array<long")
                .unwrap_err()
                .to_string()
                .contains("expected '>'")
        );
        assert!(ColumnType::parse("decimal(50,2)").is_err());
        assert!(
            ColumnType::parse("long long")
                .unwrap_err()
                .to_string()
                .contains("unexpected text")
        );
    }
}
