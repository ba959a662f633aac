//! End-to-end tests against the real services that `scripts/test` starts: an Apache Kafka
//! broker (KRaft) and an S3 server, both on 127.0.0.1. One test binary, as in delta-rs, so the
//! large dependency tree links once.

mod ingest;
mod services;
mod support;
