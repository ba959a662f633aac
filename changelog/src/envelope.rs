//! From records to changes: which records are upserts (their value, or Debezium's `after`,
//! is the row) and which are deletes (a tombstone's Kafka key, or Debezium's `before`, holds
//! the key). Both come out as JSON objects in a [`RawBatch`] of their own, so the pipeline's
//! decoders turn them into Arrow rows; what is neither is a dead letter with its reason.

use std::borrow::Cow;

use arrow::array::BinaryArray;
use serde::Deserialize;
use serde_json::value::RawValue;
use sluice_config::Envelope;
use sluice_formats::{DeadLetter, ErrorKind};
use sluice_kafka::RawBatch;

/// The field a Debezium change's source timestamp (ms) is given in its row.
pub const SOURCE_TS_FIELD: &str = "_source_ts_ms";

/// Why a record is not a change sluice can apply (its dead letter's message).
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The value is not a Debezium change event.
    #[error("not a Debezium change event: {0}")]
    NotDebezium(serde_json::Error),
    /// No `op`.
    #[error("a Debezium change event without op")]
    NoOp,
    /// A create, read or update without `after`.
    #[error("a Debezium {0:?} event without after")]
    NoAfter(String),
    /// A delete without `before`.
    #[error(
        "a Debezium delete without before (set the table's REPLICA IDENTITY so deletes carry the key)"
    )]
    NoBefore,
    /// A truncate.
    #[error("a Debezium truncate event: sluice does not truncate tables")]
    Truncate,
    /// Another op.
    #[error("unknown Debezium op {0:?} (c, r, u and d are applied)")]
    UnknownOp(String),
    /// A row that is not a JSON object.
    #[error("expected a JSON object, found {0}")]
    NotObject(String),
    /// A tombstone without a key.
    #[error("a tombstone without a key deletes nothing")]
    TombstoneWithoutKey,
    /// A tombstone whose key is not text.
    #[error("a tombstone whose key is not UTF-8: keys are read as JSON objects or text")]
    KeyNotUtf8,
    /// A tombstone whose key is text but the table's key has several columns.
    #[error(
        "a tombstone whose key {key} is not a JSON object; a key of {columns} columns needs one"
    )]
    KeyNotObject {
        /// The key (cut).
        key: String,
        /// The key columns.
        columns: usize,
    },
}

/// One key column, as a tombstone's plain-text key is read into it.
#[derive(Clone, Debug)]
pub struct KeyColumn {
    /// Its name.
    pub name: String,
    /// True when the column holds text (the key is then a JSON string, else a JSON literal).
    pub text: bool,
}

/// Records split into changes.
#[derive(Debug, Default)]
pub struct Split {
    /// Upserts: values are the rows (JSON objects, or the records' own values).
    pub upserts: Option<RawBatch>,
    /// Deletes: values are JSON objects holding the key columns.
    pub deletes: Option<RawBatch>,
    /// Records that are neither, with their index in the input batch.
    pub bad: Vec<DeadLetter>,
}

/// Splits `raw` into upserts and deletes as `envelope` says. With [`Envelope::None`] a
/// record with a value is an upsert of that value as it is (any format); a tombstone deletes
/// the key its Kafka key names: a JSON object holding the key columns (a Debezium key, with
/// or without `payload`), or, for a one-column key, the key's text.
pub fn split(raw: &RawBatch, envelope: Envelope, key: &[KeyColumn]) -> Split {
    let mut upserts: Vec<(usize, Option<Vec<u8>>)> = Vec::new();
    let mut deletes: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut bad = Vec::new();
    let mut refuse = |index: usize, why: ChangeError| {
        bad.push(DeadLetter {
            index,
            kind: ErrorKind::BadChange,
            message: why.to_string(),
        })
    };
    for i in 0..raw.len() {
        let Some(value) = raw.value(i) else {
            match tombstone_key(raw.key(i), key) {
                Ok(k) => deletes.push((i, k)),
                Err(why) => refuse(i, why),
            }
            continue;
        };
        match envelope {
            Envelope::None => upserts.push((i, None)),
            Envelope::Debezium => match debezium(value) {
                Ok(Change::Upsert(row)) => upserts.push((i, Some(row))),
                Ok(Change::Delete(k)) => deletes.push((i, k)),
                Err(why) => refuse(i, why),
            },
        }
    }
    let upserts = (!upserts.is_empty()).then(|| {
        // Plain values and no tombstone in the batch (the common case): the batch as it is,
        // without copying its values.
        let mut sub = if upserts.len() == raw.len() && envelope == Envelope::None {
            raw.clone()
        } else {
            let rows: Vec<usize> = upserts.iter().map(|(i, _)| *i).collect();
            raw.select(&rows)
        };
        if envelope == Envelope::Debezium {
            sub.values = BinaryArray::from_iter(upserts.iter().map(|(_, v)| v.as_deref()));
        }
        sub
    });
    let deletes = (!deletes.is_empty()).then(|| {
        let rows: Vec<usize> = deletes.iter().map(|(i, _)| *i).collect();
        let mut sub = raw.select(&rows);
        sub.values = BinaryArray::from_iter_values(deletes.iter().map(|(_, v)| v.as_slice()));
        sub
    });
    Split {
        upserts,
        deletes,
        bad,
    }
}

/// A change read from a Debezium event: the row to keep, or the row (holding the key)
/// to delete.
enum Change {
    Upsert(Vec<u8>),
    Delete(Vec<u8>),
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
    #[serde(borrow, default)]
    op: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    before: Option<&'a RawValue>,
    #[serde(borrow, default)]
    after: Option<&'a RawValue>,
    #[serde(default)]
    ts_ms: Option<i64>,
    #[serde(default)]
    source: Option<Source>,
}

#[derive(Deserialize)]
struct Source {
    #[serde(default)]
    ts_ms: Option<i64>,
}

fn debezium(value: &[u8]) -> Result<Change, ChangeError> {
    let mut event: Event<'_> = serde_json::from_slice(value).map_err(ChangeError::NotDebezium)?;
    if let Some(payload) = event.payload {
        event = serde_json::from_str(payload.get()).map_err(ChangeError::NotDebezium)?;
    }
    let ts = event.source.and_then(|s| s.ts_ms).or(event.ts_ms);
    let op = event.op.ok_or(ChangeError::NoOp)?;
    match op.as_ref() {
        "c" | "r" | "u" => {
            let after = event
                .after
                .ok_or_else(|| ChangeError::NoAfter(op.to_string()))?;
            Ok(Change::Upsert(with_source_ts(after.get(), ts)?))
        }
        "d" => {
            let before = event.before.ok_or(ChangeError::NoBefore)?;
            object(before.get())?;
            Ok(Change::Delete(before.get().as_bytes().to_vec()))
        }
        "t" => Err(ChangeError::Truncate),
        other => Err(ChangeError::UnknownOp(other.to_string())),
    }
}

fn object(json: &str) -> Result<&str, ChangeError> {
    let inner = json.trim();
    if inner.starts_with('{') && inner.ends_with('}') {
        Ok(inner)
    } else {
        Err(ChangeError::NotObject(inner.chars().take(60).collect()))
    }
}

/// `row` with [`SOURCE_TS_FIELD`] first (when there is a timestamp).
fn with_source_ts(row: &str, ts: Option<i64>) -> Result<Vec<u8>, ChangeError> {
    let inner = object(row)?;
    let Some(ts) = ts else {
        return Ok(inner.as_bytes().to_vec());
    };
    let rest = inner[1..].trim_start();
    let sep = if rest.starts_with('}') { "" } else { "," };
    Ok(format!("{{\"{SOURCE_TS_FIELD}\":{ts}{sep}{rest}").into_bytes())
}

/// The JSON object holding a tombstone's key columns.
fn tombstone_key(key: Option<&[u8]>, columns: &[KeyColumn]) -> Result<Vec<u8>, ChangeError> {
    let key = key.ok_or(ChangeError::TombstoneWithoutKey)?;
    let text = std::str::from_utf8(key).map_err(|_| ChangeError::KeyNotUtf8)?;
    let trimmed = text.trim();
    if trimmed.starts_with('{') {
        #[derive(Deserialize)]
        struct Wrapped<'a> {
            #[serde(borrow)]
            payload: Option<&'a RawValue>,
        }
        if let Ok(Wrapped {
            payload: Some(payload),
        }) = serde_json::from_str::<Wrapped<'_>>(trimmed)
            && payload.get().trim_start().starts_with('{')
        {
            return Ok(payload.get().as_bytes().to_vec());
        }
        return Ok(trimmed.as_bytes().to_vec());
    }
    match columns {
        [one] => {
            let value = if one.text {
                serde_json::Value::String(text.to_string()).to_string()
            } else {
                trimmed.to_string()
            };
            let name = serde_json::Value::String(one.name.clone()).to_string();
            Ok(format!("{{{name}:{value}}}").into_bytes())
        }
        _ => Err(ChangeError::KeyNotObject {
            key: text.chars().take(60).collect(),
            columns: columns.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use sluice_kafka::RawBatchBuilder;

    fn batch(records: &[(Option<&str>, Option<&str>)]) -> RawBatch {
        let mut b = RawBatchBuilder::new(records.len(), false);
        let topic: std::sync::Arc<str> = "t".into();
        for (i, (k, v)) in records.iter().enumerate() {
            b.push(
                &topic,
                0,
                i as i64,
                Some(1_000),
                0,
                k.map(str::as_bytes),
                v.map(str::as_bytes),
                Vec::new,
            );
        }
        b.finish()
    }

    fn values(b: &RawBatch) -> Vec<String> {
        (0..b.len())
            .map(|i| String::from_utf8(b.value(i).unwrap().to_vec()).unwrap())
            .collect()
    }

    fn id() -> Vec<KeyColumn> {
        vec![KeyColumn {
            name: "id".into(),
            text: false,
        }]
    }

    #[test]
    fn debezium_ops_become_upserts_and_deletes_and_the_rest_dead_letters() {
        let raw = batch(&[
            (
                None,
                Some(r#"{"op":"c","after":{"id":1,"v":"a"},"source":{"ts_ms":5},"ts_ms":9}"#),
            ),
            (
                None,
                Some(
                    r#"{"schema":{},"payload":{"op":"u","before":{"id":1},"after":{"id":1,"v":"b"},"ts_ms":7}}"#,
                ),
            ),
            (
                None,
                Some(r#"{"op":"d","before":{"id":1,"v":"b"},"after":null}"#),
            ),
            (None, Some(r#"{"op":"r","after":{}}"#)),
            (None, Some(r#"{"op":"t"}"#)),
            (None, Some(r#"{"op":"d","before":null}"#)),
            (None, Some("nope")),
            (Some(r#"{"id":1}"#), None),
        ]);
        let s = split(&raw, Envelope::Debezium, &id());
        let up = s.upserts.unwrap();
        assert_eq!(up.offsets, vec![0, 1, 3]);
        assert_eq!(
            values(&up),
            vec![
                r#"{"_source_ts_ms":5,"id":1,"v":"a"}"#,
                r#"{"_source_ts_ms":7,"id":1,"v":"b"}"#,
                r#"{}"#,
            ]
        );
        let del = s.deletes.unwrap();
        assert_eq!(del.offsets, vec![2, 7]);
        assert_eq!(values(&del), vec![r#"{"id":1,"v":"b"}"#, r#"{"id":1}"#]);
        let bad: Vec<usize> = s.bad.iter().map(|d| d.index).collect();
        assert_eq!(bad, vec![4, 5, 6]);
        assert!(s.bad.iter().all(|d| d.kind == ErrorKind::BadChange));
    }

    #[test]
    fn tombstone_keys_are_read_as_objects_payloads_or_text() {
        let raw = batch(&[
            (Some("42"), None),
            (Some(r#"{"schema":{},"payload":{"id":3}}"#), None),
            (None, None),
            (Some("k-1"), Some(r#"{"id":"k-1"}"#)),
        ]);
        let s = split(&raw, Envelope::None, &id());
        assert_eq!(
            values(&s.deletes.unwrap()),
            vec![r#"{"id":42}"#, r#"{"id":3}"#]
        );
        assert_eq!(s.upserts.unwrap().offsets, vec![3]);
        assert_eq!(s.bad.len(), 1);
        let text = vec![KeyColumn {
            name: "sku".into(),
            text: true,
        }];
        let whole = batch(&[
            (Some("1"), Some(r#"{"id":1}"#)),
            (Some("2"), Some(r#"{"id":2}"#)),
        ]);
        let s = split(&whole, Envelope::None, &id());
        let up = s.upserts.unwrap();
        assert_eq!(
            (up.offsets.clone(), values(&up)),
            (
                vec![0, 1],
                vec![r#"{"id":1}"#.to_string(), r#"{"id":2}"#.to_string()]
            )
        );
        assert!(s.deletes.is_none() && s.bad.is_empty());
        let s = split(&batch(&[(Some("a\"b"), None)]), Envelope::None, &text);
        assert_eq!(values(&s.deletes.unwrap()), vec![r#"{"sku":"a\"b"}"#]);
    }
}
