//! `clef.v1.TeamService`.

use tonic::{Request, Response, Status};

use super::{convert::*, timestamp, Ctx};
use crate::{
    domain::{
        team::{parse_name, OrgRef, Team},
        Error, Violations,
    },
    pb::{self, team_service_server::TeamService},
    service::teams,
};

/// Serves `clef.v1.TeamService`.
#[derive(Debug, Clone)]
pub struct TeamApi(pub Ctx);

fn team_to_pb(t: Team) -> pb::Team {
    pb::Team {
        id: t.id.to_string(),
        organization_id: t.organization_id.to_string(),
        parent_id: t.parent_id.map(|p| p.to_string()).unwrap_or_default(),
        name: t.name,
        path: t.path,
        member_count: t.members,
        create_time: timestamp(t.created_at),
        revision: t.revision,
    }
}

/// An organization by id or as that of an account: exactly one.
fn org_ref(
    field: &str,
    id_field: &str,
    org: &str,
    account: &str,
    v: &mut Violations,
) -> Option<OrgRef> {
    match (org.trim(), account.trim()) {
        ("", "") => {
            v.add(field, format!("give {field} or {id_field}"));
            None
        }
        (o, "") => id(field, o, v).map(OrgRef::Id),
        ("", a) => code(id_field, a, v).map(OrgRef::Account),
        _ => {
            v.add(field, format!("give {field} or {id_field}, not both"));
            None
        }
    }
}

/// An optional id: empty is `None`.
fn optional_id(field: &str, s: &str, v: &mut Violations) -> Option<Option<uuid::Uuid>> {
    match s.trim() {
        "" => Some(None),
        s => id(field, s, v).map(Some),
    }
}

fn user_ids(ids: &[String], v: &mut Violations) -> Vec<uuid::Uuid> {
    ids.iter()
        .enumerate()
        .filter_map(|(i, s)| id(&format!("user_ids[{i}]"), s, v))
        .collect()
}

#[tonic::async_trait]
impl TeamService for TeamApi {
    async fn create_team(
        &self,
        request: Request<pb::CreateTeamRequest>,
    ) -> Result<Response<pb::Team>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let req = request.get_ref();
        let mut v = Violations::default();
        let org = org_ref(
            "organization_id",
            "account_code",
            &req.organization_id,
            &req.account_code,
            &mut v,
        );
        let parent = optional_id("parent_id", &req.parent_id, &mut v);
        let name = v.check("name", parse_name(&req.name));
        let (org, parent, name) = done(v, org.zip(parent).zip(name).map(|((o, p), n)| (o, p, n)))?;
        let team = teams::create(&self.0.store, &actor, &org, parent, &name).await?;
        Ok(Response::new(team_to_pb(team)))
    }

    async fn update_team(
        &self,
        request: Request<pb::UpdateTeamRequest>,
    ) -> Result<Response<pb::Team>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let req = request.get_ref();
        let mut v = Violations::default();
        let team = id("team_id", &req.team_id, &mut v);
        let paths = req
            .update_mask
            .as_ref()
            .map(|m| m.paths.clone())
            .unwrap_or_default();
        if paths.is_empty() {
            v.add("update_mask", "is required: name, parent_id");
        }
        let (mut name, mut parent) = (None, None);
        for p in &paths {
            match p.as_str() {
                "name" => name = v.check("name", parse_name(&req.name)),
                "parent_id" => parent = optional_id("parent_id", &req.parent_id, &mut v),
                other => v.add("update_mask", format!("{other} cannot be changed")),
            }
        }
        let team = done(v, team)?;
        let team = teams::update(&self.0.store, &actor, team, name, parent).await?;
        Ok(Response::new(team_to_pb(team)))
    }

    async fn delete_team(
        &self,
        request: Request<pb::DeleteTeamRequest>,
    ) -> Result<Response<pb::DeleteTeamResponse>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let mut v = Violations::default();
        let team = id("team_id", &request.get_ref().team_id, &mut v);
        let team = done(v, team)?;
        let revision = teams::delete(&self.0.store, &actor, team).await?;
        Ok(Response::new(pb::DeleteTeamResponse { revision }))
    }

    async fn list_teams(
        &self,
        request: Request<pb::ListTeamsRequest>,
    ) -> Result<Response<pb::ListTeamsResponse>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let mut v = Violations::default();
        let req = request.get_ref();
        let org = org_ref(
            "organization_id",
            "account_code",
            &req.organization_id,
            &req.account_code,
            &mut v,
        );
        let org = done(v, org)?;
        let found = teams::list(&self.0.store, &actor, &org).await?;
        Ok(Response::new(pb::ListTeamsResponse {
            teams: found.into_iter().map(team_to_pb).collect(),
        }))
    }

    async fn add_team_members(
        &self,
        request: Request<pb::AddTeamMembersRequest>,
    ) -> Result<Response<pb::TeamMembersResponse>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let req = request.get_ref();
        self.members(&actor, &req.team_id, &req.user_ids, true)
            .await
    }

    async fn remove_team_members(
        &self,
        request: Request<pb::RemoveTeamMembersRequest>,
    ) -> Result<Response<pb::TeamMembersResponse>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let req = request.get_ref();
        self.members(&actor, &req.team_id, &req.user_ids, false)
            .await
    }
}

impl TeamApi {
    /// AddTeamMembers (`add`) and RemoveTeamMembers.
    async fn members(
        &self,
        actor: &crate::domain::principal::Actor,
        team_id: &str,
        ids: &[String],
        add: bool,
    ) -> Result<Response<pb::TeamMembersResponse>, Status> {
        let mut v = Violations::default();
        let team = id("team_id", team_id, &mut v);
        let users = user_ids(ids, &mut v);
        let team = done(v, team)?;
        let (changed, team, revision) =
            teams::change_members(&self.0.store, actor, team, &users, add).await?;
        Ok(Response::new(pb::TeamMembersResponse {
            changed: changed as i64,
            team: Some(team_to_pb(team)),
            revision,
        }))
    }
}

/// Decodes a `TeamFilter` (`field`: its name in the request); `None` when
/// absent. Also returns the organization a path is read in, when given.
pub(crate) fn team_filter(
    f: Option<&pb::TeamFilter>,
    field: &str,
    v: &mut Violations,
) -> Option<(crate::domain::team::TeamFilter, Option<OrgRef>)> {
    let f = f?;
    let team = v.check(
        &format!("{field}.team"),
        crate::domain::team::TeamRef::parse(&f.team),
    )?;
    let org = match (f.organization_id.trim(), f.account_code.trim()) {
        ("", "") => None,
        _ => org_ref(
            &format!("{field}.organization_id"),
            &format!("{field}.account_code"),
            &f.organization_id,
            &f.account_code,
            v,
        ),
    };
    Some((
        crate::domain::team::TeamFilter {
            team,
            include_subteams: f.include_subteams,
        },
        org,
    ))
}

/// Refuses a request that names users two ways.
pub(crate) fn one_selection(by_ids: bool, by_team: bool) -> Result<(), Error> {
    match (by_ids, by_team) {
        (true, true) => Err(Error::invalid("team", "give user_ids or team, not both")),
        (false, false) => Err(Error::invalid(
            "user_ids",
            "give at least one user, or a team",
        )),
        _ => Ok(()),
    }
}
