//! `clef.v1.ImportService`.

use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use super::{
    convert::{code, done},
    Ctx,
};
use crate::{
    bulk::{csvfile::template, Dialect},
    domain::{import::LineStatus, Error, Violations},
    pb::{self, import_service_server::ImportService},
    service::{bulk::template_rights, import::Progress},
};

/// Serves `clef.v1.ImportService`.
#[derive(Debug, Clone)]
pub struct ImportApi(pub Ctx);

#[tonic::async_trait]
impl ImportService for ImportApi {
    type ImportUsersStream = ImportStream;

    async fn import_users(
        &self,
        request: Request<tonic::Streaming<pb::ImportUsersRequest>>,
    ) -> Result<Response<Self::ImportUsersStream>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let mut inbound = request.into_inner();
        let options = match inbound.message().await.map_err(stream_error)? {
            Some(pb::ImportUsersRequest {
                msg: Some(pb::import_users_request::Msg::Options(o)),
            }) => o,
            _ => {
                return Err(
                    Error::invalid("options", "the first message must carry the options").into(),
                )
            }
        };
        let mut v = Violations::default();
        let account = code("options.account_code", &options.account_code, &mut v);
        let sync = match pb::ImportMode::try_from(options.mode) {
            Ok(pb::ImportMode::Sync) => true,
            Ok(_) => false,
            Err(_) => {
                v.add(
                    "options.mode",
                    "must be IMPORT_MODE_ADD or IMPORT_MODE_SYNC",
                );
                false
            }
        };
        let default_kind = match pb::UserKind::try_from(options.default_kind) {
            Ok(pb::UserKind::Standard) => crate::domain::user::UserKind::Standard,
            Ok(pb::UserKind::Unspecified) | Ok(pb::UserKind::Advanced) => {
                crate::domain::user::UserKind::Advanced
            }
            _ => {
                v.add(
                    "options.default_kind",
                    "must be USER_KIND_STANDARD or USER_KIND_ADVANCED",
                );
                crate::domain::user::UserKind::Advanced
            }
        };
        if options.max_failed_lines < 0 {
            v.add("options.max_failed_lines", "must not be negative");
        }
        let account = done(v, account)?;
        let import = crate::service::import::Import::start(
            &self.0.store,
            &self.0.hasher,
            &actor,
            crate::service::import::Options {
                account,
                sync,
                dry_run: options.dry_run,
                atomic: options.atomic,
                force: options.force,
                default_kind,
                max_failed_lines: options.max_failed_lines,
            },
        )
        .await?;
        // The file's chunks, from the gRPC stream to the import.
        let (chunks, chunks_rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            use pb::import_users_request::Msg;
            loop {
                let chunk = match inbound.message().await {
                    Ok(Some(pb::ImportUsersRequest {
                        msg: Some(Msg::Chunk(c)),
                    })) => Ok(c),
                    Ok(None) => return,
                    Ok(Some(_)) => Err(Error::invalid(
                        "options",
                        "only the first message carries options",
                    )),
                    Err(e) => Err(stream_error(e)),
                };
                let stop = chunk.is_err();
                if chunks.send(chunk).await.is_err() || stop {
                    return;
                }
            }
        });
        let (out, progress) = tokio::sync::mpsc::channel(8);
        // In the RPC's span: the import's lines and database work carry its
        // trace.
        tokio::spawn(tracing::Instrument::in_current_span(
            crate::service::import::run(self.0.store.clone(), import, chunks_rx, out),
        ));
        let responses = tokio_stream::wrappers::ReceiverStream::new(progress).map(|p| match p? {
            Progress::Lines(results, processed) => Ok(pb::ImportUsersResponse {
                results: results.into_iter().map(result_to_pb).collect(),
                summary: None,
                processed_bytes: processed as i64,
            }),
            Progress::Summary(s) => Ok(pb::ImportUsersResponse {
                results: Vec::new(),
                summary: Some(pb::ImportSummary {
                    lines: s.lines,
                    counts: s.counts,
                    committed: s.committed,
                    revision: s.revision,
                }),
                processed_bytes: 0,
            }),
        });
        Ok(Response::new(Box::pin(responses)))
    }

    type GetImportReportStream = ReportStream;

    async fn get_import_report(
        &self,
        request: Request<pb::GetImportReportRequest>,
    ) -> Result<Response<Self::GetImportReportStream>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let account = code("account_code", &req.account_code, &mut v);
        let account = done(v, account)?;
        let (report, chunks) =
            crate::service::import::stream_report(&self.0.store, &actor, &account).await?;
        let mut info = Some(report_info(&report, account.as_str()));
        let stream = tokio_stream::wrappers::ReceiverStream::new(chunks).map(move |chunk| {
            chunk
                .map(|chunk| pb::GetImportReportResponse {
                    info: info.take(),
                    chunk,
                })
                .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_import_template(
        &self,
        request: Request<pb::GetImportTemplateRequest>,
    ) -> Result<Response<pb::GetImportTemplateResponse>, Status> {
        let actor = self.0.auth.actor(&request).await?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let account = code("account_code", &req.account_code, &mut v);
        let account = done(v, account)?;
        let rights = template_rights(&self.0.store, &actor, &account).await?;
        let dialect = if req.excel {
            Dialect::Excel
        } else {
            Dialect::Rfc4180
        };
        let csv = template(dialect, account.as_str(), &rights)
            .map_err(|e| Error::Internal(e.to_string()))?;
        Ok(Response::new(pb::GetImportTemplateResponse {
            csv,
            filename: format!("clef-import-{}.csv", account.as_str()),
        }))
    }
}

type ImportStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<pb::ImportUsersResponse, Status>> + Send>,
>;

type ReportStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<pb::GetImportReportResponse, Status>> + Send>,
>;

fn report_info(r: &crate::service::import::ReportMeta, account: &str) -> pb::ImportReportInfo {
    use super::timestamp;
    pb::ImportReportInfo {
        start_time: timestamp(r.started_at),
        finish_time: r.finished.as_ref().and_then(|f| timestamp(f.finished_at)),
        expire_time: timestamp(
            r.started_at + chrono::Duration::days(crate::service::import::REPORT_DAYS),
        ),
        imported_by: r.actor_id.map(|u| u.to_string()).unwrap_or_default(),
        options: Some(pb::ImportOptions {
            max_failed_lines: 0,
            account_code: account.to_owned(),
            mode: if r.sync {
                pb::ImportMode::Sync
            } else {
                pb::ImportMode::Add
            } as i32,
            dry_run: r.dry_run,
            atomic: r.atomic,
            force: r.force,
            default_kind: 0,
        }),
        summary: r.finished.as_ref().map(|f| pb::ImportSummary {
            lines: f.lines,
            counts: f.counts.clone(),
            committed: f.committed,
            revision: f.revision,
        }),
        stopped: r.stopped.clone().unwrap_or_default(),
    }
}

fn result_to_pb(o: crate::service::import::Outcome) -> pb::LineResult {
    pb::LineResult {
        line: o.line as i64,
        status: line_status_to_pb(o.status) as i32,
        column: o.column,
        message: o.message,
        user_id: o.user_id.map(|u| u.to_string()).unwrap_or_default(),
    }
}

/// What a broken request stream means: a message over the limit, or a
/// client gone.
fn stream_error(e: Status) -> Error {
    match e.code() {
        tonic::Code::OutOfRange => Error::ResourceExhausted(format!(
            "a message over the {}-byte limit: send the file in smaller chunks",
            crate::limits::MAX_MESSAGE_BYTES
        )),
        // tonic's decoder: a body that is not an ImportUsersRequest.
        tonic::Code::Internal if e.message().starts_with("failed to decode") => Error::invalid(
            "message",
            "is not an ImportUsersRequest (malformed protobuf)",
        ),
        _ => Error::Unavailable("the client stream ended abnormally".into()),
    }
}

fn line_status_to_pb(s: LineStatus) -> pb::LineStatus {
    match s {
        LineStatus::Created => pb::LineStatus::Created,
        LineStatus::Updated => pb::LineStatus::Updated,
        LineStatus::Unchanged => pb::LineStatus::Unchanged,
        LineStatus::Deactivated => pb::LineStatus::Deactivated,
        LineStatus::RightNotHeld => pb::LineStatus::RightNotHeld,
        LineStatus::InvalidChoice => pb::LineStatus::InvalidChoice,
        LineStatus::InvalidUserData => pb::LineStatus::InvalidUserData,
        LineStatus::DuplicateInFile => pb::LineStatus::DuplicateInFile,
    }
}
