//! What a line's result says: its status, the column at fault and why.

use uuid::Uuid;

use crate::domain::{import::LineStatus, Error};

/// What happened to one line (or, for a sync, to one absent user). Atomic
/// imports stage results as JSON until they commit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    /// 1-based line of the file; 0 for a sync's deactivation.
    pub line: u64,
    pub status: LineStatus,
    /// The column or field at fault (empty when none is).
    pub column: String,
    /// Why, for a refused line; empty otherwise.
    pub message: String,
    /// The user the line created or changed (or left unchanged).
    pub user_id: Option<Uuid>,
}

impl Outcome {
    /// A refused line.
    pub fn refused(
        line: u64,
        status: LineStatus,
        column: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            line,
            status,
            column: column.to_owned(),
            message: message.into(),
            user_id: None,
        }
    }

    /// Refused for its user data.
    pub fn invalid_data(line: u64, field: &str, why: impl Into<String>) -> Self {
        Self::refused(line, LineStatus::InvalidUserData, field, why)
    }

    /// A line applied (or found unchanged) for `user`.
    pub fn done(line: u64, status: LineStatus, user: Uuid) -> Self {
        Self {
            line,
            status,
            column: String::new(),
            message: String::new(),
            user_id: Some(user),
        }
    }

    /// Whether the line (or deactivation) wrote something.
    pub fn wrote(&self) -> bool {
        self.status.wrote()
    }

    /// Whether the line was refused (an `atomic` import then writes nothing).
    pub fn failed(&self) -> bool {
        self.status.failed()
    }

    /// A line's outcome for a write the database refused (a concurrent
    /// writer took the email or login); other errors are faults of the
    /// system.
    pub fn of_write_error(line: u64, e: Error) -> Result<Self, Error> {
        match e {
            Error::AlreadyExists { what, field } => Ok(Self::invalid_data(
                line,
                field.unwrap_or(""),
                format!("{what} already exists"),
            )),
            Error::FailedPrecondition(why) => Ok(Self::invalid_data(line, "", why)),
            Error::Invalid(v) => {
                let first = v.0.first().map(|f| f.field.clone()).unwrap_or_default();
                Ok(Self::invalid_data(line, &first, v.to_string()))
            }
            other => Err(other),
        }
    }
}

/// Why a line naming another tenant's user by email or login fails: the
/// same words whoever holds it, and nothing about him.
pub const NOT_MANAGED: &str = "already used by a user you do not manage; link him by his user key";
