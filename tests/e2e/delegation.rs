//! The delegation rule and tenant isolation: every refusal below must leave
//! the database exactly as it was.

use clef::pb::{self, Scope};
use tonic::Code;
use tonic_types::StatusExt;

use crate::common::*;

fn by_id(id: &str) -> Option<pb::get_user_request::By> {
    Some(pb::get_user_request::By::Id(id.into()))
}

fn select_id(id: &str) -> Option<pb::UserSelector> {
    Some(pb::UserSelector {
        by: Some(pb::user_selector::By::Id(id.into())),
    })
}

#[tokio::test]
async fn admins_cannot_exceed_their_rights_or_leave_their_tenant() {
    let app = spawn_app().await;
    org_with_account(&app, "A", "900138").await;
    org_with_account(&app, "B", "850061").await;
    let (_, key_a) = make_admin(
        &app,
        "900138",
        "Alice",
        vec![
            right("shipping.ws"),
            scoped("tracking.tool", Scope::UserTag),
        ],
    )
    .await;
    let (_, key_b) = make_admin(&app, "850061", "Bruno", vec![right("shipping.ws")]).await;
    let mut a = app.client(&key_a).await;
    let mut b = app.client(&key_b).await;
    let mut ops = app.operator().await;

    let (ua, ua_key) = create_user(&mut a, standard("Ugo", "Aubert"), "900138", &[], vec![])
        .await
        .unwrap();
    let (ub, _) = create_user(&mut b, standard("Ulla", "Bech"), "850061", &[], vec![])
        .await
        .unwrap();
    let (uv, _) = create_user(
        &mut a,
        advanced("Vera", "Vidal", "vera@example.com"),
        "900138",
        &[],
        vec![],
    )
    .await
    .unwrap();
    // B links V too: V now works for both tenants.
    b.links
        .link_user(pb::LinkUserRequest {
            account_code: "850061".into(),
            user_key: uv.user_key.clone(),
            tags: vec![],
            rights: vec![],
        })
        .await
        .unwrap();
    // Positive controls: what A holds, A may give, at the same scope.
    a.grants
        .grant_rights(pb::GrantRightsRequest {
            account_code: "900138".into(),
            user_id: ua.id.clone(),
            rights: vec![
                right("shipping.ws"),
                scoped("tracking.tool", Scope::UserTag),
            ],
        })
        .await
        .expect("A delegates what he holds");
    // A right A lacks, held by UA through the operator.
    ops.grants
        .grant_rights(pb::GrantRightsRequest {
            account_code: "900138".into(),
            user_id: ua.id.clone(),
            rights: vec![right("tracking.ws")],
        })
        .await
        .unwrap();

    let service = app.service_key("tracker").await;
    let before = snapshot(&app).await;

    // A right he lacks.
    let s = expect_code(
        a.grants
            .grant_rights(pb::GrantRightsRequest {
                account_code: "900138".into(),
                user_id: ua.id.clone(),
                rights: vec![right("delivery.pickup_point_ws")],
            })
            .await,
        Code::PermissionDenied,
    );
    assert!(
        s.message().contains("delivery.pickup_point_ws"),
        "{}",
        s.message()
    );
    // A wider scope than his.
    let s = expect_code(
        a.grants
            .grant_rights(pb::GrantRightsRequest {
                account_code: "900138".into(),
                user_id: ua.id.clone(),
                rights: vec![scoped("tracking.tool", Scope::Consolidated)],
            })
            .await,
        Code::PermissionDenied,
    );
    assert!(
        s.message().contains("tracking.tool") && s.message().contains("consolidated"),
        "{}",
        s.message()
    );
    // Another scope, not narrower.
    expect_code(
        a.grants
            .grant_rights(pb::GrantRightsRequest {
                account_code: "900138".into(),
                user_id: ua.id.clone(),
                rights: vec![scoped("tracking.tool", Scope::UserKey)],
            })
            .await,
        Code::PermissionDenied,
    );
    // Revoking or replacing a right he does not hold.
    let s = expect_code(
        a.grants
            .revoke_rights(pb::RevokeRightsRequest {
                account_code: "900138".into(),
                user_id: ua.id.clone(),
                rights: vec!["tracking.ws".into()],
            })
            .await,
        Code::PermissionDenied,
    );
    assert!(s.message().contains("tracking.ws"));
    expect_code(
        a.grants
            .set_rights(pb::SetRightsRequest {
                account_code: "900138".into(),
                user_id: ua.id.clone(),
                rights: vec![right("shipping.ws")],
            })
            .await,
        Code::PermissionDenied,
    );
    // Creating a user with a right he lacks.
    expect_code(
        create_user(
            &mut a,
            standard("Nouveau", "Venu"),
            "900138",
            &[],
            vec![right("billing.invoices")],
        )
        .await,
        Code::PermissionDenied,
    );
    // Anything on account B.
    let s = expect_code(
        a.grants
            .grant_rights(pb::GrantRightsRequest {
                account_code: "850061".into(),
                user_id: ub.id.clone(),
                rights: vec![right("shipping.ws")],
            })
            .await,
        Code::PermissionDenied,
    );
    assert!(s.message().contains("admin.users"), "{}", s.message());
    expect_code(
        create_user(&mut a, standard("Intrus", "Dehors"), "850061", &[], vec![]).await,
        Code::PermissionDenied,
    );
    // Across accounts including one he does not administer: nothing anywhere.
    let s = expect_code(
        a.grants
            .grant_across_accounts(pb::GrantAcrossAccountsRequest {
                user: select_id(&uv.id),
                account_codes: vec!["900138".into(), "850061".into()],
                rights: vec![right("shipping.ws")],
            })
            .await,
        Code::PermissionDenied,
    );
    let failures = s
        .get_error_details()
        .precondition_failure()
        .cloned()
        .expect("per-account details");
    let subjects: Vec<_> = failures
        .violations
        .iter()
        .map(|v| v.subject.as_str())
        .collect();
    assert_eq!(subjects, ["850061"]);
    // Reading B's users.
    expect_code(
        a.users
            .get_user(pb::GetUserRequest { by: by_id(&ub.id) })
            .await,
        Code::NotFound,
    );
    expect_code(
        a.users
            .list_users(pb::ListUsersRequest {
                account_code: "850061".into(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        a.links
            .list_links(pb::ListLinksRequest {
                of: Some(pb::list_links_request::Of::AccountCode("850061".into())),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        a.grants
            .list_grants(pb::ListGrantsRequest {
                of: Some(pb::list_grants_request::Of::UserId(ub.id.clone())),
                ..Default::default()
            })
            .await,
        Code::NotFound,
    );
    // Updating, deactivating, re-keying B's users.
    expect_code(
        a.users
            .update_user(pb::UpdateUserRequest {
                user: Some(pb::User {
                    id: ub.id.clone(),
                    last_name: "Pirate".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["last_name".into()],
                }),
            })
            .await,
        Code::NotFound,
    );
    expect_code(
        a.users
            .deactivate_user(pb::DeactivateUserRequest { id: ub.id.clone() })
            .await,
        Code::NotFound,
    );
    expect_code(
        a.users
            .deactivate_users(pb::DeactivateUsersRequest {
                user_ids: vec![ua.id.clone(), ub.id.clone()],
            })
            .await,
        Code::NotFound,
    );
    expect_code(
        a.grants
            .revoke_everywhere(pb::RevokeEverywhereRequest {
                user: select_id(&ub.id),
            })
            .await,
        Code::NotFound,
    );
    expect_code(
        a.keys
            .regenerate_connection_key(pb::RegenerateConnectionKeyRequest {
                user_id: ub.id.clone(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
    );
    // Unlinking B's link of V, and V's status (he also works for B).
    expect_code(
        a.links
            .unlink_user(pb::UnlinkUserRequest {
                account_code: "850061".into(),
                user_id: uv.id.clone(),
            })
            .await,
        Code::PermissionDenied,
    );
    let s = expect_code(
        a.users
            .deactivate_user(pb::DeactivateUserRequest { id: uv.id.clone() })
            .await,
        Code::PermissionDenied,
    );
    assert!(s.message().contains("850061"), "{}", s.message());
    expect_code(
        a.grants
            .revoke_everywhere(pb::RevokeEverywhereRequest {
                user: select_id(&uv.id),
            })
            .await,
        Code::PermissionDenied,
    );
    // A plain user administers nothing.
    let mut plain = app.client(&ua_key).await;
    expect_code(
        plain
            .users
            .list_users(pb::ListUsersRequest {
                account_code: "900138".into(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        create_user(&mut plain, standard("Ami", "Copain"), "900138", &[], vec![]).await,
        Code::PermissionDenied,
    );
    expect_code(
        plain
            .links
            .lookup_user_key(pb::LookupUserKeyRequest {
                user_key: uv.user_key.clone(),
            })
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        plain
            .grants
            .define_right(pb::DefineRightRequest {
                right: Some(pb::Right {
                    code: "x.y".into(),
                    category: "c".into(),
                    label_fr: "l".into(),
                    label_en: "l".into(),
                    kinds: vec!["standard".into()],
                    scoped: false,
                }),
            })
            .await,
        Code::PermissionDenied,
    );
    // A service principal is no admin either.
    let mut svc = app.client(&service).await;
    expect_code(
        create_user(&mut svc, standard("Bot", "Robot"), "900138", &[], vec![]).await,
        Code::PermissionDenied,
    );

    assert_eq!(
        snapshot(&app).await,
        before,
        "a refused call changed the database"
    );

    // The standard user's home link cannot be removed.
    expect_code(
        a.links
            .unlink_user(pb::UnlinkUserRequest {
                account_code: "900138".into(),
                user_id: ua.id.clone(),
            })
            .await,
        Code::FailedPrecondition,
    );
}
