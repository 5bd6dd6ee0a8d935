//! End-to-end test support for Chillcloud: the chiller simulator and the harness that starts
//! real PostgreSQL, Mosquitto and the compiled binaries for tests.

pub mod cluster;
pub mod harness;
pub mod providers;
pub mod push_service;
pub mod sim;
pub mod smtp;
