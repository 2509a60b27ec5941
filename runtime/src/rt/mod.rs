//! Real-time utilities (being written).
