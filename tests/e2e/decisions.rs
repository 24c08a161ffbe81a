//! AuthorizationService through gRPC: every scope and denial reason of Check
//! and CheckParcelVisibility, VisibilityFilter, and who may ask.

use clef::pb::{self, DenialReason as R, Scope};
use prost_types::Timestamp;
use tonic::Code;

use crate::common::*;

fn parcel(account: &str, user_key: &str, tag: &str) -> Option<pb::Parcel> {
    Some(pb::Parcel {
        account_code: account.into(),
        user_key: user_key.into(),
        tag: tag.into(),
    })
}

async fn visible(
    c: &mut AuthzClient,
    subject: Option<pb::Subject>,
    right: &str,
    p: Option<pb::Parcel>,
) -> pb::CheckParcelVisibilityResponse {
    c.check_parcel_visibility(pb::CheckParcelVisibilityRequest {
        subject,
        right: right.into(),
        parcel: p,
        min_revision: 0,
    })
    .await
    .expect("parcel check")
    .into_inner()
}

#[tokio::test]
async fn check_answers_every_scope_and_denial_reason() {
    let app = spawn_app_with_manual_clock().await;
    let mut ops = app.operator().await;
    let org = create_org(&mut ops.accounts, "Org").await;
    for code in ["900138", "850061", "CLOSED1"] {
        create_account(&mut ops.accounts, &org, code).await;
    }
    let soon = app.clock().now() + chrono::Duration::minutes(10);
    let (u, key) = create_user(
        &mut ops,
        advanced("Zoé", "Check", "zoe@example.com"),
        "900138",
        &["ATELIER-7"],
        vec![
            right("shipping.ws"),
            scoped("tracking.tool", Scope::UserTag),
            scoped("tracking.tool_cs", Scope::UserKey),
            pb::RightGrant {
                right: "tracking.ws".into(),
                scope: 0,
                expire_time: Some(Timestamp {
                    seconds: soon.timestamp(),
                    nanos: soon.timestamp_subsec_nanos() as i32,
                }),
            },
        ],
    )
    .await
    .unwrap();
    ops.links
        .link_user(pb::LinkUserRequest {
            account_code: "CLOSED1".into(),
            user_key: u.user_key.clone(),
            tags: vec![],
            rights: vec![scoped("tracking.tool", Scope::Consolidated)],
        })
        .await
        .unwrap();
    let mut d = app.decider().await;

    // Allowed, by each kind of subject, with the scope of scoped rights.
    for s in [
        by_key(&key),
        by_user(&u.id),
        by_user_key(&u.user_key.to_lowercase()),
    ] {
        let r = check(&mut d, s, "900138", "shipping.ws", 0).await;
        assert!(r.allowed && r.reason == R::Unspecified as i32, "{r:?}");
    }
    let r = check(&mut d, by_key(&key), "900138", "tracking.tool", 0).await;
    assert!(r.allowed);
    assert_eq!(r.scope, Scope::UserTag as i32);
    assert!(r.revision > 0);

    // Every denial reason.
    let reason = |r: pb::CheckResponse| {
        assert!(!r.allowed);
        R::try_from(r.reason).unwrap()
    };
    let unknown_key = clef::domain::key::NewKey::generate().unwrap();
    assert_eq!(
        reason(
            check(
                &mut d,
                by_key(unknown_key.expose_secret()),
                "900138",
                "shipping.ws",
                0
            )
            .await
        ),
        R::UnknownSubject
    );
    assert_eq!(
        reason(check(&mut d, by_key("not-a-key"), "900138", "shipping.ws", 0).await),
        R::UnknownSubject
    );
    // A key's length in bytes, a two-byte character across the end of its body.
    let multibyte = format!("clef_{}é{}", "a".repeat(51), "a".repeat(6));
    assert_eq!(
        reason(check(&mut d, by_key(&multibyte), "900138", "shipping.ws", 0).await),
        R::UnknownSubject
    );
    assert_eq!(
        reason(
            check(
                &mut d,
                by_user(&uuid::Uuid::new_v4().to_string()),
                "900138",
                "shipping.ws",
                0
            )
            .await
        ),
        R::UnknownSubject
    );
    assert_eq!(
        reason(
            check(
                &mut d,
                by_user_key("0000-0000-0000"),
                "900138",
                "shipping.ws",
                0
            )
            .await
        ),
        R::UnknownSubject
    );
    assert_eq!(
        reason(check(&mut d, by_key(&key), "NOPE", "shipping.ws", 0).await),
        R::UnknownAccount
    );
    assert_eq!(
        reason(check(&mut d, by_key(&key), "850061", "shipping.ws", 0).await),
        R::NotLinked
    );
    assert_eq!(
        reason(check(&mut d, by_key(&key), "900138", "billing.invoices", 0).await),
        R::NoGrant
    );
    // A right the catalog does not have is the caller's typo, not a
    // missing grant.
    let typo = expect_code(
        d.check(pb::CheckRequest {
            subject: by_key(&key),
            account_code: "900138".into(),
            right: "no.such_right".into(),
            min_revision: 0,
        })
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&typo), ["right"]);
    // Expired grants stop counting at their expiry, with no write.
    assert!(
        check(&mut d, by_key(&key), "900138", "tracking.ws", 0)
            .await
            .allowed
    );
    app.advance(std::time::Duration::from_secs(10 * 60 + 1));
    assert_eq!(
        reason(check(&mut d, by_key(&key), "900138", "tracking.ws", 0).await),
        R::ExpiredGrant
    );
    // Closed account.
    ops.accounts
        .update_account(pb::UpdateAccountRequest {
            account: Some(pb::Account {
                code: "CLOSED1".into(),
                status: pb::AccountStatus::Closed as i32,
                ..Default::default()
            }),
            update_mask: None,
        })
        .await
        .unwrap();
    assert_eq!(
        reason(check(&mut d, by_key(&key), "CLOSED1", "tracking.tool", 0).await),
        R::AccountClosed
    );
    // Inactive user, by every subject form; and once reactivated, allowed again.
    ops.users
        .deactivate_user(pb::DeactivateUserRequest { id: u.id.clone() })
        .await
        .unwrap();
    for s in [by_user(&u.id), by_user_key(&u.user_key)] {
        assert_eq!(
            reason(check(&mut d, s, "900138", "shipping.ws", 0).await),
            R::InactiveUser
        );
    }
    assert_eq!(
        reason(check(&mut d, by_key(&key), "900138", "shipping.ws", 0).await),
        R::InactiveUser
    );
    ops.users
        .reactivate_user(pb::ReactivateUserRequest { id: u.id.clone() })
        .await
        .unwrap();
    assert!(
        check(&mut d, by_key(&key), "900138", "shipping.ws", 0)
            .await
            .allowed
    );

    // A batch keeps the order of its checks.
    let batch = d
        .check_batch(pb::CheckBatchRequest {
            checks: vec![
                pb::CheckRequest {
                    subject: by_key(&key),
                    account_code: "900138".into(),
                    right: "shipping.ws".into(),
                    min_revision: 0,
                },
                pb::CheckRequest {
                    subject: by_key(&key),
                    account_code: "850061".into(),
                    right: "shipping.ws".into(),
                    min_revision: 0,
                },
                pb::CheckRequest {
                    subject: by_user(&u.id),
                    account_code: "NOPE".into(),
                    right: "shipping.ws".into(),
                    min_revision: 0,
                },
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let reasons: Vec<_> = batch
        .iter()
        .map(|r| R::try_from(r.reason).unwrap())
        .collect();
    assert_eq!(reasons, [R::Unspecified, R::NotLinked, R::UnknownAccount]);
    let too_many = pb::CheckBatchRequest {
        checks: vec![
            pb::CheckRequest {
                subject: by_user(&u.id),
                account_code: "900138".into(),
                right: "shipping.ws".into(),
                min_revision: 0,
            };
            1001
        ],
    };
    let s = expect_code(d.check_batch(too_many).await, Code::InvalidArgument);
    assert_eq!(violated_fields(&s), ["checks"]);
    let s = expect_code(
        d.check(pb::CheckRequest {
            subject: None,
            account_code: "bad code".into(),
            right: "Bad".into(),
            min_revision: -1,
        })
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        violated_fields(&s),
        ["subject", "account_code", "right", "min_revision"]
    );
}

#[tokio::test]
async fn parcel_visibility_follows_each_scope() {
    let app = spawn_app().await;
    let mut ops = app.operator().await;
    let org = create_org(&mut ops.accounts, "Org").await;
    for code in ["A1", "A2", "A3"] {
        create_account(&mut ops.accounts, &org, code).await;
    }
    let (u, key) = create_user(
        &mut ops,
        advanced("Tom", "Tag", "tom@example.com"),
        "A1",
        &["ATELIER-7", "QUAI-2"],
        vec![
            scoped("tracking.tool", Scope::UserTag),
            scoped("tracking.tool_cs", Scope::Consolidated),
        ],
    )
    .await
    .unwrap();
    let (other, _) = create_user(
        &mut ops,
        advanced("Ola", "Other", "ola@example.com"),
        "A1",
        &[],
        vec![],
    )
    .await
    .unwrap();
    for (code, scope) in [("A2", Scope::UserKey), ("A3", Scope::Consolidated)] {
        ops.links
            .link_user(pb::LinkUserRequest {
                account_code: code.into(),
                user_key: u.user_key.clone(),
                tags: vec!["ATELIER-7".into()],
                rights: vec![scoped("tracking.tool", scope)],
            })
            .await
            .unwrap();
    }
    let mut d = app.decider().await;
    let me = || by_key(&key);
    let mine = u.user_key.to_lowercase();

    // user_tag on A1: parcels carrying one of his tags there.
    let r = visible(&mut d, me(), "tracking.tool", parcel("A1", "", "QUAI-2")).await;
    assert!(r.visible);
    assert_eq!(r.scope_used, Scope::UserTag as i32);
    let r = visible(&mut d, me(), "tracking.tool", parcel("A1", "", "QUAI-9")).await;
    assert!(!r.visible);
    assert_eq!(r.reason, R::OutOfScope as i32);
    assert_eq!(r.scope_used, Scope::UserTag as i32);
    assert!(
        !visible(&mut d, me(), "tracking.tool", parcel("A1", &mine, ""))
            .await
            .visible
    );
    // user_key on A2: parcels franked with his own key.
    let r = visible(&mut d, me(), "tracking.tool", parcel("A2", &mine, "")).await;
    assert!(r.visible);
    assert_eq!(r.scope_used, Scope::UserKey as i32);
    assert!(
        !visible(
            &mut d,
            me(),
            "tracking.tool",
            parcel("A2", &other.user_key, "")
        )
        .await
        .visible
    );
    assert!(
        !visible(&mut d, me(), "tracking.tool", parcel("A2", "", "ATELIER-7"))
            .await
            .visible
    );
    // consolidated on A3: every parcel.
    let r = visible(&mut d, me(), "tracking.tool", parcel("A3", "", "")).await;
    assert!(r.visible);
    assert_eq!(r.scope_used, Scope::Consolidated as i32);
    // The customer-service variant is a right of its own.
    assert!(
        visible(&mut d, me(), "tracking.tool_cs", parcel("A1", "", ""))
            .await
            .visible
    );
    let r = visible(&mut d, me(), "tracking.tool_cs", parcel("A2", &mine, "")).await;
    assert_eq!(r.reason, R::NoGrant as i32);
    // Denials as for Check.
    let r = visible(&mut d, me(), "tracking.tool", parcel("ZZ", "", "")).await;
    assert_eq!(r.reason, R::UnknownAccount as i32);
    let r = visible(
        &mut d,
        by_user(&other.id),
        "tracking.tool",
        parcel("A1", "", "ATELIER-7"),
    )
    .await;
    assert_eq!(r.reason, R::NoGrant as i32);
    let s = expect_code(
        d.check_parcel_visibility(pb::CheckParcelVisibilityRequest {
            subject: me(),
            right: "shipping.ws".into(),
            parcel: parcel("A1", "ZZ", ""),
            min_revision: 0,
        })
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&s), ["right", "parcel.user_key"]);

    // The filter a tracking service turns into its query.
    let mut stream = d
        .visibility_filter(pb::VisibilityFilterRequest {
            subject: me(),
            right: "tracking.tool".into(),
            min_revision: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut clauses = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        clauses.extend(m.clauses);
    }
    let summary: Vec<_> = clauses
        .iter()
        .map(|c| {
            (
                c.account_code.as_str(),
                c.all,
                c.user_key.as_str(),
                c.tags.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "A1",
                false,
                "",
                vec!["ATELIER-7".to_owned(), "QUAI-2".to_owned()]
            ),
            ("A2", false, u.user_key.as_str(), vec![]),
            ("A3", true, "", vec![]),
        ]
    );
}

#[tokio::test]
async fn visibility_filter_of_a_partner_on_many_accounts_is_complete() {
    let app = spawn_app().await;
    let mut ops = app.operator().await;
    let org = create_org(&mut ops.accounts, "Big").await;
    let codes: Vec<String> = (0..1100).map(|i| format!("P{i:05}")).collect();
    for code in &codes {
        create_account(&mut ops.accounts, &org, code).await;
    }
    let across = ops
        .grants
        .grant_across_accounts(pb::GrantAcrossAccountsRequest {
            user: Some(pb::UserSelector {
                by: Some(pb::user_selector::By::NewUser(pb::NewUserProfile {
                    last_name: "Partner".into(),
                    first_name: "Logistics".into(),
                    job_title: "Partner".into(),
                    email: "partner@example.com".into(),
                    phone: "0102030405".into(),
                    address_lines: vec!["Zone Nord".into()],
                    postal_code: "59000".into(),
                    city: "Lille".into(),
                    ..Default::default()
                })),
            }),
            account_codes: codes.clone(),
            rights: vec![scoped("tracking.tool", Scope::Consolidated)],
        })
        .await
        .unwrap()
        .into_inner();
    let active = app.activate(&across.invitation_token).await;
    let mut d = app.decider().await;
    let mut stream = d
        .visibility_filter(pb::VisibilityFilterRequest {
            subject: by_key(&active.connection_key),
            right: "tracking.tool".into(),
            min_revision: active.revision,
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    let mut messages = 0;
    let mut last = false;
    while let Some(m) = stream.message().await.unwrap() {
        assert!(!last, "nothing after the last chunk");
        messages += 1;
        last = m.last;
        assert!(m.revision >= across.revision);
        seen.extend(m.clauses.into_iter().map(|c| {
            assert!(c.all);
            c.account_code
        }));
    }
    assert!(last);
    assert!(messages >= 3, "streamed in chunks, got {messages}");
    assert_eq!(seen, codes, "every account, in order, none missing");
}

#[tokio::test]
async fn only_services_and_operators_may_ask() {
    let app = spawn_app().await;
    org_with_account(&app, "Org", "X1").await;
    let mut ops = app.operator().await;
    let (u, key) = create_user(
        &mut ops,
        standard("Ann", "User"),
        "X1",
        &[],
        vec![right("shipping.ws")],
    )
    .await
    .unwrap();
    let req = || pb::CheckRequest {
        subject: by_user(&u.id),
        account_code: "X1".into(),
        right: "shipping.ws".into(),
        min_revision: 0,
    };
    let s = expect_code(
        app.authz(&key).await.check(req()).await,
        Code::PermissionDenied,
    );
    assert!(s.message().contains("service"));
    expect_code(
        app.authz(
            clef::domain::key::NewKey::generate()
                .unwrap()
                .expose_secret(),
        )
        .await
        .check(req())
        .await,
        Code::Unauthenticated,
    );
    assert!(
        app.authz(&app.operator_key.clone())
            .await
            .check(req())
            .await
            .unwrap()
            .into_inner()
            .allowed
    );

    // Operators create service principals through the API.
    let created = ops
        .users
        .create_service_principal(pb::CreateServicePrincipalRequest {
            name: "tracking-eu".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        app.authz(&created.connection_key)
            .await
            .check(req())
            .await
            .unwrap()
            .into_inner()
            .allowed
    );
    expect_code(
        ops.users
            .create_service_principal(pb::CreateServicePrincipalRequest {
                name: "tracking-eu".into(),
                ..Default::default()
            })
            .await,
        Code::AlreadyExists,
    );
    expect_code(
        app.client(&key)
            .await
            .users
            .create_service_principal(pb::CreateServicePrincipalRequest {
                name: "mine".into(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
    );
    // A revoked service key is refused on the next decision call.
    let mut svc_keys = app.client(&created.connection_key).await;
    let fresh = svc_keys
        .keys
        .regenerate_connection_key(pb::RegenerateConnectionKeyRequest::default())
        .await
        .unwrap()
        .into_inner()
        .connection_key;
    expect_code(
        app.authz(&created.connection_key).await.check(req()).await,
        Code::Unauthenticated,
    );
    assert!(
        app.authz(&fresh)
            .await
            .check(req())
            .await
            .unwrap()
            .into_inner()
            .allowed
    );
}
