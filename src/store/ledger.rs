//! An import's ledger (`import_seen`, `import_named`): what it has met so
//! far, keyed by its report; and what an atomic import stages
//! (`import_staged_lines`, `import_staged_results`). Written through the pool, outside the
//! import's transactions.

use sqlx::PgConnection;
use uuid::Uuid;

use super::{db_error, Store, Tx};
use crate::domain::Error;

impl Store {
    /// Records identities met by an import; returns those met for the first
    /// time. `identities` holds no repeats.
    pub async fn ledger_first_seen(
        &self,
        report: Uuid,
        identities: &[i64],
    ) -> Result<Vec<i64>, Error> {
        sqlx::query_scalar!(
            r#"INSERT INTO import_seen (report_id, identity)
               SELECT $1, i FROM unnest($2::bigint[]) i
               ON CONFLICT DO NOTHING
               RETURNING identity"#,
            report,
            identities
        )
        .fetch_all(self.pool())
        .await
        .map_err(db_error)
    }

    /// Which of `users` an import has named already.
    pub async fn ledger_named(&self, report: Uuid, users: &[Uuid]) -> Result<Vec<Uuid>, Error> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        sqlx::query_scalar!(
            "SELECT user_id FROM import_named WHERE report_id = $1 AND user_id = ANY($2)",
            report,
            users
        )
        .fetch_all(self.pool())
        .await
        .map_err(db_error)
    }

    /// Records users an import named.
    pub async fn ledger_name(&self, report: Uuid, users: &[Uuid]) -> Result<(), Error> {
        if users.is_empty() {
            return Ok(());
        }
        sqlx::query!(
            "INSERT INTO import_named (report_id, user_id)
             SELECT $1, u FROM unnest($2::uuid[]) u
             ON CONFLICT DO NOTHING",
            report,
            users
        )
        .execute(self.pool())
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// Forgets what the imports of these reports met.
    pub async fn drop_ledgers(&self, reports: &[Uuid]) -> Result<(), Error> {
        let mut tx = self.pool().begin().await.map_err(db_error)?;
        delete_ledgers(&mut tx, reports).await?;
        tx.commit().await.map_err(db_error)
    }
}

pub(super) async fn delete_ledgers(conn: &mut PgConnection, reports: &[Uuid]) -> Result<(), Error> {
    sqlx::query!("DELETE FROM import_seen WHERE report_id = ANY($1)", reports)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    sqlx::query!(
        "DELETE FROM import_named WHERE report_id = ANY($1)",
        reports
    )
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    sqlx::query!(
        "DELETE FROM import_staged_lines WHERE report_id = ANY($1)",
        reports
    )
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    sqlx::query!(
        "DELETE FROM import_staged_results WHERE report_id = ANY($1)",
        reports
    )
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// The live users of an account a sync would deactivate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Absent {
    /// The account's live (active or invited) users (0 when none is
    /// absent).
    pub live: i64,
    /// Those the import did not name, but `keep`, in id order.
    pub users: Vec<Uuid>,
}

impl Tx {
    /// The account's live users that the import of `report` did not name,
    /// `keep` (the importer) aside.
    pub async fn absent_users(
        &mut self,
        account: Uuid,
        report: Uuid,
        keep: Uuid,
    ) -> Result<Absent, Error> {
        // Counted and filtered here: the account may have more users than
        // the server should hold in memory.
        let rows = sqlx::query!(
            r#"SELECT id AS "id!", live AS "live!"
                 FROM (SELECT u.id, count(*) OVER () AS live,
                              EXISTS (SELECT 1 FROM import_named n
                                       WHERE n.report_id = $2 AND n.user_id = u.id) AS named
                         FROM links l JOIN users u ON u.id = l.user_id
                        WHERE l.account_id = $1 AND u.status IN ('active', 'invited')
                          AND u.kind IN ('standard', 'advanced')) s
                WHERE NOT named AND id <> $3
                ORDER BY id"#,
            account,
            report,
            keep
        )
        .fetch_all(self.conn())
        .await
        .map_err(db_error)?;
        Ok(Absent {
            live: rows.first().map(|r| r.live).unwrap_or(0),
            users: rows.into_iter().map(|r| r.id).collect(),
        })
    }
}

impl Store {
    /// Stages records of an atomic import: (line, cells as JSON).
    pub async fn stage_lines(
        &self,
        report: Uuid,
        lines: &[i64],
        cells: &[Vec<u8>],
    ) -> Result<(), Error> {
        sqlx::query!(
            "INSERT INTO import_staged_lines (report_id, line, cells)
             SELECT $1, l, c FROM unnest($2::bigint[], $3::bytea[]) AS s (l, c)",
            report,
            lines,
            cells
        )
        .execute(self.pool())
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// Up to `limit` staged records after line `after`, in line order.
    pub async fn staged_lines(
        &self,
        report: Uuid,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, Error> {
        let rows = sqlx::query!(
            "SELECT line, cells FROM import_staged_lines
              WHERE report_id = $1 AND line > $2 ORDER BY line LIMIT $3",
            report,
            after,
            limit
        )
        .fetch_all(self.pool())
        .await
        .map_err(db_error)?;
        Ok(rows.into_iter().map(|r| (r.line, r.cells)).collect())
    }

    /// Stages a batch's results of an atomic import until its transaction ends.
    pub async fn stage_results(&self, report: Uuid, seq: i64, data: &[u8]) -> Result<(), Error> {
        sqlx::query!(
            "INSERT INTO import_staged_results (report_id, seq, data) VALUES ($1, $2, $3)",
            report,
            seq,
            data
        )
        .execute(self.pool())
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// Up to `limit` staged result batches after `after`, in order.
    pub async fn staged_results(
        &self,
        report: Uuid,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, Error> {
        let rows = sqlx::query!(
            "SELECT seq, data FROM import_staged_results
              WHERE report_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
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
