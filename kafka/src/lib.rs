//! Kafka, in one place: everything sluice asks of a broker goes through this crate.
//!
//! - [`client`]: the librdkafka settings of each kind of client (group member, range reader,
//!   admin), with the user's pass-through options;
//! - [`poll`]: the one poll loop, which turns consumed messages into [`RawBatch`]es;
//! - [`group`]: a consumer-group member polling on its own thread, with rebalances and seeks
//!   answered by its owner (the ingest pipeline);
//! - [`range`]: bounded reads of offset ranges of assigned partitions (the tierer and the
//!   unified log);
//! - [`cluster`]: metadata, watermarks, time lookups, topic settings and DeleteRecords;
//! - [`batch`]: [`RawBatch`], records as they came from Kafka, column by column.
//!
//! Errors are a [`KafkaError`] that keeps librdkafka's error code, so callers branch on the
//! code, never on the text.

pub mod batch;
#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "client")]
pub mod cluster;
#[cfg(feature = "client")]
mod error;
#[cfg(feature = "client")]
pub mod group;
#[cfg(feature = "client")]
pub mod poll;
#[cfg(feature = "client")]
pub mod range;
#[cfg(feature = "client")]
mod throttle;

use std::sync::Arc;

pub use batch::{RawBatch, RawBatchBuilder, RecordHeaders};
#[cfg(feature = "client")]
pub use cluster::Cluster;
#[cfg(feature = "client")]
pub use error::KafkaError;
#[cfg(feature = "client")]
pub use group::{GroupConsumer, GroupEvent, GroupOptions};
#[cfg(feature = "client")]
pub use range::{AtEof, RangeEnd, RangeOutcome, RangeRead};

/// A topic-partition.
pub type TopicPartition = (Arc<str>, i32);

/// Result alias for this crate.
#[cfg(feature = "client")]
pub type Result<T, E = KafkaError> = std::result::Result<T, E>;
