//! `Tx`: one transaction. Read-only RPCs use `Store::read` (a consistent
//! snapshot); writes use `Store::write`, which takes the next revision first
//! and tells Postgres the writer and the time, under which the database
//! appends the write's audit events (migration `audit_from_triggers`).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use super::{db_error, Store};
use crate::domain::Error;

/// The channel every write notifies, in the same transaction, so that every
/// replica's decision cache drops what the write changed.
pub const CHANGES_CHANNEL: &str = "clef_changes";

/// Stands for "a new account" among the users a write touched (migration
/// `new_accounts_keep_caches`).
const ACCOUNTS: Uuid = Uuid::max();

/// What a committed write changed, as far as decisions are concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub revision: i64,
    /// Users whose keys, status, links or grants changed.
    pub users: Vec<Uuid>,
    /// Something that affects every decision (an account's code or
    /// status, the rights catalog).
    pub everything: bool,
    /// A new account: cached account states are dropped (its code may be
    /// cached as unknown), no subject's entitlements are.
    pub accounts: bool,
    /// A notice that more notices of the same revision follow (a write that
    /// lists many users sends several, in order; only the last one tells
    /// that the revision is complete).
    pub continued: bool,
}

impl Changes {
    /// Parses a notice sent by the database at commit (migration
    /// `changes_from_triggers`, `clef_send_changes`): `"<revision> *"`,
    /// `"<revision>"`, or `"<revision>[+] <uuid> <uuid>..."`, where `+`
    /// says that more notices of the same revision follow.
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
                match p.parse().ok()? {
                    ACCOUNTS => changes.accounts = true,
                    user => changes.users.push(user),
                }
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
    observer: Option<Arc<dyn CommitObserver>>,
    /// A rehearsal never commits (see [`Store::rehearsal`]).
    rehearsal: bool,
    /// The transaction's time (the store's clock as it began), which its
    /// queries compare expiries with instead of Postgres' `now()`.
    now: DateTime<Utc>,
}

impl Store {
    /// A connection from the pool with a transaction begun, timed: a pool
    /// that runs short shows as waits in `clef_db_begin_seconds`.
    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, Error> {
        let started = std::time::Instant::now();
        let tx = self.pool().begin().await.map_err(db_error);
        crate::metrics::db_begin(started.elapsed().as_secs_f64());
        tx
    }

    /// A read-only transaction on one snapshot: a use case reading with
    /// several queries sees one state of the database.
    pub async fn read(&self) -> Result<Tx, Error> {
        self.fail_fast()?;
        let mut inner = self.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *inner)
            .await
            .map_err(db_error)?;
        Ok(Tx {
            inner,
            revision: None,
            actor: None,
            observer: None,
            rehearsal: false,
            now: self.clock().now(),
        })
    }

    /// A write transaction by `actor` (`None`: the command line), holding the
    /// next revision.
    pub async fn write(&self, actor: Option<Uuid>) -> Result<Tx, Error> {
        self.fail_fast()?;
        // The transaction's time is when it began, as Postgres' `now()`,
        // not when it got the revision counter (which may wait for others).
        let now = self.clock().now();
        let mut inner = self.begin().await?;
        let revision = super::next_revision(&mut inner).await?;
        // Who writes and when, for the rules Postgres checks at commit (the
        // last admin: migration `last_admin`); no actor: the command line.
        sqlx::query("SELECT set_config('clef.actor', $1, true), set_config('clef.now', $2, true)")
            .bind(actor.map(|a| a.to_string()).unwrap_or_default())
            .bind(now.to_rfc3339())
            .execute(&mut *inner)
            .await
            .map_err(db_error)?;
        Ok(Tx::writing(inner, revision, actor, self.observer(), now))
    }

    /// A write transaction that is always rolled back (dry runs): its rows
    /// carry the next revision's number, but it does not take it, so it
    /// neither waits for other writers nor holds them up.
    pub async fn rehearsal(&self, actor: Option<Uuid>) -> Result<Tx, Error> {
        self.fail_fast()?;
        let mut inner = self.begin().await?;
        let revision = sqlx::query_scalar!("SELECT value + 1 AS \"next!\" FROM revision_counter")
            .fetch_one(&mut *inner)
            .await
            .map_err(db_error)?;
        // Its rows' audit events are written, and rolled back, like a
        // write's (migration `audit_from_triggers`).
        sqlx::query(
            "SELECT set_config('clef.revision', $1, true), set_config('clef.actor', $2, true)",
        )
        .bind(revision.to_string())
        .bind(actor.map(|a| a.to_string()).unwrap_or_default())
        .execute(&mut *inner)
        .await
        .map_err(db_error)?;
        Ok(Tx {
            rehearsal: true,
            ..Tx::writing(inner, revision, actor, None, self.clock().now())
        })
    }
}

impl Tx {
    fn writing(
        inner: Transaction<'static, Postgres>,
        revision: i64,
        actor: Option<Uuid>,
        observer: Option<Arc<dyn CommitObserver>>,
        now: DateTime<Utc>,
    ) -> Self {
        Tx {
            inner,
            revision: Some(revision),
            actor,
            observer,
            rehearsal: false,
            now,
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

    /// The transaction's time: what its expiries are compared with.
    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    /// Commits; returns the revision of a write (0 for a read). The
    /// database sends the change notices of a write as it commits (migration
    /// `changes_from_triggers`): which users a write touched is derived from
    /// the rows it changed, never declared here. This process's own engine
    /// is told the same set right after the commit.
    pub async fn commit(mut self) -> Result<i64, Error> {
        if self.rehearsal {
            self.inner.rollback().await.map_err(db_error)?;
            return Err(Error::Internal("a rehearsal cannot commit".into()));
        }
        let Some(revision) = self.revision else {
            self.inner.commit().await.map_err(commit_error)?;
            return Ok(0);
        };
        let touched: Vec<Uuid> = match &self.observer {
            Some(_) => sqlx::query_scalar!(r#"SELECT clef_touched() AS "users!""#)
                .fetch_one(&mut *self.inner)
                .await
                .map_err(db_error)?,
            None => Vec::new(),
        };
        self.inner.commit().await.map_err(commit_error)?;
        if let Some(observer) = &self.observer {
            let everything = touched.contains(&Uuid::nil());
            let accounts = touched.contains(&ACCOUNTS);
            observer.committed(&Changes {
                revision,
                everything,
                accounts,
                users: if everything {
                    Vec::new()
                } else {
                    touched.into_iter().filter(|u| *u != ACCOUNTS).collect()
                },
                continued: false,
            });
        }
        Ok(revision)
    }
}

/// A commit refused by a rule Postgres checks as it commits: the last
/// admin of an account (its message names the account).
fn commit_error(e: sqlx::Error) -> Error {
    match &e {
        sqlx::Error::Database(d) if d.constraint() == Some("last_admin") => {
            Error::FailedPrecondition(d.message().to_owned())
        }
        _ => db_error(e),
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

    #[test]
    fn notices_are_read_as_the_database_writes_them() {
        let user = Uuid::new_v4();
        let continued = Changes::parse(&format!("42+ {user} {user}")).expect("readable");
        assert_eq!(continued.revision, 42);
        assert!(continued.continued && !continued.everything);
        assert_eq!(continued.users, [user, user]);
        let last = Changes::parse(&format!("42 {user}")).expect("readable");
        assert!(!last.continued);
        assert_eq!(
            Changes::parse("7"),
            Some(Changes {
                revision: 7,
                ..Default::default()
            })
        );
        let everything = Changes::parse("9 *").expect("readable");
        assert!(everything.everything && !everything.continued);
        let account = Changes::parse(&format!("10 {user} {}", Uuid::max())).expect("readable");
        assert!(account.accounts && !account.everything);
        assert_eq!(account.users, [user]);
        assert_eq!(Changes::parse("x+ y"), None);
        assert_eq!(Changes::parse("9 not-a-user"), None);
    }
}
