//! The librdkafka settings of each kind of client sluice makes. The user's `[kafka] options`
//! are applied last, so they can override any of these (secrets among them: never log a
//! [`ClientConfig`]).

use std::collections::BTreeMap;

use rdkafka::ClientConfig;

/// Where the cluster is and how to reach it: what every client needs.
#[derive(Clone)]
pub struct Connection {
    /// Bootstrap servers, comma separated.
    pub brokers: String,
    /// The consumer group (group members use it; readers derive theirs from it).
    pub group_id: String,
    /// librdkafka settings passed through (`security.protocol`, `sasl.*`, `ssl.*`, tuning).
    pub options: BTreeMap<String, String>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The options may hold passwords.
        f.debug_struct("Connection")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .finish_non_exhaustive()
    }
}

impl From<&sluice_config::KafkaConfig> for Connection {
    fn from(k: &sluice_config::KafkaConfig) -> Self {
        Self {
            brokers: k.brokers.clone(),
            group_id: k.group_id.clone(),
            options: k.options.clone(),
        }
    }
}

/// Settings shared by the consuming clients: no automatic commits (the tables hold the
/// progress), committed transactions only, and large fetches.
fn consuming(brokers: &str, group: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.max.bytes", "52428800")
        .set("queued.max.messages.kbytes", "65536")
        // When the owner is slower than the fetcher, the prefetch queue fills and librdkafka
        // pauses fetching for this long (1 s by default): the queue then drains and the owner
        // sits idle. A short pause keeps it fed (measured in bench/README.md).
        .set("fetch.queue.backoff.ms", "20")
        .set("isolation.level", "read_committed");
    c
}

/// This process as a group member's client id: `sluice-<host>-<pid>`.
pub fn instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!("sluice-{host}-{}", std::process::id())
}

/// A consumer-group member: cooperative rebalancing, and a partition without a committed
/// position starts at the earliest record (the pipeline assigns explicit offsets anyway).
pub fn group_member(conn: &Connection) -> ClientConfig {
    let mut c = consuming(&conn.brokers, &conn.group_id);
    c.set("auto.offset.reset", "earliest")
        // Names the instance in the group's description (`sluice status`: who owns what).
        .set("client.id", instance_id())
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", "30000")
        .set("max.poll.interval.ms", "300000");
    with_options(c, &conn.options, |_| true)
}

/// A reader of assigned partitions in group `group` (no membership, no commits): it reports
/// the end of a partition, and a position below the log start as an error instead of jumping.
pub fn range_reader(conn: &Connection, group: &str) -> ClientConfig {
    let mut c = consuming(&conn.brokers, group);
    c.set("auto.offset.reset", "error")
        .set("enable.partition.eof", "true");
    with_options(c, &conn.options, |_| true)
}

/// An admin client: only the connection and security options apply to it.
pub fn admin(conn: &Connection) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &conn.brokers);
    with_options(c, &conn.options, is_connection_option)
}

fn with_options(
    mut c: ClientConfig,
    options: &BTreeMap<String, String>,
    keep: impl Fn(&str) -> bool,
) -> ClientConfig {
    for (k, v) in options {
        if keep(k) {
            c.set(k, v);
        }
    }
    c
}

/// Options an admin client understands (connection and security), not consumer tuning.
fn is_connection_option(k: &str) -> bool {
    k.starts_with("security.")
        || k.starts_with("sasl.")
        || k.starts_with("ssl.")
        || k.starts_with("client.")
        || k.starts_with("socket.")
        || k == "broker.address.family"
}
