//! `ExportUsers`: CSV streamed in constant memory. A task streams the rows
//! of every account, in one query on one snapshot, and hands chunks to a
//! bounded channel, so a slow client slows the reading (and Postgres behind
//! it) instead of filling memory.

use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use super::bulk::{export_scope, ExportOf};
use crate::{
    bulk::{Dialect, ExportWriter},
    domain::{principal::Actor, team::TeamFilter, Error},
    store::Store,
};

/// Rows per chunk sent.
const CHUNK_ROWS: i64 = 2000;
/// Chunks buffered between the reader and the client.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Some CSV lines of an export.
#[derive(Debug)]
pub struct Chunk {
    pub data: Vec<u8>,
    /// Data rows in it (the header is not one).
    pub rows: i64,
}

/// Checks that the actor may export `of`, then streams it: the receiver
/// yields chunks, then ends, or yields the error that stopped the export.
pub async fn start(
    store: &Store,
    actor: &Actor,
    of: &ExportOf,
    team: Option<&TeamFilter>,
    dialect: Dialect,
) -> Result<mpsc::Receiver<Result<Chunk, Error>>, Error> {
    let scope = export_scope(store, actor, of, team).await?;
    let (accounts, teams, catalog) = (scope.accounts, scope.teams, scope.catalog);
    let store = store.clone();
    let (out, chunks) = mpsc::channel(CHUNKS_IN_FLIGHT);
    tokio::spawn(tracing::Instrument::in_current_span(async move {
        let result: Result<(), Error> = async {
            let mut writer = ExportWriter::new(dialect, &catalog).map_err(csv_error)?;
            let mut snapshot = store.snapshot().await?;
            // The header goes out even when there are no rows.
            let mut pending = writer.take().map_err(csv_error)?;
            let mut pending_rows = 0;
            {
                let mut rows =
                    std::pin::pin!(snapshot.export_rows(&accounts, teams.as_deref()).await?);
                while let Some(row) = rows.next().await {
                    writer.write(&row?).map_err(csv_error)?;
                    pending_rows += 1;
                    if pending_rows >= CHUNK_ROWS {
                        pending.extend(writer.take().map_err(csv_error)?);
                        let chunk = Chunk {
                            data: std::mem::take(&mut pending),
                            rows: std::mem::take(&mut pending_rows),
                        };
                        if out.send(Ok(chunk)).await.is_err() {
                            return Ok(()); // the client went away
                        }
                    }
                }
            }
            pending.extend(writer.take().map_err(csv_error)?);
            if !pending.is_empty() {
                let chunk = Chunk {
                    data: pending,
                    rows: pending_rows,
                };
                if out.send(Ok(chunk)).await.is_err() {
                    return Ok(());
                }
            }
            snapshot.commit().await?;
            Ok(())
        }
        .await;
        if let Err(e) = result {
            let _ = out.send(Err(e)).await;
        }
    }));
    Ok(chunks)
}

fn csv_error(e: csv::Error) -> Error {
    Error::Internal(format!("csv: {e}"))
}
