//! `clef.v1.RoleService`.

use tonic::{Request, Response, Status};

use super::{convert::*, Ctx};
use crate::{
    domain::{role::RawRole, Error, Violations},
    pb::{self, role_service_server::RoleService},
    service::roles,
};

/// Serves `clef.v1.RoleService`.
#[derive(Debug, Clone)]
pub struct RoleApi(pub Ctx);

/// Decodes (account, user, role) of GrantRole / RevokeRole.
fn target(
    account_code: &str,
    user_id: &str,
    role: &str,
    v: &mut Violations,
) -> Option<(crate::domain::account::AccountCode, uuid::Uuid, String)> {
    let account = code("account_code", account_code, v);
    let user = id("user_id", user_id, v);
    let role = role.trim();
    if role.is_empty() {
        v.add("role", "is required (a role code)");
    }
    Some((account?, user?, role.to_owned()))
}

#[tonic::async_trait]
impl RoleService for RoleApi {
    async fn list_roles(
        &self,
        request: Request<pb::ListRolesRequest>,
    ) -> Result<Response<pb::ListRolesResponse>, Status> {
        self.0.auth.actor(&request).await?;
        let roles = roles::list_roles(&self.0.store).await?;
        Ok(Response::new(pb::ListRolesResponse {
            roles: roles.into_iter().map(role_to_pb).collect(),
        }))
    }

    async fn define_role(
        &self,
        request: Request<pb::DefineRoleRequest>,
    ) -> Result<Response<pb::Role>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        actor.require_operator()?;
        let Some(r) = &request.get_ref().role else {
            return Err(Error::invalid("role", "is required").into());
        };
        let mut v = Violations::default();
        let rights = r
            .rights
            .iter()
            .enumerate()
            .map(|(i, x)| {
                (
                    x.right.trim().to_owned(),
                    scope_from_pb(x.scope, &format!("role.rights[{i}].scope"), &mut v),
                )
            })
            .collect();
        v.finish()?;
        let raw = RawRole {
            code: r.code.clone(),
            label_fr: r.label_fr.clone(),
            label_en: r.label_en.clone(),
            kinds: r.kinds.clone(),
            rights,
        };
        let def = roles::define_role(&self.0.store, &actor, raw).await?;
        Ok(Response::new(role_to_pb(def)))
    }

    async fn grant_role(
        &self,
        request: Request<pb::GrantRoleRequest>,
    ) -> Result<Response<pb::GrantRoleResponse>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let req = request.get_ref();
        let mut v = Violations::default();
        let t = target(&req.account_code, &req.user_id, &req.role, &mut v);
        let expires_at = req.expire_time.as_ref().and_then(|t| {
            let d = datetime(t);
            if d.is_none() {
                v.add("expire_time", "is out of range");
            }
            d
        });
        let (account, user, role) = done(v, t)?;
        let (held, revision) =
            roles::grant_role(&self.0.store, &actor, &account, user, &role, expires_at).await?;
        Ok(Response::new(pb::GrantRoleResponse {
            role_grants: held.into_iter().map(role_grant_to_pb).collect(),
            revision,
        }))
    }

    async fn revoke_role(
        &self,
        request: Request<pb::RevokeRoleRequest>,
    ) -> Result<Response<pb::RevokeRoleResponse>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let req = request.get_ref();
        let mut v = Violations::default();
        let t = target(&req.account_code, &req.user_id, &req.role, &mut v);
        let (account, user, role) = done(v, t)?;
        let (revoked, revision) =
            roles::revoke_role(&self.0.store, &actor, &account, user, &role).await?;
        Ok(Response::new(pb::RevokeRoleResponse { revoked, revision }))
    }
}
