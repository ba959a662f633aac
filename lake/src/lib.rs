//! sluice-lake.
