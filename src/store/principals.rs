//! Principals (users, operators, service principals) and their connection keys.

use uuid::Uuid;

use super::{db_error, db_error_for, Store};
use crate::domain::{
    key::{KeyHash, NewKey},
    principal::{Actor, PrincipalKind},
    request::RequestKey,
    Error,
};

/// A principal of the service itself (operator or service), created with its
/// first connection key.
#[derive(Debug)]
pub struct NewPrincipal {
    pub id: Uuid,
    pub revision: i64,
    /// Shown once to whoever created the principal.
    pub key: NewKey,
}

/// What a create with a request id gives: a new principal, or the one an
/// earlier call with the same request created (its key is not shown again).
#[derive(Debug)]
pub enum PrincipalCreated {
    New(NewPrincipal),
    Replayed { id: Uuid, revision: i64 },
}

impl Store {
    /// Creates an operator or service principal and its first key. `actor` is
    /// `None` when done from the command line.
    pub async fn create_principal(
        &self,
        actor: Option<Uuid>,
        kind: PrincipalKind,
        name: &str,
    ) -> Result<NewPrincipal, Error> {
        match self.create_principal_once(actor, kind, name, None).await? {
            PrincipalCreated::New(p) => Ok(p),
            PrincipalCreated::Replayed { .. } => Err(Error::Internal(
                "a create without a request id was replayed".into(),
            )),
        }
    }

    /// [`Store::create_principal`], idempotent when given a request key.
    pub async fn create_principal_once(
        &self,
        actor: Option<Uuid>,
        kind: PrincipalKind,
        name: &str,
        request: Option<&RequestKey>,
    ) -> Result<PrincipalCreated, Error> {
        debug_assert!(matches!(
            kind,
            PrincipalKind::Operator | PrincipalKind::Service
        ));
        let key = NewKey::generate().map_err(|e| Error::Internal(format!("os rng: {e}")))?;
        let id = Uuid::now_v7();
        let mut tx = self.write(actor).await?;
        if let Some(request) = request {
            if let Some((id, revision)) = tx.replayed(request).await? {
                tx.rollback().await?;
                return Ok(PrincipalCreated::Replayed { id, revision });
            }
            tx.record_request(request, id).await?;
        }
        let revision = tx.revision()?;
        sqlx::query!(
            "INSERT INTO users (id, kind, status, login, display_name, revision) VALUES ($1, $2, 'active', $3, $3, $4)",
            id,
            kind.as_str(),
            name,
            revision
        )
        .execute(tx.conn())
        .await
        .map_err(|e| db_error_for(e, &format!("a principal named {name:?}"), "principal"))?;
        sqlx::query!(
            "INSERT INTO connection_keys (id, user_id, secret_hash, display_prefix) VALUES ($1, $2, $3, $4)",
            Uuid::now_v7(),
            id,
            &key.hash()[..],
            key.display_prefix()
        )
        .execute(tx.conn())
        .await
        .map_err(db_error)?;
        tx.commit().await?;
        Ok(PrincipalCreated::New(NewPrincipal { id, revision, key }))
    }

    /// How many operators exist (any status).
    pub async fn count_operators(&self) -> Result<i64, Error> {
        sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM users WHERE kind = 'operator'"#)
            .fetch_one(self.pool())
            .await
            .map_err(db_error)
    }

    /// The active principal holding a live key with this hash.
    pub async fn actor_by_key_hash(&self, hash: &KeyHash) -> Result<Option<Actor>, Error> {
        self.fail_fast()?;
        let row = sqlx::query!(
            "SELECT k.id AS key_id, u.id AS user_id, u.kind
               FROM connection_keys k JOIN users u ON u.id = k.user_id
              WHERE k.secret_hash = $1
                AND (k.revoked_at IS NULL OR k.revoked_at > $2)
                AND (k.expires_at IS NULL OR k.expires_at > $2)
                AND u.status = 'active'",
            &hash[..],
            self.clock().now()
        )
        .fetch_optional(self.pool())
        .await
        .map_err(db_error)?;
        row.map(|r| {
            Ok(Actor {
                user_id: r.user_id,
                kind: PrincipalKind::from_db(&r.kind)?,
                key_id: r.key_id,
            })
        })
        .transpose()
    }

    /// Whether the key is still live and its holder active (a stream
    /// checks its caller again as it goes on).
    pub async fn key_is_live(&self, key_id: Uuid) -> Result<bool, Error> {
        sqlx::query_scalar!(
            r#"SELECT EXISTS (
                 SELECT 1 FROM connection_keys k JOIN users u ON u.id = k.user_id
                  WHERE k.id = $1
                    AND (k.revoked_at IS NULL OR k.revoked_at > $2)
                    AND (k.expires_at IS NULL OR k.expires_at > $2)
                    AND u.status = 'active') AS "live!""#,
            key_id,
            self.clock().now()
        )
        .fetch_one(self.pool())
        .await
        .map_err(db_error)
    }

    /// Records that a key was used. Callers throttle this (see
    /// `api::auth`), so it never runs once per request.
    pub async fn touch_key(&self, key_id: Uuid) -> Result<(), Error> {
        sqlx::query!(
            "UPDATE connection_keys SET last_used_at = now() WHERE id = $1",
            key_id
        )
        .execute(self.pool())
        .await
        .map_err(db_error)?;
        Ok(())
    }
}

impl super::Tx {
    /// The login and kind of any principal (operators and services included).
    pub async fn principal(&mut self, id: Uuid) -> Result<Option<(String, PrincipalKind)>, Error> {
        let row = sqlx::query!(
            r#"SELECT login AS "login!", kind FROM users WHERE id = $1"#,
            id
        )
        .fetch_optional(self.conn())
        .await
        .map_err(db_error)?;
        row.map(|r| Ok((r.login, PrincipalKind::from_db(&r.kind)?)))
            .transpose()
    }
}
