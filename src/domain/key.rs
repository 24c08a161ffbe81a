//! Connection keys: `clef_` + 52 characters of lowercase base32 carrying 256
//! bits from the OS RNG + a 7-character base32 CRC-32 of those 52 characters.
//!
//! The fixed prefix and the checksum let secret scanners recognise a leaked key
//! without a database, and let the server reject mistyped keys without one.
//! Only the SHA-256 of the whole key is ever stored.

use std::{fmt, sync::LazyLock};

use data_encoding::{Encoding, Specification};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The fixed prefix of every connection key.
pub const PREFIX: &str = "clef_";
const BODY_LEN: usize = 52;
const CHECK_LEN: usize = 7;
/// Total length of a key.
pub const KEY_LEN: usize = PREFIX.len() + BODY_LEN + CHECK_LEN;
/// How many characters of a key are kept to recognise it in listings.
pub const DISPLAY_PREFIX_LEN: usize = PREFIX.len() + 8;

static BASE32_LOWER: LazyLock<Encoding> = LazyLock::new(|| {
    let mut spec = Specification::new();
    spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
    spec.encoding().expect("valid base32 alphabet")
});

/// The SHA-256 of a key: what the store keeps and looks keys up by.
pub type KeyHash = [u8; 32];

/// A freshly generated key. The secret is shown once, in the response that
/// creates it; `Debug` never prints it.
pub struct NewKey {
    secret: String,
}

impl NewKey {
    /// 256 bits from the OS RNG.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        let body = BASE32_LOWER.encode(&bytes);
        let check = checksum(body.as_bytes());
        let check = std::str::from_utf8(&check).expect("base32 is ASCII");
        Ok(Self {
            secret: format!("{PREFIX}{body}{check}"),
        })
    }

    /// The secret, to hand to its owner once.
    pub fn expose_secret(&self) -> &str {
        &self.secret
    }

    pub fn hash(&self) -> KeyHash {
        hash(&self.secret)
    }

    /// The first characters, safe to show in listings and logs.
    pub fn display_prefix(&self) -> String {
        self.secret[..DISPLAY_PREFIX_LEN].to_owned()
    }
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NewKey({}…)", &self.secret[..DISPLAY_PREFIX_LEN])
    }
}

/// Checks the shape and checksum of a presented key and returns its hash, or
/// `None` for anything that cannot be a key of ours.
pub fn parse_presented(key: &str) -> Option<KeyHash> {
    if key.len() != KEY_LEN || !key.starts_with(PREFIX) {
        return None;
    }
    let body = &key.as_bytes()[PREFIX.len()..PREFIX.len() + BODY_LEN];
    let check = &key.as_bytes()[PREFIX.len() + BODY_LEN..];
    // On the decision path for every key presented: nothing allocated.
    let mut secret = [0u8; 32];
    BASE32_LOWER.decode_mut(body, &mut secret).ok()?;
    if checksum(body) != check {
        return None;
    }
    Some(hash(key))
}

/// The base32 CRC-32 of a key's body.
fn checksum(body: &[u8]) -> [u8; CHECK_LEN] {
    let mut check = [0u8; CHECK_LEN];
    BASE32_LOWER.encode_mut(&crc32fast::hash(body).to_be_bytes(), &mut check);
    check
}

fn hash(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

/// What may be shown of a key: never its secret.
#[derive(Debug, Clone)]
pub struct KeyMeta {
    pub id: Uuid,
    pub user_id: Uuid,
    pub display_prefix: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_are_distinct() {
        let a = NewKey::generate().unwrap();
        let b = NewKey::generate().unwrap();
        assert_eq!(a.expose_secret().len(), KEY_LEN);
        assert!(a.expose_secret().starts_with(PREFIX));
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_eq!(parse_presented(a.expose_secret()), Some(a.hash()));
        assert!(!format!("{a:?}").contains(&a.expose_secret()[DISPLAY_PREFIX_LEN..]));
    }

    #[test]
    fn a_mistyped_key_fails_its_checksum() {
        let key = NewKey::generate().unwrap().expose_secret().to_owned();
        let mut chars: Vec<char> = key.chars().collect();
        chars[10] = if chars[10] == 'a' { 'b' } else { 'a' };
        let typo: String = chars.into_iter().collect();
        assert_eq!(parse_presented(&typo), None);
        assert_eq!(parse_presented(&key[..KEY_LEN - 1]), None);
        assert_eq!(parse_presented(&key.to_uppercase()), None);
        assert_eq!(parse_presented(""), None);
    }

    #[test]
    fn a_key_with_multibyte_characters_is_not_a_key() {
        // As long as a key in bytes, with a two-byte character across the
        // end of the body and one inside it: refused, never a panic.
        let across = format!(
            "{PREFIX}{}é{}",
            "a".repeat(BODY_LEN - 1),
            "a".repeat(CHECK_LEN - 1)
        );
        let inside = format!("{PREFIX}é{}", "a".repeat(BODY_LEN + CHECK_LEN - 2));
        for key in [across, inside] {
            assert_eq!(key.len(), KEY_LEN);
            assert_eq!(parse_presented(&key), None);
        }
    }
}
