//! `ListEvents` and `WatchEvents`. A watch is a task that reads the table
//! page by page after its cursor and hands events to a bounded channel: a
//! slow client slows the reading, so a watcher's memory is one page
//! whatever it has fallen behind. Caught up, the task waits for the next
//! revision this replica hears of (any replica's commit reaches it through
//! the change feed; its own commits at once), or polls: it never takes
//! events from memory, so the history and the live part are one sequence.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::{
    domain::{
        audit::{pruned, Cursor, Event, EventFilter, EventScope},
        principal::{Actor, PrincipalKind},
        Error,
    },
    store::Store,
};

/// Events read per query while catching up.
const WATCH_PAGE: i64 = 500;
/// Events buffered between the reading task and the client.
const WATCH_IN_FLIGHT: usize = 64;
/// How often a caught-up watcher looks at the table even when no revision
/// was heard of (the change feed may be down).
const POLL: Duration = Duration::from_secs(1);

/// The heartbeat interval a watcher asks for (0: the default of 5 s).
pub fn heartbeat(seconds: i32) -> Result<Duration, Error> {
    match seconds {
        0 => Ok(Duration::from_secs(5)),
        1..=300 => Ok(Duration::from_secs(seconds as u64)),
        _ => Err(Error::invalid(
            "heartbeat_seconds",
            "must be between 1 and 300",
        )),
    }
}

/// What the actor may read: operators and service principals everything,
/// admins their accounts' events and their users'.
async fn scope(store: &Store, actor: &Actor) -> Result<EventScope, Error> {
    match actor.kind {
        PrincipalKind::Operator | PrincipalKind::Service => Ok(EventScope::All),
        PrincipalKind::Standard | PrincipalKind::Advanced => {
            let mut tx = store.read().await?;
            let accounts = tx.administered_accounts(actor.user_id).await?;
            tx.commit().await?;
            if accounts.is_empty() {
                return Err(Error::PermissionDenied(
                    "admin.users on an account is required to read its audit trail".into(),
                ));
            }
            Ok(EventScope::Administered {
                actor: actor.user_id,
                accounts,
            })
        }
    }
}

/// The account the filter names, which the actor must be able to read.
async fn filter_account(
    store: &Store,
    scope: &EventScope,
    filter: &EventFilter,
) -> Result<Option<Uuid>, Error> {
    let Some(code) = &filter.account else {
        return Ok(None);
    };
    let mut tx = store.read().await?;
    let account = tx.account(code).await;
    tx.commit().await?;
    // An admin is told the same of an account that is not his and of one
    // that does not exist.
    let refused = || Error::PermissionDenied(format!("admin.users on account {code} is required"));
    match (scope, account) {
        (EventScope::Administered { accounts, .. }, Ok(a)) if !accounts.contains(&a.id) => {
            Err(refused())
        }
        (EventScope::Administered { .. }, Err(Error::NotFound(_))) => Err(refused()),
        (_, account) => Ok(Some(account?.id)),
    }
}

/// A page of `ListEvents`.
#[derive(Debug)]
pub struct EventPage {
    pub events: Vec<Event>,
    pub next: Option<Cursor>,
    pub revision: i64,
    pub pruned_through: i64,
}

/// `ListEvents`: up to `limit` events after `after`.
pub async fn list(
    store: &Store,
    actor: &Actor,
    filter: &EventFilter,
    after: Cursor,
    limit: i64,
) -> Result<EventPage, Error> {
    let scope = scope(store, actor).await?;
    let account = filter_account(store, &scope, filter).await?;
    let mut page = store
        .audit_page(&scope, filter, account, after, limit + 1)
        .await?;
    let more = page.events.len() as i64 > limit;
    page.events.truncate(limit as usize);
    let next = more.then(|| Cursor::after(page.events.last().expect("a full page")));
    Ok(EventPage {
        events: page.events,
        next,
        revision: page.revision,
        pruned_through: page.pruned_through,
    })
}

/// Whether events after `cursor` were pruned: every revision after it must
/// be kept, and its own revision too when the cursor stands inside it.
fn lost(cursor: &Cursor, pruned_through: i64) -> bool {
    pruned_through > cursor.revision
        || (pruned_through == cursor.revision && cursor.event.is_some())
}

/// How often a watch checks its caller's key again, even while it catches up.
const RECHECK: Duration = Duration::from_secs(1);

/// What a watch sends.
#[derive(Debug)]
pub enum WatchItem {
    Event(Box<Event>),
    /// Every event up to `revision` that the filter lets through was sent.
    Heartbeat {
        revision: i64,
        time: DateTime<Utc>,
    },
}

/// `WatchEvents`, decoded.
#[derive(Debug)]
pub struct Watch {
    pub from: Cursor,
    pub filter: EventFilter,
    pub heartbeat: Duration,
}

/// Checks the request (rights, account, retention), then streams: the
/// receiver yields events and heartbeats until the client goes, or the
/// error that ended the stream.
pub async fn watch(
    store: &Store,
    actor: &Actor,
    request: Watch,
    revisions: watch::Receiver<i64>,
    stopping: watch::Receiver<bool>,
) -> Result<mpsc::Receiver<Result<WatchItem, Error>>, Error> {
    let scope = scope(store, actor).await?;
    let account = filter_account(store, &scope, &request.filter).await?;
    let first = store
        .audit_page(&scope, &request.filter, account, request.from, WATCH_PAGE)
        .await?;
    if lost(&request.from, first.pruned_through) {
        return Err(pruned(
            request.from.revision,
            first.pruned_through,
            first.oldest_kept,
        ));
    }
    let (out, items) = mpsc::channel(WATCH_IN_FLIGHT);
    let store = store.clone();
    let actor = actor.clone();
    tokio::spawn(tracing::Instrument::in_current_span(async move {
        let watcher = Watcher {
            store,
            actor,
            scope,
            account,
            request,
            revisions,
            stopping,
            out,
        };
        if let Err(e) = watcher.run(first).await {
            let _ = watcher.out.send(Err(e)).await;
        }
    }));
    Ok(items)
}

struct Watcher {
    store: Store,
    actor: Actor,
    scope: EventScope,
    account: Option<Uuid>,
    request: Watch,
    revisions: watch::Receiver<i64>,
    /// The server is shutting down: the stream ends (`UNAVAILABLE`) so
    /// that the client resumes elsewhere and the server may stop.
    stopping: watch::Receiver<bool>,
    out: mpsc::Sender<Result<WatchItem, Error>>,
}

impl Watcher {
    /// Sends pages until the client goes (`Ok`) or something fails.
    async fn run(&self, first: crate::store::AuditPage) -> Result<(), Error> {
        let mut cursor = self.request.from;
        let mut page = first;
        let mut revisions = self.revisions.clone();
        let mut stopping = self.stopping.clone();
        // The last revision heard of that was waited for: the next wait is
        // for a later one (heard revisions may run ahead of the table's).
        let mut heard = *revisions.borrow_and_update();
        let mut told: Option<i64> = None;
        let mut last_sent = tokio::time::Instant::now();
        let mut checked = tokio::time::Instant::now();
        loop {
            if *stopping.borrow() {
                return Err(Error::Unavailable(
                    "the server is shutting down: resume from the last event received".into(),
                ));
            }
            if checked.elapsed() >= RECHECK {
                self.still_allowed().await?;
                checked = tokio::time::Instant::now();
            }
            if lost(&cursor, page.pruned_through) {
                return Err(pruned(
                    cursor.revision,
                    page.pruned_through,
                    page.oldest_kept,
                ));
            }
            let full = page.events.len() as i64 >= WATCH_PAGE;
            for event in page.events.drain(..) {
                cursor = Cursor::after(&event);
                if self.send(WatchItem::Event(Box::new(event))).await.is_err() {
                    return Ok(());
                }
                last_sent = tokio::time::Instant::now();
            }
            if !full {
                // Caught up with the snapshot: nothing else up to its
                // revision will ever pass the filter.
                if page.revision > cursor.revision
                    || (page.revision == cursor.revision && cursor.event.is_some())
                {
                    cursor = Cursor::after_revision(page.revision);
                }
                let due = last_sent.elapsed() >= self.request.heartbeat;
                if told.is_none() || due {
                    let beat = WatchItem::Heartbeat {
                        revision: page.revision.max(cursor.revision),
                        time: Utc::now(),
                    };
                    if self.send(beat).await.is_err() {
                        return Ok(());
                    }
                    told = Some(page.revision);
                    last_sent = tokio::time::Instant::now();
                }
                let beat_in = self.request.heartbeat.saturating_sub(last_sent.elapsed());
                let after = page.revision.max(heard);
                let next = async {
                    let got = revisions.wait_for(|r| *r > after).await.map(|r| *r);
                    match got {
                        Ok(r) => r,
                        Err(_) => std::future::pending::<i64>().await,
                    }
                };
                tokio::select! {
                    r = next => heard = r,
                    _ = tokio::time::sleep(POLL.min(beat_in)) => {}
                    _ = stopping.changed() => {}
                    _ = self.out.closed() => return Ok(()),
                }
            }
            let scope = self.current_scope().await?;
            page = self
                .store
                .audit_page(
                    &scope,
                    &self.request.filter,
                    self.account,
                    cursor,
                    WATCH_PAGE,
                )
                .await?;
        }
    }

    async fn send(&self, item: WatchItem) -> Result<(), ()> {
        self.out.send(Ok(item)).await.map_err(|_| ())
    }

    /// The caller's key and status are checked again as the stream goes
    /// on: a revoked key or a deactivated caller ends it.
    async fn still_allowed(&self) -> Result<(), Error> {
        if self.store.key_is_live(self.actor.key_id).await? {
            Ok(())
        } else {
            Err(Error::Unauthenticated)
        }
    }

    /// An admin's accounts as they are now (he may have lost some).
    async fn current_scope(&self) -> Result<EventScope, Error> {
        match &self.scope {
            EventScope::All => Ok(EventScope::All),
            EventScope::Administered { .. } => {
                let scope = scope(&self.store, &self.actor).await?;
                if let (Some(account), EventScope::Administered { accounts, .. }) =
                    (self.account, &scope)
                {
                    if !accounts.contains(&account) {
                        return Err(Error::PermissionDenied(
                            "admin.users on the filtered account is no longer held".into(),
                        ));
                    }
                }
                Ok(scope)
            }
        }
    }
}
