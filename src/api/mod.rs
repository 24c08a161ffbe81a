//! The gRPC surface: one file per service. Handlers authenticate the caller,
//! decode and validate the request into domain types, call one function of
//! `service` (decisions: the `authz` engine), and encode the answer. No SQL
//! and no business rules live here.

pub mod accounts;
pub mod audit;
pub mod auth;
pub mod authz;
mod convert;
pub mod credentials;
pub mod error;
pub mod export;
pub mod grants;
pub mod import;
pub mod keys;
pub mod links;
pub mod roles;
pub mod teams;
pub mod users;

/// What every service needs: the store, the authenticator, and the
/// password hasher's pool.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub store: crate::store::Store,
    pub auth: auth::Authenticator,
    pub hasher: crate::hasher::Hasher,
}

use prost_types::Timestamp;

pub(crate) fn timestamp(t: chrono::DateTime<chrono::Utc>) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    })
}
