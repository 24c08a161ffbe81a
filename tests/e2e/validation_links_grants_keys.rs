//! Bad input for every RPC of links, grants and keys: a precise error
//! naming the field, and nothing written (the fixture and the tables as in
//! `validation`); and the catalog growing by a right an operator defines.

use clef::pb::{self, Scope};
use prost_types::Timestamp;
use tonic::Code;

use crate::{
    common::*,
    validation::{fixture, BAD},
};

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
                expire_time: None,
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
