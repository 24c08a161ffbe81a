//! Secrets never reach the logs, even at debug level.

use clef::pb;
use tokio::io::AsyncReadExt;

use crate::{
    common::*,
    embedded::{clef, started, terminate, wait_serving},
};

#[tokio::test]
async fn no_secret_is_logged_at_debug_level() {
    let db = fresh_database().await;
    let url = database_url(&db);
    let op = clef(&["operator", "create", "root", "--database-url", &url])
        .output()
        .await
        .unwrap();
    assert!(
        op.status.success(),
        "{}",
        String::from_utf8_lossy(&op.stderr)
    );
    let op_key = String::from_utf8(op.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_owned();
    let mut cmd = clef(&["serve", "--database-url", &url, "--listen", "127.0.0.1:0"]);
    cmd.env("RUST_LOG", "debug");
    let mut server = cmd.spawn().unwrap();
    let mut stderr = server.stderr.take().unwrap();
    let err_task = tokio::spawn(async move {
        let mut s = String::new();
        stderr.read_to_string(&mut s).await.ok();
        s
    });
    let (addr, _, _) = started(&mut server).await;
    wait_serving(addr).await;

    let ch = connect(addr).await;
    let b = Bearer::new(Some(&op_key));
    let mut accounts =
        pb::account_service_client::AccountServiceClient::with_interceptor(ch.clone(), b.clone());
    let mut users =
        pb::user_service_client::UserServiceClient::with_interceptor(ch.clone(), b.clone());
    let org = create_org(&mut accounts, "Logs").await;
    create_account(&mut accounts, &org, "LOG1").await;
    let created = users
        .create_user(pb::CreateUserRequest {
            user: Some(advanced("Lou", "Logs", "lou@example.com")),
            account_code: "LOG1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let user_key = created.connection_key;
    let mut lou = pb::connection_key_service_client::ConnectionKeyServiceClient::with_interceptor(
        ch.clone(),
        Bearer::new(Some(&user_key)),
    );
    let regenerated = lou
        .regenerate_connection_key(pb::RegenerateConnectionKeyRequest::default())
        .await
        .unwrap()
        .into_inner()
        .connection_key;
    // A refused key is not logged either.
    let mut refused =
        pb::connection_key_service_client::ConnectionKeyServiceClient::with_interceptor(
            ch,
            Bearer::new(Some(&user_key)),
        );
    assert!(refused.who_am_i(pb::WhoAmIRequest {}).await.is_err());

    assert!(terminate(server).await.success());
    let logs = err_task.await.unwrap();
    assert!(logs.contains("DEBUG"), "debug logging was on");
    for secret in [&op_key, &user_key, &regenerated] {
        let hidden = &secret[clef::domain::key::DISPLAY_PREFIX_LEN..];
        assert!(!logs.contains(hidden), "a secret was logged");
    }
}
