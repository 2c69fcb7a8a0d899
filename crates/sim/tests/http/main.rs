//! The simulator over real HTTP, one binary: each test starts its own instance on port 0 (and, for callbacks, its
//! own receiver on port 0).

#![allow(clippy::unwrap_used)]

mod faults;
mod grsai;
mod seedance;
mod support;
mod webhooks;
