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
    // Invited: he completes his invitation through a portal (the operator).
    let invitation = created.invitation_token;
    let mut portal = pb::credential_service_client::CredentialServiceClient::with_interceptor(
        ch.clone(),
        b.clone(),
    );
    let password = "lou's very own password";
    let user_key = portal
        .complete_invitation(pb::CompleteInvitationRequest {
            token: invitation.clone(),
            password: password.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .connection_key;
    let login = portal
        .authenticate_password(pb::AuthenticatePasswordRequest {
            login: "lou@example.com".into(),
            password: password.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!login.must_change_password);
    // A wrong password is not logged either.
    let wrong = "lou's wrong password";
    assert!(portal
        .authenticate_password(pb::AuthenticatePasswordRequest {
            login: "lou@example.com".into(),
            password: wrong.into(),
        })
        .await
        .is_err());
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
    for secret in [password, wrong, &invitation["clefinv_".len()..]] {
        assert!(!logs.contains(secret), "a password or token was logged");
    }
    assert!(
        logs.contains("message not sent (no CLEF_SMTP_URL)"),
        "the invitation was logged without its token"
    );
}
