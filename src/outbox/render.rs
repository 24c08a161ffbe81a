//! Messages rendered from the templates of `templates/mail/` (one file per
//! kind and language; its first line is the subject), in the user's
//! language: English for `en` and its regions, French otherwise (the
//! seeds' language and the default).

use crate::domain::credential::MessageKind;

/// The languages messages are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    Fr,
    En,
}

impl Language {
    /// The language for a user's BCP 47 tag.
    pub fn of(tag: &str) -> Self {
        let primary = tag.split(['-', '_']).next().unwrap_or("");
        if primary.eq_ignore_ascii_case("en") {
            Language::En
        } else {
            Language::Fr
        }
    }
}

fn template(kind: MessageKind, language: Language) -> &'static str {
    use Language::*;
    use MessageKind::*;
    match (kind, language) {
        (Invitation, Fr) => include_str!("../../templates/mail/invitation.fr.txt"),
        (Invitation, En) => include_str!("../../templates/mail/invitation.en.txt"),
        (PasswordReset, Fr) => include_str!("../../templates/mail/password_reset.fr.txt"),
        (PasswordReset, En) => include_str!("../../templates/mail/password_reset.en.txt"),
        (RightsGranted, Fr) => include_str!("../../templates/mail/rights_granted.fr.txt"),
        (RightsGranted, En) => include_str!("../../templates/mail/rights_granted.en.txt"),
        (AccountCreated, Fr) => include_str!("../../templates/mail/account_created.fr.txt"),
        (AccountCreated, En) => include_str!("../../templates/mail/account_created.en.txt"),
    }
}

/// A rendered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub body: String,
}

/// The values a template's `{{name}}` placeholders take; unknown names
/// render empty.
pub type Values<'a> = &'a [(&'a str, String)];

/// Renders `kind` in `language`.
pub fn render(kind: MessageKind, language: Language, values: Values<'_>) -> Rendered {
    let text = template(kind, language);
    let (first, body) = text.split_once('\n').unwrap_or((text, ""));
    let subject = first.strip_prefix("Subject: ").unwrap_or(first);
    Rendered {
        subject: fill(subject, values),
        body: fill(body.trim_start_matches('\n'), values),
    }
}

fn fill(text: &str, values: Values<'_>) -> String {
    let mut out = String::with_capacity(text.len() + 256);
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let name = &after[..end];
                if let Some((_, v)) = values.iter().find(|(n, _)| *n == name) {
                    out.push_str(v);
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The greeting: the seed's "Madame, Monsieur," in French, the first name
/// in English.
pub fn greeting(language: Language, first_name: &str) -> String {
    match language {
        Language::Fr => "Madame, Monsieur,".into(),
        Language::En if first_name.is_empty() => "Hello,".into(),
        Language::En => format!("Hello {first_name},"),
    }
}

/// Rights as a list, one per line.
pub fn list(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("- {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_has_a_subject_and_fills_its_placeholders() {
        for kind in [
            MessageKind::Invitation,
            MessageKind::PasswordReset,
            MessageKind::RightsGranted,
            MessageKind::AccountCreated,
        ] {
            for language in [Language::Fr, Language::En] {
                assert!(template(kind, language).starts_with("Subject: "));
                let r = render(kind, language, &[("login", "zoe".into())]);
                assert!(
                    !r.subject.is_empty() && !r.body.contains("{{"),
                    "{kind:?} {language:?}"
                );
            }
        }
    }

    #[test]
    fn french_is_the_seeds_wording_and_the_default() {
        let r = render(
            MessageKind::RightsGranted,
            Language::of("fr-BE"),
            &[
                ("actor", "DSI COLISSIMO".into()),
                ("rights", list(&["Outil de suivi colis".into()])),
            ],
        );
        assert_eq!(r.subject, "De nouveaux droits vous ont été attribués");
        assert!(r
            .body
            .contains("De nouveaux droits vous ont été attribués par DSI COLISSIMO"));
        assert!(r.body.contains("- Outil de suivi colis"));
        assert_eq!(Language::of("de"), Language::Fr);
        assert_eq!(Language::of("en-GB"), Language::En);
    }
}
