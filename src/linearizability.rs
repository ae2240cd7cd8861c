//! Linearizability checking of recorded histories (placeholder).
