//! Decisions are never staler than the bound, whatever the change feed's
//! connection does: a frozen listening backend (a half-open connection, as
//! a middlebox leaves one) sends the replica to Postgres; and a cache fill
//! overtaken by a change never stays.

use std::time::{Duration, Instant};

use clef::pb;
use nix::{sys::signal, unistd::Pid};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::{common::*, health::health};

/// The health detail that says whether a replica answers from memory.
const FEED: &str = "clef.ChangeFeed";

/// The replicas' default staleness bound.
const BOUND: Duration = Duration::from_millis(100);

async fn wait_feed(app: &TestApp, want: ServingStatus) -> Duration {
    let start = Instant::now();
    while health(app, FEED).await != want as i32 {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the change feed health never became {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// The backends of the replicas' change listeners.
async fn listeners(app: &TestApp) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .fetch_all(app.store.pool())
    .await
    .unwrap()
}

fn signal_all(pids: &[i32], sig: signal::Signal) {
    for pid in pids {
        signal::kill(Pid::from_raw(*pid), sig).expect("signal a postgres backend");
    }
}

#[tokio::test]
async fn a_frozen_change_feed_never_serves_a_stale_allow() {
    use clef::embedded::{open, DataDir};
    // A Postgres of this test's own: its backends are frozen.
    let dir = crate::embedded::temp_dir("frozen-feed");
    let DataDir::Started(pg) = open(&dir, false).await.unwrap() else {
        panic!("fresh dir is ours")
    };
    let a = spawn_app_on(pg.connect_options()).await;
    let b = spawn_app_on(a.db_options.clone()).await;
    wait_feed(&b, ServingStatus::Serving).await;
    let mut ops = a.operator().await;
    let org = create_org(&mut ops.accounts, "Org").await;
    create_account(&mut ops.accounts, &org, "F1").await;
    let (u, key) = create_user(
        &mut ops,
        standard("Frida", "Frozen"),
        "F1",
        &[],
        vec![right("shipping.ws")],
    )
    .await
    .unwrap();
    let mut on_b = b.decider().await;
    // B caches an allow.
    for _ in 0..3 {
        assert!(
            check(&mut on_b, by_key(&key), "F1", "shipping.ws", 0)
                .await
                .allowed
        );
    }

    let frozen = listeners(&a).await;
    assert_eq!(frozen.len(), 2, "one listener per replica");
    signal_all(&frozen, signal::Signal::SIGSTOP);
    let result = async {
        // Revoke through A while both feeds are silent: nothing tells B.
        ops.grants
            .revoke_rights(pb::RevokeRightsRequest {
                account_code: "F1".into(),
                user_id: u.id.clone(),
                rights: vec!["shipping.ws".into()],
            })
            .await
            .unwrap();
        let revoked = Instant::now();
        // For 3 s, B answers: allowed is tolerated only within the bound of
        // the revoke's commit.
        let (mut stale, mut answers, mut degraded) = (0, 0u32, false);
        while revoked.elapsed() < Duration::from_secs(3) {
            let asked = Instant::now();
            let r = check(&mut on_b, by_key(&key), "F1", "shipping.ws", 0).await;
            answers += 1;
            if r.allowed && asked.duration_since(revoked) > BOUND {
                stale += 1;
            }
            // The detail of health says B is degraded while its feed is
            // silent (until it gives the connection up for a new one).
            if answers.is_multiple_of(20) {
                degraded |= health(&b, FEED).await == ServingStatus::NotServing as i32;
            }
        }
        (stale, answers, degraded)
    }
    .await;
    // Still frozen, B has given the silent connection up for a new one,
    // proven it, and serves from memory again.
    let reconnected = tokio::time::timeout(
        Duration::from_secs(3),
        wait_feed(&b, ServingStatus::Serving),
    )
    .await;
    signal_all(&frozen, signal::Signal::SIGCONT);
    assert!(reconnected.is_ok(), "B never replaced its frozen feed");
    let (stale, answers, degraded) = result;
    assert!(answers > 100, "only {answers} answers in 3 s");
    assert_eq!(
        stale, 0,
        "{stale} of {answers} answers allowed after the bound"
    );
    assert!(degraded, "health never said the change feed was silent");

    // Memory serves, and a change through A reaches B within the bound
    // without min_revision.
    wait_feed(&b, ServingStatus::Serving).await;
    ops.grants
        .grant_rights(pb::GrantRightsRequest {
            account_code: "F1".into(),
            user_id: u.id.clone(),
            rights: vec![right("shipping.ws")],
        })
        .await
        .unwrap();
    let granted = Instant::now();
    while !check(&mut on_b, by_key(&key), "F1", "shipping.ws", 0)
        .await
        .allowed
    {
        assert!(granted.elapsed() < BOUND, "B still denies after the bound");
    }
    drop((a, b));
    pg.stop().await.unwrap();
}

/// Whether `user` holds `right` on `account`, straight from the tables.
async fn holds(app: &TestApp, user: &str, account: &str, right: &str) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM grants g JOIN accounts a ON a.id = g.account_id
                         WHERE g.user_id = $1::uuid AND a.code = $2 AND g.right_code = $3)",
    )
    .bind(user)
    .bind(account)
    .bind(right)
    .fetch_one(app.store.pool())
    .await
    .unwrap()
}

/// Many Checks on one hot subject, on two replicas, while pairs of writes
/// hit it back to back. The window: the first write's notice drops the
/// subject on every replica, the checkers' cold loads start at once and
/// are in flight when the second write's notice arrives; a load that read
/// the state between the two writes must not stay cached. The subject is
/// linked to many accounts, so that a load takes long enough for the second
/// notice to overtake it.
#[tokio::test]
async fn cache_fills_overtaken_by_a_write_never_stay() {
    let a = spawn_app().await;
    let b = spawn_app_on(a.db_options.clone()).await;
    let mut ops = a.operator().await;
    let org = create_org(&mut ops.accounts, "Hot").await;
    let mut codes = Vec::new();
    for i in 0..250 {
        let code = format!("H{i:03}");
        create_account(&mut ops.accounts, &org, &code).await;
        codes.push(code);
    }
    let across = ops
        .grants
        .grant_across_accounts(pb::GrantAcrossAccountsRequest {
            account_codes: codes.clone(),
            rights: vec![right("tracking.ws"), right("shipping.ui")],
            user: Some(pb::UserSelector {
                by: Some(pb::user_selector::By::NewUser(pb::NewUserProfile {
                    last_name: "Hot".into(),
                    first_name: "Hélène".into(),
                    job_title: "Exploitante".into(),
                    email: "hot@example.com".into(),
                    phone: "0102030405".into(),
                    address_lines: vec!["1 place d'Armes".into()],
                    postal_code: "75001".into(),
                    city: "Paris".into(),
                    ..Default::default()
                })),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let active = a.activate(&across.invitation_token).await;
    let (user, key) = (across.user_id.clone(), active.connection_key.clone());
    assert!(!key.is_empty());

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut checkers = Vec::new();
    for i in 0..12 {
        let mut c = if i % 2 == 0 {
            a.decider().await
        } else {
            b.decider().await
        };
        let (stop, key, user) = (stop.clone(), key.clone(), user.clone());
        checkers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let subject = if n.is_multiple_of(2) {
                    by_key(&key)
                } else {
                    by_user(&user)
                };
                let right = if n.is_multiple_of(3) {
                    "shipping.ws"
                } else {
                    "tracking.ws"
                };
                check(&mut c, subject, "H000", right, 0).await;
                n += 1;
            }
            n
        }));
    }
    let mut on = [a.decider().await, b.decider().await];
    let toggle = |grant: bool, right_code: &str| {
        let (mut grants, user, right_code) =
            (ops.grants.clone(), user.clone(), right_code.to_owned());
        async move {
            if grant {
                grants
                    .grant_rights(pb::GrantRightsRequest {
                        account_code: "H000".into(),
                        user_id: user,
                        rights: vec![right(&right_code)],
                    })
                    .await
                    .map(|_| ())
            } else {
                grants
                    .revoke_rights(pb::RevokeRightsRequest {
                        account_code: "H000".into(),
                        user_id: user,
                        rights: vec![right_code.clone()],
                    })
                    .await
                    .map(|_| ())
            }
            .unwrap()
        }
    };
    let mut stale = Vec::new();
    for round in 0..40 {
        // Two writes back to back, each changing what a load would read.
        toggle(round % 2 == 0, "shipping.ws").await;
        toggle(round % 2 == 1, "tracking.ws").await;
        tokio::time::sleep(BOUND + Duration::from_millis(20)).await;
        for right in ["shipping.ws", "tracking.ws"] {
            let expected = holds(&a, &user, "H000", right).await;
            for (replica, c) in on.iter_mut().enumerate() {
                for subject in [by_key(&key), by_user(&user)] {
                    let got = check(c, subject, "H000", right, 0).await.allowed;
                    if got != expected {
                        stale.push((round, replica, right));
                    }
                }
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut asked = 0;
    for c in checkers {
        asked += c.await.unwrap();
    }
    assert!(asked > 1000, "only {asked} concurrent checks");
    assert!(
        stale.is_empty(),
        "stale cached decisions (round, replica, right): {stale:?}"
    );
}
