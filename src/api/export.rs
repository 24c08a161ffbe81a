//! `clef.v1.ExportService`: decodes the request, streams what
//! `service::export` reads.

use std::pin::Pin;

use tokio_stream::{wrappers::ReceiverStream, Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::{
    convert::{code, done, id},
    Ctx,
};
use crate::{
    bulk::Dialect,
    domain::Violations,
    pb::{self, export_service_server::ExportService},
    service::{bulk::ExportOf, export},
};

/// Serves `clef.v1.ExportService`.
#[derive(Debug, Clone)]
pub struct ExportApi(pub Ctx);

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::ExportUsersResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExportService for ExportApi {
    type ExportUsersStream = ChunkStream;

    async fn export_users(
        &self,
        request: Request<pb::ExportUsersRequest>,
    ) -> Result<Response<Self::ExportUsersStream>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let of = match &req.of {
            Some(pb::export_users_request::Of::AccountCode(c)) => {
                code("account_code", c, &mut v).map(ExportOf::Account)
            }
            Some(pb::export_users_request::Of::OrganizationId(o)) => {
                id("organization_id", o, &mut v).map(ExportOf::Organization)
            }
            None => {
                v.add("of", "give account_code or organization_id");
                None
            }
        };
        let dialect = match pb::CsvDialect::try_from(req.dialect) {
            Ok(pb::CsvDialect::Excel) => Dialect::Excel,
            Ok(_) => Dialect::Rfc4180,
            Err(_) => {
                v.add("dialect", format!("unknown dialect {}", req.dialect));
                Dialect::Rfc4180
            }
        };
        let team = super::teams::team_filter(req.team.as_ref(), "team", &mut v).map(|(f, _)| f);
        let of = done(v, of)?;
        let chunks = export::start(&self.0.store, &actor, &of, team.as_ref(), dialect).await?;
        let stream = ReceiverStream::new(chunks).map(|chunk| {
            chunk
                .map(|c| pb::ExportUsersResponse {
                    data: c.data,
                    rows: c.rows,
                })
                .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
