//! Assembles the gRPC server: the clef services, health, reflection (v1 and
//! v1alpha), one tracing span per RPC, and graceful shutdown.

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;
use tonic::transport::{server::TcpIncoming, Identity, Server, ServerTlsConfig};
use tonic_health::{server::HealthReporter, ServingStatus};

use crate::{
    api::{
        accounts::AccountApi, audit::AuditApi, auth::Authenticator, authz::AuthzApi,
        credentials::CredentialApi, export::ExportApi, grants::GrantApi, import::ImportApi,
        keys::KeyApi, links::LinkApi, roles::RoleApi, teams::TeamApi, users::UserApi, Ctx,
    },
    authz::{Engine, EngineConfig},
    limits::{LimitsLayer, H2_MAX_HEADER_LIST, MAX_MESSAGE_BYTES},
    pb::{
        self, account_service_server::AccountServiceServer,
        audit_service_server::AuditServiceServer,
        authorization_service_server::AuthorizationServiceServer,
        connection_key_service_server::ConnectionKeyServiceServer,
        credential_service_server::CredentialServiceServer,
        export_service_server::ExportServiceServer, grant_service_server::GrantServiceServer,
        import_service_server::ImportServiceServer, link_service_server::LinkServiceServer,
        role_service_server::RoleServiceServer, team_service_server::TeamServiceServer,
        user_service_server::UserServiceServer,
    },
    store::Store,
};

/// The services whose health follows Postgres' reachability. The empty name
/// is the server as a whole.
pub const SERVICES: &[&str] = &[
    "",
    "clef.v1.AccountService",
    "clef.v1.UserService",
    "clef.v1.LinkService",
    "clef.v1.GrantService",
    "clef.v1.ConnectionKeyService",
    "clef.v1.AuthorizationService",
    "clef.v1.ImportService",
    "clef.v1.ExportService",
    "clef.v1.CredentialService",
    "clef.v1.AuditService",
    "clef.v1.RoleService",
    "clef.v1.TeamService",
];

/// Health of this name is `SERVING` while decisions are answered from
/// memory (the change feed proven alive and current within the staleness
/// bound), `NOT_SERVING` while they come from Postgres: a detail for
/// operators; the replica answers correctly either way.
pub const CHANGE_FEED: &str = "clef.ChangeFeed";

/// How long an RPC may take to answer (a stream: its first message). A
/// caller's shorter `grpc-timeout` wins.
const RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// TCP keepalive on accepted connections.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// HTTP/2 pings on idle connections, and how long an answer may take
/// before the connection is closed.
const H2_KEEPALIVE: Duration = Duration::from_secs(30);
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long in-flight RPCs may drain after shutdown begins (past the drain
/// delay): the longest unary answer (`RPC_TIMEOUT`) and a little more.
const DRAIN_LIMIT: Duration = Duration::from_secs(35);

/// How often the health monitor pings Postgres.
const HEALTH_INTERVAL: Duration = Duration::from_millis(500);

/// How the server runs beyond its database and socket.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Decision-cache sizes and the staleness bound.
    pub engine: EngineConfig,
    /// TLS: the server's certificate chain and private key (PEM). Without
    /// it, plaintext.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    /// With TLS: the CA (PEM) that must have signed every client's
    /// certificate (mutual TLS); `None`: no client certificate asked.
    pub tls_client_ca: Option<Vec<u8>>,
    /// The password hashing pool; `None`: OWASP cost, sized for the machine.
    pub hasher: Option<crate::hasher::Hasher>,
    /// How the outbox worker delivers messages.
    pub delivery: crate::outbox::Delivery,
    /// How long audit events are kept.
    pub audit: AuditOptions,
    /// Where Prometheus scrapes `/metrics` (its own listener; none: off).
    pub metrics: Handoff,
    /// On shutdown, how long health says NOT_SERVING before in-flight RPCs
    /// drain (time for load balancers to take the replica out).
    pub drain_delay: Duration,
}

/// A listener handed to the server once (so that `ServeOptions` stays
/// `Clone`): bound by the caller, who knows its address.
#[derive(Debug, Clone, Default)]
pub struct Handoff(Arc<std::sync::Mutex<Option<TcpListener>>>);

impl Handoff {
    pub fn new(listener: TcpListener) -> Self {
        Handoff(Arc::new(std::sync::Mutex::new(Some(listener))))
    }

    fn take(&self) -> Option<TcpListener> {
        self.0.lock().ok()?.take()
    }
}

/// The audit trail's retention.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// Events older than this are pruned (`None`: kept forever).
    pub retention: Option<Duration>,
    /// How often the pruner looks.
    pub prune_every: Duration,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            retention: None,
            prune_every: Duration::from_secs(60),
        }
    }
}

/// Events pruned per transaction: small batches, so that pruning never
/// holds a lock or a snapshot for long.
const PRUNE_BATCH: i64 = 1000;

/// Deletes the events older than the retention, in small batches, every
/// `prune_every`, on the store's clock.
async fn prune_audit(store: Store, options: AuditOptions) {
    let Some(retention) = options.retention else {
        return;
    };
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let mut failing = false;
    loop {
        let cutoff = store.clock().now() - retention;
        let mut pruned = 0;
        loop {
            match store.prune_audit(cutoff, PRUNE_BATCH).await {
                Ok(0) => break,
                Ok(n) => {
                    pruned += n;
                    failing = false;
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "audit events could not be pruned; will retry");
                    }
                    failing = true;
                    break;
                }
            }
        }
        if pruned > 0 {
            tracing::info!(pruned, %cutoff, "audit events pruned");
        }
        tokio::time::sleep(options.prune_every).await;
    }
}

/// Serves on `listener` until `shutdown` resolves, then drains in-flight RPCs.
pub async fn serve(
    store: Store,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    serve_with(store, listener, ServeOptions::default(), shutdown).await
}

/// [`serve`] with explicit options.
pub async fn serve_with(
    store: Store,
    listener: TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let mut builder = Server::builder();
    if let Some((cert, key)) = &options.tls {
        let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        if let Some(ca) = &options.tls_client_ca {
            tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(ca));
        }
        builder = builder
            .tls_config(tls)
            .context("invalid TLS certificate, key or client CA")?;
    }
    let engine = Engine::new(store.clone(), options.engine);
    let change_listener = engine.spawn_listener();
    let (reporter, health) = tonic_health::server::health_reporter();
    // Nothing is SERVING until the monitor has reached Postgres once.
    for service in SERVICES {
        reporter
            .set_service_status(*service, ServingStatus::NotServing)
            .await;
    }
    reporter
        .set_service_status(CHANGE_FEED, ServingStatus::NotServing)
        .await;
    let monitor = tokio::spawn(monitor_health(
        store.clone(),
        engine.clone(),
        reporter.clone(),
    ));

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let hasher = match options.hasher {
        Some(h) => h,
        None => crate::hasher::Hasher::for_this_machine(Default::default())?,
    };
    let (stop_outbox, outbox_stopped) = tokio::sync::watch::channel(false);
    let outbox = tokio::spawn(crate::outbox::run(
        store.clone(),
        options.delivery,
        outbox_stopped,
    ));
    let pruner = tokio::spawn(prune_audit(store.clone(), options.audit));
    let metrics = options
        .metrics
        .take()
        .map(|l| tokio::spawn(serve_metrics(l, store.clone(), engine.clone())));
    // Streams that never end by themselves (audit watches) are told when
    // shutdown begins, so that the drain of in-flight RPCs can finish.
    let (stopping, stopping_rx) = tokio::sync::watch::channel(false);
    let drain_delay = options.drain_delay;
    let monitor_stop = monitor.abort_handle();
    let shutdown = async move {
        shutdown.await;
        // Out of rotation first: health says NOT_SERVING (the monitor is
        // stopped, so that it cannot say otherwise), for `drain_delay`
        // while load balancers notice; then in-flight RPCs drain.
        monitor.abort();
        let _ = monitor.await;
        for service in SERVICES.iter().chain([&CHANGE_FEED]) {
            reporter
                .set_service_status(*service, ServingStatus::NotServing)
                .await;
        }
        tracing::info!(
            delay_ms = drain_delay.as_millis() as u64,
            "shutting down: health is NOT_SERVING"
        );
        tokio::time::sleep(drain_delay).await;
        let _ = stopping.send(true);
    };
    // A drain that does not end (health watches and other streams a client
    // keeps open) is cut after DRAIN_LIMIT.
    let mut drain_started = stopping_rx.clone();
    let auth = Authenticator::new(store.clone());
    let ctx = Ctx {
        store: store.clone(),
        auth: auth.clone(),
        hasher,
    };
    // Every service takes and sends messages up to the documented limit.
    macro_rules! limited {
        ($server:expr) => {
            $server
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES)
        };
    }
    // Accepted sockets without Nagle's algorithm (small answers must not
    // wait for the peer's delayed ACK), with TCP keepalives.
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(TCP_KEEPALIVE));
    let result = builder
        .timeout(RPC_TIMEOUT)
        .http2_max_header_list_size(H2_MAX_HEADER_LIST)
        .http2_keepalive_interval(Some(H2_KEEPALIVE))
        .http2_keepalive_timeout(Some(H2_KEEPALIVE_TIMEOUT))
        .layer(crate::observe::RpcLayer)
        .layer(LimitsLayer)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(limited!(AccountServiceServer::new(AccountApi::new(
            store, auth
        ))))
        .add_service(limited!(UserServiceServer::new(UserApi(ctx.clone()))))
        .add_service(limited!(LinkServiceServer::new(LinkApi(ctx.clone()))))
        .add_service(limited!(GrantServiceServer::new(GrantApi(ctx.clone()))))
        .add_service(limited!(RoleServiceServer::new(RoleApi(ctx.clone()))))
        .add_service(limited!(TeamServiceServer::new(TeamApi(ctx.clone()))))
        .add_service(limited!(ImportServiceServer::new(ImportApi(ctx.clone()))))
        .add_service(limited!(ExportServiceServer::new(ExportApi(ctx.clone()))))
        .add_service(limited!(CredentialServiceServer::new(CredentialApi(
            ctx.clone()
        ))))
        .add_service(limited!(AuditServiceServer::new(AuditApi {
            ctx: ctx.clone(),
            revisions: engine.revisions(),
            stopping: stopping_rx,
        })))
        .add_service(limited!(ConnectionKeyServiceServer::new(KeyApi(ctx))))
        .add_service(limited!(AuthorizationServiceServer::new(AuthzApi::new(
            engine
        ))))
        .serve_with_incoming_shutdown(incoming, shutdown);
    let result = tokio::select! {
        r = result => r,
        _ = async {
            let _ = drain_started.wait_for(|s| *s).await;
            tokio::time::sleep(DRAIN_LIMIT).await;
        } => {
            tracing::warn!(limit_s = DRAIN_LIMIT.as_secs(), "in-flight RPCs still open after the drain limit: stopping anyway");
            Ok(())
        }
    };
    monitor_stop.abort();
    change_listener.abort();
    pruner.abort();
    if let Some(m) = metrics {
        m.abort();
    }
    let _ = stop_outbox.send(true);
    let _ = outbox.await;
    result?;
    Ok(())
}

/// Serves `GET /metrics` (Prometheus text format) over HTTP/1.1 until
/// aborted; anything else is 404.
async fn serve_metrics(listener: TcpListener, store: Store, engine: Arc<Engine>) {
    use http_body_util::Full;
    use hyper::{body::Bytes, server::conn::http1, service::service_fn, Response};
    // At most 16 scrapers at once, each connection for at most 30 s (its
    // headers within 10 s); the connections end with this task.
    let slots = Arc::new(tokio::sync::Semaphore::new(16));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: cannot accept");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let (store, engine) = (store.clone(), engine.clone());
        let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let (store, engine) = (store.clone(), engine.clone());
            async move {
                if req.uri().path() != "/metrics" {
                    let mut r = Response::new(Full::new(Bytes::from_static(b"not found\n")));
                    *r.status_mut() = hyper::StatusCode::NOT_FOUND;
                    return Ok::<_, std::convert::Infallible>(r);
                }
                let body = scrape(&store, &engine).await;
                let mut r = Response::new(Full::new(Bytes::from(body)));
                r.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                Ok(r)
            }
        });
        connections.spawn(async move {
            let _slot = slot;
            let io = hyper_util::rt::TokioIo::new(stream);
            let conn = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(io, service);
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        });
    }
}

/// One scrape: the counters, and what is read now (Postgres's part within
/// 2 s, else left out: the scrape still answers while Postgres is down).
async fn scrape(store: &Store, engine: &Engine) -> String {
    let mut s = crate::metrics::Snapshot::default();
    engine.scrape(&mut s);
    let pool = store.pool();
    s.pool_idle = pool.num_idle() as i64;
    s.pool_in_use = i64::from(pool.size()) - s.pool_idle;
    s.postgres_up = store.reachable();
    if s.postgres_up {
        if let Ok(Ok((committed, pending, parked))) =
            tokio::time::timeout(Duration::from_secs(2), store.scrape()).await
        {
            s.revision_committed = Some(committed);
            s.outbox_pending = Some(pending);
            s.outbox_parked = Some(parked);
        }
    }
    crate::metrics::render(&s)
}

/// Keeps health in step with Postgres: `NOT_SERVING` while it cannot be
/// reached, `SERVING` again by itself when it returns.
async fn monitor_health(store: Store, engine: Arc<Engine>, reporter: HealthReporter) {
    let mut last = Some(false);
    let mut feed = false;
    loop {
        if engine.serves_from_memory() != feed {
            feed = !feed;
            let status = if feed {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            reporter.set_service_status(CHANGE_FEED, status).await;
        }
        let ok = tokio::time::timeout(Duration::from_secs(2), store.ping())
            .await
            .is_ok_and(|r| r.is_ok());
        let status = if ok {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        store.set_reachable(ok);
        if last != Some(ok) {
            if ok {
                tracing::info!("database reachable: serving");
            } else {
                tracing::warn!("database unreachable: not serving");
            }
            for service in SERVICES {
                reporter.set_service_status(*service, status).await;
            }
            last = Some(ok);
        }
        tokio::time::sleep(HEALTH_INTERVAL).await;
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested");
}
