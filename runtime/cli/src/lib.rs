//! The `coxswain` command's library half: the reaching demo's episode driver ([`demo`]), in real time over
//! Zenoh or in lockstep with the simulated arm ([`plant`]). The binary (`src/main.rs`) parses the command
//! line and calls these; tests call them directly. [`robot::load`] reads a robot description with every
//! table this program knows. The runtime library (`coxswain`) depends on no
//! simulator: this crate is where the simulator meets it.

pub mod demo;
pub mod params;
pub mod plant;
pub mod query;
pub mod robot;
pub mod serve;
