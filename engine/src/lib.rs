//! # dronedelivery-engine
//!
//! The outermost ring: adapters that implement the ports of
//! `dronedelivery-actors` (the in-process queue and memory stores of the
//! embedded default, with Redis, MongoDB and Service Bus next to them),
//! configuration from flags and environment, telemetry, and the
//! [`startup::Application`] that wires backends, the actor tree and the HTTP
//! gateway together. Dependencies point inward: engine → gateway → actors.

pub mod adapters;
pub mod admin_cli;
pub mod backends;
pub mod config;
pub mod pages;
pub mod runtime;
pub mod server;
pub mod startup;
pub mod telemetry;

pub use adapters::memory;
pub use config::{Cli, Command, ServeArgs};
pub use startup::Application;
