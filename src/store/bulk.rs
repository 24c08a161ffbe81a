//! Reads behind CSV exports.

use tokio_stream::{Stream, StreamExt};
use uuid::Uuid;

use super::{db_error, tx::Tx, Store};
use crate::{
    bulk::ExportRow,
    domain::{
        rights::Scope,
        user::{UserKey, UserKind, UserStatus},
        Error,
    },
};

impl Store {
    /// A read-only transaction on one snapshot (repeatable read): a long
    /// export sees the data as of its start, account after account. Without
    /// parallel workers: on a streamed export they cost more than they give.
    pub async fn snapshot(&self) -> Result<Tx, Error> {
        let mut tx = self.read().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(tx.conn())
            .await
            .map_err(db_error)?;
        sqlx::query("SET LOCAL max_parallel_workers_per_gather = 0")
            .execute(tx.conn())
            .await
            .map_err(db_error)?;
        Ok(tx)
    }
}

impl Tx {
    /// The accounts of an organization: (id, code).
    pub async fn accounts_of_organization(
        &mut self,
        org: Uuid,
    ) -> Result<Vec<(Uuid, String)>, Error> {
        let rows = sqlx::query!(
            "SELECT id, code FROM accounts WHERE organization_id = $1 ORDER BY code",
            org
        )
        .fetch_all(self.conn())
        .await
        .map_err(db_error)?;
        Ok(rows.into_iter().map(|r| (r.id, r.code)).collect())
    }

    pub async fn organization_exists(&mut self, org: Uuid) -> Result<bool, Error> {
        sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM organizations WHERE id = $1) AS "e!""#,
            org
        )
        .fetch_one(self.conn())
        .await
        .map_err(db_error)
    }

    /// Every export row of these accounts, in (account code, user id)
    /// order, streamed as Postgres produces them: one query, whose pace is
    /// the caller's, so memory stays constant whatever the size (Postgres
    /// sorts on disk beyond `work_mem`). Archived users are left out; so are
    /// expired grants.
    pub fn export_rows<'a>(
        &'a mut self,
        accounts: &'a [Uuid],
    ) -> impl Stream<Item = Result<ExportRow, Error>> + Send + 'a {
        sqlx::query!(
            r#"SELECT a.code AS account, u.kind, u.status, u.login AS "login!", u.user_key,
                      u.last_name AS "last_name!", u.first_name AS "first_name!", u.job_title, u.email, u.phone,
                      u.address_lines, u.postal_code, u.city, u.country, l.tags,
                      (SELECT array_agg(g.right_code || ':' || COALESCE(g.scope, '')) FROM grants g
                        WHERE g.user_id = l.user_id AND g.account_id = l.account_id
                          AND (g.expires_at IS NULL OR g.expires_at > now())) AS rights
                 FROM links l JOIN accounts a ON a.id = l.account_id JOIN users u ON u.id = l.user_id
                WHERE l.account_id = ANY($1) AND u.status <> 'archived'
                  AND u.kind IN ('standard', 'advanced')
                ORDER BY a.code, l.user_id"#,
            accounts
        )
        .fetch(self.conn())
        .map(|r| {
            let r = r.map_err(db_error)?;
            Ok(ExportRow {
                account: r.account,
                kind: UserKind::parse(&r.kind).unwrap_or(UserKind::Standard),
                status: UserStatus::from_db(&r.status),
                login: r.login,
                user_key: r.user_key.map(|k| UserKey::from_db(k).to_string()),
                last_name: r.last_name,
                first_name: r.first_name,
                job_title: r.job_title,
                email: r.email,
                phone: r.phone,
                address_lines: r.address_lines,
                postal_code: r.postal_code,
                city: r.city,
                country: r.country,
                tags: r.tags,
                rights: r
                    .rights
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|g| {
                        let (right, scope) = g.split_once(':')?;
                        Some((right.to_owned(), Scope::from_db(scope)))
                    })
                    .collect(),
            })
        })
    }
}

impl Tx {
    /// The active or invited users linked to an account (what a sync may
    /// deactivate).
    pub async fn live_users_of_account(&mut self, account: Uuid) -> Result<Vec<Uuid>, Error> {
        sqlx::query_scalar!(
            "SELECT u.id FROM links l JOIN users u ON u.id = l.user_id
              WHERE l.account_id = $1 AND u.status IN ('active', 'invited')
                AND u.kind IN ('standard', 'advanced')
              ORDER BY u.id",
            account
        )
        .fetch_all(self.conn())
        .await
        .map_err(db_error)
    }
}
