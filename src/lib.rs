//! clef: a gRPC identity and entitlement service.
//!
//! Customer accounts grouped in organizations, the users acting for them, the
//! rights each user holds on each account, and the connection keys machines
//! use instead of passwords.
//!
//! # Layout
//!
//! - [`domain`]: pure rules and validated types (account codes, key format,
//!   errors). Depends on nothing else of ours.
//! - [`store`]: every SQL query; maps database errors onto [`domain::Error`].
//! - [`api`]: one module per gRPC service; authenticates, validates, calls
//!   one function of [`service`], encodes. Generated types ([`pb`]) stay in
//!   `api` and `cli`.
//! - [`service`]: use cases; one transaction each: the actor's authority,
//!   the domain's rules, the writes (an import: one per batch of lines).
//! - [`authz`]: the decision engine (hot path) and its caches, kept in step
//!   with every replica's writes.
//! - [`bulk`]: CSV files of users: columns, dialects, reading records from a
//!   file that arrives in chunks.
//! - [`server`]: assembles services, health, reflection and shutdown;
//!   [`limits`]: the transport's limits, answered with a `grpc-status`.
//! - [`embedded`]: the Postgres clef runs itself when given no database URL.
//! - [`hasher`]: argon2id password hashing on a bounded pool.
//! - [`outbox`]: delivery of the messages changes put in the outbox (SMTP).
//! - [`cli`]: the command line (`serve`, `operator create`, `migrate`).
//! - [`telemetry`]: logs and OTLP traces.

pub mod api;
pub mod authz;
pub mod bulk;
pub mod cli;
pub mod domain;
pub mod embedded;
pub mod hasher;
pub mod limits;
pub mod metrics;
pub mod observe;
pub mod outbox;
pub mod server;
pub mod service;
pub mod store;
pub mod telemetry;

/// Types generated from `proto/clef/v1/*.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("clef.v1");

    /// The encoded descriptors of every clef proto, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("clef_descriptor");
}
