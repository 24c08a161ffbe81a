//! Connection keys of users.

use uuid::Uuid;

use super::{db_error, tx::Tx};
use crate::domain::{key::KeyMeta, key::NewKey, Error};

impl Tx {
    /// Stores the hash of a new key.
    pub async fn insert_key(
        &mut self,
        user: Uuid,
        key: &NewKey,
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<KeyMeta, Error> {
        let id = Uuid::now_v7();
        sqlx::query!(
            "INSERT INTO connection_keys (id, user_id, secret_hash, display_prefix, expires_at) VALUES ($1, $2, $3, $4, $5)",
            id,
            user,
            &key.hash()[..],
            key.display_prefix(),
            expires_at
        )
        .execute(self.conn())
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.constraint() == Some("keys_not_while_invited") => {
                Error::FailedPrecondition(
                    "the user is invited: he gets his key when he completes his invitation".into(),
                )
            }
            _ => db_error(e),
        })?;
        self.key(id)
            .await?
            .ok_or_else(|| Error::Internal("inserted key vanished".into()))
    }

    /// Retires the user's live keys other than `keep`, `overlap_seconds` from
    /// the transaction's time (0: at once).
    pub async fn retire_keys(
        &mut self,
        user: Uuid,
        keep: Uuid,
        overlap_seconds: i32,
    ) -> Result<(), Error> {
        sqlx::query!(
            "UPDATE connection_keys SET revoked_at = $4::timestamptz + make_interval(secs => $3)
              WHERE user_id = $1 AND id <> $2 AND (revoked_at IS NULL OR revoked_at > $4::timestamptz + make_interval(secs => $3))",
            user,
            keep,
            f64::from(overlap_seconds),
            self.now()
        )
        .execute(self.conn())
        .await
        .map_err(db_error)?;
        Ok(())
    }

    pub async fn key(&mut self, id: Uuid) -> Result<Option<KeyMeta>, Error> {
        sqlx::query_as!(
            KeyMeta,
            "SELECT id, user_id, display_prefix, created_at, last_used_at, expires_at, revoked_at
               FROM connection_keys WHERE id = $1",
            id
        )
        .fetch_optional(self.conn())
        .await
        .map_err(db_error)
    }

    /// A user's keys, newest first.
    pub async fn keys_of(&mut self, user: Uuid) -> Result<Vec<KeyMeta>, Error> {
        sqlx::query_as!(
            KeyMeta,
            "SELECT id, user_id, display_prefix, created_at, last_used_at, expires_at, revoked_at
               FROM connection_keys WHERE user_id = $1 ORDER BY created_at DESC, id DESC",
            user
        )
        .fetch_all(self.conn())
        .await
        .map_err(db_error)
    }

    /// Stops a key of `user` at once.
    pub async fn revoke_key(&mut self, user: Uuid, id: Uuid) -> Result<(), Error> {
        sqlx::query!(
            "UPDATE connection_keys SET revoked_at = $3
              WHERE id = $1 AND user_id = $2 AND (revoked_at IS NULL OR revoked_at > $3)",
            id,
            user,
            self.now()
        )
        .execute(self.conn())
        .await
        .map_err(db_error)?;
        Ok(())
    }
}
