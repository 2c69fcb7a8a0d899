//! Gantry end to end, one test binary: the whole stack is linked once for every module below. Each test starts
//! its own redis-server on a free port and what it needs on top (the simulator, the services in process or as
//! `gantry` processes), so tests run in parallel and share nothing.
//!
//! Run one module with a filter: `cargo test -p gantry --test gantry chaos::`.

#![allow(clippy::unwrap_used)]

mod api;
mod batches;
mod cancel;
mod chaos;
mod cluster;
mod common;
mod idempotency;
mod observe;
mod processes;
mod provider;
mod recovery;
mod retention;
mod tls;
