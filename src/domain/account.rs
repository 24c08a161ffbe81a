//! Organizations and accounts.

use std::fmt;

use uuid::Uuid;

/// An account code: 1-32 characters of `[A-Za-z0-9._-]`. Always text: leading
/// zeros are significant and the code is never parsed as a number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountCode(String);

impl AccountCode {
    /// Validates a code as typed by a caller (no trimming, no case folding).
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("is required".into());
        }
        if s.len() > 32 {
            return Err(format!(
                "must be at most 32 characters, got {}",
                s.chars().count()
            ));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(format!(
                "contains {c:?}; only letters, digits, '.', '_' and '-' are allowed"
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A human-readable name: trimmed, 1-200 characters, any Unicode letters, no
/// control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("is required".into());
        }
        if s.chars().count() > 200 {
            return Err("must be at most 200 characters".into());
        }
        if s.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An idempotency key supplied by the caller of a create.
pub fn parse_request_id(s: &str) -> Result<Option<String>, String> {
    match s.len() {
        0 => Ok(None),
        1..=100 if s.chars().all(|c| c.is_ascii_graphic()) => Ok(Some(s.to_owned())),
        _ => Err("must be 1-100 printable ASCII characters".into()),
    }
}

/// An identifier of ours (organization, user): a UUID in text form.
pub fn parse_id(s: &str) -> Result<Uuid, String> {
    if s.is_empty() {
        return Err("is required".into());
    }
    Uuid::parse_str(s).map_err(|_| format!("{s:?} is not a valid id (UUID)"))
}

/// Whether an account can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountStatus {
    Active,
    Closed,
}

/// What a decision knows of the account it is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountState {
    /// No account has this code.
    Missing,
    Exists(AccountStatus),
}

impl AccountState {
    /// From the account's status, if it exists.
    pub fn of(status: Option<AccountStatus>) -> Self {
        status.map_or(AccountState::Missing, AccountState::Exists)
    }
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Closed => "closed",
        }
    }

    pub fn from_db(s: &str) -> Self {
        match s {
            "closed" => AccountStatus::Closed,
            _ => AccountStatus::Active,
        }
    }
}

/// A customer company.
#[derive(Debug, Clone)]
pub struct Organization {
    pub id: Uuid,
    pub display_name: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// Revision of the last write to this organization.
    pub revision: i64,
}

/// The unit rights are granted on.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: Uuid,
    pub code: String,
    pub organization_id: Uuid,
    pub display_name: String,
    pub status: AccountStatus,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// Revision of the last write to this account.
    pub revision: i64,
}

/// A validated account creation.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub code: AccountCode,
    pub organization_id: Uuid,
    pub display_name: DisplayName,
    pub status: AccountStatus,
    /// Its idempotency key, if the caller gave a request id.
    pub request: Option<crate::domain::request::RequestKey>,
}

/// A validated account update: `None` leaves the field as it is.
#[derive(Debug, Clone, Default)]
pub struct AccountChanges {
    pub display_name: Option<DisplayName>,
    pub status: Option<AccountStatus>,
}

/// Which accounts a listing returns, and where the page starts.
#[derive(Debug, Clone, Default)]
pub struct AccountFilter {
    pub organization_id: Option<Uuid>,
    pub code_prefix: String,
    /// Codes strictly after this one (the last code of the previous page).
    pub after: Option<String>,
    pub limit: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_keep_leading_zeros_and_reject_other_characters() {
        assert_eq!(AccountCode::parse("007").unwrap().as_str(), "007");
        assert_ne!(
            AccountCode::parse("007").unwrap(),
            AccountCode::parse("7").unwrap()
        );
        assert!(AccountCode::parse("A.b_c-9").is_ok());
        assert!(AccountCode::parse("").is_err());
        assert!(AccountCode::parse("a b").is_err());
        assert!(AccountCode::parse("é").is_err());
        assert!(AccountCode::parse(&"1".repeat(33)).is_err());
        assert!(AccountCode::parse(&"1".repeat(32)).is_ok());
    }

    #[test]
    fn display_names_are_unicode_and_trimmed() {
        assert_eq!(
            DisplayName::parse("  Agence d'Épinal ").unwrap().as_str(),
            "Agence d'Épinal"
        );
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse("a\u{7}b").is_err());
    }
}
