//! `clef.v1.UserService`.

use tonic::{Request, Response, Status};

use super::{convert::*, Ctx};
use crate::{
    domain::{
        user::{parse_login, ProfileField, UserKey, UserStatus},
        Error, Violations,
    },
    pb::{self, user_service_server::UserService},
    service::users::{
        self, CreateUser, ListUsers, PrincipalCreated, UpdateUser, UserFields, UserLookup,
    },
};

/// Serves `clef.v1.UserService`.
#[derive(Debug, Clone)]
pub struct UserApi(pub Ctx);

#[tonic::async_trait]
impl UserService for UserApi {
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let Some(user) = &req.user else {
            return Err(Error::invalid("user", "is required").into());
        };
        let cmd = CreateUser {
            kind: kind_from_pb(user.kind),
            profile: raw_profile(user),
            login: match user.login.trim() {
                "" => None,
                l => v.check("user.login", parse_login(l)),
            },
            account: match req.account_code.as_str() {
                "" => None,
                c => code("account_code", c, &mut v),
            },
            default_account: match user.default_account_code.as_str() {
                "" => None,
                c => code("user.default_account_code", c, &mut v),
            },
            tags: req.tags.clone(),
            grants: raw_grants(&req.rights, "rights", &mut v),
        };
        let once = request_key("CreateUser", &req, |r| &mut r.request_id, &mut v);
        v.finish()?;
        let created = users::create(&self.0.store, &actor, cmd, once).await?;
        Ok(Response::new(pb::CreateUserResponse {
            user: Some(user_to_pb(created.user)),
            replayed: created.key.is_none() && created.invitation.is_none(),
            connection_key: created
                .key
                .map(|k| k.expose_secret().to_owned())
                .unwrap_or_default(),
            invitation_expire_time: created
                .invitation
                .as_ref()
                .and_then(|i| super::timestamp(i.expires_at)),
            invitation_token: created
                .invitation
                .map(|i| i.token.expose_secret().to_owned())
                .unwrap_or_default(),
        }))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let mut v = Violations::default();
        let by = match &request.get_ref().by {
            Some(pb::get_user_request::By::Id(s)) => id("id", s, &mut v).map(UserLookup::Id),
            Some(pb::get_user_request::By::UserKey(s)) => {
                v.check("user_key", UserKey::parse(s)).map(UserLookup::Key)
            }
            Some(pb::get_user_request::By::Login(s)) if !s.trim().is_empty() => {
                Some(UserLookup::Login(s.trim().to_owned()))
            }
            _ => {
                v.add("by", "give one of id, user_key, login");
                None
            }
        };
        let by = done(v, by)?;
        let (user, password) = users::get(&self.0.store, &actor, by).await?;
        Ok(Response::new(pb::User {
            password: Some(password_to_pb(password)),
            ..user_to_pb(user)
        }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let account = code("account_code", &req.account_code, &mut v);
        let limit = page_size(req.page_size, &mut v);
        let after =
            decode_token(&req.page_token, 1, &mut v).and_then(|p| id("page_token", &p[0], &mut v));
        if req.query.chars().count() > 100 {
            v.add("query", "must be at most 100 characters");
        }
        let mut statuses = Vec::new();
        let asked = std::iter::once(("status".to_owned(), req.status)).filter(|(_, s)| *s != 0);
        let more = req
            .statuses
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("statuses[{i}]"), *s));
        for (field, s) in asked.chain(more) {
            match status_from_pb(s) {
                Some(status) if !statuses.contains(&status) => statuses.push(status),
                Some(_) => {}
                None => v.add(field, format!("unknown status {s}")),
            }
        }
        if statuses.is_empty() {
            statuses = UserStatus::LISTED_BY_DEFAULT.to_vec();
        }
        let kind = match req.kind {
            0 => None,
            k => {
                let parsed = kind_from_pb(k);
                if parsed.is_none() {
                    v.add("kind", "must be USER_KIND_STANDARD or USER_KIND_ADVANCED");
                }
                parsed
            }
        };
        let team = super::teams::team_filter(req.team.as_ref(), "team", &mut v).map(|(f, _)| f);
        let account = done(v, account)?;
        let query = ListUsers {
            account,
            statuses,
            kind,
            query: req.query.trim().to_lowercase(),
            team,
            after,
            limit: limit + 1,
        };
        let mut found = users::list(&self.0.store, &actor, query).await?;
        let next_page_token = paginate(&mut found, limit, |u| encode_token(&[&u.id.to_string()]));
        Ok(Response::new(pb::ListUsersResponse {
            users: found.into_iter().map(user_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let Some(user) = &req.user else {
            return Err(Error::invalid("user", "is required").into());
        };
        let user_id = id("user.id", &user.id, &mut v);
        let default_account = match user.default_account_code.as_str() {
            "" => None,
            c => code("user.default_account_code", c, &mut v),
        };
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let (fields, mask_problems) = user_fields(&paths);
        let id = done(v, user_id)?;
        let updated = users::update(
            &self.0.store,
            &actor,
            UpdateUser {
                id,
                profile: raw_profile(user),
                default_account,
                fields,
                mask_problems,
            },
        )
        .await?;
        Ok(Response::new(user_to_pb(updated)))
    }

    async fn deactivate_user(
        &self,
        request: Request<pb::DeactivateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        self.set_one(request.map(|r| r.id), UserStatus::Deactivated)
            .await
    }

    async fn reactivate_user(
        &self,
        request: Request<pb::ReactivateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        self.set_one(request.map(|r| r.id), UserStatus::Active)
            .await
    }

    async fn archive_user(
        &self,
        request: Request<pb::ArchiveUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        self.set_one(request.map(|r| r.id), UserStatus::Archived)
            .await
    }

    async fn deactivate_users(
        &self,
        request: Request<pb::DeactivateUsersRequest>,
    ) -> Result<Response<pb::DeactivateUsersResponse>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let req = request.get_ref();
        let mut v = Violations::default();
        let ids: Vec<_> = req
            .user_ids
            .iter()
            .enumerate()
            .filter_map(|(i, s)| id(&format!("user_ids[{i}]"), s, &mut v))
            .collect();
        let team = super::teams::team_filter(req.team.as_ref(), "team", &mut v);
        v.finish()?;
        super::teams::one_selection(!req.user_ids.is_empty(), req.team.is_some())?;
        if let Some((filter, org)) = team {
            let (found, skipped, revision) =
                crate::service::teams::deactivate_members(&self.0.store, &actor, org, &filter)
                    .await?;
            return Ok(Response::new(pb::DeactivateUsersResponse {
                users: found.into_iter().map(user_to_pb).collect(),
                revision,
                skipped: skipped
                    .into_iter()
                    .map(|s| pb::SkippedUser {
                        user_id: s.user_id.to_string(),
                        reason: s.reason,
                    })
                    .collect(),
            }));
        }
        let (found, revision) =
            users::set_status(&self.0.store, &actor, &ids, UserStatus::Deactivated).await?;
        Ok(Response::new(pb::DeactivateUsersResponse {
            users: found.into_iter().map(user_to_pb).collect(),
            revision,
            skipped: Vec::new(),
        }))
    }

    async fn create_service_principal(
        &self,
        request: Request<pb::CreateServicePrincipalRequest>,
    ) -> Result<Response<pb::CreateServicePrincipalResponse>, Status> {
        Ok(Response::new(self.create_service(request).await?))
    }
}

impl UserApi {
    async fn create_service(
        &self,
        request: Request<pb::CreateServicePrincipalRequest>,
    ) -> Result<pb::CreateServicePrincipalResponse, Status> {
        let actor = self.0.auth.actor(&request).await?;
        actor.require_operator()?;
        let mut v = Violations::default();
        let req = request.get_ref();
        let name = v.check("name", parse_login(&req.name));
        let once = request_key("CreateServicePrincipal", req, |r| &mut r.request_id, &mut v);
        let name = done(v, name)?;
        let created =
            users::create_service_principal(&self.0.store, &actor, &name, once.as_ref()).await?;
        Ok(match created {
            PrincipalCreated::New(p) => pb::CreateServicePrincipalResponse {
                id: p.id.to_string(),
                connection_key: p.key.expose_secret().to_owned(),
                revision: p.revision,
                replayed: false,
            },
            PrincipalCreated::Replayed { id, revision } => pb::CreateServicePrincipalResponse {
                id: id.to_string(),
                connection_key: String::new(),
                revision,
                replayed: true,
            },
        })
    }

    /// Moves the user whose id `request` carries to `to`: deactivate,
    /// reactivate, archive.
    async fn set_one(
        &self,
        request: Request<String>,
        to: UserStatus,
    ) -> Result<Response<pb::User>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let mut v = Violations::default();
        let user = id("id", request.get_ref(), &mut v);
        let user = done(v, user)?;
        let (mut found, _) = users::set_status(&self.0.store, &actor, &[user], to).await?;
        let user = found
            .pop()
            .ok_or_else(|| Error::Internal("set_status answered no user".into()))?;
        Ok(Response::new(user_to_pb(user)))
    }
}

/// The fields an `UpdateUser` mask names, and what is wrong with it.
pub(crate) fn user_fields(paths: &[String]) -> (UserFields, Violations) {
    let mut fields = UserFields::default();
    let mut v = Violations::default();
    if paths.is_empty() {
        v.add("update_mask", "is required: name the fields to change");
    }
    for path in paths {
        match path.as_str() {
            "default_account_code" => {
                fields.default_account = true;
                fields.names.push("default_account_code");
            }
            "login" => v.add("update_mask", "login never changes once set"),
            "id" | "kind" | "status" | "user_key" | "home_account_code" | "create_time"
            | "update_time" | "revision" => v.add(
                "update_mask",
                format!("{path} cannot be changed by UpdateUser"),
            ),
            other => match ProfileField::parse(other) {
                Some(f) => {
                    fields.profile.push(f);
                    fields.names.push(f.name());
                }
                None => {
                    let allowed: Vec<&str> = ProfileField::ALL.iter().map(|f| f.name()).collect();
                    v.add(
                        "update_mask",
                        format!(
                            "unknown field {other:?} (allowed: {}, default_account_code)",
                            allowed.join(", ")
                        ),
                    )
                }
            },
        }
    }
    (fields, v)
}
