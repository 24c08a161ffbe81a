//! Finding advanced users by user key and linking them to accounts.

use uuid::Uuid;

use super::visible_user;
use crate::{
    domain::{
        account::{AccountCode, AccountStatus},
        principal::Actor,
        rights::Grant,
        rights::{validate_grants, RawGrant},
        user::Link,
        user::{parse_tags, User, UserKey, UserKind, UserStatus},
        Error, Violations,
    },
    store::{Store, Tx},
};

/// Who a user key belongs to, for an admin about to link him.
pub async fn lookup(store: &Store, actor: &Actor, key: &UserKey) -> Result<User, Error> {
    let mut tx = store.read().await?;
    if !actor.is_operator() && !tx.administers_any(actor.user_id).await? {
        return Err(Error::PermissionDenied(
            "looking up a user key requires admin.users on an account".into(),
        ));
    }
    let not_found = || Error::NotFound(format!("user key {key}"));
    let id = tx.user_id_by_key(key).await?.ok_or_else(not_found)?;
    let user = tx.user(id).await?.ok_or_else(not_found)?;
    if user.status == UserStatus::Archived {
        return Err(not_found());
    }
    tx.commit().await?;
    Ok(user)
}

/// `LinkUser`, decoded.
#[derive(Debug)]
pub struct LinkUser {
    pub account: AccountCode,
    pub key: UserKey,
    pub tags: Vec<String>,
    pub grants: Vec<RawGrant>,
}

pub async fn link(
    store: &Store,
    actor: &Actor,
    req: LinkUser,
) -> Result<(Link, Vec<Grant>), Error> {
    let mut v = Violations::default();
    let tags = parse_tags(&req.tags, "tags", &mut v);
    let mut tx = store.write(Some(actor.user_id)).await?;
    let catalog = tx.rights().await?;
    let grants = validate_grants(
        &catalog,
        UserKind::Advanced,
        &req.grants,
        "rights",
        tx.now(),
        &mut v,
    );
    v.finish()?;
    let account = tx.account(req.account.as_str()).await?;
    if account.status == AccountStatus::Closed {
        return Err(Error::FailedPrecondition(format!(
            "account {} is closed",
            account.code
        )));
    }
    let authority = tx.authority(actor, account.id).await?;
    authority.require_admin(&account.code)?;
    for g in &grants {
        authority.may_delegate(&account.code, &g.right, g.scope)?;
    }
    let id = tx
        .user_id_by_key(&req.key)
        .await?
        .ok_or_else(|| Error::NotFound(format!("user key {}", req.key)))?;
    tx.lock_users(&[id]).await?;
    let user = tx
        .user(id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("user key {}", req.key)))?;
    require_can_receive(&user)?;
    if tx.link(id, account.id).await?.is_some() {
        return Err(Error::already_exists(format!(
            "a link of user key {} to account {}",
            req.key, account.code
        )));
    }
    tx.insert_link(id, account.id, &tags).await?;
    for g in &grants {
        tx.upsert_grant(id, account.id, g).await?;
    }
    let link = tx
        .link(id, account.id)
        .await?
        .ok_or_else(|| Error::Internal("link vanished".into()))?;
    let grants = tx
        .grants(Some(id), Some(account.id), None, None, 1000)
        .await?;
    tx.commit().await?;
    Ok((link, grants))
}

/// Refuses a user who cannot receive new grants (see
/// `UserStatus::may_receive_grants`).
pub(crate) fn require_can_receive(user: &User) -> Result<(), Error> {
    user.status
        .may_receive_grants()
        .map_err(Error::FailedPrecondition)
}

/// Loads the account and the link of `user` to it, refusing actors without
/// `admin.users` there. A link the actor may not see is `NotFound`.
async fn administered_link(
    tx: &mut Tx,
    actor: &Actor,
    account: &AccountCode,
    user: Uuid,
) -> Result<Link, Error> {
    let account = tx.account(account.as_str()).await?;
    tx.authority(actor, account.id)
        .await?
        .require_admin(&account.code)?;
    tx.link(user, account.id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("link of user {user} to account {}", account.code)))
}

pub async fn update_tags(
    store: &Store,
    actor: &Actor,
    account: &AccountCode,
    user: Uuid,
    tags: &[String],
) -> Result<Link, Error> {
    let mut v = Violations::default();
    let tags = parse_tags(tags, "tags", &mut v);
    v.finish()?;
    let mut tx = store.write(Some(actor.user_id)).await?;
    let link = administered_link(&mut tx, actor, account, user).await?;
    tx.set_link_tags(user, link.account_id, &tags).await?;
    let link = tx
        .link(user, link.account_id)
        .await?
        .ok_or_else(|| Error::Internal("link vanished".into()))?;
    tx.commit().await?;
    Ok(link)
}

/// Removes a link and the user's grants on that account. Returns the number
/// of grants removed and the revision.
pub async fn unlink(
    store: &Store,
    actor: &Actor,
    account: &AccountCode,
    user: Uuid,
) -> Result<(i64, i64), Error> {
    let mut tx = store.write(Some(actor.user_id)).await?;
    let link = administered_link(&mut tx, actor, account, user).await?;
    if let Some(u) = tx.user(user).await? {
        if u.kind == UserKind::Standard
            && u.home_account.as_deref() == Some(link.account_code.as_str())
        {
            return Err(Error::FailedPrecondition(
                "a standard user's home account cannot be unlinked; archive the user instead"
                    .into(),
            ));
        }
    }
    let revoked = tx.delete_link(user, link.account_id).await?;
    let revision = tx.commit().await?;
    Ok((revoked, revision))
}

/// Whose links or grants a listing is about.
#[derive(Debug, Clone)]
pub enum ListOf {
    User(Uuid),
    Account(AccountCode),
}

/// Resolves a listing: (user filter, account filter, accounts the actor may
/// see when restricted).
pub(crate) async fn listing_scope(
    tx: &mut Tx,
    actor: &Actor,
    of: &ListOf,
) -> Result<(Option<Uuid>, Option<Uuid>, Option<Vec<Uuid>>), Error> {
    match of {
        ListOf::Account(code) => {
            let account = tx.account(code.as_str()).await?;
            tx.authority(actor, account.id)
                .await?
                .require_admin(&account.code)?;
            Ok((None, Some(account.id), None))
        }
        ListOf::User(id) => {
            visible_user(tx, actor, *id).await?;
            if actor.is_operator() || actor.user_id == *id {
                Ok((Some(*id), None, None))
            } else {
                let mine = tx.administered_accounts(actor.user_id).await?;
                Ok((Some(*id), None, Some(mine)))
            }
        }
    }
}

pub async fn list(
    store: &Store,
    actor: &Actor,
    of: &ListOf,
    after: Option<(String, Uuid)>,
    limit: i64,
) -> Result<Vec<Link>, Error> {
    let mut tx = store.read().await?;
    let (user, account, only) = listing_scope(&mut tx, actor, of).await?;
    let links = tx
        .links(user, account, only.as_deref(), after, limit)
        .await?;
    tx.commit().await?;
    Ok(links)
}
