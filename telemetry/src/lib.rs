//! Telemetry: every metric sluice exports is defined once in [`spec`] (name, kind, help,
//! label names) and recorded through its typed handle: a [`Counter`] only counts, a
//! [`Gauge`] only is set, a [`Histogram`] only observes, and each takes exactly its label
//! values, so a call site cannot misspell a name or forget a label. The process-wide
//! registry renders in Prometheus text format for `/metrics`; [`health`] holds the readiness
//! of the components behind `/ready`.
//!
//! Names follow `sluice_<noun>_<unit>_total`; labels are bounded (pipeline, table, topic,
//! partition, reason, destination, result).

pub mod events;
pub mod health;
pub mod recent;
mod registry;
pub mod spec;

pub use registry::render;

/// What a metric measures, as Prometheus types it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets (seconds).
    Histogram,
}

impl Kind {
    /// The Prometheus type name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// A metric's definition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Description {
    /// The exported name.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// What it counts, for a person (Prometheus `# HELP`).
    pub help: &'static str,
    /// Its label names, in the order call sites give their values.
    pub labels: &'static [&'static str],
}

/// A counter with `N` labels.
#[derive(Debug)]
pub struct Counter<const N: usize> {
    name: &'static str,
    help: &'static str,
    labels: [&'static str; N],
}

/// A gauge with `N` labels.
#[derive(Debug)]
pub struct Gauge<const N: usize> {
    name: &'static str,
    help: &'static str,
    labels: [&'static str; N],
}

/// A histogram of seconds with `N` labels.
#[derive(Debug)]
pub struct Histogram<const N: usize> {
    name: &'static str,
    help: &'static str,
    labels: [&'static str; N],
}

impl<const N: usize> Counter<N> {
    /// Defines a counter (see [`spec`]).
    pub const fn new(name: &'static str, labels: [&'static str; N], help: &'static str) -> Self {
        Self { name, help, labels }
    }
    /// Adds `by` to the series with these label values.
    pub fn inc(&self, values: [&str; N], by: u64) {
        registry::add(self.name, &self.labels, &values, by as f64);
    }
    /// The series' value now (for tests and the demo).
    pub fn value(&self, values: [&str; N]) -> Option<f64> {
        registry::value(self.name, &self.labels, &values)
    }
    /// Every series: its label values and its value (for the status API).
    pub fn series(&self) -> Vec<(Vec<String>, f64)> {
        registry::series(self.name)
    }
}

impl<const N: usize> Gauge<N> {
    /// Defines a gauge (see [`spec`]).
    pub const fn new(name: &'static str, labels: [&'static str; N], help: &'static str) -> Self {
        Self { name, help, labels }
    }
    /// Sets the series with these label values.
    pub fn set(&self, values: [&str; N], value: f64) {
        registry::set(self.name, &self.labels, &values, value);
    }
    /// The series' value now (for tests).
    pub fn value(&self, values: [&str; N]) -> Option<f64> {
        registry::value(self.name, &self.labels, &values)
    }
    /// Every series: its label values and its value (for the status API).
    pub fn series(&self) -> Vec<(Vec<String>, f64)> {
        registry::series(self.name)
    }
    /// Drops the series with these label values (what it measured is no longer here).
    pub fn remove(&self, values: [&str; N]) {
        registry::remove(self.name, &self.labels, &values);
    }
}

impl<const N: usize> Histogram<N> {
    /// Defines a histogram (see [`spec`]).
    pub const fn new(name: &'static str, labels: [&'static str; N], help: &'static str) -> Self {
        Self { name, help, labels }
    }
    /// Records one observation, in seconds.
    pub fn observe(&self, values: [&str; N], seconds: f64) {
        registry::observe(self.name, &self.labels, &values, seconds);
    }
}

/// Anything [`spec::ALL`] lists.
pub trait Described: Sync {
    /// The definition.
    fn describe(&'static self) -> Description;
}

impl<const N: usize> Described for Counter<N> {
    fn describe(&'static self) -> Description {
        Description {
            name: self.name,
            kind: Kind::Counter,
            help: self.help,
            labels: &self.labels,
        }
    }
}

impl<const N: usize> Described for Gauge<N> {
    fn describe(&'static self) -> Description {
        Description {
            name: self.name,
            kind: Kind::Gauge,
            help: self.help,
            labels: &self.labels,
        }
    }
}

impl<const N: usize> Described for Histogram<N> {
    fn describe(&'static self) -> Description {
        Description {
            name: self.name,
            kind: Kind::Histogram,
            help: self.help,
            labels: &self.labels,
        }
    }
}
