//! Connection keys: regeneration (with and without overlap), revocation,
//! inactive users, and secrets kept out of the database and the logs.

use std::time::Duration;

use clef::pb;
use tonic::Code;

use crate::common::*;

async fn whoami(app: &TestApp, key: &str) -> Result<pb::WhoAmIResponse, tonic::Status> {
    app.client(key)
        .await
        .keys
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn regenerated_and_revoked_keys_stop_at_once_or_after_the_overlap() {
    let app = spawn_app_with_manual_clock().await;
    org_with_account(&app, "Org", "1000").await;
    let (_, admin_key) = make_admin(&app, "1000", "Ada", vec![]).await;
    let mut admin = app.client(&admin_key).await;
    let (u, k1) = create_user(&mut admin, standard("Ugo", "Key"), "1000", &[], vec![])
        .await
        .unwrap();
    assert_eq!(whoami(&app, &k1).await.unwrap().user.unwrap().id, u.id);

    // The user regenerates his own key: the old one is refused on the next call.
    let r = app
        .client(&k1)
        .await
        .keys
        .regenerate_connection_key(pb::RegenerateConnectionKeyRequest::default())
        .await
        .unwrap()
        .into_inner();
    let k2 = r.connection_key;
    assert!(r.revision > 0);
    assert!(k2.starts_with(&r.key.as_ref().unwrap().display_prefix));
    expect_code(whoami(&app, &k1).await, Code::Unauthenticated);
    assert_eq!(
        whoami(&app, &k2).await.unwrap().key.unwrap().id,
        r.key.unwrap().id
    );

    // With an overlap, the old key keeps working until the overlap ends.
    let k3 = app
        .client(&k2)
        .await
        .keys
        .regenerate_connection_key(pb::RegenerateConnectionKeyRequest {
            overlap_seconds: 60,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .connection_key;
    whoami(&app, &k2)
        .await
        .expect("old key still works during the overlap");
    whoami(&app, &k3).await.expect("new key works at once");
    // Decisions about the old key's holder agree: he is known by it.
    let mut d = app.decider().await;
    let as_subject = |r: pb::CheckResponse| pb::DenialReason::try_from(r.reason).unwrap();
    assert_eq!(
        as_subject(check(&mut d, by_key(&k2), "1000", "shipping.ws", 0).await),
        pb::DenialReason::NoGrant
    );
    app.advance(Duration::from_secs(59));
    whoami(&app, &k2)
        .await
        .expect("old key still works near the overlap's end");
    app.advance(Duration::from_secs(2));
    expect_code(whoami(&app, &k2).await, Code::Unauthenticated);
    assert_eq!(
        as_subject(check(&mut d, by_key(&k2), "1000", "shipping.ws", 0).await),
        pb::DenialReason::UnknownSubject
    );
    whoami(&app, &k3).await.unwrap();

    // An admin of the user's account regenerates it for him.
    let k4 = admin
        .keys
        .regenerate_connection_key(pb::RegenerateConnectionKeyRequest {
            user_id: u.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .connection_key;
    expect_code(whoami(&app, &k3).await, Code::Unauthenticated);

    // Listing shows metadata only.
    let keys = admin
        .keys
        .list_connection_keys(pb::ListConnectionKeysRequest {
            user_id: u.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(keys.len(), 4);
    assert!(keys[0].revoke_time.is_none(), "the newest key is live");
    assert!(keys[1..].iter().all(|k| k.revoke_time.is_some()));
    assert!(k4.starts_with(&keys[0].display_prefix));
    assert!(keys[0].display_prefix.len() < 20);

    // Revoking the live key: refused on the next call.
    app.client(&k4)
        .await
        .keys
        .revoke_connection_key(pb::RevokeConnectionKeyRequest {
            key_id: keys[0].id.clone(),
        })
        .await
        .unwrap();
    expect_code(whoami(&app, &k4).await, Code::Unauthenticated);

    // Out-of-range overlap.
    let s = expect_code(
        admin
            .keys
            .regenerate_connection_key(pb::RegenerateConnectionKeyRequest {
                user_id: u.id.clone(),
                overlap_seconds: -1,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&s), ["overlap_seconds"]);
}

#[tokio::test]
async fn deactivated_and_archived_users_keys_are_refused() {
    let app = spawn_app().await;
    org_with_account(&app, "Org", "2000").await;
    let (_, admin_key) = make_admin(&app, "2000", "Ada", vec![]).await;
    let mut admin = app.client(&admin_key).await;
    let (u, key) = create_user(&mut admin, standard("Dee", "Active"), "2000", &[], vec![])
        .await
        .unwrap();
    whoami(&app, &key).await.unwrap();

    let d = admin
        .users
        .deactivate_user(pb::DeactivateUserRequest { id: u.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.status, pb::UserStatus::Deactivated as i32);
    assert!(d.revision > u.revision);
    expect_code(whoami(&app, &key).await, Code::Unauthenticated);
    expect_code(
        admin
            .keys
            .regenerate_connection_key(pb::RegenerateConnectionKeyRequest {
                user_id: u.id.clone(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
    );
    expect_code(
        admin
            .users
            .deactivate_user(pb::DeactivateUserRequest { id: u.id.clone() })
            .await,
        Code::FailedPrecondition,
    );

    admin
        .users
        .reactivate_user(pb::ReactivateUserRequest { id: u.id.clone() })
        .await
        .unwrap();
    whoami(&app, &key)
        .await
        .expect("reactivated: his key works again");

    admin
        .users
        .archive_user(pb::ArchiveUserRequest { id: u.id.clone() })
        .await
        .unwrap();
    expect_code(whoami(&app, &key).await, Code::Unauthenticated);
    expect_code(
        admin
            .users
            .reactivate_user(pb::ReactivateUserRequest { id: u.id.clone() })
            .await,
        Code::FailedPrecondition,
    );

    // Mass deactivation: all or none.
    let (x, kx) = create_user(&mut admin, standard("Xa", "Mass"), "2000", &[], vec![])
        .await
        .unwrap();
    let (y, ky) = create_user(&mut admin, standard("Ya", "Mass"), "2000", &[], vec![])
        .await
        .unwrap();
    expect_code(
        admin
            .users
            .deactivate_users(pb::DeactivateUsersRequest {
                team: None,
                user_ids: vec![x.id.clone(), u.id.clone()],
            })
            .await,
        Code::FailedPrecondition,
    );
    whoami(&app, &kx).await.expect("nothing was deactivated");
    let done = admin
        .users
        .deactivate_users(pb::DeactivateUsersRequest {
            team: None,
            user_ids: vec![x.id.clone(), y.id.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.users.len(), 2);
    for k in [&kx, &ky] {
        expect_code(whoami(&app, k).await, Code::Unauthenticated);
    }
    // An admin cannot deactivate himself.
    let me = whoami(&app, &admin_key).await.unwrap().user.unwrap();
    expect_code(
        admin
            .users
            .deactivate_user(pb::DeactivateUserRequest { id: me.id })
            .await,
        Code::FailedPrecondition,
    );
}

#[tokio::test]
async fn issued_secrets_are_nowhere_in_the_database() {
    let app = spawn_app().await;
    org_with_account(&app, "Org", "3000").await;
    let (_, admin_key) = make_admin(&app, "3000", "Ada", vec![]).await;
    let mut admin = app.client(&admin_key).await;
    let (u, k1) = create_user(
        &mut admin,
        advanced("Sue", "Secret", "sue@example.com"),
        "3000",
        &[],
        vec![],
    )
    .await
    .unwrap();
    let k2 = admin
        .keys
        .regenerate_connection_key(pb::RegenerateConnectionKeyRequest {
            user_id: u.id,
            overlap_seconds: 60,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .connection_key;
    let everything: Vec<String> = sqlx::query_scalar(
        "SELECT string_agg(t::text, ' ') FROM (
            SELECT row_to_json(x)::text AS t FROM users x UNION ALL
            SELECT row_to_json(x)::text FROM connection_keys x UNION ALL
            SELECT encode(secret_hash, 'escape') FROM connection_keys UNION ALL
            SELECT row_to_json(x)::text FROM audit_events x UNION ALL
            SELECT row_to_json(x)::text FROM links x UNION ALL
            SELECT row_to_json(x)::text FROM grants x) all_rows",
    )
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    let dump = everything.join(" ");
    assert!(dump.contains("sue@example.com"), "the dump holds the data");
    for secret in [&app.operator_key, &admin_key, &k1, &k2] {
        let hidden = &secret[clef::domain::key::DISPLAY_PREFIX_LEN..];
        assert!(!dump.contains(hidden), "a secret is stored in clear");
    }
}
