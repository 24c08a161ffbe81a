//! Roles: named bundles of rights (with scopes), held by users on accounts.
//! A role is a live reference: its holders' rights follow its definition.

use uuid::Uuid;

use super::{
    rights::{Authority, NotDelegable, RightDef, Scope},
    user::UserKind,
    Error, Violations,
};

/// One right of a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRight {
    pub right: String,
    pub scope: Option<Scope>,
}

/// A role's definition.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleDef {
    pub code: String,
    pub label_fr: String,
    pub label_en: String,
    pub kinds: Vec<UserKind>,
    /// By right code.
    pub rights: Vec<RoleRight>,
    /// The revision of its last definition.
    pub revision: i64,
}

/// A role's definition as asked for, before validation.
#[derive(Debug, Clone, Default)]
pub struct RawRole {
    pub code: String,
    pub label_fr: String,
    pub label_en: String,
    pub kinds: Vec<String>,
    pub rights: Vec<(String, Option<Scope>)>,
}

impl RawRole {
    /// Checks a definition against the catalog: a code like a right's, both
    /// labels, at least one kind, at least one right, each in the catalog,
    /// open to every kind of the role, scoped exactly when the right is, and
    /// listed once.
    pub fn validate(&self, catalog: &[RightDef]) -> Result<RoleDef, Error> {
        let mut v = Violations::default();
        let code = v.check("role.code", RightDef::parse_code(self.code.trim()));
        let mut label = |field: &str, s: &str| {
            let s = s.trim();
            if s.is_empty() || s.chars().count() > 200 || s.chars().any(char::is_control) {
                v.add(
                    field,
                    "is required (1-200 characters, no control character)",
                );
            }
            s.to_owned()
        };
        let label_fr = label("role.label_fr", &self.label_fr);
        let label_en = label("role.label_en", &self.label_en);
        let mut kinds = Vec::new();
        for (i, k) in self.kinds.iter().enumerate() {
            match UserKind::parse(k) {
                Some(k) if !kinds.contains(&k) => kinds.push(k),
                Some(_) => {}
                None => v.add(format!("role.kinds[{i}]"), "must be standard or advanced"),
            }
        }
        if kinds.is_empty() {
            v.add("role.kinds", "give at least one kind: standard, advanced");
        }
        if self.rights.is_empty() {
            v.add("role.rights", "give at least one right");
        }
        let mut rights: Vec<RoleRight> = Vec::new();
        for (i, (right, scope)) in self.rights.iter().enumerate() {
            let at = format!("role.rights[{i}]");
            let Some(def) = catalog.iter().find(|d| &d.code == right) else {
                v.add(format!("{at}.right"), format!("unknown right {right:?}"));
                continue;
            };
            if let Some(k) = kinds.iter().find(|k| !def.kinds.contains(k)) {
                v.add(
                    format!("{at}.right"),
                    format!(
                        "{} cannot be held by {} users, whom the role is open to",
                        def.code,
                        k.as_str()
                    ),
                );
                continue;
            }
            match (def.scoped, scope) {
                (true, None) => v.add(
                    format!("{at}.scope"),
                    format!(
                        "{} is scoped: give user_key, user_tag or consolidated",
                        def.code
                    ),
                ),
                (false, Some(_)) => v.add(
                    format!("{at}.scope"),
                    format!("{} takes no scope", def.code),
                ),
                _ if rights.iter().any(|r| &r.right == right) => v.add(
                    format!("{at}.right"),
                    format!("{} is listed twice", def.code),
                ),
                _ => rights.push(RoleRight {
                    right: def.code.clone(),
                    scope: *scope,
                }),
            }
        }
        v.finish()?;
        rights.sort_by(|a, b| a.right.cmp(&b.right));
        Ok(RoleDef {
            code: code.unwrap_or_default(),
            label_fr,
            label_en,
            kinds,
            rights,
            revision: 0,
        })
    }
}

impl RoleDef {
    /// Whether a user of `kind` may hold the role.
    pub fn open_to(&self, kind: UserKind) -> bool {
        self.kinds.contains(&kind)
    }
}

impl Authority {
    /// The delegation rule for a role: the actor must be able to delegate
    /// every right of the role, with its scope. A refusal names the role and
    /// the right.
    pub fn may_delegate_role(&self, account: &str, role: &RoleDef) -> Result<(), NotDelegable> {
        for r in &role.rights {
            self.may_delegate(account, &r.right, r.scope)
                .map_err(|e| NotDelegable(format!("role {}: {e}", role.code)))?;
        }
        Ok(())
    }
}

/// A role held by a user on an account.
#[derive(Debug, Clone)]
pub struct RoleGrant {
    pub user_id: Uuid,
    pub account_code: String,
    pub role: String,
    pub granted_by: Option<Uuid>,
    pub granted_at: chrono::DateTime<chrono::Utc>,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub revision: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::rights::{Held, ADMIN};

    fn catalog() -> Vec<RightDef> {
        let def = |code: &str, scoped: bool, kinds: &[UserKind]| RightDef {
            code: code.into(),
            category: "c".into(),
            label_fr: code.into(),
            label_en: code.into(),
            kinds: kinds.to_vec(),
            scoped,
        };
        vec![
            def(ADMIN, false, &[UserKind::Standard, UserKind::Advanced]),
            def("billing.invoices", false, &[UserKind::Standard]),
            def(
                "tracking.tool",
                true,
                &[UserKind::Standard, UserKind::Advanced],
            ),
        ]
    }

    fn raw(kinds: &[&str], rights: &[(&str, Option<Scope>)]) -> RawRole {
        RawRole {
            code: "fleet".into(),
            label_fr: "Gestion de la flotte".into(),
            label_en: "Fleet".into(),
            kinds: kinds.iter().map(|k| k.to_string()).collect(),
            rights: rights.iter().map(|(r, s)| (r.to_string(), *s)).collect(),
        }
    }

    #[test]
    fn a_definition_is_checked_against_the_catalog() {
        let c = catalog();
        let ok = raw(
            &["standard"],
            &[
                ("tracking.tool", Some(Scope::Consolidated)),
                ("billing.invoices", None),
            ],
        )
        .validate(&c)
        .unwrap();
        assert_eq!(ok.rights[0].right, "billing.invoices");
        let bad = |r: RawRole, field: &str| {
            let e = r.validate(&c).unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        };
        bad(
            raw(&["advanced"], &[("billing.invoices", None)]),
            "rights[0].right",
        );
        bad(
            raw(&["standard"], &[("tracking.tool", None)]),
            "rights[0].scope",
        );
        bad(raw(&["standard"], &[("nope", None)]), "unknown right");
        bad(raw(&[], &[(ADMIN, None)]), "role.kinds");
        bad(raw(&["standard"], &[]), "role.rights");
        bad(
            raw(&["standard"], &[(ADMIN, None), (ADMIN, None)]),
            "listed twice",
        );
    }

    #[test]
    fn delegating_a_role_needs_every_right_with_its_scope() {
        let role = raw(
            &["standard"],
            &[(ADMIN, None), ("tracking.tool", Some(Scope::Consolidated))],
        )
        .validate(&catalog())
        .unwrap();
        let held = |s: Scope| {
            Authority::Holder(vec![
                Held {
                    right: ADMIN.into(),
                    scope: None,
                },
                Held {
                    right: "tracking.tool".into(),
                    scope: Some(s),
                },
            ])
        };
        assert!(held(Scope::Consolidated)
            .may_delegate_role("1", &role)
            .is_ok());
        let e = held(Scope::UserTag)
            .may_delegate_role("1", &role)
            .unwrap_err();
        assert!(
            e.0.contains("role fleet") && e.0.contains("tracking.tool"),
            "{e}"
        );
        // Held twice, the wider one counts.
        let both = Authority::Holder(vec![
            Held {
                right: ADMIN.into(),
                scope: None,
            },
            Held {
                right: "tracking.tool".into(),
                scope: Some(Scope::UserKey),
            },
            Held {
                right: "tracking.tool".into(),
                scope: Some(Scope::Consolidated),
            },
        ]);
        assert!(both.may_delegate_role("1", &role).is_ok());
    }
}
