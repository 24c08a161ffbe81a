//! `clef.v1.ImportService`.

use tonic::{Request, Response, Status};

use super::{
    convert::{code, done},
    Ctx,
};
use crate::{
    bulk::{csvfile::neutralise, Dialect, PROFILE_COLUMNS},
    domain::{Error, Violations},
    pb::{self, import_service_server::ImportService},
    service::bulk::template_rights,
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
        let options = match inbound.message().await? {
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
        let account = done(v, account)?;
        let import = crate::service::import::Import::start(
            &self.0.store,
            &actor,
            crate::service::import::Options {
                account,
                sync,
                dry_run: options.dry_run,
                atomic: options.atomic,
                force: options.force,
                default_kind,
            },
        )
        .await?;
        let (out, rx) = tokio::sync::mpsc::channel(8);
        let store = self.0.store.clone();
        tokio::spawn(async move {
            let errors = out.clone();
            if let Err(e) = Self::run_import(store, import, actor.user_id, inbound, out).await {
                let _ = errors.send(Err(Status::from(e))).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
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
        let report = crate::service::import::latest_report(&self.0.store, &actor, &account).await?;
        let mut info = Some(report_info(&report, account.as_str()));
        let store = self.0.store.clone();
        let (out, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut after = -1;
            loop {
                let chunks = match store.report_chunks(report.id, after, 16).await {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = out.send(Err(Status::from(e))).await;
                        return;
                    }
                };
                let Some((last, _)) = chunks.last() else {
                    return;
                };
                after = *last;
                for (_, chunk) in chunks {
                    let msg = pb::GetImportReportResponse {
                        info: info.take(),
                        chunk,
                    };
                    if out.send(Ok(msg)).await.is_err() {
                        return; // the client went away
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
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
        let mut header: Vec<String> = PROFILE_COLUMNS
            .iter()
            .map(|(_, fr, _)| fr.to_string())
            .collect();
        let mut example: Vec<String> = PROFILE_COLUMNS
            .iter()
            .map(|(key, _, _)| match *key {
                "account" if dialect == Dialect::Excel => format!("=\"{}\"", account.as_str()),
                "account" => account.as_str().to_owned(),
                "kind" => "avancé".into(),
                "status" => "actif".into(),
                "last_name" => "Dupré".into(),
                "first_name" => "Zoé".into(),
                "job_title" => "Logisticienne".into(),
                "email" => "zoe.dupre@example.com".into(),
                "phone" => neutralise(dialect, "+33 1 02 03 04 05"),
                "address" => "12 rue de la Gare".into(),
                "postal_code" => "88000".into(),
                "city" => "Épinal".into(),
                "country" => "FR".into(),
                "tags" => "ATELIER-7".into(),
                _ => String::new(),
            })
            .collect();
        for (def, scope) in &rights {
            header.push(def.code.clone());
            example.push(match scope {
                Some(s) => s.as_str().into(),
                None => "oui".into(),
            });
        }
        let mut buf = Vec::new();
        if dialect == Dialect::Excel {
            buf.extend_from_slice("\u{feff}".as_bytes());
        }
        let mut w = csv::WriterBuilder::new()
            .delimiter(if dialect == Dialect::Excel {
                b';'
            } else {
                b','
            })
            .from_writer(buf);
        w.write_record(&header)
            .and_then(|_| w.write_record(&example))
            .map_err(|e| Error::Internal(e.to_string()))?;
        let csv = w.into_inner().map_err(|e| Error::Internal(e.to_string()))?;
        Ok(Response::new(pb::GetImportTemplateResponse {
            csv,
            filename: format!("clef-import-{}.csv", account.as_str()),
        }))
    }
}

/// Lines applied per transaction (non-atomic imports).
const BATCH: usize = 500;

/// How long an import waits for the client's next bytes, holding its
/// transaction open.
const IDLE: std::time::Duration = std::time::Duration::from_secs(120);

type ImportStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<pb::ImportUsersResponse, Status>> + Send>,
>;

/// The file's bytes, handed from the gRPC stream to the CSV parser thread.
/// `None` means the client stream failed: the import must not go on.
struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<Option<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.buf.len() {
            match self.rx.blocking_recv() {
                Some(Some(chunk)) => {
                    self.buf = chunk;
                    self.pos = 0;
                }
                Some(None) => return Err(std::io::Error::other("the client stream failed")),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

enum Parsed {
    Record(u64, Vec<String>),
    Failed(String),
}

impl ImportApi {
    async fn run_import(
        store: crate::store::Store,
        mut import: crate::service::import::Import,
        actor: uuid::Uuid,
        mut inbound: tonic::Streaming<pb::ImportUsersRequest>,
        out: tokio::sync::mpsc::Sender<Result<pb::ImportUsersResponse, Status>>,
    ) -> Result<(), Error> {
        use crate::bulk::reader::{
            decode_cells, detect_delimiter, map_header, parse_line, sniff_encoding,
        };
        use pb::import_users_request::Msg;
        let gone = || Error::Unavailable("the client stream ended abnormally".into());
        // Enough of the file to know its delimiter: the header line (or
        // 64 KiB of it). Encodings are decided record by record later.
        let mut prefix = Vec::new();
        let (mut ended, mut header_seen) = (false, false);
        while prefix.len() < 64 * 1024 && !header_seen {
            match inbound.message().await.map_err(|_| gone())? {
                Some(pb::ImportUsersRequest {
                    msg: Some(Msg::Chunk(c)),
                }) => {
                    header_seen = c.contains(&b'\n');
                    prefix.extend_from_slice(&c);
                }
                Some(_) => {
                    return Err(Error::invalid(
                        "options",
                        "only the first message carries options",
                    ))
                }
                None => {
                    ended = true;
                    break;
                }
            }
        }
        // The encoding is decided record by record (`decode_cells`); only a
        // byte-order mark is skipped here.
        let (_, bom) = sniff_encoding(&prefix);
        let first = prefix[bom..].to_vec();
        let delimiter = detect_delimiter(&String::from_utf8_lossy(&first));
        let (chunk_tx, chunk_rx) = tokio::sync::mpsc::channel::<Option<Vec<u8>>>(8);
        let (rec_tx, mut rec_rx) = tokio::sync::mpsc::channel::<Parsed>(1024);
        // The CSV parser, on a blocking thread; bounded channels on both sides
        // carry back-pressure from the database to the client.
        tokio::task::spawn_blocking(move || {
            let reader = ChunkReader {
                rx: chunk_rx,
                buf: first,
                pos: 0,
            };
            let mut csv = csv::ReaderBuilder::new()
                .delimiter(delimiter)
                .flexible(true)
                .has_headers(false)
                .from_reader(reader);
            let mut rec = csv::ByteRecord::new();
            loop {
                match csv.read_byte_record(&mut rec) {
                    Ok(false) => break,
                    Ok(true) => {
                        let line = rec.position().map(|p| p.line()).unwrap_or(0);
                        let msg = Parsed::Record(line, decode_cells(rec.iter()));
                        if rec_tx.blocking_send(msg).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = rec_tx.blocking_send(Parsed::Failed(e.to_string()));
                        break;
                    }
                }
            }
        });
        // The rest of the client stream, to the parser.
        tokio::spawn(async move {
            if ended {
                return;
            }
            loop {
                match inbound.message().await {
                    Ok(Some(pb::ImportUsersRequest {
                        msg: Some(Msg::Chunk(c)),
                    })) => {
                        if chunk_tx.send(Some(c)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Ok(Some(_)) | Err(_) => {
                        let _ = chunk_tx.send(None).await;
                        return;
                    }
                }
            }
        });

        let header = match rec_rx.recv().await {
            Some(Parsed::Record(_, cells)) => {
                map_header(&cells, import.catalog()).map_err(|problems| {
                    Error::invalid("file", format!("header: {}", problems.join("; ")))
                })?
            }
            Some(Parsed::Failed(e)) => return Err(Error::invalid("file", e)),
            None => return Err(Error::invalid("file", "is empty: no header line")),
        };
        import.set_header(&store, &header).await?;
        let one_tx = import.options.atomic || import.options.dry_run;
        let import_dry_run = import.options.dry_run;
        let default_kind = import.options.default_kind;
        let mut counts: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
        let mut failed_lines = false;
        let mut tally = |results: &[crate::service::import::Outcome]| {
            for o in results {
                *counts.entry(o.status.to_owned()).or_default() += 1;
                failed_lines |= o.failed();
            }
            results.iter().any(|o| o.wrote())
        };
        let mut lines = 0i64;
        // The write transaction is opened when a batch is ready, not while
        // waiting for the client: a write holds the revision counter, and so
        // every other writer, until it commits. Dry runs rehearse without
        // holding it; atomic imports hold it from their first batch to the
        // end.
        let open = || async {
            if import_dry_run {
                store.rehearsal(Some(actor)).await
            } else {
                store.write(Some(actor)).await
            }
        };
        let mut tx: Option<crate::store::Tx> = None;
        // Whether `tx` wrote anything: a transaction that wrote nothing is
        // rolled back rather than committed, so that it takes no revision.
        let mut dirty = false;
        let mut last_revision = 0;
        let mut batch = Vec::with_capacity(BATCH);
        let mut failed = None;
        loop {
            // A client that sends nothing for IDLE, or whose call was
            // cancelled, is gone: its pending lines roll back.
            let next = tokio::select! {
                next = tokio::time::timeout(IDLE, rec_rx.recv()) => match next {
                    Ok(next) => next,
                    Err(_) => Some(Parsed::Failed(format!(
                        "no data from the client for {} s",
                        IDLE.as_secs()
                    ))),
                },
                () = out.closed() => Some(Parsed::Failed("the client cancelled the call".into())),
            };
            let end = match next {
                Some(Parsed::Record(line, cells)) => {
                    // Empty lines are skipped.
                    if !(cells.len() == 1 && cells[0].trim().is_empty()) {
                        let parsed =
                            parse_line(&header, &cells, line, import.catalog(), default_kind);
                        batch.push((line, parsed));
                    }
                    false
                }
                Some(Parsed::Failed(e)) => {
                    failed = Some(e);
                    true
                }
                None => true,
            };
            if batch.len() >= BATCH || (end && !batch.is_empty()) {
                if end && failed.is_some() {
                    break; // the pending batch is not applied, and nothing of it is reported
                }
                let t = match &mut tx {
                    Some(t) => t,
                    None => tx.insert(open().await?),
                };
                let results = import.apply_batch(t, std::mem::take(&mut batch)).await?;
                lines += results.len() as i64;
                dirty |= tally(&results);
                if !one_tx {
                    if let Some(t) = tx.take() {
                        if std::mem::take(&mut dirty) {
                            last_revision = t.commit().await?;
                        } else {
                            t.rollback().await?;
                        }
                    }
                }
                import.report(&store, &results).await?;
                let msg = pb::ImportUsersResponse {
                    results: results.into_iter().map(result_to_pb).collect(),
                    summary: None,
                };
                if out.send(Ok(msg)).await.is_err() {
                    return Ok(()); // the client went away; the batch was reported done
                }
            }
            if end {
                break;
            }
        }
        if let Some(e) = failed {
            // Client gone or file unreadable: what was reported stays; the
            // pending batch (everything, when atomic) rolls back.
            if let Some(t) = tx {
                t.rollback().await?;
            }
            return Err(Error::invalid("file", format!("reading stopped: {e}")));
        }
        if import.options.sync {
            let t = match &mut tx {
                Some(t) => t,
                None => tx.insert(open().await?),
            };
            let deactivated = import.finish_sync(t).await?;
            dirty |= tally(&deactivated);
            import.report(&store, &deactivated).await?;
            if !deactivated.is_empty() {
                let msg = pb::ImportUsersResponse {
                    results: deactivated.into_iter().map(result_to_pb).collect(),
                    summary: None,
                };
                let _ = out.send(Ok(msg)).await;
            }
        }
        // Atomic: all lines or none; one failed line undoes every other.
        let undo = import.options.dry_run || (import.options.atomic && failed_lines);
        let (committed, revision) = match tx {
            Some(t) if dirty && !undo => (true, t.commit().await?),
            Some(t) => {
                t.rollback().await?;
                (!undo, if undo { 0 } else { last_revision })
            }
            None => (!undo, if undo { 0 } else { last_revision }),
        };
        import
            .finish_report(&store, lines, &counts, committed, revision)
            .await?;
        let _ = out
            .send(Ok(pb::ImportUsersResponse {
                results: Vec::new(),
                summary: Some(pb::ImportSummary {
                    lines,
                    counts,
                    committed,
                    revision,
                }),
            }))
            .await;
        Ok(())
    }
}

type ReportStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<pb::GetImportReportResponse, Status>> + Send>,
>;

fn report_info(r: &crate::store::ReportMeta, account: &str) -> pb::ImportReportInfo {
    use super::timestamp;
    pb::ImportReportInfo {
        started_at: timestamp(r.started_at),
        finished_at: r.finished.as_ref().and_then(|f| timestamp(f.finished_at)),
        expires_at: timestamp(r.started_at + chrono::Duration::days(crate::store::REPORT_DAYS)),
        imported_by: r.actor_id.map(|u| u.to_string()).unwrap_or_default(),
        options: Some(pb::ImportOptions {
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
    }
}

fn result_to_pb(o: crate::service::import::Outcome) -> pb::LineResult {
    pb::LineResult {
        line: o.line as i64,
        status: o.status.to_owned(),
        column: o.column,
        message: o.message,
        user_id: o.user_id.map(|u| u.to_string()).unwrap_or_default(),
    }
}
