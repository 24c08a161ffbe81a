//! An import's report: its results as CSV chunks, kept 7 days, replacing
//! the account's previous one from the accepted header on.

use std::collections::HashMap;

use tokio::sync::mpsc;

use super::{outcome::Outcome, Import};
use crate::{
    bulk::{csvfile::neutralise, Dialect},
    domain::{account::AccountCode, principal::Actor, Error},
    store::{ReportMeta, Store, REPORT_DAYS},
};

/// The columns of an import report.
pub(super) const REPORT_HEADER: [&str; 5] = ["line", "status", "column", "message", "user_id"];

impl Import {
    /// Appends results to the import's report.
    pub async fn report(&mut self, store: &Store, results: &[Outcome]) -> Result<(), Error> {
        let Some(report) = self.report.filter(|_| !results.is_empty()) else {
            return Ok(());
        };
        let text = |s: &str| neutralise(Dialect::Excel, s);
        let rows = results.iter().map(|o| {
            [
                o.line.to_string(),
                o.status.as_str().to_owned(),
                text(&o.column),
                text(&o.message),
                o.user_id.map(|u| u.to_string()).unwrap_or_default(),
            ]
        });
        self.report_seq += 1;
        store
            .append_report(report, self.report_seq, &csv_rows(rows)?)
            .await
    }

    /// Records how the import ended in its report.
    pub async fn finish_report(
        &self,
        store: &Store,
        lines: i64,
        counts: &HashMap<String, i64>,
        committed: bool,
        revision: i64,
    ) -> Result<(), Error> {
        match self.report {
            Some(report) => {
                store
                    .finish_report(report, lines, counts, committed, revision)
                    .await
            }
            None => Ok(()),
        }
    }

    /// Records in its report why the import stopped before its end (see
    /// [`stop_reason`]).
    pub async fn stop_report(&self, store: &Store, reason: &str) -> Result<(), Error> {
        match self.report {
            Some(report) => store.stop_report(report, reason).await,
            None => Ok(()),
        }
    }
}

/// The latest import report of an account, for an actor who administers it.
pub async fn latest_report(
    store: &Store,
    actor: &Actor,
    account: &AccountCode,
) -> Result<ReportMeta, Error> {
    let mut tx = store.read().await?;
    let a = tx.account(account.as_str()).await?;
    tx.authority(actor, a.id).await?.require_admin(&a.code)?;
    tx.commit().await?;
    store.report(a.id).await?.ok_or_else(|| {
        Error::NotFound(format!(
            "import report of account {} (none in the last {REPORT_DAYS} days)",
            a.code
        ))
    })
}

/// The latest import report of an account and its CSV chunks, read a few
/// at a time as the client takes them.
pub async fn stream_report(
    store: &Store,
    actor: &Actor,
    account: &AccountCode,
) -> Result<(ReportMeta, mpsc::Receiver<Result<Vec<u8>, Error>>), Error> {
    let report = latest_report(store, actor, account).await?;
    let store = store.clone();
    let id = report.id;
    let (out, chunks) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut after = -1;
        loop {
            let page = match store.report_chunks(id, after, 16).await {
                Ok(page) => page,
                Err(e) => {
                    let _ = out.send(Err(e)).await;
                    return;
                }
            };
            let Some((last, _)) = page.last() else {
                return;
            };
            after = *last;
            for (_, chunk) in page {
                if out.send(Ok(chunk)).await.is_err() {
                    return; // the client went away
                }
            }
        }
    });
    Ok((report, chunks))
}

/// What a report says of the error that stopped an import. The details of
/// an internal error stay in the logs.
pub fn stop_reason(e: &Error) -> String {
    match e {
        Error::Internal(_) => "internal error".to_owned(),
        e => e.to_string(),
    }
}

/// Rows as CSV bytes.
pub(super) fn csv_rows<I: IntoIterator<Item = [String; 5]>>(rows: I) -> Result<Vec<u8>, Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.write_record(&r)
            .map_err(|e| Error::Internal(format!("report: {e}")))?;
    }
    w.into_inner()
        .map_err(|e| Error::Internal(format!("report: {e}")))
}
