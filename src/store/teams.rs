//! Teams and their members. The tree's rules are Postgres's (migration
//! `teams`): a violation comes back as the error its constraint names.

use uuid::Uuid;

use super::{db_error, db_error_for, tx::Tx};
use crate::domain::{team::Team, Error};

/// The teams of an organization with their paths and member counts, in
/// tree order (a team, then its sub-teams, siblings by name); `only`
/// restricts them to one team and its sub-teams. Trees are at most 20 levels
/// deep (migration `teams`).
macro_rules! teams_query {
    ($org:expr, $only:expr) => {
        sqlx::query_as!(
            TeamRow,
            r#"WITH RECURSIVE tree (id, path, sort, depth) AS (
                   SELECT id, name, ARRAY[lower(name)], 1 FROM teams
                    WHERE organization_id = $1 AND ($2::uuid IS NULL AND parent_id IS NULL OR id = $2)
                   UNION ALL
                   SELECT t.id, tree.path || '/' || t.name, tree.sort || lower(t.name), tree.depth + 1
                     FROM teams t JOIN tree ON t.parent_id = tree.id
                    WHERE tree.depth < 100
               )
               SELECT t.id AS "id!", t.organization_id AS "organization_id!", t.parent_id,
                      t.name AS "name!", t.created_at AS "created_at!", t.revision AS "revision!",
                      CASE WHEN $2::uuid IS NULL THEN tree.path ELSE clef_team_path(t.id) END AS "path!",
                      (SELECT count(*) FROM team_members m WHERE m.team_id = t.id) AS "members!"
                 FROM tree JOIN teams t ON t.id = tree.id
                ORDER BY tree.sort"#,
            $org,
            $only
        )
    };
}

struct TeamRow {
    id: Uuid,
    organization_id: Uuid,
    parent_id: Option<Uuid>,
    name: String,
    created_at: chrono::DateTime<chrono::Utc>,
    revision: i64,
    path: String,
    members: i64,
}

impl From<TeamRow> for Team {
    fn from(r: TeamRow) -> Self {
        Team {
            id: r.id,
            organization_id: r.organization_id,
            parent_id: r.parent_id,
            name: r.name,
            path: r.path,
            members: r.members,
            created_at: r.created_at,
            revision: r.revision,
        }
    }
}

/// A team's name already taken among its siblings, a cycle, a member not
/// linked to the organization, a team not empty: each said as it is.
fn team_error(e: sqlx::Error, name: &str) -> Error {
    if let sqlx::Error::Database(d) = &e {
        match d.constraint() {
            Some("team_sibling_names") => {
                return Error::already_exists(format!("team {name:?} at that level"))
            }
            Some("teams_organization_id_fkey") => return Error::NotFound("organization".into()),
            Some("team_parent") if d.code().as_deref() == Some("23503") => {
                return Error::FailedPrecondition(format!(
                    "team {name:?} has sub-teams: move or delete them first"
                ))
            }
            Some("team_member_team") => {
                return Error::FailedPrecondition(format!(
                    "team {name:?} has members: remove them first"
                ))
            }
            _ => {}
        }
    }
    db_error_for(e, &format!("team {name:?}"), "team")
}

impl Tx {
    /// An organization's teams, by path.
    pub async fn teams(&mut self, organization: Uuid) -> Result<Vec<Team>, Error> {
        let rows = teams_query!(organization, None::<Uuid>)
            .fetch_all(self.conn())
            .await
            .map_err(db_error)?;
        Ok(rows.into_iter().map(Team::from).collect())
    }

    /// A team and its sub-teams (the team first).
    pub async fn subtree(&mut self, organization: Uuid, team: Uuid) -> Result<Vec<Team>, Error> {
        let mut rows: Vec<Team> = teams_query!(organization, Some(team))
            .fetch_all(self.conn())
            .await
            .map_err(db_error)?
            .into_iter()
            .map(Team::from)
            .collect();
        if let Some(i) = rows.iter().position(|t| t.id == team) {
            let root = rows.remove(i);
            rows.insert(0, root);
        }
        Ok(rows)
    }

    /// A team by id.
    pub async fn team(&mut self, id: Uuid) -> Result<Option<Team>, Error> {
        let row = sqlx::query_as!(
            TeamRow,
            r#"SELECT id, organization_id, parent_id, name, created_at, revision,
                      clef_team_path(id) AS "path!",
                      (SELECT count(*) FROM team_members m WHERE m.team_id = t.id) AS "members!"
                 FROM teams t WHERE id = $1"#,
            id
        )
        .fetch_optional(self.conn())
        .await
        .map_err(db_error)?;
        Ok(row.map(Team::from))
    }

    /// The team a path names in an organization (names compared
    /// case-insensitively, as siblings are unique).
    pub async fn team_by_path(
        &mut self,
        organization: Uuid,
        path: &[String],
    ) -> Result<Option<Uuid>, Error> {
        let mut parent: Option<Uuid> = None;
        for name in path {
            let found = sqlx::query_scalar!(
                "SELECT id FROM teams
                  WHERE organization_id = $1 AND parent_id IS NOT DISTINCT FROM $2
                    AND lower(name) = lower($3)",
                organization,
                parent,
                name
            )
            .fetch_optional(self.conn())
            .await
            .map_err(db_error)?;
            match found {
                Some(id) => parent = Some(id),
                None => return Ok(None),
            }
        }
        Ok(parent)
    }

    /// Creates a team (its parent, if any, in the same organization).
    pub async fn insert_team(
        &mut self,
        organization: Uuid,
        parent: Option<Uuid>,
        name: &str,
    ) -> Result<Uuid, Error> {
        let revision = self.revision()?;
        sqlx::query_scalar!(
            "INSERT INTO teams (organization_id, parent_id, name, created_at, revision)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
            organization,
            parent,
            name,
            self.now(),
            revision
        )
        .fetch_one(self.conn())
        .await
        .map_err(|e| team_error(e, name))
    }

    /// Renames and/or moves a team (`parent`: `Some(None)` to the root).
    pub async fn update_team(
        &mut self,
        id: Uuid,
        name: &str,
        parent: Option<Uuid>,
    ) -> Result<(), Error> {
        let revision = self.revision()?;
        sqlx::query!(
            "UPDATE teams SET name = $2, parent_id = $3, revision = $4
              WHERE id = $1 AND (name, parent_id) IS DISTINCT FROM ($2, $3)",
            id,
            name,
            parent,
            revision
        )
        .execute(self.conn())
        .await
        .map_err(|e| team_error(e, name))?;
        Ok(())
    }

    /// Deletes a team; refused while it has members or sub-teams.
    pub async fn delete_team(&mut self, id: Uuid, name: &str) -> Result<(), Error> {
        sqlx::query!("DELETE FROM teams WHERE id = $1", id)
            .execute(self.conn())
            .await
            .map_err(|e| team_error(e, name))?;
        Ok(())
    }

    /// Adds members (those already in stay); returns how many joined.
    pub async fn add_team_members(&mut self, team: Uuid, users: &[Uuid]) -> Result<u64, Error> {
        let revision = self.revision()?;
        let done = sqlx::query!(
            "INSERT INTO team_members (team_id, user_id, added_at, revision)
             SELECT $1, u, $3, $4 FROM unnest($2::uuid[]) AS u
             ON CONFLICT DO NOTHING",
            team,
            users,
            self.now(),
            revision
        )
        .execute(self.conn())
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.constraint() == Some("team_member_linked") => {
                Error::FailedPrecondition(d.message().to_owned())
            }
            _ => db_error(e),
        })?;
        Ok(done.rows_affected())
    }

    /// Removes members; returns how many left.
    pub async fn remove_team_members(&mut self, team: Uuid, users: &[Uuid]) -> Result<u64, Error> {
        let done = sqlx::query!(
            "DELETE FROM team_members WHERE team_id = $1 AND user_id = ANY($2)",
            team,
            users
        )
        .execute(self.conn())
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected())
    }

    /// Whether `actor` holds a live `admin.users` on an account of the
    /// organization.
    pub async fn administers_organization(
        &mut self,
        actor: Uuid,
        organization: Uuid,
    ) -> Result<bool, Error> {
        sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM held_rights g JOIN accounts a ON a.id = g.account_id
                               WHERE g.user_id = $1 AND a.organization_id = $2
                                 AND g.right_code = 'admin.users'
                                 AND (g.expires_at IS NULL OR g.expires_at > $3)) AS "e!""#,
            actor,
            organization,
            self.now()
        )
        .fetch_one(self.conn())
        .await
        .map_err(db_error)
    }

    /// Of `users`, those `actor` manages (`clef_manages`: linked to an
    /// account he administers).
    pub async fn managed_among(&mut self, actor: Uuid, users: &[Uuid]) -> Result<Vec<Uuid>, Error> {
        sqlx::query_scalar!(
            r#"SELECT u AS "u!" FROM unnest($1::uuid[]) AS u WHERE clef_manages($2, u, $3)"#,
            users,
            actor,
            self.now()
        )
        .fetch_all(self.conn())
        .await
        .map_err(db_error)
    }

    /// The members of these teams (each once), by id.
    pub async fn team_member_ids(&mut self, teams: &[Uuid]) -> Result<Vec<Uuid>, Error> {
        sqlx::query_scalar!(
            "SELECT DISTINCT user_id FROM team_members WHERE team_id = ANY($1) ORDER BY user_id",
            teams
        )
        .fetch_all(self.conn())
        .await
        .map_err(db_error)
    }
}
