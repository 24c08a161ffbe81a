//! The Prometheus endpoint: after a known sequence of RPCs, the counters
//! and histograms say exactly what happened.

use clef::pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

use crate::common::*;

/// `GET path` over HTTP/1.1; (status line, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: clef\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// The value of the sample `name{labels}` (labels as exposed, in order).
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
}

/// A server on a fresh database, with its metrics endpoint.
async fn app_with_metrics() -> (TestApp, std::net::SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = listener.local_addr().unwrap();
    let app = spawn_app_with_options(
        fresh_database().await,
        clef::domain::clock::Clock::system(),
        clef::server::ServeOptions {
            metrics: clef::server::Handoff::new(listener),
            ..test_options()
        },
    )
    .await;
    (app, metrics)
}

#[tokio::test]
async fn the_metrics_endpoint_counts_rpcs_by_method_and_code_and_decisions_by_outcome() {
    let (app, metrics) = app_with_metrics().await;
    org_with_account(&app, "Org Metrics", "ME1").await;
    let mut ops = app.operator().await;
    let (_, key) = create_user(
        &mut ops,
        standard("Max", "Metric"),
        "ME1",
        &[],
        vec![right("shipping.ws")],
    )
    .await
    .unwrap();
    let mut decide = app.decider().await;
    let ask = |right: &str| pb::CheckRequest {
        subject: by_key(&key),
        account_code: "ME1".into(),
        right: right.into(),
        ..Default::default()
    };
    // 3 allowed, 2 denied.
    for _ in 0..3 {
        assert!(
            decide
                .check(ask("shipping.ws"))
                .await
                .unwrap()
                .into_inner()
                .allowed
        );
    }
    for _ in 0..2 {
        assert!(
            !decide
                .check(ask("shipping.ui"))
                .await
                .unwrap()
                .into_inner()
                .allowed
        );
    }
    // 1 refused (unknown right: INVALID_ARGUMENT... or NOT_FOUND), 1 bad key.
    let refused = decide.check(ask("no.such_right")).await.unwrap_err().code();
    let mut nobody = pb::authorization_service_client::AuthorizationServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some("clef_nope")),
    );
    assert_eq!(
        nobody.check(ask("shipping.ws")).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    // Made-up paths: one `unknown` series, however many there are.
    for path in [
        "/clef.v1.AccountService/Nope",
        "/x.Y/Z",
        "/clef.v1.AccountService/Nope2",
    ] {
        let mut grpc = tonic::client::Grpc::new(app.channel().await);
        grpc.ready().await.unwrap();
        let e = grpc
            .unary::<pb::ListAccountsRequest, pb::ListAccountsResponse, _>(
                tonic::Request::new(pb::ListAccountsRequest::default()),
                tonic::codegen::http::uri::PathAndQuery::from_static(path),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unimplemented);
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    let (status, body) = get(metrics, "/metrics").await;
    assert_eq!(
        sample(
            &body,
            "clef_rpc_requests_total{method=\"unknown\",code=\"UNIMPLEMENTED\"}"
        ),
        Some(3.0),
        "{body}"
    );
    assert!(!body.contains("Nope"), "{body}");
    assert!(status.contains("200"), "{status}");
    let check = "clef.v1.AuthorizationService/Check";
    let rpcs = |code: &str| {
        sample(
            &body,
            &format!("clef_rpc_requests_total{{method=\"{check}\",code=\"{code}\"}}"),
        )
    };
    assert_eq!(rpcs("OK"), Some(5.0), "{body}");
    let refused_name = match refused {
        Code::NotFound => "NOT_FOUND",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(rpcs(refused_name), Some(1.0), "{body}");
    assert_eq!(rpcs("UNAUTHENTICATED"), Some(1.0), "{body}");
    assert_eq!(
        sample(
            &body,
            &format!("clef_rpc_duration_seconds_count{{method=\"{check}\"}}")
        ),
        Some(7.0),
        "{body}"
    );
    let decisions = |outcome: &str| {
        ["memory", "postgres"]
            .iter()
            .filter_map(|source| {
                sample(
                    &body,
                    &format!("clef_decisions_total{{outcome=\"{outcome}\",source=\"{source}\"}}"),
                )
            })
            .sum::<f64>()
    };
    assert_eq!(decisions("allowed"), 3.0, "{body}");
    assert_eq!(decisions("denied"), 2.0, "{body}");
    assert_eq!(
        sample(
            &body,
            "clef_rpc_requests_total{method=\"clef.v1.UserService/CreateUser\",code=\"OK\"}"
        ),
        Some(1.0),
        "{body}"
    );
    // The state read at the scrape.
    assert_eq!(sample(&body, "clef_postgres_up"), Some(1.0), "{body}");
    assert!(
        sample(&body, "clef_revision_committed").unwrap() > 0.0,
        "{body}"
    );
    assert!(
        sample(&body, "clef_decision_cache_entries{cache=\"subjects\"}").unwrap() >= 1.0,
        "{body}"
    );
    assert!(
        sample(&body, "clef_outbox_messages{state=\"pending\"}").is_some(),
        "{body}"
    );
    assert!(
        body.contains("clef_change_feed_proof_age_seconds"),
        "{body}"
    );
    assert!(
        sample(&body, "clef_db_begin_seconds_count").unwrap() >= 1.0,
        "{body}"
    );
    // The process's CPU time, which only grows.
    let cpu = sample(&body, "clef_process_cpu_seconds_total").unwrap();
    assert!(cpu > 0.0, "{body}");
    let (_, again) = get(metrics, "/metrics").await;
    assert!(
        sample(&again, "clef_process_cpu_seconds_total").unwrap() >= cpu,
        "{again}"
    );
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    // Every series the Grafana dashboard queries exists.
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/clef.json"
    ))
    .unwrap();
    let mut names: Vec<&str> = dashboard
        .match_indices("clef_")
        .map(|(i, _)| {
            let rest = &dashboard[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .filter(|n| *n != "clef_")
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 10, "{names:?}");
    for name in names {
        assert!(
            body.lines()
                .any(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' '])),
            "the dashboard queries {name}, which the endpoint does not export"
        );
    }
    // Anything else is 404.
    assert!(get(metrics, "/").await.0.contains("404"));
}

/// A new account changes no subject's rights: creating one keeps the
/// decision cache (a replica does not reload every subject from Postgres,
/// which under load is a storm of cold loads), yet a code asked about
/// before it existed is known at once afterwards.
#[tokio::test]
async fn a_new_account_keeps_cached_subjects_and_is_known_at_once() {
    let (app, metrics) = app_with_metrics().await;
    let org = org_with_account(&app, "Org Cache", "CA1").await;
    let mut ops = app.operator().await;
    let (_, key) = create_user(
        &mut ops,
        standard("Carl", "Cache"),
        "CA1",
        &[],
        vec![right("shipping.ws")],
    )
    .await
    .unwrap();
    let mut decide = app.decider().await;
    let ask = |account: &str| pb::CheckRequest {
        subject: by_key(&key),
        account_code: account.into(),
        right: "shipping.ws".into(),
        ..Default::default()
    };
    let from = |body: &str, source: &str| {
        ["allowed", "denied"]
            .iter()
            .filter_map(|o| {
                sample(
                    body,
                    &format!("clef_decisions_total{{outcome=\"{o}\",source=\"{source}\"}}"),
                )
            })
            .sum::<f64>()
    };
    // Warm: the subject, and the code CA2 known not to exist.
    for account in ["CA1", "CA1", "CA2", "CA2"] {
        decide.check(ask(account)).await.unwrap();
    }
    let unknown = decide.check(ask("CA2")).await.unwrap().into_inner();
    assert_eq!(unknown.reason, pb::DenialReason::UnknownAccount as i32);
    let (_, before) = get(metrics, "/metrics").await;

    let mut accounts = app.operator_accounts().await;
    create_account(&mut accounts, &org, "CA2").await;
    // The subject is still answered from memory.
    assert!(decide.check(ask("CA1")).await.unwrap().into_inner().allowed);
    let (_, after) = get(metrics, "/metrics").await;
    assert_eq!(
        from(&after, "postgres"),
        from(&before, "postgres"),
        "creating an account reloaded the subject:\n{after}"
    );
    assert_eq!(from(&after, "memory"), from(&before, "memory") + 1.0);
    // CA2 exists now: the subject is not linked to it, no longer "unknown".
    let now = decide.check(ask("CA2")).await.unwrap().into_inner();
    assert_eq!(now.reason, pb::DenialReason::NotLinked as i32, "{now:?}");
}
