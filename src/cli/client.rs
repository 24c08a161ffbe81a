//! Client subcommands: talk gRPC to `--endpoint` with the key in `CLEF_KEY`.

use std::{io::Write, path::PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::interceptor::InterceptedService,
    transport::Channel,
    Request, Status,
};

use crate::{
    domain::{account::parse_id, user::UserKey},
    pb,
};

/// Where the server is and who is calling.
#[derive(Debug, Args)]
pub struct Endpoint {
    /// The clef server.
    #[arg(long, env = "CLEF_ENDPOINT", default_value = "http://127.0.0.1:50051")]
    pub endpoint: String,
    /// The caller's connection key.
    #[arg(long = "key", env = "CLEF_KEY", hide_env_values = true)]
    pub key: String,
}

type Auth = Box<dyn FnMut(Request<()>) -> Result<Request<()>, Status> + Send>;

impl Endpoint {
    async fn channel(&self) -> anyhow::Result<(Channel, MetadataValue<Ascii>)> {
        let channel = Channel::from_shared(self.endpoint.clone())
            .context("invalid --endpoint")?
            .connect()
            .await
            .with_context(|| format!("cannot reach {}", self.endpoint))?;
        let bearer: MetadataValue<Ascii> = format!("Bearer {}", self.key.trim())
            .parse()
            .context("CLEF_KEY is not a valid header value")?;
        Ok((channel, bearer))
    }

    async fn intercepted(&self) -> anyhow::Result<InterceptedService<Channel, Auth>> {
        let (channel, bearer) = self.channel().await?;
        let auth: Auth = Box::new(move |mut req: Request<()>| {
            req.metadata_mut().insert("authorization", bearer.clone());
            Ok(req)
        });
        Ok(InterceptedService::new(channel, auth))
    }
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
        })
        .await
        .map_err(status)?
        .into_inner();
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut rows = 0;
    while let Some(chunk) = stream.message().await.map_err(status)? {
        out.write_all(&chunk.data)?;
        rows += chunk.rows;
    }
    out.flush()?;
    eprintln!("exported {rows} rows");
    Ok(())
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
            expires_at: None,
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

/// A refused call as an error message: the code, the message, and each field
/// or account at fault.
fn status(s: Status) -> anyhow::Error {
    use tonic_types::StatusExt;
    let mut msg = format!("{:?}: {}", s.code(), s.message());
    let details = s.get_error_details();
    if let Some(b) = details.bad_request() {
        for v in &b.field_violations {
            msg.push_str(&format!("\n  {}: {}", v.field, v.description));
        }
    }
    if let Some(p) = details.precondition_failure() {
        for v in &p.violations {
            msg.push_str(&format!(
                "\n  {} ({}): {}",
                v.subject, v.r#type, v.description
            ));
        }
    }
    anyhow::anyhow!(msg)
}
