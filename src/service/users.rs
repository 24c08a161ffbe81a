//! Creating, reading, updating and changing the status of users.

use uuid::Uuid;

use super::{
    credentials::{issue_invitation, Invitation},
    managed_user, require_admin_everywhere, visible_user,
};
use crate::{
    domain::{
        account::{AccountCode, AccountStatus},
        key::NewKey,
        principal::Actor,
        request::RequestKey,
        rights::{validate_grants, RawGrant},
        user::{
            default_login, parse_login, parse_tags, Profile, ProfileField, RawProfile, User,
            UserKey, UserKind, UserStatus,
        },
        Error, Violations,
    },
    store::{NewUser, Store, Tx, UserFilter},
};

/// `CreateUser`, decoded.
#[derive(Debug, Default)]
pub struct CreateUser {
    pub kind: Option<UserKind>,
    pub profile: RawProfile,
    pub login: Option<String>,
    pub account: Option<AccountCode>,
    pub default_account: Option<AccountCode>,
    pub tags: Vec<String>,
    pub grants: Vec<RawGrant>,
}

/// A created user and his first connection key, or (an advanced user,
/// invited) his invitation; both `None` in the answer to a retry, since
/// secrets are shown to the first call only.
#[derive(Debug)]
pub struct Created {
    pub user: User,
    pub key: Option<NewKey>,
    pub invitation: Option<Invitation>,
}

fn rng_error(e: getrandom::Error) -> Error {
    Error::Internal(format!("os rng: {e}"))
}

/// `CreateUser`. With a request key, a retry of the same request answers
/// the user the first call created, at its revision, without his key.
pub async fn create(
    store: &Store,
    actor: &Actor,
    req: CreateUser,
    once: Option<RequestKey>,
) -> Result<Created, Error> {
    let mut tx = store.write(Some(actor.user_id)).await?;
    if let Some(key) = &once {
        if let Some((id, revision)) = tx.replayed(key).await? {
            let (user, _) = visible_user(&mut tx, actor, id).await?;
            tx.rollback().await?;
            return Ok(Created {
                user: User { revision, ..user },
                key: None,
                invitation: None,
            });
        }
    }
    let created = create_in(&mut tx, actor, req, "user.", false).await?;
    if let Some(key) = &once {
        tx.record_request(key, created.user.id).await?;
    }
    let revision = tx.commit().await?;
    Ok(Created {
        user: User {
            revision,
            ..created.user
        },
        key: created.key,
        invitation: created.invitation,
    })
}

/// Creates a user inside `tx`. `linked_later`: the caller links him to
/// accounts it has checked (`GrantAcrossAccounts`), so no account is needed.
pub(crate) async fn create_in(
    tx: &mut Tx,
    actor: &Actor,
    req: CreateUser,
    prefix: &str,
    linked_later: bool,
) -> Result<Created, Error> {
    let mut v = Violations::default();
    let kind = match req.kind {
        Some(k) => k,
        None => {
            v.add(
                format!("{prefix}kind"),
                "must be USER_KIND_STANDARD or USER_KIND_ADVANCED",
            );
            // Check the rest with the lighter requirements, so that only real
            // faults are reported besides the kind.
            UserKind::Standard
        }
    };
    let profile = Profile::parse(&req.profile, kind, prefix, &mut v);
    let tags = parse_tags(&req.tags, "tags", &mut v);
    if kind == UserKind::Standard && req.account.is_none() {
        v.add(
            "account_code",
            "is required for a standard user (his account)",
        );
    }
    if req.account.is_none() && !actor.is_operator() && !linked_later {
        v.add(
            "account_code",
            "is required: the user is created on one of your accounts",
        );
    }
    if req.account.is_none() && !(req.grants.is_empty() && req.tags.is_empty()) {
        v.add("account_code", "is required to give tags or rights");
    }
    let catalog = tx.rights().await?;
    let grants = validate_grants(&catalog, kind, &req.grants, "rights", tx.now(), &mut v);
    v.finish()?;

    let account = match &req.account {
        Some(code) => {
            let account = tx.account(code.as_str()).await?;
            if account.status == AccountStatus::Closed {
                return Err(Error::FailedPrecondition(format!(
                    "account {code} is closed"
                )));
            }
            let authority = tx.authority(actor, account.id).await?;
            authority.require_admin(code.as_str())?;
            for g in &grants {
                authority.may_delegate(code.as_str(), &g.right, g.scope)?;
            }
            Some(account)
        }
        None => None,
    };
    let default_account_id = match &req.default_account {
        Some(code) if Some(code.as_str()) == account.as_ref().map(|a| a.code.as_str()) => {
            account.as_ref().map(|a| a.id)
        }
        Some(code) => {
            return Err(Error::invalid(
                "user.default_account_code",
                format!("{code} is not an account the user is created on"),
            ))
        }
        None => account.as_ref().map(|a| a.id),
    };
    let user_key = match kind {
        UserKind::Advanced => Some(UserKey::generate().map_err(rng_error)?),
        UserKind::Standard => None,
    };
    // An advanced user completes his invitation before he is active
    // (seed 004); a standard one is active at once, with a key.
    let status = match kind {
        UserKind::Advanced => UserStatus::Invited,
        UserKind::Standard => UserStatus::Active,
    };
    let user = tx
        .insert_user(&NewUser {
            kind,
            status,
            login: req.login.as_deref(),
            derived_login: default_login(&profile),
            profile: &profile,
            user_key: user_key.as_ref(),
            home_account_id: match kind {
                UserKind::Standard => account.as_ref().map(|a| a.id),
                UserKind::Advanced => None,
            },
            default_account_id,
        })
        .await?;
    if let Some(account) = &account {
        tx.insert_link(user.id, account.id, &tags).await?;
        for g in &grants {
            tx.upsert_grant(user.id, account.id, g).await?;
        }
    }
    let (key, invitation) = match status {
        UserStatus::Invited => {
            let invitation = issue_invitation(tx, user.id, account.as_ref().map(|a| a.id)).await?;
            (None, Some(invitation))
        }
        _ => {
            let key = NewKey::generate().map_err(rng_error)?;
            tx.insert_key(user.id, &key, None).await?;
            (Some(key), None)
        }
    };
    Ok(Created {
        user,
        key,
        invitation,
    })
}

/// How `GetUser` names its user.
#[derive(Debug)]
pub enum UserLookup {
    Id(Uuid),
    Key(UserKey),
    Login(String),
}

/// `GetUser`: the user, and the state of his password.
pub async fn get(
    store: &Store,
    actor: &Actor,
    by: UserLookup,
) -> Result<(User, crate::store::PasswordState), Error> {
    let mut tx = store.read().await?;
    let id = match &by {
        UserLookup::Id(id) => Some(*id),
        UserLookup::Key(key) => tx.user_id_by_key(key).await?,
        // What cannot be a login names nobody.
        UserLookup::Login(login) if parse_login(login).is_err() => None,
        UserLookup::Login(login) => {
            tx.user_id_by_login(login, actor.user_id, actor.is_operator())
                .await?
        }
    }
    .ok_or_else(|| Error::NotFound("user".into()))?;
    let (user, _) = visible_user(&mut tx, actor, id).await?;
    let password = tx.password_state(user.id).await?;
    tx.commit().await?;
    Ok((user, password))
}

/// `ListUsers`, decoded: the users linked to an account, in creation order.
#[derive(Debug)]
pub struct ListUsers {
    pub account: AccountCode,
    /// Any of these (never empty: see `UserStatus::LISTED_BY_DEFAULT`).
    pub statuses: Vec<UserStatus>,
    pub kind: Option<UserKind>,
    /// Lowercased substring of names, email or login.
    pub query: String,
    /// Only the members of a team (of its sub-teams too when asked).
    pub team: Option<crate::domain::team::TeamFilter>,
    /// The last user of the previous page.
    pub after: Option<Uuid>,
    pub limit: i64,
}

pub async fn list(store: &Store, actor: &Actor, req: ListUsers) -> Result<Vec<User>, Error> {
    let mut tx = store.read().await?;
    let account = tx.account(req.account.as_str()).await?;
    tx.authority(actor, account.id)
        .await?
        .require_admin(&account.code)?;
    let teams = match &req.team {
        Some(f) => Some(super::teams::resolve_filter(&mut tx, account.organization_id, f).await?),
        None => None,
    };
    let users = tx
        .list_users(&UserFilter {
            account_id: account.id,
            statuses: req.statuses,
            kind: req.kind,
            query: req.query,
            teams,
            after: req.after,
            limit: req.limit,
        })
        .await?;
    tx.commit().await?;
    Ok(users)
}

/// `UpdateUser`, decoded.
#[derive(Debug)]
pub struct UpdateUser {
    pub id: Uuid,
    pub profile: RawProfile,
    pub default_account: Option<AccountCode>,
    /// What the update mask names.
    pub fields: UserFields,
    /// What was wrong with the update mask, reported with the rest once the
    /// actor may see the user.
    pub mask_problems: Violations,
}

/// The fields an update names.
#[derive(Debug, Default)]
pub struct UserFields {
    pub profile: Vec<ProfileField>,
    pub default_account: bool,
    /// Their names in the order the request gave them, for the audit trail.
    pub names: Vec<&'static str>,
}

pub async fn update(store: &Store, actor: &Actor, req: UpdateUser) -> Result<User, Error> {
    let mut tx = store.write(Some(actor.user_id)).await?;
    tx.lock_users(&[req.id]).await?;
    let (user, accounts) = managed_user(&mut tx, actor, req.id).await?;
    if user.status == UserStatus::Archived {
        return Err(Error::FailedPrecondition("the user is archived".into()));
    }
    let updated = rewrite_profile(&mut tx, &user, &accounts, &req, &user.login).await?;
    tx.commit().await?;
    Ok(updated)
}

/// Writes the fields `req` names over `user`'s profile, validated as a
/// whole for his kind (`UpdateUser`, and the corrections of an invitation
/// completed).
pub(crate) async fn rewrite_profile(
    tx: &mut Tx,
    user: &User,
    accounts: &[crate::domain::user::LinkedAccount],
    req: &UpdateUser,
    login: &str,
) -> Result<User, Error> {
    let mut v = req.mask_problems.clone();
    let mut raw = user.profile.to_raw();
    raw.copy_fields(&req.profile, &req.fields.profile);
    let profile = Profile::parse(&raw, user.kind, "user.", &mut v);
    let mut default_account_id = accounts
        .iter()
        .find(|a| Some(&a.code) == user.default_account.as_ref())
        .map(|a| a.account_id);
    if req.fields.default_account {
        default_account_id = match &req.default_account {
            None => None,
            Some(code) => match accounts.iter().find(|a| a.code == code.as_str()) {
                Some(a) => Some(a.account_id),
                None => {
                    v.add(
                        "user.default_account_code",
                        format!("the user is not linked to account {code}"),
                    );
                    None
                }
            },
        };
    }
    v.finish()?;
    tx.update_user_profile(user.id, &profile, login, default_account_id)
        .await
}

/// Whether `actor` may move `user` (linked to `accounts`) to `to`: never
/// himself, only with `admin.users` on every account of the user (a status
/// is the user's everywhere), and only by a transition the status allows.
/// The one rule of `DeactivateUsers`, by ids or by team, and the other
/// status changes.
pub(crate) fn may_set_status(
    actor: &Actor,
    user: &User,
    accounts: &[crate::domain::user::LinkedAccount],
    to: UserStatus,
) -> Result<(), Error> {
    if actor.user_id == user.id {
        return Err(Error::FailedPrecondition(
            "you cannot change your own status".into(),
        ));
    }
    require_admin_everywhere(actor, accounts)?;
    user.status
        .transition(to)
        .map_err(|why| Error::FailedPrecondition(format!("user {}: {why}", user.id)))
}

/// Moves users to `to` in one transaction: all or none.
pub async fn set_status(
    store: &Store,
    actor: &Actor,
    ids: &[Uuid],
    to: UserStatus,
) -> Result<(Vec<User>, i64), Error> {
    if ids.is_empty() {
        return Err(Error::invalid("user_ids", "give at least one user"));
    }
    let mut tx = store.write(Some(actor.user_id)).await?;
    tx.lock_users(ids).await?;
    let mut ids_done = Vec::with_capacity(ids.len());
    for &id in ids {
        if ids_done.contains(&id) {
            continue;
        }
        let (user, accounts) = visible_user(&mut tx, actor, id).await?;
        may_set_status(actor, &user, &accounts, to)?;
        // Reactivating a user who never completed his invitation puts him
        // back to invited, with a new invitation (a trigger, migration
        // `credentials_and_outbox`, so that an import's `actif` does too).
        tx.set_user_status(id, to).await?;
        ids_done.push(id);
    }
    let users = tx.users_by_ids(&ids_done).await?;
    let revision = tx.commit().await?;
    Ok((users, revision))
}

/// What creating a principal answers: the new one, or a replay.
pub use crate::store::PrincipalCreated;

/// Creates a service principal (operators only), or answers what an
/// earlier call with the same request created.
pub async fn create_service_principal(
    store: &Store,
    actor: &Actor,
    name: &str,
    request: Option<&crate::domain::request::RequestKey>,
) -> Result<PrincipalCreated, Error> {
    actor.require_operator()?;
    store
        .create_principal_once(
            Some(actor.user_id),
            crate::domain::principal::PrincipalKind::Service,
            name,
            request,
        )
        .await
}
