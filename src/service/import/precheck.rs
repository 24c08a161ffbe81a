//! Step 1 of a line: what can be said of it without the database — its
//! cells understood, the account it names, who it is about, and whether an
//! earlier line of the same batch was about him already.

use std::{
    collections::HashSet,
    hash::{DefaultHasher, Hash, Hasher},
};

use super::outcome::Outcome;
use crate::{
    bulk::reader::{ImportLine, LineProblem},
    domain::{
        account::AccountCode,
        import::LineStatus,
        user::{parse_login, parse_tags, UserKey, UserKind},
        Violations,
    },
};

/// How a line names its user.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    Key(String),
    Email(String),
    Login(String),
    /// Neither key, email nor login: always a new user.
    Nobody,
}

impl Identity {
    fn describe(&self) -> String {
        match self {
            Identity::Key(k) => format!("user key {k}"),
            Identity::Email(e) => format!("email {e}"),
            Identity::Login(l) => format!("login {l}"),
            Identity::Nobody => "same name".into(),
        }
    }
}

/// A line that passed the checks needing no database.
#[derive(Debug)]
pub struct Candidate {
    /// The hash of its identity, as the ledger keeps it.
    pub identity_hash: i64,
    pub line: u64,
    pub asked: ImportLine,
    /// The login it gives, validated.
    pub login: Option<String>,
    pub tags: Vec<String>,
    /// Lowercased and trimmed; empty when none.
    pub email: String,
    pub identity: Identity,
    /// Problems found so far, reported with the profile's.
    pub problems: Violations,
}

/// `duplicate_in_file` for a line about the same user as an earlier one.
pub fn duplicate(line: u64, identity: &Identity) -> Outcome {
    Outcome::refused(
        line,
        LineStatus::DuplicateInFile,
        "",
        format!("the same user as an earlier line ({})", identity.describe()),
    )
}

/// Checks a parsed line of an import into `account`; `seen` holds the
/// identities of the batch's earlier lines.
pub fn precheck(
    account: &AccountCode,
    seen: &mut HashSet<i64>,
    line: u64,
    parsed: Result<ImportLine, LineProblem>,
) -> Result<Candidate, Outcome> {
    let asked = match parsed {
        Ok(asked) => asked,
        Err(LineProblem::InvalidChoice { column, value, why }) => {
            return Err(Outcome::refused(
                line,
                LineStatus::InvalidChoice,
                &column,
                format!("{value:?}: {why}"),
            ))
        }
        Err(LineProblem::InvalidUserData { field, why }) => {
            return Err(Outcome::invalid_data(line, &field, why))
        }
    };
    if let Some(named) = &asked.account {
        if named != account.as_str() {
            return Err(Outcome::refused(
                line,
                LineStatus::InvalidChoice,
                "COMPTE",
                format!("{named:?}: this import is into account {account}"),
            ));
        }
    }
    let key = match &asked.user_key {
        Some(typed) => Some(
            UserKey::parse(typed).map_err(|why| Outcome::invalid_data(line, "user_key", why))?,
        ),
        None => None,
    };
    let mut problems = Violations::default();
    let login = asked
        .login
        .as_deref()
        .and_then(|typed| problems.check("login", parse_login(typed)));
    let tags = parse_tags(&asked.tags, "tags", &mut problems);
    let email = asked.profile.email.trim().to_lowercase();
    // Who the line is about: by user key, else email (advanced) or login
    // (standard, whose login defaults to his email).
    let identity = match (&key, asked.kind) {
        (Some(key), _) => Identity::Key(key.as_str().to_owned()),
        (None, UserKind::Advanced) if !email.is_empty() => Identity::Email(email.clone()),
        (None, _) => match login
            .clone()
            .or_else(|| (!email.is_empty()).then(|| email.clone()))
        {
            Some(login) => Identity::Login(login),
            None => Identity::Nobody,
        },
    };
    let identity_hash = identity_hash(&identity, &asked);
    if !seen.insert(identity_hash) {
        return Err(duplicate(line, &identity));
    }
    Ok(Candidate {
        identity_hash,
        line,
        asked,
        login,
        tags,
        email,
        identity,
        problems,
    })
}

/// What the ledger keeps of an identity: lines with neither key, email
/// nor login are the same when they give the same names.
fn identity_hash(identity: &Identity, asked: &ImportLine) -> i64 {
    let mut hasher = DefaultHasher::new();
    match identity {
        Identity::Nobody => format!(
            "name:{}:{}",
            asked.profile.first_name.trim(),
            asked.profile.last_name.trim()
        )
        .to_lowercase()
        .hash(&mut hasher),
        other => other.hash(&mut hasher),
    }
    hasher.finish() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::user::RawProfile;

    fn line(kind: UserKind, first: &str, last: &str, email: &str) -> ImportLine {
        ImportLine {
            line: 2,
            kind,
            status: None,
            login: None,
            user_key: None,
            account: None,
            profile: RawProfile {
                first_name: first.into(),
                last_name: last.into(),
                email: email.into(),
                ..Default::default()
            },
            tags: Vec::new(),
            rights: Vec::new(),
            roles: Vec::new(),
            teams: Vec::new(),
            password: None,
        }
    }

    fn account() -> AccountCode {
        AccountCode::parse("007").unwrap()
    }

    #[test]
    fn a_line_names_its_user_by_key_then_email_then_login() {
        let mut seen = HashSet::new();
        let mut keyed = line(UserKind::Advanced, "Zoé", "Dupré", "Zoe@Example.com");
        let key = UserKey::generate().unwrap();
        keyed.user_key = Some(key.to_string().to_lowercase());
        let c = precheck(&account(), &mut seen, 2, Ok(keyed)).unwrap();
        assert_eq!(c.identity, Identity::Key(key.as_str().to_owned()));

        let advanced = line(UserKind::Advanced, "Zoé", "Dupré", " Zoe@Example.com ");
        let c = precheck(&account(), &mut seen, 3, Ok(advanced)).unwrap();
        assert_eq!(c.identity, Identity::Email("zoe@example.com".into()));

        // A standard user's login defaults to his email.
        let standard = line(UserKind::Standard, "Léon", "Martin", "leon@example.com");
        let c = precheck(&account(), &mut seen, 4, Ok(standard)).unwrap();
        assert_eq!(c.identity, Identity::Login("leon@example.com".into()));

        let mut with_login = line(UserKind::Standard, "Léon", "Martin", "");
        with_login.login = Some("lmartin".into());
        let c = precheck(&account(), &mut seen, 5, Ok(with_login)).unwrap();
        assert_eq!(c.identity, Identity::Login("lmartin".into()));

        let nobody = line(UserKind::Standard, "Léon", "Martin", "");
        let c = precheck(&account(), &mut seen, 6, Ok(nobody)).unwrap();
        assert_eq!(c.identity, Identity::Nobody);
    }

    #[test]
    fn the_same_user_twice_in_a_batch_is_a_duplicate() {
        let mut seen = HashSet::new();
        let first = line(UserKind::Advanced, "Zoé", "Dupré", "zoe@example.com");
        precheck(&account(), &mut seen, 2, Ok(first)).unwrap();
        let again = line(UserKind::Advanced, "Zoe", "Dupre", "ZOE@example.com");
        let o = precheck(&account(), &mut seen, 3, Ok(again)).unwrap_err();
        assert_eq!(o.status, LineStatus::DuplicateInFile);
        assert!(o.message.contains("email zoe@example.com"), "{}", o.message);
        // Nameless lines are the same user when their names are.
        precheck(
            &account(),
            &mut seen,
            4,
            Ok(line(UserKind::Standard, "A", "B", "")),
        )
        .unwrap();
        let o = precheck(
            &account(),
            &mut seen,
            5,
            Ok(line(UserKind::Standard, " a", "b ", "")),
        )
        .unwrap_err();
        assert_eq!(o.status, LineStatus::DuplicateInFile);
        precheck(
            &account(),
            &mut seen,
            6,
            Ok(line(UserKind::Standard, "A", "C", "")),
        )
        .unwrap();
    }

    #[test]
    fn a_line_for_another_account_or_with_a_bad_key_is_refused() {
        let mut seen = HashSet::new();
        let mut other = line(UserKind::Advanced, "Zoé", "Dupré", "zoe@example.com");
        other.account = Some("7".into());
        let o = precheck(&account(), &mut seen, 2, Ok(other)).unwrap_err();
        assert_eq!(
            (o.status, o.column.as_str()),
            (LineStatus::InvalidChoice, "COMPTE")
        );
        assert!(o.message.contains("into account 007"), "{}", o.message);

        let mut bad_key = line(UserKind::Advanced, "Zoé", "Dupré", "zoe@example.com");
        bad_key.user_key = Some("not a key".into());
        let o = precheck(&account(), &mut seen, 3, Ok(bad_key)).unwrap_err();
        assert_eq!(
            (o.status, o.column.as_str()),
            (LineStatus::InvalidUserData, "user_key")
        );
    }

    #[test]
    fn problems_of_the_reader_become_the_lines_status() {
        let mut seen = HashSet::new();
        let choice = LineProblem::InvalidChoice {
            column: "ETAT".into(),
            value: "peut-être".into(),
            why: "expected actif or désactivé".into(),
        };
        let o = precheck(&account(), &mut seen, 9, Err(choice)).unwrap_err();
        assert_eq!(o.line, 9);
        assert_eq!(o.status, LineStatus::InvalidChoice);
        assert_eq!(o.message, "\"peut-être\": expected actif or désactivé");
        let data = LineProblem::InvalidUserData {
            field: "NOM".into(),
            why: "contains the control character U+0000".into(),
        };
        let o = precheck(&account(), &mut seen, 10, Err(data)).unwrap_err();
        assert_eq!(
            (o.status, o.column.as_str()),
            (LineStatus::InvalidUserData, "NOM")
        );
    }

    #[test]
    fn a_bad_login_or_tag_is_kept_for_the_profiles_report() {
        let mut seen = HashSet::new();
        let mut l = line(UserKind::Standard, "Léon", "Martin", "");
        l.login = Some("has space".into());
        let c = precheck(&account(), &mut seen, 2, Ok(l)).unwrap();
        assert_eq!(c.login, None);
        assert_eq!(c.problems.0[0].field, "login");
    }
}
