//! Users and links.

use uuid::Uuid;

use super::{db_error, tx::Tx};
use crate::domain::{
    user::{DefaultLogin, Profile, User, UserKey, UserKind, UserStatus},
    user::{Link, LinkedAccount},
    Error,
};

/// A user to insert, validated.
#[derive(Debug)]
pub struct NewUser<'a> {
    pub kind: UserKind,
    pub status: UserStatus,
    /// `None`: derived from the profile (see `domain::user::default_login`).
    pub login: Option<&'a str>,
    pub derived_login: DefaultLogin,
    pub profile: &'a Profile,
    pub user_key: Option<&'a UserKey>,
    pub home_account_id: Option<Uuid>,
    pub default_account_id: Option<Uuid>,
}

/// Filters of `ListUsers`.
#[derive(Debug, Default)]
pub struct UserFilter {
    pub account_id: Uuid,
    /// Any of these (never empty: see `UserStatus::LISTED_BY_DEFAULT`).
    pub statuses: Vec<UserStatus>,
    pub kind: Option<UserKind>,
    /// Lowercased substring.
    pub query: String,
    /// Only members of one of these teams.
    pub teams: Option<Vec<Uuid>>,
    pub after: Option<Uuid>,
    pub limit: i64,
}

pub(super) fn user_error(e: sqlx::Error) -> Error {
    if let sqlx::Error::Database(d) = &e {
        match d.constraint() {
            Some("users_email_live") => {
                return Error::AlreadyExists {
                    what: "a user with this email".into(),
                    field: Some("email"),
                }
            }
            Some("users_login_key") => {
                return Error::AlreadyExists {
                    what: "a user with this login".into(),
                    field: Some("login"),
                }
            }
            _ => {}
        }
    }
    db_error(e)
}

impl Tx {
    /// Users by id, in the order asked; unknown ids are skipped.
    pub async fn users_by_ids(&mut self, ids: &[Uuid]) -> Result<Vec<User>, Error> {
        let rows = sqlx::query!(
            r#"SELECT u.id, u.kind, u.status, u.login AS "login!", u.user_key,
                      u.last_name AS "last_name!", u.first_name AS "first_name!", u.job_title, u.email, u.phone,
                      u.address_lines, u.postal_code, u.city, u.country, u.civility, u.language,
                      h.code AS "home_code?", d.code AS "default_code?",
                      u.created_at, u.updated_at, u.revision
                 FROM users u
                 LEFT JOIN accounts h ON h.id = u.home_account_id
                 LEFT JOIN accounts d ON d.id = u.default_account_id
                WHERE u.id = ANY($1) AND u.kind IN ('standard', 'advanced')"#,
            ids
        )
        .fetch_all(self.conn())
        .await
        .map_err(db_error)?;
        let mut users: Vec<User> = rows
            .into_iter()
            .map(|r| User {
                id: r.id,
                kind: UserKind::parse(&r.kind).unwrap_or(UserKind::Standard),
                status: UserStatus::from_db(&r.status),
                login: r.login,
                user_key: r.user_key.map(UserKey::from_db),
                profile: Profile {
                    last_name: r.last_name,
                    first_name: r.first_name,
                    job_title: r.job_title,
                    email: r.email,
                    phone: r.phone,
                    address_lines: r.address_lines,
                    postal_code: r.postal_code,
                    city: r.city,
                    country: r.country,
                    civility: r.civility,
                    language: r.language,
                },
                home_account: r.home_code,
                default_account: r.default_code,
                created_at: r.created_at,
                updated_at: r.updated_at,
                revision: r.revision,
            })
            .collect();
        users.sort_by_key(|u| ids.iter().position(|i| *i == u.id));
        Ok(users)
    }

    pub async fn user(&mut self, id: Uuid) -> Result<Option<User>, Error> {
        Ok(self.users_by_ids(&[id]).await?.pop())
    }

    pub async fn user_id_by_key(&mut self, key: &UserKey) -> Result<Option<Uuid>, Error> {
        sqlx::query_scalar!("SELECT id FROM users WHERE user_key = $1", key.as_str())
            .fetch_optional(self.conn())
            .await
            .map_err(db_error)
    }

    /// The user with this login, if `actor` may see him (himself, a user
    /// linked to an account he administers; an `operator` everyone). There
    /// is no unscoped lookup by login or email: another tenant's user is
    /// reached by his user key only, and his login tells nothing.
    pub async fn user_id_by_login(
        &mut self,
        login: &str,
        actor: Uuid,
        operator: bool,
    ) -> Result<Option<Uuid>, Error> {
        sqlx::query_scalar!(
            r#"SELECT u.id FROM users u
                WHERE u.login = $1 AND u.kind IN ('standard', 'advanced')
                  AND ($3 OR u.id = $2 OR clef_manages($2, u.id, $4))"#,
            login,
            actor,
            operator,
            self.now()
        )
        .fetch_optional(self.conn())
        .await
        .map_err(db_error)
    }

    /// The non-archived user with this email (case-insensitive), if `actor`
    /// may see him (see [`Tx::user_id_by_login`]).
    pub async fn user_id_by_email(
        &mut self,
        email: &str,
        actor: Uuid,
        operator: bool,
    ) -> Result<Option<Uuid>, Error> {
        sqlx::query_scalar!(
            r#"SELECT u.id FROM users u
                WHERE lower(u.email) = lower($1) AND u.status <> 'archived'
                  AND ($3 OR u.id = $2 OR clef_manages($2, u.id, $4))"#,
            email,
            actor,
            operator,
            self.now()
        )
        .fetch_optional(self.conn())
        .await
        .map_err(db_error)
    }

    /// Inserts a user. A derived login gets the first free numeric suffix.
    pub async fn insert_user(&mut self, new: &NewUser<'_>) -> Result<User, Error> {
        let revision = self.revision()?;
        let login = match new.login {
            Some(login) => login.to_owned(),
            None => self.free_login(&new.derived_login).await?,
        };
        let id = Uuid::now_v7();
        let p = new.profile;
        sqlx::query!(
            "INSERT INTO users (id, kind, status, login, display_name, last_name, first_name, job_title, email, phone,
                                address_lines, postal_code, city, country, civility, language, user_key,
                                home_account_id, default_account_id, search_text, revision)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)",
            id,
            new.kind.as_str(),
            new.status.as_str(),
            login,
            p.display_name(),
            p.last_name,
            p.first_name,
            p.job_title,
            p.email,
            p.phone,
            &p.address_lines,
            p.postal_code,
            p.city,
            p.country,
            p.civility,
            p.language,
            new.user_key.map(UserKey::as_str),
            new.home_account_id,
            new.default_account_id,
            p.search_text(&login),
            revision
        )
        .execute(self.conn())
        .await
        .map_err(user_error)?;
        self.user(id)
            .await?
            .ok_or_else(|| Error::Internal("inserted user vanished".into()))
    }

    async fn free_login(&mut self, choice: &DefaultLogin) -> Result<String, Error> {
        self.free_login_besides(choice, &Default::default()).await
    }

    /// The logins starting with `base`.
    pub(super) async fn logins_like(
        &mut self,
        base: &str,
    ) -> Result<std::collections::HashSet<String>, Error> {
        let pattern = format!(
            "{}%",
            base.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let taken: Vec<String> = sqlx::query_scalar!(
            "SELECT login AS \"login!\" FROM users WHERE login LIKE $1",
            pattern
        )
        .fetch_all(self.conn())
        .await
        .map_err(db_error)?;
        Ok(taken.into_iter().collect())
    }

    pub async fn update_user_profile(
        &mut self,
        id: Uuid,
        p: &Profile,
        login: &str,
        default_account_id: Option<Uuid>,
    ) -> Result<User, Error> {
        let revision = self.revision()?;
        sqlx::query!(
            "UPDATE users SET display_name = $2, last_name = $3, first_name = $4, job_title = $5, email = $6,
                    phone = $7, address_lines = $8, postal_code = $9, city = $10, country = $11, civility = $12,
                    language = $13, default_account_id = $14, search_text = $15, updated_at = now(), revision = $16
              WHERE id = $1",
            id,
            p.display_name(),
            p.last_name,
            p.first_name,
            p.job_title,
            p.email,
            p.phone,
            &p.address_lines,
            p.postal_code,
            p.city,
            p.country,
            p.civility,
            p.language,
            default_account_id,
            p.search_text(login),
            revision
        )
        .execute(self.conn())
        .await
        .map_err(user_error)?;
        self.user(id)
            .await?
            .ok_or_else(|| Error::NotFound("user".into()))
    }

    pub async fn set_user_status(&mut self, id: Uuid, status: UserStatus) -> Result<(), Error> {
        let revision = self.revision()?;
        sqlx::query!(
            "UPDATE users SET status = $2, updated_at = now(), revision = $3 WHERE id = $1",
            id,
            status.as_str(),
            revision
        )
        .execute(self.conn())
        .await
        .map_err(user_error)?;
        Ok(())
    }

    /// Locks the users (in id order, so concurrent mass changes cannot
    /// deadlock) for the rest of the transaction.
    pub async fn lock_users(&mut self, ids: &[Uuid]) -> Result<(), Error> {
        sqlx::query!(
            "SELECT id FROM users WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            ids
        )
        .fetch_all(self.conn())
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// One page of the users linked to an account, in creation order.
    pub async fn list_users(&mut self, f: &UserFilter) -> Result<Vec<User>, Error> {
        let pattern = format!(
            "%{}%",
            f.query
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let ids: Vec<Uuid> = sqlx::query_scalar!(
            "SELECT u.id FROM links l JOIN users u ON u.id = l.user_id
              WHERE l.account_id = $1
                AND u.status = ANY($2::text[])
                AND ($3::text IS NULL OR u.kind = $3)
                AND u.search_text LIKE $4
                AND ($5::uuid IS NULL OR u.id > $5)
                AND ($7::uuid[] IS NULL
                     OR EXISTS (SELECT 1 FROM team_members m WHERE m.user_id = u.id AND m.team_id = ANY($7)))
              ORDER BY u.id
              LIMIT $6",
            f.account_id,
            &f.statuses
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect::<Vec<_>>(),
            f.kind.map(UserKind::as_str),
            pattern,
            f.after,
            f.limit,
            f.teams.as_deref()
        )
        .fetch_all(self.conn())
        .await
        .map_err(db_error)?;
        self.users_by_ids(&ids).await
    }

    /// The accounts a user is linked to, each with whether `actor` holds a
    /// live `admin.users` there.
    pub async fn linked_accounts(
        &mut self,
        user: Uuid,
        actor: Uuid,
    ) -> Result<Vec<LinkedAccount>, Error> {
        let rows = sqlx::query!(
            r#"SELECT l.account_id, a.code,
                      EXISTS (SELECT 1 FROM held_rights g
                               WHERE g.user_id = $2 AND g.account_id = l.account_id AND g.right_code = 'admin.users'
                                 AND (g.expires_at IS NULL OR g.expires_at > $3)) AS "admin!"
                 FROM links l JOIN accounts a ON a.id = l.account_id
                WHERE l.user_id = $1
                ORDER BY a.code"#,
            user,
            actor,
            self.now()
        )
        .fetch_all(self.conn())
        .await
        .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|r| LinkedAccount {
                account_id: r.account_id,
                code: r.code,
                actor_is_admin: r.admin,
            })
            .collect())
    }

    /// For each of `users` linked to accounts on which `actor` holds no
    /// live `admin.users`, those accounts' codes (sorted).
    pub async fn accounts_not_administered(
        &mut self,
        users: &[Uuid],
        actor: Uuid,
    ) -> Result<Vec<(Uuid, Vec<String>)>, Error> {
        let rows = sqlx::query!(
            r#"SELECT l.user_id, array_agg(a.code ORDER BY a.code) AS "codes!"
                 FROM links l JOIN accounts a ON a.id = l.account_id
                WHERE l.user_id = ANY($1)
                  AND NOT EXISTS (SELECT 1 FROM held_rights g
                                   WHERE g.user_id = $2 AND g.account_id = l.account_id
                                     AND g.right_code = 'admin.users'
                                     AND (g.expires_at IS NULL OR g.expires_at > $3))
                GROUP BY l.user_id"#,
            users,
            actor,
            self.now()
        )
        .fetch_all(self.conn())
        .await
        .map_err(db_error)?;
        Ok(rows.into_iter().map(|r| (r.user_id, r.codes)).collect())
    }

    /// Whether `actor` holds a live `admin.users` on any account.
    pub async fn administers_any(&mut self, actor: Uuid) -> Result<bool, Error> {
        sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM held_rights WHERE user_id = $1 AND right_code = 'admin.users'
                               AND (expires_at IS NULL OR expires_at > $2)) AS "e!""#,
            actor,
            self.now()
        )
        .fetch_one(self.conn())
        .await
        .map_err(db_error)
    }

    pub async fn link(&mut self, user: Uuid, account: Uuid) -> Result<Option<Link>, Error> {
        Ok(self
            .links(Some(user), Some(account), None, None, 1)
            .await?
            .pop())
    }

    /// Links filtered by user and/or account, restricted to `only_accounts`
    /// when given, in (account code, user id) order after `after`.
    pub async fn links(
        &mut self,
        user: Option<Uuid>,
        account: Option<Uuid>,
        only_accounts: Option<&[Uuid]>,
        after: Option<(String, Uuid)>,
        limit: i64,
    ) -> Result<Vec<Link>, Error> {
        let (after_code, after_user) = after.unzip();
        let rows = sqlx::query_as!(
            Link,
            r#"SELECT l.user_id, l.account_id, a.code AS account_code, l.tags, l.created_at, l.revision
                 FROM links l JOIN accounts a ON a.id = l.account_id
                WHERE ($1::uuid IS NULL OR l.user_id = $1)
                  AND ($2::uuid IS NULL OR l.account_id = $2)
                  AND ($3::uuid[] IS NULL OR l.account_id = ANY($3))
                  AND ($4::text IS NULL OR (a.code, l.user_id) > ($4 COLLATE "C", $5))
                ORDER BY a.code, l.user_id
                LIMIT $6"#,
            user,
            account,
            only_accounts,
            after_code,
            after_user,
            limit
        )
        .fetch_all(self.conn())
        .await
        .map_err(db_error)?;
        Ok(rows)
    }

    pub async fn insert_link(
        &mut self,
        user: Uuid,
        account: Uuid,
        tags: &[String],
    ) -> Result<(), Error> {
        let revision = self.revision()?;
        sqlx::query!(
            "INSERT INTO links (user_id, account_id, tags, revision) VALUES ($1, $2, $3, $4)",
            user,
            account,
            tags,
            revision
        )
        .execute(self.conn())
        .await
        .map_err(|e| super::db_error_for(e, "this link", "user or account"))?;
        Ok(())
    }

    pub async fn set_link_tags(
        &mut self,
        user: Uuid,
        account: Uuid,
        tags: &[String],
    ) -> Result<bool, Error> {
        let revision = self.revision()?;
        let done = sqlx::query!(
            "UPDATE links SET tags = $3, updated_at = now(), revision = $4 WHERE user_id = $1 AND account_id = $2",
            user,
            account,
            tags,
            revision
        )
        .execute(self.conn())
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes a link; its grants go with it (foreign key cascade). Returns
    /// how many grants were removed.
    pub async fn delete_link(&mut self, user: Uuid, account: Uuid) -> Result<i64, Error> {
        let grants = sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM grants WHERE user_id = $1 AND account_id = $2"#,
            user,
            account
        )
        .fetch_one(self.conn())
        .await
        .map_err(db_error)?;
        sqlx::query!(
            "DELETE FROM links WHERE user_id = $1 AND account_id = $2",
            user,
            account
        )
        .execute(self.conn())
        .await
        .map_err(db_error)?;
        Ok(grants)
    }
}
