//! Import reports: the latest import of each account, kept 7 days. Written
//! through the pool, outside the import's own transactions.

use uuid::Uuid;

use super::{db_error, Store, Tx};
use crate::domain::Error;

/// How long a report is kept.
pub const REPORT_DAYS: i64 = 7;

/// An import that showed no sign of life for this long is no longer
/// running (its server stopped): more than the 120 s an import waits for
/// its client.
const RUNNING_SECONDS: f64 = 150.0;

/// A report's header, without its CSV.
#[derive(Debug, Clone)]
pub struct ReportMeta {
    pub id: Uuid,
    pub actor_id: Option<Uuid>,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub sync: bool,
    pub dry_run: bool,
    pub atomic: bool,
    pub force: bool,
    pub finished: Option<ReportSummary>,
    /// Why the import stopped before its end, when it did.
    pub stopped: Option<String>,
}

/// How a reported import ended.
#[derive(Debug, Clone)]
pub struct ReportSummary {
    pub finished_at: chrono::DateTime<chrono::Utc>,
    pub lines: i64,
    pub counts: std::collections::HashMap<String, i64>,
    pub committed: bool,
    pub revision: i64,
}

/// The options a report records.
#[derive(Debug, Clone, Copy)]
pub struct ReportOptions {
    pub sync: bool,
    pub dry_run: bool,
    pub atomic: bool,
    pub force: bool,
}

impl Store {
    /// Starts the report of a new import into `account`: the account's
    /// previous report and every expired one are deleted. Refused while
    /// another import into the account runs.
    pub async fn start_report(
        &self,
        account: Uuid,
        actor: Uuid,
        o: ReportOptions,
        header: &[u8],
    ) -> Result<Uuid, Error> {
        let id = Uuid::now_v7();
        let mut tx = self.pool().begin().await.map_err(db_error)?;
        // One start at a time per account, so that two cannot both see the
        // account free.
        sqlx::query!(
            "SELECT pg_advisory_xact_lock(hashtextextended('clef import ' || $1::uuid::text, 0))",
            account
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let running = sqlx::query!(
            r#"SELECT r.started_at, coalesce(u.display_name, '') AS "by!"
                 FROM import_reports r LEFT JOIN users u ON u.id = r.actor_id
                WHERE r.account_id = $1 AND r.finished_at IS NULL AND r.stopped IS NULL
                  AND r.active_at > now() - make_interval(secs => $2)"#,
            account,
            RUNNING_SECONDS
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        if let Some(r) = running {
            return Err(Error::FailedPrecondition(format!(
                "another import into this account is running (started {} by {}); retry once it has ended",
                r.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
                r.by
            )));
        }
        let gone = sqlx::query_scalar!(
            "DELETE FROM import_reports WHERE account_id = $1 OR started_at < now() - make_interval(days => $2)
             RETURNING id",
            account,
            REPORT_DAYS as i32
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        // What an import stopped by a server crash left in its ledger.
        super::ledger::delete_ledgers(&mut tx, &gone).await?;
        sqlx::query!(
            "INSERT INTO import_reports (id, account_id, actor_id, sync, dry_run, atomic, force)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            id,
            account,
            actor,
            o.sync,
            o.dry_run,
            o.atomic,
            o.force
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        sqlx::query!(
            "INSERT INTO import_report_chunks (report_id, seq, data) VALUES ($1, 0, $2)",
            id,
            header
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(id)
    }

    /// Appends the next chunk of a report's CSV, and notes that its import
    /// is alive.
    pub async fn append_report(&self, report: Uuid, seq: i64, data: &[u8]) -> Result<(), Error> {
        let appended = sqlx::query!(
            "WITH alive AS (UPDATE import_reports SET active_at = now() WHERE id = $1 RETURNING id)
             INSERT INTO import_report_chunks (report_id, seq, data) SELECT id, $2, $3 FROM alive",
            report,
            seq,
            data
        )
        .execute(self.pool())
        .await
        .map_err(db_error)?;
        if appended.rows_affected() == 0 {
            // Only when the import was taken for stopped (no sign of life
            // for RUNNING_SECONDS) and a newer import replaced its report.
            return Err(Error::FailedPrecondition(
                "this import's report was replaced by a newer import into the account".into(),
            ));
        }
        Ok(())
    }

    pub async fn finish_report(
        &self,
        report: Uuid,
        lines: i64,
        counts: &std::collections::HashMap<String, i64>,
        committed: bool,
        revision: i64,
    ) -> Result<(), Error> {
        let counts = serde_json::to_value(counts).map_err(|e| Error::Internal(e.to_string()))?;
        sqlx::query!(
            "UPDATE import_reports SET finished_at = now(), lines = $2, counts = $3, committed = $4, revision = $5
              WHERE id = $1",
            report,
            lines,
            counts,
            committed,
            revision
        )
        .execute(self.pool())
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// Records why an import stopped before its end.
    pub async fn stop_report(&self, report: Uuid, reason: &str) -> Result<(), Error> {
        sqlx::query!(
            "UPDATE import_reports SET stopped = $2 WHERE id = $1",
            report,
            reason
        )
        .execute(self.pool())
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// The account's report, unless it is older than [`REPORT_DAYS`].
    pub async fn report(&self, account: Uuid) -> Result<Option<ReportMeta>, Error> {
        let r = sqlx::query!(
            "SELECT id, actor_id, started_at, sync, dry_run, atomic, force, finished_at, lines, counts,
                    committed, revision, stopped
               FROM import_reports
              WHERE account_id = $1 AND started_at >= now() - make_interval(days => $2)",
            account,
            REPORT_DAYS as i32
        )
        .fetch_optional(self.pool())
        .await
        .map_err(db_error)?;
        Ok(r.map(|r| ReportMeta {
            id: r.id,
            actor_id: r.actor_id,
            started_at: r.started_at,
            sync: r.sync,
            dry_run: r.dry_run,
            atomic: r.atomic,
            force: r.force,
            finished: r.finished_at.map(|finished_at| ReportSummary {
                finished_at,
                lines: r.lines.unwrap_or(0),
                counts: r
                    .counts
                    .and_then(|c| serde_json::from_value(c).ok())
                    .unwrap_or_default(),
                committed: r.committed.unwrap_or(false),
                revision: r.revision.unwrap_or(0),
            }),
            stopped: r.stopped,
        }))
    }

    /// Up to `limit` chunks of a report's CSV after `after`, in order.
    pub async fn report_chunks(
        &self,
        report: Uuid,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, Error> {
        let rows = sqlx::query!(
            "SELECT seq, data FROM import_report_chunks WHERE report_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            report,
            after,
            limit
        )
        .fetch_all(self.pool())
        .await
        .map_err(db_error)?;
        Ok(rows.into_iter().map(|r| (r.seq, r.data)).collect())
    }
}

impl Tx {
    /// Fencing: checks, inside the import's own write transaction, that its
    /// report is still the account's (a newer import replaces the report of
    /// one that showed no sign of life for [`RUNNING_SECONDS`]), and holds
    /// it until this transaction ends, so that no newer import can take the
    /// account while this batch writes. A replaced import stops here.
    pub async fn hold_report(&mut self, report: Uuid) -> Result<(), Error> {
        let held = sqlx::query_scalar!(
            "SELECT id FROM import_reports WHERE id = $1 FOR KEY SHARE",
            report
        )
        .fetch_optional(self.conn())
        .await
        .map_err(db_error)?;
        match held {
            Some(_) => Ok(()),
            None => Err(Error::FailedPrecondition(
                "this import was replaced by a newer import into the account; it stopped".into(),
            )),
        }
    }
}
