//! Reading user CSV files: encoding, delimiter, header, and one line at a
//! time into what an import applies. Pure: the streaming import feeds it.
//! (Over 600 lines with its unit tests, a third of the file, which read
//! best beside the rules they pin.)
//!
//! - Encoding: UTF-8 (with or without BOM), else Windows-1252 (as saved by
//!   Excel), decided on the first bytes.
//! - Delimiter: `;` or `,`, whichever the header line uses outside quotes.
//! - Headers: French or English names, matched case-, accent- and
//!   punctuation-insensitively (`CODE POSTAL` = `code_postal` = `Postal
//!   code`); right columns by code (`tracking.tool`) or label (fr or en).
//! - Cells as the excel dialect writes them are read back (`="007"`, a
//!   leading apostrophe before `= + - @`).

use super::csvfile::PROFILE_COLUMNS;
use crate::domain::{
    credential::Password,
    rights::{RightDef, Scope},
    user::{ProfileField, RawProfile, UserKind, UserStatus},
};

/// How the bytes of a file are to be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Utf8,
    Windows1252,
}

/// Decides the encoding from the start of a file; returns it and the length
/// of a UTF-8 byte-order mark to skip. `prefix` may end in the middle of a
/// character.
pub fn sniff_encoding(prefix: &[u8]) -> (Encoding, usize) {
    if prefix.starts_with(b"\xEF\xBB\xBF") {
        return (Encoding::Utf8, 3);
    }
    match std::str::from_utf8(prefix) {
        Ok(_) => (Encoding::Utf8, 0),
        // Cut in the middle of a character: valid so far.
        Err(e) if e.error_len().is_none() => (Encoding::Utf8, 0),
        Err(_) => (Encoding::Windows1252, 0),
    }
}

/// The cells of one record, decoded: as UTF-8 when they all are, else as
/// Windows-1252 (what spreadsheets save). Deciding line by line reads right
/// a Windows-1252 file whose first accent comes late, and a file mixing
/// lines from both (Windows-1252 text that happens to be valid UTF-8, such
/// as `Ã©`, does not occur in practice). The CSV structure is ASCII, the
/// same bytes in both encodings, so records are split before decoding.
pub fn decode_cells<'a>(cells: impl Iterator<Item = &'a [u8]> + Clone) -> Vec<String> {
    if cells.clone().all(|c| std::str::from_utf8(c).is_ok()) {
        cells
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect()
    } else {
        cells
            .map(|c| {
                encoding_rs::WINDOWS_1252
                    .decode_without_bom_handling(c)
                    .0
                    .into_owned()
            })
            .collect()
    }
}

/// Decodes a whole buffer (tests, templates); streaming callers use
/// `encoding_rs` decoders with the sniffed encoding.
pub fn decode(bytes: &[u8]) -> String {
    let (enc, bom) = sniff_encoding(bytes);
    match enc {
        Encoding::Utf8 => String::from_utf8_lossy(&bytes[bom..]).into_owned(),
        Encoding::Windows1252 => encoding_rs::WINDOWS_1252
            .decode_without_bom_handling(bytes)
            .0
            .into_owned(),
    }
}

/// Of `,`, `;` and tab, the one the header line uses most outside quotes
/// (`,` when none).
pub fn detect_delimiter(header_line: &str) -> u8 {
    let (mut semicolons, mut commas, mut tabs, mut quoted) = (0, 0, 0, false);
    for c in header_line.chars() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => semicolons += 1,
            ',' if !quoted => commas += 1,
            '\t' if !quoted => tabs += 1,
            '\n' | '\r' if !quoted => break,
            _ => {}
        }
    }
    if tabs > semicolons && tabs > commas {
        b'\t'
    } else if semicolons > commas {
        b';'
    } else {
        b','
    }
}

/// The longest cell read, in bytes.
pub const MAX_CELL_BYTES: usize = 4096;

/// Why a cell cannot be data: a control character (a NUL included; line
/// breaks and tabs are data in quoted cells), or too long.
fn bad_cell(cell: &str) -> Option<String> {
    if cell.len() > MAX_CELL_BYTES {
        return Some(format!("is longer than {MAX_CELL_BYTES} bytes"));
    }
    cell.chars()
        .find(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        .map(|c| format!("contains the control character U+{:04X}", c as u32))
}

/// Lowercase ASCII letters and digits only: `Clé utilisateur` → `cleutilisateur`.
pub fn normalise(s: &str) -> String {
    deunicode::deunicode(s)
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Other names the columns go by (normalised).
const SYNONYMS: &[(Field, &[&str])] = &[
    (
        Field::Account,
        &["agence", "agency", "numerodecompte", "accountcode", "code"],
    ),
    (Field::Kind, &["typeutilisateur", "usertype"]),
    (Field::Status, &["statut"]),
    (Field::Login, &["username", "nomdutilisateur"]),
    (Field::UserKey, &["cle", "userkey", "cleuser"]),
    (
        Field::Profile(ProfileField::LastName),
        &["lastname", "nomdefamille", "surname"],
    ),
    (
        Field::Profile(ProfileField::FirstName),
        &["firstname", "givenname"],
    ),
    (
        Field::Profile(ProfileField::JobTitle),
        &["jobtitle", "poste", "job"],
    ),
    (
        Field::Profile(ProfileField::Email),
        &[
            "mail",
            "courriel",
            "adresseemail",
            "adressemail",
            "emailaddress",
            "confirmeremail",
        ],
    ),
    (
        Field::Profile(ProfileField::Phone),
        &["tel", "phonenumber", "numerodetelephone"],
    ),
    (
        Field::Profile(ProfileField::AddressLines),
        &["adressegeographique", "addressline", "addresslines"],
    ),
    (
        Field::Profile(ProfileField::PostalCode),
        &["cp", "zip", "zipcode", "postalcode"],
    ),
    (Field::Tags, &["tagutilisateur", "usertag"]),
    (Field::Password, &["motdepasse", "password", "mdp", "pass"]),
    (Field::Roles, &["role"]),
    (Field::Teams, &["equipe", "team", "sousequipes", "subteams"]),
    (
        Field::Profile(ProfileField::Civility),
        &["civilite", "civility", "title"],
    ),
    (
        Field::Profile(ProfileField::Language),
        &["langue", "language", "lang"],
    ),
];

/// What a column other than a right holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// The account the line is about (must be the import's).
    Account,
    Kind,
    Status,
    Login,
    UserKey,
    /// The user's tags on the account, comma-separated.
    Tags,
    /// The first password of a user the file creates (never exported).
    Password,
    /// The roles he holds on the account: codes or labels, `;`-separated.
    Roles,
    /// His teams in the account's organization: paths, `;`-separated.
    Teams,
    Profile(ProfileField),
}

impl Field {
    /// Its key: the name results use for it (`address` for the address
    /// lines), also accepted as a header.
    pub fn key(self) -> &'static str {
        match self {
            Field::Account => "account",
            Field::Kind => "kind",
            Field::Status => "status",
            Field::Login => "login",
            Field::UserKey => "user_key",
            Field::Tags => "tags",
            Field::Password => "password",
            Field::Roles => "roles",
            Field::Teams => "teams",
            Field::Profile(ProfileField::AddressLines) => "address",
            Field::Profile(f) => f.name(),
        }
    }
}

/// What a column of an import file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    /// A field of the user or of his link.
    Field(Field),
    /// A right, by its code.
    Right(String),
}

/// The meaning of each column of a file, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub columns: Vec<Column>,
    /// The header cells as written, to name columns in messages.
    pub names: Vec<String>,
}

/// At most 60 characters of `s`, for messages.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

/// Maps header cells to columns. Unknown or repeated columns are errors
/// naming them (an import must not silently ignore a right column).
pub fn map_header(cells: &[String], catalog: &[RightDef]) -> Result<Header, Vec<String>> {
    let mut columns = Vec::new();
    let mut problems = Vec::new();
    for cell in cells {
        let n = normalise(cell);
        let field = PROFILE_COLUMNS
            .iter()
            .find(|(f, fr, en)| n == normalise(f.key()) || n == normalise(fr) || n == normalise(en))
            .map(|(f, _, _)| *f)
            .or_else(|| {
                SYNONYMS
                    .iter()
                    .find(|(_, names)| names.contains(&n.as_str()))
                    .map(|(key, _)| *key)
            });
        let column = match field {
            Some(f) => Some(Column::Field(f)),
            None => catalog
                .iter()
                .find(|r| {
                    n == normalise(&r.code)
                        || n == normalise(&r.label_fr)
                        || n == normalise(&r.label_en)
                })
                .map(|r| Column::Right(r.code.clone())),
        };
        match column {
            Some(c) if columns.contains(&c) => {
                problems.push(format!("column {cell:?} appears twice"))
            }
            Some(c) => columns.push(c),
            None if n.is_empty() => problems.push("a column has no name".into()),
            None => problems.push(format!("unknown column {:?}", shorten(cell))),
        }
    }
    if cells.len() == 1 && !problems.is_empty() {
        problems.push(
            "the header line has a single column: separate columns with ',', ';' or a tab".into(),
        );
    }
    if problems.is_empty() {
        Ok(Header {
            columns,
            names: cells.to_vec(),
        })
    } else {
        Err(problems)
    }
}

/// A cell as the excel dialect may have written it, read back: `="007"` →
/// `007`, `'=x` → `=x`; trimmed.
pub fn unexcel(cell: &str) -> &str {
    let c = cell.trim();
    if let Some(inner) = c.strip_prefix("=\"").and_then(|s| s.strip_suffix('"')) {
        return inner;
    }
    match c.strip_prefix('\'') {
        Some(rest) if rest.starts_with(['=', '+', '-', '@', '\t', '\r']) => rest,
        _ => c,
    }
}

/// What a right cell asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RightCell {
    No,
    Yes,
    Scope(Scope),
}

/// `oui/non`, `yes/no`, `true/false`, `1/0`, empty = no; scope names
/// `cle`/`user_key`, `tag`/`user_tag`, `consolide`/`consolidated`.
pub fn parse_right_cell(cell: &str) -> Option<RightCell> {
    Some(match normalise(cell).as_str() {
        "" | "non" | "no" | "false" | "0" | "n" => RightCell::No,
        "oui" | "yes" | "true" | "1" | "o" | "y" | "x" => RightCell::Yes,
        "cle" | "userkey" | "cleutilisateur" => RightCell::Scope(Scope::UserKey),
        "tag" | "usertag" | "tagutilisateur" => RightCell::Scope(Scope::UserTag),
        "consolide" | "consolidated" => RightCell::Scope(Scope::Consolidated),
        _ => return None,
    })
}

/// One data line, understood.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportLine {
    /// 1-based line number in the file (of the record's first line).
    pub line: u64,
    pub kind: UserKind,
    /// `None`: not given (active for a new user, unchanged otherwise).
    pub status: Option<UserStatus>,
    pub login: Option<String>,
    /// As typed; validated by the import.
    pub user_key: Option<String>,
    pub account: Option<String>,
    pub profile: RawProfile,
    pub tags: Vec<String>,
    /// Every right column: the right and what the cell asks.
    pub rights: Vec<(String, RightCell)>,
    /// The roles cell: role codes or labels as written, each once.
    pub roles: Vec<String>,
    /// The teams cell: paths, each once.
    pub teams: Vec<Vec<String>>,
    /// The first password of a new user: as typed until the import hashes
    /// it (before its batch's transaction), then its hash.
    pub password: Option<Secret>,
}

/// A password cell, which the import hashes before anything else reads it.
#[derive(Clone)]
pub enum Secret {
    Clear(Password),
    /// An argon2id PHC string.
    Hashed(String),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Secret::Clear(_) => "Secret::Clear(…)",
            Secret::Hashed(_) => "Secret::Hashed(…)",
        })
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Secret::Clear(a), Secret::Clear(b)) => a.expose() == b.expose(),
            (Secret::Hashed(a), Secret::Hashed(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Secret {}

/// Why a line cannot be used as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineProblem {
    /// A cell holds a value that is not one of the choices of its column.
    InvalidChoice {
        column: String,
        value: String,
        why: String,
    },
    /// The line's shape or user data is wrong.
    InvalidUserData { field: String, why: String },
}

/// Reads one record into an [`ImportLine`]. `default_kind` applies when the
/// file has no TYPE column (or the cell is empty).
pub fn parse_line(
    header: &Header,
    cells: &[String],
    line: u64,
    catalog: &[RightDef],
    default_kind: UserKind,
) -> Result<ImportLine, LineProblem> {
    if cells.len() != header.columns.len() {
        return Err(LineProblem::InvalidUserData {
            field: "line".into(),
            why: format!(
                "has {} cells where the header has {} columns (cut or malformed line?)",
                cells.len(),
                header.columns.len()
            ),
        });
    }
    if let Some((i, why)) = cells
        .iter()
        .enumerate()
        .find_map(|(i, c)| bad_cell(c).map(|why| (i, why)))
    {
        return Err(LineProblem::InvalidUserData {
            field: header.names[i].clone(),
            why,
        });
    }
    let mut l = ImportLine {
        line,
        kind: default_kind,
        status: None,
        login: None,
        user_key: None,
        account: None,
        profile: RawProfile::default(),
        tags: Vec::new(),
        rights: Vec::new(),
        roles: Vec::new(),
        teams: Vec::new(),
        password: None,
    };
    let invalid = |i: usize, value: &str, why: &str| LineProblem::InvalidChoice {
        column: header.names[i].clone(),
        value: value.to_owned(),
        why: why.to_owned(),
    };
    let some = |v: &str| (!v.is_empty()).then(|| v.to_owned());
    for (i, (column, raw)) in header.columns.iter().zip(cells).enumerate() {
        let v = unexcel(raw);
        match column {
            Column::Right(code) => {
                let cell = parse_right_cell(v).ok_or_else(|| {
                    invalid(i, v, "expected oui/non, or a scope: cle, tag, consolide")
                })?;
                let def = catalog.iter().find(|d| &d.code == code);
                match (def.map(|d| d.scoped), cell) {
                    (Some(true), RightCell::Yes) => {
                        return Err(invalid(
                            i,
                            v,
                            "this right needs a scope: cle, tag or consolide",
                        ))
                    }
                    (Some(false), RightCell::Scope(_)) => {
                        return Err(invalid(i, v, "this right takes oui or non"))
                    }
                    _ => {}
                }
                l.rights.push((code.clone(), cell));
            }
            Column::Field(f) => match f {
                Field::Kind => {
                    l.kind = match normalise(v).as_str() {
                        "" => default_kind,
                        "standard" => UserKind::Standard,
                        "avance" | "advanced" => UserKind::Advanced,
                        _ => return Err(invalid(i, v, "expected standard or avancé")),
                    }
                }
                Field::Status => {
                    l.status = match normalise(v).as_str() {
                        "" => None,
                        "actif" | "active" | "enabled" => Some(UserStatus::Active),
                        "desactive" | "deactivated" | "inactif" | "inactive" | "disabled" => {
                            Some(UserStatus::Deactivated)
                        }
                        _ => return Err(invalid(i, v, "expected actif or désactivé")),
                    }
                }
                Field::Login => l.login = some(v),
                // As typed: no trimming nor spreadsheet unquoting (the
                // password handed out is the cell's).
                Field::Password if raw.is_empty() => {}
                Field::Password => {
                    // Never echoed: the problem names the column only.
                    let password =
                        Password::new(raw).map_err(|why| LineProblem::InvalidUserData {
                            field: header.names[i].clone(),
                            why,
                        })?;
                    l.password = Some(Secret::Clear(password));
                }
                Field::UserKey => l.user_key = some(v),
                Field::Account => l.account = some(v),
                Field::Profile(ProfileField::LastName) => l.profile.last_name = v.to_owned(),
                Field::Profile(ProfileField::FirstName) => l.profile.first_name = v.to_owned(),
                Field::Profile(ProfileField::JobTitle) => l.profile.job_title = v.to_owned(),
                Field::Profile(ProfileField::Email) => l.profile.email = v.to_owned(),
                Field::Profile(ProfileField::Phone) => l.profile.phone = v.to_owned(),
                Field::Profile(ProfileField::AddressLines) => {
                    l.profile.address_lines = v
                        .lines()
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                }
                Field::Profile(ProfileField::PostalCode) => l.profile.postal_code = v.to_owned(),
                Field::Profile(ProfileField::City) => l.profile.city = v.to_owned(),
                Field::Profile(ProfileField::Country) => l.profile.country = v.to_owned(),
                Field::Profile(ProfileField::Civility) => l.profile.civility = v.to_owned(),
                Field::Profile(ProfileField::Language) => l.profile.language = v.to_owned(),
                Field::Roles => {
                    for r in v.split(';').map(str::trim).filter(|r| !r.is_empty()) {
                        if !l.roles.iter().any(|x| normalise(x) == normalise(r)) {
                            l.roles.push(r.to_owned());
                        }
                    }
                }
                Field::Teams => {
                    l.teams = crate::domain::team::parse_cell(v).map_err(|why| {
                        LineProblem::InvalidUserData {
                            field: header.names[i].clone(),
                            why,
                        }
                    })?
                }
                Field::Tags => {
                    l.tags = v
                        .split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(String::from)
                        .collect()
                }
            },
        }
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_record_is_utf8_or_windows_1252() {
        let cells = |c: &[&'static [u8]]| decode_cells(c.iter().copied());
        assert_eq!(cells(&[b"Dupont", b"Jean"]), ["Dupont", "Jean"]);
        assert_eq!(cells(&[b"L\xE9on", b"Ir\xE8ne"]), ["Léon", "Irène"]);
        assert_eq!(cells(&["Léon".as_bytes(), b"x"]), ["Léon", "x"]);
        // One cell not UTF-8: the whole record is Windows-1252.
        assert_eq!(cells(&[b"\xC3\xA9", b"\xE9"]), ["Ã©", "é"]);
    }

    fn catalog() -> Vec<RightDef> {
        vec![
            RightDef {
                code: "shipping.ws".into(),
                category: "shipping".into(),
                label_fr: "Web Service Affranchissement".into(),
                label_en: "Franking web service".into(),
                kinds: vec![UserKind::Standard, UserKind::Advanced],
                scoped: false,
            },
            RightDef {
                code: "tracking.tool".into(),
                category: "tracking".into(),
                label_fr: "Outil de suivi colis sans accès au Service Client".into(),
                label_en: "Parcel tracking tool".into(),
                kinds: vec![UserKind::Standard, UserKind::Advanced],
                scoped: true,
            },
        ]
    }

    fn cells(s: &[&str]) -> Vec<String> {
        s.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn encodings_are_sniffed() {
        assert_eq!(
            sniff_encoding(b"\xEF\xBB\xBFNOM;PRENOM"),
            (Encoding::Utf8, 3)
        );
        assert_eq!(sniff_encoding("NOM;PRÉNOM".as_bytes()), (Encoding::Utf8, 0));
        // "PRÉNOM" cut inside the É.
        assert_eq!(
            sniff_encoding(&"PRÉNOM".as_bytes()[..3]),
            (Encoding::Utf8, 0)
        );
        // Windows-1252 É is 0xC9, invalid as UTF-8 here.
        assert_eq!(
            sniff_encoding(b"NOM;PR\xC9NOM;VILLE"),
            (Encoding::Windows1252, 0)
        );
        assert_eq!(decode(b"Z\xE9lie;\xC9pinal"), "Zélie;Épinal");
        assert_eq!(decode(b"\xEF\xBB\xBFZo\xC3\xA9"), "Zoé");
    }

    #[test]
    fn delimiters_are_detected_outside_quotes() {
        assert_eq!(detect_delimiter("NOM;PRENOM;EMAIL"), b';');
        assert_eq!(detect_delimiter("NOM,PRENOM,EMAIL"), b',');
        assert_eq!(detect_delimiter("\"NOM;X\",PRENOM,EMAIL"), b',');
    }

    #[test]
    fn headers_match_in_french_or_english_whatever_the_case_and_accents() {
        let h = map_header(
            &cells(&[
                "NOM",
                "Prénom",
                "fonction",
                "E-mail",
                "TÉLÉPHONE",
                "Adresse géographique",
                "CODE POSTAL",
                "city",
                "Clé utilisateur",
                "tag",
                "shipping.ws",
                "Outil de suivi colis sans accès au service client",
            ]),
            &catalog(),
        )
        .unwrap();
        assert_eq!(
            h.columns,
            vec![
                Column::Field(Field::Profile(ProfileField::LastName)),
                Column::Field(Field::Profile(ProfileField::FirstName)),
                Column::Field(Field::Profile(ProfileField::JobTitle)),
                Column::Field(Field::Profile(ProfileField::Email)),
                Column::Field(Field::Profile(ProfileField::Phone)),
                Column::Field(Field::Profile(ProfileField::AddressLines)),
                Column::Field(Field::Profile(ProfileField::PostalCode)),
                Column::Field(Field::Profile(ProfileField::City)),
                Column::Field(Field::UserKey),
                Column::Field(Field::Tags),
                Column::Right("shipping.ws".into()),
                Column::Right("tracking.tool".into()),
            ]
        );
        let bad = map_header(&cells(&["NOM", "SHOE SIZE", "nom"]), &catalog()).unwrap_err();
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad[0].contains("SHOE SIZE"));
        assert!(bad[1].contains("twice"));
    }

    #[test]
    fn lines_are_read_with_right_choices_and_excel_cells() {
        let header = map_header(
            &cells(&[
                "COMPTE",
                "TYPE",
                "ETAT",
                "NOM",
                "PRENOM",
                "ADRESSE",
                "TAG",
                "shipping.ws",
                "tracking.tool",
            ]),
            &catalog(),
        )
        .unwrap();
        let l = parse_line(
            &header,
            &cells(&[
                "=\"007\"",
                "avancé",
                "Désactivé",
                "'=Dupré",
                "Zoé",
                "1 rue A\nBât B",
                "A, B",
                "OUI",
                "consolidé",
            ]),
            2,
            &catalog(),
            UserKind::Standard,
        )
        .unwrap();
        assert_eq!(l.account.as_deref(), Some("007"));
        assert_eq!(l.kind, UserKind::Advanced);
        assert_eq!(l.status, Some(UserStatus::Deactivated));
        assert_eq!(l.profile.last_name, "=Dupré");
        assert_eq!(l.profile.address_lines, ["1 rue A", "Bât B"]);
        assert_eq!(l.tags, ["A", "B"]);
        assert_eq!(
            l.rights,
            vec![
                ("shipping.ws".into(), RightCell::Yes),
                (
                    "tracking.tool".into(),
                    RightCell::Scope(Scope::Consolidated)
                )
            ]
        );

        let problem = |row: &[&str]| {
            parse_line(&header, &cells(row), 3, &catalog(), UserKind::Standard).unwrap_err()
        };
        let p = problem(&["007", "", "", "N", "P", "", "", "peut-être", "non"]);
        assert!(
            matches!(&p, LineProblem::InvalidChoice { column, value, .. } if column == "shipping.ws" && value == "peut-être")
        );
        let p = problem(&["007", "", "", "N", "P", "", "", "non", "oui"]);
        assert!(
            matches!(&p, LineProblem::InvalidChoice { column, .. } if column == "tracking.tool")
        );
        let p = problem(&["007", "", "", "N", "P", "", "", "cle", "non"]);
        assert!(matches!(&p, LineProblem::InvalidChoice { column, .. } if column == "shipping.ws"));
        let p = problem(&["007", "robot", "", "N", "P", "", "", "non", "non"]);
        assert!(matches!(&p, LineProblem::InvalidChoice { column, .. } if column == "TYPE"));
        let p = problem(&["007", "", ""]);
        assert!(matches!(&p, LineProblem::InvalidUserData { field, .. } if field == "line"));
        for (cell, want) in [
            ("", RightCell::No),
            ("Non", RightCell::No),
            ("1", RightCell::Yes),
            ("true", RightCell::Yes),
            ("Clé", RightCell::Scope(Scope::UserKey)),
            ("user_tag", RightCell::Scope(Scope::UserTag)),
        ] {
            assert_eq!(parse_right_cell(cell), Some(want), "{cell}");
        }
    }

    #[test]
    fn an_export_reads_back() {
        use crate::bulk::{Dialect, ExportRow, ExportWriter};
        let mut w = ExportWriter::new(Dialect::Excel, &catalog()).unwrap();
        w.write(&ExportRow {
            account: "007".into(),
            kind: UserKind::Advanced,
            status: UserStatus::Active,
            login: "zoe@example.com".into(),
            user_key: Some("K7QH-2M9D-XW4P".into()),
            profile: crate::domain::user::Profile {
                last_name: "=1+1".into(),
                first_name: "Zoé".into(),
                job_title: Some("Logisticienne".into()),
                email: Some("zoe@example.com".into()),
                phone: Some("+33 1".into()),
                address_lines: vec!["1 rue A".into(), "Bât B".into()],
                postal_code: Some("88000".into()),
                city: Some("Épinal".into()),
                ..Default::default()
            },
            tags: vec!["ATELIER-7".into()],
            roles: vec!["fleet".into(), "it".into()],
            teams: vec!["Nord/Atelier 7".into(), "Sud".into()],
            rights: vec![("tracking.tool".into(), Some(Scope::UserTag))],
        })
        .unwrap();
        let text = decode(&w.take().unwrap());
        let mut r = csv::ReaderBuilder::new()
            .delimiter(detect_delimiter(&text))
            .from_reader(text.as_bytes());
        let header = map_header(
            &r.headers()
                .unwrap()
                .iter()
                .map(String::from)
                .collect::<Vec<_>>(),
            &catalog(),
        )
        .unwrap();
        let rec: Vec<String> = r
            .records()
            .next()
            .unwrap()
            .unwrap()
            .iter()
            .map(String::from)
            .collect();
        let l = parse_line(&header, &rec, 2, &catalog(), UserKind::Standard).unwrap();
        assert_eq!(l.account.as_deref(), Some("007"));
        assert_eq!(l.kind, UserKind::Advanced);
        assert_eq!(l.profile.last_name, "=1+1");
        assert_eq!(l.profile.phone, "+33 1");
        assert_eq!(l.user_key.as_deref(), Some("K7QH-2M9D-XW4P"));
        assert_eq!(l.roles, ["fleet", "it"]);
        assert_eq!(
            l.teams,
            vec![
                vec!["Nord".to_owned(), "Atelier 7".into()],
                vec!["Sud".into()]
            ]
        );
        assert_eq!(
            l.rights,
            vec![
                ("shipping.ws".into(), RightCell::No),
                ("tracking.tool".into(), RightCell::Scope(Scope::UserTag))
            ]
        );
    }
}
