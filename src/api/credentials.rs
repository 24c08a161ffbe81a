//! `clef.v1.CredentialService`.

use tonic::{Request, Response, Status};

use super::{convert::*, timestamp, users::user_fields, Ctx};
use crate::{
    domain::{principal::PrincipalKind, Violations},
    pb::{self, credential_service_server::CredentialService},
    service::{credentials, users::UpdateUser},
};

/// Serves `clef.v1.CredentialService`.
#[derive(Debug, Clone)]
pub struct CredentialApi(pub Ctx);

fn user_id(s: &str) -> Result<uuid::Uuid, Status> {
    let mut v = Violations::default();
    let id = id("user_id", s, &mut v);
    Ok(done(v, id)?)
}

#[tonic::async_trait]
impl CredentialService for CredentialApi {
    async fn complete_invitation(
        &self,
        request: Request<pb::CompleteInvitationRequest>,
    ) -> Result<Response<pb::CompleteInvitationResponse>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let user = req.user.unwrap_or_default();
        let default_account = match user.default_account_code.as_str() {
            "" => None,
            c => code("user.default_account_code", c, &mut v),
        };
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let (fields, mut mask_problems) = if paths.is_empty() {
            (Default::default(), Violations::default())
        } else {
            user_fields(&paths)
        };
        mask_problems.0.extend(v.0);
        let done = credentials::complete_invitation(
            &self.0.store,
            &self.0.hasher,
            &actor,
            credentials::CompleteInvitation {
                token: req.token,
                login: req.login,
                password: req.password,
                corrections: UpdateUser {
                    id: uuid::Uuid::nil(),
                    profile: raw_profile(&user),
                    default_account,
                    fields,
                    mask_problems,
                },
            },
        )
        .await?;
        Ok(Response::new(pb::CompleteInvitationResponse {
            user: Some(user_to_pb(done.user)),
            connection_key: done.key.expose_secret().to_owned(),
            revision: done.revision,
        }))
    }

    async fn resend_invitation(
        &self,
        request: Request<pb::ResendInvitationRequest>,
    ) -> Result<Response<pb::ResendInvitationResponse>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let user = user_id(&request.get_ref().user_id)?;
        let (invitation, revision) =
            credentials::resend_invitation(&self.0.store, &actor, user).await?;
        Ok(Response::new(pb::ResendInvitationResponse {
            invitation_token: invitation.token.expose_secret().to_owned(),
            invitation_expire_time: timestamp(invitation.expires_at),
            revision,
        }))
    }

    async fn authenticate_password(
        &self,
        request: Request<pb::AuthenticatePasswordRequest>,
    ) -> Result<Response<pb::AuthenticatePasswordResponse>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let req = request.get_ref();
        let who = credentials::authenticate(
            &self.0.store,
            &self.0.hasher,
            &actor,
            &req.login,
            &req.password,
        )
        .await?;
        Ok(Response::new(pb::AuthenticatePasswordResponse {
            user_id: who.user_id.to_string(),
            kind: match who.kind {
                PrincipalKind::Advanced => pb::UserKind::Advanced,
                _ => pb::UserKind::Standard,
            } as i32,
            status: status_to_pb(who.status) as i32,
            must_change_password: who.must_change,
        }))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let req = request.get_ref();
        let revision = credentials::change_password(
            &self.0.store,
            &self.0.hasher,
            &actor,
            &req.login,
            &req.current_password,
            &req.new_password,
        )
        .await?;
        Ok(Response::new(pb::ChangePasswordResponse { revision }))
    }

    async fn request_password_reset(
        &self,
        request: Request<pb::RequestPasswordResetRequest>,
    ) -> Result<Response<pb::RequestPasswordResetResponse>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let req = request.get_ref();
        credentials::request_reset(&self.0.store, &actor, &req.login, &req.email).await?;
        Ok(Response::new(pb::RequestPasswordResetResponse {}))
    }

    async fn reset_password(
        &self,
        request: Request<pb::ResetPasswordRequest>,
    ) -> Result<Response<pb::ResetPasswordResponse>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let req = request.get_ref();
        let revision = credentials::reset_password(
            &self.0.store,
            &self.0.hasher,
            &actor,
            &req.token,
            &req.new_password,
        )
        .await?;
        Ok(Response::new(pb::ResetPasswordResponse { revision }))
    }

    async fn set_password(
        &self,
        request: Request<pb::SetPasswordRequest>,
    ) -> Result<Response<pb::SetPasswordResponse>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let req = request.get_ref();
        let user = user_id(&req.user_id)?;
        let revision = credentials::set_password(
            &self.0.store,
            &self.0.hasher,
            &actor,
            user,
            &req.password,
            !req.keep_without_change,
        )
        .await?;
        Ok(Response::new(pb::SetPasswordResponse { revision }))
    }

    async fn clear_password_lock(
        &self,
        request: Request<pb::ClearPasswordLockRequest>,
    ) -> Result<Response<pb::ClearPasswordLockResponse>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let user = user_id(&request.get_ref().user_id)?;
        let revision = credentials::unlock(&self.0.store, &actor, user).await?;
        Ok(Response::new(pb::ClearPasswordLockResponse { revision }))
    }
}
