//! Running an import from its file's chunks to its summary: lines grouped
//! in batches, transactions opened and committed, the report written, the
//! sync step, and what the client is told as it goes.
//!
//! - Records come from `bulk::stream`; lines are applied and committed in
//!   batches of [`BATCH`] lines at most (one transaction for `atomic` and
//!   `dry_run`, rolled back when any line of an atomic import fails); a batch
//!   is applied sooner once its first line has waited `BATCH_WAIT` (a slow
//!   client hears of its lines, and the import shows signs of life, at that
//!   pace) or it holds [`BATCH_PASSWORDS`] password cells; each batch is
//!   reported after it commits. A batch that wrote nothing rolls back rather
//!   than take a revision.
//! - A write transaction holds the revision counter, and so every other
//!   writer, until it ends: an import opens it only once a batch is parsed,
//!   never while waiting for its client. A dry run uses a rehearsal
//!   (`Store::rehearsal`: the next revision's number without the lock, never
//!   committed). An `atomic` import is staged (`import_staged_lines`) as it
//!   arrives and replayed from Postgres in one transaction after its last
//!   byte; its results wait in `import_staged_results` until that
//!   transaction has ended.
//! - Each batch and the sync step first check, in their transaction, that
//!   the import still owns the account's report (`Tx::hold_report`, `FOR KEY
//!   SHARE` until it commits): an import replaced by a newer one stops there.
//!   One import per account at a time: `Store::start_report` refuses a new
//!   one while the account's report shows a running import (alive within
//!   150 s: each batch refreshes `active_at`).
//! - A client that cancels, drops its connection or sends nothing for 120 s
//!   stops the import: its pending batch rolls back, reported lines stay, and
//!   the report records why it stopped (retried every second for up to 150 s
//!   while Postgres is unreachable).
//! - The caller is told through a channel of [`Progress`]: line results,
//!   then the summary, or the error that stopped it.

use std::collections::HashMap;

use tokio::sync::mpsc;

use super::{Import, Outcome};
use crate::{
    bulk::{
        reader::{map_header, parse_line, Header, ImportLine, LineProblem, Secret},
        stream::{records, Chunks, Parsed, MAX_CELLS, MAX_RECORD_BYTES},
    },
    domain::Error,
    store::{Store, Tx},
};

/// Batches of a staged atomic import's results sent to the client per read.
const RESULT_PAGES: i64 = 8;

/// How a staged atomic import keeps a record over the limits (a NUL makes
/// it a cell no real record passes as valid).
const TOO_LONG: &str = "\u{0}clef: record over the limits\u{0}";

/// The problem of a record over the limits.
fn too_long() -> LineProblem {
    LineProblem::InvalidUserData {
        field: "line".into(),
        why: format!(
            "is longer than {MAX_RECORD_BYTES} bytes or has more than {MAX_CELLS} cells (the record limits)"
        ),
    }
}

/// The error that stops an import whose file cannot be read further: the
/// client gone (`INVALID_ARGUMENT` on `file`, saying why), or what its
/// sender reported (a message over the limit).
fn reading_stopped(e: Error) -> Error {
    match e {
        Error::Unavailable(why) => Error::invalid("file", format!("reading stopped: {why}")),
        other => other,
    }
}

/// Lines applied per transaction (non-atomic imports), and read back per
/// statement from an atomic import's stage. A batch holds the revision
/// counter, and so every other writer, while it writes (~0.4 s at this
/// size on two cores); fewer, larger transactions spend less per line on
/// what every transaction costs (bench/README, 2026-12-04).
pub const BATCH: usize = 2000;

/// How long a line may wait for its batch to fill: a client sending slowly
/// hears of its lines (and its import shows signs of life) at this pace.
const BATCH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Password cells per batch at most: each is hashed (argon2id, tens of
/// milliseconds) before the batch's transaction opens.
pub const BATCH_PASSWORDS: usize = 200;

/// How long an import waits for the client's next bytes, holding its
/// transaction open.
const IDLE: std::time::Duration = std::time::Duration::from_secs(120);

/// What an import tells its client, in order.
#[derive(Debug)]
pub enum Progress {
    /// The results of lines (or of a sync's deactivations), once written,
    /// and how many bytes of the file have been processed.
    Lines(Vec<Outcome>, u64),
    /// The end of the import.
    Summary(Summary),
}

/// How an import ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub lines: i64,
    /// Lines (and deactivations) per status.
    pub counts: HashMap<String, i64>,
    /// False for a dry run, and for an atomic import rolled back.
    pub committed: bool,
    /// The revision of the last commit (0 when nothing was committed).
    pub revision: i64,
}

/// Where the progress goes: a send fails once the client has gone.
pub type ProgressSender = mpsc::Sender<Result<Progress, Error>>;

/// Runs `import` over the file in `chunks`, telling `out` how it goes; an
/// error that stops it is sent last.
pub async fn run(store: Store, import: Import, chunks: Chunks, out: ProgressSender) {
    let _running = crate::metrics::ImportRunning::start();
    let mut run = Run {
        store,
        import,
        out,
        tx: None,
        dirty: false,
        last_revision: 0,
        summary: Summary {
            lines: 0,
            counts: HashMap::new(),
            committed: false,
            revision: 0,
        },
        failed_lines: false,
        staged: Vec::new(),
        staged_results: 0,
        processed: 0,
        failed: 0,
    };
    if let Err(e) = run.go(chunks).await {
        // What was not committed rolls back (everything, when atomic); the
        // lines reported done stay.
        if let Some(tx) = run.tx.take() {
            let _ = tx.rollback().await;
        }
        let reason = super::stop_reason(&e);
        let _ = run.out.send(Err(e)).await;
        run.record_stop(&reason).await;
    }
    // After the summary (the response stream ends once this is done):
    // forgetting a large file's ledger takes a moment. Should it fail, the
    // account's next import does it.
    if let Err(e) = run.import.forget(&run.store).await {
        tracing::warn!(error = %e, "cannot drop an import's ledger");
    }
}

/// How long an import that stopped keeps trying to say so in its report
/// while Postgres is unreachable: as long as the account would be held by
/// an import that shows no sign of life.
const STOP_RETRY: std::time::Duration = std::time::Duration::from_secs(150);

struct Run {
    store: Store,
    import: Import,
    out: ProgressSender,
    /// The open write transaction, if any.
    tx: Option<Tx>,
    /// Whether `tx` wrote anything: a transaction that wrote nothing is
    /// rolled back rather than committed, so that it takes no revision.
    dirty: bool,
    last_revision: i64,
    summary: Summary,
    /// Whether a line was refused (an atomic import then writes nothing).
    failed_lines: bool,
    /// Records of an atomic import not yet staged.
    staged: Vec<(u64, Vec<String>)>,
    /// Batches of results staged so far (atomic imports).
    staged_results: i64,
    /// Bytes of the file read into lines so far.
    processed: u64,
    /// Lines refused so far (for `max_failed_lines`).
    failed: i64,
}

type Lines = Vec<(u64, Result<ImportLine, LineProblem>)>;

/// The lines read since the last batch was applied.
#[derive(Default)]
struct Pending {
    lines: Lines,
    /// When its first line came.
    since: Option<tokio::time::Instant>,
    /// Its password cells, each hashed before its transaction opens.
    passwords: usize,
}

impl Pending {
    fn push(
        &mut self,
        line: u64,
        parsed: Result<ImportLine, LineProblem>,
        at: tokio::time::Instant,
    ) {
        if let Ok(ImportLine {
            password: Some(Secret::Clear(_)),
            ..
        }) = &parsed
        {
            self.passwords += 1;
        }
        self.since.get_or_insert(at);
        self.lines.push((line, parsed));
    }

    /// Whether the batch is to be applied now, whatever comes next.
    fn full(&self) -> bool {
        self.lines.len() >= BATCH || self.passwords >= BATCH_PASSWORDS
    }

    /// When the batch is to be applied if no more lines come.
    fn due(&self) -> Option<tokio::time::Instant> {
        self.since.map(|t| t + BATCH_WAIT)
    }

    fn take(&mut self) -> Lines {
        std::mem::take(self).lines
    }
}

impl Run {
    /// Records why the import stopped, retrying while Postgres is
    /// unreachable (the error that stopped it is often that): once
    /// recorded, the account takes imports again at once.
    async fn record_stop(&self, reason: &str) {
        let deadline = tokio::time::Instant::now() + STOP_RETRY;
        loop {
            match self.import.stop_report(&self.store, reason).await {
                Ok(()) => return,
                Err(Error::Unavailable(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot record why an import stopped");
                    return;
                }
            }
        }
    }

    async fn go(&mut self, chunks: Chunks) -> Result<(), Error> {
        let mut records = records(chunks).await?;
        let header = match records.recv().await {
            Some(Parsed::Record { cells, .. }) => map_header(&cells, self.import.catalog())
                .map_err(|problems| {
                    Error::invalid("file", format!("header: {}", problems.join("; ")))
                })?,
            Some(Parsed::TooLong { .. }) => {
                return Err(Error::invalid(
                    "file",
                    format!("header: longer than {MAX_RECORD_BYTES} bytes or {MAX_CELLS} cells"),
                ))
            }
            Some(Parsed::Failed(e)) => return Err(reading_stopped(e)),
            None => return Err(Error::invalid("file", "is empty: no header line")),
        };
        self.import.set_header(&self.store, &header).await?;
        let default_kind = self.import.options.default_kind;
        let staging = self.staging();
        let mut batch = Pending::default();
        let mut heard = tokio::time::Instant::now();
        loop {
            // A client that sends nothing for IDLE, or whose call was
            // cancelled, is gone: its pending lines roll back. A batch
            // whose first line has waited BATCH_WAIT is applied as it is.
            let due = batch.due();
            let next = tokio::select! {
                next = tokio::time::timeout_at(heard + IDLE, records.recv()) => match next {
                    Ok(next) => next,
                    Err(_) => Some(Parsed::Failed(Error::Unavailable(format!(
                        "no data from the client for {} s",
                        IDLE.as_secs()
                    )))),
                },
                () = self.out.closed() => Some(Parsed::Failed(Error::Unavailable(
                    "the client cancelled the call".into(),
                ))),
                () = tokio::time::sleep_until(due.unwrap_or(heard)), if due.is_some() => {
                    self.apply(batch.take()).await?;
                    continue;
                }
            };
            heard = tokio::time::Instant::now();
            match next {
                // Empty lines are skipped.
                Some(Parsed::Record { cells, end, .. })
                    if cells.len() == 1 && cells[0].trim().is_empty() =>
                {
                    self.processed = end;
                }
                Some(Parsed::Record { line, cells, end }) if staging => {
                    self.processed = end;
                    self.staged.push((line, cells));
                    if self.staged.len() >= BATCH {
                        self.stage().await?;
                    }
                }
                Some(Parsed::Record { line, cells, end }) => {
                    self.processed = end;
                    let parsed =
                        parse_line(&header, &cells, line, self.import.catalog(), default_kind);
                    batch.push(line, parsed, heard);
                }
                Some(Parsed::TooLong { line, end }) if staging => {
                    self.processed = end;
                    // Staged as a marker that the replay reads back.
                    self.staged.push((line, vec![TOO_LONG.to_owned()]));
                    if self.staged.len() >= BATCH {
                        self.stage().await?;
                    }
                }
                Some(Parsed::TooLong { line, end }) => {
                    self.processed = end;
                    batch.push(line, Err(too_long()), heard);
                }
                Some(Parsed::Failed(e)) => {
                    // Client gone or file unreadable: the pending batch is
                    // not applied, nor reported.
                    return Err(reading_stopped(e));
                }
                None => break,
            }
            if batch.full() {
                self.apply(batch.take()).await?;
            }
        }
        if staging {
            self.stage().await?;
            self.replay(&header).await?;
        } else if !batch.lines.is_empty() {
            self.apply(batch.take()).await?;
        }
        let mut deactivated = Vec::new();
        if self.import.options.sync {
            let mut tx = self.open().await?;
            let absent = self.import.finish_sync(&mut tx).await;
            self.tx = Some(tx);
            deactivated = absent?;
            self.tally(&deactivated);
        }
        self.finish(deactivated).await
    }

    /// The open write transaction, taken out of `self.tx` (the caller puts
    /// it back), or a new one. It is opened when a batch is ready, not
    /// while waiting for the client: a write holds the revision counter,
    /// and so every other writer, until it commits. Dry runs rehearse
    /// without holding it; atomic imports hold it while they replay their
    /// staged file, after its last byte.
    async fn open(&mut self) -> Result<Tx, Error> {
        if let Some(tx) = self.tx.take() {
            return Ok(tx);
        }
        let actor = Some(self.import.actor.user_id);
        let mut tx = if self.import.options.dry_run {
            self.store.rehearsal(actor).await?
        } else {
            self.store.write(actor).await?
        };
        // Its audit events say which import made them.
        if let Some(report) = self.import.report {
            tx.set_cause(&format!("import {report}")).await?;
        }
        Ok(tx)
    }

    /// Whether the file is staged before it is applied: an atomic import
    /// that writes (a dry run holds no lock while it waits).
    fn staging(&self) -> bool {
        self.import.options.atomic && !self.import.options.dry_run
    }

    /// Stages the records read so far (atomic imports).
    async fn stage(&mut self) -> Result<(), Error> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let report = self.import.ledger()?;
        let mut lines = Vec::with_capacity(self.staged.len());
        let mut cells = Vec::with_capacity(self.staged.len());
        for (line, record) in self.staged.drain(..) {
            lines.push(line as i64);
            cells.push(serde_json::to_vec(&record).map_err(|e| Error::Internal(e.to_string()))?);
        }
        self.store.stage_lines(report, &lines, &cells).await?;
        // No write transaction is open while staging: the client may be told.
        self.out
            .send(Ok(Progress::Lines(Vec::new(), self.processed)))
            .await
            .map_err(|_| Error::Unavailable("the client went away".into()))
    }

    /// Applies a staged atomic import, batch by batch, in one transaction:
    /// the client has sent everything, so the transaction waits on nobody.
    async fn replay(&mut self, header: &Header) -> Result<(), Error> {
        let report = self.import.ledger()?;
        let default_kind = self.import.options.default_kind;
        let mut after = 0;
        loop {
            if self.out.is_closed() {
                return Err(Error::Unavailable("the client went away".into()));
            }
            let rows = self.store.staged_lines(report, after, BATCH as i64).await?;
            let Some(&(last, _)) = rows.last() else {
                return Ok(());
            };
            after = last;
            let mut batch: Lines = Vec::with_capacity(rows.len());
            for (line, cells) in rows {
                let cells: Vec<String> =
                    serde_json::from_slice(&cells).map_err(|e| Error::Internal(e.to_string()))?;
                let line = line as u64;
                let parsed = if cells.len() == 1 && cells[0] == TOO_LONG {
                    Err(too_long())
                } else {
                    parse_line(header, &cells, line, self.import.catalog(), default_kind)
                };
                batch.push((line, parsed));
            }
            self.apply(batch).await?;
        }
    }

    /// Tells the client the results a staged atomic import kept in
    /// Postgres, once its transaction has ended.
    async fn send_staged_results(&mut self) -> Result<(), Error> {
        let report = self.import.ledger()?;
        let mut after = 0;
        loop {
            let pages = self
                .store
                .staged_results(report, after, RESULT_PAGES)
                .await?;
            let Some(&(last, _)) = pages.last() else {
                return Ok(());
            };
            after = last;
            for (_, data) in pages {
                let results: Vec<Outcome> =
                    serde_json::from_slice(&data).map_err(|e| Error::Internal(e.to_string()))?;
                self.out
                    .send(Ok(Progress::Lines(results, self.processed)))
                    .await
                    .map_err(|_| Error::Unavailable("the client went away".into()))?;
            }
        }
    }

    /// Counts results; notes whether they wrote or failed.
    fn tally(&mut self, results: &[Outcome]) {
        for o in results {
            *self
                .summary
                .counts
                .entry(o.status.as_str().to_owned())
                .or_default() += 1;
            crate::metrics::import_lines(o.status.as_str(), 1);
            self.failed_lines |= o.failed();
            self.failed += i64::from(o.failed());
            self.dirty |= o.wrote();
        }
    }

    /// Stops the import once `max_failed_lines` lines have failed (after the
    /// batch that reached it is reported).
    fn too_many_failures(&self) -> Result<(), Error> {
        let max = self.import.options.max_failed_lines;
        if max > 0 && self.failed >= max {
            return Err(Error::FailedPrecondition(format!(
                "stopped after {} failed lines (max_failed_lines {max}); the lines reported before are {}",
                self.failed,
                if self.staging() || self.import.options.dry_run { "not committed" } else { "committed" }
            )));
        }
        Ok(())
    }

    /// Applies a batch, commits it unless the import runs in one
    /// transaction, reports it, and tells the client (an error once the
    /// client has gone: the batch was reported done, the rest is not read).
    async fn apply(&mut self, mut batch: Lines) -> Result<(), Error> {
        // Before the transaction: hashing takes a while (argon2id).
        self.import.hash_passwords(&mut batch).await?;
        let mut tx = self.open().await?;
        let results = self.import.apply_batch(&self.store, &mut tx, batch).await;
        self.tx = Some(tx);
        let results = results?;
        self.summary.lines += results.len() as i64;
        self.tally(&results);
        let one_tx = self.import.options.atomic || self.import.options.dry_run;
        if !one_tx {
            if let Some(tx) = self.tx.take() {
                if std::mem::take(&mut self.dirty) {
                    self.last_revision = tx.commit().await?;
                } else {
                    tx.rollback().await?;
                }
            }
        }
        // The client hears of committed lines even when the report cannot
        // take them (its import then stops).
        let reported = self.import.report(&self.store, &results).await;
        if self.staging() {
            // Told once the transaction has ended: nothing waits on the
            // client while it is open.
            reported?;
            self.stage_results(&results).await?;
            return self.too_many_failures();
        }
        self.out
            .send(Ok(Progress::Lines(results, self.processed)))
            .await
            .map_err(|_| Error::Unavailable("the client went away".into()))?;
        reported?;
        self.too_many_failures()
    }

    async fn stage_results(&mut self, results: &[Outcome]) -> Result<(), Error> {
        let report = self.import.ledger()?;
        let data = serde_json::to_vec(results).map_err(|e| Error::Internal(e.to_string()))?;
        self.staged_results += 1;
        self.store
            .stage_results(report, self.staged_results, &data)
            .await
    }

    /// Commits or rolls back what is still open, then reports a sync's
    /// deactivations (once they are committed, like every result), finishes
    /// the report and sends the summary.
    async fn finish(&mut self, deactivated: Vec<Outcome>) -> Result<(), Error> {
        let options = &self.import.options;
        // Atomic: all lines or none; one failed line undoes every other.
        let undo = options.dry_run || (options.atomic && self.failed_lines);
        let kept = if undo { 0 } else { self.last_revision };
        let (committed, revision) = match self.tx.take() {
            Some(tx) if self.dirty && !undo => (true, tx.commit().await?),
            Some(tx) => {
                tx.rollback().await?;
                (!undo, kept)
            }
            None => (!undo, kept),
        };
        self.summary.committed = committed;
        self.summary.revision = revision;
        if self.staging() {
            self.send_staged_results().await?;
        }
        if !deactivated.is_empty() {
            self.import.report(&self.store, &deactivated).await?;
            let _ = self
                .out
                .send(Ok(Progress::Lines(deactivated, self.processed)))
                .await;
        }
        let s = &self.summary;
        self.import
            .finish_report(&self.store, s.lines, &s.counts, committed, revision)
            .await?;
        let _ = self.out.send(Ok(Progress::Summary(s.clone()))).await;
        Ok(())
    }
}
