//! Organizations and accounts.

use uuid::Uuid;

use super::{db_error, db_error_for};
use crate::domain::{
    account::{
        Account, AccountChanges, AccountFilter, AccountStatus, DisplayName, NewAccount,
        Organization,
    },
    Error,
};

struct AccountRow {
    id: Uuid,
    code: String,
    organization_id: Uuid,
    display_name: String,
    status: String,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
    revision: i64,
}

impl From<AccountRow> for Account {
    fn from(r: AccountRow) -> Self {
        Account {
            id: r.id,
            code: r.code,
            organization_id: r.organization_id,
            display_name: r.display_name,
            status: AccountStatus::from_db(&r.status),
            created_at: r.created_at,
            updated_at: r.updated_at,
            revision: r.revision,
        }
    }
}

impl super::Tx {
    /// An organization by id.
    pub async fn organization(&mut self, id: Uuid) -> Result<Organization, Error> {
        sqlx::query_as!(
            Organization,
            "SELECT id, display_name, created_at, updated_at, revision FROM organizations WHERE id = $1",
            id
        )
        .fetch_one(self.conn())
        .await
        .map_err(db_error)
    }

    /// Inserts an organization at this transaction's revision.
    pub async fn insert_organization(
        &mut self,
        display_name: &DisplayName,
    ) -> Result<Organization, Error> {
        let revision = self.revision()?;
        sqlx::query_as!(
            Organization,
            "INSERT INTO organizations (id, display_name, revision) VALUES ($1, $2, $3)
             RETURNING id, display_name, created_at, updated_at, revision",
            Uuid::now_v7(),
            display_name.as_str(),
            revision
        )
        .fetch_one(self.conn())
        .await
        .map_err(db_error)
    }

    /// An account by id.
    pub async fn account_by_id(&mut self, id: Uuid) -> Result<Account, Error> {
        let row = sqlx::query_as!(
            AccountRow,
            "SELECT id, code, organization_id, display_name, status, created_at, updated_at, revision
                     FROM accounts WHERE id = $1",
            id
        )
        .fetch_one(self.conn())
        .await
        .map_err(db_error)?;
        Ok(row.into())
    }

    /// Inserts an account at this transaction's revision; its code must be
    /// new and its organization must exist.
    pub async fn insert_account(&mut self, new: &NewAccount) -> Result<Account, Error> {
        let revision = self.revision()?;
        let row = sqlx::query_as!(
            AccountRow,
            "INSERT INTO accounts (id, code, organization_id, display_name, status, revision)
             VALUES ($1, $2, $3, $4, $5, $6)
             RETURNING id, code, organization_id, display_name, status, created_at, updated_at, revision",
            Uuid::now_v7(),
            new.code.as_str(),
            new.organization_id,
            new.display_name.as_str(),
            new.status.as_str(),
            revision
        )
        .fetch_one(self.conn())
        .await
        .map_err(|e| {
            db_error_for(
                e,
                &format!("account {:?}", new.code.as_str()),
                &format!("organization {}", new.organization_id),
            )
        })?;
        Ok(row.into())
    }

    /// One page of accounts in code order.
    pub async fn list_accounts(&mut self, filter: &AccountFilter) -> Result<Vec<Account>, Error> {
        let rows = sqlx::query_as!(
            AccountRow,
            r#"SELECT id, code, organization_id, display_name, status, created_at, updated_at, revision
               FROM accounts
               WHERE ($1::uuid IS NULL OR organization_id = $1)
                 AND starts_with(code, $2)
                 AND ($3::text IS NULL OR code > $3)
               ORDER BY code
               LIMIT $4"#,
            filter.organization_id,
            filter.code_prefix,
            filter.after,
            filter.limit
        )
        .fetch_all(self.conn())
        .await
        .map_err(db_error)?;
        Ok(rows.into_iter().map(Account::from).collect())
    }

    /// Changes an account at this transaction's revision, or `NotFound`.
    pub async fn update_account(
        &mut self,
        code: &str,
        changes: &AccountChanges,
    ) -> Result<Account, Error> {
        let revision = self.revision()?;
        let row = sqlx::query_as!(
            AccountRow,
            "UPDATE accounts
                SET display_name = COALESCE($2, display_name),
                    status = COALESCE($3, status),
                    updated_at = now(),
                    revision = $4
              WHERE code = $1
             RETURNING id, code, organization_id, display_name, status, created_at, updated_at, revision",
            code,
            changes.display_name.as_ref().map(DisplayName::as_str),
            changes.status.map(AccountStatus::as_str),
            revision
        )
        .fetch_optional(self.conn())
        .await
        .map_err(db_error)?
        .ok_or_else(|| Error::NotFound(format!("account {code:?}")))?;
        Ok(row.into())
    }

    /// An account by code, or `NotFound`.
    pub async fn account(&mut self, code: &str) -> Result<Account, Error> {
        sqlx::query_as!(
            AccountRow,
            "SELECT id, code, organization_id, display_name, status, created_at, updated_at, revision
             FROM accounts WHERE code = $1",
            code
        )
        .fetch_optional(self.conn())
        .await
        .map_err(db_error)?
        .map(Account::from)
        .ok_or_else(|| Error::NotFound(format!("account {code:?}")))
    }
}
