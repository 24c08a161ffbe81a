//! Bad input for every RPC of users, links, grants and keys: a precise
//! error naming the field, and nothing written. Each test runs a table of
//! (case, request, expected code, expected violated fields) and reports
//! every row that went wrong.

use clef::pb::{self, Scope};
use prost_types::{FieldMask, Timestamp};
use tonic::Code;

use crate::common::*;

const BAD: Code = Code::InvalidArgument;

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
struct Fixture {
    app: TestApp,
    ops: Clients,
    adv: pb::User,
    before: Vec<String>,
}

async fn fixture() -> Fixture {
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
    async fn finish(self, mut m: Mismatches) {
        let after = snapshot(&self.app).await;
        m.check(
            "nothing written",
            after == self.before,
            "bad input changed the database",
        );
        m.finish();
    }

    /// A GrantRights request for the fixture's user on 4000.
    fn grant(&self, rights: Vec<pb::RightGrant>) -> pb::GrantRightsRequest {
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
                    expires_at: Some(Timestamp {
                        seconds: 1,
                        nanos: 0,
                    }),
                }],
            ),
            BAD,
            &["rights[0].expires_at"],
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
        u.deactivate_user(pb::UserRef { id: "x".into() }).await,
        BAD,
        &["id"],
    );
    m.refused(
        "archive: no id",
        u.archive_user(pb::UserRef::default()).await,
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

#[tokio::test]
async fn lookup_user_key_names_a_malformed_key_and_misses_an_unknown_one() {
    let mut f = fixture().await;
    let rows: Vec<(&str, &str, Code, &[&str])> = vec![
        ("malformed key", "K7QH", BAD, &["user_key"]),
        ("unknown key", "ZZZZ-ZZZZ-ZZZZ", Code::NotFound, &[]),
    ];
    let mut m = Mismatches::default();
    for (case, key, code, fields) in rows {
        let request = pb::LookupUserKeyRequest {
            user_key: key.into(),
        };
        m.refused(
            case,
            f.ops.links.lookup_user_key(request).await,
            code,
            fields,
        );
    }
    f.finish(m).await;
}

#[tokio::test]
async fn link_user_names_invalid_fields_and_refuses_unknown_or_linked_users() {
    let mut f = fixture().await;
    let rows: Vec<(&str, pb::LinkUserRequest, Code, &[&str])> = vec![
        (
            "empty request",
            pb::LinkUserRequest::default(),
            BAD,
            &["account_code", "user_key"],
        ),
        (
            "unknown user key",
            pb::LinkUserRequest {
                account_code: "4000".into(),
                user_key: "ZZZZ-ZZZZ-ZZZZ".into(),
                ..Default::default()
            },
            Code::NotFound,
            &[],
        ),
        (
            "blank tag and unknown right",
            pb::LinkUserRequest {
                account_code: "4000".into(),
                user_key: f.adv.user_key.clone(),
                tags: vec!["".into()],
                rights: vec![right("nope.nope")],
            },
            BAD,
            &["tags[0]", "rights[0].right"],
        ),
        (
            "already linked",
            pb::LinkUserRequest {
                account_code: "4000".into(),
                user_key: f.adv.user_key.clone(),
                ..Default::default()
            },
            Code::AlreadyExists,
            &[],
        ),
    ];
    let mut m = Mismatches::default();
    for (case, request, code, fields) in rows {
        m.refused(case, f.ops.links.link_user(request).await, code, fields);
    }
    f.finish(m).await;
}

#[tokio::test]
async fn link_management_names_malformed_ids() {
    let mut f = fixture().await;
    let l = &mut f.ops.links;
    let mut m = Mismatches::default();
    m.refused(
        "update tags: malformed user id",
        l.update_link_tags(pb::UpdateLinkTagsRequest {
            account_code: "4000".into(),
            user_id: "x".into(),
            tags: vec![],
        })
        .await,
        BAD,
        &["user_id"],
    );
    m.refused(
        "unlink: empty request",
        l.unlink_user(pb::UnlinkUserRequest::default()).await,
        BAD,
        &["account_code", "user_id"],
    );
    m.refused(
        "list links: of nothing",
        l.list_links(pb::ListLinksRequest::default()).await,
        BAD,
        &["of"],
    );
    f.finish(m).await;
}

#[tokio::test]
async fn grant_rights_names_every_invalid_right() {
    let mut f = fixture().await;
    let rows: Vec<(&str, pb::GrantRightsRequest, Code, &[&str])> = vec![
        ("no rights", f.grant(vec![]), BAD, &["rights"]),
        (
            "right not in the catalog",
            f.grant(vec![right("x.unknown")]),
            BAD,
            &["rights[0].right"],
        ),
        (
            "scope on an unscoped right",
            f.grant(vec![scoped("tracking.ws", Scope::UserKey)]),
            BAD,
            &["rights[0].scope"],
        ),
        (
            "the same right twice",
            f.grant(vec![right("shipping.ws"), right("shipping.ws")]),
            BAD,
            &["rights[1].right"],
        ),
        (
            "unknown scope",
            f.grant(vec![pb::RightGrant {
                right: "tracking.tool".into(),
                scope: 9,
                expires_at: None,
            }]),
            BAD,
            &["rights[0].scope"],
        ),
    ];
    let mut m = Mismatches::default();
    for (case, request, code, fields) in rows {
        m.refused(case, f.ops.grants.grant_rights(request).await, code, fields);
    }
    f.finish(m).await;
}

#[tokio::test]
async fn revoke_and_list_grants_name_invalid_fields() {
    let mut f = fixture().await;
    let revoke = |rights: Vec<String>| pb::RevokeRightsRequest {
        account_code: "4000".into(),
        user_id: f.adv.id.clone(),
        rights,
    };
    let rows: Vec<(&str, pb::RevokeRightsRequest, Code, &[&str])> = vec![
        ("revoke: no rights", revoke(vec![]), BAD, &["rights"]),
        (
            "revoke: right not in the catalog",
            revoke(vec!["x.unknown".into()]),
            BAD,
            &["rights[0]"],
        ),
    ];
    let mut m = Mismatches::default();
    for (case, request, code, fields) in rows {
        m.refused(
            case,
            f.ops.grants.revoke_rights(request).await,
            code,
            fields,
        );
    }
    m.refused(
        "list grants: of nothing",
        f.ops
            .grants
            .list_grants(pb::ListGrantsRequest::default())
            .await,
        BAD,
        &["of"],
    );
    f.finish(m).await;
}

#[tokio::test]
async fn grant_across_accounts_names_invalid_accounts_and_users_and_misses_unknown_accounts() {
    let mut f = fixture().await;
    let across =
        |codes: Vec<&str>, user: Option<pb::UserSelector>| pb::GrantAcrossAccountsRequest {
            user,
            account_codes: codes.into_iter().map(String::from).collect(),
            rights: vec![right("shipping.ws")],
        };
    let by_key = Some(pb::UserSelector {
        by: Some(pb::user_selector::By::UserKey(f.adv.user_key.clone())),
    });
    let rows: Vec<(&str, pb::GrantAcrossAccountsRequest, Code, &[&str])> = vec![
        (
            "no accounts",
            across(vec![], by_key.clone()),
            BAD,
            &["account_codes"],
        ),
        ("no user", across(vec!["4000"], None), BAD, &["user"]),
        (
            "one malformed account",
            across(vec!["4000", "bad code"], by_key.clone()),
            BAD,
            &["account_codes[1]"],
        ),
        (
            "one unknown account",
            across(vec!["4000", "4404"], by_key.clone()),
            Code::NotFound,
            &[],
        ),
        (
            "incomplete new user",
            across(
                vec!["4000"],
                Some(pb::UserSelector {
                    by: Some(pb::user_selector::By::NewUser(pb::NewUserProfile {
                        last_name: "Only".into(),
                        ..Default::default()
                    })),
                }),
            ),
            BAD,
            &[
                "user.new_user.first_name",
                "user.new_user.job_title",
                "user.new_user.postal_code",
                "user.new_user.city",
                "user.new_user.email",
                "user.new_user.phone",
                "user.new_user.address_lines",
            ],
        ),
    ];
    let mut m = Mismatches::default();
    for (case, request, code, fields) in rows {
        m.refused(
            case,
            f.ops.grants.grant_across_accounts(request).await,
            code,
            fields,
        );
    }
    f.finish(m).await;
}

#[tokio::test]
async fn define_right_names_every_invalid_field_and_refuses_an_existing_code() {
    let mut f = fixture().await;
    let rows: Vec<(&str, pb::Right, Code, &[&str])> = vec![
        (
            "malformed code, missing texts, unknown kind",
            pb::Right {
                code: "Bad Code".into(),
                kinds: vec!["robot".into()],
                ..Default::default()
            },
            BAD,
            &[
                "right.code",
                "right.category",
                "right.label_fr",
                "right.label_en",
                "right.kinds[0]",
            ],
        ),
        (
            "existing code",
            pb::Right {
                code: "shipping.ws".into(),
                category: "c".into(),
                label_fr: "f".into(),
                label_en: "e".into(),
                kinds: vec!["standard".into()],
                scoped: false,
            },
            Code::AlreadyExists,
            &[],
        ),
    ];
    let mut m = Mismatches::default();
    for (case, right, code, fields) in rows {
        let request = pb::DefineRightRequest { right: Some(right) };
        m.refused(case, f.ops.grants.define_right(request).await, code, fields);
    }
    f.finish(m).await;
}

#[tokio::test]
async fn connection_key_rpcs_name_invalid_fields() {
    let mut f = fixture().await;
    let k = &mut f.ops.keys;
    let mut m = Mismatches::default();
    m.refused(
        "revoke: no key id",
        k.revoke_connection_key(pb::RevokeConnectionKeyRequest::default())
            .await,
        BAD,
        &["key_id"],
    );
    m.refused(
        "list: malformed user id",
        k.list_connection_keys(pb::ListConnectionKeysRequest {
            user_id: "nope".into(),
        })
        .await,
        BAD,
        &["user_id"],
    );
    m.refused(
        "regenerate: expiry in the past",
        k.regenerate_connection_key(pb::RegenerateConnectionKeyRequest {
            user_id: f.adv.id.clone(),
            expire_time: Some(Timestamp {
                seconds: 1,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await,
        BAD,
        &["expire_time"],
    );
    f.finish(m).await;
}

#[tokio::test]
async fn an_operator_can_define_a_right_and_grant_it() {
    let mut f = fixture().await;
    f.ops
        .grants
        .define_right(pb::DefineRightRequest {
            right: Some(pb::Right {
                code: "returns.manage".into(),
                category: "returns".into(),
                label_fr: "Gestion des retours".into(),
                label_en: "Returns management".into(),
                kinds: vec!["advanced".into()],
                scoped: false,
            }),
        })
        .await
        .unwrap();
    let rights = f
        .ops
        .grants
        .list_rights(pb::ListRightsRequest {})
        .await
        .unwrap()
        .into_inner()
        .rights;
    assert_eq!(rights.len(), 12);
    let scoped_codes: Vec<_> = rights
        .iter()
        .filter(|r| r.scoped)
        .map(|r| r.code.as_str())
        .collect();
    assert_eq!(scoped_codes, ["tracking.tool", "tracking.tool_cs"]);
    let request = f.grant(vec![right("returns.manage")]);
    f.ops.grants.grant_rights(request).await.unwrap();
}
