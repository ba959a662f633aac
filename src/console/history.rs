//! The last hour of a running service, sampled from its metrics every [`EVERY`]: records and
//! bytes received per pipeline (as rates) and consumer lag per partition, for the console's
//! plots.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_telemetry::spec;
use tokio_util::sync::CancellationToken;

/// How often the metrics are sampled.
pub const EVERY: Duration = Duration::from_secs(5);
/// Samples kept: one hour.
const KEEP: usize = 720;

/// (ms since the epoch, value) samples, oldest first.
type Samples = VecDeque<(i64, f64)>;

#[derive(Default)]
struct Inner {
    /// Per pipeline: records received so far, and bytes.
    records: BTreeMap<String, Samples>,
    bytes: BTreeMap<String, Samples>,
    /// Per (pipeline, topic, partition): lag.
    lag: BTreeMap<(String, String, i32), Samples>,
}

/// The sampled history, shared by the sampler and the HTTP handlers.
#[derive(Clone, Default)]
pub struct History(Arc<Mutex<Inner>>, Arc<Vec<String>>);

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History").finish_non_exhaustive()
    }
}

fn push(list: &mut Samples, at: i64, v: f64) {
    if list.len() == KEEP {
        list.pop_front();
    }
    list.push_back((at, v));
}

impl History {
    /// Starts sampling until `cancel`. `pipelines` count from zero at the first sample, so
    /// that the records they receive before their counters first appear show as a rate.
    pub fn spawn(pipelines: Vec<String>, cancel: CancellationToken) -> Self {
        let history = Self(Arc::default(), Arc::new(pipelines));
        let h = history.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tick.tick() => h.sample(chrono::Utc::now().timestamp_millis()),
                }
            }
        });
        history
    }

    /// Takes one sample of the metrics at `at` (ms).
    pub fn sample(&self, at: i64) {
        let Ok(mut inner) = self.0.lock() else {
            return;
        };
        let totals = |series: Vec<(Vec<String>, f64)>| {
            let mut t: BTreeMap<String, f64> = self.1.iter().map(|p| (p.clone(), 0.0)).collect();
            for (labels, v) in series {
                if let Some(p) = labels.first() {
                    t.insert(p.clone(), v);
                }
            }
            t
        };
        for (p, v) in totals(spec::RECORDS_IN.series()) {
            push(inner.records.entry(p).or_default(), at, v);
        }
        for (p, v) in totals(spec::BYTES_IN.series()) {
            push(inner.bytes.entry(p).or_default(), at, v);
        }
        for (labels, v) in spec::CONSUMER_LAG_RECORDS.series() {
            if let [p, t, part] = labels.as_slice()
                && let Ok(part) = part.parse::<i32>()
            {
                let key = (p.clone(), t.clone(), part);
                push(inner.lag.entry(key).or_default(), at, v);
            }
        }
    }

    /// (ms, records/s, bytes/s) between consecutive samples of `pipeline`, oldest first.
    pub fn rates(&self, pipeline: &str) -> Vec<(i64, f64, f64)> {
        let Ok(inner) = self.0.lock() else {
            return Vec::new();
        };
        let per_second = |s: Option<&Samples>| -> Vec<(i64, f64)> {
            let Some(s) = s else { return Vec::new() };
            s.iter()
                .zip(s.iter().skip(1))
                .map(|(a, b)| {
                    let secs = ((b.0 - a.0) as f64 / 1000.0).max(0.001);
                    (b.0, ((b.1 - a.1) / secs).max(0.0))
                })
                .collect()
        };
        let records = per_second(inner.records.get(pipeline));
        // Both series are sampled together, so their times match; a missing one reads 0.
        let bytes: std::collections::HashMap<i64, f64> =
            per_second(inner.bytes.get(pipeline)).into_iter().collect();
        records
            .into_iter()
            .map(|(at, r)| (at, r, bytes.get(&at).copied().unwrap_or(0.0)))
            .collect()
    }

    /// Lag samples of one partition, oldest first.
    pub fn lag(&self, pipeline: &str, topic: &str, partition: i32) -> Vec<(i64, f64)> {
        let Ok(inner) = self.0.lock() else {
            return Vec::new();
        };
        let key = (pipeline.to_string(), topic.to_string(), partition);
        inner
            .lag
            .get(&key)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_consecutive_samples() {
        let h = History(Arc::default(), Arc::new(vec!["history-test".into()]));
        h.sample(5_000);
        spec::RECORDS_IN.inc(["history-test"], 100);
        spec::BYTES_IN.inc(["history-test"], 1000);
        h.sample(10_000);
        spec::RECORDS_IN.inc(["history-test"], 50);
        spec::BYTES_IN.inc(["history-test"], 2000);
        h.sample(15_000);
        // Counted from zero before the counter first appeared.
        assert_eq!(
            h.rates("history-test"),
            vec![(10_000, 20.0, 200.0), (15_000, 10.0, 400.0)]
        );
        assert!(h.rates("nobody").is_empty());
    }
}
