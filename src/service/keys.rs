//! Connection keys: regeneration, listing, revocation, and `WhoAmI`.

use uuid::Uuid;

use super::managed_user;
use crate::{
    domain::{
        key::{KeyMeta, NewKey},
        principal::Actor,
        rights::Grant,
        role::RoleGrant,
        user::{Link, User},
        Error,
    },
    store::{Store, Tx},
};

/// Longest overlap a regeneration may ask for.
pub const MAX_OVERLAP_SECONDS: i32 = 86_400;

/// Refuses unless the actor is `user` himself, an operator, or an admin of
/// one of the user's accounts. Users the actor cannot see are `NotFound`.
async fn require_key_manager(
    tx: &mut Tx,
    actor: &Actor,
    user: Uuid,
) -> Result<Option<User>, Error> {
    if actor.user_id == user {
        return tx.user(user).await;
    }
    Ok(Some(managed_user(tx, actor, user).await?.0))
}

/// A fresh key for `user` (the actor when `None`); the user's other keys stop
/// working at once, or after `overlap_seconds`.
pub async fn regenerate(
    store: &Store,
    actor: &Actor,
    user: Option<Uuid>,
    overlap_seconds: i32,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(NewKey, KeyMeta, i64), Error> {
    if !(0..=MAX_OVERLAP_SECONDS).contains(&overlap_seconds) {
        return Err(Error::invalid(
            "overlap_seconds",
            format!("must be between 0 and {MAX_OVERLAP_SECONDS}"),
        ));
    }
    if expires_at.is_some_and(|t| t <= store.clock().now()) {
        return Err(Error::invalid("expire_time", "is in the past"));
    }
    let user = user.unwrap_or(actor.user_id);
    let mut tx = store.write(Some(actor.user_id)).await?;
    tx.lock_users(&[user]).await?;
    if let Some(u) = require_key_manager(&mut tx, actor, user).await? {
        if u.status != crate::domain::user::UserStatus::Active {
            return Err(Error::FailedPrecondition(format!(
                "the user is {}: only active users hold connection keys",
                u.status.as_str()
            )));
        }
    }
    let key = NewKey::generate().map_err(|e| Error::Internal(format!("os rng: {e}")))?;
    let meta = tx.insert_key(user, &key, expires_at).await?;
    tx.retire_keys(user, meta.id, overlap_seconds).await?;
    let revision = tx.commit().await?;
    Ok((key, meta, revision))
}

pub async fn list(store: &Store, actor: &Actor, user: Option<Uuid>) -> Result<Vec<KeyMeta>, Error> {
    let user = user.unwrap_or(actor.user_id);
    let mut tx = store.read().await?;
    require_key_manager(&mut tx, actor, user).await?;
    let keys = tx.keys_of(user).await?;
    tx.commit().await?;
    Ok(keys)
}

pub async fn revoke(store: &Store, actor: &Actor, key: Uuid) -> Result<i64, Error> {
    let mut tx = store.write(Some(actor.user_id)).await?;
    let meta = tx
        .key(key)
        .await?
        .ok_or_else(|| Error::NotFound(format!("connection key {key}")))?;
    require_key_manager(&mut tx, actor, meta.user_id)
        .await
        .map_err(|e| match e {
            Error::NotFound(_) => Error::NotFound(format!("connection key {key}")),
            other => other,
        })?;
    tx.revoke_key(meta.user_id, key).await?;
    tx.commit().await
}

/// The caller as clef sees him.
#[derive(Debug)]
pub struct Me {
    /// `None` for operators and service principals.
    pub user: Option<User>,
    pub login: String,
    pub key: KeyMeta,
    /// Live grants and roles per linked account.
    pub accounts: Vec<(Link, Vec<Grant>, Vec<RoleGrant>)>,
}

pub async fn who_am_i(store: &Store, actor: &Actor) -> Result<Me, Error> {
    let mut tx = store.read().await?;
    let (login, _) = tx
        .principal(actor.user_id)
        .await?
        .ok_or(Error::Unauthenticated)?;
    let user = tx.user(actor.user_id).await?;
    let key = tx.key(actor.key_id).await?.ok_or(Error::Unauthenticated)?;
    let links = tx
        .links(Some(actor.user_id), None, None, None, 100_000)
        .await?;
    let now = tx.now();
    let grants = tx
        .grants(Some(actor.user_id), None, None, None, 1_000_000)
        .await?;
    let roles = tx
        .role_grants(Some(actor.user_id), None, None, 1_000_000)
        .await?;
    let accounts = links
        .into_iter()
        .map(|l| {
            let mine = grants
                .iter()
                .filter(|g| {
                    g.account_code == l.account_code && g.expires_at.is_none_or(|t| t > now)
                })
                .cloned()
                .collect();
            let held = roles
                .iter()
                .filter(|g| {
                    g.account_code == l.account_code && g.expires_at.is_none_or(|t| t > now)
                })
                .cloned()
                .collect();
            (l, mine, held)
        })
        .collect();
    tx.commit().await?;
    Ok(Me {
        user,
        login,
        key,
        accounts,
    })
}
