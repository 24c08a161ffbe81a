//! Use cases, one function per RPC: the gRPC handlers in `api` decode the
//! request into domain types, call one function here, and encode its
//! answer. A function loads what the actor may do, applies the domain's
//! rules and writes, in one store transaction (`Tx`); the streams (import,
//! export, report) run theirs in a task of their own, described in their
//! module docs. Nothing here sees a protobuf type or builds SQL rows.

pub mod accounts;
pub mod audit;
pub mod bulk;
pub mod credentials;
pub mod export;
pub mod grants;
pub mod import;
pub mod keys;
pub mod links;
pub mod roles;
pub mod teams;
pub mod users;

use uuid::Uuid;

use crate::{
    domain::{
        principal::Actor,
        user::{LinkedAccount, User},
        Error,
    },
    store::Tx,
};

/// A user the actor may see: operators see everyone, users see themselves,
/// admins see the users linked to accounts they administer. Anyone else is
/// `NotFound`, so that existence never leaks across tenants: the message
/// never names the id (a lookup by email, login or user key must not reveal
/// it).
pub(crate) async fn visible_user(
    tx: &mut Tx,
    actor: &Actor,
    id: Uuid,
) -> Result<(User, Vec<LinkedAccount>), Error> {
    let not_found = || Error::NotFound("user".into());
    let user = tx.user(id).await?.ok_or_else(not_found)?;
    let accounts = tx.linked_accounts(id, actor.user_id).await?;
    if actor.is_operator() || actor.user_id == id || accounts.iter().any(|a| a.actor_is_admin) {
        Ok((user, accounts))
    } else {
        Err(not_found())
    }
}

/// A user the actor may manage: operators, and admins of one of the user's
/// accounts (not the user himself).
pub(crate) async fn managed_user(
    tx: &mut Tx,
    actor: &Actor,
    id: Uuid,
) -> Result<(User, Vec<LinkedAccount>), Error> {
    let (user, accounts) = visible_user(tx, actor, id).await?;
    if actor.is_operator() || accounts.iter().any(|a| a.actor_is_admin) {
        Ok((user, accounts))
    } else {
        Err(Error::PermissionDenied(
            "admin.users on one of the user's accounts is required".into(),
        ))
    }
}

/// Refuses unless the actor administers every account the user is linked to
/// (changes that affect the user everywhere: status, revoke everywhere).
pub(crate) fn require_admin_everywhere(
    actor: &Actor,
    accounts: &[LinkedAccount],
) -> Result<(), Error> {
    if actor.is_operator() {
        return Ok(());
    }
    let missing: Vec<&str> = accounts
        .iter()
        .filter(|a| !a.actor_is_admin)
        .map(|a| a.code.as_str())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(not_admin_everywhere(&missing))
    }
}

/// A change to a user on every account, refused for want of `admin.users`
/// on the accounts `missing`.
pub(crate) fn not_admin_everywhere(missing: &[impl AsRef<str>]) -> Error {
    let codes: Vec<&str> = missing.iter().map(AsRef::as_ref).collect();
    Error::PermissionDenied(format!(
        "this changes the user on every account: admin.users is also required on {}",
        codes.join(", ")
    ))
}
