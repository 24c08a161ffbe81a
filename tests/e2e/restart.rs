//! Postgres restarted under Check load: errors are UNAVAILABLE while it is
//! down, health flips, and decisions are right again once it is back,
//! without restarting clef.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use clef::{embedded, pb};
use tonic::Code;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

use crate::{common::*, embedded::temp_dir};

async fn serving(app: &TestApp) -> i32 {
    HealthClient::new(app.channel().await)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|r| r.into_inner().status)
        .unwrap_or(-1)
}

async fn wait_status(app: &TestApp, want: ServingStatus) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while serving(app).await != want as i32 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "health never became {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_survive_a_postgres_restart_under_load() {
    let dir = temp_dir("restart");
    let embedded::DataDir::Started(pg) = embedded::open(&dir, false).await.unwrap() else {
        panic!("fresh dir")
    };
    let app = spawn_app_on(pg.connect_options()).await;
    wait_status(&app, ServingStatus::Serving).await;
    let mut ops = app.operator().await;
    let org = create_org(&mut ops.accounts, "Org").await;
    create_account(&mut ops.accounts, &org, "PG1").await;
    let (u, key) = create_user(
        &mut ops,
        standard("Ray", "Restart"),
        "PG1",
        &[],
        vec![right("shipping.ws")],
    )
    .await
    .unwrap();
    let decider = app.decider().await;
    assert!(
        check(&mut decider.clone(), by_key(&key), "PG1", "shipping.ws", 0)
            .await
            .allowed
    );

    // Load: four loops of Checks, recording every outcome.
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes: Arc<Mutex<Vec<Result<bool, Code>>>> = Arc::default();
    let mut loops = Vec::new();
    for _ in 0..4 {
        let (stop, outcomes, mut d, key) =
            (stop.clone(), outcomes.clone(), decider.clone(), key.clone());
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let r = d
                    .check(pb::CheckRequest {
                        subject: by_key(&key),
                        account_code: "PG1".into(),
                        right: "shipping.ws".into(),
                        min_revision: 0,
                    })
                    .await;
                outcomes
                    .lock()
                    .unwrap()
                    .push(r.map(|r| r.into_inner().allowed).map_err(|s| s.code()));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    pg.stop().await.unwrap();
    wait_status(&app, ServingStatus::NotServing).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let embedded::DataDir::Started(pg) = embedded::open(&dir, false).await.unwrap() else {
        panic!("dir released")
    };
    wait_status(&app, ServingStatus::Serving).await;
    // Decisions come back by themselves.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let last = outcomes.lock().unwrap().last().cloned();
        if last == Some(Ok(true)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "decisions never recovered: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for l in loops {
        l.await.unwrap();
    }

    let outcomes = outcomes.lock().unwrap().clone();
    let errors: Vec<Code> = outcomes.iter().filter_map(|o| o.err()).collect();
    assert!(!errors.is_empty(), "the outage was never seen by a Check");
    assert!(
        errors.iter().all(|c| *c == Code::Unavailable),
        "errors other than UNAVAILABLE: {errors:?}"
    );
    assert!(
        outcomes.iter().all(|o| *o != Ok(false)),
        "a Check answered wrongly around the restart"
    );
    eprintln!(
        "{} checks: {} allowed, {} UNAVAILABLE",
        outcomes.len(),
        outcomes.len() - errors.len(),
        errors.len()
    );

    // Changes after the restart are reflected: the listener is back.
    ops.grants
        .revoke_rights(pb::RevokeRightsRequest {
            account_code: "PG1".into(),
            user_id: u.id.clone(),
            rights: vec!["shipping.ws".into()],
        })
        .await
        .unwrap();
    let mut d = decider.clone();
    assert!(
        !check(&mut d, by_key(&key), "PG1", "shipping.ws", 0)
            .await
            .allowed
    );
    drop(app);
    pg.stop().await.unwrap();
    std::fs::remove_dir_all(&dir).ok();
}
