//! Roles: definitions (operators) and roles held on accounts, under the
//! delegation rule for every right of the role.

use uuid::Uuid;

use super::links::require_can_receive;
use crate::{
    domain::{
        account::{AccountCode, AccountStatus},
        principal::Actor,
        role::{RawRole, RoleDef, RoleGrant},
        Error,
    },
    store::{Store, Tx},
};

pub async fn list_roles(store: &Store) -> Result<Vec<RoleDef>, Error> {
    let mut tx = store.read().await?;
    let roles = tx.roles().await?;
    tx.commit().await?;
    Ok(roles)
}

/// `DefineRole`: a new role, or a new definition of an existing one (its
/// holders' decisions follow on every replica).
pub async fn define_role(store: &Store, actor: &Actor, raw: RawRole) -> Result<RoleDef, Error> {
    actor.require_operator()?;
    let mut tx = store.write(Some(actor.user_id)).await?;
    let catalog = tx.rights().await?;
    let mut def = raw.validate(&catalog)?;
    def.revision = tx.define_role(&def).await?;
    tx.commit().await?;
    Ok(def)
}

/// What `GrantRole` and `RevokeRole` act on, once the actor is known to
/// administer the account and to be able to delegate every right of the
/// role there.
struct Target {
    account_id: Uuid,
    account_code: String,
    account_open: bool,
    role_id: Uuid,
}

async fn target(
    tx: &mut Tx,
    actor: &Actor,
    account: &AccountCode,
    user: Uuid,
    role: &str,
) -> Result<(Target, crate::domain::user::User, RoleDef), Error> {
    tx.lock_users(&[user]).await?;
    let account = tx.account(account.as_str()).await?;
    let authority = tx.authority(actor, account.id).await?;
    authority.require_admin(&account.code)?;
    let not_found = || Error::NotFound(format!("user {user} on account {}", account.code));
    let target = tx.user(user).await?.ok_or_else(not_found)?;
    tx.link(user, account.id).await?.ok_or_else(not_found)?;
    let (role_id, def) = tx
        .role(role)
        .await?
        .ok_or_else(|| Error::NotFound(format!("role {role}")))?;
    authority.may_delegate_role(&account.code, &def)?;
    Ok((
        Target {
            account_id: account.id,
            account_code: account.code.clone(),
            account_open: account.status != AccountStatus::Closed,
            role_id,
        },
        target,
        def,
    ))
}

/// `GrantRole`: returns the roles the user holds on the account afterwards,
/// and the revision.
pub async fn grant_role(
    store: &Store,
    actor: &Actor,
    account: &AccountCode,
    user: Uuid,
    role: &str,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(Vec<RoleGrant>, i64), Error> {
    let mut tx = store.write(Some(actor.user_id)).await?;
    if expires_at.is_some_and(|t| t <= tx.now()) {
        return Err(Error::invalid("expire_time", "is in the past"));
    }
    let (t, target, def) = target(&mut tx, actor, account, user, role).await?;
    if !def.open_to(target.kind) {
        return Err(Error::invalid(
            "role",
            format!(
                "role {} cannot be held by {} users",
                def.code,
                target.kind.as_str()
            ),
        ));
    }
    require_can_receive(&target)?;
    if !t.account_open {
        return Err(Error::FailedPrecondition(format!(
            "account {} is closed",
            t.account_code
        )));
    }
    tx.upsert_role_grant(user, t.account_id, t.role_id, expires_at)
        .await?;
    let after = tx
        .role_grants(Some(user), Some(t.account_id), None, 1000)
        .await?;
    let revision = tx.commit().await?;
    Ok((after, revision))
}

/// `RevokeRole`: whether the user held the role, and the revision. Only
/// what the role gave goes: a right also granted directly stays.
pub async fn revoke_role(
    store: &Store,
    actor: &Actor,
    account: &AccountCode,
    user: Uuid,
    role: &str,
) -> Result<(bool, i64), Error> {
    let mut tx = store.write(Some(actor.user_id)).await?;
    let (t, _, _) = target(&mut tx, actor, account, user, role).await?;
    let revoked = tx.delete_role_grant(user, t.account_id, t.role_id).await?;
    let revision = tx.commit().await?;
    Ok((revoked, revision))
}
