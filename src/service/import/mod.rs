//! Importing users from CSV lines into one account.
//!
//! [`run`] drives a whole file: it reads the stream, groups lines into
//! transactions (a batch per transaction, or one for an atomic import or a
//! dry run, staged first so that nothing waits on the client while holding
//! locks) and tells the client how it goes. Each batch goes through the
//! same steps, each in its own file:
//!
//! 1. `precheck`: what a line says without the database — its cells, the
//!    account it names, who it is about (user key, else email or login),
//!    duplicates within the batch.
//! 2. `lookup`: everything the batch's decisions need, fetched in a few
//!    queries (the users named, their links and grants on the account, who
//!    the importer manages, the accounts he does not administer for status
//!    changes).
//! 3. `decide`: a pure function from a line, the lookups and the importer's
//!    authority to a [`Decision`](decide::Decision): create, change
//!    (profile, link or tags, grants, status), nothing, or a refusal with
//!    its `LineStatus`. Its rules are unit-tested in `decide/tests.rs`.
//! 4. `batch`: draws identifiers and keys, and writes every decided change
//!    as `domain::import::ImportWrite`s, which `store` turns into one
//!    statement per table; a uniqueness conflict with a concurrent writer
//!    is retried line by line.
//! 5. `sync`: after the last line of a sync, the account's users the file
//!    did not name are deactivated.
//!
//! The file's whole history (identities seen, users named) is kept in the
//! import's ledger in Postgres, not in memory; results go to the report
//! (`report`) as they are sent.

mod batch;
mod decide;
mod lookup;
mod outcome;
mod precheck;
mod report;
mod run;
mod sync;

/// What is known of a report, as the store keeps it.
pub use crate::store::{ReportMeta, REPORT_DAYS};
pub use outcome::Outcome;
pub use report::{latest_report, stop_reason, stream_report};
pub use run::{run, Progress, ProgressSender, Summary, BATCH, BATCH_PASSWORDS};

use std::collections::HashSet;

use uuid::Uuid;

use crate::{
    bulk::reader::{Column, Field, Header, ImportLine, LineProblem, Secret},
    domain::{
        account::{Account, AccountCode, AccountStatus},
        principal::Actor,
        rights::{Authority, RightDef},
        role::RoleDef,
        user::{ProfileField, UserKind},
        Error,
    },
    hasher::Hasher,
    store::{ReportOptions, Store},
};

/// How an import runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub account: AccountCode,
    /// Also deactivate the account's users the file does not name.
    pub sync: bool,
    /// Validate and report; write nothing.
    pub dry_run: bool,
    /// All lines or none.
    pub atomic: bool,
    /// A sync may deactivate more than 20 % of the account's users.
    pub force: bool,
    /// The kind of a line without a TYPE column or cell.
    pub default_kind: UserKind,
    /// Stop once this many lines have failed (0: never).
    pub max_failed_lines: i64,
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
    present: Vec<ProfileField>,
    /// Whether the file has a tags column.
    has_tags: bool,
    /// Whether the file has a roles column, a teams column.
    has_roles: bool,
    has_teams: bool,
    /// Every role, with its id (a roles cell names them by code or label).
    roles: Vec<(Uuid, RoleDef)>,
    /// Users named by the file that the current batch may meet again; the
    /// whole file's are in the ledger (`import_named`), kept by a sync.
    named: HashSet<Uuid>,
    /// This import's report (from its accepted header on), and its last
    /// chunk.
    report: Option<Uuid>,
    report_seq: i64,
    /// Hashes the file's passwords.
    hasher: Hasher,
}

impl Import {
    /// Checks that the actor administers the account; refuses the whole
    /// import otherwise.
    pub async fn start(
        store: &Store,
        hasher: &Hasher,
        actor: &Actor,
        options: Options,
    ) -> Result<Self, Error> {
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
        let roles = tx.roles_with_ids().await?;
        tx.commit().await?;
        Ok(Self {
            actor: actor.clone(),
            options,
            account,
            authority,
            catalog,
            present: Vec::new(),
            has_tags: false,
            has_roles: false,
            has_teams: false,
            roles,
            named: HashSet::new(),
            report: None,
            report_seq: 0,
            hasher: hasher.clone(),
        })
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

    /// Hashes the password cells of a batch, one at a time (a batch never
    /// takes more than one of the pool's workers: logins keep the others).
    /// A dry run hashes nothing (its rehearsal writes a placeholder, rolled
    /// back).
    pub async fn hash_passwords(
        &self,
        batch: &mut [(u64, Result<ImportLine, LineProblem>)],
    ) -> Result<(), Error> {
        for (_, parsed) in batch.iter_mut() {
            let Ok(line) = parsed else { continue };
            if let Some(Secret::Clear(password)) = &line.password {
                let hash = if self.options.dry_run {
                    self.hasher.placeholder()
                } else {
                    self.hasher.hash_patiently(password).await?
                };
                line.password = Some(Secret::Hashed(hash));
            }
        }
        Ok(())
    }

    /// Records which columns the file has, and starts the import's report:
    /// from here on, it replaces the account's previous one (a file refused
    /// whole leaves that one in place). Refused while another import into
    /// the account runs.
    pub async fn set_header(&mut self, store: &Store, header: &Header) -> Result<(), Error> {
        for column in &header.columns {
            match column {
                Column::Field(Field::Profile(f)) => self.present.push(*f),
                Column::Field(Field::Tags) => self.has_tags = true,
                Column::Field(Field::Roles) => self.has_roles = true,
                Column::Field(Field::Teams) => self.has_teams = true,
                // An atomic import stages its records as they are, and no
                // password may rest in clear in the database.
                Column::Field(Field::Password) if self.options.atomic => {
                    return Err(Error::invalid(
                        "options.atomic",
                        "an atomic import takes no password column: import without atomic, or leave passwords to invitations",
                    ))
                }
                _ => {}
            }
        }
        let options = ReportOptions {
            sync: self.options.sync,
            dry_run: self.options.dry_run,
            atomic: self.options.atomic,
            force: self.options.force,
        };
        let header = report::csv_rows(std::iter::once(report::REPORT_HEADER.map(String::from)))?;
        self.report = Some(
            store
                .start_report(self.account.id, self.actor.user_id, options, &header)
                .await?,
        );
        Ok(())
    }
}
