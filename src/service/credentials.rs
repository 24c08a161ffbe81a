//! Invitations, passwords and resets (`CredentialService`).
//!
//! The callers are the portals that show the forms (service principals) and
//! operators; admins may also resend an invitation and set a password for
//! the users they manage. The end user's secret comes in the request.
//! Every refusal of a login is the one `Unauthenticated`, after the same
//! work (a password verified, against a dummy hash when there is no user),
//! and every unusable token the one `FailedPrecondition` of its purpose.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{managed_user, require_admin_everywhere, users::UpdateUser};
use crate::{
    domain::{
        audit::Action,
        credential::{
            lock_at, token_refused, MessageKind, Password, Token, TokenPurpose, RESET_INTERVAL,
        },
        key::NewKey,
        principal::{Actor, PrincipalKind},
        user::{parse_login, User, UserStatus},
        Error,
    },
    hasher::Hasher,
    store::{Store, Tx},
};

/// An invitation just issued: its token, shown once.
#[derive(Debug)]
pub struct Invitation {
    pub token: Token,
    pub expires_at: DateTime<Utc>,
}

/// Issues an invitation to `user` inside `tx`: kills the earlier ones,
/// stores the new token's hash, and puts the invitation message in the
/// outbox (it carries a token of its own, drawn as it is sent).
pub(crate) async fn issue_invitation(
    tx: &mut Tx,
    user: Uuid,
    account: Option<Uuid>,
) -> Result<Invitation, Error> {
    tx.retire_tokens(user, TokenPurpose::Invitation).await?;
    // The message first: its audit event, which names the account, is the
    // transaction's one (the token's would not).
    let by = tx.actor();
    tx.enqueue(
        MessageKind::Invitation,
        user,
        account,
        serde_json::json!({ "granted_by": by }),
    )
    .await?;
    let token = Token::generate(TokenPurpose::Invitation).map_err(rng_error)?;
    let expires_at = tx.now() + validity(TokenPurpose::Invitation);
    tx.insert_token(user, &token, expires_at).await?;
    Ok(Invitation { token, expires_at })
}

fn validity(purpose: TokenPurpose) -> chrono::Duration {
    chrono::Duration::from_std(purpose.validity()).expect("validity fits")
}

fn rng_error(e: getrandom::Error) -> Error {
    Error::Internal(format!("os rng: {e}"))
}

/// Refuses anyone but a service principal (a portal) or an operator.
fn require_portal(actor: &Actor) -> Result<(), Error> {
    match actor.kind {
        PrincipalKind::Service | PrincipalKind::Operator => Ok(()),
        _ => Err(Error::PermissionDenied(
            "this operation is for service principals (portals) and operators".into(),
        )),
    }
}

/// Whether the actor may act on any user's credentials (portals and
/// operators), rather than only on those he manages.
fn is_portal(actor: &Actor) -> bool {
    require_portal(actor).is_ok()
}

fn new_password(raw: &str, field: &str) -> Result<Password, Error> {
    Password::new(raw).map_err(|why| Error::invalid(field, why))
}

/// `CompleteInvitation`, decoded. `Debug` shows no secret.
pub struct CompleteInvitation {
    pub token: String,
    /// Empty: keep the login proposed at the invitation.
    pub login: String,
    pub password: String,
    /// Profile corrections, as `UpdateUser` takes them (`id` unused).
    pub corrections: UpdateUser,
}

impl std::fmt::Debug for CompleteInvitation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompleteInvitation")
            .field("login", &self.login)
            .field("corrections", &self.corrections)
            .finish_non_exhaustive()
    }
}

/// An invitation completed: the user, now active, and his first key.
#[derive(Debug)]
pub struct Completed {
    pub user: User,
    pub key: NewKey,
    pub revision: i64,
}

/// `CompleteInvitation`: one transaction makes the invited user active with
/// his login, password (hashed before it begins) and first connection key.
pub async fn complete_invitation(
    store: &Store,
    hasher: &Hasher,
    actor: &Actor,
    req: CompleteInvitation,
) -> Result<Completed, Error> {
    require_portal(actor)?;
    let password = new_password(&req.password, "password");
    let login = match req.login.trim() {
        "" => Ok(None),
        l => parse_login(l)
            .map(Some)
            .map_err(|why| Error::invalid("login", why)),
    };
    let (password, login) = match (password, login) {
        (Ok(p), Ok(l)) => (p, l),
        (Err(Error::Invalid(mut a)), Err(Error::Invalid(b))) => {
            a.0.extend(b.0);
            return Err(Error::Invalid(a));
        }
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    let refused = || token_refused(TokenPurpose::Invitation);
    let hash = Token::presented(TokenPurpose::Invitation, &req.token).ok_or_else(refused)?;
    let phc = hasher.hash(&password).await?;
    let mut tx = store.write(Some(actor.user_id)).await?;
    let user_id = tx
        .take_token(TokenPurpose::Invitation, &hash)
        .await?
        .ok_or_else(refused)?;
    tx.lock_users(&[user_id]).await?;
    let user = tx.user(user_id).await?.ok_or_else(refused)?;
    if user.status != UserStatus::Invited {
        return Err(refused());
    }
    let login = login.unwrap_or_else(|| user.login.clone());
    // A login that reads as an email is his own email, never someone
    // else's (nobody may log in as "zoe@example.com" but Zoé).
    if login.contains('@')
        && login != user.login
        && !user
            .profile
            .email
            .as_ref()
            .is_some_and(|e| e.eq_ignore_ascii_case(&login))
    {
        return Err(Error::invalid(
            "login",
            "a login with an @ must be your own email; choose another",
        ));
    }
    tx.complete_invited_user(user.id, &login).await?;
    let accounts = tx.linked_accounts(user.id, actor.user_id).await?;
    let user =
        super::users::rewrite_profile(&mut tx, &user, &accounts, &req.corrections, &login).await?;
    tx.retire_tokens(user.id, TokenPurpose::Invitation).await?;
    tx.set_password(user.id, &phc, false).await?;
    let key = NewKey::generate().map_err(rng_error)?;
    tx.insert_key(user.id, &key, None).await?;
    let rights: Vec<(String, String)> = tx.rights_held(user.id).await?;
    tx.enqueue(
        MessageKind::AccountCreated,
        user.id,
        None,
        serde_json::json!({ "rights": rights }),
    )
    .await?;
    let revision = tx.commit().await?;
    Ok(Completed {
        user: User { revision, ..user },
        key,
        revision,
    })
}

/// `ResendInvitation`: a new invitation (mailed), the old ones dead. Its
/// token is returned to a portal or an operator (a tool that delivers it
/// itself), never to an admin: he would hold the user's first password.
pub async fn resend_invitation(
    store: &Store,
    actor: &Actor,
    user: Uuid,
) -> Result<(Invitation, i64), Error> {
    let mut tx = store.write(Some(actor.user_id)).await?;
    tx.lock_users(&[user]).await?;
    let target = credential_target(&mut tx, actor, user).await?;
    if target.status != UserStatus::Invited {
        return Err(Error::FailedPrecondition(format!(
            "the user is {}, not invited",
            target.status.as_str()
        )));
    }
    let account = tx
        .linked_accounts(user, actor.user_id)
        .await?
        .into_iter()
        .find(|a| a.actor_is_admin)
        .map(|a| a.account_id);
    let mut invitation = issue_invitation(&mut tx, user, account).await?;
    if !is_portal(actor) {
        invitation.token = Token::withheld(TokenPurpose::Invitation);
    }
    let revision = tx.commit().await?;
    Ok((invitation, revision))
}

/// The user whose credentials the actor acts on: anyone for a portal or
/// an operator; for an admin, a user whose every account he administers
/// (a credential is the user's everywhere: the admin of one account of a
/// shared advanced user must not take him over on the others).
async fn credential_target(tx: &mut Tx, actor: &Actor, user: Uuid) -> Result<User, Error> {
    if is_portal(actor) {
        tx.user(user)
            .await?
            .ok_or_else(|| Error::NotFound("user".into()))
    } else {
        let (user, accounts) = managed_user(tx, actor, user).await?;
        require_admin_everywhere(actor, &accounts)?;
        Ok(user)
    }
}

/// Who logged in (`AuthenticatePassword`).
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub user_id: Uuid,
    pub kind: PrincipalKind,
    pub status: UserStatus,
    pub must_change: bool,
}

/// Checks a login and password. Unknown login, wrong password, inactive
/// user, no password, locked: the same `Unauthenticated`, after verifying
/// a hash (the dummy one when there is nothing to verify). Each attempt at
/// a login, known or not, counts as a failure as it starts, so that
/// attempts in parallel cannot outrun the lock and an unknown login costs
/// what a known one does; a success forgets them, and rehashes a hash made
/// at another cost (after the answer).
pub async fn authenticate(
    store: &Store,
    hasher: &Hasher,
    actor: &Actor,
    login: &str,
    password: &str,
) -> Result<Authenticated, Error> {
    require_portal(actor)?;
    verify_login(store, hasher, login, password).await
}

async fn verify_login(
    store: &Store,
    hasher: &Hasher,
    login: &str,
    password: &str,
) -> Result<Authenticated, Error> {
    // What cannot be anyone's login is refused as such (it says nothing of
    // who exists) and never counted.
    let login = parse_login(login).map_err(|why| Error::invalid("login", why))?;
    let login = login.as_str();
    let Some(password) = Password::presented(password) else {
        return Err(Error::invalid("password", "is longer than any password"));
    };
    let now = store.clock().now();
    // Every login, known or not, is counted and locked alike.
    let earlier = store.count_login_attempt(login, now).await?;
    let locked = lock_at(earlier.failures, earlier.last, now).is_some();
    let record = store.login_record(login).await?;
    let usable = record.as_ref().filter(|r| {
        r.status == UserStatus::Active
            && matches!(r.kind, PrincipalKind::Standard | PrincipalKind::Advanced)
            && !locked
    });
    let hash = usable.and_then(|r| r.hash.as_deref());
    let verified = hasher.verify(hash, &password).await?;
    match (usable, verified.matches) {
        (Some(r), true) => {
            let (user, old, new) = (r.user_id, r.hash.clone(), verified.rehashed);
            let who = Authenticated {
                user_id: r.user_id,
                kind: r.kind,
                status: r.status,
                must_change: r.must_change,
            };
            store.forget_login_failures(login).await?;
            if let (Some(old), Some(new)) = (old, new) {
                // After the answer.
                let store = store.clone();
                tokio::spawn(async move {
                    if let Err(e) = store.rehash_password(user, &old, &new).await {
                        tracing::warn!(error = %e, "a password could not be rehashed");
                    }
                });
            }
            Ok(who)
        }
        _ => Err(Error::Unauthenticated),
    }
}

/// `ChangePassword`: the current password proves the user (as a login
/// would, throttled alike); the new one is his own (no change required).
pub async fn change_password(
    store: &Store,
    hasher: &Hasher,
    actor: &Actor,
    login: &str,
    current: &str,
    new: &str,
) -> Result<i64, Error> {
    require_portal(actor)?;
    let new = new_password(new, "new_password")?;
    if Password::presented(current).is_some_and(|c| c.expose() == new.expose()) {
        return Err(Error::invalid(
            "new_password",
            "must differ from the current password",
        ));
    }
    let who = verify_login(store, hasher, login, current).await?;
    let phc = hasher.hash(&new).await?;
    let mut tx = store.write(Some(actor.user_id)).await?;
    tx.set_password(who.user_id, &phc, false).await?;
    tx.retire_tokens(who.user_id, TokenPurpose::PasswordReset)
        .await?;
    tx.commit().await
}

/// `RequestPasswordReset`: whatever the login or email names, the same
/// answer. When it names an active user with an email, and he was sent no
/// reset link in the last minute, a reset message (its token drawn as it
/// is sent) goes out; the write happens after the answer, so that its time
/// tells nothing either.
pub async fn request_reset(
    store: &Store,
    actor: &Actor,
    login: &str,
    email: &str,
) -> Result<(), Error> {
    require_portal(actor)?;
    let (login, email) = (login.trim(), email.trim());
    if login.is_empty() == email.is_empty() {
        return Err(Error::invalid("login", "give either a login or an email"));
    }
    if !login.is_empty() {
        parse_login(login).map_err(|why| Error::invalid("login", why))?;
    }
    if email.chars().count() > 254 || email.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Error::invalid("email", "is not an email address"));
    }
    let mut tx = store.read().await?;
    let since = tx.now() - chrono::Duration::from_std(RESET_INTERVAL).expect("fits");
    let user = tx.resettable_user(login, email, since).await?;
    tx.commit().await?;
    if let Some(user) = user {
        let store = store.clone();
        let actor = actor.user_id;
        tokio::spawn(async move {
            let write = async {
                let mut tx = store.write(Some(actor)).await?;
                tx.retire_tokens(user, TokenPurpose::PasswordReset).await?;
                tx.enqueue(
                    MessageKind::PasswordReset,
                    user,
                    None,
                    serde_json::json!({}),
                )
                .await?;
                tx.commit().await
            };
            if let Err(e) = write.await {
                tracing::warn!(error = %e, "a password reset could not be queued");
            }
        });
    }
    Ok(())
}

/// `ResetPassword`: a reset token and the new password.
pub async fn reset_password(
    store: &Store,
    hasher: &Hasher,
    actor: &Actor,
    token: &str,
    new: &str,
) -> Result<i64, Error> {
    require_portal(actor)?;
    let new = new_password(new, "new_password")?;
    let refused = || token_refused(TokenPurpose::PasswordReset);
    let hash = Token::presented(TokenPurpose::PasswordReset, token).ok_or_else(refused)?;
    let phc = hasher.hash(&new).await?;
    let mut tx = store.write(Some(actor.user_id)).await?;
    let user = tx
        .take_token(TokenPurpose::PasswordReset, &hash)
        .await?
        .ok_or_else(refused)?;
    let status = tx.user(user).await?.map(|u| u.status);
    if status != Some(UserStatus::Active) {
        return Err(refused());
    }
    tx.retire_tokens(user, TokenPurpose::PasswordReset).await?;
    tx.set_password(user, &phc, false).await?;
    tx.commit().await
}

/// `SetPassword`: a password chosen for the user (seed 003: users without
/// an email), to be changed at his next login unless `must_change` is
/// false. Clears his lock.
pub async fn set_password(
    store: &Store,
    hasher: &Hasher,
    actor: &Actor,
    user: Uuid,
    password: &str,
    must_change: bool,
) -> Result<i64, Error> {
    let password = new_password(password, "password")?;
    {
        // Who may, before paying for a hash.
        let mut tx = store.read().await?;
        let target = credential_target(&mut tx, actor, user).await?;
        settable(actor, &target)?;
        tx.commit().await?;
    }
    let phc = hasher.hash(&password).await?;
    let mut tx = store.write(Some(actor.user_id)).await?;
    tx.lock_users(&[user]).await?;
    let target = credential_target(&mut tx, actor, user).await?;
    settable(actor, &target)?;
    tx.set_password(user, &phc, must_change).await?;
    tx.commit().await
}

fn settable(actor: &Actor, user: &User) -> Result<(), Error> {
    // Seed 003: an admin sets the password of a user without an email; one
    // with an email chooses his own (RequestPasswordReset).
    if !is_portal(actor) && user.profile.email.is_some() {
        return Err(Error::FailedPrecondition(
            "the user has an email: he chooses his password with a reset link (RequestPasswordReset)"
                .into(),
        ));
    }
    match user.status {
        UserStatus::Active | UserStatus::Deactivated => Ok(()),
        UserStatus::Invited => Err(Error::FailedPrecondition(
            "the user has not completed his invitation: resend it instead".into(),
        )),
        UserStatus::Archived => Err(Error::FailedPrecondition("the user is archived".into())),
    }
}

/// `UnlockPassword`: forgets a user's failed logins and lock.
pub async fn unlock(store: &Store, actor: &Actor, user: Uuid) -> Result<i64, Error> {
    let mut tx = store.write(Some(actor.user_id)).await?;
    credential_target(&mut tx, actor, user).await?;
    tx.clear_login_lock(user).await?;
    // The failed logins leave no row to audit: the event is written here.
    tx.audit_user_event(Action::PasswordLockCleared, user)
        .await?;
    tx.commit().await
}
