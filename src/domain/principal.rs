//! Who is calling: the principal behind a connection key.

use uuid::Uuid;

use super::{Error, Result};

/// The kinds of principal that can hold a connection key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A portal user belonging to exactly one account.
    Standard,
    /// A user linked to any number of accounts by his user key.
    Advanced,
    /// Runs the service: may do anything.
    Operator,
    /// Another system (shipping, tracking) asking for decisions.
    Service,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::Standard => "standard",
            PrincipalKind::Advanced => "advanced",
            PrincipalKind::Operator => "operator",
            PrincipalKind::Service => "service",
        }
    }

    pub fn from_db(s: &str) -> Result<Self> {
        Ok(match s {
            "standard" => PrincipalKind::Standard,
            "advanced" => PrincipalKind::Advanced,
            "operator" => PrincipalKind::Operator,
            "service" => PrincipalKind::Service,
            other => return Err(Error::Internal(format!("unknown principal kind {other:?}"))),
        })
    }
}

/// The authenticated caller of an RPC.
#[derive(Debug, Clone)]
pub struct Actor {
    pub user_id: Uuid,
    pub kind: PrincipalKind,
    /// The connection key the call was made with.
    pub key_id: Uuid,
}

impl Actor {
    pub fn is_operator(&self) -> bool {
        self.kind == PrincipalKind::Operator
    }

    /// Refuses anyone but an operator.
    pub fn require_operator(&self) -> Result<()> {
        if self.is_operator() {
            Ok(())
        } else {
            Err(Error::PermissionDenied(
                "this operation requires an operator".into(),
            ))
        }
    }
}
