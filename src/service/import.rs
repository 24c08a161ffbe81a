//! Importing users from CSV lines into one account. Each line runs under a
//! savepoint, so a bad line changes nothing and never stops the others; the
//! caller decides how lines are grouped into transactions (a batch per
//! transaction, or one for an atomic import or a dry run).

use std::{
    collections::HashSet,
    hash::{DefaultHasher, Hash, Hasher},
};

use uuid::Uuid;

use super::require_admin_everywhere;
use crate::domain::user::{apply_profile_paths, PROFILE_FIELDS};
use crate::{
    bulk::reader::{Header, ImportLine, LineProblem, RightCell},
    domain::{
        account::{Account, AccountCode, AccountStatus},
        key::NewKey,
        principal::Actor,
        rights::{Authority, GrantSpec, RightDef},
        user::{
            default_login, parse_login, parse_tags, Profile, User, UserKey, UserKind, UserStatus,
        },
        Error, Violations,
    },
    store::{NewUser, Store, Tx},
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
    /// Hashes of the identities met, for `duplicate_in_file`.
    seen: HashSet<u64>,
    /// Users the file named (kept by a sync).
    named: HashSet<Uuid>,
}

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
            seen: HashSet::new(),
            named: HashSet::new(),
        })
    }

    pub fn catalog(&self) -> &[RightDef] {
        &self.catalog
    }

    /// Records which columns the file has.
    pub fn set_header(&mut self, header: &Header) {
        self.present = header
            .columns
            .iter()
            .filter_map(|c| match c {
                crate::bulk::reader::Column::Field(f) => Some(*f),
                _ => None,
            })
            .collect();
    }

    fn has(&self, field: &str) -> bool {
        self.present.contains(&field)
    }

    /// Applies one line inside `tx`. An `Err` is a fault of the system
    /// (Postgres unreachable), not of the line: the import stops.
    pub async fn apply(
        &mut self,
        tx: &mut Tx,
        line: u64,
        parsed: Result<ImportLine, LineProblem>,
    ) -> Result<Outcome, Error> {
        let l = match parsed {
            Ok(l) => l,
            Err(LineProblem::InvalidChoice { column, value, why }) => {
                return Ok(Outcome::new(
                    line,
                    "invalid_choice",
                    &column,
                    format!("{value:?}: {why}"),
                ))
            }
            Err(LineProblem::InvalidUserData { field, why }) => {
                return Ok(Outcome::new(line, "invalid_user_data", &field, why))
            }
        };
        tx.savepoint().await?;
        match self.apply_line(tx, line, l).await {
            Ok(outcome) => {
                tx.release_savepoint().await?;
                Ok(outcome)
            }
            Err(Refusal::Outcome(outcome)) => {
                tx.rollback_to_savepoint().await?;
                Ok(outcome)
            }
            Err(Refusal::Fault(e)) => {
                tx.rollback_to_savepoint().await?;
                match e {
                    Error::AlreadyExists(what) => Ok(Outcome::new(
                        line,
                        "invalid_user_data",
                        field_of(&what),
                        format!("{what} already exists"),
                    )),
                    Error::FailedPrecondition(why) => {
                        Ok(Outcome::new(line, "invalid_user_data", "", why))
                    }
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
        }
    }

    async fn apply_line(
        &mut self,
        tx: &mut Tx,
        line: u64,
        l: ImportLine,
    ) -> Result<Outcome, Refusal> {
        let refuse = |status, column: &str, msg: String| {
            Refusal::Outcome(Outcome::new(line, status, column, msg))
        };
        if let Some(a) = &l.account {
            if a != &self.account.code {
                return Err(refuse(
                    "invalid_choice",
                    "COMPTE",
                    format!("{a:?}: this import is into account {}", self.account.code),
                ));
            }
        }
        let key = match &l.user_key {
            Some(k) => Some(
                UserKey::parse(k).map_err(|why| refuse("invalid_user_data", "user_key", why))?,
            ),
            None => None,
        };
        let mut v = Violations::default();
        let login = l
            .login
            .as_deref()
            .and_then(|x| v.check("login", parse_login(x)));
        let tags = parse_tags(&l.tags, "tags", &mut v);

        // Who the line is about: by user key, else email (advanced) or login
        // (standard, whose login defaults to his email).
        let email = l.profile.email.trim().to_lowercase();
        let identity = match (&key, l.kind) {
            (Some(k), _) => format!("key:{}", k.as_str()),
            (None, UserKind::Advanced) if !email.is_empty() => format!("email:{email}"),
            (None, _) => match login
                .clone()
                .or_else(|| (!email.is_empty()).then(|| email.clone()))
            {
                Some(x) => format!("login:{x}"),
                None => format!(
                    "name:{}:{}",
                    l.profile.first_name.trim(),
                    l.profile.last_name.trim()
                )
                .to_lowercase(),
            },
        };
        let mut h = DefaultHasher::new();
        identity.hash(&mut h);
        if !self.seen.insert(h.finish()) {
            return Err(refuse(
                "duplicate_in_file",
                "",
                format!("the same user as an earlier line ({identity})"),
            ));
        }
        let existing = match &key {
            Some(k) => Some(tx.user_id_by_key(k).await?.ok_or_else(|| {
                refuse(
                    "invalid_user_data",
                    "user_key",
                    format!("no user has the key {k}"),
                )
            })?),
            None if l.kind == UserKind::Advanced && !email.is_empty() => {
                tx.user_id_by_email(&email).await?
            }
            None => match login
                .clone()
                .or_else(|| (!email.is_empty()).then(|| email.clone()))
            {
                Some(x) => tx.user_id_by_login(&x).await?,
                None => None,
            },
        };
        let existing = match existing {
            Some(id) => tx.user(id).await?,
            None => None,
        };
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
        let has_login = login.is_some() || existing.is_some();
        let profile = Profile::parse(&raw, kind, has_login, "", &mut v);
        if let Some(first) = v.0.first() {
            let field = first.field.clone();
            return Err(refuse("invalid_user_data", &field, v.to_string()));
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
            wanted.push(GrantSpec {
                right: code.clone(),
                scope,
                expires_at: None,
            });
        }
        let current = match &existing {
            Some(u) => {
                tx.grants(Some(u.id), Some(self.account.id), None, None, 1000)
                    .await?
            }
            None => Vec::new(),
        };
        let mut to_grant = Vec::new();
        for g in &wanted {
            let before = current.iter().find(|c| c.right == g.right);
            if before.is_some_and(|b| b.scope == g.scope) {
                continue;
            }
            if let Some(b) = before {
                self.delegate(line, &b.right, b.scope)?;
            }
            self.delegate(line, &g.right, g.scope)?;
            to_grant.push(g.clone());
        }
        let mut to_revoke = Vec::new();
        for c in current.iter().filter(|c| unwanted.contains(&c.right)) {
            self.delegate(line, &c.right, c.scope)?;
            to_revoke.push(c.right.clone());
        }

        let outcome = match existing {
            None => {
                self.create(
                    tx,
                    line,
                    &l,
                    kind,
                    login.as_deref(),
                    &profile,
                    &tags,
                    &to_grant,
                )
                .await?
            }
            Some(user) => {
                self.update(tx, line, &l, user, &profile, &tags, &to_grant, &to_revoke)
                    .await?
            }
        };
        Ok(outcome)
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

    #[allow(clippy::too_many_arguments)]
    async fn create(
        &mut self,
        tx: &mut Tx,
        line: u64,
        l: &ImportLine,
        kind: UserKind,
        login: Option<&str>,
        profile: &Profile,
        tags: &[String],
        grants: &[GrantSpec],
    ) -> Result<Outcome, Refusal> {
        let rng = |e: getrandom::Error| Error::Internal(format!("os rng: {e}"));
        let user_key = match kind {
            UserKind::Advanced => Some(UserKey::generate().map_err(rng)?),
            UserKind::Standard => None,
        };
        let user = tx
            .insert_user(&NewUser {
                kind,
                status: UserStatus::Active,
                login,
                derived_login: default_login(profile),
                profile,
                user_key: user_key.as_ref(),
                home_account_id: (kind == UserKind::Standard).then_some(self.account.id),
                default_account_id: Some(self.account.id),
            })
            .await?;
        tx.insert_link(user.id, self.account.id, tags).await?;
        for g in grants {
            tx.upsert_grant(user.id, self.account.id, g).await?;
        }
        // Every active user holds a key; its secret is not shown by an
        // import: the user or an admin regenerates it.
        let key = NewKey::generate().map_err(rng)?;
        tx.insert_key(user.id, &key, None).await?;
        if l.status == Some(UserStatus::Deactivated) {
            tx.set_user_status(user.id, UserStatus::Deactivated).await?;
        }
        tx.audit(
            "import.create",
            &format!("user/{}", user.id),
            &format!("line {line}: created on account {}", self.account.code),
        )
        .await?;
        self.named.insert(user.id);
        Ok(Outcome::done(line, "created", user.id))
    }

    #[allow(clippy::too_many_arguments)]
    async fn update(
        &mut self,
        tx: &mut Tx,
        line: u64,
        l: &ImportLine,
        user: User,
        profile: &Profile,
        tags: &[String],
        to_grant: &[GrantSpec],
        to_revoke: &[String],
    ) -> Result<Outcome, Refusal> {
        let refuse =
            |msg: String| Refusal::Outcome(Outcome::new(line, "invalid_user_data", "", msg));
        if user.status == UserStatus::Archived {
            return Err(refuse("the user is archived".into()));
        }
        if user.kind == UserKind::Standard
            && user.home_account.as_deref() != Some(self.account.code.as_str())
        {
            return Err(refuse("a standard user of another account".into()));
        }
        self.named.insert(user.id);
        let mut changed = Vec::new();
        if &user.profile != profile {
            let default_account = tx.linked_accounts(user.id, user.id).await?;
            let default_id = default_account
                .iter()
                .find(|a| Some(&a.code) == user.default_account.as_ref())
                .map(|a| a.account_id);
            tx.update_user_profile(user.id, profile, &user.login, default_id)
                .await?;
            changed.push("profile");
        }
        match tx.link(user.id, self.account.id).await? {
            None => {
                tx.insert_link(user.id, self.account.id, tags).await?;
                changed.push("link");
            }
            Some(link) if self.has("tags") && link.tags != tags => {
                tx.set_link_tags(user.id, self.account.id, tags).await?;
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
            for g in to_grant {
                tx.upsert_grant(user.id, self.account.id, g).await?;
            }
            if !to_revoke.is_empty() {
                tx.delete_grants(user.id, self.account.id, to_revoke)
                    .await?;
            }
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
                tx.set_user_status(user.id, status).await?;
                changed.push("status");
            }
        }
        if changed.is_empty() {
            return Ok(Outcome::done(line, "unchanged", user.id));
        }
        tx.audit(
            "import.update",
            &format!("user/{}", user.id),
            &format!(
                "line {line} on account {}: {}",
                self.account.code,
                changed.join(", ")
            ),
        )
        .await?;
        Ok(Outcome::done(line, "updated", user.id))
    }

    /// Sync mode, after the last line: deactivates the account's users the
    /// file did not name, unless that is more than 20 % of them and the
    /// import is not forced.
    pub async fn finish_sync(&mut self, tx: &mut Tx) -> Result<Vec<Outcome>, Error> {
        let live = tx.live_users_of_account(self.account.id).await?;
        let absent: Vec<Uuid> = live
            .iter()
            .copied()
            .filter(|u| !self.named.contains(u) && *u != self.actor.user_id)
            .collect();
        if !absent.is_empty() && absent.len() * 5 > live.len() && !self.options.force {
            return Err(Error::FailedPrecondition(format!(
                "sync would deactivate {} of the account's {} users (more than 20 %); nothing was deactivated; import with force to do it",
                absent.len(),
                live.len()
            )));
        }
        let mut out = Vec::new();
        for id in absent {
            tx.savepoint().await?;
            let accounts = tx.linked_accounts(id, self.actor.user_id).await?;
            if let Err(e) = require_admin_everywhere(&self.actor, &accounts) {
                tx.rollback_to_savepoint().await?;
                out.push(Outcome {
                    user_id: Some(id),
                    ..Outcome::new(
                        0,
                        "invalid_user_data",
                        "",
                        format!("absent, not deactivated: {e}"),
                    )
                });
                continue;
            }
            tx.set_user_status(id, UserStatus::Deactivated).await?;
            tx.audit(
                "import.deactivate",
                &format!("user/{id}"),
                &format!("absent from the sync of account {}", self.account.code),
            )
            .await?;
            tx.release_savepoint().await?;
            out.push(Outcome::done(0, "deactivated", id));
        }
        Ok(out)
    }
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
