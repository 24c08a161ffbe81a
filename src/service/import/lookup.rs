//! Step 2 of a batch: everything its lines' decisions need from the
//! database, fetched in a few queries before any line is decided.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use super::precheck::{Candidate, Identity};
use crate::{
    domain::{
        account::Account,
        import::RightAsked,
        principal::Actor,
        user::{User, UserStatus},
        Error,
    },
    store::Tx,
};

/// What a batch looked up.
#[derive(Debug, Default)]
pub struct Lookups {
    pub by_key: HashMap<String, Uuid>,
    pub by_email: HashMap<String, Uuid>,
    pub by_login: HashMap<String, Uuid>,
    /// Logins the lookup asked about (a login not among them may be taken).
    pub looked_up: HashSet<String>,
    pub users: HashMap<Uuid, User>,
    /// The tags of the users linked to the import's account.
    pub links: HashMap<Uuid, Vec<String>>,
    /// The grants of the users on the import's account.
    pub grants: HashMap<Uuid, Vec<RightAsked>>,
    /// The roles (ids) the users hold on the import's account, live.
    pub roles: HashMap<Uuid, Vec<Uuid>>,
    /// The teams (ids) of the users in the account's organization.
    pub teams: HashMap<Uuid, Vec<Uuid>>,
    /// Users met that the importer does not manage (another tenant's).
    pub unmanaged: HashSet<Uuid>,
    /// For the users whose line changes their status: the accounts they are
    /// linked to that the importer does not administer (a status changes the
    /// user everywhere).
    pub not_administered: HashMap<Uuid, Vec<String>>,
}

/// What the batch's earlier lines claimed.
#[derive(Debug, Default)]
pub struct Claims {
    pub logins: HashSet<String>,
    pub emails: HashSet<String>,
}

impl Lookups {
    /// The users a batch may be about or collide with.
    pub async fn fetch<'a>(
        tx: &mut Tx,
        actor: &Actor,
        account: &Account,
        batch: impl Iterator<Item = &'a Candidate> + Clone,
    ) -> Result<Self, Error> {
        let (mut keys, mut emails, mut logins) = (Vec::new(), Vec::new(), Vec::new());
        for c in batch.clone() {
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
        let mut found = Lookups::default();
        for u in tx
            .users_known_by(&keys, &emails, &logins, actor.user_id, actor.is_operator())
            .await?
        {
            if !u.managed {
                found.unmanaged.insert(u.id);
            }
            if let Some(key) = u.user_key {
                found.by_key.insert(key, u.id);
            }
            if let Some(e) = u.email {
                found.by_email.insert(e, u.id);
            }
            found.by_login.insert(u.login, u.id);
        }
        found.looked_up = logins.into_iter().collect();
        let ids: Vec<Uuid> = found
            .by_key
            .values()
            .chain(found.by_email.values())
            .chain(found.by_login.values())
            .copied()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        // A batch of new users met nobody: nothing more to ask.
        if ids.is_empty() {
            return Ok(found);
        }
        for u in tx.users_by_ids(&ids).await? {
            found.users.insert(u.id, u);
        }
        for (u, tags) in tx.links_to_account(account.id, &ids).await? {
            found.links.insert(u, tags);
        }
        for (u, right, scope) in tx.grants_on_account(account.id, &ids).await? {
            found.grants.entry(u).or_default().push((right, scope));
        }
        for (u, role) in tx.roles_on_account(account.id, &ids).await? {
            found.roles.entry(u).or_default().push(role);
        }
        for (u, team) in tx
            .teams_in_organization(account.organization_id, &ids)
            .await?
        {
            found.teams.entry(u).or_default().push(team);
        }
        // Status changes are rare: one query per user whose line asks one.
        if !actor.is_operator() {
            for c in batch {
                let Some(user) = found.matched(c) else {
                    continue;
                };
                if c.asked.status.is_some_and(|s| changes_status(user, s)) {
                    let id = user.id;
                    let missing = tx
                        .linked_accounts(id, actor.user_id)
                        .await?
                        .into_iter()
                        .filter(|a| !a.actor_is_admin)
                        .map(|a| a.code)
                        .collect();
                    found.not_administered.insert(id, missing);
                }
            }
        }
        Ok(found)
    }

    /// The user a candidate names, if the lookups found him (managed or
    /// not).
    pub fn matched(&self, c: &Candidate) -> Option<&User> {
        let id = match &c.identity {
            Identity::Key(key) => self.by_key.get(key),
            Identity::Email(e) => self.by_email.get(e),
            Identity::Login(l) => self.by_login.get(l),
            Identity::Nobody => None,
        }?;
        self.users.get(id)
    }
}

/// Whether asking `to` changes the status of `user` (an import sets
/// `active` or `deactivated` only). An invited user becomes active by
/// completing his invitation, never by a file: to him `actif` means "not
/// deactivated", so that a file re-imported leaves him `unchanged`.
pub fn changes_status(user: &User, to: UserStatus) -> bool {
    to != user.status
        && matches!(to, UserStatus::Active | UserStatus::Deactivated)
        && !(user.status == UserStatus::Invited && to == UserStatus::Active)
}
