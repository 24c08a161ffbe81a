//! `clef bench ...`: tools for the benchmark script (`bench/run.sh`).
//!
//! - `dataset` fills an empty, migrated database with a realistic spread of
//!   users, accounts and grants using `COPY` (minutes for 1 M users and 10 M
//!   grants), and writes a sample of subjects (connection key, account, right
//!   held, user id, a right not held) for the load generator.
//! - `body` encodes a gRPC request frame (`Check` or health) for `h2load -d`.
//! - `load` and `churn` (`load.rs`): many subjects, fixed rate, rights changing.

use std::{io::Write, path::PathBuf, time::Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use prost::Message;
use sqlx::{postgres::PgConnectOptions, ConnectOptions, Connection, PgConnection};
use uuid::Uuid;

use crate::{
    domain::{key::NewKey, principal::PrincipalKind},
    pb,
    store::Store,
};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Fills an empty database with generated users, accounts and grants.
    Dataset(DatasetArgs),
    /// Writes a length-prefixed gRPC frame for `h2load -d`.
    Body(BodyArgs),
    /// Drives Check (or health) over many subjects and connections, closed
    /// loop or at a fixed rate, and prints throughput and latencies. A flag
    /// given twice takes its last value (scripts add to their defaults).
    #[command(args_override_self = true)]
    Load(super::load::LoadArgs),
    /// Grants and takes back a spare right of the subjects at a fixed rate.
    Churn(super::load::ChurnArgs),
}

#[derive(Debug, Args)]
pub struct DatasetArgs {
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    #[arg(long, default_value_t = 1_000_000)]
    pub users: u64,
    #[arg(long, default_value_t = 100_000)]
    pub accounts: u64,
    /// Target number of grants (the result is close to it).
    #[arg(long, default_value_t = 10_000_000)]
    pub grants: u64,
    /// Partners linked to thousands of accounts each.
    #[arg(long, default_value_t = 20)]
    pub partners: u64,
    /// Where to write `subjects.tsv` and `service.key`.
    #[arg(long)]
    pub out: PathBuf,
    /// Subjects written to `subjects.tsv`.
    #[arg(long, default_value_t = 10_000)]
    pub sample: u64,
}

#[derive(Debug, Args)]
pub struct BodyArgs {
    /// `check` (needs --key, --account, --right), `login` (needs --login,
    /// --password: an AuthenticatePassword request) or `health`.
    pub kind: String,
    #[arg(long)]
    pub login: Option<String>,
    /// The password of a `login` body (a benchmark's throwaway user's).
    #[arg(long)]
    pub password: Option<String>,
    #[arg(long)]
    pub key: Option<String>,
    #[arg(long)]
    pub account: Option<String>,
    #[arg(long)]
    pub right: Option<String>,
    #[arg(long, short)]
    pub out: PathBuf,
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Dataset(args) => dataset(args).await,
        BenchCommand::Body(args) => body(args),
        BenchCommand::Load(args) => super::load::load(args).await,
        BenchCommand::Churn(args) => super::load::churn(args).await,
    }
}

fn body(args: BodyArgs) -> anyhow::Result<()> {
    let msg = match args.kind.as_str() {
        "health" => Vec::new(),
        "check" => pb::CheckRequest {
            subject: Some(pb::Subject {
                by: Some(pb::subject::By::ConnectionKey(args.key.context("--key")?)),
            }),
            account_code: args.account.context("--account")?,
            right: args.right.context("--right")?,
            min_revision: 0,
        }
        .encode_to_vec(),
        "login" => pb::AuthenticatePasswordRequest {
            login: args.login.context("--login")?,
            password: args.password.context("--password")?,
        }
        .encode_to_vec(),
        other => anyhow::bail!("unknown body kind {other:?} (check, login or health)"),
    };
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);
    std::fs::write(&args.out, frame)?;
    Ok(())
}

/// xorshift64*, seeded per user so that every table's pass regenerates the
/// same user.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const STANDARD_RIGHTS: &[&str] = &[
    "admin.users",
    "shipping.ws",
    "shipping.ui",
    "delivery.pickup_point_ws",
    "tracking.ws",
    "tracking.tool",
    "tracking.tool_cs",
    "billing.invoices",
    "billing.rates",
    "supplies.order",
    "pickup.manage",
];
const ADVANCED_RIGHTS: &[&str] = &[
    "shipping.ws",
    "shipping.ui",
    "delivery.pickup_point_ws",
    "tracking.ws",
    "tracking.tool",
    "tracking.tool_cs",
];
const SCOPES: &[&str] = &["user_key", "user_tag", "consolidated"];

/// One generated user: kind, accounts (indexes), rights per link.
struct GenUser {
    advanced: bool,
    accounts: Vec<u64>,
    rights_per_link: usize,
}

struct Plan {
    users: u64,
    accounts: u64,
    partners: u64,
    grants_per_link: f64,
}

impl Plan {
    fn user(&self, i: u64) -> GenUser {
        let mut rng = Rng::new(i + 1);
        let (advanced, n) = if i < self.partners {
            (true, 1000 + rng.below(4000))
        } else if i.is_multiple_of(10) {
            (true, 1 + rng.below(3))
        } else {
            (false, 1)
        };
        let n = n.min(self.accounts);
        let start = rng.below(self.accounts);
        let accounts = (0..n).map(|k| (start + k * 7919) % self.accounts).collect();
        let pool = if advanced {
            ADVANCED_RIGHTS.len()
        } else {
            STANDARD_RIGHTS.len()
        };
        let base = self.grants_per_link.floor() as usize;
        let extra = (rng.below(1000) as f64) < (self.grants_per_link.fract() * 1000.0);
        let rights_per_link = (base + usize::from(extra)).clamp(1, pool);
        GenUser {
            advanced,
            accounts,
            rights_per_link,
        }
    }
}

fn user_id(i: u64) -> Uuid {
    Uuid::from_u64_pair(0x0c1e_f000_0000_7000, 0x8000_0000_0000_0000 | i)
}
fn account_id(i: u64) -> Uuid {
    Uuid::from_u64_pair(0x0c1e_fa00_0000_7000, 0x8000_0000_0000_0000 | i)
}
fn org_id(i: u64) -> Uuid {
    Uuid::from_u64_pair(0x0c1e_f0f0_0000_7000, 0x8000_0000_0000_0000 | i)
}
fn account_code(i: u64) -> String {
    format!("{i:07}")
}
/// A deterministic valid user key for user `i`.
fn user_key(i: u64) -> String {
    const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let n = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i << 20);
    (0..12)
        .map(|k| CROCKFORD[((n >> (k * 5)) & 31) as usize] as char)
        .collect()
}

/// Streams rows into `COPY table (columns) FROM STDIN` in 1 MiB chunks.
async fn copy(
    conn: &mut PgConnection,
    table: &str,
    columns: &str,
    rows: u64,
    mut row: impl FnMut(u64, &mut Vec<u8>),
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut sink = conn
        .copy_in_raw(&format!("COPY {table} ({columns}) FROM STDIN"))
        .await?;
    let mut buf = Vec::with_capacity(2 << 20);
    for i in 0..rows {
        row(i, &mut buf);
        if buf.len() > 1 << 20 {
            sink.send(std::mem::take(&mut buf)).await?;
            buf.reserve(2 << 20);
        }
    }
    if !buf.is_empty() {
        sink.send(buf).await?;
    }
    let n = sink.finish().await?;
    eprintln!("  {table}: {n} rows in {:.1?}", started.elapsed());
    Ok(())
}

async fn dataset(args: DatasetArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let options: PgConnectOptions = args
        .database_url
        .parse()
        .context("invalid --database-url")?;
    let store = Store::connect_lazy(options.clone(), 2);
    store.migrate().await?;
    let mut conn = options.connect().await?;
    let existing: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts")
        .fetch_one(&mut conn)
        .await?;
    anyhow::ensure!(
        existing == 0,
        "the database already has accounts: give an empty one"
    );
    // Bulk load: skip foreign-key triggers (the generator keeps references
    // consistent by construction). Needs a superuser, as the bench's own
    // Postgres has.
    sqlx::query("SET session_replication_role = replica")
        .execute(&mut conn)
        .await?;
    sqlx::query("SET synchronous_commit = off")
        .execute(&mut conn)
        .await?;

    let mut plan = Plan {
        users: args.users,
        accounts: args.accounts.max(1),
        partners: args.partners.min(args.users),
        grants_per_link: 1.0,
    };
    // Calibrate rights per link so that the total lands near the target
    // (advanced users can hold fewer rights than standard ones).
    for _ in 0..3 {
        let total: u64 = (0..plan.users)
            .map(|i| {
                let u = plan.user(i);
                u.accounts.len() as u64 * u.rights_per_link as u64
            })
            .sum();
        plan.grants_per_link =
            (plan.grants_per_link * args.grants as f64 / total.max(1) as f64).max(1.0);
    }
    eprintln!(
        "generating {} users, {} accounts, ~{} grants ({:.1} per link)",
        plan.users, plan.accounts, args.grants, plan.grants_per_link
    );
    let orgs = plan.accounts.div_ceil(100);
    copy(
        &mut conn,
        "organizations",
        "id, display_name, revision",
        orgs,
        |i, b| {
            let _ = writeln!(b, "{}\tCustomer {i}\t1", org_id(i));
        },
    )
    .await?;
    copy(
        &mut conn,
        "accounts",
        "id, code, organization_id, display_name, status, revision",
        plan.accounts,
        |i, b| {
            let _ = writeln!(
                b,
                "{}\t{}\t{}\tAgency {i}\tactive\t1",
                account_id(i),
                account_code(i),
                org_id(i / 100)
            );
        },
    )
    .await?;
    copy(
        &mut conn,
        "users",
        "id, kind, status, login, display_name, last_name, first_name, job_title, email, phone, address_lines, \
         postal_code, city, user_key, home_account_id, default_account_id, search_text, revision",
        plan.users,
        |i, b| {
            let u = plan.user(i);
            let home = account_id(u.accounts[0]);
            if u.advanced {
                let _ = writeln!(
                    b,
                    "{}\tadvanced\tactive\tuser{i}@example.com\tFirst{i} Last{i}\tLast{i}\tFirst{i}\tPartner\tuser{i}@example.com\t0102030405\t{{\"1 rue du Port\"}}\t75001\tParis\t{}\t\\N\t{home}\tlast{i} first{i} user{i}@example.com\t1",
                    user_id(i),
                    user_key(i)
                );
            } else {
                let _ = writeln!(
                    b,
                    "{}\tstandard\tactive\tuser{i}\tFirst{i} Last{i}\tLast{i}\tFirst{i}\t\\N\t\\N\t\\N\t{{}}\t\\N\t\\N\t\\N\t{home}\t{home}\tlast{i} first{i} user{i}\t1",
                    user_id(i)
                );
            }
        },
    )
    .await?;
    let sample_every = (plan.users / args.sample.max(1)).max(1);
    let mut subjects = Vec::new();
    copy(
        &mut conn,
        "connection_keys",
        "id, user_id, secret_hash, display_prefix",
        plan.users,
        |i, b| {
            let key = NewKey::generate().expect("os rng");
            let hash = data_encoding::HEXLOWER.encode(&key.hash());
            let _ = writeln!(
                b,
                "{}\t{}\t\\\\x{hash}\t{}",
                Uuid::now_v7(),
                user_id(i),
                key.display_prefix()
            );
            if Rng::new(i ^ 0x5a5a).below(sample_every) == 0 && i >= plan.partners {
                let u = plan.user(i);
                let rights = if u.advanced {
                    ADVANCED_RIGHTS
                } else {
                    STANDARD_RIGHTS
                };
                // The first of the user's rights, held on his first account,
                // and a right he is not granted there (unscoped, not
                // `admin.users`), for `bench churn`; `-` when he holds all.
                let right = rights[(i as usize) % rights.len()];
                let spare = (u.rights_per_link..rights.len())
                    .map(|k| rights[(i as usize + k) % rights.len()])
                    .find(|r| !r.starts_with("tracking.tool") && *r != "admin.users")
                    .unwrap_or("-");
                subjects.push(format!(
                    "{}\t{}\t{right}\t{}\t{spare}",
                    key.expose_secret(),
                    account_code(u.accounts[0]),
                    user_id(i)
                ));
            }
        },
    )
    .await?;
    let mut links = 0u64;
    copy(
        &mut conn,
        "links",
        "user_id, account_id, tags, revision",
        plan.users,
        |i, b| {
            let u = plan.user(i);
            for a in &u.accounts {
                links += 1;
                let _ = writeln!(
                    b,
                    "{}\t{}\t{{TAG-{}}}\t1",
                    user_id(i),
                    account_id(*a),
                    i % 50
                );
            }
        },
    )
    .await?;
    let mut grants = 0u64;
    copy(
        &mut conn,
        "grants",
        "user_id, account_id, right_code, scope, revision",
        plan.users,
        |i, b| {
            let u = plan.user(i);
            let rights = if u.advanced {
                ADVANCED_RIGHTS
            } else {
                STANDARD_RIGHTS
            };
            for (n, a) in u.accounts.iter().enumerate() {
                // Distinct rights: consecutive ones from an offset of the user's.
                for k in 0..u.rights_per_link {
                    let right = rights[(i as usize + k) % rights.len()];
                    let scope = if right.starts_with("tracking.tool") {
                        SCOPES[(i as usize + n + k) % 3]
                    } else {
                        "\\N"
                    };
                    grants += 1;
                    let _ = writeln!(b, "{}\t{}\t{right}\t{scope}\t1", user_id(i), account_id(*a));
                }
            }
        },
    )
    .await?;
    // Every third link also holds a role (the default "fleet" or "it"), so
    // that decisions answer from expanded roles as well as direct grants.
    let role_ids: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM roles WHERE code IN ('fleet', 'it') ORDER BY code")
            .fetch_all(&mut conn)
            .await?;
    let mut role_grants = 0u64;
    if role_ids.len() == 2 {
        copy(
            &mut conn,
            "role_grants",
            "user_id, account_id, role_id, revision",
            plan.users,
            |i, b| {
                let u = plan.user(i);
                for (n, a) in u.accounts.iter().enumerate() {
                    if (i as usize + n).is_multiple_of(3) {
                        role_grants += 1;
                        let role = role_ids[(i as usize + n) % 2];
                        let _ = writeln!(b, "{}\t{}\t{role}\t1", user_id(i), account_id(*a));
                    }
                }
            },
        )
        .await?;
    }
    sqlx::query("SET session_replication_role = origin")
        .execute(&mut conn)
        .await?;
    sqlx::query("UPDATE revision_counter SET value = value + 1")
        .execute(&mut conn)
        .await?;
    // Vacuum now rather than let autovacuum do it during measurements.
    eprintln!("  vacuum analyze");
    sqlx::query("VACUUM (ANALYZE)").execute(&mut conn).await?;
    conn.close().await?;

    // The principal the load generator calls as, created the normal way.
    let service = store
        .create_principal(
            None,
            PrincipalKind::Service,
            &format!("bench-{}", Uuid::new_v4().simple()),
        )
        .await?;
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("service.key"),
        format!("{}\n", service.key.expose_secret()),
    )?;
    std::fs::write(args.out.join("subjects.tsv"), subjects.join("\n") + "\n")?;
    eprintln!(
        "dataset: {} users, {} accounts, {links} links, {grants} grants, {role_grants} roles held, {} sample subjects; {:.1?}",
        plan.users,
        plan.accounts,
        subjects.len(),
        started.elapsed()
    );
    Ok(())
}
