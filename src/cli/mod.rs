//! The command line. `serve` runs the server; `operator create` and `migrate`
//! talk to the database directly; `bench` holds the benchmark's tools.

pub mod bench;
pub mod client;
mod load;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use sqlx::postgres::PgConnectOptions;
use tokio::net::TcpListener;

use crate::{
    authz::EngineConfig,
    domain::principal::PrincipalKind,
    embedded::{self, DataDir},
    server,
    store::Store,
};

/// clef: accounts, users, rights and connection keys over gRPC.
#[derive(Debug, Parser)]
#[command(name = "clef", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the gRPC server.
    Serve(ServeArgs),
    /// Manages operators (talks to the database directly).
    Operator {
        #[command(subcommand)]
        command: OperatorCommand,
    },
    /// Applies pending database migrations and exits.
    Migrate(DatabaseArgs),
    /// Imports users from a CSV file into an account, with a progress bar;
    /// per-line results as CSV on standard output (or --output).
    Import(client::ImportArgs),
    /// Fetches the report of an account's latest import (kept 7 days).
    ImportReport(client::ImportReportArgs),
    /// Streams a CSV export of an account's or an organization's users.
    Export(client::ExportArgs),
    /// Grants the same rights to one user on many accounts (all or nothing).
    GrantAcross(client::GrantAcrossArgs),
    /// Removes every right of a user on every account and deactivates him.
    RevokeEverywhere(client::RevokeEverywhereArgs),
    /// Deactivates the members of a team (and of its sub-teams with
    /// --subteams) that you may deactivate; lists who was left and why.
    Deactivate(client::DeactivateArgs),
    /// Asks the server's gRPC health: exit 0 when SERVING (a container
    /// probe; needs no key).
    Health(client::HealthArgs),
    /// Messages to users that could not be delivered (talks to the
    /// database directly).
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// Invitations of advanced users.
    Invite {
        #[command(subcommand)]
        command: client::InviteCommand,
    },
    /// Users' credentials.
    User {
        #[command(subcommand)]
        command: client::UserCommand,
    },
    /// Prints the audit trail, one JSON object per line (`--follow`: and
    /// the events to come).
    Audit(client::AuditArgs),
    /// Tools of the benchmark script (dataset generator, request bodies).
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Creates an operator and prints its connection key, alone on the last line.
    Create {
        /// A unique name for the operator.
        name: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

/// Where the database is.
#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// Postgres to use. Without it, clef runs an embedded Postgres in --data-dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Home of the embedded Postgres [default: /var/lib/clef as root,
    /// else $XDG_DATA_HOME/clef or ~/.local/share/clef].
    #[arg(long, env = "CLEF_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to serve gRPC on.
    #[arg(long, env = "CLEF_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Connections to Postgres in the pool.
    #[arg(long, env = "CLEF_DB_POOL_SIZE", default_value_t = 32)]
    pub db_pool_size: u32,
    /// How stale decisions from memory may be, in milliseconds: a replica
    /// whose change feed has not proven itself alive and current within
    /// this bound answers decisions from Postgres until it has.
    #[arg(long, env = "CLEF_STALENESS_BOUND_MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub staleness_bound_ms: u64,
    /// Size of the decision cache: the total weight of the entitlements it
    /// keeps (about one unit per key, account and grant: a user with eight
    /// rights on one account weighs about ten). Subjects beyond it are
    /// evicted, least recently and least frequently used first, and loaded
    /// again from Postgres when asked about.
    #[arg(long, env = "CLEF_DECISION_CACHE_WEIGHT", default_value_t = 4_000_000,
          value_parser = clap::value_parser!(u64).range(1_000..))]
    pub decision_cache_weight: u64,
    /// `auto`: apply pending migrations at start-up (under sqlx's advisory
    /// lock); `wait`: never migrate, wait until `clef migrate` (a Job) has
    /// brought the schema to this version.
    #[arg(long, env = "CLEF_MIGRATE", default_value = "auto", value_parser = ["auto", "wait"])]
    pub migrate: String,
    /// On SIGTERM, how long health says NOT_SERVING before in-flight RPCs
    /// drain, in milliseconds (Kubernetes: a few seconds, so that endpoints
    /// are updated before the replica stops accepting).
    #[arg(long, env = "CLEF_DRAIN_DELAY_MS", default_value_t = 0)]
    pub drain_delay_ms: u64,
    /// Address to serve Prometheus metrics on (`GET /metrics`, plain
    /// HTTP, its own port); not given: no metrics endpoint.
    #[arg(long, env = "CLEF_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// The server's TLS certificate chain (PEM); with --tls-key, the server
    /// speaks TLS only.
    #[arg(long, env = "CLEF_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "CLEF_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// A CA (PEM) whose client certificates the server requires: with it,
    /// every client (service principals, the CLI with --client-cert) must
    /// present a certificate it signed, besides its key.
    #[arg(long, env = "CLEF_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    #[command(flatten)]
    pub mail: MailArgs,
    /// Password hashes computed at once (argon2id, 19 MiB each) [default:
    /// half the cores, at least one]; logins beyond them wait.
    #[arg(long, env = "CLEF_PASSWORD_WORKERS")]
    pub password_workers: Option<usize>,
    /// Logins that may wait for a hashing worker; beyond, RESOURCE_EXHAUSTED.
    #[arg(long, env = "CLEF_PASSWORD_QUEUE", default_value_t = 64)]
    pub password_queue: usize,
    /// How long audit events are kept (`90d`, `12h`...); default: forever.
    /// Older ones are pruned in the background, in small batches.
    #[arg(long, env = "CLEF_AUDIT_RETENTION", value_parser = humantime::parse_duration)]
    pub audit_retention: Option<Duration>,
    #[command(flatten)]
    pub db: DatabaseArgs,
}

/// How messages to users (invitations, resets, rights granted) leave.
#[derive(Debug, Args)]
pub struct MailArgs {
    /// SMTP server: smtp://host:port (plaintext; ?tls=required for
    /// STARTTLS), smtps://host:port (TLS), with user:password@ when it
    /// needs them. Without it, messages are logged (kind and recipient,
    /// never a token), not sent.
    #[arg(long, env = "CLEF_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// The sender of every message.
    #[arg(
        long,
        env = "CLEF_SMTP_FROM",
        default_value = "clef <no-reply@localhost>"
    )]
    pub smtp_from: String,
    /// The portal page base URL messages link to (`/invitation?token=`,
    /// `/reset-password?token=`); without it, messages show the token.
    #[arg(long, env = "CLEF_PORTAL_URL")]
    pub portal_url: Option<String>,
    /// The first retry of a failed delivery, in milliseconds; each further
    /// one doubles (at most an hour).
    #[arg(long, env = "CLEF_OUTBOX_RETRY_MS", default_value_t = 5_000)]
    pub outbox_retry_ms: u64,
    /// Failed deliveries before a message is parked (see `clef outbox`).
    #[arg(long, env = "CLEF_OUTBOX_MAX_ATTEMPTS", default_value_t = 10,
          value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub outbox_max_attempts: i32,
}

impl MailArgs {
    pub fn delivery(&self) -> crate::outbox::Delivery {
        crate::outbox::Delivery {
            smtp_url: self.smtp_url.clone(),
            from: self.smtp_from.clone(),
            portal_url: self.portal_url.clone(),
            retry_base: Duration::from_millis(self.outbox_retry_ms),
            max_attempts: self.outbox_max_attempts,
            ..Default::default()
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// Lists messages, newest first (default: the parked ones).
    List {
        /// pending, sent, logged, parked, cancelled, or all.
        #[arg(long, default_value = "parked")]
        state: String,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Puts parked messages back in line (all of them without ids).
    Retry {
        ids: Vec<i64>,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

impl DatabaseArgs {
    fn data_dir(&self) -> PathBuf {
        if let Some(dir) = &self.data_dir {
            return dir.clone();
        }
        if nix::unistd::geteuid().is_root() {
            return PathBuf::from("/var/lib/clef");
        }
        let base = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("."));
        base.join("clef")
    }

    /// The URL's database, or the data dir's (started, or attached to when
    /// `attach` and a `clef serve` owns it).
    async fn open(&self, attach: bool) -> anyhow::Result<(PgConnectOptions, Option<DataDir>)> {
        match &self.database_url {
            Some(url) => {
                let options: PgConnectOptions = url.parse().context("invalid --database-url")?;
                require_sslmode(url, options.get_host())?;
                Ok((options, None))
            }
            None => {
                let dir = self.data_dir();
                let data = embedded::open(&dir, attach).await?;
                Ok((data.connect_options(), Some(data)))
            }
        }
    }
}

/// Refuses a URL to a Postgres beyond this machine that does not say how
/// to use TLS: sqlx's default (`prefer`) would fall back to plaintext, or
/// accept any certificate, without a word.
fn require_sslmode(url: &str, host: &str) -> anyhow::Result<()> {
    let local =
        host.starts_with('/') || matches!(host, "localhost" | "127.0.0.1" | "::1" | "[::1]");
    if local || url.contains("sslmode=") {
        return Ok(());
    }
    anyhow::bail!(
        "the database URL names no sslmode for {host}: add sslmode=verify-full&sslrootcert=CA.pem \
         (TLS, verified), sslmode=require (TLS, not verified) or sslmode=disable (plaintext)"
    )
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Operator {
            command: OperatorCommand::Create { name, db },
        } => operator_create(&name, db).await,
        Command::Bench { command } => bench::run(command).await,
        Command::Outbox { command } => outbox(command).await,
        Command::Invite { command } => client::invite(command).await,
        Command::User { command } => client::user(command).await,
        Command::Import(args) => client::import(args).await,
        Command::ImportReport(args) => client::import_report(args).await,
        Command::Export(args) => client::export(args).await,
        Command::Audit(args) => client::audit(args).await,
        Command::GrantAcross(args) => client::grant_across(args).await,
        Command::RevokeEverywhere(args) => client::revoke_everywhere(args).await,
        Command::Deactivate(args) => client::deactivate(args).await,
        Command::Health(args) => client::health(args).await,
        Command::Migrate(db) => {
            let (options, data) = db.open(true).await?;
            let store = Store::connect_lazy(options, 2);
            store.migrate().await.context("migration failed")?;
            stop(data).await
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let (options, data) = args.db.open(false).await?;
    let embedded = data.is_some();
    let result = async {
        let store = Store::connect_lazy(options, args.db_pool_size);
        // SIGTERM is heard from here on (as PID 1 in a container, nothing
        // else would stop a replica waiting for its schema).
        let prepare = async {
            if args.migrate == "wait" {
                store.wait_for_schema().await;
                Ok(())
            } else {
                store.migrate().await.context("migration failed")
            }
        };
        tokio::select! {
            r = prepare => r?,
            () = server::shutdown_signal() => return Ok(()),
        }
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        let metrics = match args.metrics_listen {
            None => server::Handoff::default(),
            Some(at) => {
                anyhow::ensure!(
                    at.port() == 0 || at.port() != addr.port() || at.ip() != addr.ip(),
                    "--metrics-listen must not be the gRPC address"
                );
                let l = TcpListener::bind(at)
                    .await
                    .with_context(|| format!("cannot listen on {at} for metrics"))?;
                let at = l.local_addr()?;
                tracing::info!(%at, "metrics on /metrics");
                println!("clef metrics on http://{at}/metrics");
                server::Handoff::new(l)
            }
        };
        if embedded && store.count_operators().await? == 0 {
            let op = store
                .create_principal(None, PrincipalKind::Operator, "admin")
                .await?;
            print_welcome(addr, op.key.expose_secret());
        }
        tracing::info!(%addr, embedded, "clef serving");
        // On stdout too, so that scripts (and tests) can use `--listen 127.0.0.1:0`.
        println!("clef serving on {addr}");
        let read =
            |p: &PathBuf| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            _ => None,
        };
        let tls_client_ca = args.tls_client_ca.as_ref().map(read).transpose()?;
        let options = server::ServeOptions {
            engine: EngineConfig {
                staleness_bound: Duration::from_millis(args.staleness_bound_ms),
                weight_capacity: args.decision_cache_weight,
                ..EngineConfig::default()
            },
            tls,
            tls_client_ca,
            hasher: match args.password_workers {
                Some(n) => Some(crate::hasher::Hasher::new(
                    Default::default(),
                    n,
                    args.password_queue,
                )?),
                None => None,
            },
            delivery: args.mail.delivery(),
            audit: server::AuditOptions {
                retention: args.audit_retention,
                ..Default::default()
            },
            metrics,
            drain_delay: Duration::from_millis(args.drain_delay_ms),
        };
        server::serve_with(store, listener, options, server::shutdown_signal()).await
    }
    .await;
    let stopped = stop(data).await;
    result.and(stopped)
}

async fn stop(data: Option<DataDir>) -> anyhow::Result<()> {
    match data {
        Some(DataDir::Started(pg)) => pg.stop().await,
        _ => Ok(()),
    }
}

async fn operator_create(name: &str, db: DatabaseArgs) -> anyhow::Result<()> {
    let name = name.trim();
    anyhow::ensure!(
        !name.is_empty() && name.len() <= 100 && !name.chars().any(char::is_control),
        "operator name must be 1-100 printable characters"
    );
    let (options, data) = db.open(true).await?;
    let result = async {
        let store = Store::connect_lazy(options, 2);
        store.migrate().await.context("migration failed")?;
        let op = store
            .create_principal(None, PrincipalKind::Operator, name)
            .await?;
        println!(
            "created operator {name:?} (id {}); its connection key, shown once:",
            op.id
        );
        println!("{}", op.key.expose_secret());
        anyhow::Ok(())
    }
    .await;
    let stopped = stop(data).await;
    result.and(stopped)
}

async fn outbox(command: OutboxCommand) -> anyhow::Result<()> {
    let db = match &command {
        OutboxCommand::List { db, .. } | OutboxCommand::Retry { db, .. } => db,
    };
    let (options, data) = db.open(true).await?;
    let result = async {
        let store = Store::connect_lazy(options, 2);
        match &command {
            OutboxCommand::List { state, limit, .. } => {
                let state = (state != "all").then_some(state.as_str());
                for m in store.messages(state, *limit).await? {
                    println!(
                        "{}",
                        serde_json::json!({
                            "id": m.id,
                            "kind": m.kind,
                            "to": m.recipient,
                            "state": m.state,
                            "attempts": m.attempts,
                            "last_error": m.last_error,
                            "created_at": m.created_at.to_rfc3339(),
                        })
                    );
                }
            }
            OutboxCommand::Retry { ids, .. } => {
                let n = store.retry_parked(ids).await?;
                println!("{n} parked messages back in line");
            }
        }
        anyhow::Ok(())
    }
    .await;
    let stopped = stop(data).await;
    result.and(stopped)
}

fn print_welcome(addr: SocketAddr, key: &str) {
    println!(
        "\nclef: this database had no operator; created operator \"admin\".\n\
         Its connection key is shown once, now; keep it:\n\n    {key}\n\n\
         Try:\n\
         \x20   export CLEF_KEY={key}\n\
         \x20   grpcurl -plaintext {addr} list\n\
         \x20   grpcurl -plaintext -d '{{\"service\":\"\"}}' {addr} grpc.health.v1.Health/Check\n\
         \x20   grpcurl -plaintext -H \"authorization: Bearer $CLEF_KEY\" -d '{{\"display_name\":\"Acme\"}}' {addr} clef.v1.AccountService/CreateOrganization\n"
    );
}

#[cfg(test)]
mod tests {
    use super::require_sslmode;

    #[test]
    fn a_remote_postgres_must_say_how_to_use_tls() {
        assert!(require_sslmode("postgres://u@db.example.com/clef", "db.example.com").is_err());
        for ok in [
            (
                "postgres://u@db.example.com/clef?sslmode=verify-full",
                "db.example.com",
            ),
            ("postgres://u@db/clef?sslmode=disable", "db"),
            ("postgres://u@127.0.0.1:5432/clef", "127.0.0.1"),
            ("postgres://u@localhost/clef", "localhost"),
            ("postgres:///clef?host=/run/pg", "/run/pg"),
        ] {
            assert!(require_sslmode(ok.0, ok.1).is_ok(), "{ok:?}");
        }
    }
}
