//! Logs and traces. Logs go to stderr (text, or JSON with
//! `CLEF_LOG_FORMAT=json`), filtered by `RUST_LOG` (default `info`; the
//! access lines have the target `clef::access`). When
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans (one per RPC, see
//! `observe`) are also exported over OTLP (gRPC, or HTTP with protobuf).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{trace::SdkTracerProvider, Resource};
use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer};

/// Flushes pending spans and log lines when dropped.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    _logs: tracing_appender::non_blocking::WorkerGuard,
}

/// `RUST_LOG` (default `info`), with the transport's frame-by-frame
/// chatter and Postgres's notices (`relation ... already exists, skipping`
/// at every start) capped at warn unless it names those targets itself.
fn filter(rust_log: Option<&str>) -> EnvFilter {
    let raw = rust_log.filter(|r| !r.trim().is_empty()).unwrap_or("info");
    let mut directives = raw.to_owned();
    for target in [
        "h2",
        "hyper",
        "hyper_util",
        "tower",
        "sqlx::postgres::notice",
    ] {
        if !raw.contains(target) {
            directives.push_str(&format!(",{target}=warn"));
        }
    }
    EnvFilter::try_new(&directives).unwrap_or_else(|e| {
        eprintln!("warning: RUST_LOG {raw:?} is not a valid filter ({e}); logging at info");
        EnvFilter::new("info")
    })
}

/// An error and its causes, each said once: a cause whose text its
/// effect already contains (`tcp connect error: tcp connect error`) is
/// left out.
pub fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_timestamps_are_rfc3339_in_micros() {
        use chrono::{TimeZone, Utc};
        let base = Utc.with_ymd_and_hms(2026, 12, 4, 23, 59, 59).unwrap();
        let mut out = [0u8; TIMESTAMP_ROOM];
        for micros in [
            0,
            7,
            123_456,
            999_999,
            1_000_000,
            86_400_000_001,
            59_000_010,
        ] {
            let t = base + chrono::Duration::microseconds(micros);
            let want = t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            assert_eq!(timestamp(t, &mut out), want);
            // Again, from the second kept.
            assert_eq!(timestamp(t, &mut out), want);
        }
        let far = Utc.with_ymd_and_hms(12026, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(timestamp(far, &mut out), "+12026-01-01T00:00:00.000000Z");
    }

    #[test]
    fn an_access_line_reads_as_the_logs_write_theirs() {
        let mut line = AccessLine {
            message: "rpc",
            method: "clef.v1.AuthorizationService/Check",
            code: "OK",
            duration_ms: "0.123",
            principal: "0190b5c4-8f2e-7cc1-9a53-1f0e6d2c3b4a",
            peer: "127.0.0.1:5000",
            trace_id: "-",
        };
        let mut buf = Vec::new();
        assert!(format_access(&mut buf, false, &line));
        let text = String::from_utf8(buf).unwrap();
        let (stamp, rest) = text.split_once("  ").unwrap();
        assert_eq!(stamp.len(), TIMESTAMP_LEN);
        assert!(
            chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
            "{stamp}"
        );
        assert_eq!(
            rest,
            "INFO clef::access: rpc method=clef.v1.AuthorizationService/Check code=OK duration_ms=0.123 \
             principal=0190b5c4-8f2e-7cc1-9a53-1f0e6d2c3b4a peer=127.0.0.1:5000 trace_id=-\n"
        );
        line.method = "a b\"c";
        let mut buf = Vec::new();
        assert!(format_access(&mut buf, false, &line));
        assert!(String::from_utf8(buf)
            .unwrap()
            .contains(r#" method="a b\"c" code="#));
        let mut buf = Vec::new();
        assert!(format_access(&mut buf, true, &line));
        let j: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(j["fields"]["method"], "a b\"c");
        assert_eq!(j["target"], "clef::access");
        assert_eq!(j["timestamp"].as_str().map(str::len), Some(TIMESTAMP_LEN));
    }

    #[test]
    fn a_chain_says_each_cause_once() {
        let e = anyhow::anyhow!("tcp connect error").context("tcp connect error: refused");
        let e = e.context("cannot reach the database");
        assert_eq!(
            chain(&e),
            "cannot reach the database: tcp connect error: refused"
        );
    }
}

/// Whether spans are exported (OTLP configured): without it, an RPC that
/// brings no `traceparent` gets no span at all (`observe`), which keeps the
/// hot path cheap.
static TRACING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn tracing_exported() -> bool {
    TRACING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Where access lines go: the logs' own writer, in their format.
struct AccessWriter {
    /// Lines not written yet: appended under a short lock by the RPCs,
    /// written to stderr by a thread of their own every 50 ms (and at
    /// exit), so that an RPC neither makes a syscall nor wakes a thread.
    pending: std::sync::Mutex<Vec<u8>>,
    json: bool,
}

/// How often access lines are written out.
const ACCESS_FLUSH: std::time::Duration = std::time::Duration::from_millis(50);

/// Writes the access lines gathered so far to stderr.
fn flush_access() {
    flush_access_with(&mut Vec::new());
}

/// The same, swapping the pending lines with `spare` (empty, its capacity
/// kept by the writer thread): neither buffer is given back and grown again
/// at every flush (with a page fault per new page, on the RPCs' side).
fn flush_access_with(spare: &mut Vec<u8>) {
    use std::io::Write;
    let Some(out) = ACCESS.get() else {
        return;
    };
    match out.pending.lock() {
        Ok(mut p) if !p.is_empty() => std::mem::swap(&mut *p, spare),
        _ => return,
    }
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(spare);
    let _ = err.flush();
    spare.clear();
    // After a stall (stderr blocked, up to 16 MiB pending), not all of it
    // kept for good.
    if spare.capacity() > 1 << 20 {
        spare.shrink_to(64 * 1024);
    }
}

static ACCESS: std::sync::OnceLock<AccessWriter> = std::sync::OnceLock::new();

/// One access line, as `observe` gathers it.
#[derive(serde::Serialize)]
pub struct AccessLine<'a> {
    pub message: &'static str,
    pub method: &'a str,
    pub code: &'a str,
    pub duration_ms: &'a str,
    pub principal: &'a str,
    pub peer: &'a str,
    pub trace_id: &'a str,
}

#[derive(serde::Serialize)]
struct JsonLine<'a> {
    timestamp: &'a str,
    level: &'static str,
    fields: &'a AccessLine<'a>,
    target: &'static str,
}

/// Writes an access line in the logs' format (text or JSON, as
/// `tracing-subscriber` writes its own lines) into the pending lines, which
/// a thread writes out every 50 ms: an RPC pays a few hundred nanoseconds
/// for it, not the general formatter's microseconds nor a syscall
/// (measured: `bench/README.md`). `false` when the logs are
/// not set up here (the library in tests): the caller logs through
/// `tracing` then. The filter (`RUST_LOG`, target `clef::access`) is the
/// caller's to check.
pub fn write_access(line: &AccessLine) -> bool {
    let Some(out) = ACCESS.get() else {
        return false;
    };
    thread_local! {
        /// The line being written, its room kept from one RPC to the next.
        static LINE: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(512));
    }
    // A thread whose locals are being torn down has no buffer: `false`,
    // the caller logs through `tracing`.
    LINE.try_with(|cell| {
        let Ok(mut buf) = cell.try_borrow_mut() else {
            return false;
        };
        let buf = &mut *buf;
        buf.clear();
        if !format_access(buf, out.json, line) {
            return false;
        }
        match out.pending.lock() {
            Ok(mut p) => {
                // Bounded: past 16 MiB unwritten (stderr blocked), lines
                // wait for the writer rather than grow memory.
                if p.len() > 16 << 20 {
                    drop(p);
                    flush_access();
                    return out
                        .pending
                        .lock()
                        .map(|mut p| p.extend_from_slice(buf))
                        .is_ok();
                }
                p.extend_from_slice(buf);
                true
            }
            Err(_) => false,
        }
    })
    .unwrap_or(false)
}

/// Appends `line` to `buf` as the logs' format writes it, newline included.
fn format_access(buf: &mut Vec<u8>, json: bool, line: &AccessLine) -> bool {
    use std::io::Write;
    let mut stamp = [0u8; TIMESTAMP_ROOM];
    let now = timestamp(chrono::Utc::now(), &mut stamp);
    if json {
        let j = JsonLine {
            timestamp: now,
            level: "INFO",
            fields: line,
            target: "clef::access",
        };
        if serde_json::to_writer(&mut *buf, &j).is_err() {
            return false;
        }
    } else {
        buf.extend_from_slice(now.as_bytes());
        buf.extend_from_slice(b"  INFO clef::access: ");
        buf.extend_from_slice(line.message.as_bytes());
        buf.extend_from_slice(b" method=");
        // Names and codes are plain; a method (the request's path) is
        // quoted and escaped unless it is plain too.
        let plain = line.method.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'/' | b'_' | b'-' | b':' | b'[' | b']')
        });
        if plain {
            buf.extend_from_slice(line.method.as_bytes());
        } else {
            let _ = write!(buf, "{:?}", line.method);
        }
        for (name, value) in [
            (&b" code="[..], line.code),
            (b" duration_ms=", line.duration_ms),
            (b" principal=", line.principal),
            (b" peer=", line.peer),
            (b" trace_id=", line.trace_id),
        ] {
            buf.extend_from_slice(name);
            buf.extend_from_slice(value.as_bytes());
        }
    }
    buf.push(b'\n');
    true
}

/// `2026-12-04T21:05:06.123456Z`: RFC 3339, UTC, microseconds.
const TIMESTAMP_LEN: usize = 27;
/// Room for one (a year past 9999 takes a sign and more digits).
const TIMESTAMP_ROOM: usize = 40;

/// `now` as access lines give it, written into `out`. The date and time to
/// the second are formatted once a second (per thread); each line writes
/// its microseconds.
fn timestamp(now: chrono::DateTime<chrono::Utc>, out: &mut [u8; TIMESTAMP_ROOM]) -> &str {
    thread_local! {
        /// The second last formatted, and `YYYY-MM-DDTHH:MM:SS.` for it.
        static SECOND: std::cell::Cell<(i64, [u8; 20])> = const { std::cell::Cell::new((i64::MIN, [0; 20])) };
    }
    let (secs, micros) = (now.timestamp(), now.timestamp_subsec_micros().min(999_999));
    let (mut second, mut prefix) = SECOND.get();
    if second != secs {
        let text = now.format("%Y-%m-%dT%H:%M:%S.").to_string();
        match <[u8; 20]>::try_from(text.as_bytes()) {
            Ok(p) => {
                (second, prefix) = (secs, p);
                SECOND.set((second, prefix));
            }
            // A year past 9999: the general formatter, every time.
            Err(_) => {
                let full = now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                let n = full.len().min(TIMESTAMP_ROOM);
                out[..n].copy_from_slice(&full.as_bytes()[..n]);
                return std::str::from_utf8(&out[..n]).unwrap_or("-");
            }
        }
    }
    out[..20].copy_from_slice(&prefix);
    let mut m = micros;
    for i in (20..26).rev() {
        out[i] = b'0' + (m % 10) as u8;
        m /= 10;
    }
    out[26] = b'Z';
    std::str::from_utf8(&out[..TIMESTAMP_LEN]).unwrap_or("-")
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        flush_access();
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the global subscriber. Call once, inside the Tokio runtime.
pub fn init() -> anyhow::Result<TelemetryGuard> {
    let filter = filter(std::env::var("RUST_LOG").ok().as_deref());
    let json = std::env::var("CLEF_LOG_FORMAT").is_ok_and(|f| f == "json");
    // Lines are written by a thread of their own (an access line per RPC
    // must not cost a write on the request's path); none is dropped: a
    // full buffer waits.
    let (writer, logs) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        // Buffered: the writer thread writes what it has gathered at once
        // (it flushes whenever it has caught up), not a syscall per line.
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    if ACCESS
        .set(AccessWriter {
            pending: std::sync::Mutex::new(Vec::with_capacity(64 * 1024)),
            json,
        })
        .is_ok()
    {
        std::thread::Builder::new()
            .name("clef-access-log".into())
            .spawn(|| {
                let mut spare = Vec::with_capacity(64 * 1024);
                loop {
                    std::thread::sleep(ACCESS_FLUSH);
                    flush_access_with(&mut spare);
                }
            })?;
    }
    let fmt = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(writer)
            .boxed()
    } else {
        // Colours only for a person at a terminal, never into a pipe or a file.
        use std::io::IsTerminal;
        tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(writer)
            .boxed()
    };

    // W3C trace context: a caller's `traceparent` becomes the parent of
    // its RPC's span (`observe`).
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let provider = match otlp_var("ENDPOINT") {
        Some(endpoint) => Some(tracer_provider(&endpoint)?),
        None => None,
    };
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("clef")));

    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()?;
    TRACING.store(provider.is_some(), std::sync::atomic::Ordering::Relaxed);
    Ok(TelemetryGuard {
        provider,
        _logs: logs,
    })
}

/// An OTLP exporter setting, as the SDK reads it: the traces' own variable
/// (`OTEL_EXPORTER_OTLP_TRACES_<NAME>`) first, then the general one
/// (`OTEL_EXPORTER_OTLP_<NAME>`); empty counts as unset.
fn otlp_var(name: &str) -> Option<String> {
    [
        format!("OTEL_EXPORTER_OTLP_TRACES_{name}"),
        format!("OTEL_EXPORTER_OTLP_{name}"),
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok().filter(|value| !value.is_empty()))
}

/// The OTLP exporter behind the traces: OTLP/gRPC unless
/// `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL` says `http/protobuf`. The SDK reads
/// the `OTEL_EXPORTER_OTLP_*` and `OTEL_TRACES_SAMPLER*` variables (over
/// HTTP, `OTEL_EXPORTER_OTLP_ENDPOINT` gets `/v1/traces` appended, the
/// traces' own endpoint is used as it is); `OTEL_SERVICE_NAME` and
/// `OTEL_RESOURCE_ATTRIBUTES` name the service (`clef` when neither does).
/// An `https://` endpoint is spoken to over TLS (the system's roots, or
/// `OTEL_EXPORTER_OTLP_CERTIFICATE`), never in clear.
fn tracer_provider(endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    let ca = match otlp_var("CERTIFICATE") {
        Some(ca) if endpoint.starts_with("https://") => Some(
            std::fs::read(&ca)
                .map_err(|e| anyhow::anyhow!("OTEL_EXPORTER_OTLP_CERTIFICATE {ca}: {e}"))?,
        ),
        _ => None,
    };
    let protocol = otlp_var("PROTOCOL").unwrap_or_default();
    let exporter = match protocol.as_str() {
        "" | "grpc" => grpc_exporter(endpoint, ca)?,
        "http/protobuf" => http_exporter(ca)?,
        other => anyhow::bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={other} is not supported: clef exports traces over grpc or http/protobuf"
        ),
    };
    let exporter = Reported {
        inner: exporter,
        failing: std::sync::atomic::AtomicBool::new(false),
    };
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|n| !n.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    let resource = if named {
        Resource::builder().build()
    } else {
        Resource::builder().with_service_name("clef").build()
    };
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// OTLP/gRPC (tonic), over TLS for an `https://` endpoint.
fn grpc_exporter(
    endpoint: &str,
    ca: Option<Vec<u8>>,
) -> anyhow::Result<opentelemetry_otlp::SpanExporter> {
    use opentelemetry_otlp::WithTonicConfig as _;
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    if endpoint.starts_with("https://") {
        let mut tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
        if let Some(pem) = ca {
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
        }
        builder = builder.with_tls_config(tls);
    }
    Ok(builder.build()?)
}

/// OTLP/HTTP with protobuf bodies. The batch processor exports from a
/// thread of its own, outside the runtime, hence reqwest's blocking client
/// (rustls, the system's roots); it is built on a thread of its own too,
/// as a blocking client may not be built inside the runtime.
fn http_exporter(ca: Option<Vec<u8>>) -> anyhow::Result<opentelemetry_otlp::SpanExporter> {
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
    let timeout = otlp_var("TIMEOUT").and_then(|ms| ms.parse().ok()).map_or(
        std::time::Duration::from_secs(10),
        std::time::Duration::from_millis,
    );
    let client = std::thread::spawn(move || -> anyhow::Result<reqwest::blocking::Client> {
        let mut client = reqwest::blocking::Client::builder().timeout(timeout);
        if let Some(pem) = ca {
            for cert in reqwest::Certificate::from_pem_bundle(&pem)? {
                client = client.add_root_certificate(cert);
            }
        }
        Ok(client.build()?)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the OTLP/HTTP client could not be built"))??;
    Ok(opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_http_client(client)
        .build()?)
}

/// The OTLP exporter, saying when exporting starts to fail (once, with the
/// error) and when it works again, rather than failing silently or at every
/// batch.
#[derive(Debug)]
struct Reported {
    inner: opentelemetry_otlp::SpanExporter,
    failing: std::sync::atomic::AtomicBool,
}

impl opentelemetry_sdk::trace::SpanExporter for Reported {
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        use std::sync::atomic::Ordering::SeqCst;
        let result = self.inner.export(batch).await;
        match &result {
            Err(e) if !self.failing.swap(true, SeqCst) => {
                tracing::warn!(error = %e, "trace export failing (said again only once it works)")
            }
            Ok(()) if self.failing.swap(false, SeqCst) => {
                tracing::info!("trace export works again")
            }
            _ => {}
        }
        result
    }

    fn shutdown_with_timeout(
        &mut self,
        timeout: std::time::Duration,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
