//! The rules that decide a line, without a database: each test builds what
//! a batch would have looked up and checks the decision.

use std::collections::HashSet;

use uuid::Uuid;

use super::*;
use crate::{
    bulk::reader::ImportLine,
    domain::{
        account::AccountStatus,
        rights::{Held, ADMIN},
        user::RawProfile,
        Violations,
    },
    service::import::precheck::precheck,
};

fn account() -> Account {
    Account {
        id: Uuid::now_v7(),
        code: "007".into(),
        organization_id: Uuid::now_v7(),
        display_name: "Nord".into(),
        status: AccountStatus::Active,
        created_at: chrono::Utc::now(),
        updated_at: chrono::Utc::now(),
        revision: 1,
    }
}

fn right(code: &str, scoped: bool, kinds: &[UserKind]) -> RightDef {
    RightDef {
        code: code.into(),
        category: "c".into(),
        label_fr: code.into(),
        label_en: code.into(),
        kinds: kinds.to_vec(),
        scoped,
    }
}

fn catalog() -> Vec<RightDef> {
    use UserKind::*;
    vec![
        right(ADMIN, false, &[Standard, Advanced]),
        right("shipping.ws", false, &[Standard, Advanced]),
        right("tracking.ws", false, &[Standard, Advanced]),
        right("tracking.tool", true, &[Standard, Advanced]),
        right("billing.invoices", false, &[Standard]),
    ]
}

/// An admin holding `shipping.ws` and `tracking.tool` with scope `user_tag`.
fn admin() -> Authority {
    let held = |right: &str, scope| Held {
        right: right.into(),
        scope,
    };
    Authority::Holder(vec![
        held(ADMIN, None),
        held("shipping.ws", None),
        held("tracking.tool", Some(Scope::UserTag)),
    ])
}

/// A test's world: the account, the importer and what the batch found.
struct World {
    account: Account,
    authority: Authority,
    catalog: Vec<RightDef>,
    present: Vec<ProfileField>,
    known: Lookups,
    claims: Claims,
}

impl World {
    fn new() -> Self {
        Self {
            account: account(),
            authority: admin(),
            catalog: catalog(),
            present: ProfileField::ALL.to_vec(),
            known: Lookups::default(),
            claims: Claims::default(),
        }
    }

    /// An existing advanced user, managed by the importer and linked to the
    /// account with `tags` (none: not linked).
    fn existing(&mut self, email: &str, tags: Option<&[&str]>) -> Uuid {
        let id = Uuid::now_v7();
        let mut v = Violations::default();
        let profile = Profile::parse(&full_profile(email), UserKind::Advanced, "", &mut v);
        assert!(v.0.is_empty(), "{v}");
        self.known.by_email.insert(email.into(), id);
        self.known.by_login.insert(email.into(), id);
        self.known.users.insert(
            id,
            User {
                id,
                kind: UserKind::Advanced,
                status: UserStatus::Active,
                login: email.into(),
                user_key: None,
                profile,
                home_account: None,
                default_account: Some("007".into()),
                created_at: chrono::Utc::now(),
                updated_at: chrono::Utc::now(),
                revision: 1,
            },
        );
        if let Some(tags) = tags {
            self.known
                .links
                .insert(id, tags.iter().map(|t| t.to_string()).collect());
        }
        id
    }

    fn decide(&self, line: ImportLine) -> Result<Decision, Outcome> {
        let ctx = Context {
            account: &self.account,
            authority: &self.authority,
            catalog: &self.catalog,
            present: &self.present,
            has_tags: true,
            has_roles: false,
            has_teams: false,
            roles: &[],
            teams: &std::collections::HashMap::new(),
        };
        let code = crate::domain::account::AccountCode::parse("007").unwrap();
        let c = precheck(&code, &mut HashSet::new(), line.line, Ok(line))?;
        let existing = identify(&self.known, &c)?;
        decide(&ctx, &self.known, &self.claims, c, existing)
    }
}

fn full_profile(email: &str) -> RawProfile {
    RawProfile {
        last_name: "Dupré".into(),
        first_name: "Zoé".into(),
        job_title: "Logisticienne".into(),
        email: email.into(),
        phone: "+33 1 23 45 67 89".into(),
        address_lines: vec!["1 rue de la Paix".into()],
        postal_code: "75001".into(),
        city: "Paris".into(),
        country: "FR".into(),
        ..Default::default()
    }
}

fn advanced(email: &str) -> ImportLine {
    ImportLine {
        line: 2,
        kind: UserKind::Advanced,
        status: None,
        login: None,
        user_key: None,
        account: None,
        profile: full_profile(email),
        tags: Vec::new(),
        rights: Vec::new(),
        roles: Vec::new(),
        teams: Vec::new(),
        password: None,
    }
}

fn refusal(r: Result<Decision, Outcome>) -> (LineStatus, String, String) {
    let o = r.expect_err("the line should be refused");
    (o.status, o.column, o.message)
}

#[test]
fn a_new_user_is_created_with_his_email_as_login_when_free() {
    let mut w = World::new();
    w.known.looked_up.insert("zoe@example.com".into());
    let mut line = advanced("Zoe@Example.com");
    line.tags = vec!["nord".into()];
    line.rights = vec![("shipping.ws".into(), RightCell::Yes)];
    let Decision::Create(c) = w.decide(line).unwrap() else {
        panic!("expected a creation");
    };
    assert_eq!(c.login, LoginChoice::Chosen("zoe@example.com".into()));
    // Advanced: invited until he completes his invitation.
    assert_eq!(c.status, UserStatus::Invited);
    assert_eq!(c.tags, ["nord"]);
    assert_eq!(c.grants, [("shipping.ws".to_owned(), None)]);
    assert_eq!(c.email.as_deref(), Some("zoe@example.com"));
}

#[test]
fn a_taken_email_login_leaves_the_login_to_the_store() {
    let mut w = World::new();
    w.known.looked_up.insert("zoe@example.com".into());
    w.claims.logins.insert("zoe@example.com".into());
    let Decision::Create(c) = w.decide(advanced("zoe@example.com")).unwrap() else {
        panic!("expected a creation");
    };
    assert!(matches!(c.login, LoginChoice::Default(_)), "{:?}", c.login);
}

#[test]
fn an_email_claimed_by_an_earlier_line_or_held_by_another_user_is_refused() {
    let mut w = World::new();
    w.claims.emails.insert("zoe@example.com".into());
    assert_eq!(
        refusal(w.decide(advanced("zoe@example.com"))),
        (
            LineStatus::InvalidUserData,
            "email".into(),
            "a user with this email already exists".into()
        )
    );
    // A line matched by user key whose new email another user has.
    let mut w = World::new();
    w.existing("leon@example.com", Some(&[]));
    let me = w.existing("zoe@example.com", Some(&[]));
    let key = crate::domain::user::UserKey::generate().unwrap();
    w.known.by_key.insert(key.as_str().to_owned(), me);
    let mut line = advanced("leon@example.com");
    line.user_key = Some(key.to_string());
    assert_eq!(
        refusal(w.decide(line)),
        (
            LineStatus::InvalidUserData,
            "email".into(),
            "a user with this email already exists".into()
        )
    );
}

#[test]
fn another_tenants_user_is_never_matched_by_email_nor_named() {
    let mut w = World::new();
    let id = w.existing("zoe@example.com", None);
    w.known.unmanaged.insert(id);
    let (status, column, message) = refusal(w.decide(advanced("zoe@example.com")));
    assert_eq!(
        (status, column.as_str()),
        (LineStatus::InvalidUserData, "email")
    );
    assert_eq!(message, NOT_MANAGED);
    assert!(!message.contains(&id.to_string()));
}

#[test]
fn a_line_changes_only_the_columns_the_file_has() {
    let mut w = World::new();
    let id = w.existing("zoe@example.com", Some(&["nord"]));
    w.present = vec![ProfileField::Email, ProfileField::JobTitle];
    let mut line = advanced("zoe@example.com");
    line.profile.city = "Lille".into(); // no VILLE column: ignored
    line.profile.job_title = "Directrice".into();
    line.tags = vec!["nord".into()];
    let Decision::Update(change) = w.decide(line).unwrap() else {
        panic!("expected an update");
    };
    assert_eq!(change.id, id);
    assert_eq!(change.aspects(), ["profile"]);
    let (profile, login) = change.profile.expect("a profile change");
    assert_eq!(profile.job_title.as_deref(), Some("Directrice"));
    assert_eq!(profile.city.as_deref(), Some("Paris"));
    assert_eq!(login, "zoe@example.com");
}

#[test]
fn the_same_line_again_is_unchanged() {
    let mut w = World::new();
    let id = w.existing("zoe@example.com", Some(&["nord"]));
    let mut line = advanced("zoe@example.com");
    line.tags = vec!["nord".into()];
    assert_eq!(w.decide(line).unwrap(), Decision::Unchanged(id));
}

#[test]
fn links_and_tags_are_planned_for_existing_users() {
    let mut w = World::new();
    let unlinked = w.existing("zoe@example.com", None);
    let mut line = advanced("zoe@example.com");
    line.tags = vec!["sud".into()];
    let Decision::Update(change) = w.decide(line).unwrap() else {
        panic!("expected an update");
    };
    assert_eq!(change.id, unlinked);
    assert_eq!(change.link, Some(LinkChange::Link(vec!["sud".into()])));

    let mut w = World::new();
    w.existing("zoe@example.com", Some(&["nord"]));
    let mut line = advanced("zoe@example.com");
    line.tags = vec!["sud".into()];
    let Decision::Update(change) = w.decide(line).unwrap() else {
        panic!("expected an update");
    };
    assert_eq!(change.link, Some(LinkChange::Retag(vec!["sud".into()])));
}

#[test]
fn rights_follow_the_delegation_rule_and_name_the_right() {
    let w = World::new();
    /// A right cell, and the refusal expected (status, column).
    type Case<'a> = (&'a str, RightCell, Option<(LineStatus, &'a str)>);
    let cases: Vec<Case> = vec![
        ("shipping.ws", RightCell::Yes, None),
        ("tracking.tool", RightCell::Scope(Scope::UserTag), None),
        // Wider than the importer holds it.
        (
            "tracking.tool",
            RightCell::Scope(Scope::Consolidated),
            Some((LineStatus::RightNotHeld, "tracking.tool")),
        ),
        // Not held at all.
        (
            "tracking.ws",
            RightCell::Yes,
            Some((LineStatus::RightNotHeld, "tracking.ws")),
        ),
        // Standard users only.
        (
            "billing.invoices",
            RightCell::Yes,
            Some((LineStatus::InvalidChoice, "billing.invoices")),
        ),
        // Asking for nothing needs nothing.
        ("tracking.ws", RightCell::No, None),
    ];
    for (code, cell, expected) in cases {
        let mut line = advanced("zoe@example.com");
        line.rights = vec![(code.into(), cell)];
        let got = w
            .decide(line)
            .err()
            .map(|o| (o.status, o.column.clone(), o.message));
        match (expected, got) {
            (None, None) => {}
            (Some((status, column)), Some((s, c, message))) => {
                assert_eq!((s, c.as_str()), (status, column), "{code} {cell:?}");
                assert!(message.contains(code), "{message}");
            }
            (expected, got) => panic!("{code} {cell:?}: expected {expected:?}, got {got:?}"),
        }
    }
}

#[test]
fn revoking_or_rescoping_needs_the_right_held() {
    let mut w = World::new();
    let id = w.existing("zoe@example.com", Some(&[]));
    w.known.grants.insert(
        id,
        vec![("tracking.tool".into(), Some(Scope::Consolidated))],
    );
    // Narrowing a consolidated grant the importer could not give.
    let mut line = advanced("zoe@example.com");
    line.rights = vec![("tracking.tool".into(), RightCell::Scope(Scope::UserTag))];
    assert_eq!(refusal(w.decide(line)).0, LineStatus::RightNotHeld);
    // Revoking it.
    let mut line = advanced("zoe@example.com");
    line.rights = vec![("tracking.tool".into(), RightCell::No)];
    assert_eq!(refusal(w.decide(line)).0, LineStatus::RightNotHeld);
    // An operator may.
    w.authority = Authority::Operator;
    let mut line = advanced("zoe@example.com");
    line.rights = vec![("tracking.tool".into(), RightCell::No)];
    let Decision::Update(change) = w.decide(line).unwrap() else {
        panic!("expected an update");
    };
    assert_eq!(change.revokes, ["tracking.tool"]);
}

#[test]
fn who_may_receive_rights_and_change_status() {
    let statuses = [
        (UserStatus::Active, true),
        (UserStatus::Invited, true),
        (UserStatus::Deactivated, false),
    ];
    for (status, may) in statuses {
        let mut w = World::new();
        let id = w.existing("zoe@example.com", Some(&[]));
        w.known.users.get_mut(&id).unwrap().status = status;
        let mut line = advanced("zoe@example.com");
        line.rights = vec![("shipping.ws".into(), RightCell::Yes)];
        let got = w.decide(line);
        assert_eq!(got.is_ok(), may, "{status:?}: {got:?}");
    }
    // Archived users are refused whatever the line asks.
    let mut w = World::new();
    let id = w.existing("zoe@example.com", Some(&[]));
    w.known.users.get_mut(&id).unwrap().status = UserStatus::Archived;
    assert_eq!(
        refusal(w.decide(advanced("zoe@example.com"))).2,
        "the user is archived"
    );

    // A status change needs admin.users on every account of the user.
    let mut w = World::new();
    let id = w.existing("zoe@example.com", Some(&[]));
    w.known.not_administered.insert(id, vec!["900138".into()]);
    let mut line = advanced("zoe@example.com");
    line.status = Some(UserStatus::Deactivated);
    let (_, _, message) = refusal(w.decide(line));
    assert!(message.contains("900138"), "{message}");
    w.known.not_administered.insert(id, vec![]);
    let mut line = advanced("zoe@example.com");
    line.status = Some(UserStatus::Deactivated);
    let Decision::Update(change) = w.decide(line).unwrap() else {
        panic!("expected an update");
    };
    assert_eq!(change.status, Some(UserStatus::Deactivated));
}

#[test]
fn a_bad_profile_names_its_first_field() {
    let w = World::new();
    let mut line = advanced("not an email");
    line.profile.phone = String::new();
    let (status, column, message) = refusal(w.decide(line));
    assert_eq!(status, LineStatus::InvalidUserData);
    assert_eq!(column, "email");
    assert!(
        message.contains("phone"),
        "every problem is told: {message}"
    );
}

#[test]
fn an_unknown_user_key_is_refused() {
    let w = World::new();
    let mut line = advanced("zoe@example.com");
    line.user_key = Some(
        crate::domain::user::UserKey::generate()
            .unwrap()
            .to_string(),
    );
    let (status, column, _) = refusal(w.decide(line));
    assert_eq!(
        (status, column.as_str()),
        (LineStatus::InvalidUserData, "user_key")
    );
}
