//! Sink retries use the agent's one back-off policy (equal jitter, see
//! [`crate::backoff`]).

pub use crate::backoff::Backoff;
