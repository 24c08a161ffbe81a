//! Secrets never reach the logs, even at debug level.

use clef::pb;

use crate::{
    common::*,
    embedded::{clef, serving, terminate, Serving},
};

#[tokio::test]
async fn no_secret_is_logged_at_debug_level() {
    let (url, op_key) = crate::embedded::database_with_operator().await;
    let mut cmd = clef(&["serve", "--database-url", &url, "--listen", "127.0.0.1:0"]);
    cmd.env("RUST_LOG", "debug");
    let Serving {
        child: server,
        channel: ch,
        stderr: err_task,
    } = serving(cmd).await;

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
    // The outbox worker has logged every message (it polls on its own time).
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (pending, logged): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'logged')
               FROM outbox",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if pending == 0 && logged > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the outbox never logged its messages"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

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

/// One access line per RPC at info: method, code, duration, principal,
/// peer, trace id (the caller's `traceparent`'s); a refused call and a bad
/// key too; never a key; health probes not at info.
#[tokio::test]
async fn every_rpc_leaves_one_access_line_with_its_code_and_caller_and_no_secret() {
    let (url, op_key) = crate::embedded::database_with_operator().await;
    let mut cmd = clef(&["serve", "--database-url", &url, "--listen", "127.0.0.1:0"]);
    cmd.env("RUST_LOG", "info").env("CLEF_LOG_FORMAT", "json");
    let Serving {
        child: server,
        channel: ch,
        stderr: err_task,
    } = serving(cmd).await;

    // Allowed, with the caller's trace context.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut accounts = pb::account_service_client::AccountServiceClient::new(ch.clone());
    let request = traced(
        pb::CreateOrganizationRequest {
            display_name: "Access".into(),
            ..Default::default()
        },
        &op_key,
        &format!("00-{trace}-00f067aa0ba902b7-01"),
    );
    accounts.create_organization(request).await.unwrap();
    // Refused: a service principal may not create organizations.
    let service_key = {
        let mut users = pb::user_service_client::UserServiceClient::with_interceptor(
            ch.clone(),
            Bearer::new(Some(&op_key)),
        );
        users
            .create_service_principal(pb::CreateServicePrincipalRequest {
                name: "tracker".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    };
    let mut as_service = pb::account_service_client::AccountServiceClient::with_interceptor(
        ch.clone(),
        Bearer::new(Some(&service_key.connection_key)),
    );
    let refused = as_service
        .create_organization(pb::CreateOrganizationRequest {
            display_name: "Nope".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::PermissionDenied);
    // A bad key.
    let bad_key = format!("{}{}", &op_key[..op_key.len() - 4], "AAAA");
    let mut bad = pb::account_service_client::AccountServiceClient::with_interceptor(
        ch.clone(),
        Bearer::new(Some(&bad_key)),
    );
    let e = bad
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    // A call whose deadline passes while the server works (a password hash
    // takes longer than 1 ms): its future is dropped, its line still written.
    let mut portal = pb::credential_service_client::CredentialServiceClient::with_interceptor(
        ch.clone(),
        Bearer::new(Some(&op_key)),
    );
    let mut late = tonic::Request::new(pb::AuthenticatePasswordRequest {
        login: "nobody@example.com".into(),
        password: "not a real password".into(),
    });
    late.set_timeout(std::time::Duration::from_millis(1));
    assert!(portal.authenticate_password(late).await.is_err());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    assert!(terminate(server).await.success());
    let logs = err_task.await.unwrap();
    let access: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "clef::access")
        .collect();
    let line = |method: &str, code: &str| {
        access
            .iter()
            .filter(|v| v["fields"]["method"] == method && v["fields"]["code"] == code)
            .cloned()
            .collect::<Vec<_>>()
    };
    let created = line("clef.v1.AccountService/CreateOrganization", "OK");
    assert_eq!(created.len(), 1, "{logs}");
    let f = &created[0]["fields"];
    assert_eq!(created[0]["level"], "INFO");
    assert_eq!(f["trace_id"], trace);
    assert!(f["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{f}");
    assert!(
        f["duration_ms"].as_str().unwrap().parse::<f64>().unwrap() >= 0.0,
        "{f}"
    );
    assert_ne!(f["principal"], "-");
    let denied = line(
        "clef.v1.AccountService/CreateOrganization",
        "PERMISSION_DENIED",
    );
    assert_eq!(denied.len(), 1, "{logs}");
    assert_eq!(
        denied[0]["fields"]["principal"].as_str().unwrap(),
        service_key.id
    );
    let unauthenticated = line("clef.v1.AccountService/ListAccounts", "UNAUTHENTICATED");
    assert_eq!(unauthenticated.len(), 1, "{logs}");
    assert_eq!(unauthenticated[0]["fields"]["principal"], "-");
    let late = access
        .iter()
        .filter(|v| v["fields"]["method"] == "clef.v1.CredentialService/AuthenticatePassword")
        .collect::<Vec<_>>();
    assert_eq!(late.len(), 1, "{logs}");
    assert!(
        ["CANCELLED", "DEADLINE_EXCEEDED"].contains(&late[0]["fields"]["code"].as_str().unwrap()),
        "{logs}"
    );
    // Health probes (wait_serving's) are not access lines at info.
    assert!(
        !access.iter().any(|v| v["fields"]["method"]
            .as_str()
            .is_some_and(|m| m.starts_with("grpc.health"))),
        "{logs}"
    );
    for secret in [&op_key, &service_key.connection_key, &bad_key] {
        let hidden = &secret[clef::domain::key::DISPLAY_PREFIX_LEN..];
        assert!(!logs.contains(hidden), "a key was logged");
    }
}
