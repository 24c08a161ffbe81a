//! Teams: a tree per organization grouping its users (seed 002: équipes and
//! sous-équipes). Names, paths (`Nord/Atelier 7`) and how a request names
//! a team. The tree's rules (same organization, no cycle, members linked
//! to the organization, delete only when empty) are Postgres's, migration
//! `teams`; this module checks what can be checked without it, so that
//! errors name the field.

use uuid::Uuid;

/// The most levels a path may have.
pub const MAX_DEPTH: usize = 20;

/// A team.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Team {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub parent_id: Option<Uuid>,
    pub name: String,
    /// From its root, `/`-separated.
    pub path: String,
    /// Direct members.
    pub members: i64,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub revision: i64,
}

/// A team's name: 1-100 characters once trimmed, no `/` (it separates a
/// path's levels), no `;` (it separates the teams of a CSV cell), no
/// control character.
pub fn parse_name(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err("must be 1-100 characters".into());
    }
    if name.contains(['/', ';']) {
        return Err("must not contain / or ; (they separate paths)".into());
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(name.to_owned())
}

/// A path from a root team, `Nord/Atelier 7`: its names, each as
/// `parse_name` wants it (spaces around `/` are not part of a name).
pub fn parse_path(raw: &str) -> Result<Vec<String>, String> {
    let names: Vec<&str> = raw.split('/').collect();
    if names.len() > MAX_DEPTH {
        return Err(format!("has more than {MAX_DEPTH} levels"));
    }
    names
        .iter()
        .map(|n| parse_name(n).map_err(|why| format!("{raw:?}: each team name {why}")))
        .collect()
}

/// The teams of a CSV cell: paths separated by `;`; empty: none. Each path
/// once (compared as the tree compares names: case-insensitively).
pub fn parse_cell(raw: &str) -> Result<Vec<Vec<String>>, String> {
    let mut paths: Vec<Vec<String>> = Vec::new();
    for part in raw.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let path = parse_path(part)?;
        if !paths.iter().any(|p| same_path(p, &path)) {
            paths.push(path);
        }
    }
    Ok(paths)
}

/// Whether two paths name the same team (names compare whatever the case
/// of their ASCII letters, as the unique index `team_sibling_names` does).
pub fn same_path(a: &[String], b: &[String]) -> bool {
    path_key(a) == path_key(b)
}

/// A path as the tree compares it: names with their ASCII letters
/// lowercased (as Postgres's `lower()` does under collation "C"), joined
/// by `/`.
pub fn path_key(path: &[String]) -> String {
    path.iter()
        .map(|n| n.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join("/")
}

/// How a request names a team: by id, or by its path in the request's
/// organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TeamRef {
    Id(Uuid),
    Path(Vec<String>),
}

impl TeamRef {
    /// A UUID in its hyphenated form is an id; anything else a path.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err("is required (a team id or path like Nord/Atelier 7)".into());
        }
        // Only the hyphenated form (36 characters) is an id.
        match Uuid::try_parse(raw) {
            Ok(id) if raw.len() == 36 => Ok(TeamRef::Id(id)),
            _ => parse_path(raw).map(TeamRef::Path),
        }
    }
}

/// How a request names an organization: by id, or as that of an account
/// (what an admin knows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrgRef {
    Id(Uuid),
    Account(super::account::AccountCode),
}

/// A filter on users: the members of a team, and of its sub-teams when
/// asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamFilter {
    pub team: TeamRef,
    pub include_subteams: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_paths_and_cells() {
        assert_eq!(parse_name("  Nord "), Ok("Nord".into()));
        assert!(parse_name("").is_err());
        assert!(parse_name("a/b").is_err());
        assert!(parse_name("a;b").is_err());
        assert!(parse_name("a\u{0}b").is_err());
        assert!(parse_name(&"x".repeat(101)).is_err());
        assert_eq!(
            parse_path("Nord / Atelier 7"),
            Ok(vec!["Nord".into(), "Atelier 7".into()])
        );
        assert!(parse_path("Nord//A").is_err());
        assert!(parse_path(&["a"; 21].join("/")).is_err());
        assert_eq!(
            parse_cell("Nord/A; nord/a ;Sud").unwrap(),
            vec![vec!["Nord".to_owned(), "A".into()], vec!["Sud".into()]]
        );
        assert_eq!(parse_cell(" ; ").unwrap(), Vec::<Vec<String>>::new());
        let id = Uuid::new_v4();
        assert_eq!(TeamRef::parse(&id.to_string()), Ok(TeamRef::Id(id)));
        assert_eq!(
            TeamRef::parse("Nord"),
            Ok(TeamRef::Path(vec!["Nord".into()]))
        );
        assert!(TeamRef::parse(" ").is_err());
        // Only the hyphenated form is an id: 32 hex digits are a name.
        let hex = id.simple().to_string();
        assert_eq!(TeamRef::parse(&hex), Ok(TeamRef::Path(vec![hex.clone()])));
        // ASCII letters fold, as Postgres's lower() under "C" does.
        assert!(same_path(&["NORD".into()], &["nord".into()]));
        assert!(!same_path(&["Équipe".into()], &["équipe".into()]));
    }
}
