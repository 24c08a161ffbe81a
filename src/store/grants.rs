//! The rights catalog, grants, and what an actor may do on an account.

use uuid::Uuid;

use super::{db_error, db_error_for, tx::Tx};
use crate::domain::{
    principal::Actor,
    rights::Grant,
    rights::{Authority, GrantSpec, Held, RightDef, Scope},
    user::UserKind,
    Error,
};

struct GrantRow {
    user_id: Uuid,
    account_code: String,
    right_code: String,
    scope: Option<String>,
    granted_by: Option<Uuid>,
    granted_at: chrono::DateTime<chrono::Utc>,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    revision: i64,
}

impl From<GrantRow> for Grant {
    fn from(r: GrantRow) -> Self {
        Grant {
            user_id: r.user_id,
            account_code: r.account_code,
            right: r.right_code,
            scope: r.scope.as_deref().and_then(Scope::from_db),
            granted_by: r.granted_by,
            granted_at: r.granted_at,
            expires_at: r.expires_at,
            revision: r.revision,
        }
    }
}

impl Tx {
    /// The whole catalog, by code.
    pub async fn rights(&mut self) -> Result<Vec<RightDef>, Error> {
        let rows = sqlx::query!(
            "SELECT code, category, label_fr, label_en, kinds, scoped FROM rights ORDER BY code"
        )
        .fetch_all(self.conn())
        .await
        .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|r| RightDef {
                code: r.code,
                category: r.category,
                label_fr: r.label_fr,
                label_en: r.label_en,
                kinds: r.kinds.iter().filter_map(|k| UserKind::parse(k)).collect(),
                scoped: r.scoped,
            })
            .collect())
    }

    pub async fn insert_right(&mut self, def: &RightDef) -> Result<(), Error> {
        let revision = self.revision()?;
        let kinds: Vec<String> = def.kinds.iter().map(|k| k.as_str().to_owned()).collect();
        sqlx::query!(
            "INSERT INTO rights (code, category, label_fr, label_en, kinds, scoped, revision)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            def.code,
            def.category,
            def.label_fr,
            def.label_en,
            &kinds,
            def.scoped,
            revision
        )
        .execute(self.conn())
        .await
        .map_err(|e| db_error_for(e, &format!("right {}", def.code), "right"))?;
        Ok(())
    }

    /// What `actor` may do on an account: everything for an operator, else
    /// the live (unexpired) rights he holds there.
    pub async fn authority(&mut self, actor: &Actor, account: Uuid) -> Result<Authority, Error> {
        if actor.is_operator() {
            return Ok(Authority::Operator);
        }
        let rows = sqlx::query!(
            r#"SELECT right_code AS "right_code!", scope FROM held_rights
              WHERE user_id = $1 AND account_id = $2 AND (expires_at IS NULL OR expires_at > $3)"#,
            actor.user_id,
            account,
            self.now()
        )
        .fetch_all(self.conn())
        .await
        .map_err(db_error)?;
        Ok(Authority::Holder(
            rows.into_iter()
                .map(|r| Held {
                    right: r.right_code,
                    scope: r.scope.as_deref().and_then(Scope::from_db),
                })
                .collect(),
        ))
    }

    /// The accounts where `actor` holds a live `admin.users`.
    pub async fn administered_accounts(&mut self, actor: Uuid) -> Result<Vec<Uuid>, Error> {
        sqlx::query_scalar!(
            r#"SELECT DISTINCT account_id AS "account_id!" FROM held_rights
                WHERE user_id = $1 AND right_code = 'admin.users'
                  AND (expires_at IS NULL OR expires_at > $2)"#,
            actor,
            self.now()
        )
        .fetch_all(self.conn())
        .await
        .map_err(db_error)
    }

    /// Grants, or re-grants with a new scope and expiry.
    pub async fn upsert_grant(
        &mut self,
        user: Uuid,
        account: Uuid,
        g: &GrantSpec,
    ) -> Result<(), Error> {
        let revision = self.revision()?;
        let by = self.actor();
        sqlx::query!(
            "INSERT INTO grants (user_id, account_id, right_code, scope, granted_by, expires_at, revision)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (user_id, account_id, right_code) DO UPDATE
                SET scope = EXCLUDED.scope, granted_by = EXCLUDED.granted_by, granted_at = now(),
                    expires_at = EXCLUDED.expires_at, revision = EXCLUDED.revision",
            user,
            account,
            g.right,
            g.scope.map(Scope::as_str),
            by,
            g.expires_at,
            revision
        )
        .execute(self.conn())
        .await
        .map_err(|e| db_error_for(e, "grant", "link of this user to this account"))?;
        Ok(())
    }

    /// Removes the named grants; returns how many existed.
    pub async fn delete_grants(
        &mut self,
        user: Uuid,
        account: Uuid,
        rights: &[String],
    ) -> Result<i64, Error> {
        let done = sqlx::query!(
            "DELETE FROM grants WHERE user_id = $1 AND account_id = $2 AND right_code = ANY($3)",
            user,
            account,
            rights
        )
        .execute(self.conn())
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected() as i64)
    }

    /// Removes every grant and every role of a user on every account;
    /// returns how many grants existed.
    pub async fn delete_all_grants(&mut self, user: Uuid) -> Result<i64, Error> {
        sqlx::query!("DELETE FROM role_grants WHERE user_id = $1", user)
            .execute(self.conn())
            .await
            .map_err(db_error)?;
        let done = sqlx::query!("DELETE FROM grants WHERE user_id = $1", user)
            .execute(self.conn())
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected() as i64)
    }

    /// Grants filtered by user and/or account (and `only_accounts`), in
    /// (account code, user id, right) order after `after`.
    pub async fn grants(
        &mut self,
        user: Option<Uuid>,
        account: Option<Uuid>,
        only_accounts: Option<&[Uuid]>,
        after: Option<(String, Uuid, String)>,
        limit: i64,
    ) -> Result<Vec<Grant>, Error> {
        let (after_code, after_user, after_right) = match after {
            Some((c, u, r)) => (Some(c), Some(u), Some(r)),
            None => (None, None, None),
        };
        let rows = sqlx::query_as!(
            GrantRow,
            r#"SELECT g.user_id, a.code AS account_code, g.right_code, g.scope, g.granted_by, g.granted_at,
                      g.expires_at, g.revision
                 FROM grants g JOIN accounts a ON a.id = g.account_id
                WHERE ($1::uuid IS NULL OR g.user_id = $1)
                  AND ($2::uuid IS NULL OR g.account_id = $2)
                  AND ($3::uuid[] IS NULL OR g.account_id = ANY($3))
                  AND ($4::text IS NULL OR (a.code, g.user_id, g.right_code) > ($4 COLLATE "C", $5, $6 COLLATE "C"))
                ORDER BY a.code, g.user_id, g.right_code COLLATE "C"
                LIMIT $7"#,
            user,
            account,
            only_accounts,
            after_code,
            after_user,
            after_right,
            limit
        )
        .fetch_all(self.conn())
        .await
        .map_err(db_error)?;
        Ok(rows.into_iter().map(Grant::from).collect())
    }
}
