//! sluice-tiering.
