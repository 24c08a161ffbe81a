//! What an import reads and writes per batch of lines: a few lookups keyed by
//! arrays, then one statement per table whatever the batch size: `COPY` for
//! plain inserts, `json_to_recordset` of one JSON parameter for updates and
//! upserts.

use std::collections::HashMap;

use serde::Serialize;
use uuid::Uuid;

use super::{copy::CopyRows, db_error, tx::Tx, users::user_error};
use crate::domain::{
    account::Account,
    credential::MessageKind,
    import::{ImportWrite, LinkChange, RightAsked, TeamJoin},
    rights::Scope,
    team::path_key,
    user::{DefaultLogin, Profile, UserKind, UserStatus},
    Error,
};

/// A user met by an import's lookups.
#[derive(Debug, Clone)]
pub struct Known {
    pub id: Uuid,
    pub user_key: Option<String>,
    /// Lowercased; `None` when archived (an archived user's email is free).
    pub email: Option<String>,
    pub login: String,
    /// Whether the importer manages him (an operator, or an admin of one of
    /// his accounts). Only a managed user may be matched by email or login.
    pub managed: bool,
}

/// A new user, as inserted.
#[derive(Debug)]
struct UserRow<'a> {
    id: Uuid,
    kind: &'static str,
    status: &'static str,
    login: &'a str,
    display_name: String,
    profile: &'a Profile,
    user_key: Option<&'a str>,
    home_account_id: Option<Uuid>,
    default_account_id: Option<Uuid>,
    search_text: String,
}

/// A changed profile of an existing user.
#[derive(Debug, Serialize)]
struct ProfileRow<'a> {
    id: Uuid,
    display_name: String,
    /// Its fields are the `users` columns of the same names.
    #[serde(flatten)]
    profile: &'a Profile,
    search_text: String,
}

#[derive(Debug, Serialize)]
struct LinkRow<'a> {
    user_id: Uuid,
    tags: &'a [String],
}

#[derive(Debug, Serialize)]
struct GrantRow<'a> {
    user_id: Uuid,
    right_code: &'a str,
    scope: Option<&'static str>,
}

#[derive(Debug, Serialize)]
struct RevokeRow<'a> {
    user_id: Uuid,
    right_code: &'a str,
}

#[derive(Debug)]
struct KeyRow {
    id: Uuid,
    user_id: Uuid,
    /// Hex of the SHA-256 of the key.
    secret_hash: String,
    display_prefix: String,
}

#[derive(Debug, Serialize)]
struct StatusRow {
    id: Uuid,
    status: &'static str,
}

/// The rows some import writes put into one account's tables.
#[derive(Debug, Default)]
struct ImportRows<'a> {
    users: Vec<UserRow<'a>>,
    links: Vec<LinkRow<'a>>,
    tags: Vec<LinkRow<'a>>,
    /// Grants of new users: plain inserts.
    new_grants: Vec<GrantRow<'a>>,
    /// Grants of existing users: inserted or re-scoped.
    grants: Vec<GrantRow<'a>>,
    revokes: Vec<RevokeRow<'a>>,
    keys: Vec<KeyRow>,
    /// New users who complete an invitation before they are active.
    invited: Vec<Uuid>,
    /// New users' first passwords (to be changed at first login).
    passwords: Vec<(Uuid, &'a str)>,
    profiles: Vec<ProfileRow<'a>>,
    statuses: Vec<StatusRow>,
    /// (user, role) given and taken back.
    role_grants: Vec<(Uuid, Uuid)>,
    role_revokes: Vec<(Uuid, Uuid)>,
    /// (user, team) joined and left.
    team_joins: Vec<(Uuid, Uuid)>,
    team_leaves: Vec<(Uuid, Uuid)>,
}

/// The ids of the teams joined: those that existed, and those the batch
/// created (`created`, by `path_key`; a dry run creates none, and leaves
/// those joins out).
fn existing<'a>(
    joins: &'a [TeamJoin],
    created: &'a HashMap<String, Uuid>,
) -> impl Iterator<Item = Uuid> + 'a {
    joins.iter().filter_map(|j| match j {
        TeamJoin::Existing(id) => Some(*id),
        TeamJoin::New(path) => created.get(&path_key(path)).copied(),
    })
}

impl<'a> ImportRows<'a> {
    /// The rows of `writes` into `account`.
    fn of(
        account: &Account,
        writes: &[&'a ImportWrite],
        created: &'a HashMap<String, Uuid>,
    ) -> Self {
        let mut rows = ImportRows::default();
        let grant_rows = |user_id: Uuid, grants: &'a [RightAsked]| {
            grants.iter().map(move |(right, scope)| GrantRow {
                user_id,
                right_code: right,
                scope: scope.map(Scope::as_str),
            })
        };
        for write in writes {
            match write {
                ImportWrite::Create { user, .. } => {
                    rows.users.push(UserRow {
                        id: user.id,
                        kind: user.kind.as_str(),
                        status: user.status.as_str(),
                        login: &user.login,
                        display_name: user.profile.display_name(),
                        search_text: user.profile.search_text(&user.login),
                        profile: &user.profile,
                        user_key: user.user_key.as_ref().map(|k| k.as_str()),
                        home_account_id: (user.kind == UserKind::Standard).then_some(account.id),
                        default_account_id: Some(account.id),
                    });
                    rows.links.push(LinkRow {
                        user_id: user.id,
                        tags: &user.tags,
                    });
                    rows.new_grants.extend(grant_rows(user.id, &user.grants));
                    if let Some(key) = &user.key {
                        rows.keys.push(KeyRow {
                            id: Uuid::now_v7(),
                            user_id: user.id,
                            secret_hash: data_encoding::HEXLOWER.encode(&key.hash()),
                            display_prefix: key.display_prefix(),
                        });
                    }
                    if user.status == UserStatus::Invited {
                        rows.invited.push(user.id);
                    }
                    if let Some(hash) = &user.password {
                        rows.passwords.push((user.id, hash));
                    }
                    rows.role_grants
                        .extend(user.roles.iter().map(|r| (user.id, *r)));
                    rows.team_joins
                        .extend(existing(&user.teams, created).map(|t| (user.id, t)));
                }
                ImportWrite::Update { change, .. } => {
                    let id = change.id;
                    if let Some((profile, login)) = &change.profile {
                        rows.profiles.push(ProfileRow {
                            id,
                            display_name: profile.display_name(),
                            search_text: profile.search_text(login),
                            profile,
                        });
                    }
                    match &change.link {
                        Some(LinkChange::Link(tags)) => {
                            rows.links.push(LinkRow { user_id: id, tags })
                        }
                        Some(LinkChange::Retag(tags)) => {
                            rows.tags.push(LinkRow { user_id: id, tags })
                        }
                        None => {}
                    }
                    rows.grants.extend(grant_rows(id, &change.grants));
                    rows.revokes
                        .extend(change.revokes.iter().map(|right_code| RevokeRow {
                            user_id: id,
                            right_code,
                        }));
                    rows.role_grants
                        .extend(change.role_grants.iter().map(|r| (id, *r)));
                    rows.role_revokes
                        .extend(change.role_revokes.iter().map(|r| (id, *r)));
                    rows.team_joins
                        .extend(existing(&change.team_joins, created).map(|t| (id, t)));
                    rows.team_leaves
                        .extend(change.team_leaves.iter().map(|t| (id, *t)));
                    if let Some(status) = change.status {
                        rows.statuses.push(StatusRow {
                            id,
                            status: status.as_str(),
                        });
                    }
                }
                ImportWrite::Deactivate { id } => {
                    rows.statuses.push(StatusRow {
                        id: *id,
                        status: UserStatus::Deactivated.as_str(),
                    });
                }
            }
        }
        rows
    }
}

/// Rows as one JSON array (`None`: none).
fn json<T: Serialize>(rows: &[T]) -> Result<Option<String>, Error> {
    if rows.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(rows)
        .map(Some)
        .map_err(|e| Error::Internal(format!("encoding a batch: {e}")))
}
impl Tx {
    /// The users (standard or advanced) having one of these user keys,
    /// live emails (lowercased) or logins, each with whether `actor`
    /// manages him (`operator`: everyone). The caller may match a user by
    /// email or login only when he is managed; the others only tell that
    /// the email or login is taken.
    pub async fn users_known_by(
        &mut self,
        keys: &[String],
        emails: &[String],
        logins: &[String],
        actor: Uuid,
        operator: bool,
    ) -> Result<Vec<Known>, Error> {
        let found = sqlx::query!(
            r#"SELECT id AS "id!", user_key, CASE WHEN status <> 'archived' THEN lower(email) END AS email,
                      login AS "login!",
                      $5 OR clef_manages($4, u.id, $6) AS "managed!"
                 FROM (SELECT * FROM users WHERE user_key = ANY($1)
                       UNION
                       SELECT * FROM users WHERE lower(email) = ANY($2) AND email IS NOT NULL AND status <> 'archived'
                       UNION
                       SELECT * FROM users WHERE login = ANY($3)) u
                WHERE kind IN ('standard', 'advanced')"#,
            keys,
            emails,
            logins,
            actor,
            operator,
            self.now()
        )
        .fetch_all(self.conn())
        .await
        .map_err(db_error)?;
        Ok(found
            .into_iter()
            .map(|r| Known {
                id: r.id,
                user_key: r.user_key,
                email: r.email,
                login: r.login,
                managed: r.managed,
            })
            .collect())
    }

    /// The tags of the links of these users to `account` (users without a
    /// link are left out).
    pub async fn links_to_account(
        &mut self,
        account: Uuid,
        users: &[Uuid],
    ) -> Result<Vec<(Uuid, Vec<String>)>, Error> {
        let rows = sqlx::query!(
            "SELECT user_id, tags FROM links WHERE account_id = $1 AND user_id = ANY($2)",
            account,
            users
        )
        .fetch_all(self.conn())
        .await
        .map_err(db_error)?;
        Ok(rows.into_iter().map(|r| (r.user_id, r.tags)).collect())
    }

    /// The live roles of these users on `account`: (user, role id).
    pub async fn roles_on_account(
        &mut self,
        account: Uuid,
        users: &[Uuid],
    ) -> Result<Vec<(Uuid, Uuid)>, Error> {
        let rows = sqlx::query!(
            "SELECT user_id, role_id FROM role_grants
              WHERE account_id = $1 AND user_id = ANY($2) AND (expires_at IS NULL OR expires_at > $3)",
            account,
            users,
            self.now()
        )
        .fetch_all(self.conn())
        .await
        .map_err(db_error)?;
        Ok(rows.into_iter().map(|r| (r.user_id, r.role_id)).collect())
    }

    /// The teams of these users in an organization: (user, team id).
    pub async fn teams_in_organization(
        &mut self,
        organization: Uuid,
        users: &[Uuid],
    ) -> Result<Vec<(Uuid, Uuid)>, Error> {
        let rows = sqlx::query!(
            "SELECT m.user_id, m.team_id FROM team_members m JOIN teams t ON t.id = m.team_id
              WHERE t.organization_id = $1 AND m.user_id = ANY($2)",
            organization,
            users
        )
        .fetch_all(self.conn())
        .await
        .map_err(db_error)?;
        Ok(rows.into_iter().map(|r| (r.user_id, r.team_id)).collect())
    }

    /// The grants of these users on `account`: (user, right, scope).
    pub async fn grants_on_account(
        &mut self,
        account: Uuid,
        users: &[Uuid],
    ) -> Result<Vec<(Uuid, String, Option<Scope>)>, Error> {
        let rows = sqlx::query!(
            "SELECT user_id, right_code, scope FROM grants WHERE account_id = $1 AND user_id = ANY($2)",
            account,
            users
        )
        .fetch_all(self.conn())
        .await
        .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let scope = r.scope.as_deref().and_then(Scope::from_db);
                (r.user_id, r.right_code, scope)
            })
            .collect())
    }

    /// Writes what some import lines decided, one statement per kind of row.
    /// A uniqueness violation fails the whole call (the caller retries line
    /// by line under savepoints to tell which line it was).
    pub async fn write_import(
        &mut self,
        account: &Account,
        writes: &[&ImportWrite],
        teams: &HashMap<String, Uuid>,
    ) -> Result<(), Error> {
        let rows = ImportRows::of(account, writes, teams);
        let account = account.id;
        let revision = self.revision()?;
        let actor = self.actor();
        // Plain inserts go through COPY (cheapest for Postgres); updates
        // and upserts through json_to_recordset.
        let mut users = CopyRows::default();
        for u in &rows.users {
            let p = &u.profile;
            users
                .uuid(u.id)
                .text(u.kind)
                .text(u.status)
                .text(u.login)
                .text(&u.display_name)
                .text(&p.last_name)
                .text(&p.first_name)
                .opt(p.job_title.as_deref())
                .opt(p.email.as_deref())
                .opt(p.phone.as_deref())
                .array(&p.address_lines)
                .opt(p.postal_code.as_deref())
                .opt(p.city.as_deref())
                .opt(p.country.as_deref())
                .opt(p.civility.as_deref())
                .text(&p.language)
                .opt(u.user_key)
                .opt_uuid(u.home_account_id)
                .opt_uuid(u.default_account_id)
                .text(&u.search_text)
                .int(revision)
                .end_row();
        }
        users
            .send(
                self.conn(),
                "users",
                "id, kind, status, login, display_name, last_name, first_name, job_title, email, phone, \
                 address_lines, postal_code, city, country, civility, language, user_key, home_account_id, \
                 default_account_id, search_text, revision",
                user_error,
            )
            .await?;
        if let Some(rows) = json(&rows.profiles)? {
            sqlx::query!(
                r#"UPDATE users u SET display_name = r.display_name, last_name = r.last_name,
                          first_name = r.first_name, job_title = r.job_title, email = r.email, phone = r.phone,
                          address_lines = r.address_lines, postal_code = r.postal_code, city = r.city,
                          country = r.country, civility = r.civility, language = r.language,
                          search_text = r.search_text, updated_at = now(), revision = $2
                     FROM json_to_recordset($1::text::json) AS r(
                          id uuid, display_name text, last_name text, first_name text, job_title text, email text,
                          phone text, address_lines text[], postal_code text, city text, country text,
                          civility text, language text, search_text text)
                    WHERE u.id = r.id"#,
                rows,
                revision
            )
            .execute(self.conn())
            .await
            .map_err(user_error)?;
        }
        if let Some(rows) = json(&rows.statuses)? {
            sqlx::query!(
                r#"UPDATE users u SET status = r.status, updated_at = now(), revision = $2
                     FROM json_to_recordset($1::text::json) AS r(id uuid, status text)
                    WHERE u.id = r.id"#,
                rows,
                revision
            )
            .execute(self.conn())
            .await
            .map_err(user_error)?;
        }
        let mut links = CopyRows::default();
        for l in &rows.links {
            links
                .uuid(l.user_id)
                .uuid(account)
                .array(l.tags)
                .int(revision)
                .end_row();
        }
        links
            .send(
                self.conn(),
                "links",
                "user_id, account_id, tags, revision",
                |e| super::db_error_for(e, "this link", "user or account"),
            )
            .await?;
        if let Some(rows) = json(&rows.tags)? {
            sqlx::query!(
                r#"UPDATE links l SET tags = r.tags, updated_at = now(), revision = $3
                     FROM json_to_recordset($1::text::json) AS r(user_id uuid, tags text[])
                    WHERE l.user_id = r.user_id AND l.account_id = $2"#,
                rows,
                account,
                revision
            )
            .execute(self.conn())
            .await
            .map_err(db_error)?;
        }
        if let Some(rows) = json(&rows.revokes)? {
            sqlx::query!(
                r#"DELETE FROM grants g USING json_to_recordset($1::text::json) AS r(user_id uuid, right_code text)
                    WHERE g.user_id = r.user_id AND g.account_id = $2 AND g.right_code = r.right_code"#,
                rows,
                account
            )
            .execute(self.conn())
            .await
            .map_err(db_error)?;
        }
        if let Some(rows) = json(&rows.grants)? {
            sqlx::query!(
                r#"INSERT INTO grants (user_id, account_id, right_code, scope, granted_by, revision)
                   SELECT user_id, $2, right_code, scope, $3, $4
                     FROM json_to_recordset($1::text::json) AS r(user_id uuid, right_code text, scope text)
                   ON CONFLICT (user_id, account_id, right_code) DO UPDATE
                      SET scope = EXCLUDED.scope, granted_by = EXCLUDED.granted_by, granted_at = now(),
                          expires_at = NULL, revision = EXCLUDED.revision"#,
                rows,
                account,
                actor,
                revision
            )
            .execute(self.conn())
            .await
            .map_err(|e| super::db_error_for(e, "grant", "link of this user to this account"))?;
        }
        let mut grants = CopyRows::default();
        for g in &rows.new_grants {
            grants
                .uuid(g.user_id)
                .uuid(account)
                .text(g.right_code)
                .opt(g.scope)
                .opt_uuid(actor)
                .int(revision)
                .end_row();
        }
        grants
            .send(
                self.conn(),
                "grants",
                "user_id, account_id, right_code, scope, granted_by, revision",
                |e| super::db_error_for(e, "grant", "link of this user to this account"),
            )
            .await?;
        let mut keys = CopyRows::default();
        for k in &rows.keys {
            keys.uuid(k.id)
                .uuid(k.user_id)
                .text(&format!("\\x{}", k.secret_hash))
                .text(&k.display_prefix)
                .end_row();
        }
        keys.send(
            self.conn(),
            "connection_keys",
            "id, user_id, secret_hash, display_prefix",
            db_error,
        )
        .await?;
        let mut passwords = CopyRows::default();
        for (user, hash) in &rows.passwords {
            passwords
                .uuid(*user)
                .text(hash)
                .text("t")
                .int(revision)
                .end_row();
        }
        passwords
            .send(
                self.conn(),
                "passwords",
                "user_id, hash, must_change, revision",
                db_error,
            )
            .await?;
        self.write_import_roles_and_teams(account, &rows).await?;
        // Their invitations: the messages draw their tokens as they leave.
        self.enqueue_many(
            MessageKind::Invitation,
            &rows.invited,
            Some(account),
            serde_json::json!({ "granted_by": actor }),
        )
        .await?;
        Ok(())
    }

    /// The roles and teams of an import's batch, after its links (a role
    /// needs the link, a member a link to the organization: the database's
    /// rules, migrations `roles` and `teams`).
    async fn write_import_roles_and_teams(
        &mut self,
        account: Uuid,
        rows: &ImportRows<'_>,
    ) -> Result<(), Error> {
        let revision = self.revision()?;
        let actor = self.actor();
        let split =
            |pairs: &[(Uuid, Uuid)]| -> (Vec<Uuid>, Vec<Uuid>) { pairs.iter().copied().unzip() };
        if !rows.role_revokes.is_empty() {
            let (users, roles) = split(&rows.role_revokes);
            sqlx::query!(
                "DELETE FROM role_grants g USING unnest($1::uuid[], $2::uuid[]) AS r(user_id, role_id)
                  WHERE g.user_id = r.user_id AND g.account_id = $3 AND g.role_id = r.role_id",
                &users,
                &roles,
                account
            )
            .execute(self.conn())
            .await
            .map_err(db_error)?;
        }
        if !rows.role_grants.is_empty() {
            let (users, roles) = split(&rows.role_grants);
            sqlx::query!(
                "INSERT INTO role_grants (user_id, account_id, role_id, granted_by, revision)
                 SELECT r.user_id, $3, r.role_id, $4, $5 FROM unnest($1::uuid[], $2::uuid[]) AS r(user_id, role_id)
                 ON CONFLICT (user_id, account_id, role_id) DO UPDATE
                    SET granted_by = EXCLUDED.granted_by, granted_at = now(), expires_at = NULL,
                        revision = EXCLUDED.revision",
                &users,
                &roles,
                account,
                actor,
                revision
            )
            .execute(self.conn())
            .await
            .map_err(|e| super::db_error_for(e, "role grant", "link of this user to this account"))?;
        }
        if !rows.team_leaves.is_empty() {
            let (users, teams) = split(&rows.team_leaves);
            sqlx::query!(
                "DELETE FROM team_members m USING unnest($1::uuid[], $2::uuid[]) AS r(user_id, team_id)
                  WHERE m.user_id = r.user_id AND m.team_id = r.team_id",
                &users,
                &teams
            )
            .execute(self.conn())
            .await
            .map_err(db_error)?;
        }
        if !rows.team_joins.is_empty() {
            let (users, teams) = split(&rows.team_joins);
            sqlx::query!(
                "INSERT INTO team_members (team_id, user_id, added_at, revision)
                 SELECT r.team_id, r.user_id, $3, $4 FROM unnest($1::uuid[], $2::uuid[]) AS r(user_id, team_id)
                 ON CONFLICT DO NOTHING",
                &users,
                &teams,
                self.now(),
                revision
            )
            .execute(self.conn())
            .await
            .map_err(db_error)?;
        }
        Ok(())
    }

    /// The login a user given none gets (see `DefaultLogin`), none of
    /// `also_taken`: his email when free, else the first free of `name`,
    /// `name2`, `name3`...
    pub async fn free_login_besides(
        &mut self,
        choice: &DefaultLogin,
        also_taken: &std::collections::HashSet<String>,
    ) -> Result<String, Error> {
        if let Some(email) = &choice.email {
            if !also_taken.contains(email) && !self.logins_like(email).await?.contains(email) {
                return Ok(email.clone());
            }
        }
        let base = choice.name.as_str();
        let taken = self.logins_like(base).await?;
        let free = |l: &String| !taken.contains(l) && !also_taken.contains(l);
        if free(&base.to_owned()) {
            return Ok(base.to_owned());
        }
        Ok((2..)
            .map(|n| format!("{base}{n}"))
            .find(free)
            .unwrap_or_else(|| base.to_owned()))
    }
}
