//! What happened lately, for the console and `/api/status`: each pipeline's last commits
//! (with the duration of their flush), its latest dead letters and late records, and each
//! table's last compaction and vacuum. A few entries each, in memory, since the process
//! started; the tables hold everything.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, OnceLock};

/// Entries kept per list.
pub const KEEP: usize = 10;

/// One table commit of a flush.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CommitEntry {
    /// The table.
    pub table: String,
    /// The version the commit made.
    pub version: i64,
    /// Rows added.
    pub rows: u64,
    /// Data files added.
    pub files: usize,
    /// When it landed (ms since the epoch).
    pub at_ms: i64,
    /// How long the whole flush took to commit (all its tables), once it is done.
    pub flush_ms: Option<u64>,
}

/// One record diverted from the events table (a dead letter) or listed as late.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DivertedEntry {
    /// The reason (a dead letter's kind) or, for a late record, its aggregate table.
    pub reason: String,
    /// Where the record is in Kafka.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// What was wrong (a dead letter's error; for a late record, the window it missed).
    pub detail: String,
    /// When it was seen (ms since the epoch).
    pub at_ms: i64,
}

/// One maintenance run on a table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MaintenanceEntry {
    /// When the last compaction of the table ended (ms since the epoch).
    pub compacted_at_ms: Option<i64>,
    /// Files its last compaction removed and added.
    pub compacted_files: Option<(u64, u64)>,
    /// When the last vacuum of the table ended.
    pub vacuumed_at_ms: Option<i64>,
    /// Files its last vacuum deleted.
    pub vacuumed_files: Option<u64>,
}

#[derive(Default)]
struct Recent {
    commits: BTreeMap<String, VecDeque<CommitEntry>>,
    dead: BTreeMap<String, VecDeque<DivertedEntry>>,
    late: BTreeMap<String, VecDeque<DivertedEntry>>,
    maintenance: BTreeMap<String, MaintenanceEntry>,
}

fn recent() -> &'static Mutex<Recent> {
    static R: OnceLock<Mutex<Recent>> = OnceLock::new();
    R.get_or_init(Default::default)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn push<T>(list: &mut VecDeque<T>, entry: T) {
    if list.len() == KEEP {
        list.pop_front();
    }
    list.push_back(entry);
}

/// A table commit of `pipeline` landed.
pub fn commit(pipeline: &str, table: &str, version: i64, rows: u64, files: usize) {
    if let Ok(mut r) = recent().lock() {
        let entry = CommitEntry {
            table: table.to_string(),
            version,
            rows,
            files,
            at_ms: now_ms(),
            flush_ms: None,
        };
        push(r.commits.entry(pipeline.to_string()).or_default(), entry);
    }
}

/// `pipeline`'s flush committed every table in `took`: its commits get the duration.
pub fn flush_done(pipeline: &str, took: std::time::Duration) {
    if let Ok(mut r) = recent().lock()
        && let Some(list) = r.commits.get_mut(pipeline)
    {
        for c in list.iter_mut().filter(|c| c.flush_ms.is_none()) {
            c.flush_ms = Some(took.as_millis() as u64);
        }
    }
}

/// A record of `pipeline` went to the dead-letter table (buffered; it commits with its flush).
pub fn dead_letter(
    pipeline: &str,
    topic: &str,
    partition: i32,
    offset: i64,
    reason: &str,
    error: &str,
) {
    let entry = DivertedEntry {
        reason: reason.to_string(),
        topic: topic.to_string(),
        partition,
        offset,
        detail: error.chars().take(300).collect(),
        at_ms: now_ms(),
    };
    if let Ok(mut r) = recent().lock() {
        push(r.dead.entry(pipeline.to_string()).or_default(), entry);
    }
}

/// A record of `pipeline` arrived after every window of aggregate `table` it belongs to had
/// closed (`detail` names the window).
pub fn late(pipeline: &str, table: &str, topic: &str, partition: i32, offset: i64, detail: String) {
    let entry = DivertedEntry {
        reason: table.to_string(),
        topic: topic.to_string(),
        partition,
        offset,
        detail,
        at_ms: now_ms(),
    };
    if let Ok(mut r) = recent().lock() {
        push(r.late.entry(pipeline.to_string()).or_default(), entry);
    }
}

/// A compaction of `table` ended, having removed and added these many files.
pub fn compacted(table: &str, removed: u64, added: u64) {
    if let Ok(mut r) = recent().lock() {
        let m = r.maintenance.entry(table.to_string()).or_default();
        m.compacted_at_ms = Some(now_ms());
        m.compacted_files = Some((removed, added));
    }
}

/// A vacuum of `table` ended, having deleted these many files.
pub fn vacuumed(table: &str, deleted: u64) {
    if let Ok(mut r) = recent().lock() {
        let m = r.maintenance.entry(table.to_string()).or_default();
        m.vacuumed_at_ms = Some(now_ms());
        m.vacuumed_files = Some(deleted);
    }
}

/// `pipeline`'s last commits, oldest first.
pub fn commits(pipeline: &str) -> Vec<CommitEntry> {
    list(|r| r.commits.get(pipeline))
}

/// `pipeline`'s latest dead letters, oldest first.
pub fn dead_letters(pipeline: &str) -> Vec<DivertedEntry> {
    list(|r| r.dead.get(pipeline))
}

/// `pipeline`'s latest late records, oldest first.
pub fn late_records(pipeline: &str) -> Vec<DivertedEntry> {
    list(|r| r.late.get(pipeline))
}

/// `table`'s last maintenance.
pub fn maintenance(table: &str) -> MaintenanceEntry {
    recent()
        .lock()
        .ok()
        .and_then(|r| r.maintenance.get(table).cloned())
        .unwrap_or_default()
}

fn list<T: Clone>(get: impl Fn(&Recent) -> Option<&VecDeque<T>>) -> Vec<T> {
    recent()
        .lock()
        .ok()
        .and_then(|r| get(&r).map(|l| l.iter().cloned().collect()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_entries_and_gives_a_flush_its_duration() {
        for v in 0..15 {
            commit("recent-test", "events", v, 10, 1);
        }
        flush_done("recent-test", std::time::Duration::from_millis(42));
        commit("recent-test", "events", 15, 3, 1);
        let c = commits("recent-test");
        assert_eq!(c.len(), KEEP);
        assert_eq!(c.first().map(|c| c.version), Some(6));
        assert_eq!(c[KEEP - 2].flush_ms, Some(42));
        assert_eq!(c[KEEP - 1].flush_ms, None, "its flush is still committing");
        assert!(commits("another").is_empty());
    }
}
