//! The rights catalog, scopes, and the delegation rule.

use std::{
    collections::HashSet,
    sync::{OnceLock, RwLock},
};

use uuid::Uuid;

use super::{user::UserKind, Error, Violations};

/// The administration right: manage users and delegate rights on an account.
pub const ADMIN: &str = "admin.users";

/// How much of an account's parcels a tracking grant shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Parcels carrying the user's own key.
    UserKey,
    /// Parcels carrying one of the user's tags on the account.
    UserTag,
    /// Every parcel of the account.
    Consolidated,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::UserKey => "user_key",
            Scope::UserTag => "user_tag",
            Scope::Consolidated => "consolidated",
        }
    }

    pub fn from_db(s: &str) -> Option<Self> {
        match s {
            "user_key" => Some(Scope::UserKey),
            "user_tag" => Some(Scope::UserTag),
            "consolidated" => Some(Scope::Consolidated),
            _ => None,
        }
    }

    /// How wide a grant of `scope` is (`None`: an unscoped right, as wide as
    /// `consolidated`): 3, then `user_tag` 2, then `user_key` 1.
    pub fn width(scope: Option<Scope>) -> u8 {
        match scope {
            None | Some(Scope::Consolidated) => 3,
            Some(Scope::UserTag) => 2,
            Some(Scope::UserKey) => 1,
        }
    }

    /// Whether a holder of `self` may delegate `other`: the same scope, or
    /// anything when `self` is consolidated (the widest).
    pub fn covers(self, other: Scope) -> bool {
        self == other || self == Scope::Consolidated
    }
}

/// An entry of the rights catalog.
#[derive(Debug, Clone)]
pub struct RightDef {
    pub code: String,
    pub category: String,
    pub label_fr: String,
    pub label_en: String,
    pub kinds: Vec<UserKind>,
    pub scoped: bool,
}

/// The process's one copy of a right's code. Grants loaded for decisions
/// name their rights through it: ten million grants point at a few dozen
/// strings (the catalog's), which stay in the processor's cache, where
/// each grant used to own its copy. Only codes read from the database come
/// here, and a grant's code is in the catalog: the set is as small as the
/// catalog's history, so its strings are kept for the life of the process.
pub fn shared_code(code: &str) -> &'static str {
    static CODES: OnceLock<RwLock<HashSet<&'static str>>> = OnceLock::new();
    let codes = CODES.get_or_init(Default::default);
    // A panic while inserting leaves the set as it was: poison is ignored.
    let read = codes
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(c) = read.get(code).copied() {
        return c;
    }
    drop(read);
    let mut set = codes
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(c) = set.get(code) {
        return c;
    }
    let c: &'static str = Box::leak(code.into());
    set.insert(c);
    c
}

impl RightDef {
    /// Validates a right code: dotted lowercase words, 1-64 characters.
    pub fn parse_code(s: &str) -> Result<String, String> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.split('.').all(|w| {
                w.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                    && w.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            });
        if ok {
            Ok(s.to_owned())
        } else {
            Err(format!(
                "{s:?} is not a right code (dotted lowercase words, e.g. tracking.tool)"
            ))
        }
    }
}

/// A grant as asked for, validated against the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct GrantSpec {
    pub right: String,
    pub scope: Option<Scope>,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A grant as asked for, before validation.
#[derive(Debug, Clone)]
pub struct RawGrant {
    pub right: String,
    pub scope: Option<Scope>,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Checks each asked grant against the catalog and the target's kind.
pub fn validate_grants(
    catalog: &[RightDef],
    kind: UserKind,
    asked: &[RawGrant],
    field: &str,
    now: chrono::DateTime<chrono::Utc>,
    v: &mut Violations,
) -> Vec<GrantSpec> {
    let mut out: Vec<GrantSpec> = Vec::new();
    for (i, g) in asked.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let Some(def) = catalog.iter().find(|d| d.code == g.right) else {
            v.add(
                format!("{at}.right"),
                format!("unknown right {:?}", g.right),
            );
            continue;
        };
        if !def.kinds.contains(&kind) {
            v.add(
                format!("{at}.right"),
                format!("{} cannot be held by {} users", def.code, kind.as_str()),
            );
            continue;
        }
        match (def.scoped, g.scope) {
            (true, None) => {
                v.add(
                    format!("{at}.scope"),
                    format!(
                        "{} is scoped: give user_key, user_tag or consolidated",
                        def.code
                    ),
                );
                continue;
            }
            (false, Some(_)) => {
                v.add(
                    format!("{at}.scope"),
                    format!("{} takes no scope", def.code),
                );
                continue;
            }
            _ => {}
        }
        if g.expires_at.is_some_and(|t| t <= now) {
            v.add(format!("{at}.expire_time"), "is in the past");
            continue;
        }
        if out.iter().any(|o| o.right == def.code) {
            v.add(
                format!("{at}.right"),
                format!("{} is listed twice", def.code),
            );
            continue;
        }
        out.push(GrantSpec {
            right: def.code.clone(),
            scope: g.scope,
            expires_at: g.expires_at,
        });
    }
    out
}

/// A live right an actor holds on an account.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub right: String,
    pub scope: Option<Scope>,
}

/// What an actor may do on one account.
#[derive(Debug, Clone)]
pub enum Authority {
    /// Operators may do anything.
    Operator,
    /// Anyone else: the live rights held on the account.
    Holder(Vec<Held>),
}

impl Authority {
    pub fn is_admin(&self) -> bool {
        match self {
            Authority::Operator => true,
            Authority::Holder(held) => held.iter().any(|h| h.right == ADMIN),
        }
    }

    /// Refuses an actor without `admin.users` on the account.
    pub fn require_admin(&self, account: &str) -> Result<(), Error> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(Error::PermissionDenied(format!(
                "{ADMIN} on account {account} is required"
            )))
        }
    }

    /// The delegation rule: the actor may grant or revoke `right` (with
    /// `scope`) on the account only if he administers it and holds `right`
    /// there with a scope covering `scope`.
    pub fn may_delegate(
        &self,
        account: &str,
        right: &str,
        scope: Option<Scope>,
    ) -> Result<(), NotDelegable> {
        if !self.is_admin() {
            return Err(NotDelegable(format!(
                "{ADMIN} on account {account} is required"
            )));
        }
        let Authority::Holder(held) = self else {
            return Ok(());
        };
        // The right may be held several times (directly, through roles): the
        // widest counts.
        let mine: Vec<&Held> = held.iter().filter(|h| h.right == right).collect();
        if mine.is_empty() {
            return Err(NotDelegable(format!(
                "you cannot delegate {right} on account {account}: you do not hold it there"
            )));
        }
        let h = mine
            .iter()
            .find(|h| match (h.scope, scope) {
                (Some(m), Some(t)) => m.covers(t),
                _ => true,
            })
            .unwrap_or(&mine[0]);
        match (h.scope, scope) {
            (Some(mine), Some(theirs)) if !mine.covers(theirs) => Err(NotDelegable(format!(
                "you cannot delegate {right} with scope {} on account {account}: you hold it with scope {}",
                theirs.as_str(),
                mine.as_str()
            ))),
            _ => Ok(()),
        }
    }
}

/// Why the delegation rule refuses a grant or a revoke, in words that name
/// the right and the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotDelegable(pub String);

impl std::fmt::Display for NotDelegable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<NotDelegable> for Error {
    fn from(e: NotDelegable) -> Self {
        Error::PermissionDenied(e.0)
    }
}

/// A grant: a right a user holds on an account.
#[derive(Debug, Clone)]
pub struct Grant {
    pub user_id: Uuid,
    pub account_code: String,
    pub right: String,
    pub scope: Option<Scope>,
    pub granted_by: Option<Uuid>,
    pub granted_at: chrono::DateTime<chrono::Utc>,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub revision: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_right_code_is_shared_by_everyone_who_names_it() {
        let a = shared_code(&String::from("tracking.tool_cs"));
        let b = shared_code(&String::from("tracking.tool_cs"));
        assert_eq!(a, "tracking.tool_cs");
        assert!(std::ptr::eq(a, b), "one copy per code");
        assert_eq!(shared_code("shipping.ws"), "shipping.ws");
    }

    fn holder(rights: &[(&str, Option<Scope>)]) -> Authority {
        Authority::Holder(
            rights
                .iter()
                .map(|(r, s)| Held {
                    right: r.to_string(),
                    scope: *s,
                })
                .collect(),
        )
    }

    #[test]
    fn delegation_needs_admin_and_the_right_with_a_covering_scope() {
        let a = holder(&[
            (ADMIN, None),
            ("shipping.ws", None),
            ("tracking.tool", Some(Scope::UserTag)),
        ]);
        assert!(a.may_delegate("1", "shipping.ws", None).is_ok());
        assert!(a.may_delegate("1", ADMIN, None).is_ok());
        assert!(a.may_delegate("1", "tracking.ws", None).is_err());
        assert!(a
            .may_delegate("1", "tracking.tool", Some(Scope::UserTag))
            .is_ok());
        let e = a
            .may_delegate("1", "tracking.tool", Some(Scope::Consolidated))
            .unwrap_err();
        assert!(e.to_string().contains("tracking.tool"));
        assert!(a
            .may_delegate("1", "tracking.tool", Some(Scope::UserKey))
            .is_err());

        let not_admin = holder(&[("shipping.ws", None)]);
        assert!(not_admin.may_delegate("1", "shipping.ws", None).is_err());

        let wide = holder(&[(ADMIN, None), ("tracking.tool", Some(Scope::Consolidated))]);
        for s in [Scope::UserKey, Scope::UserTag, Scope::Consolidated] {
            assert!(wide.may_delegate("1", "tracking.tool", Some(s)).is_ok());
        }
        assert!(Authority::Operator
            .may_delegate("1", "anything", None)
            .is_ok());
    }
}
