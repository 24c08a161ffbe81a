//! A batch of lines in one transaction: precheck each line, look them up in
//! a few queries while the ledger says which an earlier batch already named
//! (those are dropped), decide each line, and write what the good ones
//! decided in one statement per table while the ledger records whom the
//! batch named.

use std::collections::{HashMap, HashSet};

use super::{
    decide::{decide, identify, path_key, Context, Decision, LoginChoice},
    lookup::{Claims, Lookups},
    outcome::Outcome,
    precheck::{duplicate, precheck},
    Import,
};
use crate::{
    bulk::reader::{ImportLine, LineProblem},
    domain::{
        account::Account,
        import::{ImportWrite, LineStatus, NewUser, TeamJoin},
        key::NewKey,
        user::{UserKey, UserKind},
        Error,
    },
    store::{Store, Tx},
};

impl Import {
    /// Applies a batch of lines inside `tx`. A bad line changes nothing and
    /// never stops the others. Should the batch's statements fail on a
    /// uniqueness conflict (a concurrent writer), the lines are written one
    /// by one under savepoints so that each gets its own result. An `Err`
    /// is a fault of the system (Postgres unreachable), not of a line: the
    /// import stops.
    pub async fn apply_batch(
        &mut self,
        store: &Store,
        tx: &mut Tx,
        lines: Vec<(u64, Result<ImportLine, LineProblem>)>,
    ) -> Result<Vec<Outcome>, Error> {
        let report = self.ledger()?;
        tx.hold_report(report).await?;
        let mut slots: Vec<Option<Outcome>> = Vec::with_capacity(lines.len());
        let mut pending = Vec::new();
        // Identities met in this batch; the whole file's are in the ledger.
        let mut seen = HashSet::new();
        for (line, parsed) in lines {
            match precheck(&self.options.account, &mut seen, line, parsed) {
                Ok(c) => {
                    pending.push((slots.len(), c));
                    slots.push(None);
                }
                Err(o) => slots.push(Some(o)),
            }
        }
        // Identities met in an earlier batch are duplicates too. The ledger
        // says which while the transaction looks the batch up: every line
        // prechecked, duplicates included, which only adds what a duplicate
        // names to what the others' decisions may consult.
        let identities: Vec<i64> = pending.iter().map(|(_, c)| c.identity_hash).collect();
        let (first, known) = tokio::try_join!(
            store.ledger_first_seen(report, &identities),
            Lookups::fetch(
                tx,
                &self.actor,
                &self.account,
                pending.iter().map(|(_, c)| c)
            ),
        )?;
        let first: HashSet<i64> = first.into_iter().collect();
        pending.retain(|(slot, c)| {
            let keep = first.contains(&c.identity_hash);
            if !keep {
                slots[*slot] = Some(duplicate(c.line, &c.identity));
            }
            keep
        });
        if pending.is_empty() {
            return Ok(slots.into_iter().flatten().collect());
        }
        // Users the batch may meet that earlier batches named.
        let met: Vec<uuid::Uuid> = known.users.keys().copied().collect();
        self.named = store
            .ledger_named(report, &met)
            .await?
            .into_iter()
            .collect();
        let mut teams = HashMap::new();
        if self.has_teams {
            for t in tx.teams(self.account.organization_id).await? {
                let path: Vec<String> = t.path.split('/').map(String::from).collect();
                teams.insert(path_key(&path), t.id);
            }
        }
        let ctx = Context {
            account: &self.account,
            authority: &self.authority,
            catalog: &self.catalog,
            present: &self.present,
            has_tags: self.has_tags,
            has_roles: self.has_roles,
            has_teams: self.has_teams,
            roles: &self.roles,
            teams: &teams,
        };
        let mut claims = Claims::default();
        let mut writes: Vec<(usize, ImportWrite)> = Vec::new();
        for (slot, c) in pending {
            let line = c.line;
            let existing = match identify(&known, &c) {
                Ok(existing) => existing,
                Err(o) => {
                    slots[slot] = Some(o);
                    continue;
                }
            };
            // Named by the file, whatever becomes of the line: a sync does
            // not deactivate a user whose line was refused.
            if let Some(u) = existing {
                if !self.named.insert(u.id) {
                    slots[slot] = Some(duplicate(line, &c.identity));
                    continue;
                }
            }
            let outcome = match decide(&ctx, &known, &claims, c, existing) {
                Err(o) => o,
                Ok(Decision::Unchanged(id)) => Outcome::done(line, LineStatus::Unchanged, id),
                Ok(Decision::Update(change)) => {
                    let id = change.id;
                    writes.push((slot, ImportWrite::Update { line, change }));
                    Outcome::done(line, LineStatus::Updated, id)
                }
                Ok(Decision::Create(plan)) => {
                    let login = match plan.login {
                        LoginChoice::Chosen(login) => login,
                        LoginChoice::Default(choice) => {
                            tx.free_login_besides(&choice, &claims.logins).await?
                        }
                    };
                    let rng = |e: getrandom::Error| Error::Internal(format!("os rng: {e}"));
                    let user_key = match plan.kind {
                        UserKind::Advanced => Some(UserKey::generate().map_err(rng)?),
                        UserKind::Standard => None,
                    };
                    let id = uuid::Uuid::now_v7();
                    claims.logins.insert(login.clone());
                    if let Some(e) = plan.email {
                        claims.emails.insert(e);
                    }
                    self.named.insert(id);
                    let user = NewUser {
                        id,
                        kind: plan.kind,
                        status: plan.status,
                        login,
                        profile: plan.profile,
                        user_key,
                        tags: plan.tags,
                        grants: plan.grants,
                        roles: plan.roles,
                        teams: plan.teams,
                        // An advanced user's first key comes with his own
                        // password (the invitation's or the file's): one
                        // created deactivated gets none, and is invited if
                        // he is reactivated.
                        key: match (plan.kind, &plan.password) {
                            (UserKind::Advanced, None) => None,
                            _ => Some(NewKey::generate().map_err(rng)?),
                        },
                        password: plan.password,
                    };
                    writes.push((slot, ImportWrite::Create { line, user }));
                    Outcome::done(line, LineStatus::Created, id)
                }
            };
            slots[slot] = Some(outcome);
        }
        // Those already in the ledger are skipped there; recorded while the
        // transaction writes (a line whose write fails was named all the
        // same, as its user was met).
        let named: Vec<uuid::Uuid> = self.named.iter().copied().collect();
        let dry = self.options.dry_run;
        tokio::try_join!(
            store.ledger_name(report, &named),
            write(tx, &self.account, dry, teams, &writes, &mut slots),
        )?;
        Ok(slots.into_iter().flatten().collect())
    }
}

/// Writes what a batch decided under a savepoint; should its statements
/// fail (a concurrent writer took an email or a login meanwhile), writes
/// the lines one by one under savepoints of their own, each failure the
/// result of its line (`slots`). An `Err` is a fault of the system.
async fn write(
    tx: &mut Tx,
    account: &Account,
    dry: bool,
    mut teams: HashMap<String, uuid::Uuid>,
    writes: &[(usize, ImportWrite)],
    slots: &mut [Option<Outcome>],
) -> Result<(), Error> {
    // Teams the lines join that do not exist yet are created with the
    // writes, under the same savepoint: a line refused leaves none.
    let org = account.organization_id;
    let all: Vec<&ImportWrite> = writes.iter().map(|(_, w)| w).collect();
    tx.savepoint().await?;
    let result = match create_teams(tx, org, &teams, all.iter().copied(), dry).await {
        Ok(known) => tx.write_import(account, &all, &known).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => tx.release_savepoint().await,
        Err(Error::Unavailable(e)) => Err(Error::Unavailable(e)),
        Err(_) => {
            tx.rollback_to_savepoint().await?;
            for (slot, w) in writes {
                tx.savepoint().await?;
                let result = match create_teams(tx, org, &teams, std::iter::once(w), dry).await {
                    Ok(known) => tx.write_import(account, &[w], &known).await.map(|()| known),
                    Err(e) => Err(e),
                };
                match result {
                    Ok(known) => {
                        tx.release_savepoint().await?;
                        teams = known;
                    }
                    Err(e) => {
                        tx.rollback_to_savepoint().await?;
                        let line = slots[*slot].as_ref().map_or(0, |o| o.line);
                        slots[*slot] = Some(Outcome::of_write_error(line, e)?);
                    }
                }
            }
            Ok(())
        }
    }
}

/// The organization's teams by `path_key`, with those the writes join
/// that did not exist yet created (with their missing parents), once each
/// — except in a dry run, which creates nothing (a rehearsal takes no
/// lock a writer could wait for): its lines say what they would do, and
/// joins of teams still to be made are left out.
async fn create_teams<'w>(
    tx: &mut Tx,
    organization: uuid::Uuid,
    teams: &HashMap<String, uuid::Uuid>,
    writes: impl Iterator<Item = &'w ImportWrite>,
    dry_run: bool,
) -> Result<HashMap<String, uuid::Uuid>, Error> {
    let mut known = teams.clone();
    if dry_run {
        return Ok(known);
    }
    for w in writes {
        let joins = match w {
            ImportWrite::Create { user, .. } => &user.teams,
            ImportWrite::Update { change, .. } => &change.team_joins,
            ImportWrite::Deactivate { .. } => continue,
        };
        for join in joins {
            let TeamJoin::New(path) = join else {
                continue;
            };
            let mut parent = None;
            for depth in 1..=path.len() {
                let key = path_key(&path[..depth]);
                let id = match known.get(&key) {
                    Some(id) => *id,
                    None => {
                        let id = tx
                            .insert_team(organization, parent, &path[depth - 1])
                            .await?;
                        known.insert(key, id);
                        id
                    }
                };
                parent = Some(id);
            }
        }
    }
    Ok(known)
}
