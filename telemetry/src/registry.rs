//! The process-wide registry every metric records into, and its Prometheus text.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

use crate::Kind;

const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Registry {
    values: BTreeMap<(&'static str, Labels), f64>,
    histograms: BTreeMap<(&'static str, Labels), (Vec<u64>, f64, u64)>,
}

fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(Default::default)
}

fn labels(names: &[&'static str], values: &[&str]) -> Labels {
    names
        .iter()
        .zip(values)
        .map(|(k, v)| (*k, v.to_string()))
        .collect()
}

pub(crate) fn add(name: &'static str, names: &[&'static str], values: &[&str], by: f64) {
    if let Ok(mut r) = registry().lock() {
        *r.values.entry((name, labels(names, values))).or_default() += by;
    }
}

pub(crate) fn set(name: &'static str, names: &[&'static str], values: &[&str], value: f64) {
    if let Ok(mut r) = registry().lock() {
        r.values.insert((name, labels(names, values)), value);
    }
}

pub(crate) fn remove(name: &'static str, names: &[&'static str], values: &[&str]) {
    if let Ok(mut r) = registry().lock() {
        r.values.remove(&(name, labels(names, values)));
    }
}

pub(crate) fn observe(name: &'static str, names: &[&'static str], values: &[&str], seconds: f64) {
    if let Ok(mut r) = registry().lock() {
        let h = r
            .histograms
            .entry((name, labels(names, values)))
            .or_insert_with(|| (vec![0; BUCKETS.len()], 0.0, 0));
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                h.0[i] += 1;
            }
        }
        h.1 += seconds;
        h.2 += 1;
    }
}

pub(crate) fn value(name: &'static str, names: &[&'static str], values: &[&str]) -> Option<f64> {
    let r = registry().lock().ok()?;
    r.values.get(&(name, labels(names, values))).copied()
}

/// Every series of metric `name`: its label values (in the metric's label order) and value.
pub(crate) fn series(name: &'static str) -> Vec<(Vec<String>, f64)> {
    let Ok(r) = registry().lock() else {
        return Vec::new();
    };
    r.values
        .iter()
        .filter(|((n, _), _)| *n == name)
        .map(|((_, l), v)| (l.iter().map(|(_, v)| v.clone()).collect(), *v))
        .collect()
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn label_text(l: &Labels, extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// Every metric of [`crate::spec::ALL`] in Prometheus text format (0.0.4).
pub fn render() -> String {
    let Ok(r) = registry().lock() else {
        return String::new();
    };
    let mut out = String::new();
    for m in crate::spec::ALL {
        let d = m.describe();
        let name = d.name;
        let _ = writeln!(out, "# HELP {name} {}", d.help);
        let _ = writeln!(out, "# TYPE {name} {}", d.kind.as_str());
        if d.kind == Kind::Histogram {
            for ((n, l), (counts, sum, count)) in &r.histograms {
                if *n != name {
                    continue;
                }
                for (b, c) in BUCKETS.iter().zip(counts) {
                    let le = Some(("le", b.to_string()));
                    let _ = writeln!(out, "{name}_bucket{} {c}", label_text(l, le));
                }
                let le = Some(("le", "+Inf".to_string()));
                let _ = writeln!(out, "{name}_bucket{} {count}", label_text(l, le));
                let _ = writeln!(out, "{name}_sum{} {sum}", label_text(l, None));
                let _ = writeln!(out, "{name}_count{} {count}", label_text(l, None));
            }
        } else {
            for ((n, l), v) in &r.values {
                if *n == name {
                    let _ = writeln!(out, "{name}{} {v}", label_text(l, None));
                }
            }
        }
    }
    out
}
