//! [`Broker`]: what tiering asks of Kafka besides records: partitions, watermarks, time
//! lookups, topic settings and DeleteRecords.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluice_config::KafkaConfig;

use crate::{Result, TieringError};

const TIMEOUT: Duration = Duration::from_secs(30);

/// A metadata client and an admin client for one cluster.
#[derive(Clone)]
pub struct Broker {
    kafka: KafkaConfig,
    group: String,
    consumer: Arc<BaseConsumer>,
    admin: Arc<AdminClient<DefaultClientContext>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("brokers", &self.kafka.brokers)
            .finish_non_exhaustive()
    }
}

fn kafka_err(what: impl std::fmt::Display) -> TieringError {
    TieringError::Kafka(what.to_string())
}

impl Broker {
    /// Clients for the cluster of `kafka`; `purpose` names the group id suffix they use.
    pub fn new(kafka: &KafkaConfig, purpose: &str) -> Result<Self> {
        let group = format!("{}.{purpose}", kafka.group_id);
        let consumer: BaseConsumer = Self::config(kafka, &group)
            .create()
            .map_err(|e| kafka_err(format!("cannot create a client for {}: {e}", kafka.brokers)))?;
        let mut admin_cfg = ClientConfig::new();
        admin_cfg.set("bootstrap.servers", &kafka.brokers);
        for (k, v) in &kafka.options {
            if is_client_option(k) {
                admin_cfg.set(k, v);
            }
        }
        let admin: AdminClient<DefaultClientContext> = admin_cfg.create().map_err(|e| {
            kafka_err(format!(
                "cannot create an admin client for {}: {e}",
                kafka.brokers
            ))
        })?;
        Ok(Self {
            kafka: kafka.clone(),
            group,
            consumer: Arc::new(consumer),
            admin: Arc::new(admin),
        })
    }

    /// Settings for a consumer that reads assigned partitions (no group membership, no
    /// commits) and reports a position below the log start as an error instead of jumping.
    pub fn config(kafka: &KafkaConfig, group: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &kafka.brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "error")
            .set("enable.partition.eof", "true")
            .set("fetch.max.bytes", "52428800")
            .set("queued.max.messages.kbytes", "65536")
            // See ingest's consumer_config: a full prefetch queue pauses fetching 1 s by default.
            .set("fetch.queue.backoff.ms", "20")
            .set("isolation.level", "read_committed");
        for (k, v) in &kafka.options {
            c.set(k, v);
        }
        c
    }

    /// A fresh consumer for reading assigned partitions.
    pub fn reader(&self) -> Result<BaseConsumer<ReaderContext>> {
        Self::config(&self.kafka, &self.group)
            .create_with_context(ReaderContext)
            .map_err(|e| kafka_err(format!("cannot create a consumer: {e}")))
    }

    /// The partitions of `topic` (blocking).
    pub fn partitions(&self, topic: &str) -> Result<Vec<i32>> {
        sluice_ingest::source::partitions_of(&*self.consumer, topic).map_err(kafka_err)
    }

    /// (log start offset, high watermark) of a partition (blocking).
    pub fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64)> {
        self.consumer
            .fetch_watermarks(topic, partition, TIMEOUT)
            .map_err(|e| kafka_err(format!("watermarks of {topic}/{partition}: {e}")))
    }

    /// The first offset in the broker whose timestamp is at or after `ms` (blocking).
    pub fn offset_for_time(&self, topic: &str, partition: i32, ms: i64) -> Result<Option<i64>> {
        sluice_ingest::source::offset_for_time(&*self.consumer, topic, partition, ms)
            .map_err(kafka_err)
    }

    /// Moves log start offsets up to the given offsets; returns the new log starts.
    pub async fn delete_records(
        &self,
        topic: &str,
        upto: &BTreeMap<i32, i64>,
    ) -> Result<BTreeMap<i32, i64>> {
        let mut tpl = TopicPartitionList::new();
        for (p, o) in upto {
            tpl.add_partition_offset(topic, *p, Offset::Offset(*o))
                .map_err(kafka_err)?;
        }
        let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
        let res = self
            .admin
            .delete_records(&tpl, &opts)
            .await
            .map_err(|e| kafka_err(format!("DeleteRecords on {topic}: {e}")))?;
        let mut out = BTreeMap::new();
        for e in res.elements() {
            if let Err(err) = e.error() {
                return Err(kafka_err(format!(
                    "DeleteRecords on {topic}/{}: {err}",
                    e.partition()
                )));
            }
            if let Offset::Offset(o) = e.offset() {
                out.insert(e.partition(), o);
            }
        }
        Ok(out)
    }

    /// The topic's settings as the broker reports them (`cleanup.policy`, `retention.ms`, ...).
    pub async fn topic_config(&self, topic: &str) -> Result<BTreeMap<String, String>> {
        let spec = ResourceSpecifier::Topic(topic);
        let res = self
            .admin
            .describe_configs([&spec], &AdminOptions::new().request_timeout(Some(TIMEOUT)))
            .await
            .map_err(|e| kafka_err(format!("settings of topic {topic}: {e}")))?;
        let mut out = BTreeMap::new();
        for r in res {
            let r = r.map_err(|e| kafka_err(format!("settings of topic {topic}: {e}")))?;
            for e in r.entries {
                if let Some(v) = e.value {
                    out.insert(e.name, v);
                }
            }
        }
        Ok(out)
    }
}

/// The context of reading consumers: reaching the end of a partition is how a read learns
/// it is done, not an error worth a log line.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReaderContext;

impl ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(error, KafkaError::PartitionEOF(_)) {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl ConsumerContext for ReaderContext {}

/// Options an admin client understands (connection and security), not consumer tuning.
fn is_client_option(k: &str) -> bool {
    k.starts_with("security.")
        || k.starts_with("sasl.")
        || k.starts_with("ssl.")
        || k.starts_with("client.")
        || k.starts_with("socket.")
        || k == "broker.address.family"
}
