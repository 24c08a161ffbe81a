//! Bad input for every RPC of users: a precise error naming the field, and
//! nothing written. Each test runs a table of (case, request, expected code,
//! expected violated fields) and reports every row that went wrong. Links,
//! grants and keys are in `validation_links_grants_keys`, on the same
//! fixture.

use clef::pb::{self, Scope};
use prost_types::{FieldMask, Timestamp};
use tonic::Code;

use crate::common::*;

pub(crate) const BAD: Code = Code::InvalidArgument;

fn create(user: pb::User, account: &str, rights: Vec<pb::RightGrant>) -> pb::CreateUserRequest {
    pb::CreateUserRequest {
        user: Some(user),
        account_code: account.into(),
        rights,
        ..Default::default()
    }
}

/// An organization with account 4000, an advanced user on it (tag `T1`),
/// and the database as it stands then.
pub(crate) struct Fixture {
    pub(crate) app: TestApp,
    pub(crate) ops: Clients,
    pub(crate) adv: pb::User,
    pub(crate) before: Vec<String>,
}

pub(crate) async fn fixture() -> Fixture {
    let app = spawn_app().await;
    org_with_account(&app, "Org", "4000").await;
    let mut ops = app.operator().await;
    let (adv, _) = create_user(
        &mut ops,
        advanced("Ana", "Valid", "ana@example.com"),
        "4000",
        &["T1"],
        vec![],
    )
    .await
    .unwrap();
    let before = snapshot(&app).await;
    Fixture {
        app,
        ops,
        adv,
        before,
    }
}

impl Fixture {
    /// Adds a row when the database changed since the fixture was built,
    /// then fails with every failing row.
    pub(crate) async fn finish(self, mut m: Mismatches) {
        let after = snapshot(&self.app).await;
        m.check(
            "nothing written",
            after == self.before,
            "bad input changed the database",
        );
        m.finish();
    }

    /// A GrantRights request for the fixture's user on 4000.
    pub(crate) fn grant(&self, rights: Vec<pb::RightGrant>) -> pb::GrantRightsRequest {
        pb::GrantRightsRequest {
            account_code: "4000".into(),
            user_id: self.adv.id.clone(),
            rights,
        }
    }
}

#[tokio::test]
async fn create_user_names_every_invalid_field() {
    let mut f = fixture().await;
    let mut tagged = create(standard("A", "B"), "4000", vec![]);
    tagged.tags = vec![" ".into(), "x".repeat(65)];
    let rows: Vec<(&str, pb::CreateUserRequest, Code, &[&str])> = vec![
        ("no user", pb::CreateUserRequest::default(), BAD, &["user"]),
        (
            "no kind",
            create(
                pb::User {
                    kind: 0,
                    ..standard("A", "B")
                },
                "4000",
                vec![],
            ),
            BAD,
            &["user.kind"],
        ),
        (
            "empty advanced profile",
            create(
                pb::User {
                    kind: pb::UserKind::Advanced as i32,
                    ..Default::default()
                },
                "4000",
                vec![],
            ),
            BAD,
            &[
                "user.last_name",
                "user.first_name",
                "user.job_title",
                "user.postal_code",
                "user.city",
                "user.email",
                "user.phone",
                "user.address_lines",
            ],
        ),
        (
            "malformed email",
            create(advanced("A", "B", "not-an-email"), "4000", vec![]),
            BAD,
            &["user.email"],
        ),
        (
            "no account",
            create(standard("A", "B"), "", vec![]),
            BAD,
            &["account_code"],
        ),
        (
            "malformed account",
            create(standard("A", "B"), "no such!", vec![]),
            BAD,
            &["account_code"],
        ),
        (
            "right not in the catalog",
            create(standard("A", "B"), "4000", vec![right("no.such_right")]),
            BAD,
            &["rights[0].right"],
        ),
        (
            "scope on an unscoped right",
            create(
                standard("A", "B"),
                "4000",
                vec![scoped("shipping.ws", Scope::Consolidated)],
            ),
            BAD,
            &["rights[0].scope"],
        ),
        (
            "scoped right without a scope",
            create(standard("A", "B"), "4000", vec![right("tracking.tool")]),
            BAD,
            &["rights[0].scope"],
        ),
        (
            "right not for this kind of user",
            create(
                advanced("A", "B", "ab@example.com"),
                "4000",
                vec![right("billing.invoices")],
            ),
            BAD,
            &["rights[0].right"],
        ),
        (
            "grant expiring in the past",
            create(
                standard("A", "B"),
                "4000",
                vec![pb::RightGrant {
                    right: "shipping.ws".into(),
                    scope: 0,
                    expire_time: Some(Timestamp {
                        seconds: 1,
                        nanos: 0,
                    }),
                }],
            ),
            BAD,
            &["rights[0].expire_time"],
        ),
        ("blank and long tags", tagged, BAD, &["tags[0]", "tags[1]"]),
    ];
    let mut m = Mismatches::default();
    for (case, request, code, fields) in rows {
        m.refused(case, f.ops.users.create_user(request).await, code, fields);
    }
    f.finish(m).await;
}

#[tokio::test]
async fn create_user_on_an_unknown_account_is_not_found() {
    let mut f = fixture().await;
    let mut m = Mismatches::default();
    m.refused(
        "unknown account",
        f.ops
            .users
            .create_user(create(standard("A", "B"), "9999", vec![]))
            .await,
        Code::NotFound,
        &[],
    );
    f.finish(m).await;
}

#[tokio::test]
async fn create_user_with_a_taken_email_or_login_already_exists() {
    let mut f = fixture().await;
    let rows: Vec<(&str, pb::CreateUserRequest, Code, &[&str])> = vec![
        (
            "email taken, in another case",
            create(advanced("A", "B", "ANA@example.com"), "4000", vec![]),
            Code::AlreadyExists,
            &[],
        ),
        (
            "login taken",
            create(
                pb::User {
                    login: f.adv.login.clone(),
                    ..standard("A", "B")
                },
                "4000",
                vec![],
            ),
            Code::AlreadyExists,
            &[],
        ),
    ];
    let mut m = Mismatches::default();
    for (case, request, code, fields) in rows {
        m.refused(case, f.ops.users.create_user(request).await, code, fields);
    }
    f.finish(m).await;
}

#[tokio::test]
async fn get_user_names_a_missing_or_malformed_selector_and_misses_unknown_keys() {
    use pb::get_user_request::By;
    let mut f = fixture().await;
    let rows: Vec<(&str, pb::GetUserRequest, Code, &[&str])> = vec![
        ("no selector", pb::GetUserRequest { by: None }, BAD, &["by"]),
        (
            "malformed id",
            pb::GetUserRequest {
                by: Some(By::Id("123".into())),
            },
            BAD,
            &["id"],
        ),
        (
            "malformed user key",
            pb::GetUserRequest {
                by: Some(By::UserKey("ABC".into())),
            },
            BAD,
            &["user_key"],
        ),
        (
            "unknown user key",
            pb::GetUserRequest {
                by: Some(By::UserKey("0000-0000-0000".into())),
            },
            Code::NotFound,
            &[],
        ),
    ];
    let mut m = Mismatches::default();
    for (case, request, code, fields) in rows {
        m.refused(case, f.ops.users.get_user(request).await, code, fields);
    }
    f.finish(m).await;
}

#[tokio::test]
async fn list_users_names_every_invalid_filter() {
    let mut f = fixture().await;
    let rows: Vec<(&str, pb::ListUsersRequest, Code, &[&str])> = vec![
        (
            "no account",
            pb::ListUsersRequest::default(),
            BAD,
            &["account_code"],
        ),
        (
            "page size, page token and status",
            pb::ListUsersRequest {
                account_code: "4000".into(),
                page_size: 5000,
                page_token: "@@".into(),
                status: 42,
                ..Default::default()
            },
            BAD,
            &["page_size", "page_token", "status"],
        ),
    ];
    let mut m = Mismatches::default();
    for (case, request, code, fields) in rows {
        m.refused(case, f.ops.users.list_users(request).await, code, fields);
    }
    f.finish(m).await;
}

#[tokio::test]
async fn update_user_names_invalid_masks_and_values() {
    let mut f = fixture().await;
    let upd = |paths: &[&str], user: pb::User| pb::UpdateUserRequest {
        user: Some(pb::User {
            id: f.adv.id.clone(),
            ..user
        }),
        update_mask: Some(FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }),
    };
    let rows: Vec<(&str, pb::UpdateUserRequest, Code, &[&str])> = vec![
        (
            "empty mask",
            upd(&[], pb::User::default()),
            BAD,
            &["update_mask"],
        ),
        (
            "login in the mask",
            upd(&["login"], pb::User::default()),
            BAD,
            &["update_mask"],
        ),
        (
            "unknown field in the mask",
            upd(&["shoe_size"], pb::User::default()),
            BAD,
            &["update_mask"],
        ),
        (
            "malformed email",
            upd(
                &["email"],
                pb::User {
                    email: "nope".into(),
                    ..Default::default()
                },
            ),
            BAD,
            &["user.email"],
        ),
        (
            "required field cleared",
            upd(&["job_title"], pb::User::default()),
            BAD,
            &["user.job_title"],
        ),
        (
            "default account he is not linked to",
            upd(
                &["default_account_code"],
                pb::User {
                    default_account_code: "4001".into(),
                    ..Default::default()
                },
            ),
            BAD,
            &["user.default_account_code"],
        ),
        ("no user", pb::UpdateUserRequest::default(), BAD, &["user"]),
    ];
    let mut m = Mismatches::default();
    for (case, request, code, fields) in rows {
        m.refused(case, f.ops.users.update_user(request).await, code, fields);
    }
    f.finish(m).await;
}

#[tokio::test]
async fn status_changes_name_malformed_user_ids() {
    let mut f = fixture().await;
    let u = &mut f.ops.users;
    let mut m = Mismatches::default();
    m.refused(
        "deactivate: malformed id",
        u.deactivate_user(pb::DeactivateUserRequest { id: "x".into() })
            .await,
        BAD,
        &["id"],
    );
    m.refused(
        "archive: no id",
        u.archive_user(pb::ArchiveUserRequest::default()).await,
        BAD,
        &["id"],
    );
    let rows: Vec<(&str, pb::DeactivateUsersRequest, Code, &[&str])> = vec![
        (
            "mass deactivation: no ids",
            pb::DeactivateUsersRequest::default(),
            BAD,
            &["user_ids"],
        ),
        (
            "mass deactivation: one malformed id",
            pb::DeactivateUsersRequest {
                team: None,
                user_ids: vec![f.adv.id.clone(), "x".into()],
            },
            BAD,
            &["user_ids[1]"],
        ),
    ];
    for (case, request, code, fields) in rows {
        m.refused(case, u.deactivate_users(request).await, code, fields);
    }
    f.finish(m).await;
}
