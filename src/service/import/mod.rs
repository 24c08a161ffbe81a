//! Importing users from CSV lines into one account: [`Import`] decides and
//! writes batches of lines (a bad line changes nothing and never stops the
//! others); [`run`] drives a whole file through it, grouping lines into
//! transactions (a batch per transaction, or one for an atomic import or a
//! dry run) and telling the client how it goes.

mod run;

pub use run::{run, Progress, ProgressSender, Summary};

use std::{
    collections::{HashMap, HashSet},
    hash::{DefaultHasher, Hash, Hasher},
};

use uuid::Uuid;

use super::{not_admin_everywhere, require_admin_everywhere};
use crate::domain::user::{apply_profile_paths, PROFILE_FIELDS};
use crate::{
    bulk::{
        csvfile::neutralise,
        reader::{Header, ImportLine, LineProblem, RightCell},
        Dialect,
    },
    domain::{
        account::{Account, AccountCode, AccountStatus},
        key::NewKey,
        principal::Actor,
        rights::{Authority, RightDef, Scope},
        user::{
            default_login, parse_login, parse_tags, Profile, User, UserKey, UserKind, UserStatus,
        },
        Error, Violations,
    },
    store::{
        AuditRow, GrantRow, ImportWrites, KeyRow, LinkRow, ProfileRow, ReportOptions, RevokeRow,
        StatusRow, Store, Tx, UserRow,
    },
};

/// How an import runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub account: AccountCode,
    pub sync: bool,
    pub dry_run: bool,
    pub atomic: bool,
    pub force: bool,
    pub default_kind: UserKind,
    /// Stop once this many lines have failed (0: never).
    pub max_failed_lines: i64,
}

/// What happened to one line (or, for a sync, to one absent user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub line: u64,
    pub status: &'static str,
    pub column: String,
    pub message: String,
    pub user_id: Option<Uuid>,
}

/// Every status a line result can have.
const STATUSES: [&str; 8] = [
    "created",
    "updated",
    "unchanged",
    "deactivated",
    "right_not_held",
    "invalid_choice",
    "invalid_user_data",
    "duplicate_in_file",
];

/// The status named `name` (results staged in Postgres are read back).
fn status_named(name: &str) -> &'static str {
    STATUSES
        .iter()
        .find(|s| **s == name)
        .copied()
        .unwrap_or("invalid_user_data")
}

impl Outcome {
    fn new(line: u64, status: &'static str, column: &str, message: impl Into<String>) -> Self {
        Self {
            line,
            status,
            column: column.to_owned(),
            message: message.into(),
            user_id: None,
        }
    }

    /// Whether the line (or deactivation) wrote something.
    pub fn wrote(&self) -> bool {
        matches!(self.status, "created" | "updated" | "deactivated")
    }

    /// Whether the line was refused (an `atomic` import then writes nothing).
    pub fn failed(&self) -> bool {
        !self.wrote() && self.status != "unchanged"
    }

    fn done(line: u64, status: &'static str, user: Uuid) -> Self {
        Self {
            user_id: Some(user),
            ..Self::new(line, status, "", "")
        }
    }
}

/// An import in progress: what the actor may do on the account, and what
/// the file has named so far.
pub struct Import {
    actor: Actor,
    pub options: Options,
    account: Account,
    authority: Authority,
    catalog: Vec<RightDef>,
    /// Profile fields the file has columns for; others are left as they are.
    present: Vec<&'static str>,
    /// Users named by the file that the current batch may meet again; the
    /// whole file's are in the ledger (`import_named`), kept by a sync.
    named: HashSet<Uuid>,
    /// This import's report (from its accepted header on), and its last
    /// chunk.
    report: Option<Uuid>,
    report_seq: i64,
}

/// The columns of an import report.
const REPORT_HEADER: [&str; 5] = ["line", "status", "column", "message", "user_id"];

/// Why a line is not applied, decided before anything is written.
enum Refusal {
    Outcome(Outcome),
    Fault(Error),
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Self {
        Refusal::Fault(e)
    }
}

impl Import {
    /// Checks that the actor administers the account; refuses the whole
    /// import otherwise.
    pub async fn start(store: &Store, actor: &Actor, options: Options) -> Result<Self, Error> {
        let mut tx = store.read().await?;
        let account = tx.account(options.account.as_str()).await?;
        let authority = tx.authority(actor, account.id).await?;
        authority.require_admin(&account.code)?;
        if account.status == AccountStatus::Closed {
            return Err(Error::FailedPrecondition(format!(
                "account {} is closed",
                account.code
            )));
        }
        let catalog = tx.rights().await?;
        tx.commit().await?;
        Ok(Self {
            actor: actor.clone(),
            options,
            account,
            authority,
            catalog,
            present: Vec::new(),
            named: HashSet::new(),
            report: None,
            report_seq: 0,
        })
    }

    /// Appends results to the import's report.
    pub async fn report(&mut self, store: &Store, results: &[Outcome]) -> Result<(), Error> {
        let Some(report) = self.report.filter(|_| !results.is_empty()) else {
            return Ok(());
        };
        let text = |s: &str| neutralise(Dialect::Excel, s);
        let rows = results.iter().map(|o| {
            [
                o.line.to_string(),
                o.status.to_owned(),
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

    /// The key of this import's ledger (its report's id): set once its
    /// header is accepted.
    fn ledger(&self) -> Result<Uuid, Error> {
        self.report
            .ok_or_else(|| Error::Internal("import lines before its header".into()))
    }

    /// Forgets what the import met, once it has ended.
    pub async fn forget(&self, store: &Store) -> Result<(), Error> {
        match self.report {
            Some(report) => store.drop_ledgers(&[report]).await,
            None => Ok(()),
        }
    }

    pub fn catalog(&self) -> &[RightDef] {
        &self.catalog
    }

    /// Records which columns the file has, and starts the import's report:
    /// from here on, it replaces the account's previous one (a file refused
    /// whole leaves that one in place). Refused while another import into
    /// the account runs.
    pub async fn set_header(&mut self, store: &Store, header: &Header) -> Result<(), Error> {
        self.present = header
            .columns
            .iter()
            .filter_map(|c| match c {
                crate::bulk::reader::Column::Field(f) => Some(*f),
                _ => None,
            })
            .collect();
        let options = ReportOptions {
            sync: self.options.sync,
            dry_run: self.options.dry_run,
            atomic: self.options.atomic,
            force: self.options.force,
        };
        let header = csv_rows(std::iter::once(REPORT_HEADER.map(String::from)))?;
        self.report = Some(
            store
                .start_report(self.account.id, self.actor.user_id, options, &header)
                .await?,
        );
        Ok(())
    }

    fn has(&self, field: &str) -> bool {
        self.present.contains(&field)
    }

    /// Applies a batch of lines inside `tx`: the users they name are looked
    /// up in a few queries, each line is decided in memory, and what the
    /// good lines write goes in one multi-row statement per table. Should
    /// that fail on a uniqueness conflict (a concurrent writer), the lines
    /// are written one by one under savepoints so that each gets its own
    /// result. An `Err` is a fault of the system (Postgres unreachable), not
    /// of a line: the import stops.
    pub async fn apply_batch(
        &mut self,
        store: &Store,
        tx: &mut Tx,
        lines: Vec<(u64, Result<ImportLine, LineProblem>)>,
    ) -> Result<Vec<Outcome>, Error> {
        let report = self.ledger()?;
        tx.hold_report(report).await?;
        let mut outcomes = Vec::with_capacity(lines.len());
        let mut pending = Vec::new();
        // Identities met in this batch; the whole file's are in the ledger
        // (`import_seen`).
        let mut seen = HashSet::new();
        for (line, parsed) in lines {
            match self.precheck(&mut seen, line, parsed) {
                Ok(c) => {
                    pending.push((outcomes.len(), c));
                    outcomes.push(Outcome::new(line, "", "", ""));
                }
                Err(o) => outcomes.push(o),
            }
        }
        // Identities met in an earlier batch are duplicates too.
        let identities: Vec<i64> = pending.iter().map(|(_, c)| c.seen).collect();
        let first: HashSet<i64> = store
            .ledger_first_seen(report, &identities)
            .await?
            .into_iter()
            .collect();
        pending.retain(|(slot, c)| {
            let keep = first.contains(&c.seen);
            if !keep {
                outcomes[*slot] = duplicate(c.line, &c.identity);
            }
            keep
        });
        if pending.is_empty() {
            return Ok(outcomes);
        }
        let mut known = self.look_up(tx, pending.iter().map(|(_, c)| c)).await?;
        // Users the batch may meet that earlier batches named.
        let met: Vec<Uuid> = known.users.keys().copied().collect();
        self.named = store
            .ledger_named(report, &met)
            .await?
            .into_iter()
            .collect();
        let mut writes: Vec<(usize, ImportWrites)> = Vec::new();
        for (slot, c) in pending {
            let line = c.line;
            match self.decide(tx, &mut known, c).await {
                Ok((outcome, w)) => {
                    outcomes[slot] = outcome;
                    writes.push((slot, w));
                }
                Err(Refusal::Outcome(o)) => outcomes[slot] = o,
                Err(Refusal::Fault(e)) => outcomes[slot] = line_fault(line, e)?,
            }
        }
        // Those already in the ledger are skipped there.
        let named: Vec<Uuid> = self.named.iter().copied().collect();
        store.ledger_name(report, &named).await?;
        let all: Vec<&ImportWrites> = writes.iter().map(|(_, w)| w).collect();
        tx.savepoint().await?;
        match tx.write_import(self.account.id, &all).await {
            Ok(()) => tx.release_savepoint().await?,
            Err(Error::Unavailable(e)) => return Err(Error::Unavailable(e)),
            Err(_) => {
                tx.rollback_to_savepoint().await?;
                for (slot, w) in &writes {
                    tx.savepoint().await?;
                    match tx.write_import(self.account.id, &[w]).await {
                        Ok(()) => tx.release_savepoint().await?,
                        Err(e) => {
                            tx.rollback_to_savepoint().await?;
                            outcomes[*slot] = line_fault(outcomes[*slot].line, e)?;
                        }
                    }
                }
            }
        }
        Ok(outcomes)
    }

    /// What can be said of a line without the database.
    fn precheck(
        &self,
        seen: &mut HashSet<i64>,
        line: u64,
        parsed: Result<ImportLine, LineProblem>,
    ) -> Result<Candidate, Outcome> {
        let l = match parsed {
            Ok(l) => l,
            Err(LineProblem::InvalidChoice { column, value, why }) => {
                return Err(Outcome::new(
                    line,
                    "invalid_choice",
                    &column,
                    format!("{value:?}: {why}"),
                ))
            }
            Err(LineProblem::InvalidUserData { field, why }) => {
                return Err(Outcome::new(line, "invalid_user_data", &field, why))
            }
        };
        if let Some(a) = &l.account {
            if a != &self.account.code {
                return Err(Outcome::new(
                    line,
                    "invalid_choice",
                    "COMPTE",
                    format!("{a:?}: this import is into account {}", self.account.code),
                ));
            }
        }
        let key = match &l.user_key {
            Some(k) => Some(
                UserKey::parse(k)
                    .map_err(|why| Outcome::new(line, "invalid_user_data", "user_key", why))?,
            ),
            None => None,
        };
        let mut v = Violations::default();
        let login = l
            .login
            .as_deref()
            .and_then(|x| v.check("login", parse_login(x)));
        let tags = parse_tags(&l.tags, "tags", &mut v);
        let email = l.profile.email.trim().to_lowercase();
        // Who the line is about: by user key, else email (advanced) or login
        // (standard, whose login defaults to his email).
        let identity = match (&key, l.kind) {
            (Some(k), _) => Identity::Key(k.as_str().to_owned()),
            (None, UserKind::Advanced) if !email.is_empty() => Identity::Email(email.clone()),
            (None, _) => match login
                .clone()
                .or_else(|| (!email.is_empty()).then(|| email.clone()))
            {
                Some(x) => Identity::Login(x),
                None => Identity::Nobody,
            },
        };
        let mut h = DefaultHasher::new();
        match &identity {
            Identity::Nobody => format!(
                "name:{}:{}",
                l.profile.first_name.trim(),
                l.profile.last_name.trim()
            )
            .to_lowercase()
            .hash(&mut h),
            other => other.hash(&mut h),
        }
        let hash = h.finish() as i64;
        if !seen.insert(hash) {
            return Err(duplicate(line, &identity));
        }
        Ok(Candidate {
            seen: hash,
            line,
            l,
            login,
            tags,
            email,
            identity,
            v,
        })
    }

    /// The users a batch may be about or collide with, in three queries.
    async fn look_up(
        &self,
        tx: &mut Tx,
        batch: impl Iterator<Item = &Candidate>,
    ) -> Result<Lookups, Error> {
        let (mut keys, mut emails, mut logins) = (Vec::new(), Vec::new(), Vec::new());
        for c in batch {
            if let Identity::Key(k) = &c.identity {
                keys.push(k.clone());
            }
            if !c.email.is_empty() {
                emails.push(c.email.clone());
                logins.push(c.email.clone());
            }
            if let Some(l) = &c.login {
                logins.push(l.clone());
            }
        }
        let mut k = Lookups::default();
        let (actor, operator) = (self.actor.user_id, self.actor.is_operator());
        for u in tx
            .users_known_by(&keys, &emails, &logins, actor, operator)
            .await?
        {
            if !u.managed {
                k.unmanaged.insert(u.id);
            }
            if let Some(key) = u.user_key {
                k.by_key.insert(key, u.id);
            }
            if let Some(e) = u.email {
                k.by_email.insert(e, u.id);
            }
            k.by_login.insert(u.login, u.id);
        }
        k.looked_up = logins.into_iter().collect();
        let ids: Vec<Uuid> = k
            .by_key
            .values()
            .chain(k.by_email.values())
            .chain(k.by_login.values())
            .copied()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        for u in tx.users_by_ids(&ids).await? {
            k.users.insert(u.id, u);
        }
        for (u, tags) in tx.links_to_account(self.account.id, &ids).await? {
            k.links.insert(u, tags);
        }
        for (u, right, scope) in tx.grants_on_account(self.account.id, &ids).await? {
            k.grants.entry(u).or_default().push((right, scope));
        }
        Ok(k)
    }

    /// Decides one line against what the batch looked up, and what it
    /// writes. Reads the database only for the rare line that needs more
    /// (a status change, a taken default login).
    async fn decide(
        &mut self,
        tx: &mut Tx,
        k: &mut Lookups,
        c: Candidate,
    ) -> Result<(Outcome, ImportWrites), Refusal> {
        let Candidate {
            seen: _,
            line,
            l,
            login,
            tags,
            email: _,
            identity,
            mut v,
        } = c;
        let refuse = |status, column: &str, msg: String| {
            Refusal::Outcome(Outcome::new(line, status, column, msg))
        };
        let existing = match &identity {
            Identity::Key(key) => Some(*k.by_key.get(key).ok_or_else(|| {
                refuse(
                    "invalid_user_data",
                    "user_key",
                    format!("no user has the key {key}"),
                )
            })?),
            Identity::Email(e) => k.by_email.get(e).copied(),
            Identity::Login(x) => k.by_login.get(x).copied(),
            Identity::Nobody => None,
        };
        // A user of another tenant is reached by his user key only: his
        // email or login fails the line and tells nothing about him.
        if let (Some(id), Identity::Email(_) | Identity::Login(_)) = (existing, &identity) {
            if k.unmanaged.contains(&id) {
                let column = if matches!(identity, Identity::Email(_)) {
                    "email"
                } else {
                    "login"
                };
                return Err(refuse("invalid_user_data", column, not_managed()));
            }
        }
        let existing = existing.and_then(|id| k.users.get(&id).cloned());
        if let Some(u) = &existing {
            // Named by the file, whatever becomes of the line: a sync does
            // not deactivate a user whose line was refused.
            if !self.named.insert(u.id) {
                return Err(Refusal::Outcome(duplicate(line, &identity)));
            }
        }
        let kind = existing.as_ref().map(|u| u.kind).unwrap_or(l.kind);
        // A new user is what the line says; an existing one changes only in
        // the fields the file has columns for.
        let raw = match &existing {
            None => l.profile.clone(),
            Some(u) => {
                let mut raw = u.profile.to_raw();
                let paths: Vec<String> = self
                    .present
                    .iter()
                    .filter_map(|f| match *f {
                        "address" => Some("address_lines"),
                        f if PROFILE_FIELDS.contains(&f) => Some(f),
                        _ => None,
                    })
                    .map(String::from)
                    .collect();
                apply_profile_paths(&mut raw, &l.profile, &paths, &mut v);
                raw
            }
        };
        let profile = Profile::parse(&raw, kind, "", &mut v);
        if let Some(first) = v.0.first() {
            let field = first.field.clone();
            return Err(refuse("invalid_user_data", &field, v.to_string()));
        }
        // Nobody else may hold the email, and a given login must be free.
        let new_email = profile.email.as_ref().map(|e| e.to_lowercase());
        if let Some(e) = &new_email {
            let holder = k.by_email.get(e).copied();
            let mine = existing.as_ref().map(|u| u.id);
            if holder.is_some_and(|h| Some(h) != mine && k.unmanaged.contains(&h)) {
                return Err(refuse("invalid_user_data", "email", not_managed()));
            }
            if (holder.is_some() && holder != mine)
                || (holder.is_none() && k.new_emails.contains(e))
            {
                return Err(refuse(
                    "invalid_user_data",
                    "email",
                    "a user with this email already exists".into(),
                ));
            }
        }
        if existing.is_none() {
            if let Some(x) = &login {
                if k.by_login.get(x).is_some_and(|h| k.unmanaged.contains(h)) {
                    return Err(refuse("invalid_user_data", "login", not_managed()));
                }
                if k.by_login.contains_key(x) || k.new_logins.contains(x) {
                    return Err(refuse(
                        "invalid_user_data",
                        "login",
                        "a user with this login already exists".into(),
                    ));
                }
            }
        }

        // Rights: what the file asks, checked against the catalog and the
        // delegation rule before anything is written.
        let mut wanted = Vec::new();
        let mut unwanted = Vec::new();
        for (code, cell) in &l.rights {
            let def = self.catalog.iter().find(|d| &d.code == code);
            let scope = match cell {
                RightCell::No => {
                    unwanted.push(code.clone());
                    continue;
                }
                RightCell::Yes => None,
                RightCell::Scope(s) => Some(*s),
            };
            if def.is_some_and(|d| !d.kinds.contains(&kind)) {
                return Err(refuse(
                    "invalid_choice",
                    code,
                    format!("{code} cannot be held by {} users", kind.as_str()),
                ));
            }
            wanted.push((code.clone(), scope));
        }
        let no_grants = Vec::new();
        let current = existing
            .as_ref()
            .and_then(|u| k.grants.get(&u.id))
            .unwrap_or(&no_grants);
        let mut to_grant = Vec::new();
        for (right, scope) in &wanted {
            let before = current.iter().find(|(r, _)| r == right);
            if before.is_some_and(|(_, s)| s == scope) {
                continue;
            }
            if let Some((r, s)) = before {
                self.delegate(line, r, *s)?;
            }
            self.delegate(line, right, *scope)?;
            to_grant.push((right.clone(), *scope));
        }
        let mut to_revoke = Vec::new();
        for (right, scope) in current.iter().filter(|(r, _)| unwanted.contains(r)) {
            self.delegate(line, right, *scope)?;
            to_revoke.push(right.clone());
        }

        let mut w = ImportWrites::default();
        let grant_rows = |user: Uuid| {
            to_grant
                .iter()
                .map(move |(right, scope)| GrantRow {
                    user_id: user,
                    right_code: right.clone(),
                    scope: scope.map(Scope::as_str),
                })
                .collect::<Vec<_>>()
        };
        let outcome = match existing {
            None => {
                let login = match login {
                    Some(x) => x,
                    None => {
                        let choice = default_login(&profile);
                        // The email, when the lookups tell it is free as a
                        // login; else the store decides.
                        match &choice.email {
                            Some(e)
                                if k.looked_up.contains(e)
                                    && !k.by_login.contains_key(e)
                                    && !k.new_logins.contains(e) =>
                            {
                                e.clone()
                            }
                            _ => tx.free_login_besides(&choice, &k.new_logins).await?,
                        }
                    }
                };
                let rng = |e: getrandom::Error| Error::Internal(format!("os rng: {e}"));
                let user_key = match kind {
                    UserKind::Advanced => Some(UserKey::generate().map_err(rng)?),
                    UserKind::Standard => None,
                };
                let id = Uuid::now_v7();
                let status = match l.status {
                    Some(UserStatus::Deactivated) => UserStatus::Deactivated,
                    _ => UserStatus::Active,
                };
                w.users.push(UserRow {
                    id,
                    kind: kind.as_str(),
                    status: status.as_str(),
                    display_name: profile.display_name(),
                    search_text: profile.search_text(&login),
                    profile,
                    login: login.clone(),
                    user_key: user_key.as_ref().map(|k| k.as_str().to_owned()),
                    home_account_id: (kind == UserKind::Standard).then_some(self.account.id),
                    default_account_id: Some(self.account.id),
                });
                w.links.push(LinkRow { user_id: id, tags });
                w.new_grants = grant_rows(id);
                // Every user holds a key; its secret is not shown by an
                // import: the user or an admin regenerates it.
                let key = NewKey::generate().map_err(rng)?;
                w.keys.push(KeyRow {
                    id: Uuid::now_v7(),
                    user_id: id,
                    secret_hash: data_encoding::HEXLOWER.encode(&key.hash()),
                    display_prefix: key.display_prefix(),
                });
                w.audits.push(AuditRow {
                    action: "import.create",
                    target: format!("user/{id}"),
                    summary: format!("line {line}: created on account {}", self.account.code),
                });
                k.new_logins.insert(login);
                if let Some(e) = new_email {
                    k.new_emails.insert(e);
                }
                self.named.insert(id);
                Outcome::done(line, "created", id)
            }
            Some(user) => {
                let refuse = |msg: String| {
                    Refusal::Outcome(Outcome::new(line, "invalid_user_data", "", msg))
                };
                if user.status == UserStatus::Archived {
                    return Err(refuse("the user is archived".into()));
                }
                if user.kind == UserKind::Standard
                    && user.home_account.as_deref() != Some(self.account.code.as_str())
                {
                    return Err(refuse("a standard user of another account".into()));
                }
                let mut changed = Vec::new();
                if user.profile != profile {
                    w.profiles.push(ProfileRow {
                        id: user.id,
                        display_name: profile.display_name(),
                        search_text: profile.search_text(&user.login),
                        profile,
                    });
                    changed.push("profile");
                }
                match k.links.get(&user.id) {
                    None => {
                        w.links.push(LinkRow {
                            user_id: user.id,
                            tags,
                        });
                        changed.push("link");
                    }
                    Some(before) if self.has("tags") && *before != tags => {
                        w.tags.push(LinkRow {
                            user_id: user.id,
                            tags,
                        });
                        changed.push("tags");
                    }
                    Some(_) => {}
                }
                if !to_grant.is_empty() || !to_revoke.is_empty() {
                    if user.status != UserStatus::Active && !to_grant.is_empty() {
                        return Err(refuse(format!(
                            "the user is {} and cannot receive new rights",
                            user.status.as_str()
                        )));
                    }
                    w.grants = grant_rows(user.id);
                    w.revokes = to_revoke
                        .into_iter()
                        .map(|right_code| RevokeRow {
                            user_id: user.id,
                            right_code,
                        })
                        .collect();
                    changed.push("rights");
                }
                if let Some(status) = l.status {
                    if status != user.status
                        && matches!(status, UserStatus::Active | UserStatus::Deactivated)
                    {
                        let accounts = tx.linked_accounts(user.id, self.actor.user_id).await?;
                        require_admin_everywhere(&self.actor, &accounts)
                            .map_err(|e| refuse(e.to_string()))?;
                        user.status.transition(status).map_err(refuse)?;
                        w.statuses.push(StatusRow {
                            id: user.id,
                            status: status.as_str(),
                        });
                        changed.push("status");
                    }
                }
                if changed.is_empty() {
                    Outcome::done(line, "unchanged", user.id)
                } else {
                    w.audits.push(AuditRow {
                        action: "import.update",
                        target: format!("user/{}", user.id),
                        summary: format!(
                            "line {line} on account {}: {}",
                            self.account.code,
                            changed.join(", ")
                        ),
                    });
                    Outcome::done(line, "updated", user.id)
                }
            }
        };
        Ok((outcome, w))
    }

    fn delegate(
        &self,
        line: u64,
        right: &str,
        scope: Option<crate::domain::rights::Scope>,
    ) -> Result<(), Refusal> {
        self.authority
            .may_delegate(&self.account.code, right, scope)
            .map_err(|e| {
                Refusal::Outcome(Outcome::new(
                    line,
                    "right_not_held",
                    right,
                    e.to_string().replace("permission denied: ", ""),
                ))
            })
    }

    /// Sync mode, after the last line: deactivates the account's users the
    /// file did not name, unless that is more than 20 % of them and the
    /// import is not forced.
    pub async fn finish_sync(&mut self, tx: &mut Tx) -> Result<Vec<Outcome>, Error> {
        let report = self.ledger()?;
        tx.hold_report(report).await?;
        let absent = tx
            .absent_users(self.account.id, report, self.actor.user_id)
            .await?;
        let count = absent.users.len() as i64;
        if count > 0 && count * 5 > absent.live && !self.options.force {
            return Err(Error::FailedPrecondition(format!(
                "sync would deactivate {count} of the account's {} users (more than 20 %); nothing was deactivated; import with force to do it",
                absent.live
            )));
        }
        // Deactivating changes the user on every account: the actor must
        // administer all of them (as for a status change), checked for the
        // whole list in one query and written in one statement per table.
        let beyond: HashMap<Uuid, Vec<String>> = if self.actor.is_operator() {
            HashMap::new()
        } else {
            tx.accounts_not_administered(&absent.users, self.actor.user_id)
                .await?
                .into_iter()
                .collect()
        };
        let mut out = Vec::with_capacity(absent.users.len());
        let mut w = ImportWrites::default();
        for id in absent.users {
            if let Some(codes) = beyond.get(&id) {
                out.push(Outcome {
                    user_id: Some(id),
                    ..Outcome::new(
                        0,
                        "invalid_user_data",
                        "",
                        format!("absent, not deactivated: {}", not_admin_everywhere(codes)),
                    )
                });
                continue;
            }
            w.statuses.push(StatusRow {
                id,
                status: UserStatus::Deactivated.as_str(),
            });
            w.audits.push(AuditRow {
                action: "import.deactivate",
                target: format!("user/{id}"),
                summary: format!("absent from the sync of account {}", self.account.code),
            });
            out.push(Outcome::done(0, "deactivated", id));
        }
        tx.write_import(self.account.id, &[&w]).await?;
        Ok(out)
    }
}

/// The latest import report of an account, for an actor who administers it.
pub async fn latest_report(
    store: &Store,
    actor: &Actor,
    account: &AccountCode,
) -> Result<crate::store::ReportMeta, Error> {
    let mut tx = store.read().await?;
    let a = tx.account(account.as_str()).await?;
    tx.authority(actor, a.id).await?.require_admin(&a.code)?;
    tx.commit().await?;
    store.report(a.id).await?.ok_or_else(|| {
        Error::NotFound(format!(
            "import report of account {} (none in the last {} days)",
            a.code,
            crate::store::REPORT_DAYS
        ))
    })
}

/// Rows as CSV bytes.
fn csv_rows<I: IntoIterator<Item = [String; 5]>>(rows: I) -> Result<Vec<u8>, Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.write_record(&r)
            .map_err(|e| Error::Internal(format!("report: {e}")))?;
    }
    w.into_inner()
        .map_err(|e| Error::Internal(format!("report: {e}")))
}

/// A line's outcome for a write the database refused; other errors are
/// faults of the system.
fn line_fault(line: u64, e: Error) -> Result<Outcome, Error> {
    match e {
        Error::AlreadyExists(what) => Ok(Outcome::new(
            line,
            "invalid_user_data",
            field_of(&what),
            format!("{what} already exists"),
        )),
        Error::FailedPrecondition(why) => Ok(Outcome::new(line, "invalid_user_data", "", why)),
        Error::Invalid(v) => {
            let first = v.0.first().map(|f| f.field.clone()).unwrap_or_default();
            Ok(Outcome::new(
                line,
                "invalid_user_data",
                &first,
                v.to_string(),
            ))
        }
        other => Err(other),
    }
}

/// How a line names its user.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Identity {
    Key(String),
    Email(String),
    Login(String),
    /// Neither key, email nor login: always a new user.
    Nobody,
}

impl Identity {
    fn describe(&self) -> String {
        match self {
            Identity::Key(k) => format!("user key {k}"),
            Identity::Email(e) => format!("email {e}"),
            Identity::Login(l) => format!("login {l}"),
            Identity::Nobody => "same name".into(),
        }
    }
}

/// What a report says of the error that stopped an import. The details of
/// an internal error stay in the logs.
pub fn stop_reason(e: &Error) -> String {
    match e {
        Error::Internal(_) => "internal error".to_owned(),
        e => e.to_string(),
    }
}

/// `duplicate_in_file` for a line.
fn duplicate(line: u64, identity: &Identity) -> Outcome {
    Outcome::new(
        line,
        "duplicate_in_file",
        "",
        format!("the same user as an earlier line ({})", identity.describe()),
    )
}

/// A line that passed the checks needing no database.
struct Candidate {
    /// The hash of its identity, as the ledger keeps it.
    seen: i64,
    line: u64,
    l: ImportLine,
    login: Option<String>,
    tags: Vec<String>,
    email: String,
    identity: Identity,
    /// Problems found so far, reported with the profile's.
    v: Violations,
}

/// What a batch looked up, and what its earlier lines claimed.
#[derive(Default)]
struct Lookups {
    by_key: HashMap<String, Uuid>,
    by_email: HashMap<String, Uuid>,
    by_login: HashMap<String, Uuid>,
    /// Logins the lookup asked about (a login not among them may be taken).
    looked_up: HashSet<String>,
    users: HashMap<Uuid, User>,
    links: HashMap<Uuid, Vec<String>>,
    grants: HashMap<Uuid, Vec<(String, Option<Scope>)>>,
    new_logins: HashSet<String>,
    new_emails: HashSet<String>,
    /// Users met that the importer does not manage (another tenant's).
    unmanaged: HashSet<Uuid>,
}

/// Why a line naming another tenant's user by email or login fails: the
/// same words whoever holds it, and nothing about him.
fn not_managed() -> String {
    "already used by a user you do not manage; link him by his user key".into()
}

/// The field a uniqueness violation is about.
fn field_of(what: &str) -> &'static str {
    if what.contains("email") {
        "email"
    } else if what.contains("login") {
        "login"
    } else {
        ""
    }
}
