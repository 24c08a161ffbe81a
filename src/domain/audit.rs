//! The audit trail as readers see it: structured events, written by
//! Postgres itself for every change (migration `audit_from_triggers`), read
//! in revision order.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{principal::PrincipalKind, Error, Result};

/// What an event records. Stored as the snake-case name of each variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    OrganizationCreated,
    OrganizationUpdated,
    AccountCreated,
    AccountUpdated,
    RightDefined,
    RightUpdated,
    UserCreated,
    UserUpdated,
    UserStatusChanged,
    UserDeleted,
    LinkCreated,
    LinkUpdated,
    LinkDeleted,
    GrantsChanged,
    KeyIssued,
    KeyRevoked,
    KeyExpiryChanged,
    KeyDeleted,
    PasswordSet,
    PasswordRemoved,
    PasswordLockCleared,
    InvitationIssued,
    PasswordResetRequested,
    RoleDefined,
    RoleUpdated,
    RoleGranted,
    RoleGrantUpdated,
    RoleRevoked,
    TeamCreated,
    TeamUpdated,
    TeamDeleted,
    TeamMemberAdded,
    TeamMemberRemoved,
}

impl Action {
    pub const ALL: [Action; 33] = [
        Action::OrganizationCreated,
        Action::OrganizationUpdated,
        Action::AccountCreated,
        Action::AccountUpdated,
        Action::RightDefined,
        Action::RightUpdated,
        Action::UserCreated,
        Action::UserUpdated,
        Action::UserStatusChanged,
        Action::UserDeleted,
        Action::LinkCreated,
        Action::LinkUpdated,
        Action::LinkDeleted,
        Action::GrantsChanged,
        Action::KeyIssued,
        Action::KeyRevoked,
        Action::KeyExpiryChanged,
        Action::KeyDeleted,
        Action::PasswordSet,
        Action::PasswordRemoved,
        Action::PasswordLockCleared,
        Action::InvitationIssued,
        Action::PasswordResetRequested,
        Action::RoleDefined,
        Action::RoleUpdated,
        Action::RoleGranted,
        Action::RoleGrantUpdated,
        Action::RoleRevoked,
        Action::TeamCreated,
        Action::TeamUpdated,
        Action::TeamDeleted,
        Action::TeamMemberAdded,
        Action::TeamMemberRemoved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::OrganizationCreated => "organization_created",
            Action::OrganizationUpdated => "organization_updated",
            Action::AccountCreated => "account_created",
            Action::AccountUpdated => "account_updated",
            Action::RightDefined => "right_defined",
            Action::RightUpdated => "right_updated",
            Action::UserCreated => "user_created",
            Action::UserUpdated => "user_updated",
            Action::UserStatusChanged => "user_status_changed",
            Action::UserDeleted => "user_deleted",
            Action::LinkCreated => "link_created",
            Action::LinkUpdated => "link_updated",
            Action::LinkDeleted => "link_deleted",
            Action::GrantsChanged => "grants_changed",
            Action::KeyIssued => "key_issued",
            Action::KeyRevoked => "key_revoked",
            Action::KeyExpiryChanged => "key_expiry_changed",
            Action::KeyDeleted => "key_deleted",
            Action::PasswordSet => "password_set",
            Action::PasswordRemoved => "password_removed",
            Action::PasswordLockCleared => "password_lock_cleared",
            Action::InvitationIssued => "invitation_issued",
            Action::PasswordResetRequested => "password_reset_requested",
            Action::RoleDefined => "role_defined",
            Action::RoleUpdated => "role_updated",
            Action::RoleGranted => "role_granted",
            Action::RoleGrantUpdated => "role_grant_updated",
            Action::RoleRevoked => "role_revoked",
            Action::TeamCreated => "team_created",
            Action::TeamUpdated => "team_updated",
            Action::TeamDeleted => "team_deleted",
            Action::TeamMemberAdded => "team_member_added",
            Action::TeamMemberRemoved => "team_member_removed",
        }
    }

    pub fn from_db(s: &str) -> Result<Self> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| Error::Internal(format!("unknown audit action {s:?}")))
    }
}

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetType {
    Organization,
    Account,
    Right,
    User,
    Role,
    Team,
}

impl TargetType {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetType::Organization => "organization",
            TargetType::Account => "account",
            TargetType::Right => "right",
            TargetType::User => "user",
            TargetType::Role => "role",
            TargetType::Team => "team",
        }
    }

    pub fn from_db(s: &str) -> Result<Self> {
        Ok(match s {
            "organization" => TargetType::Organization,
            "account" => TargetType::Account,
            "right" => TargetType::Right,
            "user" => TargetType::User,
            "role" => TargetType::Role,
            "team" => TargetType::Team,
            other => return Err(Error::Internal(format!("unknown audit target {other:?}"))),
        })
    }
}

/// Who made a change: a principal, or the command line (`None` in
/// [`Event::actor`]).
#[derive(Debug, Clone, PartialEq)]
pub struct EventActor {
    pub id: Uuid,
    pub kind: PrincipalKind,
    pub name: String,
}

/// One field's values before and after (JSON; `None`: absent).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldChange {
    pub field: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// One event of the audit trail.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Orders events inside a revision (and names one in a cursor).
    pub id: i64,
    pub revision: i64,
    pub time: DateTime<Utc>,
    pub actor: Option<EventActor>,
    pub action: Action,
    pub target_type: TargetType,
    pub target_id: String,
    /// The account the change is about, with its code.
    pub account: Option<(Uuid, String)>,
    /// Field by field, in the field's name order.
    pub changes: Vec<FieldChange>,
    /// What the change was part of (an import), when known.
    pub cause: Option<String>,
    /// Events older than structured ones carry a text instead.
    pub legacy_summary: Option<String>,
}

impl Event {
    /// The changes as stored: `{field: {"before": ..., "after": ...}}`, or,
    /// for a user's creation since migration `flat_user_created_events`,
    /// `{field: value}` (a value that is not an object is what the field was
    /// created with; no column of `users` can hold an object: test
    /// `no_user_column_holds_what_a_creation_event_would_misread`).
    pub fn changes_from_json(value: &serde_json::Value) -> Vec<FieldChange> {
        let Some(map) = value.as_object() else {
            return Vec::new();
        };
        let side = |v: &serde_json::Value, k: &str| v.get(k).filter(|v| !v.is_null()).cloned();
        // A field absent on both sides (a creation's empty ones, `{}` or
        // null) is no change.
        let mut changes: Vec<FieldChange> = map
            .iter()
            .map(|(field, v)| match v {
                serde_json::Value::Object(_) => FieldChange {
                    field: field.clone(),
                    before: side(v, "before"),
                    after: side(v, "after"),
                },
                created => FieldChange {
                    field: field.clone(),
                    before: None,
                    after: Some(created.clone()).filter(|v| !v.is_null()),
                },
            })
            .filter(|c| c.before.is_some() || c.after.is_some())
            .collect();
        changes.sort_by(|a, b| a.field.cmp(&b.field));
        changes
    }

    /// One line for people: `status: active → deactivated; tags: [] → ["a"]`.
    pub fn summary(&self) -> String {
        if let Some(s) = &self.legacy_summary {
            return s.clone();
        }
        let show = |v: &Option<serde_json::Value>| match v {
            None => "∅".to_owned(),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
        };
        let parts: Vec<String> = self
            .changes
            .iter()
            .map(|c| match (&c.before, &c.after) {
                (None, after) => format!("{}: {}", c.field, show(after)),
                (before, after) if before == after => format!("{}: {}", c.field, show(after)),
                (before, after) => format!("{}: {} → {}", c.field, show(before), show(after)),
            })
            .collect();
        if parts.is_empty() {
            self.action.as_str().replace('_', " ")
        } else {
            parts.join("; ")
        }
    }
}

/// A position in the trail: after every event of revisions below
/// `revision`, and the events of `revision` up to `event` (`None`: all of
/// them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub revision: i64,
    pub event: Option<i64>,
}

impl Cursor {
    /// After every event of `revision` and before.
    pub fn after_revision(revision: i64) -> Self {
        Cursor {
            revision,
            event: None,
        }
    }

    /// Just after `event`.
    pub fn after(event: &Event) -> Self {
        Cursor {
            revision: event.revision,
            event: Some(event.id),
        }
    }

    /// The event id the cursor stands after inside its revision.
    pub fn event_bound(&self) -> i64 {
        self.event.unwrap_or(i64::MAX)
    }

    /// The page token that resumes after this position.
    pub fn token(&self) -> String {
        match self.event {
            Some(e) => format!("{}.{e}", self.revision),
            None => self.revision.to_string(),
        }
    }

    /// Reads a page token written by [`Cursor::token`].
    pub fn from_token(token: &str) -> Result<Self> {
        let bad = || Error::invalid("page_token", "not a page token from an earlier answer");
        let (revision, event) = match token.split_once('.') {
            Some((r, e)) => (r, Some(e.parse::<i64>().map_err(|_| bad())?)),
            None => (token, None),
        };
        let revision: i64 = revision.parse().map_err(|_| bad())?;
        if revision < 0 || event.is_some_and(|e| e < 0) {
            return Err(bad());
        }
        Ok(Cursor { revision, event })
    }
}

/// Which events a reader asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    /// An account's code.
    pub account: Option<String>,
    /// Events about this user.
    pub user: Option<Uuid>,
    /// Changes made by this principal.
    pub actor: Option<Uuid>,
    /// Any of these actions (empty: all).
    pub actions: Vec<Action>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Revisions up to this one (inclusive).
    pub to_revision: Option<i64>,
}

/// Which events a reader may see: everything (operators, service
/// principals), or those of the accounts an admin administers and of the
/// users he manages.
#[derive(Debug, Clone, PartialEq)]
pub enum EventScope {
    All,
    Administered { actor: Uuid, accounts: Vec<Uuid> },
}

/// The refusal of a watch or list that starts before what is still kept.
pub fn pruned(from_revision: i64, pruned_through: i64, oldest_kept: Option<i64>) -> Error {
    let oldest = oldest_kept
        .map(|r| format!("the oldest kept revision is {r}"))
        .unwrap_or_else(|| "no event is kept".into());
    Error::FailedPrecondition(format!(
        "events after revision {from_revision} are no longer all kept: events up to revision \
         {pruned_through} were pruned and {oldest}; resume from revision {pruned_through} or later"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip_through_their_names() {
        for a in Action::ALL {
            assert_eq!(Action::from_db(a.as_str()).unwrap(), a);
        }
        assert!(Action::from_db("nope").is_err());
    }

    #[test]
    fn tokens_round_trip_and_refuse_garbage() {
        for c in [
            Cursor::after_revision(0),
            Cursor::after_revision(42),
            Cursor {
                revision: 7,
                event: Some(1234),
            },
        ] {
            assert_eq!(Cursor::from_token(&c.token()).unwrap(), c);
        }
        for bad in ["", "x", "-1", "3.", "3.x", "3.-2", "1.2.3"] {
            assert!(Cursor::from_token(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_flat_creation_reads_as_the_nested_one() {
        let nested = Event::changes_from_json(&serde_json::json!({
            "status": {"after": "active"},
            "address_lines": {"after": ["1 rue", "bât. B"]},
            "email": {},
        }));
        let flat = Event::changes_from_json(&serde_json::json!({
            "status": "active",
            "address_lines": ["1 rue", "bât. B"],
            "email": null,
        }));
        assert_eq!(flat, nested);
        assert_eq!(
            flat.iter().map(|c| c.field.as_str()).collect::<Vec<_>>(),
            ["address_lines", "status"]
        );
        assert!(flat.iter().all(|c| c.before.is_none() && c.after.is_some()));
    }

    #[test]
    fn a_summary_shows_before_and_after() {
        let changes = Event::changes_from_json(&serde_json::json!({
            "status": {"before": "active", "after": "deactivated"},
            "tags": {"before": null, "after": ["a"]},
            "email": {},
        }));
        let e = Event {
            id: 1,
            revision: 1,
            time: Utc::now(),
            actor: None,
            action: Action::UserStatusChanged,
            target_type: TargetType::User,
            target_id: Uuid::nil().to_string(),
            account: None,
            changes,
            cause: None,
            legacy_summary: None,
        };
        assert_eq!(e.summary(), "status: active → deactivated; tags: [\"a\"]");
    }
}
