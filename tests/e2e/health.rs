//! Health follows Postgres: NOT_SERVING and UNAVAILABLE while it is down,
//! back to SERVING by itself when it returns, with no restart of clef.

use std::time::Duration;

use clef::{embedded, pb};
use tonic::Code;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

use crate::{common::*, embedded::temp_dir};

pub(crate) async fn health(app: &TestApp, service: &str) -> i32 {
    HealthClient::new(app.channel().await)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

pub(crate) async fn wait_health(app: &TestApp, want: ServingStatus) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while health(app, "").await != want as i32 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "health never became {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn health_and_errors_follow_postgres_down_and_back() {
    let dir = temp_dir("health");
    let embedded::DataDir::Started(pg) = embedded::open(&dir, false).await.unwrap() else {
        panic!("fresh dir is ours")
    };
    let app = spawn_app_on(pg.connect_options()).await;
    wait_health(&app, ServingStatus::Serving).await;
    assert_eq!(
        health(&app, "clef.v1.AccountService").await,
        ServingStatus::Serving as i32
    );
    let mut c = app.operator_accounts().await;
    let org = create_org(&mut c, "Before").await;

    pg.stop().await.unwrap();
    wait_health(&app, ServingStatus::NotServing).await;
    assert_eq!(
        health(&app, "clef.v1.AccountService").await,
        ServingStatus::NotServing as i32
    );
    expect_code(
        c.list_accounts(pb::ListAccountsRequest::default()).await,
        Code::Unavailable,
    );
    expect_code(
        c.create_organization(pb::CreateOrganizationRequest {
            display_name: "During".into(),
            request_id: String::new(),
        })
        .await,
        Code::Unavailable,
    );
    // Bulk calls too: refused at once, nothing half done.
    let import = |code: &str| {
        let file = "NOM,PRENOM,IDENTIFIANT,TYPE\nDown,Zoé,down,standard\n";
        let msgs = vec![
            pb::ImportUsersRequest {
                msg: Some(pb::import_users_request::Msg::Options(pb::ImportOptions {
                    account_code: code.into(),
                    mode: pb::ImportMode::Add as i32,
                    ..Default::default()
                })),
            },
            pb::ImportUsersRequest {
                msg: Some(pb::import_users_request::Msg::Chunk(
                    file.as_bytes().to_vec(),
                )),
            },
        ];
        let (app, key) = (&app, app.operator_key.clone());
        async move {
            let mut c = pb::import_service_client::ImportServiceClient::with_interceptor(
                app.channel().await,
                Bearer::new(Some(&key)),
            );
            let mut s = c.import_users(tokio_stream::iter(msgs)).await?.into_inner();
            let mut last = None;
            while let Some(m) = s.message().await? {
                last = m.summary.or(last);
            }
            Ok::<_, tonic::Status>(last)
        }
    };
    expect_code(import("DOWN").await, Code::Unavailable);
    let mut export = pb::export_service_client::ExportServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(&app.operator_key)),
    );
    expect_code(
        export
            .export_users(pb::ExportUsersRequest {
                team: None,
                of: Some(pb::export_users_request::Of::OrganizationId(org.clone())),
                dialect: 0,
            })
            .await,
        Code::Unavailable,
    );

    let embedded::DataDir::Started(pg) = embedded::open(&dir, false).await.unwrap() else {
        panic!("dir released by stop")
    };
    wait_health(&app, ServingStatus::Serving).await;
    create_account(&mut c, &org, "AFTER").await;
    let all = c
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.accounts.len(), 1);
    let summary = import("AFTER").await.unwrap().expect("a summary");
    assert!(summary.committed && summary.counts["created"] == 1);
    drop(app);
    pg.stop().await.unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

/// SIGTERM: health says NOT_SERVING at once, for the drain delay, while
/// calls are still answered; then the server drains and stops cleanly.
#[tokio::test]
async fn on_sigterm_health_flips_to_not_serving_before_the_drain() {
    use crate::embedded::{clef, started, terminate, wait_serving};
    let db = fresh_database().await;
    let url = database_url(&db);
    let mut server = clef(&[
        "serve",
        "--database-url",
        &url,
        "--listen",
        "127.0.0.1:0",
        "--drain-delay-ms",
        "3000",
    ])
    .spawn()
    .unwrap();
    let (addr, _, _) = started(&mut server).await;
    wait_serving(addr).await;
    let channel = connect(addr).await;
    let pid = nix::unistd::Pid::from_raw(server.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let sent = std::time::Instant::now();
    let mut health = HealthClient::new(channel.clone());
    let status = loop {
        let s = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        if s == ServingStatus::NotServing as i32 || sent.elapsed() > Duration::from_secs(2) {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, ServingStatus::NotServing as i32);
    assert!(sent.elapsed() < Duration::from_secs(2));
    // Still answering meanwhile (an unauthenticated call gets its answer).
    let e = pb::account_service_client::AccountServiceClient::new(channel)
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(terminate(server).await.success());
    assert!(
        sent.elapsed() >= Duration::from_secs(3),
        "stopped before the drain delay"
    );
}
