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
