//! `clef.v1.LinkService`.

use tonic::{Request, Response, Status};

use super::{convert::*, Ctx};
use crate::{
    domain::{
        user::{mask_email, UserKey},
        Violations,
    },
    pb::{self, link_service_server::LinkService},
    service::links::{self, LinkUser, ListOf},
};

/// Serves `clef.v1.LinkService`.
#[derive(Debug, Clone)]
pub struct LinkApi(pub Ctx);

/// Decodes the `of` of `ListLinks`/`ListGrants`.
pub(crate) fn list_of(
    user_id: Option<&str>,
    account_code: Option<&str>,
    v: &mut Violations,
) -> Option<ListOf> {
    match (user_id, account_code) {
        (Some(u), _) => id("user_id", u, v).map(ListOf::User),
        (_, Some(a)) => code("account_code", a, v).map(ListOf::Account),
        _ => {
            v.add("of", "give user_id or account_code");
            None
        }
    }
}

#[tonic::async_trait]
impl LinkService for LinkApi {
    async fn lookup_user_key(
        &self,
        request: Request<pb::LookupUserKeyRequest>,
    ) -> Result<Response<pb::LookupUserKeyResponse>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let mut v = Violations::default();
        let key = v.check("user_key", UserKey::parse(&request.get_ref().user_key));
        let key = done(v, key)?;
        let user = links::lookup(&self.0.store, &actor, &key).await?;
        Ok(Response::new(pb::LookupUserKeyResponse {
            user_id: user.id.to_string(),
            user_key: key.to_string(),
            last_name: user.profile.last_name,
            first_name: user.profile.first_name,
            job_title: user.profile.job_title.unwrap_or_default(),
            email_masked: user
                .profile
                .email
                .as_deref()
                .map(mask_email)
                .unwrap_or_default(),
        }))
    }

    async fn link_user(
        &self,
        request: Request<pb::LinkUserRequest>,
    ) -> Result<Response<pb::LinkUserResponse>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let account = code("account_code", &req.account_code, &mut v);
        let key = v.check("user_key", UserKey::parse(&req.user_key));
        let grants = raw_grants(&req.rights, "rights", &mut v);
        let (account, key) = done(v, account.zip(key))?;
        let (link, grants) = links::link(
            &self.0.store,
            &actor,
            LinkUser {
                account,
                key,
                tags: req.tags,
                grants,
            },
        )
        .await?;
        Ok(Response::new(pb::LinkUserResponse {
            link: Some(link_to_pb(link)),
            grants: grants.into_iter().map(grant_to_pb).collect(),
        }))
    }

    async fn update_link_tags(
        &self,
        request: Request<pb::UpdateLinkTagsRequest>,
    ) -> Result<Response<pb::Link>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let account = code("account_code", &req.account_code, &mut v);
        let user = id("user_id", &req.user_id, &mut v);
        let (account, user) = done(v, account.zip(user))?;
        let link = links::update_tags(&self.0.store, &actor, &account, user, &req.tags).await?;
        Ok(Response::new(link_to_pb(link)))
    }

    async fn unlink_user(
        &self,
        request: Request<pb::UnlinkUserRequest>,
    ) -> Result<Response<pb::UnlinkUserResponse>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let account = code("account_code", &req.account_code, &mut v);
        let user = id("user_id", &req.user_id, &mut v);
        let (account, user) = done(v, account.zip(user))?;
        let (revoked, revision) = links::unlink(&self.0.store, &actor, &account, user).await?;
        Ok(Response::new(pb::UnlinkUserResponse {
            revoked: revoked as i32,
            revision,
        }))
    }

    async fn list_links(
        &self,
        request: Request<pb::ListLinksRequest>,
    ) -> Result<Response<pb::ListLinksResponse>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let of = match &req.of {
            Some(pb::list_links_request::Of::UserId(u)) => list_of(Some(u), None, &mut v),
            Some(pb::list_links_request::Of::AccountCode(a)) => list_of(None, Some(a), &mut v),
            None => list_of(None, None, &mut v),
        };
        let limit = page_size(req.page_size, &mut v);
        let after = decode_token(&req.page_token, 2, &mut v)
            .and_then(|p| id("page_token", &p[1], &mut v).map(|u| (p[0].clone(), u)));
        let of = done(v, of)?;
        let mut found = links::list(&self.0.store, &actor, &of, after, limit + 1).await?;
        let next_page_token = paginate(&mut found, limit, |l| {
            encode_token(&[&l.account_code, &l.user_id.to_string()])
        });
        Ok(Response::new(pb::ListLinksResponse {
            links: found.into_iter().map(link_to_pb).collect(),
            next_page_token,
        }))
    }
}
