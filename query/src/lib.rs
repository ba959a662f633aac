//! sluice-query.
