//! The last active admin of an account keeps admin.users whatever path
//! would take it (the rule is checked by Postgres at commit), unless an
//! operator does it; with another admin, or by an operator, it goes.

use clef::pb;
use tonic::Code;

use crate::common::*;

fn revoke(account: &str, user: &str) -> pb::RevokeRightsRequest {
    pb::RevokeRightsRequest {
        account_code: account.into(),
        user_id: user.into(),
        rights: vec!["admin.users".into()],
    }
}

#[tokio::test]
async fn the_last_admin_keeps_admin_users_on_every_path_but_an_operators() {
    let app = spawn_app().await;
    org_with_account(&app, "Org LA", "LA1").await;
    let (alice, key) = make_admin(&app, "LA1", "Alice", vec![right("shipping.ws")]).await;
    let mut a = app.client(&key).await;
    let before = snapshot(&app).await;
    let named = |s: tonic::Status| {
        assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
        assert!(s.message().contains("LA1"), "{}", s.message());
    };

    // Revoke, set: refused, nothing changed.
    named(
        a.grants
            .revoke_rights(revoke("LA1", &alice.id))
            .await
            .unwrap_err(),
    );
    let set = a
        .grants
        .set_rights(pb::SetRightsRequest {
            account_code: "LA1".into(),
            user_id: alice.id.clone(),
            rights: vec![right("shipping.ws")],
        })
        .await;
    named(set.unwrap_err());
    // An import's "non" on admin.users for her own line.
    let file = "NOM;PRENOM;IDENTIFIANT;TYPE;admin.users\nAdmin;Alice;alice.admin;standard;non\n";
    let run = crate::import::import(
        &app,
        &key,
        crate::import::opts("LA1"),
        file.as_bytes(),
        1 << 16,
    )
    .await;
    let e = run.error.expect("the batch is refused");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("LA1"), "{}", e.message());
    assert_eq!(snapshot(&app).await, before, "nothing changed");

    // A set that keeps admin.users is fine.
    a.grants
        .set_rights(pb::SetRightsRequest {
            account_code: "LA1".into(),
            user_id: alice.id.clone(),
            rights: vec![right("admin.users")],
        })
        .await
        .expect("keeps admin.users");

    // With a second admin, she may give it up.
    let (bob, bob_key) = make_admin(&app, "LA1", "Bob", vec![]).await;
    a.grants
        .revoke_rights(revoke("LA1", &alice.id))
        .await
        .expect("another admin remains");
    // Bob is now the last: he cannot give it up, nor unlink... but the
    // operator may take it.
    let mut b = app.client(&bob_key).await;
    named(
        b.grants
            .revoke_rights(revoke("LA1", &bob.id))
            .await
            .unwrap_err(),
    );
    let mut ops = app.operator().await;
    ops.grants
        .revoke_rights(revoke("LA1", &bob.id))
        .await
        .expect("an operator may");
}

#[tokio::test]
async fn an_advanced_last_admin_is_not_unlinked() {
    let app = spawn_app().await;
    org_with_account(&app, "Org LB", "LB1").await;
    let mut ops = app.operator().await;
    let (zoe, zoe_key) = create_user(
        &mut ops,
        advanced("Zoé", "Admin", "zoe.admin@lb.example"),
        "LB1",
        &[],
        vec![right("admin.users")],
    )
    .await
    .unwrap();
    let mut z = app.client(&zoe_key).await;
    let r = z
        .links
        .unlink_user(pb::UnlinkUserRequest {
            account_code: "LB1".into(),
            user_id: zoe.id.clone(),
        })
        .await;
    let s = r.unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    assert!(s.message().contains("LB1"), "{}", s.message());
    // An operator may deactivate her: the account is left without admin.
    let done = ops
        .users
        .deactivate_user(pb::DeactivateUserRequest { id: zoe.id.clone() })
        .await;
    done.expect("an operator may");
}

fn copy(
    account: &str,
    from: &str,
    to: &str,
    until: Option<prost_types::Timestamp>,
) -> pb::CopyRightsRequest {
    pb::CopyRightsRequest {
        account_code: account.into(),
        from_user_id: from.into(),
        to_user_id: to.into(),
        expire_time: until,
    }
}

#[tokio::test]
async fn an_admin_copies_his_rights_to_a_colleague_for_his_absence() {
    let app = spawn_app_with_manual_clock().await;
    org_with_account(&app, "Org CP", "CP1").await;
    let (alice, key) = make_admin(
        &app,
        "CP1",
        "Alice",
        vec![
            right("shipping.ws"),
            scoped("tracking.tool", pb::Scope::UserTag),
        ],
    )
    .await;
    let mut a = app.client(&key).await;
    let (colleague, colleague_key) =
        create_user(&mut a, standard("Col", "Legue"), "CP1", &[], vec![])
            .await
            .unwrap();
    let until = chrono::Utc::now() + chrono::Duration::days(14);
    let done = a
        .grants
        .copy_rights(copy(
            "CP1",
            &alice.id,
            &colleague.id,
            Some(prost_types::Timestamp {
                seconds: until.timestamp(),
                nanos: 0,
            }),
        ))
        .await
        .expect("copy")
        .into_inner();
    let mut got: Vec<(String, i32)> = done
        .grants
        .iter()
        .map(|g| (g.right.clone(), g.scope))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("admin.users".to_owned(), 0),
            ("shipping.ws".to_owned(), 0),
            ("tracking.tool".to_owned(), pb::Scope::UserTag as i32)
        ]
    );
    assert!(done
        .grants
        .iter()
        .all(|g| g.expire_time.as_ref().map(|t| t.seconds) == Some(until.timestamp())));
    let mut d = app.decider().await;
    let r = check(
        &mut d,
        by_key(&colleague_key),
        "CP1",
        "shipping.ws",
        done.revision,
    )
    .await;
    assert!(r.allowed, "{r:?}");
    // Back from holiday: the copies end by themselves, nothing written.
    app.advance(std::time::Duration::from_secs(15 * 24 * 3600));
    let r = check(&mut d, by_key(&colleague_key), "CP1", "shipping.ws", 0).await;
    assert!(!r.allowed);

    // Only what the actor may delegate: Bob (admin, shipping.ws only)
    // cannot copy Alice's tracking.tool; nothing is granted.
    let (_, bob_key) = make_admin(&app, "CP1", "Bob", vec![right("shipping.ws")]).await;
    let mut b = app.client(&bob_key).await;
    let (other, _) = create_user(&mut b, standard("Oth", "Er"), "CP1", &[], vec![])
        .await
        .unwrap();
    let before = snapshot(&app).await;
    let refused = b
        .grants
        .copy_rights(copy("CP1", &alice.id, &other.id, None))
        .await;
    let s = expect_code(refused, Code::PermissionDenied);
    assert!(s.message().contains("tracking.tool"), "{}", s.message());
    assert_eq!(snapshot(&app).await, before);
    // Another tenant's admin sees neither user.
    org_with_account(&app, "Org CQ", "CQ1").await;
    let (_, q_key) = make_admin(&app, "CQ1", "Quinn", vec![]).await;
    let mut q = app.client(&q_key).await;
    let r = q
        .grants
        .copy_rights(copy("CP1", &alice.id, &other.id, None))
        .await;
    expect_code(r, Code::PermissionDenied);
}

#[tokio::test]
async fn an_admin_whose_grant_expired_on_the_stores_clock_does_not_count() {
    let app = spawn_app_with_manual_clock().await;
    org_with_account(&app, "Org LE", "LE1").await;
    let (alice, key) = make_admin(&app, "LE1", "Alice", vec![]).await;
    let soon = chrono::Utc::now() + chrono::Duration::hours(1);
    let mut ops = app.operator().await;
    create_user(
        &mut ops,
        standard("Bob", "Temp"),
        "LE1",
        &[],
        vec![pb::RightGrant {
            right: "admin.users".into(),
            scope: 0,
            expire_time: Some(prost_types::Timestamp {
                seconds: soon.timestamp(),
                nanos: 0,
            }),
        }],
    )
    .await
    .unwrap();
    // Bob's admin.users has expired by the server's clock, not by the wall's.
    app.advance(std::time::Duration::from_secs(2 * 3600));
    let mut a = app.client(&key).await;
    let s = a
        .grants
        .revoke_rights(revoke("LE1", &alice.id))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    assert!(s.message().contains("LE1"), "{}", s.message());
}
