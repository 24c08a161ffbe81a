//! The one error type of the domain boundary. `api` maps it onto a small set
//! of gRPC codes in exactly one place (`api::error`).

use std::fmt;

/// A result whose error is a domain [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a request, from the caller's point of view.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; each violation names a field.
    #[error("invalid argument: {0}")]
    Invalid(Violations),
    /// The named thing does not exist (or the caller may not know it exists).
    #[error("{0} not found")]
    NotFound(String),
    /// The named thing exists already; `field` is the request field that
    /// makes it a duplicate, when one does (`email`, `login`).
    #[error("{what} already exists")]
    AlreadyExists {
        what: String,
        field: Option<&'static str>,
    },
    /// The caller is known but lacks the named right or role.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// No valid credentials. Deliberately carries no detail.
    #[error("missing or invalid credentials")]
    Unauthenticated,
    /// The request is valid but the system is not in a state to accept it.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// Postgres cannot be reached; retrying later may succeed.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Over a documented limit (a message's size, ...).
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// A change over several accounts refused, with each account at fault.
    #[error("refused on {}", .0.iter().map(|r| format!("{} ({})", r.account, r.description)).collect::<Vec<_>>().join(", "))]
    PerAccount(Vec<AccountRefusal>),
    /// A bug or an unexpected fault; `api::error` logs the details once and
    /// answers only "internal error".
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// `AlreadyExists` of `what`, no field in particular.
    pub fn already_exists(what: impl Into<String>) -> Self {
        Error::AlreadyExists {
            what: what.into(),
            field: None,
        }
    }

    /// A single-field validation error.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        let mut v = Violations::default();
        v.add(field, description);
        Error::Invalid(v)
    }
}

/// Why one account of a multi-account change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRefusal {
    pub account: String,
    pub reason: RefusalReason,
    pub description: String,
}

/// Why one account of a multi-account change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    NotFound,
    PermissionDenied,
    FailedPrecondition,
}

impl RefusalReason {
    /// Its name in `google.rpc.PreconditionFailure` violations.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::NotFound => "not_found",
            RefusalReason::PermissionDenied => "permission_denied",
            RefusalReason::FailedPrecondition => "failed_precondition",
        }
    }
}

impl AccountRefusal {
    /// Classifies a domain error met on one account.
    pub fn from_error(account: &str, e: Error) -> Result<Self, Error> {
        let (reason, description) = match e {
            Error::NotFound(what) => (RefusalReason::NotFound, format!("{what} not found")),
            Error::PermissionDenied(why) => (RefusalReason::PermissionDenied, why),
            Error::FailedPrecondition(why) => (RefusalReason::FailedPrecondition, why),
            other => return Err(other),
        };
        Ok(Self {
            account: account.to_owned(),
            reason,
            description,
        })
    }
}

/// One field at fault and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field in the request, e.g. `account.code`.
    pub field: String,
    /// What is wrong with it, in lowercase prose.
    pub description: String,
}

/// The violations found while validating one request. Validation collects
/// every violation before failing so that a caller fixes them in one round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Violations(pub Vec<FieldViolation>);

impl Violations {
    /// Records a violation.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
    }

    /// Keeps the value of a successful parse, records the error of a failed one.
    pub fn check<T>(&mut self, field: &str, parsed: Result<T, String>) -> Option<T> {
        match parsed {
            Ok(v) => Some(v),
            Err(why) => {
                self.add(field, why);
                None
            }
        }
    }

    /// `Ok` when nothing was recorded.
    pub fn finish(self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid(self))
        }
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect();
        f.write_str(&parts.join("; "))
    }
}
