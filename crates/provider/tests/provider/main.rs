//! The provider clients over real HTTP, one test binary: each test starts its own simulator on port 0 (and, for
//! callbacks, its own receiver on port 0).

#![allow(clippy::unwrap_used)]

mod callbacks;
mod grsai_sim;
mod seedance_sim;
mod support;
