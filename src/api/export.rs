//! `clef.v1.ExportService`: CSV streamed in constant memory. A task streams
//! the rows of every account, in one query on one snapshot, and hands
//! chunks to a bounded channel, so a slow client slows the reading (and
//! Postgres behind it) instead of filling memory.

use std::pin::Pin;

use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::{
    convert::{code, done, id},
    Ctx,
};
use crate::{
    bulk::{Dialect, ExportWriter},
    domain::{Error, Violations},
    pb::{self, export_service_server::ExportService},
    service::bulk::{export_scope, ExportOf},
};

/// Rows per chunk sent.
const CHUNK_ROWS: i64 = 2000;
/// Chunks buffered between the reader and the client.
const CHUNKS_IN_FLIGHT: usize = 4;

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
        let of = done(v, of)?;
        let (accounts, catalog) = export_scope(&self.0.store, &actor, &of).await?;
        let store = self.0.store.clone();
        let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
        tokio::spawn(async move {
            let result: Result<(), Error> = async {
                let mut writer = ExportWriter::new(dialect, &catalog).map_err(csv_error)?;
                let mut snapshot = store.snapshot().await?;
                // The header goes out even when there are no rows.
                let mut pending = writer.take().map_err(csv_error)?;
                let mut pending_rows = 0;
                {
                    let mut rows = std::pin::pin!(snapshot.export_rows(&accounts).await?);
                    while let Some(row) = rows.next().await {
                        writer.write(&row?).map_err(csv_error)?;
                        pending_rows += 1;
                        if pending_rows >= CHUNK_ROWS {
                            pending.extend(writer.take().map_err(csv_error)?);
                            let chunk = pb::ExportUsersResponse {
                                data: std::mem::take(&mut pending),
                                rows: std::mem::take(&mut pending_rows),
                            };
                            if tx.send(Ok(chunk)).await.is_err() {
                                return Ok(()); // the client went away
                            }
                        }
                    }
                }
                pending.extend(writer.take().map_err(csv_error)?);
                if !pending.is_empty() {
                    let chunk = pb::ExportUsersResponse {
                        data: pending,
                        rows: pending_rows,
                    };
                    if tx.send(Ok(chunk)).await.is_err() {
                        return Ok(());
                    }
                }
                snapshot.commit().await?;
                Ok(())
            }
            .await;
            if let Err(e) = result {
                let _ = tx.send(Err(Status::from(e))).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn csv_error(e: csv::Error) -> Error {
    Error::Internal(format!("csv: {e}"))
}
