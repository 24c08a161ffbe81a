//! Idempotency keys of creates.

use sha2::{Digest, Sha256};

/// A create's idempotency key: the caller's `request_id`, and a digest of
/// the method and of the rest of its request, so that a retry is told apart
/// from another request that reuses the id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey {
    id: String,
    method: &'static str,
    digest: [u8; 32],
}

impl RequestKey {
    /// `body`: the request as the caller sent it, without its request id
    /// (the encoding must be deterministic: the same request gives the same
    /// bytes).
    pub fn new(method: &'static str, id: String, body: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(method.as_bytes());
        hasher.update([0]);
        hasher.update(body);
        Self {
            id,
            method,
            digest: hasher.finalize().into(),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn method(&self) -> &'static str {
        self.method
    }

    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// Whether a request recorded as (`method`, `digest`) is this one. An
    /// id recorded without a digest (before digests were) matches any
    /// request of the same method.
    pub fn same_as(&self, method: &str, digest: Option<&[u8]>) -> bool {
        method == self.method && digest.is_none_or(|d| d == self.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_request_matches_and_another_does_not() {
        let a = RequestKey::new("CreateUser", "r1".into(), b"body");
        let again = RequestKey::new("CreateUser", "r1".into(), b"body");
        let other = RequestKey::new("CreateUser", "r1".into(), b"other body");
        let elsewhere = RequestKey::new("CreateAccount", "r1".into(), b"body");
        assert_eq!(a, again);
        assert!(a.same_as("CreateUser", Some(again.digest())));
        assert!(!a.same_as("CreateUser", Some(other.digest())));
        assert!(!a.same_as("CreateAccount", Some(elsewhere.digest())));
        assert!(a.same_as("CreateUser", None));
        assert!(!a.same_as("CreateAccount", None));
    }
}
