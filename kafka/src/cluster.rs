//! [`Cluster`]: what sluice asks of Kafka besides records: partitions, watermarks, time
//! lookups, topic settings and DeleteRecords. The lookups are also free functions over any
//! consumer, so that a group member answers them with its own connection.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};
use sluice_config::StartPosition;

use crate::client::{self, Connection};
use crate::range::ReaderContext;
use crate::{KafkaError, Result, TopicPartition};

/// How long a metadata or admin call may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A topic's settings by name, as the broker reports them.
pub type TopicSettings = BTreeMap<String, String>;

/// A metadata client and an admin client for one cluster.
#[derive(Clone)]
pub struct Cluster {
    conn: Connection,
    group: String,
    consumer: Arc<BaseConsumer<ReaderContext>>,
    admin: Arc<AdminClient<DefaultClientContext>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("brokers", &self.conn.brokers)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Clients for the cluster of `conn`; readers made by [`Cluster::reader_config`] use the
    /// group id `<group_id>.<purpose>`.
    pub fn new(conn: &Connection, purpose: &str) -> Result<Self> {
        let group = format!("{}.{purpose}", conn.group_id);
        let consumer: BaseConsumer<ReaderContext> = client::range_reader(conn, &group)
            .create_with_context(ReaderContext::default())
            .map_err(|e| {
                KafkaError::client(format!("cannot create a client for {}", conn.brokers), e)
            })?;
        let admin: AdminClient<DefaultClientContext> =
            client::admin(conn).create().map_err(|e| {
                KafkaError::client(
                    format!("cannot create an admin client for {}", conn.brokers),
                    e,
                )
            })?;
        Ok(Self {
            conn: conn.clone(),
            group,
            consumer: Arc::new(consumer),
            admin: Arc::new(admin),
        })
    }

    /// Settings for a fresh reader of assigned partitions (see [`crate::range`]).
    pub fn reader_config(&self) -> rdkafka::ClientConfig {
        client::range_reader(&self.conn, &self.group)
    }

    /// `e`, or the cluster's refusal of this client (credentials, TLS) when that is why.
    fn explain(&self, e: KafkaError) -> KafkaError {
        self.consumer
            .context()
            .refused
            .explain(&self.conn.brokers, e)
    }

    /// The partitions of `topic` (blocking).
    pub fn partitions(&self, topic: &str) -> Result<Vec<i32>> {
        partitions_of(&*self.consumer, topic).map_err(|e| self.explain(e))
    }

    /// (log start offset, high watermark) of a partition (blocking).
    pub fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64)> {
        watermarks(&*self.consumer, topic, partition).map_err(|e| self.explain(e))
    }

    /// Which member of consumer group `group` owns each partition now, as its client id and
    /// host (blocking). Empty for a group without members.
    pub fn group_owners(&self, group: &str) -> Result<Owners> {
        let list = self
            .consumer
            .fetch_group_list(Some(group), TIMEOUT)
            .map_err(|e| {
                self.explain(KafkaError::client(format!("describing group {group}"), e))
            })?;
        let mut owners = BTreeMap::new();
        for g in list.groups() {
            for m in g.members() {
                let owner = format!(
                    "{} ({})",
                    m.client_id(),
                    m.client_host().trim_start_matches('/')
                );
                for tp in m.assignment().map(parse_assignment).unwrap_or_default() {
                    owners.insert(tp, owner.clone());
                }
            }
        }
        Ok(owners)
    }

    /// The first offset in the broker whose timestamp is at or after `ms` (blocking).
    pub fn offset_for_time(&self, topic: &str, partition: i32, ms: i64) -> Result<Option<i64>> {
        offset_for_time(&*self.consumer, topic, partition, ms).map_err(|e| self.explain(e))
    }

    /// Moves log start offsets up to the given offsets; returns the new log starts.
    pub async fn delete_records(
        &self,
        topic: &str,
        upto: &BTreeMap<i32, i64>,
    ) -> Result<BTreeMap<i32, i64>> {
        let what = || format!("DeleteRecords on {topic}");
        let mut tpl = TopicPartitionList::new();
        for (p, o) in upto {
            tpl.add_partition_offset(topic, *p, Offset::Offset(*o))
                .map_err(|e| KafkaError::client(what(), e))?;
        }
        let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
        let res = self
            .admin
            .delete_records(&tpl, &opts)
            .await
            .map_err(|e| self.explain(KafkaError::client(what(), e)))?;
        let mut out = BTreeMap::new();
        for e in res.elements() {
            e.error()
                .map_err(|err| KafkaError::client(format!("{}/{}", what(), e.partition()), err))?;
            if let Offset::Offset(o) = e.offset() {
                out.insert(e.partition(), o);
            }
        }
        Ok(out)
    }

    /// The topic's settings as the broker reports them (`cleanup.policy`, `retention.ms`, ...).
    pub async fn topic_config(&self, topic: &str) -> Result<TopicSettings> {
        let what = || format!("settings of topic {topic}");
        let spec = ResourceSpecifier::Topic(topic);
        let res = self
            .admin
            .describe_configs([&spec], &AdminOptions::new().request_timeout(Some(TIMEOUT)))
            .await
            .map_err(|e| self.explain(KafkaError::client(what(), e)))?;
        let mut out = BTreeMap::new();
        for r in res {
            let r = r.map_err(|code| KafkaError::Code { what: what(), code })?;
            for e in r.entries {
                if let Some(v) = e.value {
                    out.insert(e.name, v);
                }
            }
        }
        Ok(out)
    }
}

/// (log start offset, high watermark) of a partition (blocking).
pub fn watermarks<C: ConsumerContext>(
    c: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
) -> Result<(i64, i64)> {
    c.fetch_watermarks(topic, partition, TIMEOUT)
        .map_err(|e| KafkaError::client(format!("watermarks of {topic}/{partition}"), e))
}

/// Where a partition without stored progress starts, asked of the broker (blocking).
pub fn start_offset<C: ConsumerContext>(
    c: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
    start: StartPosition,
) -> Result<i64> {
    let (low, high) = watermarks(c, topic, partition)?;
    Ok(match start {
        StartPosition::Earliest => low,
        StartPosition::Latest => high,
        StartPosition::Offset(n) => n.clamp(low, high),
        StartPosition::Time(ms) => offset_for_time(c, topic, partition, ms)?.unwrap_or(high),
    })
}

/// The first offset whose timestamp is at or after `ms`, as the broker answers it (blocking);
/// `None` when no record is that young.
pub fn offset_for_time<C: ConsumerContext>(
    c: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
    ms: i64,
) -> Result<Option<i64>> {
    let what = || format!("offsets of {topic}/{partition} for time {ms}");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(ms))
        .map_err(|e| KafkaError::client(what(), e))?;
    let found = c
        .offsets_for_times(tpl, TIMEOUT)
        .map_err(|e| KafkaError::client(what(), e))?;
    Ok(match found.elements().first().map(|e| e.offset()) {
        Some(Offset::Offset(o)) if o >= 0 => Some(o),
        _ => None,
    })
}

/// Every partition of `topics` with its high watermark now (blocking).
pub fn end_offsets<C: ConsumerContext>(
    c: &BaseConsumer<C>,
    topics: &[String],
) -> Result<BTreeMap<TopicPartition, i64>> {
    let mut out = BTreeMap::new();
    for t in topics {
        for p in partitions_of(c, t)? {
            let (_, high) = watermarks(c, t, p)?;
            out.insert((Arc::from(t.as_str()), p), high);
        }
    }
    Ok(out)
}

/// The end offsets of `parts` in one `ListOffsets` request per broker (blocking), instead of a
/// round trip per partition; partitions the answer has no offset for are left out.
pub fn latest_offsets<C: ConsumerContext>(
    c: &BaseConsumer<C>,
    parts: &[TopicPartition],
    timeout: Duration,
) -> Result<Vec<(TopicPartition, i64)>> {
    let mut list = TopicPartitionList::with_capacity(parts.len());
    for (t, p) in parts {
        list.add_partition_offset(t, *p, Offset::End)
            .map_err(|e| KafkaError::client(format!("end offset of {t}/{p}"), e))?;
    }
    let found = c
        .offsets_for_times(list, timeout)
        .map_err(|e| KafkaError::client("end offsets", e))?;
    Ok(found
        .elements()
        .iter()
        .filter(|e| e.error().is_ok())
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(((Arc::from(e.topic()), e.partition()), o)),
            _ => None,
        })
        .collect())
}

/// The partition ids of a topic (blocking); an error when it does not exist.
pub fn partitions_of<C: ConsumerContext>(c: &BaseConsumer<C>, topic: &str) -> Result<Vec<i32>> {
    let md = c
        .fetch_metadata(Some(topic), TIMEOUT)
        .map_err(|e| KafkaError::client(format!("metadata of topic {topic}"), e))?;
    let missing = || KafkaError::NoSuchTopic {
        topic: topic.to_string(),
    };
    let t = md
        .topics()
        .iter()
        .find(|m| m.name() == topic)
        .ok_or_else(missing)?;
    if t.partitions().is_empty() || t.error().is_some() {
        return Err(missing());
    }
    Ok(t.partitions().iter().map(|p| p.id()).collect())
}

/// Each partition's owner in a consumer group: (topic, partition) to client id and host.
pub type Owners = BTreeMap<(String, i32), String>;

/// The partitions of a consumer-protocol assignment (`ConsumerProtocolAssignment`: a version,
/// then per topic its name and partitions, then user data). Malformed bytes give what could be
/// read.
pub fn parse_assignment(bytes: &[u8]) -> Vec<(String, i32)> {
    struct Reader<'a>(&'a [u8]);
    impl Reader<'_> {
        fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
            let (head, rest) = self.0.split_first_chunk::<N>()?;
            self.0 = rest;
            Some(*head)
        }
        fn i16(&mut self) -> Option<i16> {
            self.take::<2>().map(i16::from_be_bytes)
        }
        fn i32(&mut self) -> Option<i32> {
            self.take::<4>().map(i32::from_be_bytes)
        }
        fn string(&mut self) -> Option<String> {
            let n = usize::try_from(self.i16()?).ok()?;
            let (s, rest) = self.0.split_at_checked(n)?;
            self.0 = rest;
            Some(String::from_utf8_lossy(s).into_owned())
        }
    }
    let mut r = Reader(bytes);
    let mut out = Vec::new();
    let read = |r: &mut Reader<'_>, out: &mut Vec<(String, i32)>| -> Option<()> {
        r.i16()?;
        for _ in 0..r.i32()?.max(0) {
            let topic = r.string()?;
            for _ in 0..r.i32()?.max(0) {
                out.push((topic.clone(), r.i32()?));
            }
        }
        Some(())
    };
    let _ = read(&mut r, &mut out);
    out
}

#[cfg(test)]
mod assignment_tests {
    #[test]
    fn an_assignment_reads_back_its_topics_and_partitions() {
        let mut b = vec![0, 1]; // version
        b.extend(2i32.to_be_bytes());
        for (t, ps) in [("ab", vec![0i32, 3]), ("c", vec![7])] {
            b.extend((t.len() as i16).to_be_bytes());
            b.extend(t.as_bytes());
            b.extend((ps.len() as i32).to_be_bytes());
            for p in ps {
                b.extend(p.to_be_bytes());
            }
        }
        b.extend((-1i32).to_be_bytes()); // no user data
        let want = vec![
            ("ab".to_string(), 0),
            ("ab".to_string(), 3),
            ("c".to_string(), 7),
        ];
        assert_eq!(super::parse_assignment(&b), want);
        assert_eq!(
            super::parse_assignment(&b[..b.len() - 9]),
            want[..2].to_vec()
        );
        assert!(super::parse_assignment(&[]).is_empty());
    }
}
