//! Integration tests: the real application (actor tree + HTTP gateway) on a
//! random port, driven over HTTP like a client would.

// Test code: a failed precondition should panic, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod auth;
mod console;
mod deliveries;
mod helpers;
mod hostile;
mod lifecycle;
mod openapi;
mod operations;
mod packages;
mod probes;
mod resilience;
mod scheduling;
mod slow_clients;
mod tracking;
