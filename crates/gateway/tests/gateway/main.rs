//! The gateway's contract checks, one test binary.

mod openapi;
