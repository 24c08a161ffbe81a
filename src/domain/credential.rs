//! Passwords, invitation and reset tokens, login throttling, and the
//! messages the outbox sends: the rules, with no hashing (see
//! `crate::hasher`) and no IO beyond the OS RNG.

use std::{fmt, time::Duration};

use chrono::{DateTime, Utc};
use data_encoding::{Encoding, Specification};
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;

/// The fewest characters a password may have (no composition rules).
pub const PASSWORD_MIN_CHARS: usize = 12;
/// The most characters a password may have.
pub const PASSWORD_MAX_CHARS: usize = 128;
/// What a login attempt may send at most (bytes): anything longer cannot
/// be a password (128 characters of 4 bytes) and is refused unhashed.
pub const PASSWORD_MAX_BYTES: usize = PASSWORD_MAX_CHARS * 4;

/// A password as typed, normalised (Unicode NFC, so that the same
/// characters typed on two keyboards are the same password). `Debug` never
/// shows it.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// A new password: 12 to 128 characters once normalised, no control
    /// characters. Returns why not (never echoing it).
    pub fn new(raw: &str) -> Result<Self, String> {
        if raw.len() > PASSWORD_MAX_BYTES {
            return Err(format!("must be at most {PASSWORD_MAX_CHARS} characters"));
        }
        let normalised: String = raw.nfc().collect();
        let chars = normalised.chars().count();
        if chars < PASSWORD_MIN_CHARS {
            return Err(format!("must be at least {PASSWORD_MIN_CHARS} characters"));
        }
        if chars > PASSWORD_MAX_CHARS {
            return Err(format!("must be at most {PASSWORD_MAX_CHARS} characters"));
        }
        if normalised.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        Ok(Self(normalised))
    }

    /// A password presented to log in: normalised like a new one, without
    /// the rules for new ones (a wrong password is just wrong). `None` when
    /// it is too long to be anyone's password.
    pub fn presented(raw: &str) -> Option<Self> {
        (raw.len() <= PASSWORD_MAX_BYTES).then(|| Self(raw.nfc().collect()))
    }

    /// The bytes to hash.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(…)")
    }
}

/// What a single-use token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    /// Completing an invitation (seed 004: "ce lien restera valide 48h").
    Invitation,
    /// Choosing a new password after "forgot password".
    PasswordReset,
}

impl TokenPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenPurpose::Invitation => "invitation",
            TokenPurpose::PasswordReset => "password_reset",
        }
    }

    /// How long a token of this purpose is valid.
    pub fn validity(self) -> Duration {
        match self {
            TokenPurpose::Invitation => Duration::from_secs(48 * 3600),
            TokenPurpose::PasswordReset => Duration::from_secs(3600),
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            TokenPurpose::Invitation => "clefinv_",
            TokenPurpose::PasswordReset => "clefrst_",
        }
    }
}

static BASE32_LOWER: std::sync::LazyLock<Encoding> = std::sync::LazyLock::new(|| {
    let mut spec = Specification::new();
    spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
    spec.encoding().expect("valid base32 alphabet")
});

/// Random bytes in a token: 160 bits.
const TOKEN_BYTES: usize = 20;
/// Base32 characters of those bytes.
const TOKEN_BODY: usize = 32;

/// The SHA-256 of a token: all the store keeps.
pub type TokenHash = [u8; 32];

/// A freshly drawn token: shown once (in a response or a message), stored
/// only as its hash. `Debug` never prints it.
pub struct Token {
    secret: String,
    purpose: TokenPurpose,
}

impl Token {
    /// 160 bits from the OS RNG, behind a prefix naming the purpose
    /// (`clefinv_…`, `clefrst_…`) so that a leaked token is recognisable.
    pub fn generate(purpose: TokenPurpose) -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes)?;
        Ok(Self {
            secret: format!("{}{}", purpose.prefix(), BASE32_LOWER.encode(&bytes)),
            purpose,
        })
    }

    /// A token whose secret is not shown to this caller (empty).
    pub fn withheld(purpose: TokenPurpose) -> Self {
        Self {
            secret: String::new(),
            purpose,
        }
    }

    pub fn expose_secret(&self) -> &str {
        &self.secret
    }

    pub fn purpose(&self) -> TokenPurpose {
        self.purpose
    }

    pub fn hash(&self) -> TokenHash {
        Sha256::digest(self.secret.as_bytes()).into()
    }

    /// The hash of a presented token of `purpose`, or `None` for anything
    /// that cannot be one (surrounding spaces from a copy are forgiven).
    pub fn presented(purpose: TokenPurpose, s: &str) -> Option<TokenHash> {
        let s = s.trim();
        let body = s.strip_prefix(purpose.prefix())?;
        if body.len() != TOKEN_BODY || BASE32_LOWER.decode(body.as_bytes()).is_err() {
            return None;
        }
        Some(Sha256::digest(s.as_bytes()).into())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({}…)", self.purpose.prefix())
    }
}

/// A user's lock as an admin sees it: until when, after `failures` in a row
/// the last of which was at `last`; `None` when not locked at `now`.
pub fn lock_at(
    failures: i32,
    last: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    last.and_then(|last| locked_until(failures, last))
        .filter(|until| *until > now)
}

/// The one answer to a token that cannot be used, whatever the reason
/// (unknown, expired, used, superseded, its user no longer waiting for it).
pub fn token_refused(purpose: TokenPurpose) -> super::Error {
    super::Error::FailedPrecondition(match purpose {
        TokenPurpose::Invitation => {
            "this invitation cannot be used: it is unknown, expired or already used; ask for a new one".into()
        }
        TokenPurpose::PasswordReset => {
            "this reset link cannot be used: it is unknown, expired or already used; ask for a new one".into()
        }
    })
}

/// The shortest time between two reset links of one user: more requests in
/// between answer the same and send nothing (no mail bombing).
pub const RESET_INTERVAL: Duration = Duration::from_secs(60);

/// Failed logins allowed before a lock.
pub const FREE_FAILURES: i32 = 5;
/// The longest lock.
pub const MAX_LOCK: Duration = Duration::from_secs(15 * 60);

/// When a user who has just failed his `failures`-th consecutive login is
/// locked until: after the fifth, one second, doubling with each further
/// failure, at most fifteen minutes.
pub fn locked_until(failures: i32, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if failures < FREE_FAILURES {
        return None;
    }
    let exponent = (failures - FREE_FAILURES).min(20) as u32;
    let lock = Duration::from_secs(1u64 << exponent).min(MAX_LOCK);
    Some(now + chrono::Duration::from_std(lock).expect("a lock fits"))
}

/// The kinds of message the outbox sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// "Afin de finaliser la création de votre compte…" with a token.
    Invitation,
    /// A link to choose a new password.
    PasswordReset,
    /// "De nouveaux droits vous ont été attribués par …".
    RightsGranted,
    /// The last mail of an invitation: the account exists, with its rights.
    AccountCreated,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Invitation => "invitation",
            MessageKind::PasswordReset => "password_reset",
            MessageKind::RightsGranted => "rights_granted",
            MessageKind::AccountCreated => "account_created",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            MessageKind::Invitation,
            MessageKind::PasswordReset,
            MessageKind::RightsGranted,
            MessageKind::AccountCreated,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// The token the message carries, drawn as it is sent.
    pub fn token(self) -> Option<TokenPurpose> {
        match self {
            MessageKind::Invitation => Some(TokenPurpose::Invitation),
            MessageKind::PasswordReset => Some(TokenPurpose::PasswordReset),
            MessageKind::RightsGranted | MessageKind::AccountCreated => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_count_characters_not_bytes_after_normalisation() {
        // 12 characters, 24 bytes.
        assert!(Password::new("éééééééééééé").is_ok());
        // "e" + combining acute, 11 times: 11 characters once composed.
        let decomposed = "e\u{301}".repeat(11);
        assert!(Password::new(&decomposed).is_err());
        assert_eq!(
            Password::new("e\u{301}e\u{301}e\u{301}e\u{301}e\u{301}e\u{301}e\u{301}e\u{301}e\u{301}e\u{301}e\u{301}e\u{301}")
                .unwrap()
                .expose(),
            "éééééééééééé".as_bytes()
        );
        assert!(Password::new("short").is_err());
        assert!(Password::new(&"x".repeat(129)).is_err());
        assert!(Password::new(&"x".repeat(128)).is_ok());
        assert!(Password::new("twelve chars\0ok").is_err());
        assert!(Password::new("correct horse battery").is_ok());
        assert_eq!(
            format!("{:?}", Password::new("correct horse battery").unwrap()),
            "Password(…)"
        );
    }

    #[test]
    fn tokens_round_trip_and_reject_others() {
        let t = Token::generate(TokenPurpose::Invitation).unwrap();
        assert!(t.expose_secret().starts_with("clefinv_"));
        assert_eq!(t.expose_secret().len(), 8 + 32);
        assert_eq!(
            Token::presented(TokenPurpose::Invitation, t.expose_secret()),
            Some(t.hash())
        );
        assert_eq!(
            Token::presented(
                TokenPurpose::Invitation,
                &format!(" {} ", t.expose_secret())
            ),
            Some(t.hash())
        );
        assert_eq!(
            Token::presented(TokenPurpose::PasswordReset, t.expose_secret()),
            None
        );
        assert_eq!(
            Token::presented(TokenPurpose::Invitation, "clefinv_short"),
            None
        );
        assert!(!format!("{t:?}").contains(&t.expose_secret()[8..]));
    }

    #[test]
    fn locks_grow_after_five_failures_and_stop_at_fifteen_minutes() {
        let now = DateTime::<Utc>::from_timestamp(1_000_000, 0).unwrap();
        assert_eq!(locked_until(4, now), None);
        assert_eq!(
            locked_until(5, now),
            Some(now + chrono::Duration::seconds(1))
        );
        assert_eq!(
            locked_until(7, now),
            Some(now + chrono::Duration::seconds(4))
        );
        assert_eq!(
            locked_until(40, now),
            Some(now + chrono::Duration::minutes(15))
        );
    }
}
