//! What an import decides for a line, as data: the status it reports and
//! the change it writes. `service::import` decides, `store` turns a change
//! into rows.

use uuid::Uuid;

use super::{
    key::NewKey,
    rights::Scope,
    user::{Profile, UserKey, UserKind, UserStatus},
};

/// What happened to one line (or, for a sync, to one absent user).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum LineStatus {
    Created,
    Updated,
    Unchanged,
    /// A sync deactivated a user absent from the file.
    Deactivated,
    /// The actor cannot delegate a right the line asks for (names it).
    RightNotHeld,
    /// A cell is not one of its column's choices (names the column).
    InvalidChoice,
    /// The user data is wrong (names the field and why).
    InvalidUserData,
    /// An earlier line of the file is about the same user.
    DuplicateInFile,
}

impl LineStatus {
    pub const ALL: [LineStatus; 8] = [
        LineStatus::Created,
        LineStatus::Updated,
        LineStatus::Unchanged,
        LineStatus::Deactivated,
        LineStatus::RightNotHeld,
        LineStatus::InvalidChoice,
        LineStatus::InvalidUserData,
        LineStatus::DuplicateInFile,
    ];

    /// The name reports, summaries and the CLI use.
    pub fn as_str(self) -> &'static str {
        match self {
            LineStatus::Created => "created",
            LineStatus::Updated => "updated",
            LineStatus::Unchanged => "unchanged",
            LineStatus::Deactivated => "deactivated",
            LineStatus::RightNotHeld => "right_not_held",
            LineStatus::InvalidChoice => "invalid_choice",
            LineStatus::InvalidUserData => "invalid_user_data",
            LineStatus::DuplicateInFile => "duplicate_in_file",
        }
    }

    /// Whether the line (or deactivation) wrote something.
    pub fn wrote(self) -> bool {
        matches!(
            self,
            LineStatus::Created | LineStatus::Updated | LineStatus::Deactivated
        )
    }

    /// Whether the line was refused (an `atomic` import then writes nothing).
    pub fn failed(self) -> bool {
        !self.wrote() && self != LineStatus::Unchanged
    }
}

/// A right as a line asks for it.
pub type RightAsked = (String, Option<Scope>);

/// A user an import creates: everything decided, identifiers drawn.
#[derive(Debug)]
pub struct NewUser {
    pub id: Uuid,
    pub kind: UserKind,
    pub status: UserStatus,
    pub login: String,
    pub profile: Profile,
    pub user_key: Option<UserKey>,
    /// His tags on the import's account (his link to it).
    pub tags: Vec<String>,
    pub grants: Vec<RightAsked>,
    /// The roles he gets on the account (ids).
    pub roles: Vec<Uuid>,
    /// The teams he joins in the account's organization.
    pub teams: Vec<TeamJoin>,
    /// An active user's first key (an import does not show its secret: the
    /// user or an admin regenerates it); an invited one gets his when he
    /// completes the invitation the import sends him.
    pub key: Option<NewKey>,
    /// His first password (a PHC string), to be changed at first login.
    pub password: Option<String>,
}

/// What an import changes of an existing user; `None` and empty lists
/// change nothing.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UserChange {
    pub id: Uuid,
    /// The new profile, and the user's login (for his search text).
    pub profile: Option<(Profile, String)>,
    pub link: Option<LinkChange>,
    /// Granted or re-scoped.
    pub grants: Vec<RightAsked>,
    pub revokes: Vec<String>,
    /// Roles given (ids) and taken back on the account.
    pub role_grants: Vec<Uuid>,
    pub role_revokes: Vec<Uuid>,
    /// Teams joined and left in the account's organization.
    pub team_joins: Vec<TeamJoin>,
    pub team_leaves: Vec<Uuid>,
    pub status: Option<UserStatus>,
}

/// A team a line puts a user in: one that exists, or a path the import
/// creates (with its missing parents) before writing the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TeamJoin {
    Existing(Uuid),
    New(Vec<String>),
}

impl UserChange {
    /// What the change touches, for the audit trail (empty: nothing).
    pub fn aspects(&self) -> Vec<&'static str> {
        let mut a = Vec::new();
        if self.profile.is_some() {
            a.push("profile");
        }
        match self.link {
            Some(LinkChange::Link(_)) => a.push("link"),
            Some(LinkChange::Retag(_)) => a.push("tags"),
            None => {}
        }
        if !self.grants.is_empty() || !self.revokes.is_empty() {
            a.push("rights");
        }
        if !self.role_grants.is_empty() || !self.role_revokes.is_empty() {
            a.push("roles");
        }
        if !self.team_joins.is_empty() || !self.team_leaves.is_empty() {
            a.push("teams");
        }
        if self.status.is_some() {
            a.push("status");
        }
        a
    }
}

/// A user's link to the import's account.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkChange {
    /// Linked with these tags (he was not).
    Link(Vec<String>),
    /// Already linked: his tags become these.
    Retag(Vec<String>),
}

/// One write of an import, with the line it comes from (0: a sync's
/// deactivation).
#[derive(Debug)]
pub enum ImportWrite {
    Create {
        line: u64,
        user: NewUser,
    },
    Update {
        line: u64,
        change: UserChange,
    },
    /// A sync deactivating a user absent from the file.
    Deactivate {
        id: Uuid,
    },
}
