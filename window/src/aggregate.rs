//! Aggregate accumulators over normalised Arrow inputs. `null` inputs are ignored, as in SQL.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType};
use sluice_config::AggregateFunction;

/// One input value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Integers (and dates).
    Int(i64),
    /// Floats and decimals.
    Float(f64),
    /// Text.
    Text(String),
    /// Timestamps (µs UTC).
    Time(i64),
    /// Booleans.
    Bool(bool),
}

impl Eq for Value {}

impl std::hash::Hash for Value {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        match self {
            Value::Int(v) | Value::Time(v) => v.hash(h),
            Value::Float(v) => v.to_bits().hash(h),
            Value::Text(v) => v.hash(h),
            Value::Bool(v) => v.hash(h),
        }
    }
}

impl Value {
    fn less(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) | (Value::Time(a), Value::Time(b)) => a < b,
            (Value::Float(a), Value::Float(b)) => a.total_cmp(b).is_lt(),
            (Value::Text(a), Value::Text(b)) => a < b,
            (Value::Bool(a), Value::Bool(b)) => a < b,
            _ => false,
        }
    }
}

/// The normalised kind of an input column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// Int64.
    Int,
    /// Float64.
    Float,
    /// Utf8.
    Text,
    /// Timestamp µs.
    Time,
    /// Boolean.
    Bool,
}

/// Why an input column cannot be aggregated.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// No aggregate reads this type.
    #[error("cannot aggregate a {0} column")]
    Unsupported(DataType),
    /// The column could not be cast to its normal type.
    #[error(transparent)]
    Cast(#[from] arrow::error::ArrowError),
}

/// Normalises an input column: integers to Int64, floats and decimals to Float64, text to
/// Utf8, timestamps to µs.
pub fn normalise(a: &ArrayRef) -> Result<(ArrayRef, InputKind), InputError> {
    let kind = kind_of(a.data_type())?;
    let target = match (kind, a.data_type()) {
        (InputKind::Int, _) => DataType::Int64,
        (InputKind::Float, _) => DataType::Float64,
        (InputKind::Text, _) => DataType::Utf8,
        (InputKind::Time, DataType::Timestamp(_, tz)) => {
            DataType::Timestamp(TimeUnit::Microsecond, tz.clone())
        }
        (InputKind::Time, _) => DataType::Timestamp(TimeUnit::Microsecond, None),
        (InputKind::Bool, _) => DataType::Boolean,
    };
    let arr = if a.data_type() == &DataType::Date32 {
        cast(&cast(a, &DataType::Int32)?, &DataType::Int64)
    } else {
        cast(a, &target)
    }?;
    Ok((arr, kind))
}

/// The kind an input column of type `t` is normalised to.
pub fn kind_of(t: &DataType) -> Result<InputKind, InputError> {
    Ok(match t {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::Date32 => InputKind::Int,
        DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal128(..)
        | DataType::UInt64 => InputKind::Float,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => InputKind::Text,
        DataType::Timestamp(..) => InputKind::Time,
        DataType::Boolean => InputKind::Bool,
        other => return Err(InputError::Unsupported(other.clone())),
    })
}

/// Reads row `i` of a normalised column.
pub fn value_at(a: &ArrayRef, kind: InputKind, i: usize) -> Option<Value> {
    if a.is_null(i) {
        return None;
    }
    Some(match kind {
        InputKind::Int => Value::Int(a.as_primitive::<Int64Type>().value(i)),
        InputKind::Float => Value::Float(a.as_primitive::<Float64Type>().value(i)),
        InputKind::Text => Value::Text(a.as_string::<i32>().value(i).to_string()),
        InputKind::Time => Value::Time(a.as_primitive::<TimestampMicrosecondType>().value(i)),
        InputKind::Bool => Value::Bool(a.as_boolean().value(i)),
    })
}

/// The running state of one aggregate in one window.
#[derive(Clone, Debug, PartialEq)]
pub enum Accumulator {
    /// count(*) or count(col).
    Count(i64),
    /// sum of integers.
    SumInt(Option<i64>),
    /// sum of floats.
    SumFloat(Option<f64>),
    /// min.
    Min(Option<Value>),
    /// max.
    Max(Option<Value>),
    /// avg: (sum, count).
    Avg(f64, i64),
    /// count_distinct.
    Distinct(HashSet<Value>),
}

impl Accumulator {
    /// A fresh accumulator for `f` over an input of `kind` (`None` for `count(*)`).
    pub fn new(f: AggregateFunction, kind: Option<InputKind>) -> Self {
        match (f, kind) {
            (AggregateFunction::Count, _) => Self::Count(0),
            (AggregateFunction::Sum, Some(InputKind::Int)) => Self::SumInt(None),
            (AggregateFunction::Sum, _) => Self::SumFloat(None),
            (AggregateFunction::Min, _) => Self::Min(None),
            (AggregateFunction::Max, _) => Self::Max(None),
            (AggregateFunction::Avg, _) => Self::Avg(0.0, 0),
            (AggregateFunction::CountDistinct, _) => Self::Distinct(HashSet::new()),
        }
    }

    /// Adds one input (`star` for `count(*)`, which counts every row).
    pub fn update(&mut self, v: Option<&Value>, star: bool) {
        match self {
            Self::Count(n) => {
                if star || v.is_some() {
                    *n += 1
                }
            }
            Self::SumInt(s) => {
                if let Some(Value::Int(x)) = v {
                    *s = Some(s.unwrap_or(0).saturating_add(*x))
                }
            }
            Self::SumFloat(s) => match v {
                Some(Value::Float(x)) => *s = Some(s.unwrap_or(0.0) + x),
                Some(Value::Int(x)) => *s = Some(s.unwrap_or(0.0) + *x as f64),
                _ => {}
            },
            Self::Min(m) => {
                if let Some(x) = v
                    && m.as_ref().is_none_or(|cur| x.less(cur))
                {
                    *m = Some(x.clone())
                }
            }
            Self::Max(m) => {
                if let Some(x) = v
                    && m.as_ref().is_none_or(|cur| cur.less(x))
                {
                    *m = Some(x.clone())
                }
            }
            Self::Avg(sum, n) => match v {
                Some(Value::Float(x)) => {
                    *sum += x;
                    *n += 1
                }
                Some(Value::Int(x)) => {
                    *sum += *x as f64;
                    *n += 1
                }
                _ => {}
            },
            Self::Distinct(set) => {
                if let Some(x) = v {
                    set.insert(x.clone());
                }
            }
        }
    }

    /// Merges another accumulator of the same aggregate (session merges).
    pub fn merge(&mut self, other: Accumulator) {
        match (self, other) {
            (Self::Count(a), Self::Count(b)) => *a += b,
            (Self::SumInt(a), Self::SumInt(b)) => {
                *a = match (*a, b) {
                    (Some(x), Some(y)) => Some(x.saturating_add(y)),
                    (x, y) => x.or(y),
                }
            }
            (Self::SumFloat(a), Self::SumFloat(b)) => {
                *a = match (*a, b) {
                    (Some(x), Some(y)) => Some(x + y),
                    (x, y) => x.or(y),
                }
            }
            (Self::Min(a), Self::Min(b)) => {
                if let Some(y) = b
                    && a.as_ref().is_none_or(|x| y.less(x))
                {
                    *a = Some(y)
                }
            }
            (Self::Max(a), Self::Max(b)) => {
                if let Some(y) = b
                    && a.as_ref().is_none_or(|x| x.less(&y))
                {
                    *a = Some(y)
                }
            }
            (Self::Avg(s, n), Self::Avg(s2, n2)) => {
                *s += s2;
                *n += n2
            }
            (Self::Distinct(a), Self::Distinct(b)) => a.extend(b),
            _ => {}
        }
    }
}

/// The output type of `f` over an input of `kind`.
pub fn output_type(f: AggregateFunction, kind: Option<InputKind>) -> DataType {
    match (f, kind) {
        (AggregateFunction::Count | AggregateFunction::CountDistinct, _) => DataType::Int64,
        (AggregateFunction::Sum, Some(InputKind::Int)) => DataType::Int64,
        (AggregateFunction::Sum | AggregateFunction::Avg, _) => DataType::Float64,
        (AggregateFunction::Min | AggregateFunction::Max, Some(k)) => match k {
            InputKind::Int => DataType::Int64,
            InputKind::Float => DataType::Float64,
            InputKind::Text => DataType::Utf8,
            InputKind::Time => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            InputKind::Bool => DataType::Boolean,
        },
        (AggregateFunction::Min | AggregateFunction::Max, None) => DataType::Int64,
    }
}

/// Builds the output column of one aggregate from final accumulators.
pub fn finish(accs: &[&Accumulator], ty: &DataType) -> ArrayRef {
    match ty {
        DataType::Int64 => {
            let mut b = Int64Builder::with_capacity(accs.len());
            for a in accs {
                b.append_option(match a {
                    Accumulator::Count(n) => Some(*n),
                    Accumulator::Distinct(s) => Some(s.len() as i64),
                    Accumulator::SumInt(s) => *s,
                    Accumulator::Min(Some(Value::Int(v)))
                    | Accumulator::Max(Some(Value::Int(v))) => Some(*v),
                    _ => None,
                });
            }
            Arc::new(b.finish())
        }
        DataType::Float64 => {
            let mut b = Float64Builder::with_capacity(accs.len());
            for a in accs {
                b.append_option(match a {
                    Accumulator::SumFloat(s) => *s,
                    Accumulator::Avg(s, n) if *n > 0 => Some(s / *n as f64),
                    Accumulator::Min(Some(Value::Float(v)))
                    | Accumulator::Max(Some(Value::Float(v))) => Some(*v),
                    _ => None,
                });
            }
            Arc::new(b.finish())
        }
        DataType::Utf8 => {
            let mut b = StringBuilder::new();
            for a in accs {
                match a {
                    Accumulator::Min(Some(Value::Text(v)))
                    | Accumulator::Max(Some(Value::Text(v))) => b.append_value(v),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Boolean => {
            let mut b = BooleanBuilder::new();
            for a in accs {
                match a {
                    Accumulator::Min(Some(Value::Bool(v)))
                    | Accumulator::Max(Some(Value::Bool(v))) => b.append_value(*v),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        _ => {
            let mut b = TimestampMicrosecondBuilder::new().with_timezone("UTC");
            for a in accs {
                match a {
                    Accumulator::Min(Some(Value::Time(v)))
                    | Accumulator::Max(Some(Value::Time(v))) => b.append_value(*v),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
    }
}
