//! Two replicas on one Postgres: changes made through one are reflected by
//! the other within 100 ms, and at once for a caller passing the write's
//! revision (the "new enemy" case).

use std::time::{Duration, Instant};

use clef::pb;

use crate::common::*;

#[tokio::test]
async fn changes_propagate_between_replicas() {
    let a = spawn_app().await;
    let b = spawn_app_on(a.db_options.clone()).await;
    let mut ops = a.operator().await;
    let org = create_org(&mut ops.accounts, "Org").await;
    create_account(&mut ops.accounts, &org, "R1").await;
    let (u, key) = create_user(
        &mut ops,
        standard("Rita", "Replica"),
        "R1",
        &[],
        vec![right("shipping.ws")],
    )
    .await
    .unwrap();
    let mut on_b = b.decider().await;
    // B caches an "allowed".
    assert!(
        check(&mut on_b, by_key(&key), "R1", "shipping.ws", 0)
            .await
            .allowed
    );
    assert!(
        check(&mut on_b, by_key(&key), "R1", "shipping.ws", 0)
            .await
            .allowed
    );

    // Revoke through A: B denies within 100 ms without min_revision.
    let revoked = ops
        .grants
        .revoke_rights(pb::RevokeRightsRequest {
            account_code: "R1".into(),
            user_id: u.id.clone(),
            rights: vec!["shipping.ws".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let start = Instant::now();
    loop {
        let r = check(&mut on_b, by_key(&key), "R1", "shipping.ws", 0).await;
        if !r.allowed {
            assert!(r.revision >= revoked.revision);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_millis(100),
            "replica B still allows after 100 ms"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let propagation = start.elapsed();
    eprintln!("revoke reached replica B in {propagation:?}");

    // Grant again and deactivate/regenerate through A: same for each.
    let granted = ops
        .grants
        .grant_rights(pb::GrantRightsRequest {
            account_code: "R1".into(),
            user_id: u.id.clone(),
            rights: vec![right("shipping.ws")],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        check(
            &mut on_b,
            by_key(&key),
            "R1",
            "shipping.ws",
            granted.revision
        )
        .await
        .allowed
    );
    let new_key = ops
        .keys
        .regenerate_connection_key(pb::RegenerateConnectionKeyRequest {
            user_id: u.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let r = check(
        &mut on_b,
        by_key(&key),
        "R1",
        "shipping.ws",
        new_key.revision,
    )
    .await;
    assert!(
        !r.allowed,
        "the old key is refused at once with min_revision"
    );
    assert!(
        check(
            &mut on_b,
            by_key(&new_key.connection_key),
            "R1",
            "shipping.ws",
            new_key.revision
        )
        .await
        .allowed
    );
}

#[tokio::test]
async fn the_new_enemy_is_never_allowed() {
    let a = spawn_app().await;
    let b = spawn_app_on(a.db_options.clone()).await;
    let mut ops = a.operator().await;
    let org = create_org(&mut ops.accounts, "Org").await;
    create_account(&mut ops.accounts, &org, "E1").await;
    let (u, key) = create_user(&mut ops, standard("Eve", "Enemy"), "E1", &[], vec![])
        .await
        .unwrap();
    let mut on_b = b.decider().await;
    for round in 0..25 {
        let g = ops
            .grants
            .grant_rights(pb::GrantRightsRequest {
                account_code: "E1".into(),
                user_id: u.id.clone(),
                rights: vec![right("tracking.ws")],
            })
            .await
            .unwrap()
            .into_inner();
        // Warm B's cache with the grant.
        assert!(
            check(&mut on_b, by_key(&key), "E1", "tracking.ws", g.revision)
                .await
                .allowed,
            "round {round}"
        );
        let r = ops
            .grants
            .revoke_rights(pb::RevokeRightsRequest {
                account_code: "E1".into(),
                user_id: u.id.clone(),
                rights: vec!["tracking.ws".into()],
            })
            .await
            .unwrap()
            .into_inner();
        // The very next request, carrying the revoke's revision, on the other
        // replica: never allowed.
        let d = check(&mut on_b, by_key(&key), "E1", "tracking.ws", r.revision).await;
        assert!(
            !d.allowed,
            "round {round}: revoked right allowed on replica B"
        );
        assert!(d.revision >= r.revision);
    }
}

/// The propagation figures of `bench/propagation.sh` (not a timed test: run
/// on demand, `--run-ignored only`): alternate grants and revokes through
/// replica A, each timed from the write's answer until replica B, asked
/// without `min_revision`, reflects it.
#[tokio::test]
#[ignore = "a benchmark: bench/propagation.sh"]
async fn propagation_figures() {
    let a = spawn_app().await;
    let b = spawn_app_on(a.db_options.clone()).await;
    let mut ops = a.operator().await;
    let org = create_org(&mut ops.accounts, "Org").await;
    create_account(&mut ops.accounts, &org, "P1").await;
    let (u, key) = create_user(&mut ops, standard("Paul", "Prop"), "P1", &[], vec![])
        .await
        .unwrap();
    let mut on_b = b.decider().await;
    let mut took = Vec::new();
    for round in 0..400 {
        let grant = round % 2 == 0;
        if grant {
            ops.grants
                .grant_rights(pb::GrantRightsRequest {
                    account_code: "P1".into(),
                    user_id: u.id.clone(),
                    rights: vec![right("tracking.ws")],
                })
                .await
                .unwrap();
        } else {
            ops.grants
                .revoke_rights(pb::RevokeRightsRequest {
                    account_code: "P1".into(),
                    user_id: u.id.clone(),
                    rights: vec!["tracking.ws".into()],
                })
                .await
                .unwrap();
        }
        let start = Instant::now();
        while check(&mut on_b, by_key(&key), "P1", "tracking.ws", 0)
            .await
            .allowed
            != grant
        {
            assert!(start.elapsed() < Duration::from_secs(1), "never propagated");
        }
        took.push(start.elapsed());
    }
    took.sort();
    let at = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)];
    println!(
        "propagation A -> B over {} changes: p50 {:?}, p99 {:?}, max {:?}",
        took.len(),
        at(0.50),
        at(0.99),
        took[took.len() - 1]
    );
}
