//! Differential tests: every write path of the API (users created, linked,
//! unlinked, their tags, grants, revokes, rights replaced, mass grants and
//! revokes, each status change, single and many, key regeneration with and
//! without overlap, key revocation, accounts closed and reopened, imports in
//! add and sync mode), written through two replicas of one database in turn.
//! After each write, Check, CheckParcelVisibility and VisibilityFilter answer
//! on both replicas what plain SQL computes straight from the tables,
//! written here independently of clef's code: with the write's revision as
//! `min_revision` at once, and without it within the staleness bound. Then
//! the same while loads race writes.
//!
//! One file on purpose, unlike the other e2e files (under ~600 lines): the
//! SQL reference, the world it reads, the write paths and the driver that
//! runs them are one model, each part read against the others.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use clef::pb::{self, DenialReason as R, Scope};
use sqlx::PgPool;
use tonic::Status;

use crate::{
    common::*,
    import::{import, opts},
};

/// xorshift64*: reproducible without another dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<T: Clone>(&mut self, from: &[T]) -> Option<T> {
        (!from.is_empty()).then(|| from[self.below(from.len())].clone())
    }
    /// A random subset of `from`, in its order.
    fn subset<T: Clone>(&mut self, from: &[T]) -> Vec<T> {
        from.iter()
            .filter(|_| self.below(2) == 0)
            .cloned()
            .collect()
    }
}

const ACCOUNTS: [&str; 3] = ["D1", "D2", "D3"];
/// The rights decisions are asked about; the tracking tools are scoped.
const RIGHTS: [&str; 4] = [
    "shipping.ws",
    "tracking.tool",
    "tracking.tool_cs",
    "tracking.ws",
];
const TRACKING: [&str; 2] = ["tracking.tool", "tracking.tool_cs"];
const TAGS: [&str; 3] = ["T1", "T2", "T3"];
const SCOPES: [Scope; 3] = [Scope::UserKey, Scope::UserTag, Scope::Consolidated];
/// How long a replica may take to reflect a change without `min_revision`
/// (the contract says 100 ms; the rest is slack for a busy CI machine).
const BOUND: Duration = Duration::from_millis(200);

/// How a decision names its subject.
#[derive(Debug, Clone)]
enum Subject {
    Key(String),
    Id(String),
    UserKey(String),
}

impl Subject {
    fn pb(&self) -> Option<pb::Subject> {
        match self {
            Subject::Key(k) => by_key(k),
            Subject::Id(i) => by_user(i),
            Subject::UserKey(k) => by_user_key(k),
        }
    }

    /// The reference's input columns: (key, user id, user key).
    fn columns(&self) -> (Option<String>, Option<String>, Option<String>) {
        match self {
            Subject::Key(k) => (Some(k.clone()), None, None),
            Subject::Id(i) => (None, Some(i.clone()), None),
            Subject::UserKey(k) => (None, None, Some(k.clone())),
        }
    }
}

/// One decision asked about: a Check, or a parcel's visibility.
#[derive(Debug, Clone)]
struct Ask {
    subject: Subject,
    account: String,
    right: &'static str,
    /// Parcels: the user key (stored form) and the tag it carries.
    parcel_key: Option<String>,
    parcel_tag: Option<String>,
}

/// (allowed or visible, reason, scope).
type Answer = (bool, R, Scope);
/// A visibility filter: its reason and its clauses, as text.
type Filter = (R, Vec<String>);

fn reason(s: &str) -> R {
    match s {
        "ALLOWED" => R::Unspecified,
        "UNKNOWN_SUBJECT" => R::UnknownSubject,
        "INACTIVE_USER" => R::InactiveUser,
        "UNKNOWN_ACCOUNT" => R::UnknownAccount,
        "NOT_LINKED" => R::NotLinked,
        "ACCOUNT_CLOSED" => R::AccountClosed,
        "NO_GRANT" => R::NoGrant,
        "EXPIRED_GRANT" => R::ExpiredGrant,
        "OUT_OF_SCOPE" => R::OutOfScope,
        other => panic!("reference gave {other:?}"),
    }
}

fn scope(s: Option<&str>) -> Scope {
    match s {
        None => Scope::Unspecified,
        Some("user_key") => Scope::UserKey,
        Some("user_tag") => Scope::UserTag,
        Some("consolidated") => Scope::Consolidated,
        Some(other) => panic!("unknown scope {other:?}"),
    }
}

/// The users a subject names, from the tables: by a live key (not revoked,
/// or revoked in the future during an overlap; not expired), id or user key.
const SUBJECT: &str = "LEFT JOIN LATERAL (
      SELECT k.user_id FROM connection_keys k
       WHERE k.secret_hash = sha256(convert_to(q.key, 'UTF8'))
         AND (k.revoked_at IS NULL OR k.revoked_at > now())
         AND (k.expires_at IS NULL OR k.expires_at > now())) k ON true
    LEFT JOIN users s ON s.id = k.user_id OR s.id = q.uid::uuid OR s.user_key = q.ukey";

/// The grant that answers for (`user`, `account`, `right`), as SQL: among
/// the user's direct grants and the rights of the roles he holds there
/// (read from the roles' definitions, not from the server's expansion), a
/// live one first, then the widest scope, then a direct one.
fn best(user: &str, account: &str, right: &str) -> String {
    format!(
        "(SELECT h.user_id, h.scope, h.expires_at FROM (
            SELECT g.user_id, g.scope, g.expires_at, false AS via FROM grants g
             WHERE g.user_id = {user} AND g.account_id = {account} AND g.right_code = {right}
            UNION ALL
            SELECT rg.user_id, e ->> 'scope', rg.expires_at, true
              FROM role_grants rg JOIN roles ro ON ro.id = rg.role_id
             CROSS JOIN LATERAL jsonb_array_elements(ro.rights) e
             WHERE rg.user_id = {user} AND rg.account_id = {account} AND e ->> 'right' = {right}) h
          ORDER BY (h.expires_at IS NULL OR h.expires_at > now()) DESC,
                   CASE h.scope WHEN 'user_tag' THEN 2 WHEN 'user_key' THEN 1 ELSE 3 END DESC, h.via
          LIMIT 1)"
    )
}

/// The scopes a filter shows for (`user`, `account`, `right`), as SQL rows
/// (scope, expires_at): `consolidated` alone when any live source is
/// unscoped or consolidated, else each of `user_key` and `user_tag` held
/// live by some source (read from the roles' definitions).
fn live_scopes(user: &str, account: &str, right: &str) -> String {
    let held = format!(
        "(SELECT COALESCE(g.scope, 'consolidated') AS scope FROM grants g
           WHERE g.user_id = {user} AND g.account_id = {account} AND g.right_code = {right}
             AND (g.expires_at IS NULL OR g.expires_at > now())
          UNION
          SELECT COALESCE(e ->> 'scope', 'consolidated') FROM role_grants rg JOIN roles ro ON ro.id = rg.role_id
           CROSS JOIN LATERAL jsonb_array_elements(ro.rights) e
           WHERE rg.user_id = {user} AND rg.account_id = {account} AND e ->> 'right' = {right}
             AND (rg.expires_at IS NULL OR rg.expires_at > now()))"
    );
    format!(
        "(SELECT h.scope, NULL::timestamptz AS expires_at FROM {held} h
           WHERE h.scope = 'consolidated'
              OR NOT EXISTS (SELECT 1 FROM {held} x WHERE x.scope = 'consolidated'))"
    )
}

/// Whether (`user`, `account`, `right`) is held live with scope `user_key`
/// by any source: a parcel franked with his key is his to see even when a
/// wider grant does not show it.
fn keyed(user: &str, account: &str, right: &str) -> String {
    format!(
        "(EXISTS (SELECT 1 FROM grants g WHERE g.user_id = {user} AND g.account_id = {account}
                     AND g.right_code = {right} AND g.scope = 'user_key'
                     AND (g.expires_at IS NULL OR g.expires_at > now()))
          OR EXISTS (SELECT 1 FROM role_grants rg JOIN roles ro ON ro.id = rg.role_id
                     CROSS JOIN LATERAL jsonb_array_elements(ro.rights) e
                     WHERE rg.user_id = {user} AND rg.account_id = {account}
                       AND e ->> 'right' = {right} AND e ->> 'scope' = 'user_key'
                       AND (rg.expires_at IS NULL OR rg.expires_at > now())))"
    )
}

/// The reference for Check (`parcels` false) or CheckParcelVisibility: one
/// SQL statement over every ask, straight from the tables. A parcel is
/// visible under a grant of scope `consolidated` always, `user_tag` when it
/// carries one of the user's tags on that account, `user_key` when it
/// carries the user's own key.
async fn reference(pool: &PgPool, parcels: bool, asks: &[Ask]) -> Vec<Answer> {
    let mut cols: [Vec<Option<String>>; 7] = Default::default();
    for a in asks {
        let (key, uid, ukey) = a.subject.columns();
        cols[0].push(key);
        cols[1].push(uid);
        cols[2].push(ukey);
        cols[3].push(Some(a.account.clone()));
        cols[4].push(Some(a.right.to_owned()));
        cols[5].push(a.parcel_key.clone());
        cols[6].push(a.parcel_tag.clone());
    }
    let best = best("s.id", "a.id", "q.right_code");
    let keyed = keyed("s.id", "a.id", "q.right_code");
    let sql = format!(
        r#"WITH q AS (
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
                      WITH ORDINALITY AS q(key, uid, ukey, account, right_code, pkey, ptag, n)),
           d AS (
             SELECT q.n, q.pkey, q.ptag, s.user_key, l.tags, g.scope, {keyed} AS keyed, CASE
                 WHEN s.id IS NULL THEN 'UNKNOWN_SUBJECT'
                 WHEN s.status <> 'active' THEN 'INACTIVE_USER'
                 WHEN a.id IS NULL THEN 'UNKNOWN_ACCOUNT'
                 WHEN l.user_id IS NULL THEN 'NOT_LINKED'
                 WHEN a.status = 'closed' THEN 'ACCOUNT_CLOSED'
                 WHEN g.user_id IS NULL THEN 'NO_GRANT'
                 WHEN g.expires_at <= now() THEN 'EXPIRED_GRANT'
                 ELSE 'ALLOWED' END AS reason
               FROM q
               {SUBJECT}
               LEFT JOIN accounts a ON a.code = q.account
               LEFT JOIN links l ON l.user_id = s.id AND l.account_id = a.id
               LEFT JOIN LATERAL {best} g ON true),
           v AS (
             SELECT d.*, scope IS NULL OR scope = 'consolidated'
                         OR (scope = 'user_tag' AND ptag = ANY (tags))
                         OR (scope = 'user_key' AND pkey = user_key) AS shown_by_best
               FROM d)
         SELECT CASE
                  WHEN reason <> 'ALLOWED' OR NOT $8 THEN reason
                  WHEN shown_by_best THEN 'ALLOWED'
                  WHEN keyed AND pkey = user_key THEN 'ALLOWED'
                  ELSE 'OUT_OF_SCOPE' END,
                CASE WHEN reason <> 'ALLOWED' THEN NULL
                     WHEN $8 AND NOT shown_by_best AND keyed AND pkey = user_key THEN 'user_key'
                     ELSE scope END
           FROM v ORDER BY n"#
    );
    let [c0, c1, c2, c3, c4, c5, c6] = cols;
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(&sql)
        .bind(c0)
        .bind(c1)
        .bind(c2)
        .bind(c3)
        .bind(c4)
        .bind(c5)
        .bind(c6)
        .bind(parcels)
        .fetch_all(pool)
        .await
        .expect("reference query");
    assert_eq!(rows.len(), asks.len());
    rows.iter()
        .map(|(r, s)| (r == "ALLOWED", reason(r), scope(s.as_deref())))
        .collect()
}

fn clause_text(code: &str, scope: Scope, all: bool, user_key: &str, tags: &[String]) -> String {
    format!("{code} {scope:?} all={all} key={user_key:?} tags={tags:?}")
}

/// The reference for VisibilityFilter: per account the subject is linked
/// to, not closed, where he holds the right unexpired, in code order:
/// everything (`consolidated`), his own key (`user_key`, displayed
/// `XXXX-XXXX-XXXX`), or his tags there (`user_tag`); accounts where he
/// sees nothing are left out. Nothing for an unknown or inactive subject.
async fn reference_filters(pool: &PgPool, asks: &[(Subject, &'static str)]) -> Vec<Filter> {
    let mut cols: [Vec<Option<String>>; 4] = Default::default();
    for (subject, right) in asks {
        let (key, uid, ukey) = subject.columns();
        cols[0].push(key);
        cols[1].push(uid);
        cols[2].push(ukey);
        cols[3].push(Some(right.to_string()));
    }
    let live = live_scopes("l.user_id", "l.account_id", "w.right_code");
    let sql = format!(
        r#"WITH q AS (
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
                      WITH ORDINALITY AS q(key, uid, ukey, right_code, n)),
           w AS (SELECT q.n, q.right_code, s.id, s.status, s.user_key FROM q {SUBJECT})
         SELECT w.n, CASE WHEN w.id IS NULL THEN 'UNKNOWN_SUBJECT'
                          WHEN w.status <> 'active' THEN 'INACTIVE_USER'
                          ELSE 'ALLOWED' END,
                c.code, c.scope, c.user_key, c.tags
           FROM w LEFT JOIN LATERAL (
             SELECT a.code, COALESCE(g.scope, 'consolidated') AS scope,
                    CASE WHEN g.scope = 'user_key'
                         THEN substr(w.user_key, 1, 4) || '-' || substr(w.user_key, 5, 4) || '-' || substr(w.user_key, 9, 4)
                         ELSE '' END AS user_key,
                    CASE WHEN g.scope = 'user_tag' THEN l.tags ELSE '{{}}' END AS tags
               FROM links l
               JOIN accounts a ON a.id = l.account_id
               JOIN LATERAL {live} g ON true
              WHERE l.user_id = w.id AND w.status = 'active' AND a.status <> 'closed'
                AND (g.expires_at IS NULL OR g.expires_at > now())
                AND (g.scope IS DISTINCT FROM 'user_key' OR w.user_key IS NOT NULL)
                AND (g.scope IS DISTINCT FROM 'user_tag' OR cardinality(l.tags) > 0)) c ON true
          ORDER BY w.n, c.code COLLATE "C", c.scope"#
    );
    let [c0, c1, c2, c3] = cols;
    type Row = (
        i64,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<Vec<String>>,
    );
    let rows: Vec<Row> = sqlx::query_as(&sql)
        .bind(c0)
        .bind(c1)
        .bind(c2)
        .bind(c3)
        .fetch_all(pool)
        .await
        .expect("filter reference query");
    let mut out: Vec<Filter> = Vec::new();
    for (n, r, code, s, user_key, tags) in rows {
        if out.len() < n as usize {
            out.push((reason(&r), Vec::new()));
        }
        if let Some(code) = code {
            let s = scope(s.as_deref());
            out[n as usize - 1].1.push(clause_text(
                &code,
                s,
                s == Scope::Consolidated,
                &user_key.unwrap_or_default(),
                &tags.unwrap_or_default(),
            ));
        }
    }
    assert_eq!(out.len(), asks.len());
    out
}

/// What every replica is asked after a step.
struct Probe {
    checks: Vec<Ask>,
    parcels: Vec<Ask>,
    filters: Vec<(Subject, &'static str)>,
}

/// Answers to a probe, from a replica or from the reference.
#[derive(Debug, PartialEq)]
struct Answers {
    checks: Vec<Answer>,
    parcels: Vec<Answer>,
    filters: Vec<Filter>,
    /// The lowest revision a replica's answers were at (0: the reference).
    revision: i64,
}

impl Answers {
    fn len(&self) -> usize {
        self.checks.len() + self.parcels.len() + self.filters.len()
    }
}

async fn expected(pool: &PgPool, p: &Probe) -> Answers {
    Answers {
        checks: reference(pool, false, &p.checks).await,
        parcels: reference(pool, true, &p.parcels).await,
        filters: reference_filters(pool, &p.filters).await,
        revision: 0,
    }
}

fn answer(allowed: bool, r: i32, s: i32) -> Answer {
    (
        allowed,
        R::try_from(r).expect("a known reason"),
        Scope::try_from(s).expect("a known scope"),
    )
}

/// A replica, as the decision callers see it.
struct Replica {
    name: &'static str,
    /// One connection for the CheckBatch calls, one for the others: a
    /// large answer can hold its connection up for tens of milliseconds
    /// (Nagle's algorithm on the server's side, delayed acknowledgements on
    /// ours), while the calls on the other go on.
    batches: AuthzClient,
    calls: AuthzClient,
}

impl Replica {
    async fn new(app: &TestApp, name: &'static str) -> Replica {
        let key = app.service_key(&format!("differential-{name}")).await;
        Replica {
            name,
            batches: app.authz(&key).await,
            calls: app.authz(&key).await,
        }
    }
}

/// Asks a replica the whole probe.
async fn observe(replica: &Replica, p: &Probe, min_revision: i64) -> Answers {
    let requests: Vec<pb::CheckBatchRequest> = p
        .checks
        .chunks(1000)
        .map(|chunk| pb::CheckBatchRequest {
            checks: chunk
                .iter()
                .map(|a| pb::CheckRequest {
                    subject: a.subject.pb(),
                    account_code: a.account.clone(),
                    right: a.right.into(),
                    min_revision,
                })
                .collect(),
        })
        .collect();
    let mut batches = replica.batches.clone();
    let batch = tokio::spawn(async move {
        let mut results = Vec::new();
        for r in requests {
            let answer = batches.check_batch(r).await.expect("check batch");
            results.extend(answer.into_inner().results);
        }
        results
    });
    let d = &replica.calls;
    let mut revision = i64::MAX;
    let mut parcels = Vec::new();
    for a in &p.parcels {
        let r = d
            .clone()
            .check_parcel_visibility(pb::CheckParcelVisibilityRequest {
                subject: a.subject.pb(),
                right: a.right.into(),
                parcel: Some(pb::Parcel {
                    account_code: a.account.clone(),
                    user_key: a.parcel_key.clone().unwrap_or_default(),
                    tag: a.parcel_tag.clone().unwrap_or_default(),
                }),
                min_revision,
            })
            .await
            .expect("parcel visibility")
            .into_inner();
        revision = revision.min(r.revision);
        parcels.push(answer(r.visible, r.reason, r.scope_used));
    }
    let mut filters = Vec::new();
    for (subject, right) in &p.filters {
        let mut stream = d
            .clone()
            .visibility_filter(pb::VisibilityFilterRequest {
                subject: subject.pb(),
                right: right.to_string(),
                min_revision,
            })
            .await
            .expect("visibility filter")
            .into_inner();
        let mut why = R::Unspecified;
        let mut clauses = Vec::new();
        while let Some(m) = stream.message().await.expect("filter chunk") {
            revision = revision.min(m.revision);
            why = R::try_from(m.reason).expect("a known reason");
            for c in m.clauses {
                let s = Scope::try_from(c.scope).expect("a known scope");
                clauses.push(clause_text(&c.account_code, s, c.all, &c.user_key, &c.tags));
            }
        }
        filters.push((why, clauses));
    }
    let checks = batch
        .await
        .expect("check batch task")
        .into_iter()
        .map(|r| {
            revision = revision.min(r.revision);
            answer(r.allowed, r.reason, r.scope)
        })
        .collect();
    Answers {
        checks,
        parcels,
        filters,
        revision,
    }
}

/// The first answer that differs, described.
fn difference(p: &Probe, want: &Answers, got: &Answers) -> Option<String> {
    let lengths = |a: &Answers| (a.checks.len(), a.parcels.len(), a.filters.len());
    if lengths(want) != lengths(got) {
        return Some(format!(
            "{:?} answers to a probe of {:?}",
            lengths(got),
            lengths(want)
        ));
    }
    let asks = p.checks.iter().map(|a| ("check", a));
    let parcels = p.parcels.iter().map(|a| ("parcel", a));
    let answers = want.checks.iter().chain(&want.parcels);
    let gots = got.checks.iter().chain(&got.parcels);
    for (((what, a), w), g) in asks.chain(parcels).zip(answers).zip(gots) {
        if w != g {
            return Some(format!(
                "{what} {:?} on {} for {} (parcel key {:?}, tag {:?}): replica says {g:?}, tables say {w:?}",
                a.subject, a.account, a.right, a.parcel_key, a.parcel_tag
            ));
        }
    }
    for (((subject, right), w), g) in p.filters.iter().zip(&want.filters).zip(&got.filters) {
        if w != g {
            return Some(format!(
                "visibility filter {subject:?} for {right}: replica says {g:?}, tables say {w:?}"
            ));
        }
    }
    None
}

/// Asks a replica without `min_revision` until it answers as the tables
/// do; the difference it still shows once the bound has passed since the
/// write, if any.
async fn settle(
    replica: &Replica,
    p: &Probe,
    want: &Answers,
    written_at: Instant,
) -> Result<usize, String> {
    loop {
        let late = written_at.elapsed() >= BOUND;
        let got = observe(replica, p, 0).await;
        match difference(p, want, &got) {
            None => return Ok(got.len()),
            Some(diff) if late => return Err(diff),
            Some(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// The revision a replica has applied every change up to: a Check by a
/// malformed key is answered without loading anything.
async fn seen(d: &AuthzClient) -> i64 {
    check(
        &mut d.clone(),
        by_key("not-a-key"),
        ACCOUNTS[0],
        RIGHTS[0],
        0,
    )
    .await
    .revision
}

/// What decisions read, as the tables hold it.
#[derive(Debug, Clone, PartialEq, Default)]
struct World {
    /// (user, account code) → tags.
    links: BTreeMap<(String, String), Vec<String>>,
    /// (user, account code, right) → scope and expiry.
    grants: BTreeMap<(String, String, String), String>,
    /// Users (not operators or services) → status.
    status: BTreeMap<String, String>,
    /// Key id → (user, revoked_at, live).
    keys: BTreeMap<String, (String, String, bool)>,
    /// Account code → status.
    accounts: BTreeMap<String, String>,
}

impl World {
    async fn read(pool: &PgPool) -> World {
        let links: Vec<(String, String, Vec<String>)> = sqlx::query_as(
            "SELECT l.user_id::text, a.code, l.tags FROM links l JOIN accounts a ON a.id = l.account_id",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        let grants: Vec<(String, String, String, String)> = sqlx::query_as(
            "SELECT g.user_id::text, a.code, g.right_code, concat_ws(' ', g.scope, g.expires_at::text)
               FROM grants g JOIN accounts a ON a.id = g.account_id
             UNION ALL
             SELECT rg.user_id::text, a.code, (e ->> 'right') || ' via ' || ro.code,
                    concat_ws(' ', e ->> 'scope', rg.expires_at::text)
               FROM role_grants rg JOIN accounts a ON a.id = rg.account_id JOIN roles ro ON ro.id = rg.role_id
              CROSS JOIN LATERAL jsonb_array_elements(ro.rights) e",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        let status: Vec<(String, String)> = sqlx::query_as(
            "SELECT id::text, status FROM users WHERE kind IN ('standard', 'advanced')",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        let keys: Vec<(String, String, String, bool)> = sqlx::query_as(
            "SELECT k.id::text, k.user_id::text, COALESCE(k.revoked_at::text, ''),
                    (k.revoked_at IS NULL OR k.revoked_at > now()) AND (k.expires_at IS NULL OR k.expires_at > now())
               FROM connection_keys k JOIN users u ON u.id = k.user_id
              WHERE u.kind IN ('standard', 'advanced')",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        let accounts: Vec<(String, String)> = sqlx::query_as("SELECT code, status FROM accounts")
            .fetch_all(pool)
            .await
            .unwrap();
        World {
            links: links.into_iter().map(|(u, a, t)| ((u, a), t)).collect(),
            grants: grants
                .into_iter()
                .map(|(u, a, r, s)| ((u, a, r), s))
                .collect(),
            status: status.into_iter().collect(),
            keys: keys
                .into_iter()
                .map(|(k, u, r, live)| (k, (u, r, live)))
                .collect(),
            accounts: accounts.into_iter().collect(),
        }
    }

    fn status(&self, user: &str) -> &str {
        self.status.get(user).map_or("", String::as_str)
    }

    fn active(&self, user: &str) -> bool {
        self.status(user) == "active"
    }

    fn open(&self, code: &str) -> bool {
        self.accounts.get(code).is_some_and(|s| s == "active")
    }

    fn open_accounts(&self) -> Vec<String> {
        ACCOUNTS
            .iter()
            .filter(|c| self.open(c))
            .map(|c| c.to_string())
            .collect()
    }

    fn linked(&self, user: &str, code: &str) -> bool {
        self.links.contains_key(&(user.to_owned(), code.to_owned()))
    }

    /// His direct grants, as (account, right).
    fn grants_of(&self, user: &str) -> Vec<(String, String)> {
        self.grants
            .keys()
            .filter(|(u, _, r)| u == user && !r.contains(" via "))
            .map(|(_, a, r)| (a.clone(), r.clone()))
            .collect()
    }

    /// Whether the user holds a tracking right scoped to his tags there.
    fn tags_matter(&self, user: &str, code: &str) -> bool {
        self.grants
            .iter()
            .any(|((u, a, _), s)| u == user && a == code && s.starts_with("user_tag"))
    }

    /// The users whose decisions may differ between `self` and `after`:
    /// those whose links, tags, grants, status or keys changed, and those
    /// linked to an account that was closed or reopened.
    fn touched(&self, after: &World) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (code, status) in &after.accounts {
            if self.accounts.get(code) != Some(status) {
                out.extend(
                    after
                        .links
                        .keys()
                        .filter(|(_, a)| a == code)
                        .map(|(u, _)| u.clone()),
                );
            }
        }
        for (u, a) in self.links.keys().chain(after.links.keys()) {
            let k = (u.clone(), a.clone());
            if self.links.get(&k) != after.links.get(&k) {
                out.insert(u.clone());
            }
        }
        for ((u, a, r), _) in self.grants.iter().chain(&after.grants) {
            let k = (u.clone(), a.clone(), r.clone());
            if self.grants.get(&k) != after.grants.get(&k) {
                out.insert(u.clone());
            }
        }
        for (u, _) in self.status.iter().chain(&after.status) {
            if self.status.get(u) != after.status.get(u) {
                out.insert(u.clone());
            }
        }
        for (k, (u, _, _)) in self.keys.iter().chain(&after.keys) {
            if self.keys.get(k) != after.keys.get(k) {
                out.insert(u.clone());
            }
        }
        out
    }

    fn live_keys(&self, user: &str) -> Vec<String> {
        self.keys
            .iter()
            .filter(|(_, (u, _, live))| u == user && *live)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// What changed from `self` to `after`.
    fn changes(&self, after: &World) -> BTreeSet<&'static str> {
        let mut out = BTreeSet::new();
        if after.status.keys().any(|u| !self.status.contains_key(u)) {
            out.insert("users");
        }
        if !self.links.keys().eq(after.links.keys()) {
            out.insert("links");
        }
        if self
            .links
            .iter()
            .any(|(k, t)| after.links.get(k).is_some_and(|t2| t2 != t))
        {
            out.insert("tags");
        }
        fn part(w: &World, via: bool) -> Vec<(&(String, String, String), &String)> {
            w.grants
                .iter()
                .filter(|((_, _, r), _)| r.contains(" via ") == via)
                .collect()
        }
        if part(self, false) != part(after, false) {
            out.insert("grants");
        }
        if part(self, true) != part(after, true) {
            out.insert("roles");
        }
        if self
            .status
            .iter()
            .any(|(u, s)| after.status.get(u).is_some_and(|s2| s2 != s))
        {
            out.insert("status");
        }
        if self.keys != after.keys {
            out.insert("keys");
        }
        if self.accounts != after.accounts {
            out.insert("accounts");
        }
        out
    }
}

/// A user of the test, as clef showed him.
struct Person {
    id: String,
    /// Advanced users: the stored form (undashed, upper case).
    user_key: Option<String>,
    /// The secrets of his keys that were shown, oldest first.
    keys: Vec<String>,
    first: String,
    last: String,
    email: String,
    login: String,
}

impl Person {
    /// Reads a new user's names and user key back.
    async fn read(pool: &PgPool, id: &str, key: Option<String>) -> Person {
        let (user_key, first, last, email, login): (Option<String>, String, String, String, String) =
            sqlx::query_as(
                "SELECT user_key, first_name, last_name, COALESCE(email, ''), login FROM users WHERE id = $1::uuid",
            )
            .bind(id)
            .fetch_one(pool)
            .await
            .unwrap();
        Person {
            id: id.to_owned(),
            user_key,
            keys: key.into_iter().filter(|k| !k.is_empty()).collect(),
            first,
            last,
            email,
            login,
        }
    }

    /// Every form a decision may name him by: id, user key, and his two
    /// latest keys (the previous one may live on during an overlap).
    fn subjects(&self) -> Vec<Subject> {
        let mut out = vec![Subject::Id(self.id.clone())];
        out.extend(self.user_key.clone().map(Subject::UserKey));
        out.extend(self.keys.iter().rev().take(2).cloned().map(Subject::Key));
        out
    }
}

/// The write paths, in the order a round runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    CreateUser,
    Link,
    Grant,
    UpdateTags,
    ImportAdd,
    SetRights,
    DeactivateUser,
    RegenerateWithOverlap,
    CloseAccount,
    GrantAcrossAccounts,
    ReactivateUser,
    Revoke,
    ImportSync,
    DeactivateUsers,
    ReopenAccount,
    Regenerate,
    Unlink,
    RevokeConnectionKey,
    RevokeEverywhere,
    ArchiveUser,
    GrantRole,
    EditRole,
    RevokeRole,
}

const ROUND: [Op; 23] = [
    Op::CreateUser,
    Op::Link,
    Op::Grant,
    Op::UpdateTags,
    Op::ImportAdd,
    Op::SetRights,
    Op::DeactivateUser,
    Op::RegenerateWithOverlap,
    Op::CloseAccount,
    Op::GrantAcrossAccounts,
    Op::ReactivateUser,
    Op::Revoke,
    Op::ImportSync,
    Op::DeactivateUsers,
    Op::ReopenAccount,
    Op::Regenerate,
    Op::Unlink,
    Op::RevokeConnectionKey,
    Op::RevokeEverywhere,
    Op::ArchiveUser,
    Op::GrantRole,
    Op::EditRole,
    Op::RevokeRole,
];

impl Op {
    /// What each must have changed at least once over the run.
    fn changes(self) -> &'static [&'static str] {
        match self {
            Op::CreateUser => &["users", "links", "grants", "keys"],
            Op::Link | Op::Unlink => &["links"],
            Op::UpdateTags => &["tags"],
            Op::Grant | Op::Revoke | Op::SetRights | Op::RevokeEverywhere => &["grants"],
            Op::GrantAcrossAccounts => &["users", "links", "grants"],
            Op::DeactivateUser | Op::DeactivateUsers | Op::ArchiveUser | Op::ReactivateUser => {
                &["status"]
            }
            Op::Regenerate | Op::RegenerateWithOverlap | Op::RevokeConnectionKey => &["keys"],
            Op::CloseAccount | Op::ReopenAccount => &["accounts"],
            Op::ImportAdd => &["users", "links", "tags", "grants", "status"],
            Op::ImportSync => &["links", "tags", "grants", "status"],
            Op::GrantRole | Op::EditRole | Op::RevokeRole => &["roles"],
        }
    }
}

/// A random grant of one right (a scope for the tracking tools; now and
/// then an expiry a day away).
fn random_grant(rng: &mut Rng, code: &str) -> pb::RightGrant {
    let mut g = if TRACKING.contains(&code) {
        scoped(code, SCOPES[rng.below(SCOPES.len())])
    } else {
        right(code)
    };
    if rng.below(4) == 0 {
        g.expire_time = Some(prost_types::Timestamp {
            seconds: chrono::Utc::now().timestamp() + 86_400,
            nanos: 0,
        });
    }
    g
}

fn random_grants(rng: &mut Rng, at_least: usize) -> Vec<pb::RightGrant> {
    let mut codes = rng.subset(&RIGHTS);
    while codes.len() < at_least {
        let c = RIGHTS[rng.below(RIGHTS.len())];
        if !codes.contains(&c) {
            codes.push(c);
        }
    }
    codes.into_iter().map(|c| random_grant(rng, c)).collect()
}

/// The roles of the scenario, defined at its start and redefined by
/// `EditRole`.
const ROLES: [&str; 2] = ["d.alpha", "d.beta"];

/// A definition of `code` with these rights (their expiries left out).
fn role_definition(code: &str, rights: Vec<pb::RightGrant>) -> pb::DefineRoleRequest {
    pb::DefineRoleRequest {
        role: Some(pb::Role {
            code: code.into(),
            label_fr: format!("Rôle {code}"),
            label_en: format!("Role {code}"),
            kinds: vec!["standard".into(), "advanced".into()],
            rights: rights
                .into_iter()
                .map(|g| pb::RoleRight {
                    right: g.right,
                    scope: g.scope,
                })
                .collect(),
            revision: 0,
        }),
    }
}

async fn roles_client(
    app: &TestApp,
) -> pb::role_service_client::RoleServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
> {
    pb::role_service_client::RoleServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(&app.operator_key)),
    )
}

fn tags(from: &[&str]) -> Vec<String> {
    from.iter().map(|t| t.to_string()).collect()
}

/// The import files' header: every profile column an advanced user needs,
/// the standard users' login, the user key, the status, the tags, and one
/// column per right asked about.
const IMPORT_HEADER: &str = "TYPE;IDENTIFIANT;CLE UTILISATEUR;ETAT;NOM;PRENOM;FONCTION;EMAIL;TELEPHONE;ADRESSE;CODE POSTAL;VILLE;TAG;shipping.ws;tracking.tool;tracking.tool_cs;tracking.ws";

/// Right cells at random (`non` half of the time), or all `non`.
fn right_cells(rng: &mut Rng, none: bool) -> String {
    RIGHTS
        .iter()
        .map(|r| match (none, TRACKING.contains(r)) {
            (true, _) => "non",
            (false, true) => ["non", "non", "non", "cle", "tag", "consolide"][rng.below(6)],
            (false, false) => ["oui", "non"][rng.below(2)],
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// The ids of the users where `keep` holds.
fn ids(people: &[Person], keep: impl Fn(&Person) -> bool) -> Vec<String> {
    people
        .iter()
        .filter(|p| keep(p))
        .map(|p| p.id.clone())
        .collect()
}

/// (user, account) pairs where `keep` holds, over the test's accounts.
fn pairs(people: &[Person], keep: impl Fn(&Person, &str) -> bool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in people {
        for a in ACCOUNTS {
            if keep(p, a) {
                out.push((p.id.clone(), a.to_owned()));
            }
        }
    }
    out
}

/// The whole state of the scenario: its users and its randomness.
struct Scenario {
    people: Vec<Person>,
    rng: Rng,
    created: usize,
    /// Users deactivated by syncs, over the run.
    sync_deactivated: usize,
}

impl Scenario {
    fn person(&self, id: &str) -> &Person {
        self.people.iter().find(|p| p.id == id).expect("a person")
    }

    /// One import line for an existing user: random tags and rights; a
    /// deactivated user is reactivated (and may not receive rights), an
    /// active one now and then deactivated.
    fn import_line(&mut self, world: &World, id: &str) -> String {
        let inactive = !world.active(id);
        let status = if inactive {
            "actif"
        } else {
            ["", "", "actif", "désactivé"][self.rng.below(4)]
        };
        let tags = self.rng.subset(&TAGS).join(", ");
        let cells = right_cells(&mut self.rng, inactive);
        let p = self.person(id);
        match &p.user_key {
            Some(key) => format!(
                "avancé;;{key};{status};{};{};Logisticien;{};+33 1 23 45 67 89;12 rue de la Gare;88000;Épinal;{tags};{cells}",
                p.last, p.first, p.email
            ),
            None => format!(
                "standard;{};;{status};{};{};;;;;;;{tags};{cells}",
                p.login, p.last, p.first
            ),
        }
    }

    /// Runs one write; `None` when no user or account fits it.
    async fn write(
        &mut self,
        op: Op,
        round: usize,
        app: &TestApp,
        w: &mut Clients,
        world: &World,
    ) -> Option<Result<i64, Status>> {
        let pool = app.store.pool().clone();
        let open = world.open_accounts();
        let active = ids(&self.people, |p| world.active(&p.id));
        let result = match op {
            Op::CreateUser => {
                let n = self.created;
                self.created += 1;
                let account = self.rng.pick(&open)?;
                let user = if n.is_multiple_of(2) {
                    advanced(&format!("New{n}"), "Diff", &format!("new{n}@example.com"))
                } else {
                    standard(&format!("New{n}"), "Diff")
                };
                let tags = tags(&self.rng.subset(&TAGS));
                let rights = random_grants(&mut self.rng, 1);
                match w
                    .users
                    .create_user(pb::CreateUserRequest {
                        user: Some(user),
                        account_code: account,
                        tags,
                        rights,
                        request_id: String::new(),
                    })
                    .await
                {
                    Ok(r) => {
                        let r = r.into_inner();
                        let u = r.user.expect("user");
                        self.people
                            .push(Person::read(&pool, &u.id, Some(r.connection_key)).await);
                        Ok(u.revision)
                    }
                    Err(e) => Err(e),
                }
            }
            Op::Link => {
                let (id, account) = self.rng.pick(&pairs(&self.people, |p, a| {
                    p.user_key.is_some()
                        && world.active(&p.id)
                        && world.open(a)
                        && !world.linked(&p.id, a)
                }))?;
                let rights = if self.rng.below(2) == 0 {
                    random_grants(&mut self.rng, 1)
                } else {
                    vec![]
                };
                let tags = tags(&self.rng.subset(&TAGS));
                w.links
                    .link_user(pb::LinkUserRequest {
                        account_code: account,
                        user_key: self.person(&id).user_key.clone().expect("a user key"),
                        tags,
                        rights,
                    })
                    .await
                    .map(|r| r.into_inner().link.expect("link").revision)
            }
            Op::UpdateTags => {
                // Preferably where a user_tag grant makes the tags matter.
                let linked = pairs(&self.people, |p, a| {
                    world.status(&p.id) != "archived" && world.open(a) && world.linked(&p.id, a)
                });
                let telling: Vec<(String, String)> = linked
                    .iter()
                    .filter(|(u, a)| world.tags_matter(u, a))
                    .cloned()
                    .collect();
                let (id, account) = self.rng.pick(&telling).or_else(|| self.rng.pick(&linked))?;
                let before = world.links[&(id.clone(), account.clone())].clone();
                let mut new = tags(&self.rng.subset(&TAGS));
                while new == before {
                    new = tags(&self.rng.subset(&TAGS));
                }
                w.links
                    .update_link_tags(pb::UpdateLinkTagsRequest {
                        account_code: account,
                        user_id: id,
                        tags: new,
                    })
                    .await
                    .map(|r| r.into_inner().revision)
            }
            Op::Unlink => {
                // Every other round a link without grants: then the link
                // alone says that anything changed.
                let linked = pairs(&self.people, |p, a| {
                    p.user_key.is_some() && world.open(a) && world.linked(&p.id, a)
                });
                let bare: Vec<(String, String)> = linked
                    .iter()
                    .filter(|(u, a)| !world.grants_of(u).iter().any(|(g, _)| g == a))
                    .cloned()
                    .collect();
                let bare = if round.is_multiple_of(2) {
                    bare
                } else {
                    vec![]
                };
                let (id, account) = self.rng.pick(&bare).or_else(|| self.rng.pick(&linked))?;
                w.links
                    .unlink_user(pb::UnlinkUserRequest {
                        account_code: account,
                        user_id: id,
                    })
                    .await
                    .map(|r| r.into_inner().revision)
            }
            Op::Grant | Op::SetRights => {
                let (id, account) = self.rng.pick(&pairs(&self.people, |p, a| {
                    world.active(&p.id) && world.open(a) && world.linked(&p.id, a)
                }))?;
                if op == Op::Grant {
                    let rights = random_grants(&mut self.rng, 1);
                    w.grants
                        .grant_rights(pb::GrantRightsRequest {
                            account_code: account,
                            user_id: id,
                            rights,
                        })
                        .await
                        .map(|r| r.into_inner().revision)
                } else {
                    let rights = random_grants(&mut self.rng, 0);
                    w.grants
                        .set_rights(pb::SetRightsRequest {
                            account_code: account,
                            user_id: id,
                            rights,
                        })
                        .await
                        .map(|r| r.into_inner().revision)
                }
            }
            Op::Revoke => {
                // In the order of the users (ids are random: the run stays
                // the same from one time to the next).
                let held: Vec<(String, String, String)> = self
                    .people
                    .iter()
                    .flat_map(|p| {
                        world
                            .grants_of(&p.id)
                            .into_iter()
                            .filter(|(a, _)| world.open(a))
                            .map(|(a, r)| (p.id.clone(), a, r))
                    })
                    .collect();
                let (id, account, code) = self.rng.pick(&held)?;
                // And another of his rights there, now and then.
                let more = self.rng.below(2);
                let mut rights: Vec<String> = held
                    .iter()
                    .filter(|(u, a, r)| u == &id && a == &account && r != &code)
                    .take(more)
                    .map(|(_, _, r)| r.clone())
                    .collect();
                rights.push(code);
                w.grants
                    .revoke_rights(pb::RevokeRightsRequest {
                        account_code: account,
                        user_id: id,
                        rights,
                    })
                    .await
                    .map(|r| r.into_inner().revision)
            }
            Op::GrantAcrossAccounts => {
                let mut accounts = self.rng.subset(&open);
                if accounts.len() < 2 {
                    accounts = open.clone();
                }
                if accounts.is_empty() {
                    return None;
                }
                let rights = random_grants(&mut self.rng, 1);
                let new = round == 0;
                let user = if new {
                    Some(pb::user_selector::By::NewUser(pb::NewUserProfile {
                        last_name: "Across".into(),
                        first_name: "Partner".into(),
                        job_title: "Logisticien".into(),
                        email: "across@example.com".into(),
                        phone: "+33 1 23 45 67 89".into(),
                        address_lines: vec!["12 rue de la Gare".into()],
                        postal_code: "88000".into(),
                        city: "Épinal".into(),
                        ..Default::default()
                    }))
                } else {
                    let id = self.rng.pick(&ids(&self.people, |p| {
                        p.user_key.is_some() && world.active(&p.id)
                    }))?;
                    let p = self.person(&id);
                    Some(if round.is_multiple_of(2) {
                        pb::user_selector::By::Id(id)
                    } else {
                        pb::user_selector::By::UserKey(p.user_key.clone().expect("a user key"))
                    })
                };
                match w
                    .grants
                    .grant_across_accounts(pb::GrantAcrossAccountsRequest {
                        user: Some(pb::UserSelector { by: user }),
                        account_codes: accounts,
                        rights,
                    })
                    .await
                {
                    Ok(r) => {
                        let r = r.into_inner();
                        if new {
                            self.people.push(
                                Person::read(&pool, &r.user_id, Some(r.connection_key)).await,
                            );
                        }
                        Ok(r.revision)
                    }
                    Err(e) => Err(e),
                }
            }
            Op::RevokeEverywhere => {
                let id = self
                    .rng
                    .pick(&ids(&self.people, |p| !world.grants_of(&p.id).is_empty()))?;
                w.grants
                    .revoke_everywhere(pb::RevokeEverywhereRequest {
                        user: Some(pb::UserSelector {
                            by: Some(pb::user_selector::By::Id(id)),
                        }),
                    })
                    .await
                    .map(|r| r.into_inner().revision)
            }
            Op::GrantRole => {
                let (id, account) = self.rng.pick(&pairs(&self.people, |p, a| {
                    world.active(&p.id) && world.open(a) && world.linked(&p.id, a)
                }))?;
                let role = ROLES[self.rng.below(ROLES.len())];
                let expire_time = (self.rng.below(4) == 0).then(|| prost_types::Timestamp {
                    seconds: chrono::Utc::now().timestamp() + 86_400,
                    nanos: 0,
                });
                roles_client(app)
                    .await
                    .grant_role(pb::GrantRoleRequest {
                        account_code: account,
                        user_id: id,
                        role: role.into(),
                        expire_time,
                    })
                    .await
                    .map(|r| r.into_inner().revision)
            }
            Op::EditRole => {
                // A role someone holds, so that the edit changes decisions.
                let held: BTreeSet<&str> = world
                    .grants
                    .keys()
                    .filter_map(|(_, _, r)| r.split(" via ").nth(1))
                    .collect();
                let role = ROLES
                    .into_iter()
                    .find(|r| held.contains(r))
                    .unwrap_or(ROLES[round % ROLES.len()]);
                roles_client(app)
                    .await
                    .define_role(role_definition(role, random_grants(&mut self.rng, 1)))
                    .await
                    .map(|r| r.into_inner().revision)
            }
            Op::RevokeRole => {
                let held: Vec<(String, String, String)> = self
                    .people
                    .iter()
                    .flat_map(|p| {
                        world
                            .grants
                            .keys()
                            .filter(|(u, a, r)| u == &p.id && world.open(a) && r.contains(" via "))
                            .map(|(u, a, r)| {
                                (
                                    u.clone(),
                                    a.clone(),
                                    r.split(" via ").nth(1).unwrap().to_owned(),
                                )
                            })
                            .collect::<BTreeSet<_>>()
                    })
                    .collect();
                let (id, account, role) = self.rng.pick(&held)?;
                roles_client(app)
                    .await
                    .revoke_role(pb::RevokeRoleRequest {
                        account_code: account,
                        user_id: id,
                        role,
                    })
                    .await
                    .map(|r| r.into_inner().revision)
            }
            Op::DeactivateUser => {
                let id = self.rng.pick(&active)?;
                w.users
                    .deactivate_user(pb::DeactivateUserRequest { id })
                    .await
                    .map(|r| r.into_inner().revision)
            }
            Op::DeactivateUsers => {
                let mut ids = Vec::new();
                for _ in 0..2 {
                    let rest: Vec<String> = active
                        .iter()
                        .filter(|i| !ids.contains(*i))
                        .cloned()
                        .collect();
                    ids.extend(self.rng.pick(&rest));
                }
                if ids.is_empty() {
                    return None;
                }
                w.users
                    .deactivate_users(pb::DeactivateUsersRequest {
                        user_ids: ids,
                        team: None,
                    })
                    .await
                    .map(|r| r.into_inner().revision)
            }
            Op::ArchiveUser => {
                let id = self
                    .rng
                    .pick(&ids(&self.people, |p| world.status(&p.id) != "archived"))?;
                w.users
                    .archive_user(pb::ArchiveUserRequest { id })
                    .await
                    .map(|r| r.into_inner().revision)
            }
            Op::ReactivateUser => {
                let id = self
                    .rng
                    .pick(&ids(&self.people, |p| world.status(&p.id) == "deactivated"))?;
                w.users
                    .reactivate_user(pb::ReactivateUserRequest { id })
                    .await
                    .map(|r| r.into_inner().revision)
            }
            Op::Regenerate | Op::RegenerateWithOverlap => {
                let id = self.rng.pick(&active)?;
                let overlap_seconds = if op == Op::Regenerate { 0 } else { 3600 };
                match w
                    .keys
                    .regenerate_connection_key(pb::RegenerateConnectionKeyRequest {
                        user_id: id.clone(),
                        overlap_seconds,
                        expire_time: None,
                    })
                    .await
                {
                    Ok(r) => {
                        let r = r.into_inner();
                        let p = self.people.iter_mut().find(|p| p.id == id).expect("person");
                        p.keys.push(r.connection_key);
                        Ok(r.revision)
                    }
                    Err(e) => Err(e),
                }
            }
            Op::RevokeConnectionKey => {
                let id = self.rng.pick(&ids(&self.people, |p| {
                    world.active(&p.id) && !world.live_keys(&p.id).is_empty()
                }))?;
                let key_id = self.rng.pick(&world.live_keys(&id))?;
                w.keys
                    .revoke_connection_key(pb::RevokeConnectionKeyRequest { key_id })
                    .await
                    .map(|r| r.into_inner().revision)
            }
            Op::CloseAccount | Op::ReopenAccount => {
                let close = op == Op::CloseAccount;
                let candidates: Vec<String> = ACCOUNTS
                    .iter()
                    .filter(|c| world.open(c) == close)
                    .map(|c| c.to_string())
                    .collect();
                let code = self.rng.pick(&candidates)?;
                let status = if close {
                    pb::AccountStatus::Closed
                } else {
                    pb::AccountStatus::Active
                };
                w.accounts
                    .update_account(pb::UpdateAccountRequest {
                        account: Some(pb::Account {
                            code,
                            status: status as i32,
                            ..Default::default()
                        }),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec!["status".into()],
                        }),
                    })
                    .await
                    .map(|r| r.into_inner().revision)
            }
            Op::ImportAdd | Op::ImportSync => {
                let sync = op == Op::ImportSync;
                let account = self.rng.pick(&open)?;
                let named = ids(&self.people, |p| {
                    world.linked(&p.id, &account) && world.status(&p.id) != "archived"
                });
                // A sync leaves one active user out: he is deactivated.
                let absent = if sync {
                    let live: Vec<String> =
                        named.iter().filter(|i| world.active(i)).cloned().collect();
                    self.rng.pick(&live)
                } else {
                    None
                };
                let mut lines = vec![IMPORT_HEADER.to_owned()];
                for id in named.iter().filter(|i| Some(*i) != absent.as_ref()) {
                    lines.push(self.import_line(world, id));
                }
                // An advanced user of other accounts, linked by his key.
                if let Some(id) = self.rng.pick(&ids(&self.people, |p| {
                    p.user_key.is_some() && world.active(&p.id) && !world.linked(&p.id, &account)
                })) {
                    lines.push(self.import_line(world, &id));
                }
                // A new user, in the first rounds.
                if round < 2 {
                    let n = self.created;
                    self.created += 1;
                    let tags = self.rng.subset(&TAGS).join(", ");
                    let cells = right_cells(&mut self.rng, false);
                    lines.push(format!(
                        "avancé;;;;Imported{n};Diff;Logisticien;imported{n}@example.com;+33 1 23 45 67 89;12 rue de la Gare;88000;Épinal;{tags};{cells}"
                    ));
                }
                let options = pb::ImportOptions {
                    mode: if sync {
                        pb::ImportMode::Sync
                    } else {
                        pb::ImportMode::Add
                    } as i32,
                    force: sync,
                    ..opts(&account)
                };
                let run = import(
                    app,
                    &app.operator_key,
                    options,
                    lines.join("\n").as_bytes(),
                    512,
                )
                .await;
                match run.error {
                    Some(e) => Err(e),
                    None => {
                        for r in &run.results {
                            match r.status_name() {
                                "created" => self
                                    .people
                                    .push(Person::read(&pool, &r.user_id, None).await),
                                "deactivated" => self.sync_deactivated += 1,
                                "updated" | "unchanged" => {}
                                other => panic!("import line refused: {other} {r:?}"),
                            }
                        }
                        Ok(run.summary.expect("a summary").revision)
                    }
                }
            }
        };
        Some(result)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_replicas_agree_with_a_sql_reference_after_every_write_path() {
    let a = spawn_app().await;
    let b = spawn_app_on(a.db_options.clone()).await;
    let pool = a.store.pool().clone();
    let mut writers = [a.operator().await, b.operator().await];
    let org = create_org(&mut writers[0].accounts, "Diff").await;
    for code in ACCOUNTS {
        create_account(&mut writers[0].accounts, &org, code).await;
    }
    for (i, role) in ROLES.into_iter().enumerate() {
        roles_client(&a)
            .await
            .define_role(role_definition(
                role,
                vec![right(RIGHTS[i * 3]), scoped("tracking.tool", SCOPES[i])],
            ))
            .await
            .unwrap();
    }
    let mut s = Scenario {
        people: Vec::new(),
        rng: Rng(0x5eed_c1ef),
        created: 0,
        sync_deactivated: 0,
    };
    for i in 0..6 {
        let (user, account) = if i < 4 {
            (
                advanced(&format!("P{i}"), "Diff", &format!("p{i}@example.com")),
                "D1",
            )
        } else {
            (standard(&format!("S{i}"), "Diff"), ACCOUNTS[i - 3])
        };
        let (u, key) = create_user(
            &mut writers[0],
            user,
            account,
            &["T1"],
            vec![right("shipping.ws"), scoped("tracking.tool", SCOPES[i % 3])],
        )
        .await
        .unwrap();
        s.people.push(Person::read(&pool, &u.id, Some(key)).await);
    }
    let replicas = [Replica::new(&a, "A").await, Replica::new(&b, "B").await];
    let apps = [&a, &b];

    let started = Instant::now();
    let mut last_revision = 0;
    // Per replica: answers compared at once (with min_revision), and
    // within the bound (without).
    let mut compared: BTreeMap<&str, [usize; 2]> = BTreeMap::new();
    let mut applied: BTreeMap<Op, usize> = BTreeMap::new();
    let mut changed: BTreeMap<Op, BTreeSet<&'static str>> = BTreeMap::new();
    let mut skipped = 0;
    // Time spent writing, in the reference, asking (1) and (2).
    let mut spent = [Duration::ZERO; 4];
    let rounds = 4;
    for step in 0..rounds * ROUND.len() {
        let (round, i) = (step / ROUND.len(), step % ROUND.len());
        let op = ROUND[i];
        // Writes go through A and B in turn; over four rounds each write
        // path goes through each replica with each way of asking (1).
        let writer = (i + round) % 2;
        let after_notice = (i + round / 2) % 2 == 1;
        let clock = Instant::now();
        let before = World::read(&pool).await;
        let Some(outcome) = s
            .write(op, round, apps[writer], &mut writers[writer], &before)
            .await
        else {
            skipped += 1;
            continue;
        };
        let written_at = Instant::now();
        spent[0] += written_at - clock;
        let after = World::read(&pool).await;
        let what = before.changes(&after);
        let revision = match &outcome {
            Ok(r) => {
                if !what.is_empty() {
                    assert!(
                        *r > last_revision,
                        "step {step}: {op:?} changed {what:?} but returned revision {r} (the last was {last_revision})"
                    );
                    *applied.entry(op).or_default() += 1;
                    changed.entry(op).or_default().extend(what.iter().copied());
                }
                if *r > 0 {
                    *r
                } else {
                    last_revision
                }
            }
            Err(e) => {
                // Refusals are part of the sequence: they change nothing.
                assert_eq!(
                    before, after,
                    "step {step}: {op:?} refused ({e:?}) but wrote"
                );
                last_revision
            }
        };
        last_revision = revision;

        // Every subject form of every user, on every account and an unknown
        // one, for every right, in one batch. Parcels and filters cost a
        // call each. For the users the write changed (only their answers
        // can be stale): both tracking rights, the parcels on every account
        // they are or were linked to (elsewhere they are denied as Check
        // is), by their subject forms in turn. For one other user in turn:
        // one form, one right, one such account.
        let touched = before.touched(&after);
        let mut probe = Probe {
            checks: Vec::new(),
            parcels: Vec::new(),
            filters: Vec::new(),
        };
        let user_keys: Vec<String> = s.people.iter().filter_map(|p| p.user_key.clone()).collect();
        let sampled = step % s.people.len();
        for (i, p) in s.people.iter().enumerate() {
            let subjects = p.subjects();
            for subject in &subjects {
                for account in ACCOUNTS.iter().chain(&["DX"]) {
                    for right in RIGHTS {
                        probe.checks.push(Ask {
                            subject: subject.clone(),
                            account: account.to_string(),
                            right,
                            parcel_key: None,
                            parcel_tag: None,
                        });
                    }
                }
            }
            let mut turn = step / s.people.len() + i;
            let mut accounts: Vec<&str> = ACCOUNTS
                .into_iter()
                .filter(|a| before.linked(&p.id, a) || after.linked(&p.id, a))
                .collect();
            if accounts.is_empty() {
                accounts = ACCOUNTS.to_vec();
            }
            let mut aims: Vec<(&str, &'static str)> = Vec::new();
            if touched.contains(&p.id) {
                for account in accounts {
                    aims.extend(TRACKING.map(|right| (account, right)));
                }
            } else if i == sampled {
                aims.push((
                    accounts[turn % accounts.len()],
                    TRACKING[(turn / subjects.len()) % TRACKING.len()],
                ));
            }
            // His own key (a standard user has none: another's) with a tag,
            // another's key with another tag, no key with a third tag.
            let own = p.user_key.clone().or_else(|| user_keys.first().cloned());
            let other = user_keys.iter().find(|k| Some(*k) != own.as_ref()).cloned();
            let mut filtered = BTreeSet::new();
            for (account, right) in aims {
                let subject = subjects[turn % subjects.len()].clone();
                turn += 1;
                for (key, tag) in [
                    (own.clone(), Some("T1")),
                    (other.clone(), Some("T2")),
                    (None, Some("T3")),
                ] {
                    probe.parcels.push(Ask {
                        subject: subject.clone(),
                        account: account.to_owned(),
                        right,
                        parcel_key: key,
                        parcel_tag: tag.map(str::to_owned),
                    });
                }
                if filtered.insert(right) {
                    probe.filters.push((subject, right));
                }
            }
        }

        // (1) With the write's revision: exact at once on both replicas.
        // Half of the time asked only once both replicas have the write's
        // notice, so that their memory answers: a replica asked before
        // loads from Postgres, which would hide a change it was never told
        // about.
        let clock = Instant::now();
        if after_notice {
            for r in &replicas {
                while seen(&r.calls).await < revision {
                    assert!(
                        written_at.elapsed() < BOUND,
                        "step {step} ({op:?}): replica {} has not seen revision {revision} after {BOUND:?}",
                        r.name
                    );
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
        let (on_a, on_b) = tokio::join!(
            observe(&replicas[0], &probe, revision),
            observe(&replicas[1], &probe, revision)
        );
        spent[2] += clock.elapsed();
        let clock = Instant::now();
        let want = expected(&pool, &probe).await;
        spent[1] += clock.elapsed();
        let through = replicas[writer].name;
        for (r, got) in replicas.iter().zip([on_a, on_b]) {
            assert!(
                got.revision >= revision,
                "step {step} ({op:?}): replica {} answered at revision {} for min_revision {revision}",
                r.name,
                got.revision
            );
            if let Some(diff) = difference(&probe, &want, &got) {
                panic!(
                    "step {step} ({op:?} through {through}, revision {revision}): replica {} with min_revision: {diff}",
                    r.name
                );
            }
            compared.entry(r.name).or_default()[0] += got.len();
        }
        // (2) Without min_revision: equal within the bound.
        let clock = Instant::now();
        let (on_a, on_b) = tokio::join!(
            settle(&replicas[0], &probe, &want, written_at),
            settle(&replicas[1], &probe, &want, written_at)
        );
        for (r, settled) in replicas.iter().zip([on_a, on_b]) {
            match settled {
                Ok(n) => compared.entry(r.name).or_default()[1] += n,
                Err(diff) => panic!(
                    "step {step} ({op:?} through {through}, revision {revision}): replica {} still differs {BOUND:?} after the write: {diff}",
                    r.name
                ),
            }
        }
        spent[3] += clock.elapsed();
    }
    eprintln!(
        "{} steps ({skipped} skipped) in {:?}; {} users; changes per write path: {applied:?}; what they changed: {changed:?}; \
         {} users deactivated by syncs; answers compared with the reference, per replica [at once, within the bound]: {compared:?}; \
         time spent [writing, reference, at once, within the bound]: {spent:?}",
        rounds * ROUND.len(),
        started.elapsed(),
        s.people.len(),
        s.sync_deactivated,
    );
    for op in ROUND {
        let did = changed.get(&op).cloned().unwrap_or_default();
        for c in op.changes() {
            assert!(
                did.contains(c),
                "{op:?} never changed {c} (it changed {did:?}): every write path must have been exercised"
            );
        }
    }
    assert!(
        s.sync_deactivated > 0,
        "a sync must have deactivated someone"
    );
    for r in &replicas {
        let [at_once, bounded] = compared.get(r.name).copied().unwrap_or_default();
        assert!(
            at_once > 10_000 && bounded > 10_000,
            "replica {} compared too little: {compared:?}",
            r.name
        );
    }
    // Every change of every write path has its event: replaying the audit
    // trail gives back the tables.
    crate::audit::assert_trail_mirrors_database(&a).await;
}

/// Loads racing writes. Readers ask both replicas about a few users again
/// and again while each user's status is switched twice in a row, straight
/// in SQL (taking a revision, as every write must: the triggers notice any
/// writer), so that the two commits come closer than a load takes: the load
/// the first one's notice causes is often still reading when the second
/// commits. However each race goes, both replicas then answer as the
/// tables do within the bound: a load that a concurrent write made stale
/// is never kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_racing_a_write_is_never_kept() {
    let a = spawn_app().await;
    let b = spawn_app_on(a.db_options.clone()).await;
    let pool = a.store.pool().clone();
    // Users with many accounts and grants: their loads take a while, the
    // window in which a commit races them.
    let mut ops = a.operator().await;
    let org = create_org(&mut ops.accounts, "Race").await;
    let codes: Vec<String> = (0..10).map(|i| format!("RACE{i}")).collect();
    for code in &codes {
        create_account(&mut ops.accounts, &org, code).await;
    }
    let mut ids = Vec::new();
    for i in 0..8 {
        let across = ops
            .grants
            .grant_across_accounts(pb::GrantAcrossAccountsRequest {
                user: Some(pb::UserSelector {
                    by: Some(pb::user_selector::By::NewUser(pb::NewUserProfile {
                        last_name: "Race".into(),
                        first_name: format!("R{i}"),
                        job_title: "Logisticien".into(),
                        email: format!("race{i}@example.com"),
                        phone: "+33 1 23 45 67 89".into(),
                        address_lines: vec!["12 rue de la Gare".into()],
                        postal_code: "88000".into(),
                        city: "Épinal".into(),
                        ..Default::default()
                    })),
                }),
                account_codes: codes.clone(),
                rights: vec![
                    right("shipping.ws"),
                    right("tracking.ws"),
                    scoped("tracking.tool", Scope::Consolidated),
                    scoped("tracking.tool_cs", Scope::UserTag),
                ],
            })
            .await
            .unwrap()
            .into_inner();
        ids.push(across.user_id);
    }
    let replicas = [Replica::new(&a, "A").await, Replica::new(&b, "B").await];
    let probe = Probe {
        checks: ids
            .iter()
            .map(|id| Ask {
                subject: Subject::Id(id.clone()),
                account: "RACE0".into(),
                right: "shipping.ws",
                parcel_key: None,
                parcel_tag: None,
            })
            .collect(),
        parcels: Vec::new(),
        filters: Vec::new(),
    };
    let asked = pb::CheckBatchRequest {
        checks: ids
            .iter()
            .map(|id| pb::CheckRequest {
                subject: by_user(id),
                account_code: "RACE0".into(),
                right: "shipping.ws".into(),
                min_revision: 0,
            })
            .collect(),
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = tokio::task::JoinSet::new();
    for app in [&a, &b] {
        for _ in 0..2 {
            let mut c = app.decider().await;
            let (asked, stop) = (asked.clone(), stop.clone());
            readers.spawn(async move {
                let mut n = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    c.check_batch(asked.clone()).await.expect("check batch");
                    n += 1;
                }
                n
            });
        }
    }
    let started = Instant::now();
    let rounds = 20;
    for round in 0..rounds {
        for id in &ids {
            for _ in 0..2 {
                // The revision first, in a statement of its own (its
                // trigger names it to the audit trail's).
                let mut tx = pool.begin().await.unwrap();
                sqlx::query("UPDATE revision_counter SET value = value + 1")
                    .execute(&mut *tx)
                    .await
                    .expect("take a revision");
                sqlx::query(
                    "UPDATE users SET status = CASE status WHEN 'active' THEN 'deactivated' ELSE 'active' END
                      WHERE id = $1::uuid",
                )
                .bind(id)
                .execute(&mut *tx)
                .await
                .expect("switch a status");
                tx.commit().await.expect("commit the switch");
            }
        }
        let written_at = Instant::now();
        let want = expected(&pool, &probe).await;
        let (on_a, on_b) = tokio::join!(
            settle(&replicas[0], &probe, &want, written_at),
            settle(&replicas[1], &probe, &want, written_at)
        );
        for (r, settled) in replicas.iter().zip([on_a, on_b]) {
            if let Err(diff) = settled {
                panic!(
                    "round {round}: replica {} still differs {BOUND:?} after the writes: {diff}",
                    r.name
                );
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut asked = 0;
    while let Some(n) = readers.join_next().await {
        asked += n.expect("reader");
    }
    eprintln!(
        "{} racing pairs of writes in {:?}; the readers asked {asked} batches meanwhile",
        rounds * ids.len(),
        started.elapsed()
    );
    assert!(asked > 100, "the readers must have raced the writes");
}
