//! The chaos run's producer: records at a steady rate for as long as the run lasts, every one
//! remembered with the position the broker acknowledged, so the checks compare the tables
//! with what was really written. Every 101st record is not JSON (a dead letter), every 211th
//! is ten minutes old (late for every window).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// What a record is meant to test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A valid, on-time record.
    Good,
    /// Bytes that are not JSON: a dead letter.
    Bad,
    /// Valid, ten minutes behind: listed in the late table, in no window.
    Late,
    /// The last record of each partition, an hour ahead: closes every earlier window.
    Closer,
}

/// One acknowledged record.
#[derive(Clone, Debug)]
pub struct Sent {
    /// Its id (its `id` field).
    pub id: i64,
    /// What it is.
    pub kind: Kind,
    /// Where the broker put it.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Key bytes.
    pub key: Vec<u8>,
    /// Value bytes.
    pub value: Vec<u8>,
    /// Event time (ms).
    pub ts: i64,
    /// The `k` field.
    pub k: String,
    /// The `v` field.
    pub v: i64,
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("a time")
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// The record with id `id` at wall time `now` (ms); old ones only when `late` (see [`run`]).
fn record(id: i64, now: i64, late: bool) -> (Kind, String, Vec<u8>, i64) {
    let k = format!("k{}", id % 23);
    if id % 101 == 7 {
        return (
            Kind::Bad,
            k,
            format!("\u{fffd} not json #{id}").into_bytes(),
            now,
        );
    }
    let (kind, ts) = if id % 211 == 100 && late {
        (Kind::Late, now - 600_000)
    } else {
        (Kind::Good, now)
    };
    let value = format!(
        r#"{{"id":{id},"k":"{k}","v":{},"ts":"{}"}}"#,
        id % 100,
        rfc3339(ts)
    );
    (kind, k, value.into_bytes(), ts)
}

/// A producer for the chaos broker that never gives up on a record (the broker restarts).
pub fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("message.timeout.ms", "0")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer")
}

/// Produces `rate` records a second to `topic` until `stop`; returns every acknowledged
/// record, in order of id. Old records start at id `late_from` and once `clock_committed` is
/// set: before a window clock is committed, a restarted service replays its backlog with no
/// clock, and whether an old record is late then depends on how the first fetches interleave
/// the partitions (docs/windows.md), which one uninterrupted run does not reproduce.
pub async fn run(
    brokers: String,
    topic: String,
    rate: u32,
    late_from: i64,
    clock_committed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> Vec<Sent> {
    let producer = producer(&brokers);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let collector = tokio::spawn(async move {
        let mut sent: Vec<Sent> = Vec::new();
        while let Some((id, kind, k, key, value, ts, fut)) = rx.recv().await {
            let fut: rdkafka::producer::DeliveryFuture = fut;
            let d = fut
                .await
                .expect("the delivery future")
                .unwrap_or_else(|(e, _)| panic!("record {id} was not delivered: {e}"));
            sent.push(Sent {
                id,
                kind,
                partition: d.partition,
                offset: d.offset,
                key,
                value,
                ts,
                v: id % 100,
                k,
            });
        }
        sent
    });
    let per_tick = (rate / 50).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut id = 0i64;
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        let now = chrono::Utc::now().timestamp_millis();
        for _ in 0..per_tick {
            let late = id >= late_from && clock_committed.load(Ordering::SeqCst);
            let (kind, k, value, ts) = record(id, now, late);
            let key = k.clone().into_bytes();
            let mut rec = FutureRecord::<[u8], [u8]>::to(&topic)
                .key(key.as_slice())
                .payload(value.as_slice());
            let fut = loop {
                match producer.send_result(rec) {
                    Ok(f) => break f,
                    Err((_, back)) => {
                        rec = back;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            };
            let _ = tx.send((id, kind, k, key.clone(), value.clone(), ts, fut));
            id += 1;
        }
    }
    drop(tx);
    collector.await.expect("the collector")
}

/// One closer per partition, an hour after the last event time.
pub async fn closers(
    brokers: &str,
    topic: &str,
    partitions: i32,
    last_ts: i64,
    first_id: i64,
) -> Vec<Sent> {
    let producer = producer(brokers);
    let mut out = Vec::new();
    for p in 0..partitions {
        let id = first_id + i64::from(p);
        let ts = last_ts + 3_600_000;
        let k = "closer".to_string();
        let value = format!(r#"{{"id":{id},"k":"{k}","v":0,"ts":"{}"}}"#, rfc3339(ts)).into_bytes();
        let d = producer
            .send(
                FutureRecord::<[u8], [u8]>::to(topic)
                    .partition(p)
                    .key(k.as_bytes())
                    .payload(value.as_slice()),
                Duration::from_secs(60),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("closer: {e}"));
        out.push(Sent {
            id,
            kind: Kind::Closer,
            partition: d.partition,
            offset: d.offset,
            key: k.clone().into_bytes(),
            value,
            ts,
            k,
            v: 0,
        });
    }
    out
}
