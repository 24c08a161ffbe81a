//! Organizations and accounts.

use uuid::Uuid;

use super::{db_error, db_error_for, Store};
use crate::domain::{
    account::{
        Account, AccountChanges, AccountFilter, AccountStatus, DisplayName, NewAccount,
        Organization,
    },
    request::RequestKey,
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

impl Store {
    /// Creates an organization, or returns the one an earlier call with the
    /// same request created.
    pub async fn create_organization(
        &self,
        actor: Option<Uuid>,
        display_name: &DisplayName,
        request: Option<&RequestKey>,
    ) -> Result<Organization, Error> {
        let mut tx = self.write(actor).await?;
        if let Some(key) = request {
            if let Some((id, _)) = tx.replayed(key).await? {
                let org = sqlx::query_as!(
                    Organization,
                    "SELECT id, display_name, created_at, updated_at, revision FROM organizations WHERE id = $1",
                    id
                )
                .fetch_one(tx.conn())
                .await
                .map_err(db_error)?;
                tx.rollback().await?;
                return Ok(org);
            }
        }
        let revision = tx.revision()?;
        let org = sqlx::query_as!(
            Organization,
            "INSERT INTO organizations (id, display_name, revision) VALUES ($1, $2, $3)
             RETURNING id, display_name, created_at, updated_at, revision",
            Uuid::now_v7(),
            display_name.as_str(),
            revision
        )
        .fetch_one(tx.conn())
        .await
        .map_err(db_error)?;
        if let Some(key) = request {
            tx.record_request(key, org.id).await?;
        }
        tx.audit(
            "organization.create",
            &format!("organization/{}", org.id),
            &format!("created organization {:?}", org.display_name),
        )
        .await?;
        tx.commit().await?;
        Ok(org)
    }

    /// Creates an account, or returns the one an earlier call with the same
    /// request created.
    pub async fn create_account(
        &self,
        actor: Option<Uuid>,
        new: &NewAccount,
    ) -> Result<Account, Error> {
        let mut tx = self.write(actor).await?;
        if let Some(key) = &new.request {
            if let Some((id, _)) = tx.replayed(key).await? {
                let row = sqlx::query_as!(
                    AccountRow,
                    "SELECT id, code, organization_id, display_name, status, created_at, updated_at, revision
                     FROM accounts WHERE id = $1",
                    id
                )
                .fetch_one(tx.conn())
                .await
                .map_err(db_error)?;
                tx.rollback().await?;
                return Ok(row.into());
            }
        }
        let revision = tx.revision()?;
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
        .fetch_one(tx.conn())
        .await
        .map_err(|e| {
            db_error_for(
                e,
                &format!("account {:?}", new.code.as_str()),
                &format!("organization {}", new.organization_id),
            )
        })?;
        tx.audit(
            "account.create",
            &format!("account/{}", row.code),
            &format!(
                "created account {:?} in organization {}",
                row.code, row.organization_id
            ),
        )
        .await?;
        if let Some(key) = &new.request {
            tx.record_request(key, row.id).await?;
        }
        tx.commit().await?;
        Ok(row.into())
    }

    pub async fn get_account(&self, code: &str) -> Result<Account, Error> {
        let mut tx = self.read().await?;
        let account = tx.account(code).await?;
        tx.commit().await?;
        Ok(account)
    }

    /// One page of accounts in code order.
    pub async fn list_accounts(&self, filter: &AccountFilter) -> Result<Vec<Account>, Error> {
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
        .fetch_all(self.pool())
        .await
        .map_err(db_error)?;
        Ok(rows.into_iter().map(Account::from).collect())
    }

    pub async fn update_account(
        &self,
        actor: Option<Uuid>,
        code: &str,
        changes: &AccountChanges,
    ) -> Result<Account, Error> {
        let mut tx = self.write(actor).await?;
        let revision = tx.revision()?;
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
        .fetch_optional(tx.conn())
        .await
        .map_err(db_error)?
        .ok_or_else(|| Error::NotFound(format!("account {code:?}")))?;
        let mut summary = Vec::new();
        if let Some(name) = &changes.display_name {
            summary.push(format!("display_name={:?}", name.as_str()));
        }
        if let Some(status) = changes.status {
            summary.push(format!("status={}", status.as_str()));
        }
        tx.audit(
            "account.update",
            &format!("account/{code}"),
            &summary.join(", "),
        )
        .await?;
        tx.commit().await?;
        Ok(row.into())
    }
}

impl super::Tx {
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
