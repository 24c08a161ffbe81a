//! Caller authentication: `authorization: Bearer <connection key>`.
//!
//! Missing, malformed, unknown, revoked and expired keys, and keys of inactive
//! users, all get the same `UNAUTHENTICATED` answer: nothing tells a caller
//! which of these it was.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tonic::Request;
use uuid::Uuid;

use crate::{
    domain::{key, principal::Actor, Error},
    store::Store,
};

/// `last_used_at` is written at most this often per key.
const TOUCH_INTERVAL: Duration = Duration::from_secs(300);

/// Resolves the actor of each request.
#[derive(Clone, Debug)]
pub struct Authenticator {
    store: Store,
    /// When each key's `last_used_at` was last written by this replica.
    touched: Arc<Mutex<HashMap<Uuid, Instant>>>,
}

impl Authenticator {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            touched: Arc::default(),
        }
    }

    /// The actor of a request, or `Unauthenticated`.
    pub async fn actor<T>(&self, request: &Request<T>) -> Result<Actor, Error> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or(Error::Unauthenticated)?;
        let presented = bearer_token(header).ok_or(Error::Unauthenticated)?;
        let hash = key::parse_presented(presented).ok_or(Error::Unauthenticated)?;
        let actor = self
            .store
            .actor_by_key_hash(&hash)
            .await?
            .ok_or(Error::Unauthenticated)?;
        self.touch(actor.key_id);
        crate::observe::record_caller(request.extensions(), actor.user_id);
        Ok(actor)
    }

    /// Writes `last_used_at` in the background, at most every
    /// [`TOUCH_INTERVAL`] per key; never delays the request.
    fn touch(&self, key_id: Uuid) {
        let now = Instant::now();
        {
            let Ok(mut touched) = self.touched.lock() else {
                return;
            };
            match touched.get(&key_id) {
                Some(at) if now.duration_since(*at) < TOUCH_INTERVAL => return,
                _ => {
                    touched.insert(key_id, now);
                }
            }
        }
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.touch_key(key_id).await {
                tracing::debug!(error = %e, "could not record key use");
            }
        });
    }
}

/// The token of an `authorization: Bearer <token>` header value.
pub(crate) fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("abc"), None);
    }
}
