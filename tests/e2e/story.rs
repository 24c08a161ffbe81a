//! The advanced-user story of the product documents, end to end: two
//! accounts of two organizations, an admin on each, an advanced user created
//! by one and linked by the other through his user key.

use clef::pb::{self, Scope, UserKind};
use tonic::Code;

use crate::common::*;

#[tokio::test]
async fn advanced_user_linked_across_two_organizations() {
    let app = spawn_app().await;
    org_with_account(&app, "Shipper A", "900138").await;
    org_with_account(&app, "Shipper B", "850061").await;
    let tracking_all = || scoped("tracking.tool", Scope::Consolidated);
    let (_, key_a) = make_admin(
        &app,
        "900138",
        "Alice",
        vec![right("shipping.ws"), tracking_all()],
    )
    .await;
    let (_, key_b) = make_admin(
        &app,
        "850061",
        "Bruno",
        vec![right("shipping.ws"), tracking_all()],
    )
    .await;
    let mut a = app.client(&key_a).await;
    let mut b = app.client(&key_b).await;

    // Admin A creates advanced user U on 900138.
    let (u, u_key) = create_user(
        &mut a,
        advanced("Zoé", "Dupré", "zoe.dupre@example.com"),
        "900138",
        &[],
        vec![right("shipping.ws")],
    )
    .await
    .expect("admin A creates U");
    assert_eq!(u.kind, UserKind::Advanced as i32);
    assert_eq!(u.status, pb::UserStatus::Active as i32);
    assert_eq!(
        u.login, "zoe.dupre@example.com",
        "login defaults to the email"
    );
    assert_eq!(u.city, "Épinal");
    let user_key = u.user_key.clone();
    assert_eq!(user_key.len(), 14, "shown grouped: {user_key}");
    assert!(u_key.starts_with("clef_"));

    // U reads his own user key and hands it to admin B, who types it sloppily.
    let mut zoe = app.client(&u_key).await;
    let me = zoe
        .keys
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.user.as_ref().unwrap().user_key, user_key);
    let typed = user_key.to_lowercase().replace('-', " ");

    // Before linking, B cannot see U by id.
    expect_code(
        b.users
            .get_user(pb::GetUserRequest {
                by: Some(pb::get_user_request::By::Id(u.id.clone())),
            })
            .await,
        Code::NotFound,
    );
    let found = b
        .links
        .lookup_user_key(pb::LookupUserKeyRequest {
            user_key: typed.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.user_id, u.id);
    assert_eq!(found.first_name, "Zoé");
    assert_eq!(found.job_title, "Logisticien");
    assert_eq!(
        found.email_masked, "z***@example.com",
        "the email is masked"
    );

    let linked = b
        .links
        .link_user(pb::LinkUserRequest {
            account_code: "850061".into(),
            user_key: typed,
            tags: vec!["ATELIER-7".into()],
            rights: vec![scoped("tracking.tool", Scope::UserTag)],
        })
        .await
        .expect("admin B links U")
        .into_inner();
    assert_eq!(linked.link.as_ref().unwrap().tags, ["ATELIER-7"]);
    assert_eq!(linked.grants.len(), 1);
    assert_eq!(linked.grants[0].scope, Scope::UserTag as i32);

    // Both admins see U in their lists.
    for (c, account) in [(&mut a, "900138"), (&mut b, "850061")] {
        let listed = c
            .users
            .list_users(pb::ListUsersRequest {
                account_code: account.into(),
                kind: UserKind::Advanced as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let ids: Vec<_> = listed.users.iter().map(|x| x.id.as_str()).collect();
        assert_eq!(ids, [u.id.as_str()], "on {account}");
        let got = c
            .users
            .get_user(pb::GetUserRequest {
                by: Some(pb::get_user_request::By::UserKey(user_key.clone())),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.id, u.id);
    }

    // But each admin sees only his own account's link and grants of U.
    let links_seen_by_a = a
        .links
        .list_links(pb::ListLinksRequest {
            of: Some(pb::list_links_request::Of::UserId(u.id.clone())),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let codes: Vec<_> = links_seen_by_a
        .links
        .iter()
        .map(|l| l.account_code.as_str())
        .collect();
    assert_eq!(codes, ["900138"]);

    // U's own view of his rights, per account.
    let me = zoe
        .keys
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    type AccountView = (String, Vec<String>, Vec<(String, i32)>);
    let view: Vec<AccountView> = me
        .accounts
        .iter()
        .map(|a| {
            (
                a.account_code.clone(),
                a.tags.clone(),
                a.grants
                    .iter()
                    .map(|g| (g.right.clone(), g.scope))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        view,
        [
            (
                "850061".to_owned(),
                vec!["ATELIER-7".to_owned()],
                vec![("tracking.tool".to_owned(), Scope::UserTag as i32)]
            ),
            (
                "900138".to_owned(),
                vec![],
                vec![("shipping.ws".to_owned(), Scope::Unspecified as i32)]
            ),
        ]
    );
    let grants = zoe
        .grants
        .list_grants(pb::ListGrantsRequest {
            of: Some(pb::list_grants_request::Of::UserId(u.id.clone())),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grants.grants.len(), 2);

    // B updates U's tags; A unlinking does not touch B's link.
    b.links
        .update_link_tags(pb::UpdateLinkTagsRequest {
            account_code: "850061".into(),
            user_id: u.id.clone(),
            tags: vec!["ATELIER-7".into(), "QUAI-Été".into()],
        })
        .await
        .unwrap();
    let unlinked = a
        .links
        .unlink_user(pb::UnlinkUserRequest {
            account_code: "900138".into(),
            user_id: u.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unlinked.revoked, 1, "shipping.ws went with the link");
    let me = zoe
        .keys
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.accounts.len(), 1);
    assert_eq!(me.accounts[0].account_code, "850061");
    assert_eq!(me.accounts[0].tags, ["ATELIER-7", "QUAI-Été"]);
    // ... and A no longer sees U at all.
    expect_code(
        a.users
            .get_user(pb::GetUserRequest {
                by: Some(pb::get_user_request::By::Id(u.id.clone())),
            })
            .await,
        Code::NotFound,
    );
}

#[tokio::test]
async fn grant_across_accounts_and_revoke_everywhere() {
    let app = spawn_app().await;
    let mut ops = app.operator().await;
    let org = create_org(&mut ops.accounts, "Coffre").await;
    for code in ["AG-01", "AG-02", "AG-03"] {
        create_account(&mut ops.accounts, &org, code).await;
    }
    // A super administrator of the three agencies, created by the operator.
    let created = ops
        .grants
        .grant_across_accounts(pb::GrantAcrossAccountsRequest {
            user: Some(pb::UserSelector {
                by: Some(pb::user_selector::By::NewUser(pb::NewUserProfile {
                    last_name: "Martin".into(),
                    first_name: "Chloé".into(),
                    job_title: "Exploitante".into(),
                    email: "chloe@example.com".into(),
                    phone: "0102030405".into(),
                    address_lines: vec!["1 place d'Armes".into()],
                    postal_code: "75001".into(),
                    city: "Paris".into(),
                    ..Default::default()
                })),
            }),
            account_codes: vec!["AG-01".into(), "AG-02".into(), "AG-03".into()],
            rights: vec![right("admin.users"), right("tracking.ws")],
        })
        .await
        .expect("operator creates a super admin across agencies")
        .into_inner();
    assert_eq!(created.outcomes.len(), 3);
    assert!(created
        .outcomes
        .iter()
        .all(|o| o.outcome == "linked_and_granted"));
    let chloe_key = app.activate(&created.invitation_token).await.connection_key;
    let mut chloe = app.client(&chloe_key).await;

    // She grants an existing user (by email) the same right on all three.
    let (worker, _) = create_user(
        &mut chloe,
        advanced("Hugo", "Petit", "hugo@example.com"),
        "AG-01",
        &[],
        vec![],
    )
    .await
    .unwrap();
    let across = chloe
        .grants
        .grant_across_accounts(pb::GrantAcrossAccountsRequest {
            user: Some(pb::UserSelector {
                by: Some(pb::user_selector::By::Email("HUGO@example.com".into())),
            }),
            account_codes: vec!["AG-01".into(), "AG-02".into(), "AG-03".into()],
            rights: vec![right("tracking.ws")],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(across.user_id, worker.id);
    assert!(across.connection_key.is_empty());
    let outcomes: Vec<_> = across
        .outcomes
        .iter()
        .map(|o| (o.account_code.as_str(), o.outcome.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("AG-01", "granted"),
            ("AG-02", "linked_and_granted"),
            ("AG-03", "linked_and_granted")
        ]
    );

    // Remove everything everywhere, in one call.
    let gone = chloe
        .grants
        .revoke_everywhere(pb::RevokeEverywhereRequest {
            user: Some(pb::UserSelector {
                by: Some(pb::user_selector::By::Id(worker.id.clone())),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gone.revoked, 3);
    let after = chloe
        .users
        .get_user(pb::GetUserRequest {
            by: Some(pb::get_user_request::By::Id(worker.id.clone())),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.status, pb::UserStatus::Deactivated as i32);
    // And a deactivated user cannot receive new grants.
    expect_code(
        chloe
            .grants
            .grant_rights(pb::GrantRightsRequest {
                account_code: "AG-01".into(),
                user_id: worker.id.clone(),
                rights: vec![right("tracking.ws")],
            })
            .await,
        Code::FailedPrecondition,
    );
}
