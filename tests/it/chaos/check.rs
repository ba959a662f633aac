//! The end of a chaos run: the tables against what the producer was acknowledged. Each check
//! returns the first difference it finds.

use std::collections::{BTreeMap, HashMap};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int32Type, Int64Type, TimestampMicrosecondType};
use arrow::record_batch::RecordBatch;

use super::produce::{Kind, Sent};

/// A column of `b` as i64 values (integers of any width, timestamps as microseconds).
fn longs(b: &RecordBatch, name: &str) -> Vec<i64> {
    let c = b
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"));
    match c.data_type() {
        DataType::Int32 => c
            .as_primitive::<Int32Type>()
            .iter()
            .map(|v| i64::from(v.unwrap_or(-1)))
            .collect(),
        DataType::Timestamp(_, _) => c
            .as_primitive::<TimestampMicrosecondType>()
            .iter()
            .map(|v| v.unwrap_or(-1))
            .collect(),
        _ => {
            let c = arrow::compute::cast(c, &DataType::Int64).expect("cast to long");
            c.as_primitive::<Int64Type>()
                .iter()
                .map(|v| v.unwrap_or(-1))
                .collect()
        }
    }
}

fn strings(b: &RecordBatch, name: &str) -> Vec<String> {
    let c = b
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"));
    let c = arrow::compute::cast(c, &DataType::Utf8).expect("cast to text");
    c.as_string::<i32>()
        .iter()
        .map(|v| v.unwrap_or("").to_string())
        .collect()
}

fn binaries(b: &RecordBatch, name: &str) -> Vec<Option<Vec<u8>>> {
    let c = b
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"));
    let c = arrow::compute::cast(c, &DataType::Binary).expect("cast to binary");
    c.as_binary::<i32>()
        .iter()
        .map(|v| v.map(<[u8]>::to_vec))
        .collect()
}

/// The first difference between two sorted lists, described.
fn first_difference<T: std::fmt::Debug + PartialEq>(
    what: &str,
    got: &[T],
    want: &[T],
) -> Result<(), String> {
    if got == want {
        return Ok(());
    }
    let i = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    Err(format!(
        "{what}: {} rows, {} expected; first difference at {i}: got {:?}, expected {:?}",
        got.len(),
        want.len(),
        got.get(i),
        want.get(i)
    ))
}

/// Events: every valid record (good, late, closer) exactly once, with its own id.
pub fn events(batches: &[RecordBatch], sent: &[Sent]) -> Result<usize, String> {
    let mut got: Vec<(i32, i64, i64)> = Vec::new();
    for b in batches {
        let (p, o, id) = (
            longs(b, "_kafka_partition"),
            longs(b, "_kafka_offset"),
            longs(b, "id"),
        );
        got.extend((0..b.num_rows()).map(|i| (p[i] as i32, o[i], id[i])));
    }
    got.sort_unstable();
    let mut want: Vec<(i32, i64, i64)> = sent
        .iter()
        .filter(|s| s.kind != Kind::Bad)
        .map(|s| (s.partition, s.offset, s.id))
        .collect();
    want.sort_unstable();
    first_difference("events (partition, offset, id)", &got, &want)?;
    Ok(got.len())
}

/// Dead letters: exactly the records that are not JSON, with their bytes.
pub fn dead_letters(batches: &[RecordBatch], sent: &[Sent]) -> Result<usize, String> {
    let mut got: Vec<(i32, i64, Option<Vec<u8>>)> = Vec::new();
    for b in batches {
        let (p, o, v) = (
            longs(b, "partition"),
            longs(b, "offset"),
            binaries(b, "value"),
        );
        got.extend((0..b.num_rows()).map(|i| (p[i] as i32, o[i], v[i].clone())));
    }
    got.sort();
    let mut want: Vec<(i32, i64, Option<Vec<u8>>)> = sent
        .iter()
        .filter(|s| s.kind == Kind::Bad)
        .map(|s| (s.partition, s.offset, Some(s.value.clone())))
        .collect();
    want.sort();
    first_difference("dead letters (partition, offset, value)", &got, &want)?;
    Ok(got.len())
}

/// The late table: exactly the ten-minute-old records.
pub fn late(batches: &[RecordBatch], sent: &[Sent]) -> Result<usize, String> {
    let mut got: Vec<(i32, i64)> = Vec::new();
    for b in batches {
        let (p, o) = (longs(b, "partition"), longs(b, "offset"));
        got.extend((0..b.num_rows()).map(|i| (p[i] as i32, o[i])));
    }
    got.sort_unstable();
    let mut want: Vec<(i32, i64)> = sent
        .iter()
        .filter(|s| s.kind == Kind::Late)
        .map(|s| (s.partition, s.offset))
        .collect();
    want.sort_unstable();
    first_difference("late records (partition, offset)", &got, &want)?;
    Ok(got.len())
}

/// What one uninterrupted run gives under docs/windows.md's rules: every on-time record in
/// its 10 s tumbling window per `k`, for the windows the closers closed (all but theirs).
pub fn oracle(sent: &[Sent], size_ms: i64) -> Vec<(i64, String, i64, i64)> {
    let mut windows: BTreeMap<(i64, String), (i64, i64)> = BTreeMap::new();
    for s in sent.iter().filter(|s| s.kind == Kind::Good) {
        let start = s.ts.div_euclid(size_ms) * size_ms;
        let e = windows.entry((start * 1000, s.k.clone())).or_default();
        e.0 += 1;
        e.1 += s.v;
    }
    windows
        .into_iter()
        .map(|((w, k), (n, t))| (w, k, n, t))
        .collect()
}

/// The aggregate table against the oracle, row for row (the closers' own windows are open).
pub fn aggregates(batches: &[RecordBatch], sent: &[Sent], size_ms: i64) -> Result<usize, String> {
    let mut got: Vec<(i64, String, i64, i64)> = Vec::new();
    for b in batches {
        let (w, k, n, t) = (
            longs(b, "window_start"),
            strings(b, "k"),
            longs(b, "n"),
            longs(b, "total"),
        );
        got.extend((0..b.num_rows()).map(|i| (w[i], k[i].clone(), n[i], t[i])));
    }
    got.sort();
    let want = oracle(sent, size_ms);
    first_difference("aggregate rows (window_start, k, n, total)", &got, &want)?;
    Ok(got.len())
}

/// (partition, offset, key, value) of an archived record.
type ArchivedRow = (i32, i64, Option<Vec<u8>>, Option<Vec<u8>>);

/// The archive: every record of the log once, byte for byte (key and value).
pub fn archive(batches: &[RecordBatch], sent: &[Sent]) -> Result<usize, String> {
    let mut got: Vec<ArchivedRow> = Vec::new();
    for b in batches {
        let (p, o, k, v) = (
            longs(b, "partition"),
            longs(b, "offset"),
            binaries(b, "key"),
            binaries(b, "value"),
        );
        got.extend((0..b.num_rows()).map(|i| (p[i] as i32, o[i], k[i].clone(), v[i].clone())));
    }
    got.sort();
    let mut want: Vec<ArchivedRow> = sent
        .iter()
        .map(|s| {
            (
                s.partition,
                s.offset,
                Some(s.key.clone()),
                Some(s.value.clone()),
            )
        })
        .collect();
    want.sort();
    first_difference("archive (partition, offset, key, value)", &got, &want)?;
    Ok(got.len())
}

/// The log is dense: each partition's acknowledged offsets are 0..n with no gap (so comparing
/// with what was acknowledged is comparing with the whole log).
pub fn dense(sent: &[Sent]) -> Result<HashMap<i32, i64>, String> {
    let mut by_p: HashMap<i32, Vec<i64>> = HashMap::new();
    for s in sent {
        by_p.entry(s.partition).or_default().push(s.offset);
    }
    let mut ends = HashMap::new();
    for (p, mut offs) in by_p {
        offs.sort_unstable();
        if let Some(i) = offs.iter().enumerate().position(|(i, o)| *o != i as i64) {
            return Err(format!(
                "partition {p}: acknowledged offsets have a gap or a repeat at {i}: {:?}",
                &offs[i.saturating_sub(2)..(i + 2).min(offs.len())]
            ));
        }
        ends.insert(p, offs.len() as i64);
    }
    Ok(ends)
}
