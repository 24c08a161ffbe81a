//! Authorization decisions, computed from a subject's entitlements in memory.
//! Pure: the engine (`authz`) loads and caches `Entitlements`; the rules that
//! turn them into answers are here.

use smallvec::SmallVec;
use smol_str::SmolStr;
use uuid::Uuid;

use super::{key::KeyHash, principal::PrincipalKind, rights::Scope};

/// Microseconds since the Unix epoch: how instants are kept on the hot path.
pub type Micros = i64;

/// Everything decisions about one principal need.
#[derive(Debug, Clone, PartialEq)]
pub struct Entitlements {
    pub user_id: Uuid,
    pub kind: PrincipalKind,
    /// Only active principals are ever allowed anything.
    pub active: bool,
    /// Advanced users: the stored (undashed, upper-case) user key.
    pub user_key: Option<String>,
    /// Live keys (not revoked, or revoked in the future during an overlap);
    /// the first in the entry itself (a subject mostly has one).
    pub keys: SmallVec<[KeyEntitlement; 1]>,
    /// Linked accounts by code.
    pub accounts: Accounts,
}

/// A subject's linked accounts, sorted by code, each code inline (an
/// account code is at most 32 bytes; up to 23 live in the entry itself),
/// the first account in the entitlements themselves (most subjects have
/// one): a lookup is a binary search over one array, where a hash map kept
/// its keys as strings elsewhere in memory, each a processor-cache miss
/// for a `Check` of a subject not asked about lately.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Accounts(SmallVec<[(SmolStr, AccountEntitlement); 1]>);

impl Accounts {
    fn find(&self, code: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(c, _)| c.as_str().cmp(code))
    }

    pub fn get(&self, code: &str) -> Option<&AccountEntitlement> {
        self.find(code).ok().map(|i| &self.0[i].1)
    }

    #[cfg(test)]
    pub fn get_mut(&mut self, code: &str) -> Option<&mut AccountEntitlement> {
        self.find(code).ok().map(|i| &mut self.0[i].1)
    }

    /// Adds or replaces the account `code`.
    #[cfg(test)]
    pub fn insert(&mut self, code: &str, account: AccountEntitlement) {
        match self.find(code) {
            Ok(i) => self.0[i].1 = account,
            Err(i) => self.0.insert(i, (SmolStr::new(code), account)),
        }
    }

    /// In code order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &AccountEntitlement)> {
        self.0.iter().map(|(c, a)| (c.as_str(), a))
    }
}

/// A code met twice keeps its first account.
impl<C: AsRef<str>> FromIterator<(C, AccountEntitlement)> for Accounts {
    fn from_iter<I: IntoIterator<Item = (C, AccountEntitlement)>>(iter: I) -> Self {
        let mut all: SmallVec<[(SmolStr, AccountEntitlement); 1]> = iter
            .into_iter()
            .map(|(c, a)| (SmolStr::new(c), a))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all.dedup_by(|later, first| later.0 == first.0);
        Self(all)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeyEntitlement {
    pub hash: KeyHash,
    pub id: Uuid,
    pub expires_at: Option<Micros>,
    pub revoked_at: Option<Micros>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AccountEntitlement {
    pub closed: bool,
    pub tags: Vec<String>,
    pub grants: Vec<GrantEntitlement>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GrantEntitlement {
    /// One copy per code in the process ([`super::rights::shared_code`]):
    /// the bytes a decision compares are those every subject's grants
    /// point at, already in the processor's cache.
    pub right: &'static str,
    pub scope: Option<Scope>,
    pub expires_at: Option<Micros>,
    /// The role that gives it; `None` for a direct grant. A right may come
    /// several times (directly and through roles).
    pub role: Option<Box<str>>,
}

/// Why a decision is negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Denial {
    UnknownSubject,
    InactiveUser,
    UnknownAccount,
    NotLinked,
    NoGrant,
    ExpiredGrant,
    AccountClosed,
    /// Parcel visibility: the grant exists but its scope does not cover the
    /// parcel.
    OutOfScope,
}

/// The answer to a `Check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The scope of the grant that allowed (scoped rights only).
    pub scope: Option<Scope>,
    pub reason: Option<Denial>,
    /// Whether the grant that answered came from a role (none held directly
    /// answered as well).
    pub from_role: bool,
}

impl Decision {
    pub fn allow(scope: Option<Scope>) -> Self {
        Self {
            allowed: true,
            scope,
            reason: None,
            from_role: false,
        }
    }

    fn allow_by(g: &GrantEntitlement) -> Self {
        Self {
            from_role: g.role.is_some(),
            ..Self::allow(g.scope)
        }
    }

    pub fn deny(reason: Denial) -> Self {
        Self {
            allowed: false,
            scope: None,
            reason: Some(reason),
            from_role: false,
        }
    }
}

/// A parcel as a tracking service sees it.
#[derive(Debug, Clone, Default)]
pub struct Parcel<'a> {
    pub account_code: &'a str,
    /// The user key the parcel was franked with, if any (stored form).
    pub user_key: Option<&'a str>,
    pub tag: Option<&'a str>,
}

/// What a subject may see of one account's parcels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    All,
    UserKey(String),
    Tags(Vec<String>),
}

impl Entitlements {
    /// The live key with this hash, if it is one of this principal's.
    pub fn key(&self, hash: &KeyHash, now: Micros) -> Option<&KeyEntitlement> {
        self.keys.iter().find(|k| {
            &k.hash == hash
                && k.expires_at.is_none_or(|t| t > now)
                && k.revoked_at.is_none_or(|t| t > now)
        })
    }

    /// Whether the subject holds `right` on `account`. `NotLinked` is
    /// returned for any account the subject is not linked to; the engine
    /// tells it apart from an unknown account.
    pub fn check(&self, account: &str, right: &str, now: Micros) -> Decision {
        match self.grant(account, right, now) {
            Ok(g) => Decision::allow_by(g),
            Err(d) => Decision::deny(d),
        }
    }

    /// The live grants of `right` on `account` (direct or through roles).
    fn live<'a>(
        &'a self,
        account: &str,
        right: &'a str,
        now: Micros,
    ) -> Result<impl Iterator<Item = &'a GrantEntitlement> + 'a, Denial> {
        if !self.active {
            return Err(Denial::InactiveUser);
        }
        let a = self.accounts.get(account).ok_or(Denial::NotLinked)?;
        if a.closed {
            return Err(Denial::AccountClosed);
        }
        let mut all = a.grants.iter().filter(move |g| g.right == right).peekable();
        if all.peek().is_none() {
            return Err(Denial::NoGrant);
        }
        let mut live = all
            .filter(move |g| g.expires_at.is_none_or(|t| t > now))
            .peekable();
        if live.peek().is_none() {
            return Err(Denial::ExpiredGrant);
        }
        Ok(live)
    }

    /// The live grant of `right` on `account` with the widest scope; a direct
    /// one rather than a role's when they are as wide.
    fn grant<'a>(
        &'a self,
        account: &str,
        right: &'a str,
        now: Micros,
    ) -> Result<&'a GrantEntitlement, Denial> {
        let best = self
            .live(account, right, now)?
            .max_by_key(|g| (Scope::width(g.scope), g.role.is_none()));
        best.ok_or(Denial::NoGrant)
    }

    /// Whether the subject may see a parcel through a tracking right: every
    /// parcel of the account (`consolidated`), parcels carrying one of his tags
    /// on it (`user_tag`), or parcels franked with his own key (`user_key`).
    pub fn parcel(&self, right: &str, parcel: &Parcel<'_>, now: Micros) -> Decision {
        let g = match self.grant(parcel.account_code, right, now) {
            Ok(g) => g,
            Err(d) => return Decision::deny(d),
        };
        let visible = |g: &GrantEntitlement| match g.scope {
            None | Some(Scope::Consolidated) => true,
            Some(Scope::UserTag) => parcel.tag.is_some_and(|t| {
                self.accounts
                    .get(parcel.account_code)
                    .is_some_and(|a| a.tags.iter().any(|x| x == t))
            }),
            Some(Scope::UserKey) => match (parcel.user_key, &self.user_key) {
                (Some(p), Some(mine)) => p == mine,
                _ => false,
            },
        };
        // The widest grant when it shows the parcel, else the widest live
        // grant that does, a direct one first (a tag scope and a key scope
        // held through different sources each show their own parcels).
        let shown = if visible(g) {
            Some(g)
        } else {
            self.live(parcel.account_code, right, now)
                .ok()
                .and_then(|live| {
                    live.filter(|g| visible(g))
                        .max_by_key(|g| (Scope::width(g.scope), g.role.is_none()))
                })
        };
        match shown {
            Some(g) => Decision::allow_by(g),
            None => Decision {
                allowed: false,
                scope: g.scope,
                reason: Some(Denial::OutOfScope),
                from_role: g.role.is_some(),
            },
        }
    }

    /// Per account where the subject holds `right`, what he may see; in
    /// account-code order. Accounts where he sees nothing are left out. An
    /// account may come twice, with his key and with his tags, when he
    /// holds the right with both scopes (through different sources): a
    /// parcel either shows is his to see, as `parcel` says.
    pub fn visibility(&self, right: &str, now: Micros) -> Vec<(&str, Visibility)> {
        let mut out: Vec<(&str, Visibility)> = Vec::new();
        for (code, a) in self.accounts.iter() {
            let Ok(live) = self.live(code, right, now) else {
                continue;
            };
            let (mut all, mut key, mut tag) = (false, false, false);
            for g in live {
                match g.scope {
                    None | Some(Scope::Consolidated) => all = true,
                    Some(Scope::UserKey) => key = true,
                    Some(Scope::UserTag) => tag = true,
                }
            }
            if all {
                out.push((code, Visibility::All));
                continue;
            }
            if let (true, Some(k)) = (key, &self.user_key) {
                out.push((code, Visibility::UserKey(k.clone())));
            }
            if tag && !a.tags.is_empty() {
                out.push((code, Visibility::Tags(a.tags.clone())));
            }
        }
        // In code order already (an account's key clause before its tags
        // clause): `accounts` is sorted.
        out
    }

    /// How much room the entry takes in the cache.
    pub fn weight(&self) -> u64 {
        1 + self.keys.len() as u64
            + self
                .accounts
                .iter()
                .map(|(_, a)| 1 + a.grants.len() as u64)
                .sum::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ent() -> Entitlements {
        let mut accounts = Accounts::default();
        accounts.insert(
            "900138",
            AccountEntitlement {
                closed: false,
                tags: vec!["ATELIER-7".into()],
                grants: vec![
                    GrantEntitlement {
                        right: "tracking.tool",
                        scope: Some(Scope::UserTag),
                        expires_at: None,
                        role: None,
                    },
                    GrantEntitlement {
                        right: "shipping.ws",
                        scope: None,
                        expires_at: Some(1_000),
                        role: None,
                    },
                ],
            },
        );
        Entitlements {
            user_id: Uuid::nil(),
            kind: PrincipalKind::Advanced,
            active: true,
            user_key: Some("K7QH2M9DXW4P".into()),
            keys: Default::default(),
            accounts,
        }
    }

    #[test]
    fn check_reasons() {
        let e = ent();
        assert_eq!(e.check("900138", "shipping.ws", 999), Decision::allow(None));
        assert_eq!(
            e.check("900138", "shipping.ws", 1_000).reason,
            Some(Denial::ExpiredGrant)
        );
        assert_eq!(
            e.check("900138", "tracking.ws", 0).reason,
            Some(Denial::NoGrant)
        );
        assert_eq!(
            e.check("850061", "shipping.ws", 0).reason,
            Some(Denial::NotLinked)
        );
        let inactive = Entitlements {
            active: false,
            ..ent()
        };
        assert_eq!(
            inactive.check("900138", "shipping.ws", 0).reason,
            Some(Denial::InactiveUser)
        );
    }

    #[test]
    fn the_widest_live_grant_answers_and_says_whether_a_role_gave_it() {
        let mut e = ent();
        let a = e.accounts.get_mut("900138").unwrap();
        a.grants.push(GrantEntitlement {
            right: "tracking.tool",
            scope: Some(Scope::Consolidated),
            expires_at: Some(500),
            role: Some("fleet".into()),
        });
        a.grants.push(GrantEntitlement {
            right: "shipping.ws",
            scope: None,
            expires_at: None,
            role: Some("it".into()),
        });
        let d = e.check("900138", "tracking.tool", 0);
        assert_eq!((d.scope, d.from_role), (Some(Scope::Consolidated), true));
        // The role's grant expired: the direct one answers.
        let d = e.check("900138", "tracking.tool", 500);
        assert_eq!((d.scope, d.from_role), (Some(Scope::UserTag), false));
        // As wide: the direct grant answers while it lives, then the role's.
        assert!(!e.check("900138", "shipping.ws", 999).from_role);
        assert!(e.check("900138", "shipping.ws", 1_000).from_role);
        let p = Parcel {
            account_code: "900138",
            user_key: None,
            tag: Some("OTHER"),
        };
        assert!(e.parcel("tracking.tool", &p, 0).allowed);
        assert!(!e.parcel("tracking.tool", &p, 500).allowed);
        assert_eq!(
            e.visibility("tracking.tool", 0),
            vec![("900138", Visibility::All)]
        );
        // A tag scope held directly and a key scope through a role: both.
        let a = e.accounts.get_mut("900138").unwrap();
        a.grants.push(GrantEntitlement {
            right: "tracking.tool",
            scope: Some(Scope::UserKey),
            expires_at: None,
            role: Some("desk".into()),
        });
        assert_eq!(
            e.visibility("tracking.tool", 500),
            vec![
                ("900138", Visibility::UserKey("K7QH2M9DXW4P".into())),
                ("900138", Visibility::Tags(vec!["ATELIER-7".into()])),
            ]
        );
        let p = Parcel {
            account_code: "900138",
            user_key: Some("K7QH2M9DXW4P"),
            tag: None,
        };
        let d = e.parcel("tracking.tool", &p, 500);
        assert!(d.allowed && d.from_role, "{d:?}");
    }

    fn linked(right: &'static str) -> AccountEntitlement {
        AccountEntitlement {
            closed: false,
            tags: vec![],
            grants: vec![GrantEntitlement {
                right,
                scope: Some(Scope::Consolidated),
                expires_at: None,
                role: None,
            }],
        }
    }

    #[test]
    fn accounts_are_found_by_code_whatever_the_order_and_length_they_came_in() {
        let long = "A".repeat(32); // past what a code keeps inline
        let accounts: Accounts = [
            ("900138", linked("shipping.ws")),
            (long.as_str(), linked("tracking.tool")),
            ("0001", linked("tracking.tool")),
            ("850061", linked("shipping.ws")),
            ("900138", linked("tracking.tool")),
        ]
        .into_iter()
        .collect();
        let codes: Vec<&str> = accounts.iter().map(|(c, _)| c).collect();
        assert_eq!(codes, ["0001", "850061", "900138", long.as_str()]);
        // A code met twice keeps its first account.
        assert_eq!(accounts.get("900138"), Some(&linked("shipping.ws")));
        assert_eq!(accounts.get(&long), Some(&linked("tracking.tool")));
        for missing in ["", "0000", "85006", "8500611", "999999", "AAAA"] {
            assert_eq!(accounts.get(missing), None, "{missing:?}");
        }
        let e = Entitlements { accounts, ..ent() };
        assert!(e.check("850061", "shipping.ws", 0).allowed);
        assert_eq!(
            e.check("850061", "tracking.tool", 0).reason,
            Some(Denial::NoGrant)
        );
        // Visibility comes in code order.
        let shown = |e: &Entitlements| -> Vec<String> {
            e.visibility("tracking.tool", 0)
                .into_iter()
                .map(|(c, _)| c.to_owned())
                .collect()
        };
        assert_eq!(shown(&e), ["0001", long.as_str()]);
        let mut e = e;
        e.accounts.insert("0002", linked("tracking.tool"));
        e.accounts.insert("0001", linked("shipping.ws"));
        assert_eq!(shown(&e), ["0002", long.as_str()]);
    }

    #[test]
    fn a_parcel_the_widest_grant_does_not_show_is_answered_by_the_widest_that_does_direct_first() {
        let key_grant = |role: Option<&str>| GrantEntitlement {
            right: "tracking.tool",
            scope: Some(Scope::UserKey),
            expires_at: None,
            role: role.map(Into::into),
        };
        let p = Parcel {
            account_code: "900138",
            user_key: Some("K7QH2M9DXW4P"),
            tag: None,
        };
        // The widest grant is the tag scope, which does not show this
        // parcel; a key scope held through a role and directly both do, in
        // either order: the direct one answers.
        for role_first in [true, false] {
            let mut e = ent();
            let a = e.accounts.get_mut("900138").unwrap();
            let (first, second) = if role_first {
                (key_grant(Some("desk")), key_grant(None))
            } else {
                (key_grant(None), key_grant(Some("desk")))
            };
            a.grants.extend([first, second]);
            let d = e.parcel("tracking.tool", &p, 0);
            assert!(d.allowed && !d.from_role, "{role_first}: {d:?}");
            assert_eq!(d.scope, Some(Scope::UserKey));
        }
    }

    #[test]
    fn parcels_follow_scopes() {
        let e = ent();
        let p = |tag: Option<&'static str>| Parcel {
            account_code: "900138",
            user_key: None,
            tag,
        };
        assert!(e.parcel("tracking.tool", &p(Some("ATELIER-7")), 0).allowed);
        let d = e.parcel("tracking.tool", &p(Some("ATELIER-8")), 0);
        assert_eq!(d.reason, Some(Denial::OutOfScope));
        assert!(!e.parcel("tracking.tool", &p(None), 0).allowed);
        assert_eq!(
            e.visibility("tracking.tool", 0),
            vec![("900138", Visibility::Tags(vec!["ATELIER-7".into()]))]
        );
    }
}
