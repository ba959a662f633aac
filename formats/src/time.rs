//! Times in records: event times read from a decoded column or the Kafka timestamp, times
//! written as text or epoch numbers, and the calendar date and hour of an instant in a zone.

use arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Float64Array, Int32Array, Int64Array, StringArray,
};
use arrow::datatypes::DataType;
use chrono::{NaiveDate, NaiveDateTime, Offset, TimeZone};
use chrono_tz::Tz;
use sluice_config::TimeFormat;

/// Why a time could not be read (the message of an `invalid_event_time` dead letter).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TimeError {
    /// The event time field is missing or null.
    #[error("the event time field is missing or null")]
    Missing,
    /// The record has no Kafka timestamp.
    #[error("the record has no Kafka timestamp")]
    NoKafkaTimestamp,
    /// An empty string.
    #[error("empty time")]
    Empty,
    /// Looks like a number and is not one.
    #[error("{0:?} is not a number")]
    NotANumber(String),
    /// An epoch number out of the range of a timestamp.
    #[error("{0} is out of range for an epoch time")]
    EpochOutOfRange(f64),
    /// Text in no time format sluice reads.
    #[error(
        "cannot parse {0:?} as a time; expected RFC 3339 (2026-01-31T12:00:00Z) or an epoch number"
    )]
    Unparseable(String),
    /// A local time that the zone skips.
    #[error("{text:?} does not exist in time zone {tz} (a daylight-saving gap)")]
    LocalGap {
        /// The time as written.
        text: String,
        /// The zone.
        tz: Tz,
    },
    /// A column type no time is read from.
    #[error("an event time cannot be read from a {0} column")]
    ColumnType(DataType),
}

/// The event time (µs since the epoch) of row `row` of a decoded column.
pub fn event_time_of(
    col: &ArrayRef,
    row: usize,
    fmt: TimeFormat,
    tz: Tz,
) -> Result<i64, TimeError> {
    if col.is_null(row) {
        return Err(TimeError::Missing);
    }
    match col.data_type() {
        DataType::Timestamp(..) => Ok(col
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
            .value(row)),
        DataType::Int64 => epoch_to_us(
            col.as_any()
                .downcast_ref::<Int64Array>()
                .map(|a| a.value(row) as f64)
                .unwrap_or_default(),
            fmt,
        ),
        DataType::Int32 => epoch_to_us(
            col.as_any()
                .downcast_ref::<Int32Array>()
                .map(|a| a.value(row) as f64)
                .unwrap_or_default(),
            fmt,
        ),
        DataType::Float64 => epoch_to_us(
            col.as_any()
                .downcast_ref::<Float64Array>()
                .map(|a| a.value(row))
                .unwrap_or_default(),
            fmt,
        ),
        DataType::Utf8 => parse_time(
            col.as_any()
                .downcast_ref::<StringArray>()
                .map(|a| a.value(row))
                .unwrap_or_default(),
            fmt,
            tz,
        ),
        other => Err(TimeError::ColumnType(other.clone())),
    }
}

fn epoch_to_us(v: f64, fmt: TimeFormat) -> Result<i64, TimeError> {
    let us = match fmt {
        TimeFormat::EpochSeconds => v * 1e6,
        TimeFormat::EpochMillis | TimeFormat::Rfc3339 | TimeFormat::KafkaTimestamp => v * 1e3,
        TimeFormat::EpochMicros => v,
    };
    if !us.is_finite() || us.abs() > 9.2e18 {
        return Err(TimeError::EpochOutOfRange(v));
    }
    Ok(us.round() as i64)
}

/// Parses a time written as text: a number (epoch, per `fmt`), RFC 3339 with an offset, or a
/// date-time without an offset (read in `tz`). Returns µs since the epoch.
pub fn parse_time(s: &str, fmt: TimeFormat, tz: Tz) -> Result<i64, TimeError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(TimeError::Empty);
    }
    if t.bytes().all(|b| {
        b.is_ascii_digit() || b == b'-' || b == b'.' || b == b'e' || b == b'E' || b == b'+'
    }) && t.bytes().any(|b| b.is_ascii_digit())
        && !t[1..].contains('-')
    {
        let v: f64 = t
            .parse()
            .map_err(|_| TimeError::NotANumber(t.to_string()))?;
        return epoch_to_us(v, fmt);
    }
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(t) {
        return Ok(d.timestamp_micros());
    }
    let spaced = t.replacen(' ', "T", 1);
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(&spaced) {
        return Ok(d.timestamp_micros());
    }
    for pattern in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(&spaced, pattern) {
            return local_to_us(naive, tz, t);
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return local_to_us(date.and_hms_opt(0, 0, 0).unwrap_or_default(), tz, t);
    }
    Err(TimeError::Unparseable(t.to_string()))
}

fn local_to_us(naive: NaiveDateTime, tz: Tz, original: &str) -> Result<i64, TimeError> {
    tz.from_local_datetime(&naive)
        .earliest()
        .map(|d| d.timestamp_micros())
        .ok_or_else(|| TimeError::LocalGap {
            text: original.to_string(),
            tz,
        })
}

/// Calendar date (days since epoch) and hour of each event time, in `tz`.
pub fn date_and_hour(event_us: &[i64], tz: Tz) -> (Date32Array, Int32Array) {
    let mut dates = Vec::with_capacity(event_us.len());
    let mut hours = Vec::with_capacity(event_us.len());
    // Offsets change rarely: reuse the last one while the instant stays in the same UTC hour.
    let mut cache: Option<(i64, i64)> = None; // (utc hour, offset ms)
    for &us in event_us {
        let ms = us.div_euclid(1000);
        let hour = ms.div_euclid(3_600_000);
        let offset_ms = match cache {
            Some((h, off)) if h == hour => off,
            _ => {
                let off = chrono::DateTime::from_timestamp_millis(ms)
                    .map(|d| {
                        tz.offset_from_utc_datetime(&d.naive_utc())
                            .fix()
                            .local_minus_utc() as i64
                            * 1000
                    })
                    .unwrap_or(0);
                cache = Some((hour, off));
                off
            }
        };
        let local = ms + offset_ms;
        dates.push(local.div_euclid(86_400_000) as i32);
        hours.push(local.rem_euclid(86_400_000).div_euclid(3_600_000) as i32);
    }
    (Date32Array::from(dates), Int32Array::from(hours))
}
