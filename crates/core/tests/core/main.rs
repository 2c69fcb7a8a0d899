//! The store's Lua transitions against a real redis-server, one test binary.

#![allow(clippy::unwrap_used)]

mod stream_messages;
mod transitions;
