//! The safety layer (being written).
