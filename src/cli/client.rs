//! Client subcommands: talk gRPC to `--endpoint` with the key in `CLEF_KEY`.

use std::{io::Write, path::PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::interceptor::InterceptedService,
    transport::{Certificate, Channel, ClientTlsConfig},
    Request, Status,
};

use crate::{
    domain::{account::parse_id, user::UserKey},
    pb,
};

/// Where the server is and who is calling.
#[derive(Debug, Args)]
pub struct Endpoint {
    /// The clef server: `https://HOST:PORT` (TLS, verified against the
    /// system's roots or --ca-cert) or `http://HOST:PORT` (plaintext).
    #[arg(long, env = "CLEF_ENDPOINT", default_value = "http://127.0.0.1:50051")]
    pub endpoint: String,
    /// The caller's connection key (better in CLEF_KEY: arguments show in
    /// process listings).
    #[arg(long = "key", env = "CLEF_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// A PEM file of the certificate authority that signed the server's
    /// certificate (instead of the system's roots).
    #[arg(long, env = "CLEF_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// This client's certificate (PEM), for a server that asks for one
    /// (`serve --tls-client-ca`); with --client-key.
    #[arg(long, env = "CLEF_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// The private key of --client-cert (PEM).
    #[arg(long, env = "CLEF_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Seconds an unary call may take, and a stream may stay silent, before
    /// the command gives up.
    #[arg(long, env = "CLEF_TIMEOUT", default_value_t = 30)]
    pub timeout: u64,
}

type Auth = Box<dyn FnMut(Request<()>) -> Result<Request<()>, Status> + Send>;

impl Endpoint {
    fn deadline(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout.max(1))
    }

    pub(super) async fn channel(&self) -> anyhow::Result<(Channel, MetadataValue<Ascii>)> {
        let key = self
            .key
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .context("no connection key: set CLEF_KEY to your key (or pass --key)")?;
        let bearer: MetadataValue<Ascii> = format!("Bearer {key}")
            .parse()
            .context("CLEF_KEY is not a valid connection key")?;
        Ok((self.connect().await?, bearer))
    }

    /// A channel to the server, without a key (health).
    pub(super) async fn connect(&self) -> anyhow::Result<Channel> {
        let mut endpoint = Channel::from_shared(self.endpoint.clone())
            .with_context(|| format!("invalid --endpoint {:?}", self.endpoint))?
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(self.deadline());
        match self.endpoint.split_once("://").map(|(scheme, _)| scheme) {
            Some("https") => {
                let mut tls = ClientTlsConfig::new();
                tls = match &self.ca_cert {
                    Some(path) => {
                        let pem = std::fs::read(path)
                            .with_context(|| format!("cannot read --ca-cert {}", path.display()))?;
                        tls.ca_certificate(Certificate::from_pem(pem))
                    }
                    None => tls.with_native_roots(),
                };
                if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
                    let read = |p: &PathBuf| {
                        std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
                    };
                    tls = tls.identity(tonic::transport::Identity::from_pem(
                        read(cert)?,
                        read(key)?,
                    ));
                }
                endpoint = endpoint.tls_config(tls).context("cannot set up TLS")?;
            }
            Some("http") => {}
            _ => bail!(
                "--endpoint {:?} must start with https:// (TLS) or http:// (plaintext)",
                self.endpoint
            ),
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach {}: {}", self.endpoint, root_cause(&e)))?;
        Ok(channel)
    }

    async fn intercepted(&self) -> anyhow::Result<InterceptedService<Channel, Auth>> {
        let (channel, bearer) = self.channel().await?;
        let auth: Auth = Box::new(move |mut req: Request<()>| {
            req.metadata_mut().insert("authorization", bearer.clone());
            Ok(req)
        });
        Ok(InterceptedService::new(channel, auth))
    }

    /// The next message of a server stream, or an error when the server
    /// stays silent longer than the timeout.
    async fn next<T>(&self, stream: &mut tonic::Streaming<T>) -> anyhow::Result<Option<T>> {
        match tokio::time::timeout(self.deadline(), stream.message()).await {
            Ok(next) => next.map_err(status),
            Err(_) => bail!("the server sent nothing for {} s", self.timeout),
        }
    }
}

/// The innermost cause of an error, said once (transport errors repeat
/// their causes in their own messages).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub endpoint: Endpoint,
    /// Export this account's users.
    #[arg(
        long,
        conflicts_with = "organization",
        required_unless_present = "organization"
    )]
    pub account: Option<String>,
    /// Export every account of this organization (id).
    #[arg(long)]
    pub organization: Option<String>,
    /// `excel` (BOM, `;`, codes as text) or `csv`.
    #[arg(long, default_value = "csv")]
    pub dialect: String,
    /// Only the members of this team: its id or its path (`Nord/Atelier 7`).
    #[arg(long)]
    pub team: Option<String>,
    /// With --team: the members of its sub-teams too.
    #[arg(long, requires = "team")]
    pub subteams: bool,
    /// Output file (default: standard output).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

pub async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let dialect = match args.dialect.as_str() {
        "excel" => pb::CsvDialect::Excel,
        "csv" => pb::CsvDialect::Rfc4180,
        other => bail!("unknown --dialect {other:?} (excel or csv)"),
    };
    let of = match (args.account, args.organization) {
        (Some(a), _) => pb::export_users_request::Of::AccountCode(a),
        (_, Some(o)) => pb::export_users_request::Of::OrganizationId(o),
        _ => bail!("give --account or --organization"),
    };
    let mut client =
        pb::export_service_client::ExportServiceClient::new(args.endpoint.intercepted().await?);
    let mut stream = client
        .export_users(pb::ExportUsersRequest {
            of: Some(of),
            dialect: dialect as i32,
            team: args.team.map(|team| pb::TeamFilter {
                team,
                include_subteams: args.subteams,
                ..Default::default()
            }),
        })
        .await
        .map_err(status)?
        .into_inner();
    let mut out = output(args.output.as_ref())?;
    let mut rows = 0;
    while let Some(chunk) = args.endpoint.next(&mut stream).await? {
        out.write_all(&chunk.data)?;
        rows += chunk.rows;
    }
    out.flush()?;
    eprintln!("exported {rows} rows");
    Ok(())
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub endpoint: Endpoint,
    /// The CSV file (UTF-8 or Windows-1252, `,` or `;`).
    pub file: PathBuf,
    /// The account the users are imported into.
    #[arg(long)]
    pub account: String,
    /// `add`, or `sync` (also deactivates the account's users absent from
    /// the file).
    #[arg(long, default_value = "add")]
    pub mode: String,
    /// Validate and report; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// All lines or none.
    #[arg(long)]
    pub atomic: bool,
    /// Let a sync deactivate more than 20 % of the account's users.
    #[arg(long)]
    pub force: bool,
    /// Kind of the users of lines without a TYPE column: advanced or standard.
    #[arg(long, default_value = "advanced")]
    pub kind: String,
    /// Where the per-line results go, as CSV (default: standard output).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Stop the import once this many lines have failed (default: never).
    #[arg(long)]
    pub max_failed: Option<u64>,
}

/// How long an import's answers may pause: an atomic import says nothing
/// while it applies its staged file in one transaction.
const IMPORT_IDLE: std::time::Duration = std::time::Duration::from_secs(600);

/// Lines whose status is one of these went through.
const DONE: [&str; 4] = ["created", "updated", "unchanged", "deactivated"];

/// Streams a file to `ImportUsers` with a progress bar on standard error;
/// fails (non-zero exit) when any line failed.
pub async fn import(args: ImportArgs) -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt;
    let mode = match args.mode.as_str() {
        "add" => pb::ImportMode::Add,
        "sync" => pb::ImportMode::Sync,
        other => bail!("unknown --mode {other:?} (add or sync)"),
    };
    let kind = match args.kind.as_str() {
        "advanced" => pb::UserKind::Advanced,
        "standard" => pb::UserKind::Standard,
        other => bail!("unknown --kind {other:?} (advanced or standard)"),
    };
    let mut file = tokio::fs::File::open(&args.file)
        .await
        .with_context(|| format!("cannot open {}", args.file.display()))?;
    let size = file.metadata().await?.len();
    // Work done, not bytes sent: the bar follows the bytes of the file the
    // server has processed into lines.
    let bar = indicatif::ProgressBar::new(size).with_style(
        indicatif::ProgressStyle::with_template(
            "{bar:20} {percent:>3}% {msg} {elapsed_precise} eta {eta}",
        )
        .expect("a valid template"),
    );
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::ImportUsersRequest {
        msg: Some(pb::import_users_request::Msg::Options(pb::ImportOptions {
            account_code: args.account.clone(),
            mode: mode as i32,
            dry_run: args.dry_run,
            atomic: args.atomic,
            force: args.force,
            default_kind: kind as i32,
            max_failed_lines: args.max_failed.unwrap_or(0) as i64,
        })),
    })
    .await?;
    // The file, in 256 KiB chunks, read as fast as the server takes them.
    let reader = tokio::spawn(async move {
        loop {
            let mut buf = vec![0u8; 256 * 1024];
            let n = file.read(&mut buf).await?;
            if n == 0 {
                return anyhow::Ok(());
            }
            buf.truncate(n);
            let chunk = pb::ImportUsersRequest {
                msg: Some(pb::import_users_request::Msg::Chunk(buf)),
            };
            if tx.send(chunk).await.is_err() {
                return Ok(()); // the call ended
            }
        }
    });
    let mut client =
        pb::import_service_client::ImportServiceClient::new(args.endpoint.intercepted().await?);
    let mut stream = client
        .import_users(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(status)?
        .into_inner();
    // The results file is created with the first answer: an import refused
    // whole leaves none behind.
    let mut out: Option<csv::Writer<Box<dyn Write>>> = None;
    let (mut lines, mut failed) = (0u64, 0u64);
    let mut summary = None;
    let started = std::time::Instant::now();
    let outcome = async {
        loop {
            let next = match tokio::time::timeout(IMPORT_IDLE, stream.message()).await {
                Ok(next) => next.map_err(status)?,
                Err(_) => bail!("the server sent nothing for {} s", IMPORT_IDLE.as_secs()),
            };
            let Some(msg) = next else { break };
            let w = match &mut out {
                Some(w) => w,
                None => {
                    let mut w = csv::Writer::from_writer(output(args.output.as_ref())?);
                    w.write_record(["line", "status", "column", "message", "user_id"])?;
                    out.insert(w)
                }
            };
            for r in msg.results {
                if r.line > 0 {
                    lines += 1;
                }
                let status = line_status_name(r.status);
                if !DONE.contains(&status) {
                    failed += 1;
                }
                w.write_record([
                    &r.line.to_string(),
                    status,
                    &r.column,
                    &r.message,
                    &r.user_id,
                ])?;
            }
            if msg.processed_bytes > 0 {
                bar.set_position(msg.processed_bytes as u64);
            }
            let rate = lines as f64 / started.elapsed().as_secs_f64().max(0.001);
            bar.set_message(format!("{lines} lines {rate:.0}/s {failed} failed"));
            if msg.summary.is_some() {
                summary = msg.summary;
            }
        }
        anyhow::Ok(())
    }
    .await;
    bar.finish_and_clear();
    if let Some(w) = &mut out {
        w.flush()?;
    }
    reader.abort();
    outcome?;
    let summary = summary.context("the server ended the import without a summary")?;
    let mut counts: Vec<_> = summary.counts.iter().collect();
    counts.sort();
    let counts: Vec<String> = counts.iter().map(|(s, n)| format!("{s} {n}")).collect();
    eprintln!(
        "{} lines: {}; {}",
        summary.lines,
        counts.join(", "),
        match (summary.committed, args.dry_run) {
            (true, _) => format!("committed at revision {}", summary.revision),
            (false, true) => "dry run, nothing written".into(),
            (false, false) => "rolled back, nothing written".into(),
        }
    );
    if failed > 0 {
        bail!("{failed} of {} lines failed", summary.lines);
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct ImportReportArgs {
    #[command(flatten)]
    pub endpoint: Endpoint,
    /// The account whose latest import report to fetch.
    #[arg(long)]
    pub account: String,
    /// Output file (default: standard output).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// Writes the latest import report of an account; describes the import on
/// standard error.
pub async fn import_report(args: ImportReportArgs) -> anyhow::Result<()> {
    let mut client =
        pb::import_service_client::ImportServiceClient::new(args.endpoint.intercepted().await?);
    let mut stream = client
        .get_import_report(pb::GetImportReportRequest {
            account_code: args.account.clone(),
        })
        .await
        .map_err(status)?
        .into_inner();
    let mut out = output(args.output.as_ref())?;
    while let Some(msg) = args.endpoint.next(&mut stream).await? {
        if let Some(info) = msg.info {
            let when = |t: Option<prost_types::Timestamp>| {
                t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| "-".into())
            };
            let ended = match &info.summary {
                Some(s) => format!(
                    "{} lines, {}",
                    s.lines,
                    if s.committed {
                        "committed"
                    } else {
                        "not committed"
                    }
                ),
                None if info.stopped.is_empty() => "did not finish".into(),
                None => format!("stopped: {}", info.stopped),
            };
            eprintln!(
                "import into {} started {} by {}: {}; report kept until {}",
                args.account,
                when(info.start_time),
                info.imported_by,
                ended,
                when(info.expire_time)
            );
        }
        out.write_all(&msg.chunk)?;
    }
    out.flush()?;
    Ok(())
}

/// A file, or standard output.
fn output(path: Option<&PathBuf>) -> anyhow::Result<Box<dyn Write>> {
    Ok(match path {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    })
}

/// Which user a mass operation is about.
#[derive(Debug, Args)]
pub struct UserArg {
    /// The user: an id, a user key (XXXX-XXXX-XXXX) or an email.
    #[arg(long)]
    pub user: String,
}

impl UserArg {
    fn selector(&self) -> pb::UserSelector {
        use pb::user_selector::By;
        let u = self.user.trim();
        let by = if parse_id(u).is_ok() {
            By::Id(u.to_owned())
        } else if u.contains('@') {
            By::Email(u.to_owned())
        } else if UserKey::parse(u).is_ok() {
            By::UserKey(u.to_owned())
        } else {
            By::Id(u.to_owned())
        };
        pb::UserSelector { by: Some(by) }
    }
}

#[derive(Debug, Args)]
pub struct GrantAcrossArgs {
    #[command(flatten)]
    pub endpoint: Endpoint,
    #[command(flatten)]
    pub user: UserArg,
    /// Account codes, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub accounts: Vec<String>,
    /// Rights, comma-separated; scoped ones as right:scope
    /// (tracking.tool:user_tag).
    #[arg(long, value_delimiter = ',', required = true)]
    pub rights: Vec<String>,
}

pub async fn grant_across(args: GrantAcrossArgs) -> anyhow::Result<()> {
    let mut rights = Vec::new();
    for r in &args.rights {
        let (right, scope) = r.split_once(':').unwrap_or((r, ""));
        let scope = match scope {
            "" => pb::Scope::Unspecified,
            "user_key" | "cle" => pb::Scope::UserKey,
            "user_tag" | "tag" => pb::Scope::UserTag,
            "consolidated" | "consolide" => pb::Scope::Consolidated,
            other => bail!("unknown scope {other:?} (user_key, user_tag, consolidated)"),
        };
        rights.push(pb::RightGrant {
            right: right.trim().to_owned(),
            scope: scope as i32,
            expire_time: None,
        });
    }
    let mut client =
        pb::grant_service_client::GrantServiceClient::new(args.endpoint.intercepted().await?);
    let r = client
        .grant_across_accounts(pb::GrantAcrossAccountsRequest {
            user: Some(args.user.selector()),
            account_codes: args.accounts.iter().map(|a| a.trim().to_owned()).collect(),
            rights,
        })
        .await
        .map_err(status)?
        .into_inner();
    for o in &r.outcomes {
        println!("{}\t{}", o.account_code, o.outcome);
    }
    eprintln!(
        "user {}: {} accounts, revision {}",
        r.user_id,
        r.outcomes.len(),
        r.revision
    );
    Ok(())
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    #[command(flatten)]
    pub endpoint: Endpoint,
    /// The service to ask about (default: the server as a whole).
    #[arg(long, default_value = "")]
    pub service: String,
}

/// Exits 0 when the server (or `--service`) is SERVING, else 1 saying its
/// status: a probe for containers (compose healthchecks) without another
/// binary. Needs no key.
pub async fn health(args: HealthArgs) -> anyhow::Result<()> {
    use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient};
    let channel = args.endpoint.connect().await?;
    let status = HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: args.service.clone(),
        })
        .await
        .map_err(status)?
        .into_inner()
        .status();
    if status == ServingStatus::Serving {
        println!("SERVING");
        Ok(())
    } else {
        bail!("{}", status.as_str_name())
    }
}

#[derive(Debug, Args)]
pub struct DeactivateArgs {
    #[command(flatten)]
    pub endpoint: Endpoint,
    /// The team whose members are deactivated: its id or its path
    /// (`Nord/Atelier 7`).
    #[arg(long)]
    pub team: String,
    /// With --team: the members of its sub-teams too.
    #[arg(long)]
    pub subteams: bool,
    /// The organization a team path is read in (its id)...
    #[arg(long, conflicts_with = "account")]
    pub organization: Option<String>,
    /// ... or the organization of this account.
    #[arg(long)]
    pub account: Option<String>,
}

/// Deactivates a team's members (seed 001's mass deactivation of a
/// group): those the caller may deactivate; says who was left and why.
pub async fn deactivate(args: DeactivateArgs) -> anyhow::Result<()> {
    let r = pb::user_service_client::UserServiceClient::new(args.endpoint.intercepted().await?)
        .deactivate_users(pb::DeactivateUsersRequest {
            user_ids: Vec::new(),
            team: Some(pb::TeamFilter {
                team: args.team,
                include_subteams: args.subteams,
                organization_id: args.organization.unwrap_or_default(),
                account_code: args.account.unwrap_or_default(),
            }),
        })
        .await
        .map_err(status)?
        .into_inner();
    for u in &r.users {
        println!("deactivated\t{}\t{}", u.id, u.login);
    }
    for s in &r.skipped {
        println!("skipped\t{}\t{}", s.user_id, s.reason);
    }
    eprintln!(
        "{} deactivated, {} skipped (revision {})",
        r.users.len(),
        r.skipped.len(),
        r.revision
    );
    Ok(())
}

#[derive(Debug, Args)]
pub struct RevokeEverywhereArgs {
    #[command(flatten)]
    pub endpoint: Endpoint,
    #[command(flatten)]
    pub user: UserArg,
}

pub async fn revoke_everywhere(args: RevokeEverywhereArgs) -> anyhow::Result<()> {
    let mut client =
        pb::grant_service_client::GrantServiceClient::new(args.endpoint.intercepted().await?);
    let r = client
        .revoke_everywhere(pb::RevokeEverywhereRequest {
            user: Some(args.user.selector()),
        })
        .await
        .map_err(status)?
        .into_inner();
    println!(
        "revoked {} grants; user deactivated (revision {})",
        r.revoked, r.revision
    );
    Ok(())
}

/// A refused call as an error message, said once: the code and the
/// message, or, when the server listed each field or account at fault, the
/// code and that list (the message repeats it).
fn status(s: Status) -> anyhow::Error {
    use tonic_types::StatusExt;
    let details = s.get_error_details();
    let mut lines = Vec::new();
    if let Some(b) = details.bad_request() {
        for v in &b.field_violations {
            lines.push(format!("  {}: {}", v.field, v.description));
        }
    }
    if let Some(p) = details.precondition_failure() {
        for v in &p.violations {
            lines.push(format!("  {} ({}): {}", v.subject, v.r#type, v.description));
        }
    }
    if lines.is_empty() {
        return anyhow::anyhow!("{:?}: {}", s.code(), s.message());
    }
    let head = match s.code() {
        tonic::Code::InvalidArgument => "invalid argument",
        _ => "nothing was changed",
    };
    anyhow::anyhow!("{:?}: {head}:\n{}", s.code(), lines.join("\n"))
}

/// A line's status as reports and summaries name it: `LINE_STATUS_CREATED`
/// is `created`.
pub fn line_status_name(status: i32) -> &'static str {
    match pb::LineStatus::try_from(status) {
        Ok(pb::LineStatus::Created) => "created",
        Ok(pb::LineStatus::Updated) => "updated",
        Ok(pb::LineStatus::Unchanged) => "unchanged",
        Ok(pb::LineStatus::Deactivated) => "deactivated",
        Ok(pb::LineStatus::RightNotHeld) => "right_not_held",
        Ok(pb::LineStatus::InvalidChoice) => "invalid_choice",
        Ok(pb::LineStatus::InvalidUserData) => "invalid_user_data",
        Ok(pb::LineStatus::DuplicateInFile) => "duplicate_in_file",
        Ok(pb::LineStatus::Unspecified) | Err(_) => "unknown",
    }
}

#[derive(Debug, Subcommand)]
pub enum InviteCommand {
    /// Issues a new invitation to an invited user (mailed to him; every
    /// earlier one is dead) and prints until when it is valid.
    Resend {
        #[command(flatten)]
        endpoint: Endpoint,
        /// The user: an id, a user key (XXXX-XXXX-XXXX) or a login.
        #[arg(long)]
        user: String,
        /// Also print the new token (to deliver it yourself), alone on the
        /// last line: for portals and operators (an admin's call gets none).
        #[arg(long)]
        print_token: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Sets a user's password, read from the terminal (twice) or from
    /// standard input (one line), never from an argument. He must change it
    /// at his next login unless --keep.
    SetPassword {
        #[command(flatten)]
        endpoint: Endpoint,
        /// The user: an id, a user key (XXXX-XXXX-XXXX) or a login.
        #[arg(long)]
        user: String,
        /// He may keep it: no change required at his next login.
        #[arg(long)]
        keep: bool,
    },
}

/// The id of the user `user` names (an id, a user key or a login).
async fn user_id_of(endpoint: &Endpoint, user: &str) -> anyhow::Result<String> {
    use pb::get_user_request::By;
    let u = user.trim();
    if parse_id(u).is_ok() {
        return Ok(u.to_owned());
    }
    let by = if UserKey::parse(u).is_ok() {
        By::UserKey(u.to_owned())
    } else {
        By::Login(u.to_owned())
    };
    let mut client = pb::user_service_client::UserServiceClient::new(endpoint.intercepted().await?);
    let found = client
        .get_user(pb::GetUserRequest { by: Some(by) })
        .await
        .map_err(status)?
        .into_inner();
    Ok(found.id)
}

pub async fn invite(command: InviteCommand) -> anyhow::Result<()> {
    let InviteCommand::Resend {
        endpoint,
        user,
        print_token,
    } = command;
    let user_id = user_id_of(&endpoint, &user).await?;
    let mut client =
        pb::credential_service_client::CredentialServiceClient::new(endpoint.intercepted().await?);
    let r = client
        .resend_invitation(pb::ResendInvitationRequest { user_id })
        .await
        .map_err(status)?
        .into_inner();
    let until = r
        .invitation_expire_time
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    println!(
        "invitation sent again, valid until {until}; earlier ones are dead (revision {})",
        r.revision
    );
    if print_token {
        anyhow::ensure!(
            !r.invitation_token.is_empty(),
            "the new token is shown to portals and operators only (it was mailed to the user)"
        );
        println!("{}", r.invitation_token);
    }
    Ok(())
}

pub async fn user(command: UserCommand) -> anyhow::Result<()> {
    let UserCommand::SetPassword {
        endpoint,
        user,
        keep,
    } = command;
    let password = read_password()?;
    let user_id = user_id_of(&endpoint, &user).await?;
    let mut client =
        pb::credential_service_client::CredentialServiceClient::new(endpoint.intercepted().await?);
    let r = client
        .set_password(pb::SetPasswordRequest {
            user_id,
            password,
            keep_without_change: keep,
        })
        .await
        .map_err(status)?
        .into_inner();
    println!(
        "password set{} (revision {})",
        if keep {
            ""
        } else {
            "; to be changed at next login"
        },
        r.revision
    );
    Ok(())
}

/// A password from the terminal (asked twice, not echoed) or, when
/// standard input is not a terminal, its first line.
fn read_password() -> anyhow::Result<String> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("New password: ")?;
        let again = rpassword::prompt_password("Again: ")?;
        anyhow::ensure!(first == again, "the two passwords differ");
        Ok(first)
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        let line = line.strip_suffix('\n').unwrap_or(&line);
        Ok(line.strip_suffix('\r').unwrap_or(line).to_owned())
    }
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub endpoint: Endpoint,
    /// Events about this account (its code).
    #[arg(long)]
    pub account: Option<String>,
    /// Events about this user (id).
    #[arg(long)]
    pub user: Option<String>,
    /// Changes made by this principal (id).
    #[arg(long)]
    pub actor: Option<String>,
    /// Only these actions (`grants_changed`, `user_status_changed`...);
    /// repeatable.
    #[arg(long = "action")]
    pub actions: Vec<String>,
    /// Events from this time: RFC 3339 (`2026-12-01T08:00:00Z`) or a
    /// duration ago (`2h`, `7d`).
    #[arg(long)]
    pub since: Option<String>,
    /// Events of revisions after this one.
    #[arg(long, default_value_t = 0)]
    pub from_revision: i64,
    /// Keeps printing events as they happen (on any replica) instead of
    /// stopping at the last one.
    #[arg(long)]
    pub follow: bool,
}

/// Prints the audit trail, one JSON object per line.
pub async fn audit(args: AuditArgs) -> anyhow::Result<()> {
    let since = match &args.since {
        None => None,
        Some(s) => Some(match chrono::DateTime::parse_from_rfc3339(s) {
            Ok(t) => t.with_timezone(&chrono::Utc),
            Err(_) => {
                let ago = humantime::parse_duration(s).map_err(|_| {
                    anyhow::anyhow!(
                        "--since {s:?} is neither an RFC 3339 time nor a duration like 2h"
                    )
                })?;
                chrono::Utc::now() - chrono::Duration::from_std(ago)?
            }
        }),
    };
    let mut actions = Vec::new();
    for a in &args.actions {
        let name = format!("AUDIT_ACTION_{}", a.to_uppercase());
        match pb::AuditAction::from_str_name(&name) {
            Some(action) if action != pb::AuditAction::Unspecified => actions.push(action as i32),
            _ => bail!("unknown --action {a:?}"),
        }
    }
    let filter = pb::EventFilter {
        account: args.account.clone().unwrap_or_default(),
        user_id: args.user.clone().unwrap_or_default(),
        actor_id: args.actor.clone().unwrap_or_default(),
        actions,
        since_time: since.map(|t| prost_types::Timestamp {
            seconds: t.timestamp(),
            nanos: t.timestamp_subsec_nanos() as i32,
        }),
        until_time: None,
    };
    let mut client =
        pb::audit_service_client::AuditServiceClient::new(args.endpoint.intercepted().await?);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut print = |e: &pb::AuditEvent| -> anyhow::Result<()> {
        serde_json::to_writer(&mut out, &event_json(e))?;
        out.write_all(b"\n")?;
        // A line as soon as it is known, for `jq` and log shippers.
        out.flush()?;
        Ok(())
    };
    if args.follow {
        // Where to resume: after the last event printed. A server going
        // away (a restart, a rolling deploy: UNAVAILABLE) is waited for and
        // the watch resumed there, without a gap or a repeat.
        let (mut revision, mut after_event) = (args.from_revision, 0);
        let mut wait = std::time::Duration::from_millis(500);
        loop {
            let opened = client
                .watch_events(pb::WatchEventsRequest {
                    from_revision: revision,
                    after_event,
                    filter: Some(filter.clone()),
                    // Heartbeats well within --timeout, so that an idle
                    // stream is not taken for a silent server.
                    heartbeat_seconds: (args.endpoint.timeout / 2).clamp(1, 5) as i32,
                })
                .await;
            let why = match opened {
                Err(e) if e.code() == tonic::Code::Unavailable => e.message().to_owned(),
                Err(e) => return Err(status(e)),
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    loop {
                        match tokio::time::timeout(args.endpoint.deadline(), stream.message()).await
                        {
                            Err(_) => {
                                bail!("the server sent nothing for {} s", args.endpoint.timeout)
                            }
                            Ok(Ok(Some(msg))) => {
                                if let Some(pb::watch_events_response::Message::Event(e)) =
                                    msg.message
                                {
                                    print(&e)?;
                                    (revision, after_event) = (e.revision, e.id);
                                    wait = std::time::Duration::from_millis(500);
                                }
                            }
                            Ok(Ok(None)) => break "the server ended the stream".to_owned(),
                            Ok(Err(e)) if e.code() == tonic::Code::Unavailable => {
                                break e.message().to_owned()
                            }
                            Ok(Err(e)) => return Err(status(e)),
                        }
                    }
                }
            };
            eprintln!(
                "watch interrupted ({why}); resuming after revision {revision} event {after_event}"
            );
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(std::time::Duration::from_secs(10));
        }
    }
    let mut token = String::new();
    loop {
        let page = client
            .list_events(pb::ListEventsRequest {
                filter: Some(filter.clone()),
                from_revision: args.from_revision,
                to_revision: 0,
                page_size: 1000,
                page_token: token,
            })
            .await
            .map_err(status)?
            .into_inner();
        for e in &page.events {
            print(e)?;
        }
        if page.next_page_token.is_empty() {
            return Ok(());
        }
        token = page.next_page_token;
    }
}

/// An event as one JSON object: names rather than enum numbers.
fn event_json(e: &pb::AuditEvent) -> serde_json::Value {
    let name = |full: &str, prefix: &str| full.trim_start_matches(prefix).to_lowercase();
    let action = pb::AuditAction::try_from(e.action)
        .map(|a| name(a.as_str_name(), "AUDIT_ACTION_"))
        .unwrap_or_default();
    let changes: serde_json::Map<String, serde_json::Value> = e
        .changes
        .iter()
        .map(|c| {
            let side = |v: &Option<prost_types::Value>| {
                v.as_ref().map_or(serde_json::Value::Null, value_json)
            };
            (
                c.field.clone(),
                serde_json::json!({"before": side(&c.before), "after": side(&c.after)}),
            )
        })
        .collect();
    serde_json::json!({
        "revision": e.revision,
        "id": e.id,
        "time": e.time.as_ref().and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        "actor": e.actor.as_ref().map(|a| serde_json::json!({
            "id": a.id,
            "kind": pb::ActorKind::try_from(a.kind).map(|k| name(k.as_str_name(), "ACTOR_KIND_")).unwrap_or_default(),
            "name": a.name,
        })),
        "action": action,
        "target": e.target.as_ref().map(|t| serde_json::json!({
            "type": pb::TargetType::try_from(t.r#type).map(|k| name(k.as_str_name(), "TARGET_TYPE_")).unwrap_or_default(),
            "id": t.id,
        })),
        "account": (!e.account.is_empty()).then_some(&e.account),
        "changes": changes,
        "summary": e.summary,
        "cause": (!e.cause.is_empty()).then_some(&e.cause),
    })
}

fn value_json(v: &prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match v.kind.as_ref() {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::NumberValue(n)) => serde_json::json!(n),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::ListValue(l)) => {
            serde_json::Value::Array(l.values.iter().map(value_json).collect())
        }
        Some(Kind::StructValue(s)) => serde_json::Value::Object(
            s.fields
                .iter()
                .map(|(k, v)| (k.clone(), value_json(v)))
                .collect(),
        ),
    }
}
