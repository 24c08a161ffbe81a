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

/// Users listed per notice: a NOTIFY payload is limited to 8000 bytes, and a
/// listed user takes 37 of them.
const USERS_PER_NOTICE: usize = 200;

/// Above this many users, a write invalidates everything instead of listing
/// them. An import batch (500 lines) stays well under it, so that a large
/// import does not empty every replica's decision cache at each commit.
const MAX_LISTED_USERS: usize = 10_000;

/// What a committed write changed, as far as decisions are concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub revision: i64,
    /// Users whose keys, status, links or grants changed.
    pub users: Vec<Uuid>,
    /// Something that affects every decision (an account's status, a new
    /// account).
    pub everything: bool,
    /// A notice that more notices of the same revision follow (a write that
    /// lists many users sends several, in order; only the last one tells
    /// that the revision is complete).
    pub continued: bool,
}

impl Changes {
    /// The notices of this write, in the order they must be sent: one
    /// `"<revision> *"`, or one `"<revision>"`, or notices of up to
    /// [`USERS_PER_NOTICE`] users each, `"<revision>+ <uuid> <uuid>..."`
    /// for all but the last, which has no `+`.
    pub fn payloads(&self) -> Vec<String> {
        if self.everything || self.users.len() > MAX_LISTED_USERS {
            return vec![format!("{} *", self.revision)];
        }
        if self.users.is_empty() {
            return vec![self.revision.to_string()];
        }
        let chunks = self.users.chunks(USERS_PER_NOTICE);
        let last = chunks.len() - 1;
        chunks
            .enumerate()
            .map(|(i, users)| {
                let mut p = self.revision.to_string();
                if i < last {
                    p.push('+');
                }
                for u in users {
                    p.push(' ');
                    p.push_str(&u.to_string());
                }
                p
            })
            .collect()
    }

    /// Parses a payload written by [`Changes::payload`].
    pub fn parse(payload: &str) -> Option<Self> {
        let mut parts = payload.split(' ');
        let first = parts.next()?;
        let (revision, continued) = match first.strip_suffix('+') {
            Some(revision) => (revision, true),
            None => (first, false),
        };
        let mut changes = Changes {
            revision: revision.parse().ok()?,
            continued,
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
        // One statement per notice keeps them in order: listeners advance
        // their revision on the last one only.
        for payload in self.changes.payloads() {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANGES_CHANNEL)
                .bind(payload)
                .execute(&mut *self.inner)
                .await
                .map_err(db_error)?;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn users(n: usize) -> Vec<Uuid> {
        (0..n).map(|_| Uuid::new_v4()).collect()
    }

    #[test]
    fn many_users_are_listed_over_several_notices_the_last_one_closing_the_revision() {
        let changes = Changes {
            revision: 42,
            users: users(450),
            ..Default::default()
        };
        let payloads = changes.payloads();
        assert_eq!(payloads.len(), 3);
        let parsed: Vec<Changes> = payloads
            .iter()
            .map(|p| {
                assert!(p.len() < 8000, "a NOTIFY payload is limited to 8000 bytes");
                Changes::parse(p).expect("readable notice")
            })
            .collect();
        assert!(parsed.iter().all(|c| c.revision == 42 && !c.everything));
        assert_eq!(
            parsed.iter().map(|c| c.continued).collect::<Vec<_>>(),
            [true, true, false]
        );
        let listed: Vec<Uuid> = parsed.into_iter().flat_map(|c| c.users).collect();
        assert_eq!(listed, changes.users);
    }

    #[test]
    fn small_and_sweeping_writes_send_one_notice() {
        let none = Changes {
            revision: 7,
            ..Default::default()
        };
        assert_eq!(none.payloads(), ["7"]);
        assert_eq!(Changes::parse("7"), Some(none));
        let one = Changes {
            revision: 8,
            users: users(1),
            ..Default::default()
        };
        assert_eq!(one.payloads().len(), 1);
        assert_eq!(Changes::parse(&one.payloads()[0]), Some(one));
        let huge = Changes {
            revision: 9,
            users: users(MAX_LISTED_USERS + 1),
            ..Default::default()
        };
        assert_eq!(huge.payloads(), ["9 *"]);
        let everything = Changes::parse("9 *").expect("readable");
        assert!(everything.everything && !everything.continued);
        assert_eq!(Changes::parse("x+ y"), None);
    }
}
