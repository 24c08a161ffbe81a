//! Everything that talks SQL. Queries are checked at compile time against the
//! committed `.sqlx/` data; database errors become domain errors here and
//! nowhere else.
//!
//! Every write runs in one transaction that takes the next revision
//! ([`next_revision`]) and commits; Postgres appends its audit events.

mod accounts;
mod audit;
mod authz;
mod bulk;
mod copy;
mod credentials;
mod grants;
mod import;
mod keys;
mod ledger;
mod outbox;
mod principals;
mod reports;
mod requests;
mod roles;
mod teams;
mod tx;
mod users;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, OnceLock,
    },
    time::Duration,
};

use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    PgPool, Postgres, Transaction,
};

use crate::domain::{clock::Clock, Error};

pub use audit::AuditPage;
pub use authz::{Loaded, Notifier, SubjectRef};
pub use credentials::{LoginRecord, PasswordState};
pub use import::Known;
pub use ledger::Absent;
pub use outbox::{Due, MessageRow};
pub use principals::{NewPrincipal, PrincipalCreated};
pub use reports::{ReportMeta, ReportOptions, ReportSummary, REPORT_DAYS};
pub use tx::{Changes, CommitObserver, Tx, CHANGES_CHANNEL};
pub use users::{NewUser, UserFilter};

/// The migrations of `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The handle to Postgres shared by every request.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
    /// Told of every commit of this process (the decision engine).
    observer: Arc<OnceLock<Arc<dyn CommitObserver>>>,
    /// Set while the health monitor knows Postgres is unreachable: requests
    /// then fail at once instead of waiting for the pool's timeout.
    down: Arc<AtomicBool>,
    /// What expiries are compared with, in memory and in SQL.
    clock: Clock,
}

impl Store {
    /// A pool that connects lazily: the server starts, and reports
    /// `NOT_SERVING`, even while Postgres is down.
    pub fn connect_lazy(options: PgConnectOptions, max_connections: u32) -> Self {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            // Fail fast while Postgres is unreachable: callers get UNAVAILABLE
            // within this delay instead of hanging.
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(options);
        Self {
            pool,
            observer: Arc::default(),
            down: Arc::default(),
            clock: Clock::system(),
        }
    }

    /// The same store reading time from `clock` (tests: a manual clock).
    pub fn with_clock(self, clock: Clock) -> Self {
        Self { clock, ..self }
    }

    /// The clock every expiry is compared with.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Records whether Postgres answers (the health monitor's finding).
    pub fn set_reachable(&self, reachable: bool) {
        self.down.store(!reachable, Ordering::SeqCst);
    }

    /// `Unavailable` at once while Postgres is known to be down: the first
    /// step of every use of the database on a request's path.
    pub(crate) fn fail_fast(&self) -> Result<(), Error> {
        if self.down.load(Ordering::SeqCst) {
            Err(Error::Unavailable("database unavailable".into()))
        } else {
            Ok(())
        }
    }

    /// Registers the one observer of this process's commits.
    pub fn observe_commits(&self, observer: Arc<dyn CommitObserver>) {
        let _ = self.observer.set(observer);
    }

    fn observer(&self) -> Option<Arc<dyn CommitObserver>> {
        self.observer.get().cloned()
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Whether every migration this binary knows has been applied (by
    /// `clef migrate`, or another replica).
    pub async fn schema_is_current(&self) -> Result<bool, Error> {
        let applied: Vec<i64> =
            match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await
            {
                Ok(v) => v,
                // No migration ever ran: the table is not there yet.
                Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some("42P01") => {
                    return Ok(false)
                }
                Err(e) => return Err(db_error(e)),
            };
        Ok(MIGRATOR.iter().all(|m| applied.contains(&m.version)))
    }

    /// Waits until the schema is current, saying so once (replicas that
    /// leave migrating to a Job, `--migrate wait`).
    pub async fn wait_for_schema(&self) {
        // What was said last: each change of state is said once.
        let mut said: Option<bool> = None;
        loop {
            match self.schema_is_current().await {
                Ok(true) => {
                    if said.is_some() {
                        tracing::info!("the schema is current: starting");
                    }
                    return;
                }
                Ok(false) if said != Some(true) => {
                    tracing::info!(
                        "waiting for the schema: run `clef migrate` (the migration Job)"
                    );
                    said = Some(true);
                }
                Err(e) if said != Some(false) => {
                    tracing::warn!(error = %e, "waiting for the database");
                    said = Some(false);
                }
                _ => {}
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Whether the last health probe reached Postgres.
    pub fn reachable(&self) -> bool {
        !self.down.load(Ordering::SeqCst)
    }

    /// What a metrics scrape reads from Postgres: the last revision
    /// committed, and the outbox's pending and parked messages.
    pub async fn scrape(&self) -> Result<(i64, i64, i64), Error> {
        let row = sqlx::query!(
            r#"SELECT (SELECT value FROM revision_counter) AS "committed!",
                      (SELECT count(*) FROM outbox WHERE state = 'pending') AS "pending!",
                      (SELECT count(*) FROM outbox WHERE state = 'parked') AS "parked!""#
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)?;
        Ok((row.committed, row.pending, row.parked))
    }

    /// Applies pending migrations. sqlx holds a Postgres advisory lock while it
    /// migrates, so replicas starting together apply each migration once.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        MIGRATOR.run(&self.pool).await
    }

    /// One round trip; used by the health monitor.
    pub async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(db_error)
    }
}

/// Takes the next revision for the write in `tx`. The row lock it takes is
/// held until commit, so revisions are assigned in commit order.
pub(crate) async fn next_revision(tx: &mut Transaction<'_, Postgres>) -> Result<i64, Error> {
    sqlx::query_scalar!("UPDATE revision_counter SET value = value + 1 RETURNING value")
        .fetch_one(&mut **tx)
        .await
        .map_err(db_error)
}

/// Maps a database error onto the domain. Connection-level failures become
/// `Unavailable`; unique and foreign-key violations are mapped by callers
/// that know what was being written (see [`db_error_for`]).
pub(crate) fn db_error(e: sqlx::Error) -> Error {
    db_error_for(e, "record", "record")
}

/// Like [`db_error`], naming what a unique violation (`duplicate`) or a
/// foreign-key violation (`missing`) is about.
pub(crate) fn db_error_for(e: sqlx::Error, duplicate: &str, missing: &str) -> Error {
    match &e {
        sqlx::Error::Database(d) => match d.code().as_deref() {
            Some("23505") => Error::already_exists(duplicate),
            Some("23503") => Error::NotFound(missing.to_owned()),
            // A role held by users of a kind it does not allow (migration
            // `roles`), a team under its own sub-team, a member outside the
            // team's organization (migration `teams`): the message says it.
            Some("23514")
                if matches!(
                    d.constraint(),
                    Some("role_kinds" | "team_cycle" | "team_member_linked")
                ) =>
            {
                Error::FailedPrecondition(d.message().to_owned())
            }
            // connection exceptions, admin/crash shutdown, cannot connect now,
            // too many connections
            Some(c)
                if c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03" | "53300") =>
            {
                Error::Unavailable("database unavailable".into())
            }
            _ => internal(e),
        },
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_)
        | sqlx::Error::Tls(_) => Error::Unavailable("database unavailable".into()),
        _ => internal(e),
    }
}

fn internal(e: sqlx::Error) -> Error {
    tracing::error!(error = %e, "unexpected database error");
    Error::Internal("unexpected database error".into())
}
