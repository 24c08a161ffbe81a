//! `Tx`: one transaction. Read-only RPCs use `Store::read` (a consistent
//! snapshot); writes use `Store::write`, which takes the next revision first
//! and appends audit events under it.

use std::sync::Arc;

use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use super::{db_error, Store};
use crate::domain::Error;

/// The channel every write notifies, in the same transaction, so that every
/// replica's decision cache drops what the write changed.
pub const CHANGES_CHANNEL: &str = "clef_changes";

/// Above this many users, a write invalidates everything instead of listing
/// them (a NOTIFY payload is limited to 8000 bytes).
const MAX_LISTED_USERS: usize = 100;

/// What a committed write changed, as far as decisions are concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub revision: i64,
    /// Users whose keys, status, links or grants changed.
    pub users: Vec<Uuid>,
    /// Something that affects every decision (an account's status, a new
    /// account).
    pub everything: bool,
}

impl Changes {
    /// `"<revision>"`, `"<revision> *"` or `"<revision> <uuid> <uuid>..."`.
    pub fn payload(&self) -> String {
        if self.everything || self.users.len() > MAX_LISTED_USERS {
            return format!("{} *", self.revision);
        }
        let mut p = self.revision.to_string();
        for u in &self.users {
            p.push(' ');
            p.push_str(&u.to_string());
        }
        p
    }

    /// Parses a payload written by [`Changes::payload`].
    pub fn parse(payload: &str) -> Option<Self> {
        let mut parts = payload.split(' ');
        let revision = parts.next()?.parse().ok()?;
        let mut changes = Changes {
            revision,
            ..Default::default()
        };
        for p in parts {
            if p == "*" {
                changes.everything = true;
            } else {
                changes.users.push(p.parse().ok()?);
            }
        }
        Some(changes)
    }
}

/// Told of every write this process commits, right after the commit and
/// before the caller gets its answer (read-your-writes on this replica; other
/// replicas learn through the notification).
pub trait CommitObserver: Send + Sync + std::fmt::Debug {
    fn committed(&self, changes: &Changes);
}

/// One open transaction; dropped without `commit`, it rolls back.
pub struct Tx {
    inner: Transaction<'static, Postgres>,
    revision: Option<i64>,
    actor: Option<Uuid>,
    changes: Changes,
    observer: Option<Arc<dyn CommitObserver>>,
    /// A rehearsal never commits (see [`Store::rehearsal`]).
    rehearsal: bool,
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
            changes: Changes::default(),
            observer: None,
            rehearsal: false,
        })
    }

    /// A write transaction by `actor` (`None`: the command line), holding the
    /// next revision.
    pub async fn write(&self, actor: Option<Uuid>) -> Result<Tx, Error> {
        let mut inner = self.pool().begin().await.map_err(db_error)?;
        let revision = super::next_revision(&mut inner).await?;
        Ok(Tx::writing(inner, revision, actor, self.observer()))
    }

    /// A write transaction that is always rolled back (dry runs): its rows
    /// carry the next revision's number, but it does not take it, so it
    /// neither waits for other writers nor holds them up.
    pub async fn rehearsal(&self, actor: Option<Uuid>) -> Result<Tx, Error> {
        let mut inner = self.pool().begin().await.map_err(db_error)?;
        let revision = sqlx::query_scalar!("SELECT value + 1 AS \"next!\" FROM revision_counter")
            .fetch_one(&mut *inner)
            .await
            .map_err(db_error)?;
        Ok(Tx {
            rehearsal: true,
            ..Tx::writing(inner, revision, actor, None)
        })
    }
}

impl Tx {
    fn writing(
        inner: Transaction<'static, Postgres>,
        revision: i64,
        actor: Option<Uuid>,
        observer: Option<Arc<dyn CommitObserver>>,
    ) -> Self {
        Tx {
            inner,
            revision: Some(revision),
            actor,
            changes: Changes {
                revision,
                ..Default::default()
            },
            observer,
            rehearsal: false,
        }
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

    /// Records that `user`'s decisions may change with this write.
    pub(crate) fn touch_user(&mut self, user: Uuid) {
        if !self.changes.users.contains(&user) {
            self.changes.users.push(user);
        }
    }

    /// Records that this write may change any decision.
    pub(crate) fn touch_everything(&mut self) {
        self.changes.everything = true;
    }

    /// Commits; returns the revision of a write (0 for a read). A write
    /// notifies `clef_changes` in the same transaction.
    pub async fn commit(mut self) -> Result<i64, Error> {
        if self.rehearsal {
            self.inner.rollback().await.map_err(db_error)?;
            return Err(Error::Internal("a rehearsal cannot commit".into()));
        }
        let Some(revision) = self.revision else {
            self.inner.commit().await.map_err(db_error)?;
            return Ok(0);
        };
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANGES_CHANNEL)
            .bind(self.changes.payload())
            .execute(&mut *self.inner)
            .await
            .map_err(db_error)?;
        self.inner.commit().await.map_err(db_error)?;
        if let Some(observer) = &self.observer {
            observer.committed(&self.changes);
        }
        Ok(revision)
    }
}

impl Tx {
    /// Marks a point a failed line can roll back to without losing the rest
    /// of the transaction.
    pub async fn savepoint(&mut self) -> Result<(), Error> {
        sqlx::query("SAVEPOINT line")
            .execute(&mut *self.inner)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Undoes everything since [`Tx::savepoint`]. Users touched since then
    /// stay in the change notice: a superfluous invalidation is harmless.
    pub async fn rollback_to_savepoint(&mut self) -> Result<(), Error> {
        sqlx::query("ROLLBACK TO SAVEPOINT line")
            .execute(&mut *self.inner)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    pub async fn release_savepoint(&mut self) -> Result<(), Error> {
        sqlx::query("RELEASE SAVEPOINT line")
            .execute(&mut *self.inner)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Rolls back (dry runs, failed atomic imports).
    pub async fn rollback(self) -> Result<(), Error> {
        self.inner.rollback().await.map_err(db_error)
    }
}
