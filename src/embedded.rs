//! The embedded Postgres: when no database URL is given, clef runs a Postgres
//! of its own from the binaries installed on the machine.
//!
//! Layout of the data dir:
//! - `clef.lock`: held (flock) by the `clef serve` that owns the directory, so
//!   a second one fails instead of corrupting the cluster;
//! - `pg/`: the cluster (`initdb`), owned by the user Postgres runs as;
//! - `run/`: the Unix socket directory; Postgres listens on no TCP port;
//! - `postgres.log`: what Postgres prints.
//!
//! Postgres refuses to run as root: when clef runs as root, Postgres runs as
//! the `postgres` user. It is started in its own process group (so a Ctrl-C in
//! the terminal reaches clef, which drains RPCs before stopping it) and with a
//! parent-death signal (so it never outlives a killed clef).

use std::{
    fs::{self, File, OpenOptions},
    io::{Read, Seek, SeekFrom, Write},
    os::unix::{
        fs::{MetadataExt, PermissionsExt},
        process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context};
use nix::{
    fcntl::{Flock, FlockArg},
    sys::signal::{kill, Signal},
    unistd::{Pid, User},
};
use sqlx::{postgres::PgConnectOptions, ConnectOptions, Connection};

const SUPERUSER: &str = "clef";
const DATABASE: &str = "clef";

/// A running embedded Postgres owned by this process.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    child: Option<Child>,
    socket_dir: PathBuf,
    log_path: PathBuf,
    _lock: Flock<File>,
}

/// How to reach the database of a data dir.
#[derive(Debug)]
pub enum DataDir {
    /// We own it and started its Postgres.
    Started(EmbeddedPostgres),
    /// Another `clef serve` owns it; its Postgres listens in this socket dir.
    Attached(PathBuf),
}

impl DataDir {
    pub fn connect_options(&self) -> PgConnectOptions {
        match self {
            DataDir::Started(pg) => pg.connect_options(),
            DataDir::Attached(socket_dir) => socket_options(socket_dir),
        }
    }
}

/// Starts Postgres on `dir`, or attaches to the one a running `clef serve`
/// owns there when `attach` is true (for `clef operator create`).
pub async fn open(dir: &Path, attach: bool) -> anyhow::Result<DataDir> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create data dir {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve data dir {}", dir.display()))?;
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(dir.join("clef.lock"))
        .context("cannot open clef.lock")?;
    let mut lock = match Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, _)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            if attach {
                return Ok(DataDir::Attached(dir.join("run")));
            }
            bail!(
                "data dir {} is in use by another clef process (pid {}); stop it or choose another --data-dir",
                dir.display(),
                holder.trim()
            );
        }
    };
    lock.set_len(0)?;
    lock.seek(SeekFrom::Start(0))?;
    writeln!(lock, "{}", std::process::id())?;

    let mut pg = EmbeddedPostgres::start(&dir, lock)?;
    pg.wait_ready().await?;
    Ok(DataDir::Started(pg))
}

impl EmbeddedPostgres {
    fn start(dir: &Path, lock: Flock<File>) -> anyhow::Result<Self> {
        let bin = find_bindir()?;
        let run_as = unprivileged_user(dir)?;
        let cluster = dir.join("pg");
        let socket_dir = dir.join("run");
        let log_path = dir.join("postgres.log");
        for d in [&cluster, &socket_dir] {
            fs::create_dir_all(d)?;
            fs::set_permissions(d, fs::Permissions::from_mode(0o700))?;
            if let Some(user) = &run_as {
                nix::unistd::chown(d.as_path(), Some(user.uid), Some(user.gid)).with_context(
                    || format!("cannot hand {} to user {}", d.display(), user.name),
                )?;
            }
        }
        if !cluster.join("PG_VERSION").exists() {
            tracing::info!(dir = %cluster.display(), "initialising embedded postgres cluster");
            let out = command(&bin.join("initdb"), &run_as, dir)
                .args(["-D"])
                .arg(&cluster)
                .args(["-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-locale"])
                .output()
                .context("cannot run initdb")?;
            if !out.status.success() {
                bail!(
                    "initdb failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut cmd = command(&bin.join("postgres"), &run_as, dir);
        cmd.arg("-D")
            .arg(&cluster)
            .args(["-c", "listen_addresses="])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", socket_dir.display()))
            .args([
                "-c",
                "unix_socket_permissions=0700",
                "-c",
                "max_connections=200",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        // SAFETY: the closure only makes one async-signal-safe syscall
        // (prctl) between fork and exec. std applies uid/gid before pre_exec
        // closures, and the credential change would clear the setting.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGINT).map_err(std::io::Error::from)
            });
        }
        let child = cmd.spawn().context("cannot start postgres")?;
        tracing::info!(pid = child.id(), socket = %socket_dir.display(), "started embedded postgres");
        Ok(Self {
            child: Some(child),
            socket_dir,
            log_path,
            _lock: lock,
        })
    }

    /// Connection options for the clef database.
    pub fn connect_options(&self) -> PgConnectOptions {
        socket_options(&self.socket_dir)
    }

    /// Waits until Postgres accepts connections and the clef database exists.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let admin = self.connect_options().database("postgres");
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!(
                        "embedded postgres exited ({status}) during start-up:\n{}",
                        self.log_tail()
                    );
                }
            }
            match admin.connect().await {
                Ok(mut conn) => {
                    let exists: bool = sqlx::query_scalar(
                        "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
                    )
                    .bind(DATABASE)
                    .fetch_one(&mut conn)
                    .await?;
                    if !exists {
                        sqlx::query(&format!("CREATE DATABASE {DATABASE}"))
                            .execute(&mut conn)
                            .await?;
                    }
                    conn.close().await?;
                    return Ok(());
                }
                Err(e) if Instant::now() > deadline => {
                    bail!(
                        "embedded postgres did not accept connections within 60 s: {e}\n{}",
                        self.log_tail()
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Fast shutdown: clients are disconnected, the cluster is checkpointed.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop_inner(Duration::from_secs(30)).await
    }

    async fn stop_inner(&mut self, grace: Duration) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = Pid::from_raw(child.id() as i32);
        kill(pid, Signal::SIGINT).ok();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                tracing::info!("embedded postgres stopped");
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        kill(pid, Signal::SIGQUIT).ok();
        child.wait()?;
        Err(anyhow!(
            "embedded postgres did not stop within {grace:?}; it was killed"
        ))
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        // Reached on error paths; the normal path calls `stop`.
        if let Some(mut child) = self.child.take() {
            kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).ok();
            let _ = child.wait();
        }
    }
}

fn socket_options(socket_dir: &Path) -> PgConnectOptions {
    PgConnectOptions::new()
        .socket(socket_dir)
        .username(SUPERUSER)
        .database(DATABASE)
}

fn command(program: &Path, run_as: &Option<User>, cwd: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(cwd).env("LC_ALL", "C");
    if let Some(user) = run_as {
        cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    cmd
}

/// `$CLEF_PG_BIN`, else the directory of `initdb` on PATH, else the newest
/// `/usr/lib/postgresql/*/bin`.
fn find_bindir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CLEF_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("postgres").is_file() {
                return Ok(dir);
            }
        }
    }
    let mut candidates: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    candidates.sort();
    candidates.pop().map(|(_, bin)| bin).ok_or_else(|| {
        anyhow!(
            "no Postgres binaries found (looked for initdb on PATH and in /usr/lib/postgresql/*/bin); \
             install them (apt-get install postgresql) or pass --database-url"
        )
    })
}

/// The user Postgres must run as: `None` (ourselves) unless we are root.
fn unprivileged_user(dir: &Path) -> anyhow::Result<Option<User>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let user = User::from_name("postgres")?.ok_or_else(|| {
        anyhow!("running as root, and there is no `postgres` user to run Postgres as")
    })?;
    // The postgres user must be able to reach the data dir.
    let mut ancestor = Some(dir);
    while let Some(d) = ancestor {
        let meta = fs::metadata(d)?;
        if meta.uid() != user.uid.as_raw() && meta.mode() & 0o001 == 0 {
            if d == dir {
                fs::set_permissions(d, fs::Permissions::from_mode(meta.mode() | 0o711))?;
            } else {
                bail!(
                    "the postgres user cannot reach {}: {} is not searchable by other users; \
                     choose a --data-dir outside it (e.g. /var/lib/clef)",
                    dir.display(),
                    d.display()
                );
            }
        }
        ancestor = d.parent();
    }
    Ok(Some(user))
}
