//! Readiness of the components behind `/ready`: a pipeline or a tierer registers when it
//! starts and is ready once its tables are open and it has joined its group.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

fn readiness() -> &'static Mutex<BTreeMap<String, bool>> {
    static R: OnceLock<Mutex<BTreeMap<String, bool>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// A component that is starting (`pipeline <name>`, `tiering <topic>`): not ready until
/// [`mark_ready`].
pub fn register_component(name: &str) {
    if let Ok(mut r) = readiness().lock() {
        r.entry(name.to_string()).or_insert(false);
    }
}

/// A component is ready: a pipeline has its tables open and has joined its consumer group
/// (its assignment may be empty: a standby is ready), a tierer has its archive table open.
pub fn mark_ready(name: &str) {
    if let Ok(mut r) = readiness().lock() {
        r.insert(name.to_string(), true);
    }
}

/// The readiness name of a pipeline.
pub fn pipeline_component(pipeline: &str) -> String {
    format!("pipeline {pipeline}")
}

/// The readiness name of a tiered topic.
pub fn tiering_component(topic: &str) -> String {
    format!("tiering {topic}")
}

/// True when every registered component is ready (and there is at least one).
pub fn all_ready() -> bool {
    readiness()
        .lock()
        .map(|r| !r.is_empty() && r.values().all(|v| *v))
        .unwrap_or(false)
}
