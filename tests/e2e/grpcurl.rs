//! Internal tooling: the real grpcurl binary (reflection v1alpha) against a
//! running server.

use tokio::process::Command;

use crate::common::*;

async fn grpcurl(args: &[&str]) -> (bool, String) {
    let out = Command::new("grpcurl")
        .args(args)
        .output()
        .await
        .expect("grpcurl is installed (scripts/test installs it)");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[tokio::test]
async fn grpcurl_lists_describes_and_calls() {
    let app = spawn_app().await;
    let addr = app.addr.to_string();
    let auth = format!("authorization: Bearer {}", app.operator_key);

    let (ok, listed) = grpcurl(&["-plaintext", &addr, "list"]).await;
    assert!(ok, "{listed}");
    for service in ["clef.v1.AccountService", "grpc.health.v1.Health"] {
        assert!(
            listed.lines().any(|l| l == service),
            "{service} missing from:\n{listed}"
        );
    }

    let (ok, described) =
        grpcurl(&["-plaintext", &addr, "describe", "clef.v1.AccountService"]).await;
    assert!(ok, "{described}");
    assert!(described.contains("rpc CreateAccount"), "{described}");
    assert!(described.contains("rpc ListAccounts"), "{described}");

    let (ok, health) = grpcurl(&[
        "-plaintext",
        "-d",
        "{}",
        &addr,
        "grpc.health.v1.Health/Check",
    ])
    .await;
    assert!(ok, "{health}");
    assert!(health.contains("SERVING"), "{health}");

    let (ok, created) = grpcurl(&[
        "-plaintext",
        "-H",
        &auth,
        "-d",
        r#"{"display_name":"Outillage"}"#,
        &addr,
        "clef.v1.AccountService/CreateOrganization",
    ])
    .await;
    assert!(ok, "{created}");
    let org: serde_json::Value = serde_json::from_str(&created).expect("json answer");
    assert!(
        org["revision"].is_string(),
        "int64 revision is a JSON string: {created}"
    );
    let org_id = org["id"].as_str().unwrap();

    let body = format!(
        r#"{{"account":{{"code":"0099","display_name":"Nord","organization_id":"{org_id}"}}}}"#
    );
    let (ok, account) = grpcurl(&[
        "-plaintext",
        "-H",
        &auth,
        "-d",
        &body,
        &addr,
        "clef.v1.AccountService/CreateAccount",
    ])
    .await;
    assert!(ok, "{account}");
    assert!(account.contains(r#""code": "0099""#), "{account}");

    // Error details are decodable through reflection.
    let (ok, refused) = grpcurl(&[
        "-plaintext",
        "-H",
        &auth,
        "-d",
        r#"{"account":{"code":"bad code"}}"#,
        &addr,
        "clef.v1.AccountService/CreateAccount",
    ])
    .await;
    assert!(!ok);
    assert!(refused.contains("InvalidArgument"), "{refused}");
    assert!(refused.contains(r#""field":"account.code""#), "{refused}");

    let (ok, refused) = grpcurl(&[
        "-plaintext",
        "-d",
        "{}",
        &addr,
        "clef.v1.AccountService/ListAccounts",
    ])
    .await;
    assert!(!ok);
    assert!(refused.contains("Unauthenticated"), "{refused}");

    // The audit trail of what this session did, structured changes
    // included (google.protobuf.Value through reflection); a watch from the
    // start sends the history then a heartbeat (bounded by -max-time).
    let (ok, events) = grpcurl(&[
        "-plaintext",
        "-H",
        &auth,
        "-d",
        r#"{"filter":{"account":"0099"}}"#,
        &addr,
        "clef.v1.AuditService/ListEvents",
    ])
    .await;
    assert!(ok, "{events}");
    assert!(events.contains("AUDIT_ACTION_ACCOUNT_CREATED"), "{events}");
    assert!(events.contains(r#""field": "code""#), "{events}");
    let (_, watched) = grpcurl(&[
        "-plaintext",
        "-max-time",
        "3",
        "-H",
        &auth,
        "-d",
        r#"{"from_revision":0,"heartbeat_seconds":1}"#,
        &addr,
        "clef.v1.AuditService/WatchEvents",
    ])
    .await;
    assert!(
        watched.contains("AUDIT_ACTION_ORGANIZATION_CREATED"),
        "{watched}"
    );
    assert!(watched.contains(r#""heartbeat""#), "{watched}");
}
