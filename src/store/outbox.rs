//! The outbox as its delivery worker sees it: claiming due messages for a
//! while (a lease, so that two replicas never send one at the same time),
//! drawing the token a message carries, and recording what became of it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{db_error, Store};
use crate::domain::{
    credential::{MessageKind, Token, TokenPurpose},
    user::UserStatus,
    Error,
};

/// A message claimed for delivery, with what rendering it needs.
#[derive(Debug, Clone)]
pub struct Due {
    pub id: i64,
    pub kind: MessageKind,
    pub user_id: Uuid,
    pub status: UserStatus,
    pub email: Option<String>,
    pub language: String,
    pub first_name: String,
    pub last_name: String,
    pub civility: Option<String>,
    pub login: String,
    pub user_key: Option<String>,
    pub account_code: Option<String>,
    pub params: serde_json::Value,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
}

/// What the operator sees of a message (`clef outbox`).
#[derive(Debug, Clone)]
pub struct MessageRow {
    pub id: i64,
    pub kind: String,
    pub recipient: Option<String>,
    pub state: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl Store {
    /// Claims up to `limit` due messages for `worker`, for `lease`: no
    /// other worker sees them until the lease ends (then they are due again:
    /// at least once).
    pub async fn claim_messages(
        &self,
        worker: Uuid,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<Due>, Error> {
        let rows = sqlx::query!(
            r#"WITH claimed AS (
                   UPDATE outbox o SET next_attempt_at = now() + make_interval(secs => $2), claimed_by = $3
                    WHERE o.id IN (SELECT id FROM outbox
                                    WHERE state = 'pending' AND next_attempt_at <= now()
                                    ORDER BY next_attempt_at, id
                                    LIMIT $1 FOR UPDATE SKIP LOCKED)
                   RETURNING o.id, o.kind, o.user_id, o.account_id, o.params, o.attempts, o.created_at)
               SELECT c.id, c.kind, c.user_id, c.params, c.attempts, c.created_at,
                      u.status, u.email, u.language, u.first_name AS "first_name?", u.last_name AS "last_name?",
                      u.civility, u.login AS "login!", u.user_key, a.code AS "account_code?"
                 FROM claimed c JOIN users u ON u.id = c.user_id
                 LEFT JOIN accounts a ON a.id = c.account_id
                ORDER BY c.id"#,
            limit,
            lease.as_secs_f64(),
            worker
        )
        .fetch_all(self.pool())
        .await
        .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                Some(Due {
                    id: r.id,
                    kind: MessageKind::parse(&r.kind)?,
                    user_id: r.user_id,
                    status: UserStatus::from_db(&r.status),
                    email: r.email,
                    language: r.language,
                    first_name: r.first_name.unwrap_or_default(),
                    last_name: r.last_name.unwrap_or_default(),
                    civility: r.civility,
                    login: r.login,
                    user_key: r.user_key,
                    account_code: r.account_code,
                    params: r.params,
                    attempts: r.attempts,
                    created_at: r.created_at,
                })
            })
            .collect())
    }

    /// Renews `worker`'s lease on message `id` just before it sends it, and
    /// draws the token it carries (`token`: its purpose and expiry), in one
    /// transaction that holds the message: `None` when the message is no
    /// longer this worker's to send (its lease ended and another took it,
    /// or a newer invitation or reset cancelled it), and then no token is
    /// drawn.
    pub async fn prepare_send(
        &self,
        worker: Uuid,
        id: i64,
        user: Uuid,
        lease: Duration,
        token: Option<(TokenPurpose, DateTime<Utc>)>,
    ) -> Result<Option<Option<Token>>, Error> {
        let mut tx = self.pool().begin().await.map_err(db_error)?;
        // The user first, then his message: the order in which the writes
        // that cancel a message (a resend, a completed invitation) lock
        // them, so that neither waits on the other.
        sqlx::query!("SELECT id FROM users WHERE id = $1 FOR KEY SHARE", user)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        let held = sqlx::query_scalar!(
            "UPDATE outbox SET next_attempt_at = now() + make_interval(secs => $3)
              WHERE id = $1 AND claimed_by = $2 AND state = 'pending' RETURNING id",
            id,
            worker,
            lease.as_secs_f64()
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        if held.is_none() {
            return Ok(None);
        }
        let drawn = match token {
            None => None,
            Some((purpose, expires_at)) => {
                let token = Token::generate(purpose)
                    .map_err(|e| Error::Internal(format!("os rng: {e}")))?;
                // Delivery of a message already audited, not a change
                // (migration `audit_from_triggers`).
                sqlx::query("SELECT set_config('clef.drawing', 'on', true)")
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                sqlx::query!(
                    "INSERT INTO credential_tokens (hash, user_id, purpose, expires_at) VALUES ($1, $2, $3, $4)",
                    &token.hash()[..],
                    user,
                    purpose.as_str(),
                    expires_at
                )
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                Some(token)
            }
        };
        tx.commit().await.map_err(db_error)?;
        Ok(Some(drawn))
    }

    /// The display names of principals (who granted rights).
    pub async fn display_name(&self, user: Uuid) -> Result<Option<String>, Error> {
        sqlx::query_scalar!("SELECT display_name FROM users WHERE id = $1", user)
            .fetch_optional(self.pool())
            .await
            .map_err(db_error)
    }

    /// The labels of the catalog's rights, in French and English.
    pub async fn right_labels(&self) -> Result<Vec<(String, String, String)>, Error> {
        let rows = sqlx::query!("SELECT code, label_fr, label_en FROM rights ORDER BY code")
            .fetch_all(self.pool())
            .await
            .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|r| (r.code, r.label_fr, r.label_en))
            .collect())
    }

    /// Records that `worker`'s message is done: `sent`, `logged` (no SMTP
    /// configured) or `cancelled` (no longer meant for anyone).
    pub async fn message_done(&self, worker: Uuid, id: i64, state: &str) -> Result<(), Error> {
        self.messages_done(worker, &[(id, state)]).await
    }

    /// [`Store::message_done`] for many messages of `worker`, in one
    /// statement.
    pub async fn messages_done(&self, worker: Uuid, done: &[(i64, &str)]) -> Result<(), Error> {
        let (ids, states): (Vec<i64>, Vec<String>) =
            done.iter().map(|(id, s)| (*id, s.to_string())).unzip();
        sqlx::query!(
            "UPDATE outbox o SET state = d.state, done_at = now(), attempts = o.attempts + 1
               FROM unnest($1::bigint[], $2::text[]) AS d(id, state)
              WHERE o.id = d.id AND o.state = 'pending' AND o.claimed_by = $3",
            &ids,
            &states,
            worker
        )
        .execute(self.pool())
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// Records a failed delivery: due again after `retry`, or parked
    /// (`None`) for an operator to look at.
    pub async fn message_failed(
        &self,
        worker: Uuid,
        id: i64,
        error: &str,
        retry: Option<Duration>,
    ) -> Result<(), Error> {
        sqlx::query!(
            "UPDATE outbox SET attempts = attempts + 1, last_error = $2,
                    state = CASE WHEN $3::float8 IS NULL THEN 'parked' ELSE 'pending' END,
                    done_at = CASE WHEN $3::float8 IS NULL THEN now() END,
                    next_attempt_at = now() + make_interval(secs => COALESCE($3::float8, 0))
              WHERE id = $1 AND state = 'pending' AND claimed_by = $4",
            id,
            error,
            retry.map(|d| d.as_secs_f64()),
            worker
        )
        .execute(self.pool())
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// Messages in `state` (all when `None`), newest first.
    pub async fn messages(
        &self,
        state: Option<&str>,
        limit: i64,
    ) -> Result<Vec<MessageRow>, Error> {
        let rows = sqlx::query!(
            "SELECT o.id, o.kind, u.email, o.state, o.attempts, o.last_error, o.created_at
               FROM outbox o JOIN users u ON u.id = o.user_id
              WHERE $1::text IS NULL OR o.state = $1
              ORDER BY o.id DESC LIMIT $2",
            state,
            limit
        )
        .fetch_all(self.pool())
        .await
        .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|r| MessageRow {
                id: r.id,
                kind: r.kind,
                recipient: r.email,
                state: r.state,
                attempts: r.attempts,
                last_error: r.last_error,
                created_at: r.created_at,
            })
            .collect())
    }

    /// Housekeeping: forgets login attempts idle for a day, tokens a week
    /// past their expiry or use, and delivered or cancelled messages after
    /// thirty days (parked ones stay for an operator). Returns the rows
    /// removed.
    pub async fn prune_credentials(&self) -> Result<u64, Error> {
        let mut removed = 0;
        for q in [
            "DELETE FROM login_failures WHERE last_failure_at < now() - interval '1 day'",
            "DELETE FROM credential_tokens WHERE COALESCE(used_at, expires_at) < now() - interval '7 days'",
            "DELETE FROM outbox WHERE state IN ('sent', 'logged', 'cancelled') AND done_at < now() - interval '30 days'",
        ] {
            removed += sqlx::query(q)
                .execute(self.pool())
                .await
                .map_err(db_error)?
                .rows_affected();
        }
        Ok(removed)
    }

    /// Puts parked messages (`ids`, or all when empty) back in line.
    pub async fn retry_parked(&self, ids: &[i64]) -> Result<u64, Error> {
        let done = sqlx::query!(
            "UPDATE outbox SET state = 'pending', next_attempt_at = now(), attempts = 0, done_at = NULL
              WHERE state = 'parked' AND (cardinality($1::bigint[]) = 0 OR id = ANY($1))",
            ids
        )
        .execute(self.pool())
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected())
    }
}
