//! Pure rules and validated types. No tonic, no sqlx, no IO: everything here
//! can be unit-tested in isolation, and every other module may depend on it.

pub mod account;
pub mod audit;
pub mod clock;
pub mod credential;
pub mod decision;
pub mod error;
pub mod import;
pub mod key;
pub mod principal;
pub mod request;
pub mod rights;
pub mod role;
pub mod team;
pub mod user;

pub use error::{AccountRefusal, Error, FieldViolation, RefusalReason, Result, Violations};
