//! Reads behind CSV exports.

use tokio_stream::{Stream, StreamExt};
use uuid::Uuid;

use super::{copy, db_error, tx::Tx, Store};
use crate::{
    bulk::ExportRow,
    domain::{
        rights::Scope,
        user::{Profile, UserKey, UserKind, UserStatus},
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
    /// order, streamed as Postgres produces them with `COPY ... TO STDOUT`
    /// (the cheapest way for Postgres to send rows): one statement, whose
    /// pace is the caller's, so memory stays constant whatever the size
    /// (Postgres sorts on disk beyond `work_mem`). Archived users are left
    /// out; so are expired grants.
    pub async fn export_rows<'a>(
        &'a mut self,
        accounts: &[Uuid],
        teams: Option<&[Uuid]>,
    ) -> Result<impl Stream<Item = Result<ExportRow, Error>> + Send + 'a, Error> {
        // COPY takes no parameters: the ids are ours, formatted as UUIDs, and
        // so is the time expired grants are left out at.
        let ids: Vec<String> = accounts.iter().map(|a| format!("'{a}'")).collect();
        let now = self
            .now()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let sql = format!(
            r#"COPY (SELECT a.code, u.kind, u.status, u.login, u.user_key, u.last_name, u.first_name, u.job_title,
                           u.email, u.phone, u.address_lines, u.postal_code, u.city, u.country, u.civility,
                           u.language, l.tags,
                           (SELECT array_agg(g.right_code || ':' || COALESCE(g.scope, '')) FROM grants g
                             WHERE g.user_id = l.user_id AND g.account_id = l.account_id
                               AND (g.expires_at IS NULL OR g.expires_at > '{now}'::timestamptz)),
                           (SELECT array_agg(r.code ORDER BY r.code) FROM role_grants rg JOIN roles r ON r.id = rg.role_id
                             WHERE rg.user_id = l.user_id AND rg.account_id = l.account_id
                               AND (rg.expires_at IS NULL OR rg.expires_at > '{now}'::timestamptz)),
                           (SELECT array_agg(clef_team_path(m.team_id) ORDER BY clef_team_path(m.team_id))
                              FROM team_members m JOIN teams t ON t.id = m.team_id
                             WHERE m.user_id = l.user_id AND t.organization_id = a.organization_id)
                      FROM links l JOIN accounts a ON a.id = l.account_id JOIN users u ON u.id = l.user_id
                     WHERE l.account_id = ANY(ARRAY[{}]::uuid[]) AND u.status <> 'archived'
                       AND u.kind IN ('standard', 'advanced') {}
                     ORDER BY a.code, l.user_id) TO STDOUT"#,
            ids.join(","),
            match teams {
                None => String::new(),
                Some(t) => format!(
                    "AND EXISTS (SELECT 1 FROM team_members m WHERE m.user_id = l.user_id
                                  AND m.team_id = ANY(ARRAY[{}]::uuid[]))",
                    t.iter()
                        .map(|t| format!("'{t}'"))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            }
        );
        let rows = self.conn().copy_out_raw(&sql).await.map_err(db_error)?;
        // One message per row (the protocol's rule for COPY TO).
        Ok(rows.map(|row| export_row(&row.map_err(db_error)?)))
    }
}

/// One row of the export's `COPY`, in the order of its columns.
fn export_row(row: &[u8]) -> Result<ExportRow, Error> {
    let bad = |what: &str| Error::Internal(format!("export COPY row: {what}"));
    let [account, kind, status, login, user_key, last_name, first_name, job_title, email, phone, address_lines, postal_code, city, country, civility, language, tags, rights, roles, teams]: [Option<String>; 20] =
        copy::fields(row)?
            .try_into()
            .map_err(|_| bad("expected 20 columns"))?;
    let text = |v: Option<String>| v.ok_or_else(|| bad("unexpected NULL"));
    let array = |v: Option<String>| match v {
        None => Ok(Vec::new()),
        Some(v) => copy::parse_array(&v).ok_or_else(|| bad("not an array")),
    };
    Ok(ExportRow {
        account: text(account)?,
        kind: UserKind::parse(&text(kind)?).unwrap_or(UserKind::Standard),
        status: UserStatus::from_db(&text(status)?),
        login: text(login)?,
        user_key: user_key.map(|k| UserKey::from_db(k).to_string()),
        profile: Profile {
            last_name: text(last_name)?,
            first_name: text(first_name)?,
            job_title,
            email,
            phone,
            address_lines: array(address_lines)?,
            postal_code,
            city,
            country,
            civility,
            language: text(language)?,
        },
        tags: array(tags)?,
        roles: array(roles)?,
        teams: array(teams)?,
        rights: array(rights)?
            .iter()
            .filter_map(|g| {
                let (right, scope) = g.split_once(':')?;
                Some((right.to_owned(), Scope::from_db(scope)))
            })
            .collect(),
    })
}
