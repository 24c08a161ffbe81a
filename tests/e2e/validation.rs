//! Bad input for every RPC of users, links, grants and keys: a precise
//! error naming the field, and nothing written.

use clef::pb::{self, Scope};
use prost_types::{FieldMask, Timestamp};
use tonic::{Code, Status};

use crate::common::*;

#[track_caller]
fn bad<T: std::fmt::Debug>(r: Result<T, Status>, fields: &[&str]) {
    let s = expect_code(r, Code::InvalidArgument);
    assert_eq!(violated_fields(&s), fields, "{}", s.message());
}

fn create(user: pb::User, account: &str, rights: Vec<pb::RightGrant>) -> pb::CreateUserRequest {
    pb::CreateUserRequest {
        user: Some(user),
        account_code: account.into(),
        rights,
        ..Default::default()
    }
}

#[tokio::test]
async fn every_rpc_rejects_bad_input_precisely() {
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
    let u = &mut ops.users;

    // CreateUser
    bad(
        u.create_user(pb::CreateUserRequest::default()).await,
        &["user"],
    );
    bad(
        u.create_user(create(
            pb::User {
                kind: 0,
                ..standard("A", "B")
            },
            "4000",
            vec![],
        ))
        .await,
        &["user.kind"],
    );
    bad(
        u.create_user(create(
            pb::User {
                kind: pb::UserKind::Advanced as i32,
                ..Default::default()
            },
            "4000",
            vec![],
        ))
        .await,
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
    );
    bad(
        u.create_user(create(advanced("A", "B", "not-an-email"), "4000", vec![]))
            .await,
        &["user.email"],
    );
    bad(
        u.create_user(create(standard("A", "B"), "", vec![])).await,
        &["account_code"],
    );
    bad(
        u.create_user(create(standard("A", "B"), "no such!", vec![]))
            .await,
        &["account_code"],
    );
    bad(
        u.create_user(create(
            standard("A", "B"),
            "4000",
            vec![right("no.such_right")],
        ))
        .await,
        &["rights[0].right"],
    );
    bad(
        u.create_user(create(
            standard("A", "B"),
            "4000",
            vec![scoped("shipping.ws", Scope::Consolidated)],
        ))
        .await,
        &["rights[0].scope"],
    );
    bad(
        u.create_user(create(
            standard("A", "B"),
            "4000",
            vec![right("tracking.tool")],
        ))
        .await,
        &["rights[0].scope"],
    );
    bad(
        u.create_user(create(
            advanced("A", "B", "ab@example.com"),
            "4000",
            vec![right("billing.invoices")],
        ))
        .await,
        &["rights[0].right"],
    );
    bad(
        u.create_user(create(
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
        ))
        .await,
        &["rights[0].expires_at"],
    );
    let mut tagged = create(standard("A", "B"), "4000", vec![]);
    tagged.tags = vec![" ".into(), "x".repeat(65)];
    bad(u.create_user(tagged).await, &["tags[0]", "tags[1]"]);
    expect_code(
        u.create_user(create(standard("A", "B"), "9999", vec![]))
            .await,
        Code::NotFound,
    );
    expect_code(
        u.create_user(create(
            advanced("A", "B", "ANA@example.com"),
            "4000",
            vec![],
        ))
        .await,
        Code::AlreadyExists,
    );
    expect_code(
        u.create_user(create(
            pb::User {
                login: adv.login.clone(),
                ..standard("A", "B")
            },
            "4000",
            vec![],
        ))
        .await,
        Code::AlreadyExists,
    );

    // GetUser, ListUsers
    bad(u.get_user(pb::GetUserRequest { by: None }).await, &["by"]);
    bad(
        u.get_user(pb::GetUserRequest {
            by: Some(pb::get_user_request::By::Id("123".into())),
        })
        .await,
        &["id"],
    );
    bad(
        u.get_user(pb::GetUserRequest {
            by: Some(pb::get_user_request::By::UserKey("ABC".into())),
        })
        .await,
        &["user_key"],
    );
    expect_code(
        u.get_user(pb::GetUserRequest {
            by: Some(pb::get_user_request::By::UserKey("0000-0000-0000".into())),
        })
        .await,
        Code::NotFound,
    );
    bad(
        u.list_users(pb::ListUsersRequest::default()).await,
        &["account_code"],
    );
    bad(
        u.list_users(pb::ListUsersRequest {
            account_code: "4000".into(),
            page_size: 5000,
            page_token: "@@".into(),
            status: 42,
            ..Default::default()
        })
        .await,
        &["page_size", "page_token", "status"],
    );

    // UpdateUser
    let upd = |paths: &[&str], user: pb::User| pb::UpdateUserRequest {
        user: Some(pb::User {
            id: adv.id.clone(),
            ..user
        }),
        update_mask: Some(FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }),
    };
    bad(
        u.update_user(upd(&[], pb::User::default())).await,
        &["update_mask"],
    );
    bad(
        u.update_user(upd(&["login"], pb::User::default())).await,
        &["update_mask"],
    );
    bad(
        u.update_user(upd(&["shoe_size"], pb::User::default()))
            .await,
        &["update_mask"],
    );
    bad(
        u.update_user(upd(
            &["email"],
            pb::User {
                email: "nope".into(),
                ..Default::default()
            },
        ))
        .await,
        &["user.email"],
    );
    bad(
        u.update_user(upd(&["job_title"], pb::User::default()))
            .await,
        &["user.job_title"],
    );
    bad(
        u.update_user(upd(
            &["default_account_code"],
            pb::User {
                default_account_code: "4001".into(),
                ..Default::default()
            },
        ))
        .await,
        &["user.default_account_code"],
    );
    bad(
        u.update_user(pb::UpdateUserRequest::default()).await,
        &["user"],
    );

    // Status changes
    bad(
        u.deactivate_user(pb::DeactivateUserRequest { id: "x".into() })
            .await,
        &["id"],
    );
    bad(
        u.archive_user(pb::ArchiveUserRequest::default()).await,
        &["id"],
    );
    bad(
        u.deactivate_users(pb::DeactivateUsersRequest::default())
            .await,
        &["user_ids"],
    );
    bad(
        u.deactivate_users(pb::DeactivateUsersRequest {
            user_ids: vec![adv.id.clone(), "x".into()],
        })
        .await,
        &["user_ids[1]"],
    );

    // LinkService
    let l = &mut ops.links;
    bad(
        l.lookup_user_key(pb::LookupUserKeyRequest {
            user_key: "K7QH".into(),
        })
        .await,
        &["user_key"],
    );
    expect_code(
        l.lookup_user_key(pb::LookupUserKeyRequest {
            user_key: "ZZZZ-ZZZZ-ZZZZ".into(),
        })
        .await,
        Code::NotFound,
    );
    bad(
        l.link_user(pb::LinkUserRequest::default()).await,
        &["account_code", "user_key"],
    );
    expect_code(
        l.link_user(pb::LinkUserRequest {
            account_code: "4000".into(),
            user_key: "ZZZZ-ZZZZ-ZZZZ".into(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
    );
    bad(
        l.link_user(pb::LinkUserRequest {
            account_code: "4000".into(),
            user_key: adv.user_key.clone(),
            tags: vec!["".into()],
            rights: vec![right("nope.nope")],
        })
        .await,
        &["tags[0]", "rights[0].right"],
    );
    expect_code(
        l.link_user(pb::LinkUserRequest {
            account_code: "4000".into(),
            user_key: adv.user_key.clone(),
            ..Default::default()
        })
        .await,
        Code::AlreadyExists,
    );
    bad(
        l.update_link_tags(pb::UpdateLinkTagsRequest {
            account_code: "4000".into(),
            user_id: "x".into(),
            tags: vec![],
        })
        .await,
        &["user_id"],
    );
    bad(
        l.unlink_user(pb::UnlinkUserRequest::default()).await,
        &["account_code", "user_id"],
    );
    bad(l.list_links(pb::ListLinksRequest::default()).await, &["of"]);

    // GrantService
    let g = &mut ops.grants;
    let gr = |rights: Vec<pb::RightGrant>| pb::GrantRightsRequest {
        account_code: "4000".into(),
        user_id: adv.id.clone(),
        rights,
    };
    bad(g.grant_rights(gr(vec![])).await, &["rights"]);
    bad(
        g.grant_rights(gr(vec![right("x.unknown")])).await,
        &["rights[0].right"],
    );
    bad(
        g.grant_rights(gr(vec![scoped("tracking.ws", Scope::UserKey)]))
            .await,
        &["rights[0].scope"],
    );
    bad(
        g.grant_rights(gr(vec![right("shipping.ws"), right("shipping.ws")]))
            .await,
        &["rights[1].right"],
    );
    bad(
        g.grant_rights(gr(vec![pb::RightGrant {
            right: "tracking.tool".into(),
            scope: 9,
            expire_time: None,
        }]))
        .await,
        &["rights[0].scope"],
    );
    bad(
        g.revoke_rights(pb::RevokeRightsRequest {
            account_code: "4000".into(),
            user_id: adv.id.clone(),
            rights: vec![],
        })
        .await,
        &["rights"],
    );
    bad(
        g.revoke_rights(pb::RevokeRightsRequest {
            account_code: "4000".into(),
            user_id: adv.id.clone(),
            rights: vec!["x.unknown".into()],
        })
        .await,
        &["rights[0]"],
    );
    bad(
        g.list_grants(pb::ListGrantsRequest::default()).await,
        &["of"],
    );
    let across =
        |codes: Vec<&str>, user: Option<pb::UserSelector>| pb::GrantAcrossAccountsRequest {
            user,
            account_codes: codes.into_iter().map(String::from).collect(),
            rights: vec![right("shipping.ws")],
        };
    let by_key = Some(pb::UserSelector {
        by: Some(pb::user_selector::By::UserKey(adv.user_key.clone())),
    });
    let s = expect_code(
        g.grant_across_accounts(across(vec![], by_key.clone()))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&s), ["account_codes"]);
    bad(
        g.grant_across_accounts(across(vec!["4000"], None)).await,
        &["user"],
    );
    bad(
        g.grant_across_accounts(across(vec!["4000", "bad code"], by_key.clone()))
            .await,
        &["account_codes[1]"],
    );
    expect_code(
        g.grant_across_accounts(across(vec!["4000", "4404"], by_key.clone()))
            .await,
        Code::NotFound,
    );
    bad(
        g.grant_across_accounts(across(
            vec!["4000"],
            Some(pb::UserSelector {
                by: Some(pb::user_selector::By::NewUser(pb::NewUserProfile {
                    last_name: "Only".into(),
                    ..Default::default()
                })),
            }),
        ))
        .await,
        &[
            "user.new_user.first_name",
            "user.new_user.job_title",
            "user.new_user.postal_code",
            "user.new_user.city",
            "user.new_user.email",
            "user.new_user.phone",
            "user.new_user.address_lines",
        ],
    );
    bad(
        g.define_right(pb::DefineRightRequest {
            right: Some(pb::Right {
                code: "Bad Code".into(),
                kinds: vec!["robot".into()],
                ..Default::default()
            }),
        })
        .await,
        &[
            "right.code",
            "right.category",
            "right.label_fr",
            "right.label_en",
            "right.kinds[0]",
        ],
    );
    expect_code(
        g.define_right(pb::DefineRightRequest {
            right: Some(pb::Right {
                code: "shipping.ws".into(),
                category: "c".into(),
                label_fr: "f".into(),
                label_en: "e".into(),
                kinds: vec!["standard".into()],
                scoped: false,
            }),
        })
        .await,
        Code::AlreadyExists,
    );

    // ConnectionKeyService
    let k = &mut ops.keys;
    bad(
        k.revoke_connection_key(pb::RevokeConnectionKeyRequest::default())
            .await,
        &["key_id"],
    );
    bad(
        k.list_connection_keys(pb::ListConnectionKeysRequest {
            user_id: "nope".into(),
        })
        .await,
        &["user_id"],
    );
    bad(
        k.regenerate_connection_key(pb::RegenerateConnectionKeyRequest {
            user_id: adv.id.clone(),
            expire_time: Some(Timestamp {
                seconds: 1,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await,
        &["expire_time"],
    );

    assert_eq!(
        snapshot(&app).await,
        before,
        "bad input changed the database"
    );

    // And the catalog can grow: an operator defines a right, then grants it.
    ops.grants
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
    let rights = ops
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
    ops.grants
        .grant_rights(gr(vec![right("returns.manage")]))
        .await
        .unwrap();
}
