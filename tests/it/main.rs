//! End-to-end tests against the real services that `scripts/test` starts: an Apache Kafka
//! broker (KRaft) and an S3 server, both on 127.0.0.1. One test binary, as in delta-rs, so the
//! large dependency tree links once.

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod changelog;
mod chaos;
mod compaction;
mod console;
mod formats;
mod ingest;
mod instances;
mod ops;
mod query;
mod security;
mod services;
mod support;
mod tiering;
mod window_sql;
mod windows;
