//! Idempotent creates: `request_ids`, read and written inside the create's
//! own write transaction.

use uuid::Uuid;

use super::{db_error, Tx};
use crate::domain::{request::RequestKey, Error};

impl Tx {
    /// What an earlier create of this transaction's actor with the same
    /// request id made (its id and revision), when it was the same request;
    /// `AlreadyExists` naming the request id when it was another. Writers
    /// hold the revision counter, so a concurrent retry waits for the first
    /// to commit and then finds its row here.
    pub async fn replayed(&mut self, key: &RequestKey) -> Result<Option<(Uuid, i64)>, Error> {
        let actor = self.actor().unwrap_or_else(Uuid::nil);
        let row = sqlx::query!(
            "SELECT method, digest, result_id, revision FROM request_ids
              WHERE actor_id = $1 AND request_id = $2",
            actor,
            key.id()
        )
        .fetch_optional(self.conn())
        .await
        .map_err(db_error)?;
        match row {
            None => Ok(None),
            Some(r) if key.same_as(&r.method, r.digest.as_deref()) => {
                Ok(Some((r.result_id, r.revision)))
            }
            Some(_) => Err(Error::already_exists(format!(
                "request_id {:?}, given to a different request,",
                key.id()
            ))),
        }
    }

    /// Records that this write created `result` for the request `key`.
    pub async fn record_request(&mut self, key: &RequestKey, result: Uuid) -> Result<(), Error> {
        let revision = self.revision()?;
        let actor = self.actor().unwrap_or_else(Uuid::nil);
        sqlx::query!(
            "INSERT INTO request_ids (actor_id, request_id, method, digest, result_id, revision)
             VALUES ($1, $2, $3, $4, $5, $6)",
            actor,
            key.id(),
            key.method(),
            &key.digest()[..],
            result,
            revision
        )
        .execute(self.conn())
        .await
        .map_err(db_error)?;
        Ok(())
    }
}
