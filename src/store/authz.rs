//! Loading a subject's entitlements for the decision engine: one query,
//! whatever the subject.

use serde::Deserialize;
use sqlx::types::Json;
use uuid::Uuid;

use super::{db_error, Store};
use crate::domain::{
    account::{AccountState, AccountStatus},
    decision::{
        AccountEntitlement, Accounts, Entitlements, GrantEntitlement, KeyEntitlement, Micros,
    },
    key::KeyHash,
    principal::PrincipalKind,
    rights::{shared_code, Scope},
    Error,
};

/// How a decision names its subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SubjectRef {
    Key(KeyHash),
    Id(Uuid),
    /// Stored form of a user key.
    UserKey(String),
}

/// What one load returns: the subject (if it exists), the state of the
/// account asked about (`None`: none was), and the revision the answer is
/// as of.
#[derive(Debug)]
pub struct Loaded {
    pub subject: Option<Entitlements>,
    pub account: Option<AccountState>,
    pub revision: i64,
}

#[derive(Debug, Deserialize)]
struct KeyJson {
    h: String,
    id: Uuid,
    e: Option<Micros>,
    r: Option<Micros>,
}

#[derive(Debug, Deserialize)]
struct AccountJson {
    c: String,
    closed: bool,
    t: Vec<String>,
    g: Vec<GrantJson>,
}

#[derive(Debug, Deserialize)]
struct GrantJson {
    r: String,
    s: Option<String>,
    e: Option<Micros>,
    /// The role that gives it, if not granted directly.
    o: Option<String>,
}

impl Store {
    /// Loads a subject's entitlements, the state of `account`, and the
    /// revision they are as of, in one statement (one snapshot).
    pub async fn load_entitlements(
        &self,
        subject: &SubjectRef,
        account: Option<&str>,
    ) -> Result<Loaded, Error> {
        self.fail_fast()?;
        let (hash, id, user_key) = match subject {
            SubjectRef::Key(h) => (Some(&h[..]), None, None),
            SubjectRef::Id(i) => (None, Some(*i), None),
            SubjectRef::UserKey(k) => (None, None, Some(k.as_str())),
        };
        let row = sqlx::query!(
            // One of $1, $2, $3 is given. One index condition whatever it
            // is, so that Postgres settles on the generic plan after a few
            // executions: planning this query (the `held_rights` view)
            // costs more than running it, and an OR of "$n IS NOT NULL"
            // branches kept it re-planning every cold load.
            r#"WITH subject AS (
                 SELECT u.id, u.kind, u.status, u.user_key FROM users u
                  WHERE u.id = COALESCE((SELECT user_id FROM connection_keys WHERE secret_hash = $1::bytea),
                                        $2::uuid,
                                        (SELECT id FROM users WHERE user_key = $3::text))
               )
               SELECT s.id AS "id?", s.kind AS "kind?", s.status AS "status?", s.user_key,
                 (SELECT COALESCE(json_agg(json_build_object(
                        'h', encode(k.secret_hash, 'hex'), 'id', k.id,
                        'e', (extract(epoch FROM k.expires_at) * 1000000)::bigint,
                        'r', (extract(epoch FROM k.revoked_at) * 1000000)::bigint)), '[]')
                    FROM connection_keys k
                   WHERE k.user_id = s.id AND (k.revoked_at IS NULL OR k.revoked_at > $5)) AS "keys!: Json<Vec<KeyJson>>",
                 (SELECT COALESCE(json_agg(json_build_object(
                        'c', a.code, 'closed', a.status = 'closed', 't', l.tags,
                        'g', (SELECT COALESCE(json_agg(json_build_object(
                                  'r', g.right_code, 's', g.scope, 'o', g.role_code,
                                  'e', (extract(epoch FROM g.expires_at) * 1000000)::bigint)), '[]')
                                FROM held_rights g WHERE g.user_id = l.user_id AND g.account_id = l.account_id))), '[]')
                    FROM links l JOIN accounts a ON a.id = l.account_id
                   WHERE l.user_id = s.id) AS "accounts!: Json<Vec<AccountJson>>",
                 (SELECT status FROM accounts WHERE code = $4) AS "account_status?",
                 (SELECT value FROM revision_counter) AS "revision!"
               FROM (SELECT 1) one LEFT JOIN subject s ON true"#,
            hash,
            id,
            user_key,
            account,
            self.clock().now()
        )
        .fetch_one(self.pool())
        .await
        .map_err(db_error)?;

        let subject = match (row.id, row.kind, row.status) {
            (Some(id), Some(kind), Some(status)) => {
                let keys = row
                    .keys
                    .0
                    .into_iter()
                    .filter_map(|k| {
                        let bytes = data_encoding::HEXLOWER.decode(k.h.as_bytes()).ok()?;
                        Some(KeyEntitlement {
                            hash: bytes.try_into().ok()?,
                            id: k.id,
                            expires_at: k.e,
                            revoked_at: k.r,
                        })
                    })
                    .collect();
                let accounts: Accounts = row
                    .accounts
                    .0
                    .into_iter()
                    .map(|a| {
                        let grants =
                            a.g.into_iter()
                                .map(|g| GrantEntitlement {
                                    right: shared_code(&g.r),
                                    scope: g.s.as_deref().and_then(Scope::from_db),
                                    expires_at: g.e,
                                    role: g.o.map(String::into_boxed_str),
                                })
                                .collect();
                        (
                            a.c,
                            AccountEntitlement {
                                closed: a.closed,
                                tags: a.t,
                                grants,
                            },
                        )
                    })
                    .collect();
                Some(Entitlements {
                    user_id: id,
                    kind: PrincipalKind::from_db(&kind)?,
                    active: status == "active",
                    user_key: row.user_key,
                    keys,
                    accounts,
                })
            }
            _ => None,
        };
        Ok(Loaded {
            subject,
            account: account
                .map(|_| AccountState::of(row.account_status.map(|s| AccountStatus::from_db(&s)))),
            revision: row.revision,
        })
    }

    /// The state of an account.
    pub async fn account_state(&self, code: &str) -> Result<AccountState, Error> {
        self.fail_fast()?;
        let status = sqlx::query_scalar!("SELECT status FROM accounts WHERE code = $1", code)
            .fetch_optional(self.pool())
            .await
            .map_err(db_error)?;
        Ok(AccountState::of(
            status.as_deref().map(AccountStatus::from_db),
        ))
    }

    /// The codes of the rights catalog.
    pub async fn right_codes(&self) -> Result<Vec<String>, Error> {
        self.fail_fast()?;
        sqlx::query_scalar!("SELECT code FROM rights")
            .fetch_all(self.pool())
            .await
            .map_err(db_error)
    }

    /// A connection of its own for the decision engine's pings, so that they
    /// never wait behind a busy pool (a late ping would send decisions to
    /// Postgres, and load the pool more).
    pub fn notifier(&self) -> Notifier {
        Notifier {
            options: (*self.pool().connect_options()).clone(),
            conn: None,
        }
    }

    /// The latest committed revision.
    pub async fn current_revision(&self) -> Result<i64, Error> {
        sqlx::query_scalar!("SELECT value FROM revision_counter")
            .fetch_one(self.pool())
            .await
            .map_err(db_error)
    }
}

/// See [`Store::notifier`].
pub struct Notifier {
    options: sqlx::postgres::PgConnectOptions,
    conn: Option<sqlx::PgConnection>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

impl Notifier {
    /// Sends a notification on `channel`, connecting first if need be; a
    /// failed connection is dropped and made again on the next call.
    pub async fn notify(&mut self, channel: &str, payload: &str) -> Result<(), Error> {
        use sqlx::Connection;
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let conn = sqlx::PgConnection::connect_with(&self.options)
                    .await
                    .map_err(db_error)?;
                self.conn.insert(conn)
            }
        };
        let sent = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(&mut *conn)
            .await;
        if let Err(e) = sent {
            self.conn = None;
            return Err(db_error(e));
        }
        Ok(())
    }
}
