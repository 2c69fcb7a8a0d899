//! The store's Lua transitions against a real redis-server, one test binary.

mod transitions;
