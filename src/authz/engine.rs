//! [`Engine`]: caches, invalidation, freshness.
//!
//! Longer than most files, on purpose: the caches, the stripes that stamp
//! invalidations, the change feed and the freshness rules are one
//! concurrent design whose invariants (see ARCHITECTURE.md, "Decisions")
//! only hold together; a sixth of the file is its unit tests.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use quick_cache::{sync::Cache, Weighter};
use sqlx::postgres::PgListener;
use uuid::Uuid;

use crate::{
    domain::{
        account::AccountState,
        decision::{Decision, Denial, Entitlements, Micros},
        key::KeyHash,
        principal::Actor,
        Error,
    },
    store::{Changes, CommitObserver, Loaded, Store, SubjectRef, CHANGES_CHANNEL},
};

/// Invalidation stripes: a load is discarded when its subject's stripe saw
/// an invalidation while it ran (one in this many of the others' does too).
const STRIPES: usize = 1024;

/// How often the engine proves its change feed alive.
const PING_INTERVAL: Duration = Duration::from_millis(25);

/// Sizes of the caches.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Total weight of cached entitlements (about one unit per key, account
    /// and grant).
    pub weight_capacity: u64,
    /// Entries of the small lookup caches (key → user, user key → user,
    /// account states).
    pub lookup_capacity: usize,
    /// How stale memory may be: when the change feed's last proof of life
    /// is older than this, decisions come from Postgres.
    pub staleness_bound: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            weight_capacity: 4_000_000,
            lookup_capacity: 1_000_000,
            staleness_bound: Duration::from_millis(100),
        }
    }
}

#[derive(Clone)]
struct ByWeight;

impl Weighter<Uuid, Arc<Entitlements>> for ByWeight {
    fn weight(&self, _key: &Uuid, val: &Arc<Entitlements>) -> u64 {
        val.weight()
    }
}

/// A subject's entitlements (`None`: no such subject) and the revision the
/// answer is at least as fresh as.
#[derive(Debug, Clone)]
pub struct Answer {
    pub subject: Option<Arc<Entitlements>>,
    pub revision: i64,
    /// Whether the subject came from memory (else from Postgres).
    pub from_memory: bool,
    /// State of the account asked about, when the load learnt it.
    account: Option<AccountState>,
}

/// The decision engine of one replica.
#[derive(Debug)]
pub struct Engine {
    store: Store,
    subjects: Cache<Uuid, Arc<Entitlements>, ByWeight>,
    /// Key hash → owner (`None`: no such key).
    keys: Cache<KeyHash, Option<Uuid>>,
    /// User key → user.
    user_keys: Cache<String, Uuid>,
    /// Account code → its state.
    accounts: Cache<String, AccountState>,
    /// Highest revision whose notification this replica has applied; every
    /// change up to it is reflected in the caches (notifications arrive in
    /// commit order, and revisions are assigned in commit order).
    seen: AtomicI64,
    /// Whether the listening connection is up. While it is not, nothing is
    /// served from or written to the caches.
    live: AtomicBool,
    /// Counts invalidations. Each one stamps the stripes of the users it
    /// drops (or `cleared`, for everything) with its number *before*
    /// dropping them; a load notes the count before it starts, caches its
    /// result, then removes it again if its subject's stripe (or `cleared`)
    /// was stamped since. Either the stamp comes before that re-check, or
    /// the drop comes after the insertion: a load taken before a change
    /// never stays cached.
    invalidations: AtomicU64,
    stripes: Box<[AtomicU64]>,
    cleared: AtomicU64,
    /// Like `cleared`, for the account states alone (a new account).
    accounts_cleared: AtomicU64,
    /// The change feed's last proof of life: when (micros since `origin`)
    /// the latest ping that came back through the listening connection was
    /// sent. Every change committed before then has been applied.
    proven_at: AtomicU64,
    origin: Instant,
    /// `proven_at` older than this: memory is not trusted.
    bound_micros: u64,
    /// The channel this replica pings itself on.
    ping_channel: String,
    /// Whether memory is trusted, as last reported (for the logs and health).
    serving_memory: AtomicBool,
    /// The rights catalog's codes (`None`: not loaded; dropped with
    /// everything, which a catalog change sends).
    rights: std::sync::RwLock<Option<Arc<std::collections::HashSet<String>>>>,
    /// The highest revision this replica has heard of (its own commits and
    /// the change feed's), for those who wait for the next one (watchers
    /// of the audit trail).
    heard: tokio::sync::watch::Sender<i64>,
}

impl std::fmt::Debug for ByWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ByWeight")
    }
}

impl Engine {
    pub fn new(store: Store, config: EngineConfig) -> Arc<Self> {
        let estimated = (config.weight_capacity / 8).max(16) as usize;
        let engine = Arc::new(Self {
            store: store.clone(),
            subjects: Cache::with_weighter(estimated, config.weight_capacity, ByWeight),
            keys: Cache::new(config.lookup_capacity),
            user_keys: Cache::new(config.lookup_capacity),
            accounts: Cache::new(config.lookup_capacity),
            seen: AtomicI64::new(0),
            live: AtomicBool::new(false),
            invalidations: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            cleared: AtomicU64::new(0),
            accounts_cleared: AtomicU64::new(0),
            proven_at: AtomicU64::new(0),
            origin: Instant::now(),
            bound_micros: config.staleness_bound.as_micros() as u64,
            ping_channel: format!("clef_ping_{}", Uuid::new_v4().simple()),
            serving_memory: AtomicBool::new(false),
            rights: std::sync::RwLock::new(None),
            heard: tokio::sync::watch::Sender::new(0),
        });
        store.observe_commits(engine.clone());
        engine
    }

    fn micros(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    /// Now, by the store's clock: what expiries are compared with.
    #[inline]
    pub fn now_micros(&self) -> Micros {
        self.store.clock().now_micros()
    }

    fn stripe(&self, user: &Uuid) -> &AtomicU64 {
        // Version 7 and 4 ids both end in random bits.
        let low = user.as_u64_pair().1 as usize;
        &self.stripes[low % STRIPES]
    }

    /// Whether `user` (or everything) was invalidated after `since`.
    fn invalidated_since(&self, user: &Uuid, since: u64) -> bool {
        self.cleared.load(Ordering::SeqCst) > since
            || self.stripe(user).load(Ordering::SeqCst) > since
    }

    /// Whether the change feed proved itself alive and current within the
    /// bound.
    fn feed_proven(&self) -> bool {
        self.micros()
            .saturating_sub(self.proven_at.load(Ordering::SeqCst))
            < self.bound_micros
    }

    /// Whether decisions are answered from memory now (the listener is up
    /// and its feed proven within the bound). Shown by health.
    pub fn serves_from_memory(&self) -> bool {
        self.live.load(Ordering::SeqCst) && self.feed_proven()
    }

    /// Runs the listener until the process ends: keeps the caches in step
    /// with every replica's writes.
    pub fn spawn_listener(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            let pinger = engine.clone();
            let pings = tokio::spawn(async move { pinger.ping().await });
            engine.listen().await;
            pings.abort();
        })
    }

    /// Sends this replica a ping through Postgres' notification queue every
    /// [`PING_INTERVAL`], carrying its send time. Notifications reach a
    /// listener in commit order, so a ping coming back proves that every
    /// change committed before it was sent has been applied: a silent
    /// connection (half-open, a frozen backend) or a lagging one stops the
    /// proofs, whatever TCP says. Also reports the transitions in the logs.
    async fn ping(&self) {
        let mut tick = tokio::time::interval(PING_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut notifier = self.store.notifier();
        loop {
            tick.tick().await;
            let sent = self.micros().to_string();
            let ping = notifier.notify(&self.ping_channel, &sent);
            match tokio::time::timeout(PING_INTERVAL * 4, ping).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "change-feed ping failed"),
                Err(_) => {
                    // A connection that does not answer is made again.
                    notifier = self.store.notifier();
                    tracing::debug!("change-feed ping timed out");
                }
            }
            self.report_state();
        }
    }

    fn report_state(&self) {
        let memory = self.serves_from_memory();
        if self.serving_memory.swap(memory, Ordering::SeqCst) != memory {
            if memory {
                tracing::info!("change feed proven current; decisions served from memory");
            } else {
                tracing::warn!(
                    bound_ms = self.bound_micros / 1000,
                    "change feed silent or late beyond the bound; decisions come from postgres"
                );
            }
        }
    }

    async fn listen(&self) {
        loop {
            match self.listen_once().await {
                Ok(()) => tracing::warn!(
                    "change listener lost its connection; decisions come from postgres"
                ),
                Err(e) => tracing::debug!(error = %e, "change listener cannot connect"),
            }
            self.go_stale();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// One listening session; returns when its connection is lost.
    async fn listen_once(&self) -> Result<(), Error> {
        let mut listener = PgListener::connect_with(self.store.pool())
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        listener
            .listen_all([CHANGES_CHANNEL, self.ping_channel.as_str()])
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        // Listening from here on: anything committed after the read below is
        // notified, anything before it is in what loads will read.
        let revision = self.store.current_revision().await?;
        self.clear();
        self.seen.fetch_max(revision, Ordering::SeqCst);
        self.live.store(true, Ordering::SeqCst);
        tracing::info!(revision, "change listener up");
        // A connection silent for this long (since its start, or its last
        // proof) is given up for a new one.
        let give_up = Duration::from_micros(self.bound_micros * 10).max(Duration::from_secs(1));
        let started = self.micros();
        let mut watchdog = tokio::time::interval(PING_INTERVAL);
        loop {
            let notice = tokio::select! {
                n = listener.try_recv() => n,
                _ = watchdog.tick() => {
                    let last = self.proven_at.load(Ordering::SeqCst).max(started);
                    let silent = self.micros().saturating_sub(last);
                    if silent > give_up.as_micros() as u64 {
                        tracing::warn!(silent_ms = silent / 1000, "change feed silent; reconnecting");
                        return Ok(());
                    }
                    continue;
                }
            };
            match notice {
                Ok(Some(n)) if n.channel() == self.ping_channel => {
                    if let Ok(sent) = n.payload().parse::<u64>() {
                        self.proven_at.fetch_max(sent, Ordering::SeqCst);
                    }
                }
                Ok(Some(n)) => match Changes::parse(n.payload()) {
                    Some(changes) => self.apply(&changes, true),
                    None => {
                        tracing::warn!(
                            payload = n.payload(),
                            "unreadable change notice; dropping every cache"
                        );
                        self.clear();
                    }
                },
                Ok(None) | Err(_) => return Ok(()),
            }
        }
    }

    fn go_stale(&self) {
        self.live.store(false, Ordering::SeqCst);
        self.clear();
    }

    fn clear(&self) {
        let stamp = self.invalidations.fetch_add(1, Ordering::SeqCst) + 1;
        self.cleared.fetch_max(stamp, Ordering::SeqCst);
        if let Ok(mut rights) = self.rights.write() {
            *rights = None;
        }
        self.subjects.clear();
        self.keys.clear();
        self.user_keys.clear();
        self.accounts.clear();
    }

    /// Drops what `changes` made stale. Only notifications (`from_listener`)
    /// advance `seen`: a local commit may overtake another replica's earlier
    /// one, whose notification has not arrived yet; and only the last notice
    /// of a revision does (until then some of its users are still cached).
    fn apply(&self, changes: &Changes, from_listener: bool) {
        if changes.everything {
            self.clear();
        } else {
            let stamp = self.invalidations.fetch_add(1, Ordering::SeqCst) + 1;
            if changes.accounts {
                self.accounts_cleared.fetch_max(stamp, Ordering::SeqCst);
                self.accounts.clear();
            }
            for u in &changes.users {
                self.stripe(u).fetch_max(stamp, Ordering::SeqCst);
                self.subjects.remove(u);
            }
        }
        if from_listener && !changes.continued {
            self.seen.fetch_max(changes.revision, Ordering::SeqCst);
        }
        if !changes.continued {
            self.heard.send_if_modified(|r| {
                let newer = changes.revision > *r;
                *r = (*r).max(changes.revision);
                newer
            });
        }
    }

    /// Follows the highest revision this replica has heard of: it has
    /// committed it, or the change feed brought its notice.
    pub fn revisions(&self) -> tokio::sync::watch::Receiver<i64> {
        self.heard.subscribe()
    }

    /// The highest revision reflected in memory.
    pub fn seen_revision(&self) -> i64 {
        self.seen.load(Ordering::SeqCst)
    }

    /// Whether memory may answer for `min_revision`: the listener is up,
    /// its feed proven within the bound, and it has applied that revision.
    fn fresh_enough(&self, min_revision: i64) -> bool {
        self.live.load(Ordering::SeqCst)
            && min_revision <= self.seen.load(Ordering::SeqCst)
            && self.feed_proven()
    }

    /// The subject's entitlements, from memory when fresh enough, else from
    /// Postgres (one query). `account` is the account the caller is about to
    /// ask about, so that a cold load also learns its state.
    pub async fn subject(
        &self,
        subject: &SubjectRef,
        min_revision: i64,
        account: Option<&str>,
    ) -> Result<Answer, Error> {
        if self.fresh_enough(min_revision) {
            if let Some(hit) = self.cached(subject) {
                crate::metrics::cache_lookup(true);
                return Ok(Answer {
                    subject: hit,
                    revision: self.seen.load(Ordering::SeqCst),
                    from_memory: true,
                    account: None,
                });
            }
        }
        crate::metrics::cache_lookup(false);
        let since = self.invalidations.load(Ordering::SeqCst);
        let Loaded {
            subject: loaded,
            account: account_state,
            revision,
        } = tracing::Instrument::instrument(
            self.store.load_entitlements(subject, account),
            // The cold path's database work, a child of the RPC's span
            // (OpenTelemetry's conventions for database clients).
            tracing::info_span!(
                "SELECT entitlements",
                otel.kind = "client",
                db.system = "postgresql",
                db.operation.name = "SELECT",
            ),
        )
        .await?;
        let loaded = loaded.map(Arc::new);
        if self.live.load(Ordering::SeqCst) {
            self.remember(subject, loaded.as_ref(), since);
            if let (Some(code), Some(state)) = (account, account_state) {
                self.remember_account(code, state, since);
            }
        }
        Ok(Answer {
            subject: loaded,
            revision,
            from_memory: false,
            account: account_state,
        })
    }

    /// `Some(None)`: known not to exist; `None`: not cached.
    fn cached(&self, subject: &SubjectRef) -> Option<Option<Arc<Entitlements>>> {
        let id = match subject {
            SubjectRef::Key(hash) => match self.keys.get(hash)? {
                Some(id) => id,
                None => return Some(None),
            },
            SubjectRef::Id(id) => *id,
            SubjectRef::UserKey(k) => self.user_keys.get(k)?,
        };
        self.subjects.get(&id).map(Some)
    }

    /// Caches a load that started after invalidation number `since`,
    /// unless an invalidation of its subject came after that (see
    /// `invalidations`: insert first, then re-check and take it back).
    /// Which user a key or a user key names never changes, so those lookups
    /// need no re-check.
    fn remember(&self, subject: &SubjectRef, loaded: Option<&Arc<Entitlements>>, since: u64) {
        match (subject, loaded) {
            (SubjectRef::Key(hash), found) => self.keys.insert(*hash, found.map(|e| e.user_id)),
            (SubjectRef::UserKey(k), Some(e)) => self.user_keys.insert(k.clone(), e.user_id),
            _ => {}
        }
        if let Some(e) = loaded {
            self.subjects.insert(e.user_id, e.clone());
            if self.invalidated_since(&e.user_id, since) {
                self.subjects.remove(&e.user_id);
            }
        }
    }

    /// Caches an account's state read after invalidation number `since`
    /// (account changes drop everything, a new account the account states).
    fn remember_account(&self, code: &str, state: AccountState, since: u64) {
        self.accounts.insert(code.to_owned(), state);
        if self.cleared.load(Ordering::SeqCst) > since
            || self.accounts_cleared.load(Ordering::SeqCst) > since
        {
            self.accounts.remove(code);
        }
    }

    /// Which of `codes` are not in the rights catalog (from memory; loaded
    /// once, and again after a catalog change). A code a caller asks about
    /// must exist: a typo must not read as a missing grant.
    pub async fn unknown_rights<'a>(&self, codes: &[&'a str]) -> Result<Vec<&'a str>, Error> {
        let unknown = |known: &std::collections::HashSet<String>| -> Vec<&'a str> {
            codes
                .iter()
                .copied()
                .filter(|c| !known.contains(*c))
                .collect()
        };
        // The hot path: answered under the read lock, without cloning.
        if self.live.load(Ordering::SeqCst) {
            if let Ok(guard) = self.rights.read() {
                if let Some(known) = guard.as_deref() {
                    return Ok(unknown(known));
                }
            }
        }
        let since = self.invalidations.load(Ordering::SeqCst);
        let known: Arc<std::collections::HashSet<String>> =
            Arc::new(self.store.right_codes().await?.into_iter().collect());
        if self.live.load(Ordering::SeqCst) && self.cleared.load(Ordering::SeqCst) <= since {
            if let Ok(mut rights) = self.rights.write() {
                *rights = Some(Arc::clone(&known));
            }
        }
        Ok(unknown(&known))
    }

    /// Decides whether `subject` holds `right` on `account`.
    pub async fn check(
        &self,
        subject: &SubjectRef,
        account: &str,
        right: &str,
        min_revision: i64,
        now: i64,
    ) -> Result<(Decision, i64), Error> {
        let answer = self.subject(subject, min_revision, Some(account)).await?;
        let decision = self
            .decide(&answer, subject, account, now, |e| {
                e.check(account, right, now)
            })
            .await?;
        Ok((decision, answer.revision))
    }

    /// Applies `rule` to a loaded subject, turning "not linked" into
    /// "unknown account" when the account does not exist.
    pub async fn decide(
        &self,
        answer: &Answer,
        subject: &SubjectRef,
        account: &str,
        now: i64,
        rule: impl FnOnce(&Entitlements) -> Decision,
    ) -> Result<Decision, Error> {
        let d = self
            .decide_inner(answer, subject, account, now, rule)
            .await?;
        crate::metrics::decision(d.allowed, answer.from_memory);
        Ok(d)
    }

    async fn decide_inner(
        &self,
        answer: &Answer,
        subject: &SubjectRef,
        account: &str,
        now: i64,
        rule: impl FnOnce(&Entitlements) -> Decision,
    ) -> Result<Decision, Error> {
        let Some(e) = &answer.subject else {
            return Ok(Decision::deny(Denial::UnknownSubject));
        };
        // A subject named by a key is that key's owner only while the key is
        // live (not revoked, not expired).
        if let SubjectRef::Key(hash) = subject {
            if e.key(hash, now).is_none() {
                return Ok(Decision::deny(Denial::UnknownSubject));
            }
        }
        let d = rule(e);
        if d.reason != Some(Denial::NotLinked) || !e.active {
            return Ok(d);
        }
        let state = match answer.account {
            Some(state) => state,
            None => self.account_state(account).await?,
        };
        Ok(match state {
            AccountState::Missing => Decision::deny(Denial::UnknownAccount),
            AccountState::Exists(_) => d,
        })
    }

    async fn account_state(&self, code: &str) -> Result<AccountState, Error> {
        if self.fresh_enough(0) {
            if let Some(state) = self.accounts.get(code) {
                return Ok(state);
            }
        }
        let since = self.invalidations.load(Ordering::SeqCst);
        let state = self.store.account_state(code).await?;
        if self.live.load(Ordering::SeqCst) {
            self.remember_account(code, state, since);
        }
        Ok(state)
    }

    /// The principal behind a caller's key, from memory when possible
    /// (decision RPCs authenticate their callers here, off the database).
    pub async fn actor(&self, hash: &KeyHash) -> Result<Option<Actor>, Error> {
        let answer = self.subject(&SubjectRef::Key(*hash), 0, None).await?;
        let now = self.now_micros();
        Ok(answer.subject.and_then(|e| {
            let key = e.key(hash, now)?;
            e.active.then(|| Actor {
                user_id: e.user_id,
                kind: e.kind,
                key_id: key.id,
            })
        }))
    }

    /// What a metrics scrape reads of the engine.
    pub fn scrape(&self, into: &mut crate::metrics::Snapshot) {
        into.cache_entries = vec![
            ("subjects", self.subjects.len() as i64),
            ("keys", self.keys.len() as i64),
            ("user_keys", self.user_keys.len() as i64),
            ("accounts", self.accounts.len() as i64),
        ];
        into.cache_weight = self.subjects.weight() as i64;
        into.feed_serving = self.serves_from_memory();
        into.feed_proof_age_seconds =
            self.micros()
                .saturating_sub(self.proven_at.load(Ordering::SeqCst)) as f64
                / 1e6;
        into.revision_seen = self.seen.load(Ordering::SeqCst);
    }

    /// Decides from entitlements already in memory; `None` on a miss. For
    /// the in-process benchmark of the decision core.
    pub fn check_cached(
        &self,
        subject: &SubjectRef,
        account: &str,
        right: &str,
        now: i64,
    ) -> Option<Decision> {
        let e = self.cached(subject)??;
        if let SubjectRef::Key(hash) = subject {
            e.key(hash, now)?;
        }
        Some(e.check(account, right, now))
    }
}

impl CommitObserver for Engine {
    fn committed(&self, changes: &Changes) {
        self.apply(changes, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::principal::PrincipalKind;

    fn cached(engine: &Engine, user: Uuid) -> bool {
        engine.cached(&SubjectRef::Id(user)).is_some()
    }

    /// An engine whose store never connects (nothing here reaches
    /// Postgres), live, with its feed just proven.
    fn engine() -> Arc<Engine> {
        let options = "postgres://clef@127.0.0.1:1/none".parse().expect("url");
        let engine = Engine::new(Store::connect_lazy(options, 1), EngineConfig::default());
        engine.live.store(true, Ordering::SeqCst);
        engine.proven_at.store(engine.micros(), Ordering::SeqCst);
        engine
    }

    fn entitlements(user_id: Uuid) -> Arc<Entitlements> {
        Arc::new(Entitlements {
            user_id,
            kind: PrincipalKind::Advanced,
            active: true,
            user_key: None,
            keys: Default::default(),
            accounts: Default::default(),
        })
    }

    fn remember_now(engine: &Engine, user: Uuid) {
        let since = engine.invalidations.load(Ordering::SeqCst);
        engine.remember(&SubjectRef::Id(user), Some(&entitlements(user)), since);
    }

    #[tokio::test]
    async fn a_write_listing_many_users_drops_them_only_and_closes_its_revision_last() {
        let engine = engine();
        let users: Vec<Uuid> = (0..451).map(|_| Uuid::new_v4()).collect();
        for &user in &users {
            remember_now(&engine, user);
        }
        // A write touching the first 450 (an import batch, say), as the
        // database sends it: notices of 200, all but the last marked '+'.
        let notices: Vec<Changes> = users[..450]
            .chunks(200)
            .enumerate()
            .map(|(i, chunk)| Changes {
                revision: 7,
                users: chunk.to_vec(),
                continued: i < 2,
                ..Default::default()
            })
            .collect();
        for (i, notice) in notices.iter().enumerate() {
            engine.apply(notice, true);
            let last = i == notices.len() - 1;
            assert_eq!(engine.seen_revision(), if last { 7 } else { 0 });
        }
        assert!(users[..450].iter().all(|&u| !cached(&engine, u)));
        assert!(
            cached(&engine, users[450]),
            "an untouched user stays cached"
        );
        // Everything: the whole cache goes.
        engine.apply(&Changes::parse("8 *").expect("readable"), true);
        assert!(!cached(&engine, users[450]));
        assert_eq!(engine.seen_revision(), 8);
    }

    #[tokio::test]
    async fn a_load_overtaken_by_an_invalidation_of_its_subject_is_not_kept() {
        let engine = engine();
        let (user, other) = (Uuid::new_v4(), Uuid::new_v4());
        // The order check -> bump -> remove -> insert: the load started
        // before the change, the change's drop ran before the insertion.
        let since = engine.invalidations.load(Ordering::SeqCst);
        engine.apply(
            &Changes {
                revision: 3,
                users: vec![user],
                ..Default::default()
            },
            true,
        );
        engine.remember(&SubjectRef::Id(user), Some(&entitlements(user)), since);
        assert!(!cached(&engine, user), "a stale load must not stay cached");
        // Another user's load over the same window is kept (a different
        // stripe), and so is a load that started after the change.
        assert_ne!(
            engine.stripe(&user) as *const _,
            engine.stripe(&other) as *const _
        );
        engine.remember(&SubjectRef::Id(other), Some(&entitlements(other)), since);
        assert!(cached(&engine, other));
        remember_now(&engine, user);
        assert!(cached(&engine, user));
        // A global clear overtakes every load in flight.
        let since = engine.invalidations.load(Ordering::SeqCst);
        engine.clear();
        engine.remember(&SubjectRef::Id(other), Some(&entitlements(other)), since);
        assert!(!cached(&engine, other));
    }

    #[tokio::test]
    async fn memory_is_not_trusted_once_the_feed_proof_is_older_than_the_bound() {
        let engine = engine();
        assert!(engine.fresh_enough(0));
        // No ping back for longer than the bound.
        tokio::time::sleep(Duration::from_micros(engine.bound_micros + 5_000)).await;
        assert!(!engine.fresh_enough(0));
        assert!(!engine.serves_from_memory());
        engine.proven_at.store(engine.micros(), Ordering::SeqCst);
        assert!(engine.fresh_enough(0));
    }
}
