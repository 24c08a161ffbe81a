//! Roles and the roles users hold on accounts.

use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use uuid::Uuid;

use super::{db_error, db_error_for, tx::Tx};
use crate::domain::{
    rights::Scope,
    role::{RoleDef, RoleGrant, RoleRight},
    user::UserKind,
    Error,
};

/// A right held: (right, scope, expiry).
pub type HeldRight = (String, Option<Scope>, Option<chrono::DateTime<chrono::Utc>>);

/// One right of a role as `roles.rights` keeps it.
#[derive(Debug, Serialize, Deserialize)]
struct RightJson {
    right: String,
    scope: Option<String>,
}

fn role_from_row(
    code: String,
    label_fr: String,
    label_en: String,
    kinds: Vec<String>,
    rights: Vec<RightJson>,
    revision: i64,
) -> RoleDef {
    RoleDef {
        code,
        label_fr,
        label_en,
        kinds: kinds.iter().filter_map(|k| UserKind::parse(k)).collect(),
        rights: rights
            .into_iter()
            .map(|r| RoleRight {
                right: r.right,
                scope: r.scope.as_deref().and_then(Scope::from_db),
            })
            .collect(),
        revision,
    }
}

impl Tx {
    /// Every role, by code.
    pub async fn roles(&mut self) -> Result<Vec<RoleDef>, Error> {
        let rows = sqlx::query!(
            r#"SELECT code, label_fr, label_en, kinds, rights AS "rights: Json<Vec<RightJson>>", revision
                 FROM roles ORDER BY code"#
        )
        .fetch_all(self.conn())
        .await
        .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                role_from_row(
                    r.code, r.label_fr, r.label_en, r.kinds, r.rights.0, r.revision,
                )
            })
            .collect())
    }

    /// Every role with its id, by code.
    pub async fn roles_with_ids(&mut self) -> Result<Vec<(Uuid, RoleDef)>, Error> {
        let rows = sqlx::query!(
            r#"SELECT id, code, label_fr, label_en, kinds, rights AS "rights: Json<Vec<RightJson>>", revision
                 FROM roles ORDER BY code"#
        )
        .fetch_all(self.conn())
        .await
        .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let def = role_from_row(
                    r.code, r.label_fr, r.label_en, r.kinds, r.rights.0, r.revision,
                );
                (r.id, def)
            })
            .collect())
    }

    /// A role by code, with its id.
    pub async fn role(&mut self, code: &str) -> Result<Option<(Uuid, RoleDef)>, Error> {
        let row = sqlx::query!(
            r#"SELECT id, code, label_fr, label_en, kinds, rights AS "rights: Json<Vec<RightJson>>", revision
                 FROM roles WHERE code = $1"#,
            code
        )
        .fetch_optional(self.conn())
        .await
        .map_err(db_error)?;
        Ok(row.map(|r| {
            (
                r.id,
                role_from_row(
                    r.code, r.label_fr, r.label_en, r.kinds, r.rights.0, r.revision,
                ),
            )
        }))
    }

    /// Defines a role, or replaces the definition of the role with that
    /// code; its holders' rights follow (`role_rights` is derived by
    /// trigger, which also refuses kinds that leave out a holder).
    pub async fn define_role(&mut self, def: &RoleDef) -> Result<i64, Error> {
        let revision = self.revision()?;
        let kinds: Vec<String> = def.kinds.iter().map(|k| k.as_str().to_owned()).collect();
        let rights: Vec<RightJson> = def
            .rights
            .iter()
            .map(|r| RightJson {
                right: r.right.clone(),
                scope: r.scope.map(|s| s.as_str().to_owned()),
            })
            .collect();
        sqlx::query!(
            "INSERT INTO roles (code, label_fr, label_en, kinds, rights, revision)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (code) DO UPDATE
                SET label_fr = EXCLUDED.label_fr, label_en = EXCLUDED.label_en,
                    kinds = EXCLUDED.kinds, rights = EXCLUDED.rights,
                    revision = EXCLUDED.revision, updated_at = now()",
            def.code,
            def.label_fr,
            def.label_en,
            &kinds,
            Json(&rights) as _,
            revision
        )
        .execute(self.conn())
        .await
        .map_err(|e| db_error_for(e, &format!("role {}", def.code), "right"))?;
        Ok(revision)
    }

    /// Grants a role, or re-dates the one held. Returns whether anything
    /// changed.
    pub async fn upsert_role_grant(
        &mut self,
        user: Uuid,
        account: Uuid,
        role: Uuid,
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<bool, Error> {
        let revision = self.revision()?;
        let by = self.actor();
        let done = sqlx::query!(
            "INSERT INTO role_grants (user_id, account_id, role_id, granted_by, expires_at, revision)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (user_id, account_id, role_id) DO UPDATE
                SET expires_at = EXCLUDED.expires_at, granted_by = EXCLUDED.granted_by,
                    granted_at = now(), revision = EXCLUDED.revision
              WHERE role_grants.expires_at IS DISTINCT FROM EXCLUDED.expires_at",
            user,
            account,
            role,
            by,
            expires_at,
            revision
        )
        .execute(self.conn())
        .await
        .map_err(|e| db_error_for(e, "role grant", "link"))?;
        Ok(done.rows_affected() > 0)
    }

    /// The live rights `user` holds on `account`, directly or through roles
    /// (a right may come more than once), as (right, scope, expiry).
    pub async fn held_rights(
        &mut self,
        user: Uuid,
        account: Uuid,
    ) -> Result<Vec<HeldRight>, Error> {
        let rows = sqlx::query!(
            r#"SELECT right_code AS "right_code!", scope, expires_at FROM held_rights
                WHERE user_id = $1 AND account_id = $2 AND (expires_at IS NULL OR expires_at > $3)
                ORDER BY right_code"#,
            user,
            account,
            self.now()
        )
        .fetch_all(self.conn())
        .await
        .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r.right_code,
                    r.scope.as_deref().and_then(Scope::from_db),
                    r.expires_at,
                )
            })
            .collect())
    }

    /// Revokes a role; whether the user held it.
    pub async fn delete_role_grant(
        &mut self,
        user: Uuid,
        account: Uuid,
        role: Uuid,
    ) -> Result<bool, Error> {
        let done = sqlx::query!(
            "DELETE FROM role_grants WHERE user_id = $1 AND account_id = $2 AND role_id = $3",
            user,
            account,
            role
        )
        .execute(self.conn())
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected() > 0)
    }

    /// The roles held, by user and/or account (and among `only_accounts`),
    /// ordered by account code, user id, role code; at most `limit`.
    pub async fn role_grants(
        &mut self,
        user: Option<Uuid>,
        account: Option<Uuid>,
        only_accounts: Option<&[Uuid]>,
        limit: i64,
    ) -> Result<Vec<RoleGrant>, Error> {
        let rows = sqlx::query!(
            r#"SELECT rg.user_id, a.code AS account_code, r.code AS role, rg.granted_by, rg.granted_at,
                      rg.expires_at, rg.revision
                 FROM role_grants rg JOIN accounts a ON a.id = rg.account_id JOIN roles r ON r.id = rg.role_id
                WHERE ($1::uuid IS NULL OR rg.user_id = $1)
                  AND ($2::uuid IS NULL OR rg.account_id = $2)
                  AND ($3::uuid[] IS NULL OR rg.account_id = ANY($3))
                ORDER BY a.code, rg.user_id, r.code
                LIMIT $4"#,
            user,
            account,
            only_accounts,
            limit
        )
        .fetch_all(self.conn())
        .await
        .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|r| RoleGrant {
                user_id: r.user_id,
                account_code: r.account_code,
                role: r.role,
                granted_by: r.granted_by,
                granted_at: r.granted_at,
                expires_at: r.expires_at,
                revision: r.revision,
            })
            .collect())
    }
}
