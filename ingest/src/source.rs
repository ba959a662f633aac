//! [`RecordSource`]: where a pipeline's records come from, besides the channel of
//! [`GroupEvent`]s: a live consumer group ([`KafkaSource`], over
//! [`sluice_kafka::GroupConsumer`]) or a replay of the unified log (a backfill, in the
//! tiering crate). The pipeline awaits its calls; a source that must block (librdkafka's
//! metadata calls) does so on a blocking thread of its own.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::future::BoxFuture;
use sluice_config::StartPosition;
use sluice_kafka::{GroupConsumer, KafkaError};

pub use sluice_kafka::{GroupEvent, GroupOptions, TopicPartition};

/// Why a source could not answer.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Kafka answered with an error.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// A replay could not resolve a position in the unified log.
    #[error("replay of {topic}/{partition}: {source}")]
    Replay {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A replay does not read this topic.
    #[error("topic {0} is not read by this backfill")]
    NotReplayed(String),
    /// Another writer committed to a replay's tables while it ran.
    #[error(
        "another writer committed to this backfill's tables while it ran; run one backfill per --into table"
    )]
    ReplayOvertaken,
}

/// A source's answers, awaited by the pipeline.
pub type SourceResult<T> = std::result::Result<T, SourceError>;

/// Where a pipeline's records come from (see the module's documentation).
pub trait RecordSource: Send + Sync + 'static {
    /// Commits `offsets` (next offset per partition) to the consumer group, if there is one;
    /// it does not wait for the broker.
    fn commit_offsets(&self, offsets: &HashMap<TopicPartition, i64>);
    /// Asks the source to move these partitions to these offsets. It answers with
    /// [`GroupEvent::Seeked`] on its channel once done; records of these partitions that
    /// arrive before that answer are from the old positions and must be dropped. An error here
    /// means the source cannot seek at all.
    fn seek(&self, offsets: &HashMap<TopicPartition, i64>) -> SourceResult<()>;
    /// Asks the source to stop; it ends by sending [`GroupEvent::Ended`].
    fn stop(&self);
    /// Waits until the source's threads have ended.
    fn join(self: Arc<Self>) -> BoxFuture<'static, ()>;
    /// The offset a partition without stored progress starts at.
    fn start_offset(
        self: Arc<Self>,
        topic: String,
        partition: i32,
        start: StartPosition,
    ) -> BoxFuture<'static, SourceResult<i64>>;
    /// Every partition of `topics` with its end offset now.
    fn end_offsets(
        self: Arc<Self>,
        topics: Vec<String>,
    ) -> BoxFuture<'static, SourceResult<BTreeMap<TopicPartition, i64>>>;
    /// The end offsets of these partitions for lag metrics; partitions whose end is unknown
    /// are left out.
    fn high_watermarks(
        self: Arc<Self>,
        partitions: Vec<TopicPartition>,
    ) -> BoxFuture<'static, Vec<(TopicPartition, i64)>>;
}

/// A live consumer-group member as a [`RecordSource`].
#[derive(Debug)]
pub struct KafkaSource(Arc<GroupConsumer>);

impl KafkaSource {
    /// Joins the group and starts polling into a channel of `capacity` batches.
    pub fn start(
        opts: GroupOptions,
        capacity: usize,
    ) -> Result<(Self, tokio::sync::mpsc::Receiver<GroupEvent>), KafkaError> {
        let (consumer, rx) = GroupConsumer::start(opts, capacity)?;
        Ok((Self(Arc::new(consumer)), rx))
    }

    /// Runs a blocking call of the consumer on a blocking thread.
    fn blocking<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&GroupConsumer) -> Result<T, KafkaError> + Send + 'static,
    ) -> BoxFuture<'static, SourceResult<T>> {
        let consumer = self.0.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || f(&consumer))
                .await
                .map_err(|_| KafkaError::TaskLost { what })?
                .map_err(SourceError::from)
        })
    }
}

impl RecordSource for KafkaSource {
    fn commit_offsets(&self, offsets: &HashMap<TopicPartition, i64>) {
        self.0.commit_offsets(offsets);
    }

    fn seek(&self, offsets: &HashMap<TopicPartition, i64>) -> SourceResult<()> {
        self.0.seek(offsets);
        Ok(())
    }

    fn stop(&self) {
        self.0.stop();
    }

    fn join(self: Arc<Self>) -> BoxFuture<'static, ()> {
        let f = self.blocking("leaving the group", |c| {
            c.join();
            Ok(())
        });
        Box::pin(async move {
            let _ = f.await;
        })
    }

    fn start_offset(
        self: Arc<Self>,
        topic: String,
        partition: i32,
        start: StartPosition,
    ) -> BoxFuture<'static, SourceResult<i64>> {
        self.blocking("a start offset", move |c| {
            c.start_offset(&topic, partition, start)
        })
    }

    fn end_offsets(
        self: Arc<Self>,
        topics: Vec<String>,
    ) -> BoxFuture<'static, SourceResult<BTreeMap<TopicPartition, i64>>> {
        self.blocking("end offsets", move |c| c.end_offsets(&topics))
    }

    fn high_watermarks(
        self: Arc<Self>,
        partitions: Vec<TopicPartition>,
    ) -> BoxFuture<'static, Vec<(TopicPartition, i64)>> {
        let f = self.blocking("high watermarks", move |c| c.end_offsets_of(&partitions));
        Box::pin(async move { f.await.unwrap_or_default() })
    }
}
