//! Teams: the tree of an organization (who may shape it: operators, and
//! admins of one of its accounts) and its members (users the actor
//! manages, linked to an account of the organization).

use uuid::Uuid;

use super::users::may_set_status;
use crate::{
    domain::{
        principal::Actor,
        team::{OrgRef, Team, TeamFilter, TeamRef},
        user::{User, UserStatus},
        Error,
    },
    store::{Store, Tx},
};

/// The most users one AddTeamMembers or RemoveTeamMembers names.
pub const MAX_MEMBERS_PER_CALL: usize = 1000;

/// Refuses unless the actor may shape the organization's teams. Someone
/// without any say in the organization learns nothing of it.
async fn require_team_admin(tx: &mut Tx, actor: &Actor, organization: Uuid) -> Result<(), Error> {
    let may = if actor.is_operator() {
        tx.organization_exists(organization).await?
    } else {
        tx.administers_organization(actor.user_id, organization)
            .await?
    };
    if may {
        Ok(())
    } else {
        Err(Error::NotFound("organization".into()))
    }
}

/// The organization a request names.
pub(crate) async fn organization_of(tx: &mut Tx, org: &OrgRef) -> Result<Uuid, Error> {
    match org {
        OrgRef::Id(id) => Ok(*id),
        // An unknown account says no more than another tenant's.
        OrgRef::Account(code) => match tx.account(code.as_str()).await {
            Ok(account) => Ok(account.organization_id),
            Err(Error::NotFound(_)) => Err(Error::NotFound("organization".into())),
            Err(e) => Err(e),
        },
    }
}

/// A team the actor may shape; `NotFound` otherwise (existence does not
/// leak across tenants).
async fn team_for(tx: &mut Tx, actor: &Actor, id: Uuid) -> Result<Team, Error> {
    let team = tx
        .team(id)
        .await?
        .ok_or_else(|| Error::NotFound("team".into()))?;
    require_team_admin(tx, actor, team.organization_id)
        .await
        .map_err(|_| Error::NotFound("team".into()))?;
    Ok(team)
}

/// The teams a filter selects in an organization: the team, and its
/// sub-teams when asked. The actor may already read the organization.
pub(crate) async fn resolve_filter(
    tx: &mut Tx,
    organization: Uuid,
    filter: &TeamFilter,
) -> Result<Vec<Uuid>, Error> {
    let id = match &filter.team {
        TeamRef::Id(id) => tx
            .team(*id)
            .await?
            .filter(|t| t.organization_id == organization)
            .map(|t| t.id),
        TeamRef::Path(path) => tx.team_by_path(organization, path).await?,
    };
    let id = id.ok_or_else(|| match &filter.team {
        TeamRef::Path(p) => Error::NotFound(format!("team {:?}", p.join("/"))),
        TeamRef::Id(_) => Error::NotFound("team".into()),
    })?;
    if filter.include_subteams {
        Ok(tx
            .subtree(organization, id)
            .await?
            .into_iter()
            .map(|t| t.id)
            .collect())
    } else {
        Ok(vec![id])
    }
}

pub async fn list(store: &Store, actor: &Actor, organization: &OrgRef) -> Result<Vec<Team>, Error> {
    let mut tx = store.read().await?;
    let organization = organization_of(&mut tx, organization).await?;
    require_team_admin(&mut tx, actor, organization).await?;
    let teams = tx.teams(organization).await?;
    tx.commit().await?;
    Ok(teams)
}

/// `CreateTeam`: a root team, or a sub-team of `parent` (in the same
/// organization).
pub async fn create(
    store: &Store,
    actor: &Actor,
    organization: &OrgRef,
    parent: Option<Uuid>,
    name: &str,
) -> Result<Team, Error> {
    let mut tx = store.write(Some(actor.user_id)).await?;
    let organization = organization_of(&mut tx, organization).await?;
    require_team_admin(&mut tx, actor, organization).await?;
    if let Some(p) = parent {
        let parent = team_for(&mut tx, actor, p).await.map_err(|e| match e {
            Error::NotFound(_) => Error::invalid("parent_id", "no such team"),
            e => e,
        })?;
        if parent.organization_id != organization {
            return Err(Error::invalid(
                "parent_id",
                "is a team of another organization",
            ));
        }
    }
    let id = tx.insert_team(organization, parent, name).await?;
    let team = tx
        .team(id)
        .await?
        .ok_or_else(|| Error::NotFound("team".into()))?;
    tx.commit().await?;
    Ok(team)
}

/// `UpdateTeam`: a new name and/or parent (`Some(None)`: to the root).
/// Moving a team under itself or one of its sub-teams is refused (by
/// trigger, whatever path moves it).
pub async fn update(
    store: &Store,
    actor: &Actor,
    id: Uuid,
    name: Option<String>,
    parent: Option<Option<Uuid>>,
) -> Result<Team, Error> {
    let mut tx = store.write(Some(actor.user_id)).await?;
    let team = team_for(&mut tx, actor, id).await?;
    let parent = match parent {
        None => team.parent_id,
        Some(None) => None,
        Some(Some(p)) => {
            let parent = team_for(&mut tx, actor, p).await.map_err(|e| match e {
                Error::NotFound(_) => Error::invalid("parent_id", "no such team"),
                e => e,
            })?;
            if parent.organization_id != team.organization_id {
                return Err(Error::invalid(
                    "parent_id",
                    "is a team of another organization",
                ));
            }
            Some(p)
        }
    };
    let name = name.unwrap_or(team.name);
    tx.update_team(id, &name, parent).await?;
    let team = tx
        .team(id)
        .await?
        .ok_or_else(|| Error::NotFound("team".into()))?;
    tx.commit().await?;
    Ok(team)
}

/// `DeleteTeam`: only a team without members nor sub-teams.
pub async fn delete(store: &Store, actor: &Actor, id: Uuid) -> Result<i64, Error> {
    let mut tx = store.write(Some(actor.user_id)).await?;
    let team = team_for(&mut tx, actor, id).await?;
    tx.delete_team(id, &team.name).await?;
    tx.commit().await
}

/// `AddTeamMembers` / `RemoveTeamMembers`: every user must be one the actor
/// manages (else `NotFound` naming his place in the request); all or none.
/// Returns how many joined or left, the team after, and the revision.
pub async fn change_members(
    store: &Store,
    actor: &Actor,
    id: Uuid,
    users: &[Uuid],
    add: bool,
) -> Result<(u64, Team, i64), Error> {
    if users.is_empty() {
        return Err(Error::invalid("user_ids", "give at least one user"));
    }
    if users.len() > MAX_MEMBERS_PER_CALL {
        return Err(Error::invalid(
            "user_ids",
            format!("at most {MAX_MEMBERS_PER_CALL} users per call"),
        ));
    }
    let mut tx = store.write(Some(actor.user_id)).await?;
    team_for(&mut tx, actor, id).await?;
    if !actor.is_operator() {
        let managed = tx.managed_among(actor.user_id, users).await?;
        if let Some(i) = users.iter().position(|u| !managed.contains(u)) {
            return Err(Error::NotFound(format!("user_ids[{i}]: user")));
        }
    }
    let known = tx.users_by_ids(users).await?;
    for (i, u) in users.iter().enumerate() {
        match known.iter().find(|k| k.id == *u) {
            None => return Err(Error::NotFound(format!("user_ids[{i}]: user"))),
            // Archiving is final: an archived user joins nothing.
            Some(k) if add && k.status == UserStatus::Archived => {
                return Err(Error::FailedPrecondition(format!(
                    "user_ids[{i}]: the user is archived"
                )))
            }
            Some(_) => {}
        }
    }
    let changed = if add {
        tx.add_team_members(id, users).await?
    } else {
        tx.remove_team_members(id, users).await?
    };
    let team = tx
        .team(id)
        .await?
        .ok_or_else(|| Error::NotFound("team".into()))?;
    let revision = tx.commit().await?;
    Ok((changed, team, revision))
}

/// The members of a team a team-wide deactivation left as they were, and
/// why.
#[derive(Debug)]
pub struct Skipped {
    pub user_id: Uuid,
    pub reason: String,
}

/// `DeactivateUsers` for a team (seed 001: "filtrez par le nom du groupe …
/// désactiver les membres sélectionnés"): deactivates exactly the members
/// (of the sub-teams too when asked) the actor may deactivate — users he
/// administers on every account, not himself, not already deactivated or
/// archived — in one transaction; says why each other member he can see
/// was left alone. Members he cannot see are not part of the selection.
pub async fn deactivate_members(
    store: &Store,
    actor: &Actor,
    organization: Option<OrgRef>,
    filter: &TeamFilter,
) -> Result<(Vec<User>, Vec<Skipped>, i64), Error> {
    let mut tx = store.write(Some(actor.user_id)).await?;
    let organization = match (&filter.team, organization) {
        (TeamRef::Id(id), _) => team_for(&mut tx, actor, *id).await?.organization_id,
        (TeamRef::Path(_), Some(org)) => organization_of(&mut tx, &org).await?,
        (TeamRef::Path(_), None) => {
            return Err(Error::invalid(
                "team.organization_id",
                "is required to name a team by its path (or team.account_code)",
            ))
        }
    };
    require_team_admin(&mut tx, actor, organization).await?;
    let teams = resolve_filter(&mut tx, organization, filter).await?;
    let mut members = tx.team_member_ids(&teams).await?;
    if !actor.is_operator() {
        members = tx.managed_among(actor.user_id, &members).await?;
    }
    tx.lock_users(&members).await?;
    let mut done = Vec::new();
    let mut skipped = Vec::new();
    for id in members {
        let skip = |reason: String| Skipped {
            user_id: id,
            reason,
        };
        let Some(user) = tx.user(id).await? else {
            continue;
        };
        let accounts = tx.linked_accounts(id, actor.user_id).await?;
        match may_set_status(actor, &user, &accounts, UserStatus::Deactivated) {
            Ok(()) => {}
            Err(Error::FailedPrecondition(why) | Error::PermissionDenied(why)) => {
                skipped.push(skip(why));
                continue;
            }
            Err(e) => return Err(e),
        }
        tx.set_user_status(id, UserStatus::Deactivated).await?;
        done.push(id);
    }
    let users = tx.users_by_ids(&done).await?;
    let revision = tx.commit().await?;
    Ok((users, skipped, revision))
}
