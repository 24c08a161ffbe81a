//! `Tx`: one transaction. Read-only RPCs use `Store::read` (a consistent
//! snapshot); writes use `Store::write`, which takes the next revision first
//! and appends audit events under it.

use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use super::{db_error, Store};
use crate::domain::Error;

/// One open transaction; dropped without `commit`, it rolls back.
pub struct Tx {
    inner: Transaction<'static, Postgres>,
    revision: Option<i64>,
    actor: Option<Uuid>,
}

impl Store {
    /// A read-only transaction.
    pub async fn read(&self) -> Result<Tx, Error> {
        let mut inner = self.pool().begin().await.map_err(db_error)?;
        sqlx::query("SET TRANSACTION READ ONLY")
            .execute(&mut *inner)
            .await
            .map_err(db_error)?;
        Ok(Tx {
            inner,
            revision: None,
            actor: None,
        })
    }

    /// A write transaction by `actor` (`None`: the command line), holding the
    /// next revision.
    pub async fn write(&self, actor: Option<Uuid>) -> Result<Tx, Error> {
        let mut inner = self.pool().begin().await.map_err(db_error)?;
        let revision = super::next_revision(&mut inner).await?;
        Ok(Tx {
            inner,
            revision: Some(revision),
            actor,
        })
    }
}

impl Tx {
    pub(crate) fn conn(&mut self) -> &mut PgConnection {
        &mut self.inner
    }

    /// The revision this write commits at.
    pub fn revision(&self) -> Result<i64, Error> {
        self.revision
            .ok_or_else(|| Error::Internal("write attempted in a read-only transaction".into()))
    }

    pub(crate) fn actor(&self) -> Option<Uuid> {
        self.actor
    }

    /// Appends an audit event of this write.
    pub async fn audit(&mut self, action: &str, target: &str, summary: &str) -> Result<(), Error> {
        let revision = self.revision()?;
        let actor = self.actor;
        super::audit(&mut self.inner, revision, actor, action, target, summary).await
    }

    /// Commits; returns the revision of a write (0 for a read).
    pub async fn commit(self) -> Result<i64, Error> {
        self.inner.commit().await.map_err(db_error)?;
        Ok(self.revision.unwrap_or(0))
    }
}
