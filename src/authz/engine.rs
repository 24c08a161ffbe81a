//! [`Engine`]: caches, invalidation, freshness.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use quick_cache::{sync::Cache, Weighter};
use sqlx::postgres::PgListener;
use uuid::Uuid;

use crate::{
    domain::{
        decision::{Decision, Denial, Entitlements},
        key::KeyHash,
        principal::Actor,
        Error,
    },
    store::{Changes, CommitObserver, Loaded, Store, SubjectRef, CHANGES_CHANNEL},
};

/// Presented keys whose hash is memoised.
const HASH_MEMO_CAPACITY: usize = 100_000;

/// Sizes of the caches.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Total weight of cached entitlements (about one unit per key, account
    /// and grant).
    pub weight_capacity: u64,
    /// Entries of the small lookup caches (key → user, user key → user,
    /// account states).
    pub lookup_capacity: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            weight_capacity: 4_000_000,
            lookup_capacity: 1_000_000,
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
    /// State of the account asked about, when the load learnt it.
    account: Option<Option<bool>>,
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
    /// Account code → `None` unknown, `Some(closed)`.
    accounts: Cache<String, Option<bool>>,
    /// Presented key → its SHA-256. A pure function memoised (it never goes
    /// stale): callers present the same keys again and again.
    hashes: Cache<Box<str>, KeyHash>,
    /// Highest revision whose notification this replica has applied; every
    /// change up to it is reflected in the caches (notifications arrive in
    /// commit order, and revisions are assigned in commit order).
    seen: AtomicI64,
    /// Whether the listening connection is up. While it is not, nothing is
    /// served from or written to the caches.
    live: AtomicBool,
    /// Bumped by every invalidation; a load that saw it change while it ran
    /// is not cached (it may predate the change).
    epoch: AtomicU64,
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
            hashes: Cache::new(HASH_MEMO_CAPACITY),
            seen: AtomicI64::new(0),
            live: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
        });
        store.observe_commits(engine.clone());
        engine
    }

    /// Runs the listener until the process ends: keeps the caches in step
    /// with every replica's writes.
    pub fn spawn_listener(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move { engine.listen().await })
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
            .listen(CHANGES_CHANNEL)
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        // Listening from here on: anything committed after the read below is
        // notified, anything before it is in what loads will read.
        let revision = self.store.current_revision().await?;
        self.clear();
        self.seen.fetch_max(revision, Ordering::SeqCst);
        self.live.store(true, Ordering::SeqCst);
        tracing::info!(revision, "change listener up; decisions served from memory");
        loop {
            match listener.try_recv().await {
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
        self.epoch.fetch_add(1, Ordering::SeqCst);
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
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if changes.everything {
            self.subjects.clear();
            self.keys.clear();
            self.user_keys.clear();
            self.accounts.clear();
        } else {
            for u in &changes.users {
                self.subjects.remove(u);
            }
        }
        if from_listener && !changes.continued {
            self.seen.fetch_max(changes.revision, Ordering::SeqCst);
        }
    }

    /// The highest revision reflected in memory.
    pub fn seen_revision(&self) -> i64 {
        self.seen.load(Ordering::SeqCst)
    }

    /// Whether memory may answer for `min_revision`.
    fn fresh_enough(&self, min_revision: i64) -> bool {
        self.live.load(Ordering::SeqCst) && min_revision <= self.seen.load(Ordering::SeqCst)
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
                return Ok(Answer {
                    subject: hit,
                    revision: self.seen.load(Ordering::SeqCst),
                    account: None,
                });
            }
        }
        let epoch = self.epoch.load(Ordering::SeqCst);
        let Loaded {
            subject: loaded,
            account: account_state,
            revision,
        } = self.store.load_entitlements(subject, account).await?;
        let loaded = loaded.map(Arc::new);
        if self.live.load(Ordering::SeqCst) && self.epoch.load(Ordering::SeqCst) == epoch {
            self.remember(subject, loaded.as_ref());
            if let Some(code) = account {
                self.accounts.insert(code.to_owned(), account_state);
            }
        }
        Ok(Answer {
            subject: loaded,
            revision,
            account: account.map(|_| account_state),
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

    fn remember(&self, subject: &SubjectRef, loaded: Option<&Arc<Entitlements>>) {
        match (subject, loaded) {
            (SubjectRef::Key(hash), found) => self.keys.insert(*hash, found.map(|e| e.user_id)),
            (SubjectRef::UserKey(k), Some(e)) => self.user_keys.insert(k.clone(), e.user_id),
            _ => {}
        }
        if let Some(e) = loaded {
            self.subjects.insert(e.user_id, e.clone());
        }
    }

    /// The hash of a presented connection key, or `None` when it cannot be a
    /// key (see `domain::key::parse_presented`).
    pub fn key_hash(&self, presented: &str) -> Option<KeyHash> {
        if let Some(hash) = self.hashes.get(presented) {
            return Some(hash);
        }
        let hash = crate::domain::key::parse_presented(presented)?;
        self.hashes.insert(presented.into(), hash);
        Some(hash)
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
            None => Decision::deny(Denial::UnknownAccount),
            Some(_) => d,
        })
    }

    async fn account_state(&self, code: &str) -> Result<Option<bool>, Error> {
        if self.live.load(Ordering::SeqCst) {
            if let Some(state) = self.accounts.get(code) {
                return Ok(state);
            }
        }
        let epoch = self.epoch.load(Ordering::SeqCst);
        let state = self.store.account_state(code).await?;
        if self.live.load(Ordering::SeqCst) && self.epoch.load(Ordering::SeqCst) == epoch {
            self.accounts.insert(code.to_owned(), state);
        }
        Ok(state)
    }

    /// The principal behind a caller's key, from memory when possible
    /// (decision RPCs authenticate their callers here, off the database).
    pub async fn actor(&self, hash: &KeyHash) -> Result<Option<Actor>, Error> {
        let answer = self.subject(&SubjectRef::Key(*hash), 0, None).await?;
        let now = crate::domain::decision::now_micros();
        Ok(answer.subject.and_then(|e| {
            let key = e.key(hash, now)?;
            e.active.then(|| Actor {
                user_id: e.user_id,
                kind: e.kind,
                key_id: key.id,
            })
        }))
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
    use std::collections::HashMap;

    use super::*;
    use crate::domain::principal::PrincipalKind;

    fn cached(engine: &Engine, user: Uuid) -> bool {
        engine.cached(&SubjectRef::Id(user)).is_some()
    }

    #[tokio::test]
    async fn a_write_listing_many_users_drops_them_only_and_closes_its_revision_last() {
        // A store that never connects: nothing here reaches Postgres.
        let options = "postgres://clef@127.0.0.1:1/none".parse().expect("url");
        let engine = Engine::new(Store::connect_lazy(options, 1), EngineConfig::default());
        engine.live.store(true, Ordering::SeqCst);
        let users: Vec<Uuid> = (0..451).map(|_| Uuid::new_v4()).collect();
        for &user_id in &users {
            let e = Entitlements {
                user_id,
                kind: PrincipalKind::Advanced,
                active: true,
                user_key: None,
                keys: Vec::new(),
                accounts: HashMap::new(),
            };
            engine.remember(&SubjectRef::Id(user_id), Some(&Arc::new(e)));
        }
        // A write touching the first 450 (an import batch, say).
        let changes = Changes {
            revision: 7,
            users: users[..450].to_vec(),
            ..Default::default()
        };
        let notices: Vec<Changes> = changes
            .payloads()
            .iter()
            .map(|p| Changes::parse(p).expect("readable"))
            .collect();
        assert_eq!(notices.len(), 3);
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
}
