//! Roles: bundles of rights held as live references, granted and revoked
//! under the delegation rule, answered by decisions on every replica.

use std::time::{Duration, Instant};

use clef::pb;
use tonic::{service::interceptor::InterceptedService, transport::Channel, Code};

use crate::common::*;

type RoleClient = pb::role_service_client::RoleServiceClient<InterceptedService<Channel, Bearer>>;

async fn roles(app: &TestApp, key: &str) -> RoleClient {
    pb::role_service_client::RoleServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(key)),
    )
}

fn grant(account: &str, user: &str, role: &str) -> pb::GrantRoleRequest {
    pb::GrantRoleRequest {
        account_code: account.into(),
        user_id: user.into(),
        role: role.into(),
        expire_time: None,
    }
}

fn revoke(account: &str, user: &str, role: &str) -> pb::RevokeRoleRequest {
    pb::RevokeRoleRequest {
        account_code: account.into(),
        user_id: user.into(),
        role: role.into(),
    }
}

fn role_def(code: &str, kinds: &[&str], rights: &[(&str, pb::Scope)]) -> pb::DefineRoleRequest {
    pb::DefineRoleRequest {
        role: Some(pb::Role {
            code: code.into(),
            label_fr: format!("Rôle {code}"),
            label_en: format!("Role {code}"),
            kinds: kinds.iter().map(|k| k.to_string()).collect(),
            rights: rights
                .iter()
                .map(|(r, s)| pb::RoleRight {
                    right: r.to_string(),
                    scope: *s as i32,
                })
                .collect(),
            revision: 0,
        }),
    }
}

async fn role_grant_rows(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM role_grants")
        .fetch_one(app.store.pool())
        .await
        .unwrap()
}

/// IT (seed 002's "Informatique"): what the default role holds.
fn it_rights() -> Vec<pb::RightGrant> {
    vec![
        right("delivery.pickup_point_ws"),
        right("shipping.ws"),
        right("tracking.ws"),
        scoped("tracking.tool_cs", pb::Scope::Consolidated),
    ]
}

#[tokio::test]
async fn roles_follow_the_delegation_rule_and_revoke_only_what_they_gave() {
    let app = spawn_app().await;
    org_with_account(&app, "Org Roles", "RO1").await;
    org_with_account(&app, "Org Other", "RO2").await;
    let mut ops = app.operator().await;
    let (bob, bob_key) = create_user(&mut ops, standard("Bob", "Holder"), "RO1", &[], vec![])
        .await
        .unwrap();
    let mut decide = app.decider().await;

    // The default set is there, with its rights.
    let mut op_roles = roles(&app, &app.operator_key).await;
    let listed = op_roles
        .list_roles(pb::ListRolesRequest {})
        .await
        .unwrap()
        .into_inner()
        .roles;
    let codes: Vec<&str> = listed.iter().map(|r| r.code.as_str()).collect();
    assert_eq!(codes, ["accounting", "administration", "fleet", "it"]);
    let it = listed.iter().find(|r| r.code == "it").unwrap();
    assert_eq!(it.label_fr, "Informatique");
    assert_eq!(it.rights.len(), 4);

    // An admin lacking one right of the role (tracking.tool_cs) cannot grant
    // it: refused naming the role and the right, nothing granted.
    let (_, alice_key) = make_admin(
        &app,
        "RO1",
        "Alice",
        vec![
            right("delivery.pickup_point_ws"),
            right("shipping.ws"),
            right("tracking.ws"),
        ],
    )
    .await;
    let mut alice = roles(&app, &alice_key).await;
    let e = expect_code(
        alice.grant_role(grant("RO1", &bob.id, "it")).await,
        Code::PermissionDenied,
    );
    assert!(
        e.message().contains("role it") && e.message().contains("tracking.tool_cs"),
        "{}",
        e.message()
    );
    assert_eq!(role_grant_rows(&app).await, 0);
    // With a narrower scope than the role's, neither.
    let mut narrow = it_rights();
    narrow[3] = scoped("tracking.tool_cs", pb::Scope::UserTag);
    let (_, nina_key) = make_admin(&app, "RO1", "Nina", narrow).await;
    let e = expect_code(
        roles(&app, &nina_key)
            .await
            .grant_role(grant("RO1", &bob.id, "it"))
            .await,
        Code::PermissionDenied,
    );
    assert!(e.message().contains("consolidated"), "{}", e.message());
    // An admin of another account, holding everything there, neither.
    let (_, other_key) = make_admin(&app, "RO2", "Oscar", it_rights()).await;
    expect_code(
        roles(&app, &other_key)
            .await
            .grant_role(grant("RO1", &bob.id, "it"))
            .await,
        Code::PermissionDenied,
    );
    // A plain user neither; no key is unauthenticated.
    expect_code(
        roles(&app, &bob_key)
            .await
            .grant_role(grant("RO1", &bob.id, "it"))
            .await,
        Code::PermissionDenied,
    );
    let mut anon = pb::role_service_client::RoleServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(None),
    );
    expect_code(
        anon.list_roles(pb::ListRolesRequest {}).await,
        Code::Unauthenticated,
    );
    assert_eq!(role_grant_rows(&app).await, 0);

    // An admin holding every right of the role can: Bob's decisions follow,
    // and say the right came from a role.
    let (_, carol_key) = make_admin(&app, "RO1", "Carol", it_rights()).await;
    let mut carol = roles(&app, &carol_key).await;
    let g = carol
        .grant_role(grant("RO1", &bob.id, "it"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.role_grants.len(), 1);
    assert_eq!(g.role_grants[0].role, "it");
    let d = check(
        &mut decide,
        by_key(&bob_key),
        "RO1",
        "tracking.ws",
        g.revision,
    )
    .await;
    assert!(d.allowed && d.from_role, "{d:?}");
    let d = check(&mut decide, by_key(&bob_key), "RO1", "tracking.tool_cs", 0).await;
    assert_eq!(d.scope, pb::Scope::Consolidated as i32);
    let d = check(&mut decide, by_key(&bob_key), "RO1", "billing.invoices", 0).await;
    assert!(!d.allowed);

    // WhoAmI shows it to Bob.
    let me = app
        .client(&bob_key)
        .await
        .keys
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.accounts[0].role_grants.len(), 1, "{me:?}");
    assert_eq!(me.accounts[0].role_grants[0].role, "it");

    // ListGrants shows the role held.
    let listed = ops
        .grants
        .list_grants(pb::ListGrantsRequest {
            of: Some(pb::list_grants_request::Of::UserId(bob.id.clone())),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.grants.is_empty());
    assert_eq!(listed.role_grants.len(), 1);

    // A right also granted directly stays when the role goes.
    ops.grants
        .grant_rights(pb::GrantRightsRequest {
            account_code: "RO1".into(),
            user_id: bob.id.clone(),
            rights: vec![right("shipping.ws")],
        })
        .await
        .unwrap();
    let d = check(&mut decide, by_key(&bob_key), "RO1", "shipping.ws", 0).await;
    assert!(
        d.allowed && !d.from_role,
        "a direct grant answers first: {d:?}"
    );
    // Alice cannot revoke it either (same rule).
    expect_code(
        alice.revoke_role(revoke("RO1", &bob.id, "it")).await,
        Code::PermissionDenied,
    );
    let r = carol
        .revoke_role(revoke("RO1", &bob.id, "it"))
        .await
        .unwrap()
        .into_inner();
    assert!(r.revoked);
    let d = check(
        &mut decide,
        by_key(&bob_key),
        "RO1",
        "shipping.ws",
        r.revision,
    )
    .await;
    assert!(d.allowed && !d.from_role);
    let d = check(
        &mut decide,
        by_key(&bob_key),
        "RO1",
        "tracking.ws",
        r.revision,
    )
    .await;
    assert_eq!(d.reason, pb::DenialReason::NoGrant as i32);
    // Revoking again: nothing held.
    assert!(
        !carol
            .revoke_role(revoke("RO1", &bob.id, "it"))
            .await
            .unwrap()
            .into_inner()
            .revoked
    );

    // Kinds: accounting is for standard users; an advanced one is refused.
    let (dan, _) = create_user(
        &mut ops,
        advanced("Dan", "Advanced", "dan.roles@example.com"),
        "RO1",
        &[],
        vec![],
    )
    .await
    .unwrap();
    let e = expect_code(
        op_roles
            .grant_role(grant("RO1", &dan.id, "accounting"))
            .await,
        Code::InvalidArgument,
    );
    assert!(
        e.message().contains("advanced") || !violated_fields(&e).is_empty(),
        "{e:?}"
    );
    // A role he may hold: he is told its rights, as for direct grants.
    op_roles
        .grant_role(grant("RO1", &dan.id, "fleet"))
        .await
        .unwrap();
    let told: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT params -> 'rights' FROM outbox WHERE kind = 'rights_granted' AND user_id = $1::uuid",
    )
    .bind(&dan.id)
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(told[0].to_string().contains("shipping.ui"), "{told:?}");
    // Unknown role, unknown user, unlinked user.
    expect_code(
        op_roles.grant_role(grant("RO1", &bob.id, "nope")).await,
        Code::NotFound,
    );
    expect_code(
        op_roles.grant_role(grant("RO2", &bob.id, "it")).await,
        Code::NotFound,
    );
    let e = expect_code(
        op_roles.grant_role(grant("", "x", "")).await,
        Code::InvalidArgument,
    );
    let fields = violated_fields(&e);
    assert!(
        fields.contains(&"account_code".to_string()) && fields.contains(&"role".to_string()),
        "{fields:?}"
    );
    // A deactivated user receives no role.
    ops.users
        .deactivate_user(pb::DeactivateUserRequest { id: bob.id.clone() })
        .await
        .unwrap();
    expect_code(
        op_roles.grant_role(grant("RO1", &bob.id, "it")).await,
        Code::FailedPrecondition,
    );

    // The audit trail has the role's grant and revoke.
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE action IN ('role_granted', 'role_revoked') AND target_id = $1",
    )
    .bind(&bob.id)
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(n, 2);
}

#[tokio::test]
async fn a_role_that_gives_admin_users_administers_and_its_last_holder_keeps_it() {
    let app = spawn_app().await;
    org_with_account(&app, "Org Role Admin", "RA1").await;
    let mut ops = app.operator().await;
    let (frank, frank_key) = create_user(&mut ops, standard("Frank", "Chief"), "RA1", &[], vec![])
        .await
        .unwrap();
    let (gina, _) = create_user(&mut ops, standard("Gina", "Staff"), "RA1", &[], vec![])
        .await
        .unwrap();
    let mut op_roles = roles(&app, &app.operator_key).await;
    op_roles
        .grant_role(grant("RA1", &frank.id, "administration"))
        .await
        .unwrap();

    // Through the role, Frank administers RA1: he lists its grants and may
    // delegate admin.users (the role's one right).
    let mut f = app.client(&frank_key).await;
    f.grants
        .list_grants(pb::ListGrantsRequest {
            of: Some(pb::list_grants_request::Of::AccountCode("RA1".into())),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .expect("an admin through his role");
    let mut fr = roles(&app, &frank_key).await;
    // He is the last admin: he cannot give up his role.
    let e = expect_code(
        fr.revoke_role(revoke("RA1", &frank.id, "administration"))
            .await,
        Code::FailedPrecondition,
    );
    assert!(e.message().contains("RA1"), "{}", e.message());
    // Once Gina has it too, he can.
    fr.grant_role(grant("RA1", &gina.id, "administration"))
        .await
        .unwrap();
    fr.revoke_role(revoke("RA1", &frank.id, "administration"))
        .await
        .unwrap();
    // He no longer administers.
    expect_code(
        f.grants
            .list_grants(pb::ListGrantsRequest {
                of: Some(pb::list_grants_request::Of::AccountCode("RA1".into())),
                page_size: 10,
                page_token: String::new(),
            })
            .await,
        Code::PermissionDenied,
    );
    // Gina's rights come from her role: she may copy them to Frank for an
    // absence, as she would direct grants.
    let mut g = app.client(&app.operator_key).await;
    let copied = g
        .grants
        .copy_rights(pb::CopyRightsRequest {
            account_code: "RA1".into(),
            from_user_id: gina.id.clone(),
            to_user_id: frank.id.clone(),
            ..Default::default()
        })
        .await
        .expect("rights held through a role are copied")
        .into_inner();
    assert!(
        copied.grants.iter().any(|x| x.right == "admin.users"),
        "{copied:?}"
    );
    // The operator may take the last one.
    op_roles
        .revoke_role(revoke("RA1", &gina.id, "administration"))
        .await
        .unwrap();
}

#[tokio::test]
async fn defining_roles_is_for_operators_and_checked_against_the_catalog() {
    let app = spawn_app().await;
    org_with_account(&app, "Org Define", "RD1").await;
    let (_, admin_key) = make_admin(&app, "RD1", "Ada", vec![]).await;
    let def = role_def(
        "desk",
        &["standard", "advanced"],
        &[("tracking.ws", pb::Scope::Unspecified)],
    );
    expect_code(
        roles(&app, &admin_key).await.define_role(def.clone()).await,
        Code::PermissionDenied,
    );
    let mut op = roles(&app, &app.operator_key).await;
    let made = op.define_role(def).await.unwrap().into_inner();
    assert!(made.revision > 0);
    for (bad, field) in [
        (
            role_def(
                "Bad Code",
                &["standard"],
                &[("tracking.ws", pb::Scope::Unspecified)],
            ),
            "role.code",
        ),
        (
            role_def(
                "r",
                &["advanced"],
                &[("billing.invoices", pb::Scope::Unspecified)],
            ),
            "role.rights[0].right",
        ),
        (
            role_def(
                "r",
                &["standard"],
                &[("tracking.tool", pb::Scope::Unspecified)],
            ),
            "role.rights[0].scope",
        ),
        (
            role_def("r", &["standard"], &[("shipping.ws", pb::Scope::UserTag)]),
            "role.rights[0].scope",
        ),
        (
            role_def("r", &["robot"], &[("shipping.ws", pb::Scope::Unspecified)]),
            "role.kinds[0]",
        ),
        (role_def("r", &["standard"], &[]), "role.rights"),
    ] {
        let e = expect_code(op.define_role(bad).await, Code::InvalidArgument);
        assert!(
            violated_fields(&e).contains(&field.to_string()),
            "{field}: {e:?}"
        );
    }
    // Narrowing the kinds past a holder is refused; nothing changes.
    let mut ops = app.operator().await;
    let (adv, _) = create_user(
        &mut ops,
        advanced("Ann", "Desk", "ann.desk@example.com"),
        "RD1",
        &[],
        vec![],
    )
    .await
    .unwrap();
    op.grant_role(grant("RD1", &adv.id, "desk")).await.unwrap();
    let e = expect_code(
        op.define_role(role_def(
            "desk",
            &["standard"],
            &[("tracking.ws", pb::Scope::Unspecified)],
        ))
        .await,
        Code::FailedPrecondition,
    );
    assert!(e.message().contains("desk"), "{}", e.message());
}

#[tokio::test]
async fn editing_a_role_on_one_replica_changes_decisions_on_another() {
    let a = spawn_app().await;
    let b = spawn_app_on(a.db_options.clone()).await;
    org_with_account(&a, "Org Edit", "RE1").await;
    let mut ops = a.operator().await;
    let (u, key) = create_user(&mut ops, standard("Eli", "Edit"), "RE1", &[], vec![])
        .await
        .unwrap();
    let mut op_roles = roles(&a, &a.operator_key).await;
    op_roles
        .define_role(role_def(
            "desk",
            &["standard"],
            &[("tracking.ws", pb::Scope::Unspecified)],
        ))
        .await
        .unwrap();
    let g = op_roles
        .grant_role(grant("RE1", &u.id, "desk"))
        .await
        .unwrap()
        .into_inner();
    let mut on_b = b.decider().await;
    // B caches Eli's entitlements.
    for _ in 0..2 {
        assert!(
            check(&mut on_b, by_key(&key), "RE1", "tracking.ws", g.revision)
                .await
                .allowed
        );
        assert!(
            !check(&mut on_b, by_key(&key), "RE1", "shipping.ws", 0)
                .await
                .allowed
        );
    }

    // A new definition through A, read at once on B with min_revision.
    let edited = op_roles
        .define_role(role_def(
            "desk",
            &["standard"],
            &[("shipping.ws", pb::Scope::Unspecified)],
        ))
        .await
        .unwrap()
        .into_inner();
    let d = check(
        &mut on_b,
        by_key(&key),
        "RE1",
        "tracking.ws",
        edited.revision,
    )
    .await;
    assert!(!d.allowed && d.revision >= edited.revision, "{d:?}");
    let d = check(
        &mut on_b,
        by_key(&key),
        "RE1",
        "shipping.ws",
        edited.revision,
    )
    .await;
    assert!(d.allowed && d.from_role, "{d:?}");

    // Another, followed without min_revision: within the 100 ms bound.
    let edited = op_roles
        .define_role(role_def(
            "desk",
            &["standard"],
            &[("pickup.manage", pb::Scope::Unspecified)],
        ))
        .await
        .unwrap()
        .into_inner();
    let start = Instant::now();
    loop {
        let d = check(&mut on_b, by_key(&key), "RE1", "shipping.ws", 0).await;
        if !d.allowed {
            assert!(d.revision >= edited.revision);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_millis(100),
            "replica B still answers from the old definition after 100 ms"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    eprintln!(
        "a role's new definition reached replica B in {:?}",
        start.elapsed()
    );
    assert!(
        check(&mut on_b, by_key(&key), "RE1", "pickup.manage", 0)
            .await
            .allowed
    );
}
