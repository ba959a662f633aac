//! sluice-ingest.
