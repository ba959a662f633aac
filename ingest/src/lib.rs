//! Ingest: Kafka records decoded into Arrow and committed exactly once to Delta tables.
//!
//! The data flow, stage by stage: [`source`] polls Kafka in batches on its own thread into
//! [`raw::RawBatch`]es; [`decode`] turns them into events rows and dead letters; [`pipeline`]
//! buffers rows per table, flushes by rows, bytes or latency, and commits each table with the
//! Kafka progress of the rows it holds, then commits the offsets to the consumer group.

pub mod dead_letter;
pub mod decode;
pub mod headers;
pub mod raw;
pub mod schema;
