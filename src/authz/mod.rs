//! The decision engine: answers `Check`s from memory.
//!
//! Per-subject [`Entitlements`](crate::domain::decision::Entitlements) are
//! loaded on demand (one query per cold miss) into bounded caches, and dropped
//! when a write changes them: at once for writes of this process (a
//! [`CommitObserver`](crate::store::CommitObserver)), and through Postgres
//! `LISTEN clef_changes` for writes of any replica. While the listening
//! connection is down nothing is served from memory: every answer comes from
//! Postgres, and the caches are emptied again when it is back.

mod engine;

pub use engine::{Answer, Engine, EngineConfig};
