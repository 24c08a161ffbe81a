//! Reads behind CSV exports.

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
    /// export sees the data as of its start, page after page.
    pub async fn snapshot(&self) -> Result<Tx, Error> {
        let mut tx = self.read().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
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

    /// One page of export rows of one account, in user-id order after
    /// `after` (the `links (account_id, user_id)` index serves it). Archived
    /// users are left out; so are expired grants.
    pub async fn export_page(
        &mut self,
        account: Uuid,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<(ExportRow, Uuid)>, Error> {
        let rows = sqlx::query!(
            r#"SELECT a.code AS account, u.id, u.kind, u.status, u.login AS "login!", u.user_key,
                      u.last_name AS "last_name!", u.first_name AS "first_name!", u.job_title, u.email, u.phone,
                      u.address_lines, u.postal_code, u.city, u.country, l.tags,
                      ARRAY(SELECT g.right_code || ':' || COALESCE(g.scope, '') FROM grants g
                             WHERE g.user_id = l.user_id AND g.account_id = l.account_id
                               AND (g.expires_at IS NULL OR g.expires_at > now())
                             ORDER BY g.right_code) AS "rights!"
                 FROM links l JOIN accounts a ON a.id = l.account_id JOIN users u ON u.id = l.user_id
                WHERE l.account_id = $1 AND u.status <> 'archived'
                  AND u.kind IN ('standard', 'advanced')
                  AND ($2::uuid IS NULL OR l.user_id > $2)
                ORDER BY l.user_id
                LIMIT $3"#,
            account,
            after,
            limit
        )
        .fetch_all(self.conn())
        .await
        .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let row = ExportRow {
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
                        .iter()
                        .filter_map(|g| {
                            let (right, scope) = g.split_once(':')?;
                            Some((right.to_owned(), Scope::from_db(scope)))
                        })
                        .collect(),
                };
                (row, r.id)
            })
            .collect())
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
