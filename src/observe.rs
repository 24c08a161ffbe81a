//! What every RPC leaves behind: a span following the OpenTelemetry
//! semantic conventions for gRPC servers (named `clef.v1.Service/Method`,
//! kind server, `rpc.*` attributes, the caller's W3C `traceparent` as
//! parent), and one access line at info when it ends (method, code,
//! duration, principal, peer, trace id; never a key). Health checks and
//! reflection get neither (a probe every 2 s would drown the rest); their
//! lines are at debug.
//!
//! The layer sits outside every other, so the code it reports is the one
//! the client reads; it takes it from the headers of a trailers-only answer
//! or from the trailers at the end of a stream (a stream the client leaves
//! is `CANCELLED`). The principal is recorded by the authenticators
//! ([`record_caller`]) into a slot the layer puts in the request.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::Instant,
};

use opentelemetry::trace::TraceContextExt as _;
use tonic::codegen::http;
use tracing::{field::Empty, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use uuid::Uuid;

/// The principal a request authenticated as, once known.
#[derive(Debug, Clone, Default)]
pub struct Caller(Arc<OnceLock<Uuid>>);

/// Records the authenticated principal of the request whose extensions
/// these are (a no-op outside the layer, e.g. in unit tests).
pub fn record_caller(extensions: &http::Extensions, principal: Uuid) {
    if let Some(caller) = extensions.get::<Caller>() {
        let _ = caller.0.set(principal);
    }
}

/// Wraps every service (see the module doc).
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcLayer;

impl<S> tower_layer::Layer<S> for RpcLayer {
    type Service = Rpc<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Rpc { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Rpc<S> {
    inner: S,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// Reads W3C trace context from request headers.
struct Headers<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The trace id of a `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`).
fn traceparent_trace_id(headers: &http::HeaderMap) -> Option<String> {
    let v = headers.get("traceparent")?.to_str().ok()?;
    let mut parts = v.split('-');
    let (_, id) = (parts.next()?, parts.next()?);
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id != "0".repeat(32))
        .then(|| id.to_ascii_lowercase())
}

/// What the access line says, gathered as the RPC goes.
struct Access {
    method: String,
    /// `metrics::method_label` of it.
    label: &'static str,
    quiet: bool,
    peer: String,
    trace_id: String,
    caller: Caller,
    start: Instant,
    code: Option<i32>,
    span: Span,
    done: bool,
}

/// An RPC whose future was dropped before it answered (its deadline
/// passed, or the client cancelled) still leaves its line: `CANCELLED`.
impl Drop for Access {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Access {
    /// Logs once (called when the answer's body ends or is dropped).
    fn finish(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let code = self.code.unwrap_or(tonic::Code::Cancelled as i32);
        let name = code_name(code);
        let mut uuid = Uuid::encode_buffer();
        let principal: &str = match self.caller.0.get() {
            Some(p) => p.hyphenated().encode_lower(&mut uuid),
            None => "-",
        };
        let elapsed = self.start.elapsed();
        let seconds = elapsed.as_secs_f64();
        crate::metrics::rpc(self.label, code, name, seconds);
        let ms = seconds * 1000.0;
        self.span.record("rpc.grpc.status_code", code);
        if server_error(code) {
            self.span.record("otel.status_code", "ERROR");
        }
        if self.quiet {
            tracing::debug!(target: "clef::access", method = %self.method, code = %name, duration_ms = ms, principal = %principal, peer = %self.peer, "rpc");
        } else if tracing::enabled!(target: "clef::access", tracing::Level::INFO) {
            let mut room = [0u8; 40];
            let duration = millis(elapsed, &mut room);
            let line = crate::telemetry::AccessLine {
                message: "rpc",
                method: &self.method,
                code: name,
                duration_ms: duration,
                principal,
                peer: &self.peer,
                trace_id: &self.trace_id,
            };
            if !crate::telemetry::write_access(&line) {
                tracing::info!(target: "clef::access", method = %self.method, code = %name, duration_ms = %duration, principal = %principal, peer = %self.peer, trace_id = %self.trace_id, "rpc");
            }
        }
    }
}

/// A status code as gRPC names it: `PERMISSION_DENIED` (a number gRPC
/// does not define is `UNKNOWN`, as tonic reads it).
fn code_name(code: i32) -> &'static str {
    use tonic::Code::*;
    match tonic::Code::from_i32(code) {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// `elapsed` in milliseconds with three decimals (to the nearest
/// microsecond), written into `room`.
fn millis(elapsed: std::time::Duration, room: &mut [u8; 40]) -> &str {
    use std::io::Write;
    let micros = (elapsed.as_nanos() + 500) / 1000;
    let mut w = &mut room[..];
    let _ = write!(w, "{}.{:03}", micros / 1000, micros % 1000);
    let n = 40 - w.len();
    std::str::from_utf8(&room[..n]).unwrap_or("-")
}

/// The codes the conventions make a server span's error: the server's
/// fault, not the caller's.
fn server_error(code: i32) -> bool {
    use tonic::Code::*;
    [
        Unknown,
        DeadlineExceeded,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
    ]
    .iter()
    .any(|c| *c as i32 == code)
}

fn status_of(headers: &http::HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok())
}

impl<S, B> tower_service::Service<http::Request<B>> for Rpc<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The path as the client sent it, cut at 200 bytes for the logs
        // and spans (metrics label only the methods clef serves).
        let mut method = request.uri().path().trim_start_matches('/').to_owned();
        if method.len() > 200 {
            let mut cut = 200;
            while !method.is_char_boundary(cut) {
                cut -= 1;
            }
            method.truncate(cut);
        }
        let label = crate::metrics::method_label(&method);
        let quiet =
            label.starts_with("grpc.health.v1.Health/") || label.starts_with("grpc.reflection.");
        let peer = request
            .extensions()
            .get::<tonic::transport::server::TcpConnectInfo>()
            .and_then(|i| i.remote_addr())
            .or_else(|| {
                request
                    .extensions()
                    .get::<tonic::transport::server::TlsConnectInfo<
                        tonic::transport::server::TcpConnectInfo,
                    >>()
                    .and_then(|i| i.get_ref().remote_addr())
            })
            .map_or_else(|| "-".to_owned(), |a| a.to_string());
        let caller = Caller::default();
        request.extensions_mut().insert(caller.clone());
        // A span when it goes somewhere: spans are exported, or the caller
        // sent a trace context (its id is then in every line of the RPC).
        let traced = !quiet
            && (crate::telemetry::tracing_exported()
                || request.headers().contains_key("traceparent"));
        let span = if !traced {
            Span::none()
        } else {
            // A made-up path is one name (`unknown`), as in the metrics.
            let (service, rpc) = label.split_once('/').unwrap_or((label, ""));
            let span = tracing::info_span!(
                "rpc",
                otel.name = %label,
                otel.kind = "server",
                otel.status_code = Empty,
                rpc.system = "grpc",
                rpc.service = %service,
                rpc.method = %rpc,
                rpc.grpc.status_code = Empty,
                trace_id = Empty,
            );
            let parent = opentelemetry::global::get_text_map_propagator(|p| {
                p.extract(&Headers(request.headers()))
            });
            let _ = span.set_parent(parent);
            span
        };
        let otel_id = span.context().span().span_context().trace_id();
        let trace_id = if otel_id != opentelemetry::trace::TraceId::INVALID {
            otel_id.to_string()
        } else {
            traceparent_trace_id(request.headers()).unwrap_or_else(|| "-".to_owned())
        };
        if traced {
            span.record("trace_id", trace_id.as_str());
        }
        let mut access = Access {
            label,
            method,
            quiet,
            peer,
            trace_id,
            caller,
            start: Instant::now(),
            code: None,
            span: span.clone(),
            done: false,
        };
        let response = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(async move {
            let response = tracing::Instrument::instrument(response, span).await;
            let response = match response {
                Ok(r) => r,
                Err(e) => {
                    access.code = Some(tonic::Code::Internal as i32);
                    access.finish();
                    return Err(e);
                }
            };
            access.code = status_of(response.headers());
            Ok(response.map(|body| {
                tonic::body::Body::new(Logged {
                    inner: body,
                    access: Some(access),
                })
            }))
        })
    }
}

/// A response body that logs its RPC when it ends, or when it is dropped
/// unfinished (its `Access` finishes on drop).
struct Logged {
    inner: tonic::body::Body,
    access: Option<Access>,
}

impl http_body::Body for Logged {
    type Data = tonic::codegen::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_of) {
                    if let Some(a) = self.access.as_mut() {
                        a.code = Some(code);
                    }
                }
            }
            Poll::Ready(Some(Err(status))) => {
                if let Some(a) = self.access.as_mut() {
                    a.code = Some(status.code() as i32);
                }
            }
            Poll::Ready(None) => {
                if let Some(mut a) = self.access.take() {
                    a.finish();
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_named_as_grpc_names_them() {
        assert_eq!(code_name(7), "PERMISSION_DENIED");
        assert_eq!(code_name(0), "OK");
        assert_eq!(code_name(16), "UNAUTHENTICATED");
        // Every code, as tonic's own names spell it in camel case.
        for n in 0..17 {
            let camel = format!("{:?}", tonic::Code::from_i32(n));
            assert_eq!(code_name(n).replace('_', ""), camel.to_uppercase(), "{n}");
        }
        assert_eq!(code_name(99), "UNKNOWN");
    }

    #[test]
    fn durations_are_written_in_milliseconds_to_the_microsecond() {
        use std::time::Duration;
        let mut room = [0u8; 40];
        assert_eq!(millis(Duration::ZERO, &mut room), "0.000");
        assert_eq!(millis(Duration::from_nanos(1_234_567), &mut room), "1.235");
        assert_eq!(millis(Duration::from_nanos(999_499), &mut room), "0.999");
        assert_eq!(millis(Duration::from_secs(30), &mut room), "30000.000");
        assert_eq!(
            millis(Duration::from_secs(u64::MAX), &mut room),
            "18446744073709551615000.000"
        );
    }

    #[test]
    fn a_traceparent_gives_its_trace_id() {
        let mut h = http::HeaderMap::new();
        assert_eq!(traceparent_trace_id(&h), None);
        h.insert(
            "traceparent",
            http::HeaderValue::from_static(
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            ),
        );
        assert_eq!(
            traceparent_trace_id(&h).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        h.insert(
            "traceparent",
            http::HeaderValue::from_static(
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            ),
        );
        assert_eq!(traceparent_trace_id(&h), None);
    }
}
