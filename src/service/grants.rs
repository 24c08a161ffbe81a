//! The rights catalog and granting rights under the delegation rule.

use uuid::Uuid;

use super::{
    links::{listing_scope, require_can_receive, ListOf},
    require_admin_everywhere, users, visible_user,
};
use crate::{
    domain::{
        account::{AccountCode, AccountStatus},
        key::NewKey,
        principal::Actor,
        rights::Grant,
        rights::{validate_grants, RawGrant, RightDef, Scope},
        role::RoleGrant,
        user::{UserKey, UserKind, UserStatus},
        AccountRefusal, Error, RefusalReason, Violations,
    },
    store::{Store, Tx},
};

pub async fn list_rights(store: &Store) -> Result<Vec<RightDef>, Error> {
    let mut tx = store.read().await?;
    let rights = tx.rights().await?;
    tx.commit().await?;
    Ok(rights)
}

pub async fn define_right(
    store: &Store,
    actor: &Actor,
    def: RightDef,
) -> Result<(RightDef, i64), Error> {
    actor.require_operator()?;
    let mut tx = store.write(Some(actor.user_id)).await?;
    tx.insert_right(&def).await?;
    let revision = tx.commit().await?;
    Ok((def, revision))
}

/// What a change of one user's grants on one account does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Add (or re-scope) the listed rights.
    Grant,
    /// Make the listed rights the user's only rights there.
    Set,
}

/// `GrantRights` and `SetRights`: returns the user's grants on the account
/// afterwards, and the revision.
pub async fn grant(
    store: &Store,
    actor: &Actor,
    account: &AccountCode,
    user: Uuid,
    asked: &[RawGrant],
    mode: Mode,
) -> Result<(Vec<Grant>, i64), Error> {
    let mut tx = store.write(Some(actor.user_id)).await?;
    tx.lock_users(&[user]).await?;
    let account = tx.account(account.as_str()).await?;
    let authority = tx.authority(actor, account.id).await?;
    authority.require_admin(&account.code)?;
    let not_found = || Error::NotFound(format!("user {user} on account {}", account.code));
    let target = tx.user(user).await?.ok_or_else(not_found)?;
    tx.link(user, account.id).await?.ok_or_else(not_found)?;
    let catalog = tx.rights().await?;
    let mut v = Violations::default();
    let wanted = validate_grants(&catalog, target.kind, asked, "rights", tx.now(), &mut v);
    v.finish()?;
    if !wanted.is_empty() {
        require_can_receive(&target)?;
        if account.status == AccountStatus::Closed {
            return Err(Error::FailedPrecondition(format!(
                "account {} is closed",
                account.code
            )));
        }
    }
    let current = tx
        .grants(Some(user), Some(account.id), None, None, 1000)
        .await?;
    // Every grant added, re-scoped or removed must pass the delegation rule,
    // for its old scope as well as its new one.
    let mut changed = Vec::new();
    for g in &wanted {
        let before = current.iter().find(|c| c.right == g.right);
        if let Some(before) = before {
            if before.scope == g.scope && before.expires_at == g.expires_at {
                continue;
            }
            authority.may_delegate(&account.code, &before.right, before.scope)?;
        }
        authority.may_delegate(&account.code, &g.right, g.scope)?;
        changed.push(g.clone());
    }
    let mut removed = Vec::new();
    if mode == Mode::Set {
        for c in current
            .iter()
            .filter(|c| !wanted.iter().any(|w| w.right == c.right))
        {
            authority.may_delegate(&account.code, &c.right, c.scope)?;
            removed.push(c.right.clone());
        }
    }
    for g in &changed {
        tx.upsert_grant(user, account.id, g).await?;
    }
    if !removed.is_empty() {
        tx.delete_grants(user, account.id, &removed).await?;
    }
    let after = tx
        .grants(Some(user), Some(account.id), None, None, 1000)
        .await?;
    let revision = tx.commit().await?;
    Ok((after, revision))
}

/// `RevokeRights`: returns how many grants were removed, and the revision.
pub async fn revoke(
    store: &Store,
    actor: &Actor,
    account: &AccountCode,
    user: Uuid,
    rights: &[String],
) -> Result<(i64, i64), Error> {
    let mut tx = store.write(Some(actor.user_id)).await?;
    tx.lock_users(&[user]).await?;
    let account = tx.account(account.as_str()).await?;
    let authority = tx.authority(actor, account.id).await?;
    authority.require_admin(&account.code)?;
    tx.link(user, account.id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("user {user} on account {}", account.code)))?;
    let catalog = tx.rights().await?;
    let mut v = Violations::default();
    if rights.is_empty() {
        v.add("rights", "give at least one right");
    }
    for (i, r) in rights.iter().enumerate() {
        if !catalog.iter().any(|d| &d.code == r) {
            v.add(format!("rights[{i}]"), format!("unknown right {r:?}"));
        }
    }
    v.finish()?;
    let current = tx
        .grants(Some(user), Some(account.id), None, None, 1000)
        .await?;
    for c in current.iter().filter(|c| rights.contains(&c.right)) {
        authority.may_delegate(&account.code, &c.right, c.scope)?;
    }
    let revoked = tx.delete_grants(user, account.id, rights).await?;
    let revision = tx.commit().await?;
    Ok((revoked, revision))
}

pub async fn list(
    store: &Store,
    actor: &Actor,
    of: &ListOf,
    after: Option<(String, Uuid, String)>,
    limit: i64,
) -> Result<(Vec<Grant>, Vec<RoleGrant>), Error> {
    let mut tx = store.read().await?;
    let (user, account, only) = listing_scope(&mut tx, actor, of).await?;
    // The roles held come on the first page, all of them (a user holds a
    // few per account; an account's are bounded below).
    let roles = match after {
        None => {
            let roles = tx
                .role_grants(user, account, only.as_deref(), MAX_ROLE_GRANTS + 1)
                .await?;
            if roles.len() as i64 > MAX_ROLE_GRANTS {
                return Err(Error::FailedPrecondition(format!(
                    "more than {MAX_ROLE_GRANTS} roles are held here: list them by user"
                )));
            }
            roles
        }
        Some(_) => Vec::new(),
    };
    let grants = tx
        .grants(user, account, only.as_deref(), after, limit)
        .await?;
    tx.commit().await?;
    Ok((grants, roles))
}

/// How many roles held one `ListGrants` answer lists at most.
pub const MAX_ROLE_GRANTS: i64 = 10_000;

/// Which user a mass operation is about.
#[derive(Debug)]
pub enum Selector {
    Id(Uuid),
    Key(UserKey),
    Email(String),
    New(Box<users::CreateUser>),
}

/// Resolves an existing user the actor may address. A user key finds any
/// advanced user (that is what keys are for); an id or an email only users
/// the actor can see.
async fn resolve(tx: &mut Tx, actor: &Actor, sel: &Selector) -> Result<Uuid, Error> {
    let id = match sel {
        Selector::Id(id) => Some(*id),
        Selector::Key(key) => {
            return tx
                .user_id_by_key(key)
                .await?
                .ok_or_else(|| Error::NotFound(format!("user key {key}")))
        }
        Selector::Email(email) => {
            tx.user_id_by_email(email, actor.user_id, actor.is_operator())
                .await?
        }
        Selector::New(_) => None,
    }
    .ok_or_else(|| Error::NotFound("user".into()))?;
    visible_user(tx, actor, id).await?;
    Ok(id)
}

/// The result of `GrantAcrossAccounts`.
#[derive(Debug)]
pub struct Across {
    pub user_id: Uuid,
    /// The key of a user created by the call (none: he is invited).
    pub key: Option<NewKey>,
    /// The invitation of an advanced user created by the call.
    pub invitation: Option<super::credentials::Invitation>,
    /// (account code, whether the call linked the user to it).
    pub outcomes: Vec<(String, bool)>,
    pub revision: i64,
}

pub async fn grant_across(
    store: &Store,
    actor: &Actor,
    sel: Selector,
    accounts: &[AccountCode],
    asked: &[RawGrant],
) -> Result<Across, Error> {
    if accounts.is_empty() {
        return Err(Error::invalid("account_codes", "give at least one account"));
    }
    if asked.is_empty() {
        return Err(Error::invalid("rights", "give at least one right"));
    }
    let mut tx = store.write(Some(actor.user_id)).await?;
    let catalog = tx.rights().await?;

    // Every account is checked before anything is written: all or nothing.
    let mut refusals = Vec::new();
    let mut targets = Vec::new();
    for code in accounts {
        if targets
            .iter()
            .any(|(c, _): &(String, Uuid)| c == code.as_str())
        {
            continue;
        }
        let checked = async {
            let account = tx.account(code.as_str()).await?;
            if account.status == AccountStatus::Closed {
                return Err(Error::FailedPrecondition(format!(
                    "account {code} is closed"
                )));
            }
            let authority = tx.authority(actor, account.id).await?;
            authority.require_admin(code.as_str())?;
            for g in asked {
                authority.may_delegate(code.as_str(), &g.right, g.scope)?;
            }
            Ok(account.id)
        }
        .await;
        match checked {
            Ok(id) => targets.push((code.as_str().to_owned(), id)),
            Err(e) => refusals.push(AccountRefusal::from_error(code.as_str(), e)?),
        }
    }
    if !refusals.is_empty() {
        return Err(Error::PerAccount(refusals));
    }

    let (user_id, key, invitation) = match sel {
        Selector::New(mut create) => {
            create.kind = Some(UserKind::Advanced);
            // Rights and links are given below, on every account.
            create.account = None;
            create.grants.clear();
            // The actor administers every target account (checked above); the
            // user is linked to each of them below.
            let created = users::create_in(&mut tx, actor, *create, "user.new_user.", true).await?;
            (created.user.id, created.key, created.invitation)
        }
        existing => (resolve(&mut tx, actor, &existing).await?, None, None),
    };
    tx.lock_users(&[user_id]).await?;
    let user = tx
        .user(user_id)
        .await?
        .ok_or_else(|| Error::NotFound("user".into()))?;
    require_can_receive(&user)?;
    let mut v = Violations::default();
    let grants = validate_grants(&catalog, user.kind, asked, "rights", tx.now(), &mut v);
    v.finish()?;

    let mut outcomes = Vec::new();
    for (code, account_id) in &targets {
        let linked = tx.link(user_id, *account_id).await?.is_some();
        if !linked {
            if user.kind == UserKind::Standard {
                refusals.push(AccountRefusal {
                    account: code.clone(),
                    reason: RefusalReason::FailedPrecondition,
                    description: "a standard user belongs to his one account".into(),
                });
                continue;
            }
            tx.insert_link(user_id, *account_id, &[]).await?;
        }
        for g in &grants {
            tx.upsert_grant(user_id, *account_id, g).await?;
        }
        outcomes.push((code.clone(), !linked));
    }
    if !refusals.is_empty() {
        return Err(Error::PerAccount(refusals));
    }
    let revision = tx.commit().await?;
    Ok(Across {
        user_id,
        key,
        invitation,
        outcomes,
        revision,
    })
}

/// `RevokeEverywhere`: every grant on every account, then deactivation.
pub async fn revoke_everywhere(
    store: &Store,
    actor: &Actor,
    sel: Selector,
) -> Result<(i64, i64), Error> {
    if matches!(sel, Selector::New(_)) {
        return Err(Error::invalid("user", "name an existing user"));
    }
    let mut tx = store.write(Some(actor.user_id)).await?;
    let id = resolve(&mut tx, actor, &sel).await?;
    tx.lock_users(&[id]).await?;
    if id == actor.user_id {
        return Err(Error::FailedPrecondition(
            "you cannot revoke your own rights everywhere".into(),
        ));
    }
    let (user, accounts) = visible_user(&mut tx, actor, id).await?;
    require_admin_everywhere(actor, &accounts)?;
    let revoked = tx.delete_all_grants(id).await?;
    if user.status.transition(UserStatus::Deactivated).is_ok() {
        tx.set_user_status(id, UserStatus::Deactivated).await?;
    }
    let revision = tx.commit().await?;
    Ok((revoked, revision))
}

/// `CopyRights`: the rights `from` holds on `account` (unexpired), given to
/// `to` as `GrantRights` would give them (the delegation rule for each, all
/// or nothing), until `until` when given but never beyond the grant copied.
pub async fn copy(
    store: &Store,
    actor: &Actor,
    account: &AccountCode,
    from: Uuid,
    to: Uuid,
    until: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(Vec<Grant>, i64), Error> {
    if from == to {
        return Err(Error::invalid(
            "to_user_id",
            "must differ from from_user_id",
        ));
    }
    let mut tx = store.read().await?;
    let found = tx.account(account.as_str()).await?;
    tx.authority(actor, found.id)
        .await?
        .require_admin(&found.code)?;
    let not_found = || Error::NotFound(format!("user {from} on account {}", found.code));
    tx.link(from, found.id).await?.ok_or_else(not_found)?;
    let now = tx.now();
    // What he holds, directly or through his roles: per right, the widest
    // scope, then the latest expiry.
    let held = tx.held_rights(from, found.id).await?;
    tx.commit().await?;
    let mut best: Vec<(String, Option<Scope>, Option<chrono::DateTime<chrono::Utc>>)> = Vec::new();
    for (right, scope, expires_at) in held.into_iter().filter(|h| h.2.is_none_or(|e| e > now)) {
        let later = |a: Option<chrono::DateTime<chrono::Utc>>, b| match (a, b) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => a > b,
        };
        match best.iter_mut().find(|b| b.0 == right) {
            Some(b) => {
                if (Scope::width(scope), !later(b.2, expires_at)) > (Scope::width(b.1), false) {
                    *b = (right, scope, expires_at);
                }
            }
            None => best.push((right, scope, expires_at)),
        }
    }
    let asked: Vec<RawGrant> = best
        .into_iter()
        .map(|(right, scope, expires_at)| RawGrant {
            right,
            scope,
            expires_at: match (expires_at, until) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        })
        .collect();
    if asked.is_empty() {
        return Err(Error::FailedPrecondition(format!(
            "user {from} holds no right on account {} to copy",
            found.code
        )));
    }
    grant(store, actor, account, to, &asked, Mode::Grant).await
}
