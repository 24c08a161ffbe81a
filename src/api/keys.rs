//! `clef.v1.ConnectionKeyService`.

use tonic::{Request, Response, Status};

use super::{convert::*, Ctx};
use crate::{
    domain::{principal::PrincipalKind, Violations},
    pb::{self, connection_key_service_server::ConnectionKeyService},
    service::keys,
};

/// Serves `clef.v1.ConnectionKeyService`.
#[derive(Debug, Clone)]
pub struct KeyApi(pub Ctx);

fn optional_user(s: &str, v: &mut Violations) -> Option<uuid::Uuid> {
    if s.is_empty() {
        None
    } else {
        id("user_id", s, v)
    }
}

#[tonic::async_trait]
impl ConnectionKeyService for KeyApi {
    async fn regenerate_connection_key(
        &self,
        request: Request<pb::RegenerateConnectionKeyRequest>,
    ) -> Result<Response<pb::RegenerateConnectionKeyResponse>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let user = optional_user(&req.user_id, &mut v);
        let expires = req.expire_time.as_ref().and_then(|t| {
            let d = datetime(t);
            if d.is_none() {
                v.add("expire_time", "is out of range");
            }
            d
        });
        v.finish()?;
        let (key, meta, revision) =
            keys::regenerate(&self.0.store, &actor, user, req.overlap_seconds, expires).await?;
        Ok(Response::new(pb::RegenerateConnectionKeyResponse {
            connection_key: key.expose_secret().to_owned(),
            key: Some(key_to_pb(meta)),
            revision,
        }))
    }

    async fn list_connection_keys(
        &self,
        request: Request<pb::ListConnectionKeysRequest>,
    ) -> Result<Response<pb::ListConnectionKeysResponse>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let mut v = Violations::default();
        let user = optional_user(&request.get_ref().user_id, &mut v);
        v.finish()?;
        let found = keys::list(&self.0.store, &actor, user).await?;
        Ok(Response::new(pb::ListConnectionKeysResponse {
            keys: found.into_iter().map(key_to_pb).collect(),
        }))
    }

    async fn revoke_connection_key(
        &self,
        request: Request<pb::RevokeConnectionKeyRequest>,
    ) -> Result<Response<pb::RevokeConnectionKeyResponse>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let mut v = Violations::default();
        let key = id("key_id", &request.get_ref().key_id, &mut v);
        let key = done(v, key)?;
        let revision = keys::revoke(&self.0.store, &actor, key).await?;
        Ok(Response::new(pb::RevokeConnectionKeyResponse { revision }))
    }

    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let me = keys::who_am_i(&self.0.store, &actor).await?;
        let user = match me.user {
            Some(u) => user_to_pb(u),
            None => pb::User {
                id: actor.user_id.to_string(),
                kind: match actor.kind {
                    PrincipalKind::Service => pb::UserKind::Service,
                    _ => pb::UserKind::Operator,
                } as i32,
                status: pb::UserStatus::Active as i32,
                login: me.login,
                ..Default::default()
            },
        };
        Ok(Response::new(pb::WhoAmIResponse {
            user: Some(user),
            key: Some(key_to_pb(me.key)),
            accounts: me
                .accounts
                .into_iter()
                .map(|(link, grants, roles)| pb::AccountRights {
                    account_code: link.account_code,
                    tags: link.tags,
                    grants: grants.into_iter().map(grant_to_pb).collect(),
                    role_grants: roles.into_iter().map(role_grant_to_pb).collect(),
                })
                .collect(),
        }))
    }
}
