//! Columns and dialects of clef's user CSV files.
//!
//! Headers are French (as in the product documents); values are written as
//! the import reads them back: rights as `oui`/`non` or the scope name,
//! statuses and kinds as words, several address lines in one quoted cell
//! separated by newlines, tags separated by commas, role codes and team
//! paths (`Nord/Atelier 7`) separated by semicolons.

use super::reader::Field;
use crate::domain::{
    rights::{RightDef, Scope},
    user::{Profile, ProfileField, UserKind, UserStatus},
};

/// The columns other than rights, in file order: (field, French header,
/// English header).
pub const PROFILE_COLUMNS: &[(Field, &str, &str)] = &[
    (Field::Account, "COMPTE", "ACCOUNT"),
    (Field::Kind, "TYPE", "KIND"),
    (Field::Status, "ETAT", "STATUS"),
    (Field::Login, "IDENTIFIANT", "LOGIN"),
    (Field::UserKey, "CLE UTILISATEUR", "USER KEY"),
    (Field::Profile(ProfileField::LastName), "NOM", "LAST NAME"),
    (
        Field::Profile(ProfileField::FirstName),
        "PRENOM",
        "FIRST NAME",
    ),
    (
        Field::Profile(ProfileField::JobTitle),
        "FONCTION",
        "JOB TITLE",
    ),
    (Field::Profile(ProfileField::Email), "EMAIL", "EMAIL"),
    (Field::Profile(ProfileField::Phone), "TELEPHONE", "PHONE"),
    (
        Field::Profile(ProfileField::AddressLines),
        "ADRESSE",
        "ADDRESS",
    ),
    (
        Field::Profile(ProfileField::PostalCode),
        "CODE POSTAL",
        "POSTAL CODE",
    ),
    (Field::Profile(ProfileField::City), "VILLE", "CITY"),
    (Field::Profile(ProfileField::Country), "PAYS", "COUNTRY"),
    (Field::Tags, "TAG", "TAGS"),
    (Field::Roles, "ROLES", "ROLES"),
    (Field::Teams, "EQUIPES", "TEAMS"),
];
/// How a file is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// UTF-8, `,`.
    Rfc4180,
    /// For spreadsheet software: UTF-8 BOM, `;`, account codes as text
    /// (`="007"`), cells that a spreadsheet would run as formulas
    /// neutralised with a leading apostrophe.
    Excel,
}

/// One (user, account) row of an export.
#[derive(Debug, Clone)]
pub struct ExportRow {
    pub account: String,
    pub kind: UserKind,
    pub status: UserStatus,
    pub login: String,
    /// Displayed form, `XXXX-XXXX-XXXX`.
    pub user_key: Option<String>,
    pub profile: Profile,
    pub tags: Vec<String>,
    /// The codes of the roles held on the account (live), in code order.
    pub roles: Vec<String>,
    /// The paths of his teams in the account's organization, in order.
    pub teams: Vec<String>,
    /// Live grants on the account, direct ones only (those of his roles
    /// are in his roles): (right code, scope).
    pub rights: Vec<(String, Option<Scope>)>,
}

/// An account's import template: the header line, then one example line
/// granting `rights` (a scoped right with the scope given).
pub fn template(
    dialect: Dialect,
    account: &str,
    rights: &[(RightDef, Option<Scope>)],
) -> Result<Vec<u8>, csv::Error> {
    let defs: Vec<RightDef> = rights.iter().map(|(def, _)| def.clone()).collect();
    let mut w = ExportWriter::new(dialect, &defs)?;
    let some = |s: &str| Some(s.to_owned());
    w.write(&ExportRow {
        account: account.to_owned(),
        kind: UserKind::Advanced,
        status: UserStatus::Active,
        login: String::new(),
        user_key: None,
        profile: Profile {
            last_name: "Dupré".into(),
            first_name: "Zoé".into(),
            job_title: some("Logisticienne"),
            // One address per account (codes are unique): the example
            // imported into two accounts names two users, never one
            // user of another tenant.
            email: Some(format!("zoe.dupre+{}@example.com", account.to_lowercase())),
            phone: some("+33 1 02 03 04 05"),
            address_lines: vec!["12 rue de la Gare".into()],
            postal_code: some("88000"),
            city: some("Épinal"),
            country: some("FR"),
            civility: None,
            language: "fr".into(),
        },
        tags: vec!["ATELIER-7".into()],
        roles: Vec::new(),
        teams: Vec::new(),
        // The example is an advanced user: a right he cannot hold is shown
        // as a column, not granted (the line imports as it is).
        rights: rights
            .iter()
            .filter(|(def, _)| def.kinds.contains(&UserKind::Advanced))
            .map(|(def, scope)| (def.code.clone(), *scope))
            .collect(),
    })?;
    w.take()
}

pub fn kind_word(kind: UserKind) -> &'static str {
    match kind {
        UserKind::Standard => "standard",
        UserKind::Advanced => "avancé",
    }
}

pub fn status_word(status: UserStatus) -> &'static str {
    match status {
        UserStatus::Invited => "invité",
        UserStatus::Active => "actif",
        UserStatus::Deactivated => "désactivé",
        UserStatus::Archived => "archivé",
    }
}

/// Writes rows into an in-memory buffer that the caller drains chunk by
/// chunk (`take`), so that memory stays constant whatever the row count.
pub struct ExportWriter {
    dialect: Dialect,
    rights: Vec<String>,
    builder: csv::WriterBuilder,
    out: csv::Writer<Vec<u8>>,
}

impl ExportWriter {
    /// Starts a file whose right columns are `rights` (catalog order).
    pub fn new(dialect: Dialect, rights: &[RightDef]) -> Result<Self, csv::Error> {
        let mut buf = Vec::new();
        if dialect == Dialect::Excel {
            buf.extend_from_slice("\u{feff}".as_bytes());
        }
        let mut builder = csv::WriterBuilder::new();
        builder.delimiter(if dialect == Dialect::Excel {
            b';'
        } else {
            b','
        });
        let out = builder.from_writer(buf);
        let mut w = Self {
            dialect,
            rights: rights.iter().map(|r| r.code.clone()).collect(),
            builder,
            out,
        };
        let mut header: Vec<String> = PROFILE_COLUMNS
            .iter()
            .map(|(_, fr, _)| fr.to_string())
            .collect();
        header.extend(w.rights.iter().cloned());
        w.out.write_record(&header)?;
        Ok(w)
    }

    /// Appends one row.
    pub fn write(&mut self, row: &ExportRow) -> Result<(), csv::Error> {
        let o = |s: &Option<String>| s.clone().unwrap_or_default();
        let account = match self.dialect {
            Dialect::Excel => format!("=\"{}\"", row.account),
            Dialect::Rfc4180 => row.account.clone(),
        };
        let mut cells = vec![
            account,
            kind_word(row.kind).to_owned(),
            status_word(row.status).to_owned(),
            self.cell(&row.login),
            self.cell(row.user_key.as_deref().unwrap_or("")),
            self.cell(&row.profile.last_name),
            self.cell(&row.profile.first_name),
            self.cell(&o(&row.profile.job_title)),
            self.cell(&o(&row.profile.email)),
            self.cell(&o(&row.profile.phone)),
            self.cell(&row.profile.address_lines.join("\n")),
            self.cell(&o(&row.profile.postal_code)),
            self.cell(&o(&row.profile.city)),
            self.cell(&o(&row.profile.country)),
            self.cell(&row.tags.join(", ")),
            self.cell(&row.roles.join("; ")),
            self.cell(&row.teams.join("; ")),
        ];
        for code in &self.rights {
            cells.push(match row.rights.iter().find(|(r, _)| r == code) {
                None => "non".into(),
                Some((_, None)) => "oui".into(),
                Some((_, Some(scope))) => scope.as_str().into(),
            });
        }
        self.out.write_record(&cells)
    }

    /// Everything written since the last call.
    pub fn take(&mut self) -> Result<Vec<u8>, csv::Error> {
        let full = std::mem::replace(&mut self.out, self.builder.from_writer(Vec::new()));
        full.into_inner()
            .map_err(|e| csv::Error::from(e.into_error()))
    }

    /// Neutralises what a spreadsheet would run as a formula (excel dialect).
    fn cell(&self, s: &str) -> String {
        neutralise(self.dialect, s)
    }
}

/// A cell as written: in the excel dialect, a leading `= + - @` (or tab,
/// carriage return) gets an apostrophe before it, so spreadsheet software
/// shows it as text instead of evaluating it.
pub fn neutralise(dialect: Dialect, s: &str) -> String {
    match (dialect, s.chars().next()) {
        (Dialect::Excel, Some('=' | '+' | '-' | '@' | '\t' | '\r')) => format!("'{s}"),
        _ => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> ExportRow {
        ExportRow {
            account: "007".into(),
            kind: UserKind::Advanced,
            status: UserStatus::Active,
            login: "zoe@example.com".into(),
            user_key: Some("K7QH-2M9D-XW4P".into()),
            profile: Profile {
                last_name: "=HYPERLINK(\"x\")".into(),
                first_name: "Zoé".into(),
                email: Some("zoe@example.com".into()),
                phone: Some("+33 1 02".into()),
                address_lines: vec!["1 rue A".into(), "Bât. B".into()],
                postal_code: Some("01000".into()),
                city: Some("Épinal".into()),
                ..Profile::default()
            },
            tags: vec!["A".into(), "B".into()],
            roles: vec!["fleet".into()],
            teams: vec!["Nord/Atelier 7".into(), "Sud".into()],
            rights: vec![
                ("tracking.tool".into(), Some(Scope::UserTag)),
                ("shipping.ws".into(), None),
            ],
        }
    }

    fn catalog() -> Vec<RightDef> {
        ["shipping.ws", "tracking.tool", "tracking.ws"]
            .iter()
            .map(|c| RightDef {
                code: c.to_string(),
                category: String::new(),
                label_fr: String::new(),
                label_en: String::new(),
                kinds: vec![],
                scoped: false,
            })
            .collect()
    }

    #[test]
    fn excel_dialect_has_bom_semicolons_text_codes_and_no_formulas() {
        let mut w = ExportWriter::new(Dialect::Excel, &catalog()).unwrap();
        w.write(&row()).unwrap();
        let out = String::from_utf8(w.take().unwrap()).unwrap();
        assert!(out.starts_with('\u{feff}'));
        let mut lines = out.trim_start_matches('\u{feff}').splitn(2, '\n');
        assert!(lines.next().unwrap().starts_with("COMPTE;TYPE;ETAT;"));
        let data = lines.next().unwrap();
        assert!(data.starts_with("\"=\"\"007\"\"\";avancé;actif;"), "{data}");
        assert!(data.contains("'=HYPERLINK"), "{data}");
        assert!(data.contains("'+33 1 02"), "{data}");
        assert!(data.contains("\"1 rue A\nBât. B\""), "{data}");
        assert!(
            data.trim_end()
                .ends_with(";A, B;fleet;\"Nord/Atelier 7; Sud\";oui;user_tag;non"),
            "{data}"
        );
    }

    #[test]
    fn plain_dialect_keeps_cells_as_they_are() {
        let mut w = ExportWriter::new(Dialect::Rfc4180, &catalog()).unwrap();
        w.write(&row()).unwrap();
        let out = String::from_utf8(w.take().unwrap()).unwrap();
        let data = out.lines().nth(1).unwrap();
        assert!(
            data.starts_with("007,avancé,actif,zoe@example.com,K7QH-2M9D-XW4P,"),
            "{data}"
        );
    }
}
