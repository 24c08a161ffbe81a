//! A real SMTP server for the tests (Python's aiosmtpd, `smtp_sink.py`),
//! and servers that deliver their outbox to it.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use clef::domain::clock::Clock;
use sqlx::postgres::PgConnectOptions;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

use crate::common::*;

/// A message the SMTP server received.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Mail {
    pub to: Vec<String>,
    pub subject: String,
    pub body: String,
}

impl Mail {
    /// The first token of `prefix` (`clefinv_`, `clefrst_`) in the body.
    pub fn token(&self, prefix: &str) -> Option<String> {
        let start = self.body.find(prefix)?;
        let token: String = self.body[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        Some(token)
    }
}

/// The SMTP server, killed when dropped.
pub struct Smtp {
    pub port: u16,
    dir: tempdir::Dir,
    child: Option<Child>,
}

mod tempdir {
    /// A directory removed when dropped.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Smtp {
    pub async fn start() -> Smtp {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("clef-mail-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut smtp = Smtp {
            port,
            dir: tempdir::Dir(dir),
            child: None,
        };
        smtp.restart().await;
        smtp
    }

    /// Starts it again on the same port (after [`Smtp::stop`]).
    pub async fn restart(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/smtp_sink.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(self.port.to_string())
            .arg(&self.dir.0)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 with aiosmtpd (scripts/test installs it)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the SMTP server starts");
        assert_eq!(ready.unwrap().as_deref(), Some("ready"));
        self.child = Some(child);
    }

    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.ok();
            child.wait().await.ok();
        }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received so far.
    pub fn received(&self) -> Vec<Mail> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&self.dir.0)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }

    /// The messages to `to`, once there are at least `n` of them.
    pub async fn wait_for(&self, to: &str, n: usize) -> Vec<Mail> {
        for _ in 0..300 {
            let got: Vec<Mail> = self
                .received()
                .into_iter()
                .filter(|m| m.to.iter().any(|t| t.eq_ignore_ascii_case(to)))
                .collect();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("fewer than {n} messages to {to}: {:?}", self.received());
    }

    /// The one message to `to` whose subject is `subject`.
    pub async fn wait_subject(&self, to: &str, subject: &str) -> Mail {
        for _ in 0..300 {
            if let Some(m) = self
                .received()
                .into_iter()
                .find(|m| m.subject == subject && m.to.iter().any(|t| t.eq_ignore_ascii_case(to)))
            {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no message {subject:?} to {to}: {:?}", self.received());
    }
}

/// Server options delivering to `smtp`, retrying after 200 ms.
pub fn mailing(smtp: &Smtp) -> clef::server::ServeOptions {
    clef::server::ServeOptions {
        delivery: clef::outbox::Delivery {
            smtp_url: Some(smtp.url()),
            from: "Colis Express <no-reply@colis.example>".into(),
            portal_url: Some("https://portal.example/clef".into()),
            poll: Duration::from_millis(50),
            retry_base: Duration::from_millis(200),
            max_attempts: 50,
        },
        ..test_options()
    }
}

/// A server on its own database delivering to `smtp`.
pub async fn spawn_mailing(smtp: &Smtp, clock: Clock) -> TestApp {
    spawn_app_with_options(fresh_database().await, clock, mailing(smtp)).await
}

/// Another replica on `db` delivering to `smtp`.
pub async fn replica_mailing(smtp: &Smtp, db: PgConnectOptions) -> TestApp {
    spawn_app_with_options(db, Clock::system(), mailing(smtp)).await
}
