//! Users: kinds, statuses, validated profiles, logins and user keys.
//! (Over 600 lines with its unit tests; each part is small and they share
//! the profile types.)

use std::fmt;

use uuid::Uuid;

use super::Violations;

/// The kinds of user of the domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserKind {
    /// Belongs to exactly one account (his home account).
    Standard,
    /// Linked to any number of accounts by his user key.
    Advanced,
}

impl UserKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UserKind::Standard => "standard",
            UserKind::Advanced => "advanced",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "standard" => Some(UserKind::Standard),
            "advanced" => Some(UserKind::Advanced),
            _ => None,
        }
    }
}

/// `invited` → `active` ⇄ `deactivated`; any → `archived` (terminal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserStatus {
    Invited,
    Active,
    Deactivated,
    Archived,
}

impl UserStatus {
    /// What a listing shows when asked for no status: everyone but the
    /// archived.
    pub const LISTED_BY_DEFAULT: [UserStatus; 3] = [
        UserStatus::Invited,
        UserStatus::Active,
        UserStatus::Deactivated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Invited => "invited",
            UserStatus::Active => "active",
            UserStatus::Deactivated => "deactivated",
            UserStatus::Archived => "archived",
        }
    }

    pub fn from_db(s: &str) -> Self {
        match s {
            "invited" => UserStatus::Invited,
            "active" => UserStatus::Active,
            "deactivated" => UserStatus::Deactivated,
            _ => UserStatus::Archived,
        }
    }

    /// Whether a user in this status may receive new grants (directly, by a
    /// link or by an import): an invited user may, so that he finds his
    /// rights when he completes his invitation; a deactivated or archived
    /// one may not. Returns why not.
    pub fn may_receive_grants(self) -> Result<(), String> {
        match self {
            UserStatus::Active | UserStatus::Invited => Ok(()),
            UserStatus::Deactivated | UserStatus::Archived => Err(format!(
                "the user is {} and cannot receive new rights",
                self.as_str()
            )),
        }
    }

    /// Whether a user may move from `self` to `to`. Returns why not.
    pub fn transition(self, to: UserStatus) -> Result<(), String> {
        use UserStatus::*;
        match (self, to) {
            (Archived, _) => Err("the user is archived; archiving is final".into()),
            (_, Archived) => Ok(()),
            (Active, Deactivated) | (Deactivated, Active) | (Invited, Deactivated) => Ok(()),
            (from, to) if from == to => Err(format!("the user is already {}", to.as_str())),
            (from, to) => Err(format!(
                "a {} user cannot become {}",
                from.as_str(),
                to.as_str()
            )),
        }
    }
}

/// A user's profile as stored. Empty optional fields are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Profile {
    pub last_name: String,
    pub first_name: String,
    pub job_title: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub address_lines: Vec<String>,
    pub postal_code: Option<String>,
    pub city: Option<String>,
    pub country: Option<String>,
    pub civility: Option<String>,
    pub language: String,
}

/// A profile as typed by a caller, before validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawProfile {
    pub last_name: String,
    pub first_name: String,
    pub job_title: String,
    pub email: String,
    pub phone: String,
    pub address_lines: Vec<String>,
    pub postal_code: String,
    pub city: String,
    pub country: String,
    pub civility: String,
    pub language: String,
}

/// A profile field, as an update or an import column names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProfileField {
    LastName,
    FirstName,
    JobTitle,
    Email,
    Phone,
    AddressLines,
    PostalCode,
    City,
    Country,
    Civility,
    Language,
}

impl ProfileField {
    pub const ALL: [ProfileField; 11] = [
        ProfileField::LastName,
        ProfileField::FirstName,
        ProfileField::JobTitle,
        ProfileField::Email,
        ProfileField::Phone,
        ProfileField::AddressLines,
        ProfileField::PostalCode,
        ProfileField::City,
        ProfileField::Country,
        ProfileField::Civility,
        ProfileField::Language,
    ];

    /// Its name in requests and messages (`address_lines`).
    pub fn name(self) -> &'static str {
        match self {
            ProfileField::LastName => "last_name",
            ProfileField::FirstName => "first_name",
            ProfileField::JobTitle => "job_title",
            ProfileField::Email => "email",
            ProfileField::Phone => "phone",
            ProfileField::AddressLines => "address_lines",
            ProfileField::PostalCode => "postal_code",
            ProfileField::City => "city",
            ProfileField::Country => "country",
            ProfileField::Civility => "civility",
            ProfileField::Language => "language",
        }
    }

    /// The field named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }
}

impl RawProfile {
    /// Copies `fields` of `from` into `self`, leaving the others.
    pub fn copy_fields(&mut self, from: &RawProfile, fields: &[ProfileField]) {
        for field in fields {
            match field {
                ProfileField::LastName => self.last_name = from.last_name.clone(),
                ProfileField::FirstName => self.first_name = from.first_name.clone(),
                ProfileField::JobTitle => self.job_title = from.job_title.clone(),
                ProfileField::Email => self.email = from.email.clone(),
                ProfileField::Phone => self.phone = from.phone.clone(),
                ProfileField::AddressLines => self.address_lines = from.address_lines.clone(),
                ProfileField::PostalCode => self.postal_code = from.postal_code.clone(),
                ProfileField::City => self.city = from.city.clone(),
                ProfileField::Country => self.country = from.country.clone(),
                ProfileField::Civility => self.civility = from.civility.clone(),
                ProfileField::Language => self.language = from.language.clone(),
            }
        }
    }
}

impl Profile {
    /// Validates a profile for a user of `kind`, recording violations under
    /// `prefix` (e.g. `user.`). A standard user needs only his names (seed
    /// 001): without login nor email he gets `firstname.lastname`.
    pub fn parse(raw: &RawProfile, kind: UserKind, prefix: &str, v: &mut Violations) -> Profile {
        let f = |name: &str| format!("{prefix}{name}");
        let mut text = |name: &str, value: &str, required: bool, max: usize| -> Option<String> {
            let value = value.trim();
            if value.is_empty() {
                if required {
                    v.add(f(name), "is required");
                }
                return None;
            }
            match check_text(value, max) {
                Ok(()) => Some(value.to_owned()),
                Err(why) => {
                    v.add(f(name), why);
                    None
                }
            }
        };
        let advanced = kind == UserKind::Advanced;
        let last_name = text("last_name", &raw.last_name, true, 100).unwrap_or_default();
        let first_name = text("first_name", &raw.first_name, true, 100).unwrap_or_default();
        let job_title = text("job_title", &raw.job_title, advanced, 100);
        let postal_code = text("postal_code", &raw.postal_code, advanced, 16);
        let city = text("city", &raw.city, advanced, 100);
        let country = text("country", &raw.country, false, 64);
        let civility = text("civility", &raw.civility, false, 32);
        let email = match raw.email.trim() {
            "" => {
                if advanced {
                    v.add(f("email"), "is required");
                }
                None
            }
            e => v.check(&f("email"), parse_email(e)),
        };
        let phone = match raw.phone.trim() {
            "" => {
                if advanced {
                    v.add(f("phone"), "is required");
                }
                None
            }
            p => v.check(&f("phone"), parse_phone(p)),
        };
        let mut address_lines = Vec::new();
        for (i, line) in raw.address_lines.iter().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            match check_text(line, 200) {
                Ok(()) => address_lines.push(line.to_owned()),
                Err(why) => v.add(format!("{prefix}address_lines[{i}]"), why),
            }
        }
        if address_lines.len() > 4 {
            v.add(f("address_lines"), "must have at most 4 lines");
        }
        if advanced && address_lines.is_empty() {
            v.add(f("address_lines"), "is required");
        }
        let language = match raw.language.trim() {
            "" => "fr".to_owned(),
            l => v
                .check(&f("language"), parse_language(l))
                .unwrap_or_default(),
        };
        Profile {
            last_name,
            first_name,
            job_title,
            email,
            phone,
            address_lines,
            postal_code,
            city,
            country,
            civility,
            language,
        }
    }

    /// The profile as raw input, for re-validation after an update.
    pub fn to_raw(&self) -> RawProfile {
        let s = |o: &Option<String>| o.clone().unwrap_or_default();
        RawProfile {
            last_name: self.last_name.clone(),
            first_name: self.first_name.clone(),
            job_title: s(&self.job_title),
            email: s(&self.email),
            phone: s(&self.phone),
            address_lines: self.address_lines.clone(),
            postal_code: s(&self.postal_code),
            city: s(&self.city),
            country: s(&self.country),
            civility: s(&self.civility),
            language: self.language.clone(),
        }
    }

    /// "First Last".
    pub fn display_name(&self) -> String {
        format!("{} {}", self.first_name, self.last_name)
    }

    /// What `ListUsers`' text search looks in, lowercased.
    pub fn search_text(&self, login: &str) -> String {
        format!(
            "{} {} {} {}",
            self.last_name,
            self.first_name,
            self.email.as_deref().unwrap_or(""),
            login
        )
        .to_lowercase()
    }
}

fn check_text(value: &str, max: usize) -> Result<(), String> {
    if value.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// A plausible email address: one `@`, a non-empty local part, a domain with a
/// dot, no spaces.
pub fn parse_email(s: &str) -> Result<String, String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not a valid email address");
    if s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let (local, domain) = s.split_once('@').ok_or_else(bad)?;
    if local.is_empty()
        || domain.contains('@')
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
        || domain.contains("..")
    {
        return Err(bad());
    }
    Ok(s.to_owned())
}

fn parse_phone(s: &str) -> Result<String, String> {
    let digits = s.chars().filter(char::is_ascii_digit).count();
    if !(3..=20).contains(&digits)
        || !s
            .chars()
            .all(|c| c.is_ascii_digit() || " +-.()/".contains(c))
    {
        return Err(format!("{s:?} is not a valid phone number"));
    }
    Ok(s.to_owned())
}

fn parse_language(s: &str) -> Result<String, String> {
    let mut parts = s.split('-');
    let primary = parts.next().unwrap_or_default();
    let ok = (2..=3).contains(&primary.len())
        && primary.chars().all(|c| c.is_ascii_alphabetic())
        && parts
            .all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a BCP 47 language tag (e.g. fr, en-GB)"
        ))
    }
}

/// A login given by a caller: 1-100 characters, no spaces or control
/// characters.
pub fn parse_login(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty()
        || s.chars().count() > 100
        || s.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("must be 1-100 characters without spaces".into());
    }
    Ok(s.to_owned())
}

/// The logins a user given none may get, in order: his email, as it is (a
/// suffix never goes on the end of an email), while no one holds it as a
/// login; else `firstname.lastname` folded to lowercase ASCII, with a
/// numeric suffix on collision (`zoe.bronte-orsted2`: the store picks it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultLogin {
    pub email: Option<String>,
    pub name: String,
}

pub fn default_login(profile: &Profile) -> DefaultLogin {
    let fold = |s: &str| -> String {
        deunicode::deunicode(s)
            .to_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect::<String>()
            .split('-')
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("-")
    };
    let login = format!("{}.{}", fold(&profile.first_name), fold(&profile.last_name));
    let name = if login == "." {
        "user".into()
    } else {
        login.trim_matches('.').to_owned()
    };
    DefaultLogin {
        email: profile.email.as_ref().map(|e| e.to_lowercase()),
        name,
    }
}

/// A tag on a link: 1-64 characters, trimmed, no control characters; any
/// Unicode. Duplicates are removed, order kept.
pub fn parse_tags(tags: &[String], field: &str, v: &mut Violations) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, t) in tags.iter().enumerate() {
        let t = t.trim();
        if t.is_empty() || t.chars().count() > 64 || t.chars().any(char::is_control) {
            v.add(
                format!("{field}[{i}]"),
                "a tag is 1-64 characters without control characters",
            );
        } else if !out.iter().any(|o| o == t) {
            out.push(t.to_owned());
        }
    }
    if out.len() > 50 {
        v.add(field, "at most 50 tags");
    }
    out
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A user key: 12 Crockford base32 characters (60 bits from the OS RNG),
/// shown as `XXXX-XXXX-XXXX`, case- and separator-insensitive on input.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserKey(String);

impl UserKey {
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes)?;
        let n = u64::from_be_bytes(bytes);
        let key = (0..12)
            .map(|i| CROCKFORD[((n >> (i * 5)) & 31) as usize] as char)
            .collect();
        Ok(Self(key))
    }

    /// Accepts any case, `-`, `_` and spaces as separators, and the Crockford
    /// substitutions (I, L → 1; O → 0).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut key = String::with_capacity(12);
        for c in s.chars() {
            let c = match c.to_ascii_uppercase() {
                '-' | '_' | ' ' => continue,
                'I' | 'L' => '1',
                'O' => '0',
                c => c,
            };
            if !CROCKFORD.contains(&(c as u8)) || !c.is_ascii() {
                return Err(format!(
                    "{s:?} is not a user key (12 characters like K7QH-2M9D-XW4P)"
                ));
            }
            key.push(c);
        }
        if key.len() != 12 {
            return Err(format!(
                "{s:?} is not a user key (12 characters like K7QH-2M9D-XW4P)"
            ));
        }
        Ok(Self(key))
    }

    /// The stored form: 12 characters, no separators.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn from_db(s: String) -> Self {
        Self(s)
    }
}

impl fmt::Display for UserKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", &self.0[..4], &self.0[4..8], &self.0[8..])
    }
}

/// "j***@example.com": enough for an admin to confirm an identity, not enough
/// to harvest addresses.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".into(),
    }
}

/// A user as stored.
#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub kind: UserKind,
    pub status: UserStatus,
    pub login: String,
    pub user_key: Option<UserKey>,
    pub profile: Profile,
    pub home_account: Option<String>,
    pub default_account: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub revision: i64,
}

/// A link of a user to an account.
#[derive(Debug, Clone)]
pub struct Link {
    pub user_id: Uuid,
    pub account_id: Uuid,
    pub account_code: String,
    pub tags: Vec<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub revision: i64,
}

/// One account a user is linked to, and whether some actor administers it.
#[derive(Debug, Clone)]
pub struct LinkedAccount {
    pub account_id: Uuid,
    pub code: String,
    pub actor_is_admin: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_keys_round_trip_and_ignore_case_and_separators() {
        let k = UserKey::generate().unwrap();
        let shown = k.to_string();
        assert_eq!(shown.len(), 14);
        assert_eq!(UserKey::parse(&shown).unwrap(), k);
        assert_eq!(
            UserKey::parse(&shown.to_lowercase().replace('-', " ")).unwrap(),
            k
        );
        assert_eq!(
            UserKey::parse("k7qh-2m9d-xw4p").unwrap().to_string(),
            "K7QH-2M9D-XW4P"
        );
        assert_eq!(
            UserKey::parse("OIL0-0000-0000").unwrap().as_str(),
            "011000000000"
        );
        assert!(UserKey::parse("K7QH-2M9D-XW4").is_err());
        assert!(UserKey::parse("K7QH-2M9D-XW4U").is_err());
        assert!(UserKey::parse("K7QH-2M9D-XW4É").is_err());
    }

    #[test]
    fn default_login_folds_names_to_ascii() {
        let p = Profile {
            first_name: "Jérôme".into(),
            last_name: "Le Bœuf".into(),
            ..Default::default()
        };
        assert_eq!(default_login(&p).name, "jerome.le-boeuf");
        assert_eq!(default_login(&p).email, None);
        let with_email = Profile {
            email: Some("J.Doe@Example.com".into()),
            ..p
        };
        assert_eq!(
            default_login(&with_email).email.as_deref(),
            Some("j.doe@example.com")
        );
    }

    #[test]
    fn advanced_profiles_require_their_fields() {
        let mut v = Violations::default();
        Profile::parse(&RawProfile::default(), UserKind::Advanced, "user.", &mut v);
        let fields: Vec<_> = v.0.iter().map(|x| x.field.as_str()).collect();
        for f in [
            "user.last_name",
            "user.first_name",
            "user.job_title",
            "user.email",
            "user.phone",
            "user.address_lines",
            "user.postal_code",
            "user.city",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
        let mut v = Violations::default();
        let raw = RawProfile {
            last_name: "Dupré".into(),
            first_name: "Zoé".into(),
            ..Default::default()
        };
        Profile::parse(&raw, UserKind::Standard, "", &mut v);
        assert!(v.0.is_empty(), "{v}");
    }

    #[test]
    fn emails_are_checked() {
        assert!(parse_email("a@b.fr").is_ok());
        for bad in [
            "a", "a@b", "@b.fr", "a@@b.fr", "a b@c.fr", "a@.fr", "a@b..fr",
        ] {
            assert!(parse_email(bad).is_err(), "{bad}");
        }
        assert_eq!(mask_email("jeanne@example.com"), "j***@example.com");
    }

    #[test]
    fn status_transitions() {
        use UserStatus::*;
        assert!(Active.transition(Deactivated).is_ok());
        assert!(Deactivated.transition(Active).is_ok());
        assert!(Active.transition(Archived).is_ok());
        assert!(Archived.transition(Active).is_err());
        assert!(Active.transition(Active).is_err());
    }
}
