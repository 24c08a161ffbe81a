//! Step 3 of a line, pure: from the line, what its batch looked up and
//! claimed, and the importer's authority, what the line does — a new user,
//! a change to an existing one, nothing, or a refusal saying why.

use std::collections::HashMap;

use uuid::Uuid;

use super::{
    lookup::{changes_status, Claims, Lookups},
    outcome::{Outcome, NOT_MANAGED},
    precheck::{Candidate, Identity},
};
use crate::{
    bulk::reader::{normalise, RightCell, Secret},
    domain::{
        account::Account,
        import::{LineStatus, LinkChange, RightAsked, TeamJoin, UserChange},
        rights::{Authority, RightDef, Scope},
        role::RoleDef,
        user::{default_login, DefaultLogin, Profile, ProfileField, User, UserKind, UserStatus},
    },
    service::not_admin_everywhere,
};

/// What every line of an import is decided against.
pub struct Context<'a> {
    pub account: &'a Account,
    pub authority: &'a Authority,
    pub catalog: &'a [RightDef],
    /// The profile fields the file has columns for; an existing user keeps
    /// the others.
    pub present: &'a [ProfileField],
    /// Whether the file has a tags column (else a linked user keeps his).
    pub has_tags: bool,
    /// Whether the file has a roles column (else a user keeps his roles).
    pub has_roles: bool,
    /// Whether the file has a teams column (else a user keeps his teams).
    pub has_teams: bool,
    /// Every role, with its id.
    pub roles: &'a [(Uuid, RoleDef)],
    /// The teams of the account's organization by `path_key`.
    pub teams: &'a HashMap<String, Uuid>,
}

pub use crate::domain::team::path_key;

/// What a line does.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Create(Creation),
    Update(UserChange),
    Unchanged(uuid::Uuid),
}

/// A user to create, before his identifiers are drawn.
#[derive(Debug, PartialEq, Eq)]
pub struct Creation {
    pub kind: UserKind,
    pub status: UserStatus,
    pub login: LoginChoice,
    pub profile: Profile,
    /// Lowercased, claimed for the rest of the batch.
    pub email: Option<String>,
    pub tags: Vec<String>,
    pub grants: Vec<RightAsked>,
    pub roles: Vec<Uuid>,
    pub teams: Vec<TeamJoin>,
    /// His first password's hash (the file's password column), to be
    /// changed at his first login.
    pub password: Option<String>,
}

/// A new user's login.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginChoice {
    /// Known free: the line's own, or his email.
    Chosen(String),
    /// To be chosen by the store among the free ones.
    Default(DefaultLogin),
}

/// The user a line is about, among those the batch found; `None`: a new
/// user. A user of another tenant is reached by his user key only: his
/// email or login fails the line and tells nothing about him.
pub fn identify<'a>(known: &'a Lookups, c: &Candidate) -> Result<Option<&'a User>, Outcome> {
    if let Identity::Key(key) = &c.identity {
        if !known.by_key.contains_key(key) {
            return Err(Outcome::invalid_data(
                c.line,
                "user_key",
                format!("no user has the key {key}"),
            ));
        }
    }
    let user = known.matched(c);
    match (&c.identity, user) {
        (Identity::Email(_), Some(u)) if known.unmanaged.contains(&u.id) => {
            Err(Outcome::invalid_data(c.line, "email", NOT_MANAGED))
        }
        (Identity::Login(_), Some(u)) if known.unmanaged.contains(&u.id) => {
            Err(Outcome::invalid_data(c.line, "login", NOT_MANAGED))
        }
        _ => Ok(user),
    }
}

/// Decides a line about `existing` (`None`: a new user).
pub fn decide(
    ctx: &Context,
    known: &Lookups,
    claims: &Claims,
    c: Candidate,
    existing: Option<&User>,
) -> Result<Decision, Outcome> {
    let Candidate {
        line,
        asked,
        login,
        tags,
        mut problems,
        ..
    } = c;
    let refuse = |field: &str, why: &str| Outcome::invalid_data(line, field, why);
    let kind = existing.map(|u| u.kind).unwrap_or(asked.kind);
    // A new user is what the line says; an existing one changes only in
    // the fields the file has columns for.
    let raw = match existing {
        None => asked.profile.clone(),
        Some(u) => {
            let mut raw = u.profile.to_raw();
            raw.copy_fields(&asked.profile, ctx.present);
            raw
        }
    };
    let profile = Profile::parse(&raw, kind, "", &mut problems);
    if let Some(first) = problems.0.first() {
        return Err(refuse(&first.field, &problems.to_string()));
    }
    // Nobody else may hold the email, and a given login must be free.
    let email = profile.email.as_ref().map(|e| e.to_lowercase());
    if let Some(e) = &email {
        let holder = known.by_email.get(e).copied();
        let mine = existing.map(|u| u.id);
        if holder.is_some_and(|h| Some(h) != mine && known.unmanaged.contains(&h)) {
            return Err(refuse("email", NOT_MANAGED));
        }
        if (holder.is_some() && holder != mine) || (holder.is_none() && claims.emails.contains(e)) {
            return Err(refuse("email", "a user with this email already exists"));
        }
    }
    if existing.is_none() {
        if let Some(given) = &login {
            if known
                .by_login
                .get(given)
                .is_some_and(|h| known.unmanaged.contains(h))
            {
                return Err(refuse("login", NOT_MANAGED));
            }
            if known.by_login.contains_key(given) || claims.logins.contains(given) {
                return Err(refuse("login", "a user with this login already exists"));
            }
        }
    }
    let current = existing
        .and_then(|u| known.grants.get(&u.id))
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let (grants, revokes) = plan_rights(ctx, line, kind, &asked.rights, current)?;
    let no_ids: &[Uuid] = &[];
    let held = existing.and_then(|u| known.roles.get(&u.id));
    let (role_grants, role_revokes) = match ctx.has_roles {
        true => plan_roles(
            ctx,
            line,
            kind,
            &asked.roles,
            held.map_or(no_ids, Vec::as_slice),
        )?,
        false => (Vec::new(), Vec::new()),
    };
    let member_of = existing.and_then(|u| known.teams.get(&u.id));
    let (team_joins, team_leaves) = match ctx.has_teams {
        true => plan_teams(ctx, &asked.teams, member_of.map_or(no_ids, Vec::as_slice)),
        false => (Vec::new(), Vec::new()),
    };

    let Some(user) = existing else {
        let login = match login {
            Some(given) => LoginChoice::Chosen(given),
            None => {
                let choice = default_login(&profile);
                // The email, when the lookups tell it is free as a login;
                // else the store decides.
                match &choice.email {
                    Some(e)
                        if known.looked_up.contains(e)
                            && !known.by_login.contains_key(e)
                            && !claims.logins.contains(e) =>
                    {
                        LoginChoice::Chosen(e.clone())
                    }
                    _ => LoginChoice::Default(choice),
                }
            }
        };
        let password = match &asked.password {
            Some(Secret::Hashed(phc)) => Some(phc.clone()),
            Some(Secret::Clear(_)) => {
                return Err(refuse(
                    "password",
                    "was not hashed before the decision (a bug)",
                ))
            }
            None => None,
        };
        // An advanced user without a password is invited (seed 004), a
        // standard one active at once, unless the line deactivates him.
        let status = match (asked.status, kind, &password) {
            (Some(UserStatus::Deactivated), _, _) => UserStatus::Deactivated,
            (_, UserKind::Advanced, None) => UserStatus::Invited,
            _ => UserStatus::Active,
        };
        return Ok(Decision::Create(Creation {
            kind,
            status,
            login,
            profile,
            email,
            tags,
            grants,
            roles: role_grants,
            teams: team_joins,
            password,
        }));
    };

    if user.status == UserStatus::Archived {
        return Err(refuse("", "the user is archived"));
    }
    if user.kind == UserKind::Standard
        && user.home_account.as_deref() != Some(ctx.account.code.as_str())
    {
        return Err(refuse("", "a standard user of another account"));
    }
    let mut change = UserChange {
        id: user.id,
        ..UserChange::default()
    };
    if user.profile != profile {
        change.profile = Some((profile, user.login.clone()));
    }
    change.link = match known.links.get(&user.id) {
        None => Some(LinkChange::Link(tags)),
        Some(before) if ctx.has_tags && *before != tags => Some(LinkChange::Retag(tags)),
        Some(_) => None,
    };
    if !grants.is_empty() || !role_grants.is_empty() {
        user.status
            .may_receive_grants()
            .map_err(|why| refuse("", &why))?;
    }
    change.grants = grants;
    change.revokes = revokes;
    change.role_grants = role_grants;
    change.role_revokes = role_revokes;
    change.team_joins = team_joins;
    change.team_leaves = team_leaves;
    if let Some(to) = asked.status.filter(|&to| changes_status(user, to)) {
        match known.not_administered.get(&user.id) {
            Some(missing) if !missing.is_empty() => {
                return Err(refuse("", &not_admin_everywhere(missing).to_string()))
            }
            _ => {}
        }
        user.status.transition(to).map_err(|why| refuse("", &why))?;
        change.status = Some(to);
    }
    if change.aspects().is_empty() {
        Ok(Decision::Unchanged(user.id))
    } else {
        Ok(Decision::Update(change))
    }
}

/// The grants and revokes a line's right cells ask of a user holding
/// `current` on the account, each checked against the catalog and the
/// delegation rule (a re-scope needs both the old and the new scope).
fn plan_rights(
    ctx: &Context,
    line: u64,
    kind: UserKind,
    cells: &[(String, RightCell)],
    current: &[RightAsked],
) -> Result<(Vec<RightAsked>, Vec<String>), Outcome> {
    let mut wanted = Vec::new();
    let mut unwanted = Vec::new();
    for (code, cell) in cells {
        let scope = match cell {
            RightCell::No => {
                unwanted.push(code.clone());
                continue;
            }
            RightCell::Yes => None,
            RightCell::Scope(s) => Some(*s),
        };
        let def = ctx.catalog.iter().find(|d| &d.code == code);
        if def.is_some_and(|d| !d.kinds.contains(&kind)) {
            return Err(Outcome::refused(
                line,
                LineStatus::InvalidChoice,
                code,
                format!("{code} cannot be held by {} users", kind.as_str()),
            ));
        }
        wanted.push((code.clone(), scope));
    }
    let mut grants = Vec::new();
    for (right, scope) in &wanted {
        let before = current.iter().find(|(r, _)| r == right);
        if before.is_some_and(|(_, s)| s == scope) {
            continue;
        }
        if let Some((r, s)) = before {
            delegate(ctx, line, r, *s)?;
        }
        delegate(ctx, line, right, *scope)?;
        grants.push((right.clone(), *scope));
    }
    let mut revokes = Vec::new();
    for (right, scope) in current.iter().filter(|(r, _)| unwanted.contains(r)) {
        delegate(ctx, line, right, *scope)?;
        revokes.push(right.clone());
    }
    Ok((grants, revokes))
}

/// The roles a line's roles cell gives and takes back of a user holding
/// `held` on the account: names are codes or labels (fr or en, matched as
/// headers are); each role given or taken back follows the delegation rule
/// for every right of it.
fn plan_roles(
    ctx: &Context,
    line: u64,
    kind: UserKind,
    names: &[String],
    held: &[Uuid],
) -> Result<(Vec<Uuid>, Vec<Uuid>), Outcome> {
    let mut wanted: Vec<&(Uuid, RoleDef)> = Vec::new();
    for name in names {
        let n = normalise(name);
        let role = ctx.roles.iter().find(|(_, r)| r.code == *name).or_else(|| {
            ctx.roles.iter().find(|(_, r)| {
                n == normalise(&r.code)
                    || n == normalise(&r.label_fr)
                    || n == normalise(&r.label_en)
            })
        });
        let Some(role) = role else {
            return Err(Outcome::refused(
                line,
                LineStatus::InvalidChoice,
                "roles",
                format!("{name:?} is not a role (a code or label of ListRoles)"),
            ));
        };
        if !role.1.open_to(kind) {
            return Err(Outcome::refused(
                line,
                LineStatus::InvalidChoice,
                "roles",
                format!(
                    "role {} cannot be held by {} users",
                    role.1.code,
                    kind.as_str()
                ),
            ));
        }
        if !wanted.iter().any(|(id, _)| *id == role.0) {
            wanted.push(role);
        }
    }
    let delegate_role = |def: &RoleDef| {
        ctx.authority
            .may_delegate_role(&ctx.account.code, def)
            .map_err(|refused| {
                Outcome::refused(line, LineStatus::RightNotHeld, "roles", refused.to_string())
            })
    };
    let mut grants = Vec::new();
    for (id, def) in wanted.iter().filter(|(id, _)| !held.contains(id)) {
        delegate_role(def)?;
        grants.push(*id);
    }
    let mut revokes = Vec::new();
    for id in held
        .iter()
        .filter(|id| !wanted.iter().any(|(w, _)| w == *id))
    {
        if let Some((_, def)) = ctx.roles.iter().find(|(r, _)| r == id) {
            delegate_role(def)?;
        }
        revokes.push(*id);
    }
    Ok((grants, revokes))
}

/// The teams a line's teams cell has a user join and leave, among the
/// organization's (a path that does not exist yet is created by the
/// import: its admin may shape the organization's teams).
fn plan_teams(
    ctx: &Context,
    paths: &[Vec<String>],
    member_of: &[Uuid],
) -> (Vec<TeamJoin>, Vec<Uuid>) {
    let wanted: Vec<TeamJoin> = paths
        .iter()
        .map(|p| match ctx.teams.get(&path_key(p)) {
            Some(id) => TeamJoin::Existing(*id),
            None => TeamJoin::New(p.clone()),
        })
        .collect();
    let joins = wanted
        .iter()
        .filter(|j| !matches!(j, TeamJoin::Existing(id) if member_of.contains(id)))
        .cloned()
        .collect();
    let leaves = member_of
        .iter()
        .filter(|id| !wanted.contains(&TeamJoin::Existing(**id)))
        .copied()
        .collect();
    (joins, leaves)
}

/// `right_not_held` unless the importer may delegate `right` with `scope`.
fn delegate(ctx: &Context, line: u64, right: &str, scope: Option<Scope>) -> Result<(), Outcome> {
    ctx.authority
        .may_delegate(&ctx.account.code, right, scope)
        .map_err(|refused| Outcome::refused(line, LineStatus::RightNotHeld, right, refused.0))
}

#[cfg(test)]
mod tests;
