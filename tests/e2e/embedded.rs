//! `clef serve` without a database URL: the embedded Postgres, through the
//! real binary.

use std::{net::SocketAddr, path::PathBuf, process::Stdio, time::Duration};

use clef::pb;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};
use tonic::Code;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

use crate::common::*;

pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("clef-{tag}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn clef(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clef"));
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env_remove("CLEF_DATA_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// A `clef serve` started by [`serving`].
pub struct Serving {
    pub child: Child,
    /// A channel to its gRPC address.
    pub channel: tonic::transport::Channel,
    /// Everything it writes to stderr, read to the end in the background
    /// (handed over once it has stopped).
    pub stderr: tokio::task::JoinHandle<String>,
}

/// Starts `cmd` (a `clef serve` listening on `127.0.0.1:0`) and waits until
/// its health says `SERVING`.
pub async fn serving(mut cmd: Command) -> Serving {
    use tokio::io::AsyncReadExt;
    let mut child = cmd.spawn().unwrap();
    let mut err = child.stderr.take().unwrap();
    let stderr = tokio::spawn(async move {
        let mut s = String::new();
        err.read_to_string(&mut s).await.ok();
        s
    });
    let (addr, _, _) = started(&mut child).await;
    wait_serving(addr).await;
    Serving {
        child,
        channel: connect(addr).await,
        stderr,
    }
}

/// Waits for the health check of `addr` to answer `SERVING`.
pub async fn wait_serving(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(channel) = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
        {
            let status = HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(|r| r.into_inner().status);
            if status.is_ok_and(|s| s == ServingStatus::Serving as i32) {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "server never became SERVING"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads the child's stdout up to "clef serving on ADDR"; returns the address
/// and the connection key printed before it, if any. The rest of stdout is
/// drained in the background and returned by the handle.
pub async fn started(
    child: &mut Child,
) -> (SocketAddr, Option<String>, tokio::task::JoinHandle<String>) {
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let read = async {
        let mut key = None;
        while let Some(line) = lines.next_line().await.unwrap() {
            let line = line.trim();
            if line.starts_with(clef::domain::key::PREFIX) {
                key = Some(line.to_owned());
            }
            if let Some(addr) = line.strip_prefix("clef serving on ") {
                return (addr.parse().unwrap(), key);
            }
        }
        panic!("clef serve exited before serving");
    };
    let (addr, key) = tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("clef serve started in time");
    let rest = tokio::spawn(async move {
        let mut rest = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            rest.push_str(&line);
            rest.push('\n');
        }
        rest
    });
    (addr, key, rest)
}

pub async fn terminate(mut child: Child) -> std::process::ExitStatus {
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("clef stopped in time")
        .unwrap()
}

#[tokio::test]
async fn embedded_postgres_keeps_data_across_restarts() {
    let dir = temp_dir("embedded");
    let dir_s = dir.to_str().unwrap().to_owned();

    // First start: initdb, migrations, a bootstrap operator whose key is printed.
    let mut first = clef(&["serve", "--data-dir", &dir_s, "--listen", "127.0.0.1:0"])
        .spawn()
        .unwrap();
    let (addr, key, _) = started(&mut first).await;
    let key = key.expect("bootstrap operator key printed");
    wait_serving(addr).await;
    let channel = connect(addr).await;
    let mut c = pb::account_service_client::AccountServiceClient::with_interceptor(
        channel,
        Bearer::new(Some(&key)),
    );
    let org = create_org(&mut c, "Persisted").await;
    create_account(&mut c, &org, "00042").await;

    // A second server on the same data dir refuses to start, clearly.
    let second = clef(&["serve", "--data-dir", &dir_s, "--listen", "127.0.0.1:0"])
        .output()
        .await
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("in use by another clef process"), "{err}");

    // `operator create` reaches the running server's database.
    let op = clef(&["operator", "create", "night-shift", "--data-dir", &dir_s])
        .output()
        .await
        .unwrap();
    assert!(
        op.status.success(),
        "{}",
        String::from_utf8_lossy(&op.stderr)
    );
    let stdout = String::from_utf8(op.stdout).unwrap();
    let second_key = stdout.lines().last().unwrap().trim().to_owned();
    assert!(second_key.starts_with(clef::domain::key::PREFIX));

    // SIGTERM stops clef and its Postgres.
    let status = terminate(first).await;
    assert!(status.success(), "clef exited with {status}");
    assert!(
        !dir.join("pg/postmaster.pid").exists(),
        "postgres left running"
    );

    // Second start: same data, no new bootstrap key, both operator keys work.
    let mut again = clef(&["serve", "--data-dir", &dir_s, "--listen", "127.0.0.1:0"])
        .spawn()
        .unwrap();
    let (addr, new_key, rest) = started(&mut again).await;
    assert_eq!(new_key, None, "no second bootstrap key");
    wait_serving(addr).await;
    for k in [&key, &second_key] {
        let mut c = pb::account_service_client::AccountServiceClient::with_interceptor(
            connect(addr).await,
            Bearer::new(Some(k)),
        );
        let got = c
            .get_account(pb::GetAccountRequest {
                code: "00042".into(),
            })
            .await
            .expect("account survived the restart")
            .into_inner();
        assert_eq!(got.organization_id, org);
        expect_code(
            c.get_account(pb::GetAccountRequest { code: "42".into() })
                .await,
            Code::NotFound,
        );
    }
    let status = terminate(again).await;
    assert!(status.success());
    let printed = rest.await.unwrap();
    assert!(
        !printed.contains(clef::domain::key::PREFIX),
        "a key was printed: {printed}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A `clef serve` process on a fresh database of the test Postgres.
pub(crate) struct Served {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    /// An operator's key (made with `clef operator create`).
    pub(crate) key: String,
}

/// Starts `clef serve` (with `extra` arguments) on a fresh database, with
/// an operator; returns once it listens (not necessarily SERVING yet).
/// A fresh database with an operator made by `clef operator create`: its
/// URL and the operator's key.
pub(crate) async fn database_with_operator() -> (String, String) {
    let url = database_url(&fresh_database().await);
    let op = clef(&["operator", "create", "root", "--database-url", &url])
        .output()
        .await
        .unwrap();
    assert!(
        op.status.success(),
        "{}",
        String::from_utf8_lossy(&op.stderr)
    );
    let key = String::from_utf8(op.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_owned();
    (url, key)
}

pub(crate) async fn serve_fresh(extra: &[&str]) -> Served {
    let (url, key) = database_with_operator().await;
    let mut args = vec!["serve", "--database-url", &url, "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut child = clef(&args).stderr(Stdio::null()).spawn().unwrap();
    let (addr, _, _) = started(&mut child).await;
    Served { child, addr, key }
}
