//! `clef.v1.GrantService`.

use tonic::{Request, Response, Status};

use super::{convert::*, links::list_of, Ctx};
use crate::{
    domain::{
        rights::RightDef,
        user::{parse_email, parse_login, RawProfile, UserKey, UserKind},
        Error, Violations,
    },
    pb::{self, grant_service_server::GrantService},
    service::{
        grants::{self, Mode, Selector},
        users::CreateUser,
    },
};

/// Serves `clef.v1.GrantService`.
#[derive(Debug, Clone)]
pub struct GrantApi(pub Ctx);

fn selector(sel: &Option<pb::UserSelector>, v: &mut Violations) -> Option<Selector> {
    use pb::user_selector::By;
    match sel.as_ref().and_then(|s| s.by.as_ref()) {
        Some(By::Id(s)) => id("user.id", s, v).map(Selector::Id),
        Some(By::UserKey(s)) => v
            .check("user.user_key", UserKey::parse(s))
            .map(Selector::Key),
        Some(By::Email(s)) => v.check("user.email", parse_email(s)).map(Selector::Email),
        Some(By::NewUser(p)) => Some(Selector::New(Box::new(CreateUser {
            kind: Some(UserKind::Advanced),
            profile: RawProfile {
                last_name: p.last_name.clone(),
                first_name: p.first_name.clone(),
                job_title: p.job_title.clone(),
                email: p.email.clone(),
                phone: p.phone.clone(),
                address_lines: p.address_lines.clone(),
                postal_code: p.postal_code.clone(),
                city: p.city.clone(),
                country: p.country.clone(),
                civility: p.civility.clone(),
                language: p.language.clone(),
            },
            login: match p.login.trim() {
                "" => None,
                l => v.check("user.new_user.login", parse_login(l)),
            },
            ..Default::default()
        }))),
        None => {
            v.add("user", "give id, user_key, email or new_user");
            None
        }
    }
}

/// Decodes (account, user, rights) of GrantRights / SetRights.
fn target(
    account_code: &str,
    user_id: &str,
    rights: &[pb::RightGrant],
) -> Result<
    (
        crate::domain::account::AccountCode,
        uuid::Uuid,
        Vec<crate::domain::rights::RawGrant>,
    ),
    Error,
> {
    let mut v = Violations::default();
    let account = code("account_code", account_code, &mut v);
    let user = id("user_id", user_id, &mut v);
    let grants = raw_grants(rights, "rights", &mut v);
    let (account, user) = done(v, account.zip(user))?;
    Ok((account, user, grants))
}

#[tonic::async_trait]
impl GrantService for GrantApi {
    async fn list_rights(
        &self,
        request: Request<pb::ListRightsRequest>,
    ) -> Result<Response<pb::ListRightsResponse>, Status> {
        self.0.auth.actor(&request).await?;
        let rights = grants::list_rights(&self.0.store).await?;
        Ok(Response::new(pb::ListRightsResponse {
            rights: rights.into_iter().map(right_to_pb).collect(),
        }))
    }

    async fn define_right(
        &self,
        request: Request<pb::DefineRightRequest>,
    ) -> Result<Response<pb::Right>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        actor.require_operator()?;
        let Some(r) = &request.get_ref().right else {
            return Err(Error::invalid("right", "is required").into());
        };
        let mut v = Violations::default();
        let code = v.check("right.code", RightDef::parse_code(&r.code));
        let mut text = |field: &str, s: &str| {
            let s = s.trim();
            if s.is_empty() || s.chars().count() > 200 {
                v.add(field, "is required (1-200 characters)");
            }
            s.to_owned()
        };
        let category = text("right.category", &r.category);
        let label_fr = text("right.label_fr", &r.label_fr);
        let label_en = text("right.label_en", &r.label_en);
        let mut kinds = Vec::new();
        for (i, k) in r.kinds.iter().enumerate() {
            match UserKind::parse(k) {
                Some(k) if !kinds.contains(&k) => kinds.push(k),
                Some(_) => {}
                None => v.add(format!("right.kinds[{i}]"), "must be standard or advanced"),
            }
        }
        if r.kinds.is_empty() {
            v.add("right.kinds", "give standard and/or advanced");
        }
        let code = done(v, code)?;
        let (def, _) = grants::define_right(
            &self.0.store,
            &actor,
            RightDef {
                code,
                category,
                label_fr,
                label_en,
                kinds,
                scoped: r.scoped,
            },
        )
        .await?;
        Ok(Response::new(right_to_pb(def)))
    }

    async fn grant_rights(
        &self,
        request: Request<pb::GrantRightsRequest>,
    ) -> Result<Response<pb::GrantRightsResponse>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let r = request.into_inner();
        let (account, user, asked) = target(&r.account_code, &r.user_id, &r.rights)?;
        if asked.is_empty() {
            return Err(Error::invalid("rights", "give at least one right").into());
        }
        let (after, revision) =
            grants::grant(&self.0.store, &actor, &account, user, &asked, Mode::Grant).await?;
        Ok(Response::new(pb::GrantRightsResponse {
            grants: after.into_iter().map(grant_to_pb).collect(),
            revision,
        }))
    }

    async fn revoke_rights(
        &self,
        request: Request<pb::RevokeRightsRequest>,
    ) -> Result<Response<pb::RevokeRightsResponse>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let r = request.into_inner();
        let (account, user, _) = target(&r.account_code, &r.user_id, &[])?;
        let rights: Vec<String> = r.rights.iter().map(|s| s.trim().to_owned()).collect();
        let (revoked, revision) =
            grants::revoke(&self.0.store, &actor, &account, user, &rights).await?;
        Ok(Response::new(pb::RevokeRightsResponse {
            revoked: revoked as i32,
            revision,
        }))
    }

    async fn set_rights(
        &self,
        request: Request<pb::SetRightsRequest>,
    ) -> Result<Response<pb::SetRightsResponse>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let r = request.into_inner();
        let (account, user, asked) = target(&r.account_code, &r.user_id, &r.rights)?;
        let (after, revision) =
            grants::grant(&self.0.store, &actor, &account, user, &asked, Mode::Set).await?;
        Ok(Response::new(pb::SetRightsResponse {
            grants: after.into_iter().map(grant_to_pb).collect(),
            revision,
        }))
    }

    async fn list_grants(
        &self,
        request: Request<pb::ListGrantsRequest>,
    ) -> Result<Response<pb::ListGrantsResponse>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let of = match &req.of {
            Some(pb::list_grants_request::Of::UserId(u)) => list_of(Some(u), None, &mut v),
            Some(pb::list_grants_request::Of::AccountCode(a)) => list_of(None, Some(a), &mut v),
            None => list_of(None, None, &mut v),
        };
        let limit = page_size(req.page_size, &mut v);
        let after = decode_token(&req.page_token, 3, &mut v)
            .and_then(|p| id("page_token", &p[1], &mut v).map(|u| (p[0].clone(), u, p[2].clone())));
        let of = done(v, of)?;
        let (mut found, roles) = grants::list(&self.0.store, &actor, &of, after, limit + 1).await?;
        let next_page_token = paginate(&mut found, limit, |g| {
            encode_token(&[&g.account_code, &g.user_id.to_string(), &g.right])
        });
        Ok(Response::new(pb::ListGrantsResponse {
            grants: found.into_iter().map(grant_to_pb).collect(),
            next_page_token,
            role_grants: roles.into_iter().map(role_grant_to_pb).collect(),
        }))
    }

    async fn grant_across_accounts(
        &self,
        request: Request<pb::GrantAcrossAccountsRequest>,
    ) -> Result<Response<pb::GrantAcrossAccountsResponse>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let sel = selector(&req.user, &mut v);
        let accounts: Vec<_> = req
            .account_codes
            .iter()
            .enumerate()
            .filter_map(|(i, c)| code(&format!("account_codes[{i}]"), c, &mut v))
            .collect();
        let asked = raw_grants(&req.rights, "rights", &mut v);
        let sel = done(v, sel)?;
        let across = grants::grant_across(&self.0.store, &actor, sel, &accounts, &asked).await?;
        Ok(Response::new(pb::GrantAcrossAccountsResponse {
            user_id: across.user_id.to_string(),
            connection_key: across
                .key
                .map(|k| k.expose_secret().to_owned())
                .unwrap_or_default(),
            outcomes: across
                .outcomes
                .into_iter()
                .map(|(account_code, linked)| pb::AccountOutcome {
                    account_code,
                    outcome: if linked {
                        "linked_and_granted"
                    } else {
                        "granted"
                    }
                    .into(),
                })
                .collect(),
            revision: across.revision,
            invitation_expire_time: across
                .invitation
                .as_ref()
                .and_then(|i| super::timestamp(i.expires_at)),
            invitation_token: across
                .invitation
                .map(|i| i.token.expose_secret().to_owned())
                .unwrap_or_default(),
        }))
    }

    async fn copy_rights(
        &self,
        request: Request<pb::CopyRightsRequest>,
    ) -> Result<Response<pb::CopyRightsResponse>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let r = request.into_inner();
        let mut v = Violations::default();
        let account = code("account_code", &r.account_code, &mut v);
        let from = id("from_user_id", &r.from_user_id, &mut v);
        let to = id("to_user_id", &r.to_user_id, &mut v);
        let until = r.expire_time.as_ref().and_then(datetime);
        if r.expire_time.is_some() && until.is_none() {
            v.add("expire_time", "is not a valid time");
        }
        if until.is_some_and(|u| u <= self.0.store.clock().now()) {
            v.add("expire_time", "must be in the future");
        }
        v.finish()?;
        let (Some(account), Some(from), Some(to)) = (account, from, to) else {
            return Err(Error::Internal("validated fields missing".into()).into());
        };
        let (after, revision) =
            grants::copy(&self.0.store, &actor, &account, from, to, until).await?;
        Ok(Response::new(pb::CopyRightsResponse {
            grants: after.into_iter().map(grant_to_pb).collect(),
            revision,
        }))
    }

    async fn revoke_everywhere(
        &self,
        request: Request<pb::RevokeEverywhereRequest>,
    ) -> Result<Response<pb::RevokeEverywhereResponse>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let mut v = Violations::default();
        let sel = selector(&request.get_ref().user, &mut v);
        let sel = done(v, sel)?;
        let (revoked, revision) = grants::revoke_everywhere(&self.0.store, &actor, sel).await?;
        Ok(Response::new(pb::RevokeEverywhereResponse {
            revoked: revoked as i32,
            revision,
        }))
    }
}
