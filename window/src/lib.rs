//! sluice-window.
