//! The `gantry` binary's library: command-line parsing and wiring (`cli`), the all-in-one local stack
//! (`dev`), the demo client (`demo`). Business logic lives in the service crates.

pub mod cli;
pub mod demo;
pub mod dev;
