//! Traces through a real OTLP receiver: the collector's TraceService, in
//! the test. Span names, kind, `rpc.*` attributes and status follow the
//! OpenTelemetry conventions for gRPC servers; the caller's `traceparent`
//! is the parent; health checks are not traced; the service is named by
//! OTEL_SERVICE_NAME.

use std::sync::{Arc, Mutex};

use clef::pb;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        trace_service_server::{TraceService, TraceServiceServer},
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    },
    common::v1::{any_value::Value, KeyValue},
    trace::v1::{span::SpanKind, status::StatusCode, Span},
};

use crate::{
    common::*,
    embedded::{clef, serving, terminate, Serving},
};

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn text(v: Option<&Value>) -> Option<&str> {
    match v {
        Some(Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

fn int(v: Option<&Value>) -> Option<i64> {
    match v {
        Some(Value::IntValue(i)) => Some(*i),
        _ => None,
    }
}

#[tokio::test]
async fn spans_follow_the_grpc_conventions_and_the_callers_traceparent() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    let got = receiver.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(got))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });

    let (url, op_key) = crate::embedded::database_with_operator().await;
    let mut cmd = clef(&["serve", "--database-url", &url, "--listen", "127.0.0.1:0"]);
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"))
        .env("OTEL_SERVICE_NAME", "clef-under-test")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    let Serving {
        child: server,
        channel: ch,
        ..
    } = serving(cmd).await;

    // Allowed, under the caller's trace.
    let (trace, parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let request = traced(
        pb::CreateOrganizationRequest {
            display_name: "Traced".into(),
            ..Default::default()
        },
        &op_key,
        &format!("00-{trace}-{parent}-01"),
    );
    pb::account_service_client::AccountServiceClient::new(ch.clone())
        .create_organization(request)
        .await
        .unwrap();
    // Refused: the caller's fault, not an error of the server's span.
    let e = pb::account_service_client::AccountServiceClient::new(ch.clone())
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    // A method that does not exist: UNIMPLEMENTED, an error.
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready().await.unwrap();
    let e = grpc
        .unary::<pb::ListAccountsRequest, pb::ListAccountsResponse, _>(
            tonic::Request::new(pb::ListAccountsRequest::default()),
            tonic::codegen::http::uri::PathAndQuery::from_static("/clef.v1.AccountService/Nope"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented);

    // A decision answered from Postgres (a subject not in memory): its
    // database work is a child span.
    let service = pb::user_service_client::UserServiceClient::with_interceptor(
        ch.clone(),
        Bearer::new(Some(&op_key)),
    )
    .create_service_principal(pb::CreateServicePrincipalRequest {
        name: "tracker".into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    let denied = pb::authorization_service_client::AuthorizationServiceClient::with_interceptor(
        ch.clone(),
        Bearer::new(Some(&service.connection_key)),
    )
    .check(pb::CheckRequest {
        subject: by_user(&uuid::Uuid::new_v4().to_string()),
        account_code: "NOWHERE".into(),
        right: "shipping.ws".into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    assert!(!denied.allowed);

    // Shutting down flushes every span.
    assert!(terminate(server).await.success());
    let exports = receiver.0.lock().unwrap().clone();
    let resource_names: Vec<&str> = exports
        .iter()
        .flat_map(|e| &e.resource_spans)
        .filter_map(|r| text(attr(&r.resource.as_ref()?.attributes, "service.name")))
        .collect();
    assert!(!resource_names.is_empty(), "no span exported");
    assert!(
        resource_names.iter().all(|n| *n == "clef-under-test"),
        "{resource_names:?}"
    );
    let spans: Vec<Span> = exports
        .iter()
        .flat_map(|e| &e.resource_spans)
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| s.spans.clone())
        .collect();
    let named = |name: &str| {
        spans
            .iter()
            .filter(|s| s.name == name)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(named("rpc").is_empty(), "a span is still named rpc");
    assert!(
        !spans.iter().any(|s| s.name.starts_with("grpc.health")),
        "health checks were traced"
    );

    let created = named("clef.v1.AccountService/CreateOrganization");
    assert_eq!(created.len(), 1, "{spans:#?}");
    let s = &created[0];
    assert_eq!(s.kind, SpanKind::Server as i32);
    assert_eq!(hex(&s.trace_id), trace);
    assert_eq!(hex(&s.parent_span_id), parent);
    assert_eq!(text(attr(&s.attributes, "rpc.system")), Some("grpc"));
    assert_eq!(
        text(attr(&s.attributes, "rpc.service")),
        Some("clef.v1.AccountService")
    );
    assert_eq!(
        text(attr(&s.attributes, "rpc.method")),
        Some("CreateOrganization")
    );
    assert_eq!(int(attr(&s.attributes, "rpc.grpc.status_code")), Some(0));
    assert_ne!(status(s), StatusCode::Error as i32);

    let refused = named("clef.v1.AccountService/ListAccounts");
    assert_eq!(refused.len(), 1, "{spans:#?}");
    assert_eq!(
        int(attr(&refused[0].attributes, "rpc.grpc.status_code")),
        Some(16)
    );
    assert_ne!(status(&refused[0]), StatusCode::Error as i32);
    // Without a traceparent: a trace of its own.
    assert_ne!(hex(&refused[0].trace_id), trace);

    let checks = named("clef.v1.AuthorizationService/Check");
    assert_eq!(checks.len(), 1, "{spans:#?}");
    let db: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id == checks[0].span_id && s.name == "SELECT entitlements")
        .collect();
    // The caller's key and the subject: two loads, both children of Check.
    assert_eq!(db.len(), 2, "no database child span: {spans:#?}");
    assert_eq!(
        spans
            .iter()
            .filter(|s| s.name == "SELECT entitlements")
            .count(),
        2
    );
    for d in db {
        assert_eq!(d.kind, SpanKind::Client as i32);
        assert_eq!(d.trace_id, checks[0].trace_id);
        assert_eq!(text(attr(&d.attributes, "db.system")), Some("postgresql"));
    }

    // A path clef does not serve is named `unknown` (no name per made-up path).
    let missing = named("unknown");
    assert_eq!(missing.len(), 1, "{spans:#?}");
    assert_eq!(
        int(attr(&missing[0].attributes, "rpc.grpc.status_code")),
        Some(12)
    );
    assert_eq!(status(&missing[0]), StatusCode::Error as i32);
}

fn status(s: &Span) -> i32 {
    s.status.as_ref().map_or(0, |st| st.code)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OTLP endpoint that is not there: the failure is logged once, not at
/// every batch, and the server serves on.
#[tokio::test]
async fn a_failing_trace_export_is_logged_once() {
    // A port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let db = fresh_database().await;
    let url = database_url(&db);
    let mut cmd = clef(&["serve", "--database-url", &url, "--listen", "127.0.0.1:0"]);
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{closed}"))
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "500");
    let Serving {
        child: server,
        channel: ch,
        stderr: logs,
    } = serving(cmd).await;
    // Spans in several batches, over more than a second.
    for _ in 0..6 {
        let e = pb::account_service_client::AccountServiceClient::new(ch.clone())
            .list_accounts(pb::ListAccountsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    }
    assert!(terminate(server).await.success());
    let logs = logs.await.unwrap();
    let failures = logs.matches("trace export failing").count();
    assert_eq!(failures, 1, "{logs}");
}

/// `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`: spans are POSTed to
/// `/v1/traces` under the endpoint, as protobuf, to a real HTTP receiver.
/// A protocol clef does not speak is refused at start, not ignored.
#[tokio::test]
async fn spans_go_over_otlp_http_when_the_protocol_says_so() {
    use http_body_util::BodyExt as _;
    use prost::Message as _;
    type Got = Arc<Mutex<Vec<(String, String, ExportTraceServiceRequest)>>>;
    let got: Got = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    let seen = got.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let seen = seen.clone();
            tokio::spawn(async move {
                let serve = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let path = req.uri().path().to_owned();
                            let kind = req
                                .headers()
                                .get("content-type")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned();
                            let body = req.into_body().collect().await?.to_bytes();
                            let decoded =
                                ExportTraceServiceRequest::decode(body).unwrap_or_default();
                            seen.lock().unwrap().push((path, kind, decoded));
                            let ok = ExportTraceServiceResponse {
                                partial_success: None,
                            };
                            Ok::<_, hyper::Error>(hyper::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from(ok.encode_to_vec()),
                            )))
                        }
                    },
                );
                let io = hyper_util::rt::TokioIo::new(tcp);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, serve)
                    .await;
            });
        }
    });

    let (url, _) = crate::embedded::database_with_operator().await;
    let mut cmd = clef(&["serve", "--database-url", &url, "--listen", "127.0.0.1:0"]);
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"))
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    let Serving {
        child: server,
        channel: ch,
        ..
    } = serving(cmd).await;
    let e = pb::account_service_client::AccountServiceClient::new(ch.clone())
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert!(terminate(server).await.success());

    let got = got.lock().unwrap().clone();
    assert!(!got.is_empty(), "nothing was posted");
    for (path, kind, _) in &got {
        assert_eq!(path, "/v1/traces");
        assert_eq!(kind, "application/x-protobuf");
    }
    let spans: Vec<Span> = got
        .iter()
        .flat_map(|(_, _, e)| &e.resource_spans)
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| s.spans.clone())
        .collect();
    let refused: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "clef.v1.AccountService/ListAccounts")
        .collect();
    assert_eq!(refused.len(), 1, "{spans:#?}");
    assert_eq!(refused[0].kind, SpanKind::Server as i32);
    assert_eq!(
        int(attr(&refused[0].attributes, "rpc.grpc.status_code")),
        Some(16)
    );

    // http/json is not spoken: said at start, and the server does not run.
    let db = fresh_database().await;
    let url = database_url(&db);
    let mut cmd = clef(&["serve", "--database-url", &url, "--listen", "127.0.0.1:0"]);
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"))
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json");
    let out = cmd.output().await.unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("OTEL_EXPORTER_OTLP_PROTOCOL=http/json is not supported"),
        "{said}"
    );
}
