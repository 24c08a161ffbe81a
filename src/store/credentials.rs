//! Passwords, login throttling, invitation and reset tokens, and the
//! messages a change puts in the outbox.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{db_error, tx::Tx, Store};
use crate::domain::{
    credential::{lock_at, MessageKind, Token, TokenHash, TokenPurpose},
    principal::PrincipalKind,
    user::UserStatus,
    Error,
};

/// What a password login needs to know of the user behind a login.
pub struct LoginRecord {
    pub user_id: Uuid,
    pub kind: PrincipalKind,
    pub status: UserStatus,
    pub hash: Option<String>,
    pub must_change: bool,
}

impl std::fmt::Debug for LoginRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRecord")
            .field("user_id", &self.user_id)
            .field("kind", &self.kind)
            .field("status", &self.status)
            .field("has_password", &self.hash.is_some())
            .finish()
    }
}

/// The attempts before this one that did not succeed, and when the last
/// was.
#[derive(Debug, Clone, Copy, Default)]
pub struct EarlierAttempts {
    pub failures: i32,
    pub last: Option<DateTime<Utc>>,
}

/// What an admin sees of a user's password.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PasswordState {
    pub set: bool,
    pub must_change: bool,
    pub failures: i32,
    /// When the last of them was.
    pub last_failure: Option<DateTime<Utc>>,
    /// Until when they lock his logins, at the transaction's time.
    pub locked_until: Option<DateTime<Utc>>,
}

impl Store {
    /// The user whose login is `login` (any kind, any status), with his
    /// password and lock.
    pub async fn login_record(&self, login: &str) -> Result<Option<LoginRecord>, Error> {
        self.fail_fast()?;
        let row = sqlx::query!(
            r#"SELECT u.id, u.kind, u.status, p.hash AS "hash?", p.must_change AS "must_change?"
                 FROM users u
                 LEFT JOIN passwords p ON p.user_id = u.id
                WHERE u.login = $1"#,
            login
        )
        .fetch_optional(self.pool())
        .await
        .map_err(db_error)?;
        row.map(|r| {
            Ok(LoginRecord {
                user_id: r.id,
                kind: PrincipalKind::from_db(&r.kind)?,
                status: UserStatus::from_db(&r.status),
                hash: r.hash,
                must_change: r.must_change.unwrap_or(false),
            })
        })
        .transpose()
    }

    /// Counts an attempt at `login` (known or not) as a failure as it
    /// starts (a success forgets it): the count and the lock it implies are
    /// then the same for attempts racing each other. Returns the attempts
    /// before this one.
    pub async fn count_login_attempt(
        &self,
        login: &str,
        now: DateTime<Utc>,
    ) -> Result<EarlierAttempts, Error> {
        self.fail_fast()?;
        let row = sqlx::query!(
            r#"WITH earlier AS (SELECT failures, last_failure_at FROM login_failures
                                 WHERE login = $1 FOR UPDATE),
                    counted AS (INSERT INTO login_failures (login, failures, last_failure_at)
                                VALUES ($1, 1, $2)
                                ON CONFLICT (login) DO UPDATE
                                   SET failures = login_failures.failures + 1, last_failure_at = $2
                                RETURNING failures)
               SELECT (SELECT failures FROM earlier) AS failures,
                      (SELECT last_failure_at FROM earlier) AS last,
                      (SELECT failures FROM counted) AS "now!""#,
            login,
            now
        )
        .fetch_one(self.pool())
        .await
        .map_err(db_error)?;
        Ok(EarlierAttempts {
            failures: row.failures.unwrap_or(0),
            last: row.last,
        })
    }

    /// Forgets the failed attempts at `login` (it has just succeeded).
    pub async fn forget_login_failures(&self, login: &str) -> Result<(), Error> {
        sqlx::query!("DELETE FROM login_failures WHERE login = $1", login)
            .execute(self.pool())
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Replaces `user`'s hash by the same password hashed at today's cost,
    /// unless the password changed meanwhile. Not a change of the domain.
    pub async fn rehash_password(&self, user: Uuid, old: &str, new: &str) -> Result<(), Error> {
        sqlx::query!(
            "UPDATE passwords SET hash = $3 WHERE user_id = $1 AND hash = $2",
            user,
            old,
            new
        )
        .execute(self.pool())
        .await
        .map_err(db_error)?;
        Ok(())
    }
}

impl Tx {
    /// Sets `user`'s password (a PHC string) and forgets his failed logins.
    pub async fn set_password(
        &mut self,
        user: Uuid,
        hash: &str,
        must_change: bool,
    ) -> Result<(), Error> {
        let revision = self.revision()?;
        sqlx::query!(
            "INSERT INTO passwords (user_id, hash, must_change, revision) VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id) DO UPDATE SET hash = $2, must_change = $3, set_at = now(), revision = $4",
            user,
            hash,
            must_change,
            revision
        )
        .execute(self.conn())
        .await
        .map_err(db_error)?;
        self.clear_login_lock(user).await
    }

    /// Forgets the failed logins and lock of `user`'s login.
    pub async fn clear_login_lock(&mut self, user: Uuid) -> Result<(), Error> {
        sqlx::query!(
            "DELETE FROM login_failures WHERE login = (SELECT login FROM users WHERE id = $1)",
            user
        )
        .execute(self.conn())
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// What an admin sees of `user`'s password.
    pub async fn password_state(&mut self, user: Uuid) -> Result<PasswordState, Error> {
        let row = sqlx::query!(
            r#"SELECT EXISTS (SELECT 1 FROM passwords WHERE user_id = $1) AS "set!",
                      COALESCE((SELECT must_change FROM passwords WHERE user_id = $1), false) AS "must_change!",
                      COALESCE((SELECT f.failures FROM login_failures f JOIN users u ON u.login = f.login
                                 WHERE u.id = $1), 0) AS "failures!",
                      (SELECT f.last_failure_at FROM login_failures f JOIN users u ON u.login = f.login
                        WHERE u.id = $1) AS last_failure"#,
            user
        )
        .fetch_one(self.conn())
        .await
        .map_err(db_error)?;
        Ok(PasswordState {
            set: row.set,
            must_change: row.must_change,
            failures: row.failures,
            last_failure: row.last_failure,
            locked_until: lock_at(row.failures, row.last_failure, self.now()),
        })
    }

    /// Stores the hash of a new token of `user`, valid until `expires_at`.
    pub async fn insert_token(
        &mut self,
        user: Uuid,
        token: &Token,
        expires_at: DateTime<Utc>,
    ) -> Result<(), Error> {
        sqlx::query!(
            "INSERT INTO credential_tokens (hash, user_id, purpose, expires_at) VALUES ($1, $2, $3, $4)",
            &token.hash()[..],
            user,
            token.purpose().as_str(),
            expires_at
        )
        .execute(self.conn())
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// Uses a token: the user it belongs to, if it is of `purpose`, unused
    /// and unexpired at the transaction's time. It is then used.
    pub async fn take_token(
        &mut self,
        purpose: TokenPurpose,
        hash: &TokenHash,
    ) -> Result<Option<Uuid>, Error> {
        sqlx::query_scalar!(
            "UPDATE credential_tokens SET used_at = $3
              WHERE hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3
             RETURNING user_id",
            &hash[..],
            purpose.as_str(),
            self.now()
        )
        .fetch_optional(self.conn())
        .await
        .map_err(db_error)
    }

    /// Kills every live token of `user` for `purpose`, and the messages
    /// that would draw new ones.
    pub async fn retire_tokens(&mut self, user: Uuid, purpose: TokenPurpose) -> Result<(), Error> {
        sqlx::query!(
            "UPDATE credential_tokens SET used_at = $3 WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL",
            user,
            purpose.as_str(),
            self.now()
        )
        .execute(self.conn())
        .await
        .map_err(db_error)?;
        sqlx::query!(
            "UPDATE outbox SET state = 'cancelled', done_at = now()
              WHERE user_id = $1 AND kind = $2 AND state = 'pending'",
            user,
            purpose.as_str()
        )
        .execute(self.conn())
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// Puts a message to `user` in the outbox, delivered once this
    /// transaction commits.
    pub async fn enqueue(
        &mut self,
        kind: MessageKind,
        user: Uuid,
        account: Option<Uuid>,
        params: serde_json::Value,
    ) -> Result<(), Error> {
        self.enqueue_many(kind, &[user], account, params).await
    }

    /// The same message to many users (an import's batch).
    pub async fn enqueue_many(
        &mut self,
        kind: MessageKind,
        users: &[Uuid],
        account: Option<Uuid>,
        params: serde_json::Value,
    ) -> Result<(), Error> {
        if users.is_empty() {
            return Ok(());
        }
        sqlx::query!(
            "INSERT INTO outbox (kind, user_id, account_id, params)
             SELECT $1, u, $3, $4 FROM unnest($2::uuid[]) u",
            kind.as_str(),
            users,
            account,
            params
        )
        .execute(self.conn())
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// The rights `user` holds, as (account code, right code), for the
    /// message that confirms his account.
    pub async fn rights_held(&mut self, user: Uuid) -> Result<Vec<(String, String)>, Error> {
        let rows = sqlx::query!(
            r#"SELECT DISTINCT a.code, g.right_code AS "right_code!"
               FROM held_rights g JOIN accounts a ON a.id = g.account_id
              WHERE g.user_id = $1 AND (g.expires_at IS NULL OR g.expires_at > $2)
              ORDER BY a.code, 2"#,
            user,
            self.now()
        )
        .fetch_all(self.conn())
        .await
        .map_err(db_error)?;
        Ok(rows.into_iter().map(|r| (r.code, r.right_code)).collect())
    }

    /// The active user (standard or advanced) with an email whose login is
    /// `login`, or whose email is `email` (one of them empty), unless a
    /// reset link was queued for him after `since`.
    pub async fn resettable_user(
        &mut self,
        login: &str,
        email: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<Uuid>, Error> {
        sqlx::query_scalar!(
            "SELECT id FROM users u
              WHERE status = 'active' AND kind IN ('standard', 'advanced') AND email IS NOT NULL
                AND (($1 <> '' AND login = $1) OR ($2 <> '' AND lower(email) = lower($2)))
                AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.user_id = u.id
                                   AND o.kind = 'password_reset' AND o.created_at > $3)
              LIMIT 1",
            login,
            email,
            since
        )
        .fetch_optional(self.conn())
        .await
        .map_err(db_error)
    }

    /// Sets the login and status of an invited user who completes his
    /// invitation (his login was only proposed until now). The caller then
    /// rewrites his profile, whose search text carries the login.
    pub async fn complete_invited_user(&mut self, user: Uuid, login: &str) -> Result<(), Error> {
        let revision = self.revision()?;
        sqlx::query!(
            "UPDATE users SET login = $2, status = 'active', updated_at = now(), revision = $3 WHERE id = $1 AND status = 'invited'",
            user,
            login,
            revision
        )
        .execute(self.conn())
        .await
        .map_err(super::users::user_error)?;
        Ok(())
    }
}
