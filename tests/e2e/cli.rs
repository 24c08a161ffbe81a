//! The client subcommands through the real binary: import, import-report,
//! export, grant-across, revoke-everywhere, invite resend, user
//! set-password, outbox.

use clef::pb;

use crate::{common::*, embedded::clef};

/// What a client command did.
struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `clef ARGS` as a client of `app`, with the operator's key.
async fn run(app: &TestApp, args: &[&str]) -> Ran {
    client(
        args,
        &format!("http://{}", app.addr),
        Some(&app.operator_key),
    )
    .await
}

/// Runs `clef ARGS` against `endpoint` with `key` in CLEF_KEY (or none).
async fn client(args: &[&str], endpoint: &str, key: Option<&str>) -> Ran {
    let mut cmd = clef(args);
    cmd.env("CLEF_ENDPOINT", endpoint);
    match key {
        Some(key) => cmd.env("CLEF_KEY", key),
        None => cmd.env_remove("CLEF_KEY"),
    };
    let out = cmd.output().await.unwrap();
    Ran {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test]
async fn export_grant_across_and_revoke_everywhere_from_the_command_line() {
    let app = spawn_app().await;
    let mut ops = app.operator().await;
    let org = create_org(&mut ops.accounts, "Cli").await;
    for code in ["C1", "C2", "C3"] {
        create_account(&mut ops.accounts, &org, code).await;
    }
    let (u, _) = create_user(
        &mut ops,
        advanced("Cléo", "Cli", "cleo@example.com"),
        "C1",
        &[],
        vec![],
    )
    .await
    .unwrap();

    let out = run(
        &app,
        &[
            "grant-across",
            "--user",
            "cleo@example.com",
            "--accounts",
            "C1,C2,C3",
            "--rights",
            "tracking.ws,tracking.tool:tag",
        ],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    let stdout = out.stdout;
    assert_eq!(
        stdout,
        "C1\tgranted\nC2\tlinked_and_granted\nC3\tlinked_and_granted\n"
    );

    // A refusal: non-zero exit, the account at fault named, nothing changed.
    let out = run(
        &app,
        &[
            "grant-across",
            "--user",
            &u.user_key,
            "--accounts",
            "C1,NOPE",
            "--rights",
            "shipping.ws",
        ],
    )
    .await;
    assert!(!out.ok);
    let err = out.stderr;
    assert!(err.contains("NOPE"), "{err}");

    let file =
        std::env::temp_dir().join(format!("clef-export-{}.csv", uuid::Uuid::new_v4().simple()));
    let out = run(
        &app,
        &[
            "export",
            "--organization",
            &org,
            "--dialect",
            "excel",
            "-o",
            file.to_str().unwrap(),
        ],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stderr.contains("exported 3 rows"));
    let csv = std::fs::read_to_string(&file).unwrap();
    assert!(csv.starts_with('\u{feff}'));
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(csv.contains("user_tag"));
    std::fs::remove_file(&file).ok();

    let out = run(
        &app,
        &["revoke-everywhere", "--user", &u.user_key.to_lowercase()],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains("revoked 6 grants"));
    let after = ops
        .users
        .get_user(pb::GetUserRequest {
            by: Some(pb::get_user_request::By::Id(u.id.clone())),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.status, pb::UserStatus::Deactivated as i32);

    // No key: a clear error, not a panic.
    let mut cmd = clef(&["export", "--account", "C1"]);
    cmd.env_remove("CLEF_KEY")
        .env("CLEF_ENDPOINT", format!("http://{}", app.addr));
    let out = cmd.output().await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--key"));
}

#[tokio::test]
async fn import_and_its_report_from_the_command_line() {
    let app = spawn_app().await;
    org_with_account(&app, "Cli", "CI1").await;
    let dir = std::env::temp_dir().join(format!("clef-import-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    // Windows-1252, as a spreadsheet saves it; line 3 is not a choice.
    std::fs::write(
        path("users.csv"),
        b"NOM;PRENOM;IDENTIFIANT;TYPE;shipping.ws\nL\xE9on;Ir\xE8ne;irene;standard;oui\nBec;Zo\xE9;zoe;standard;peut-\xEAtre\n",
    )
    .unwrap();
    let out = run(
        &app,
        &[
            "import",
            &path("users.csv"),
            "--account",
            "CI1",
            "-o",
            &path("results.csv"),
        ],
    )
    .await;
    let stderr = &out.stderr;
    assert!(!out.ok, "a failed line must fail the command");
    assert!(
        stderr.contains("2 lines: created 1, invalid_choice 1; committed"),
        "{stderr}"
    );
    assert!(stderr.contains("1 of 2 lines failed"), "{stderr}");
    let results = std::fs::read_to_string(path("results.csv")).unwrap();
    let lines: Vec<&str> = results.lines().collect();
    assert_eq!(lines[0], "line,status,column,message,user_id");
    assert!(lines[1].starts_with("2,created,"), "{results}");
    assert!(
        lines[2].starts_with("3,invalid_choice,shipping.ws,"),
        "{results}"
    );

    // The same file minus the bad line, to stdout, in a dry run: success.
    std::fs::write(
        path("good.csv"),
        b"NOM;PRENOM;IDENTIFIANT;TYPE;shipping.ws\nL\xE9on;Ir\xE8ne;irene;standard;oui\n",
    )
    .unwrap();
    let out = run(
        &app,
        &[
            "import",
            &path("good.csv"),
            "--account",
            "CI1",
            "--mode",
            "sync",
            "--dry-run",
        ],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains("2,unchanged,"));
    assert!(out.stderr.contains("dry run, nothing written"));

    // The report of that last import.
    let out = run(&app, &["import-report", "--account", "CI1"]).await;
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout.lines().count(), 2, "header and one line");
    assert!(out.stderr.contains("not committed"));

    // Bad arguments and a missing file: clear errors.
    let out = run(&app, &["import", &path("missing.csv"), "--account", "CI1"]).await;
    assert!(!out.ok);
    assert!(out.stderr.contains("cannot open"));
    let out = run(
        &app,
        &[
            "import",
            &path("good.csv"),
            "--account",
            "CI1",
            "--mode",
            "merge",
        ],
    )
    .await;
    assert!(!out.ok);
    assert!(out.stderr.contains("unknown --mode"));
    // An account the caller cannot import into: refused whole.
    let out = run(&app, &["import", &path("good.csv"), "--account", "NOPE"]).await;
    assert!(!out.ok);
    assert!(out.stderr.contains("NotFound"), "{}", out.stderr);
    std::fs::remove_dir_all(&dir).ok();
}

impl Ran {
    /// Asserts a failure told in one `error:` line, with no ANSI escape;
    /// returns that line.
    #[track_caller]
    fn failed_once(&self) -> &str {
        assert!(!self.ok, "succeeded: {}", self.stdout);
        assert!(
            !self.stderr.contains("\x1b["),
            "ANSI escape: {:?}",
            self.stderr
        );
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{:?}", self.stderr);
        errors[0]
    }
}

/// A certificate authority, and a certificate of `localhost` it signed
/// with its key: (ca.pem, cert.pem, key.pem) in `dir`.
fn certificates(dir: &std::path::Path) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    std::fs::write(path("ca.pem"), ca.pem()).unwrap();
    std::fs::write(path("cert.pem"), cert.pem()).unwrap();
    std::fs::write(path("key.pem"), key.serialize_pem()).unwrap();
    (path("ca.pem"), path("cert.pem"), path("key.pem"))
}

/// A TLS channel to `port` on localhost trusting `ca`, once the server
/// there is SERVING.
async fn tls_channel(port: u16, ca: &str) -> tonic::transport::Channel {
    use tonic::transport::{Certificate, Channel, ClientTlsConfig};
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("a TLS connection");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let status = HealthClient::new(channel.clone())
            .check(HealthCheckRequest::default())
            .await
            .map(|r| r.into_inner().status);
        if status.is_ok_and(|s| s == 1) {
            return channel;
        }
        assert!(std::time::Instant::now() < deadline, "never SERVING");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn tls_endpoints_are_verified_and_never_downgraded() {
    let dir = crate::embedded::temp_dir("tls");
    let (ca, cert, key) = certificates(&dir);
    let served = crate::embedded::serve_fresh(&["--tls-cert", &cert, "--tls-key", &key]).await;
    let port = served.addr.port();
    let channel = tls_channel(port, &ca).await;
    let mut accounts = pb::account_service_client::AccountServiceClient::with_interceptor(
        channel,
        Bearer::new(Some(&served.key)),
    );
    let org = create_org(&mut accounts, "Tls").await;
    create_account(&mut accounts, &org, "TLS1").await;
    let https = format!("https://localhost:{port}");
    let export = ["export", "--account", "TLS1", "--timeout", "10"];
    let with_ca = [&export[..], &["--ca-cert", &ca]].concat();

    let out = client(&with_ca, &https, Some(&served.key)).await;
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.starts_with("COMPTE,"), "{}", out.stdout);
    assert!(out.stderr.contains("exported 0 rows"), "{}", out.stderr);

    // The system's roots do not know the test's CA.
    let out = client(&export, &https, Some(&served.key)).await;
    let line = out.failed_once().to_lowercase();
    eprintln!("without --ca-cert: {line}");
    assert!(
        line.contains("unknownissuer") || line.contains("unknown issuer"),
        "{line}"
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);

    // Plaintext against TLS, and TLS against plaintext: refused, no silent
    // downgrade, no hang.
    let started = std::time::Instant::now();
    let out = client(
        &with_ca,
        &format!("http://localhost:{port}"),
        Some(&served.key),
    )
    .await;
    let line = out.failed_once();
    eprintln!("http:// against TLS: {line}");
    assert!(!out.stdout.contains("COMPTE"), "{line}");
    let app = spawn_app().await;
    let out = client(
        &with_ca,
        &format!("https://localhost:{}", app.addr.port()),
        Some(&app.operator_key),
    )
    .await;
    eprintln!("https:// against plaintext: {}", out.failed_once());
    assert!(started.elapsed() < std::time::Duration::from_secs(20));

    // Neither http nor https.
    let out = client(
        &with_ca,
        &format!("grpc://localhost:{port}"),
        Some(&served.key),
    )
    .await;
    assert!(out.failed_once().contains("https://"), "{}", out.stderr);
    // No key: says which variable to set.
    let out = client(&with_ca, &https, None).await;
    assert!(out.failed_once().contains("CLEF_KEY"), "{}", out.stderr);
    assert!(crate::embedded::terminate(served.child).await.success());
    std::fs::remove_dir_all(&dir).ok();
}

/// With `--tls-client-ca`, the server requires a client certificate that CA
/// signed: the CLI with one gets in; without, or with another CA's, the
/// handshake fails and nothing is answered.
#[tokio::test]
async fn client_certificates_are_required_when_the_server_asks_for_them() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let dir = crate::embedded::temp_dir("mtls");
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let issuer = || {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
    };
    let (ca, stranger) = (issuer(), issuer());
    let leaf = |names: Vec<String>, by: &CertifiedIssuer<'_, KeyPair>, file: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, by)
            .unwrap();
        std::fs::write(path(&format!("{file}.pem")), cert.pem()).unwrap();
        std::fs::write(path(&format!("{file}-key.pem")), key.serialize_pem()).unwrap();
    };
    std::fs::write(path("ca.pem"), ca.pem()).unwrap();
    leaf(vec!["localhost".into()], &ca, "server");
    leaf(vec!["tracker".into()], &ca, "client");
    leaf(vec!["tracker".into()], &stranger, "stranger");
    let served = crate::embedded::serve_fresh(&[
        "--tls-cert",
        &path("server.pem"),
        "--tls-key",
        &path("server-key.pem"),
        "--tls-client-ca",
        &path("ca.pem"),
    ])
    .await;
    let https = format!("https://localhost:{}", served.addr.port());
    let base = [
        "export",
        "--account",
        "NONE",
        "--timeout",
        "10",
        "--ca-cert",
    ];
    let with = |who: &str| {
        let mut a: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        a.push(path("ca.pem"));
        if !who.is_empty() {
            a.extend(["--client-cert".into(), path(&format!("{who}.pem"))]);
            a.extend(["--client-key".into(), path(&format!("{who}-key.pem"))]);
        }
        a
    };
    // With the CA's client certificate: the call goes through (the account
    // does not exist: NOT_FOUND, an answer from the server).
    let args = with("client");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = client(&args, &https, Some(&served.key)).await;
    assert!(out.failed_once().contains("NotFound"), "{}", out.stderr);
    // Without one, or with another CA's: no answer at all.
    for who in ["", "stranger"] {
        let args = with(who);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = client(&args, &https, Some(&served.key)).await;
        let line = out.failed_once().to_owned();
        eprintln!("client certificate {who:?}: {line}");
        assert!(!line.contains("NotFound"), "{line}");
    }
    assert!(crate::embedded::terminate(served.child).await.success());
    std::fs::remove_dir_all(&dir).ok();
}

/// Files a CLI test imports: (name, account, what the refusal names).
fn refused_files(dir: &std::path::Path) -> [(String, &'static str, &'static str); 3] {
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    std::fs::write(path("header.csv"), "NOM;SHOE SIZE\nx;y\n").unwrap();
    let utf16: Vec<u8> = "\u{feff}NOM;PRENOM\r\nA;B\r\n"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    std::fs::write(path("utf16.csv"), utf16).unwrap();
    std::fs::write(
        path("good.csv"),
        "NOM,PRENOM,IDENTIFIANT,TYPE\nBon,Ana,bon,standard\n",
    )
    .unwrap();
    [
        (path("good.csv"), "NOPE", "NotFound"),
        (path("header.csv"), "ERR1", "SHOE SIZE"),
        (path("utf16.csv"), "ERR1", "UTF-16"),
    ]
}

#[tokio::test]
async fn an_import_refused_whole_leaves_no_results_file() {
    let app = spawn_app().await;
    org_with_account(&app, "Cli", "ERR1").await;
    let dir = crate::embedded::temp_dir("cli-errors");
    for (file, account, says) in refused_files(&dir) {
        let results = format!("{file}.results");
        let out = run(
            &app,
            &["import", &file, "--account", account, "-o", &results],
        )
        .await;
        let line = out.failed_once();
        assert!(out.stderr.contains(says), "{file}: {}", out.stderr);
        assert!(
            !std::path::Path::new(&results).exists(),
            "{file}: a results file was written ({line})"
        );
    }
    // An import that runs writes one, with no escape codes on a pipe.
    let good = dir.join("good.csv").to_str().unwrap().to_owned();
    let results = format!("{good}.results");
    let out = run(
        &app,
        &["import", &good, "--account", "ERR1", "-o", &results],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    assert!(!out.stderr.contains("\x1b["), "{:?}", out.stderr);
    assert!(std::fs::read_to_string(&results)
        .unwrap()
        .contains("2,created"));
    std::fs::remove_dir_all(&dir).ok();
}

/// Regression test, once a bug: the command line prints each field violation of an
/// INVALID_ARGUMENT twice: in the status message ("invalid argument: file:
/// header: unknown column ...") and again as a detail line below it.
#[tokio::test]
async fn a_refusal_is_said_once() {
    let app = spawn_app().await;
    org_with_account(&app, "Cli", "ERR1").await;
    let dir = crate::embedded::temp_dir("cli-once");
    for (file, account, says) in refused_files(&dir) {
        let out = run(&app, &["import", &file, "--account", account]).await;
        out.failed_once();
        assert_eq!(
            out.stderr.matches(says).count(),
            1,
            "said more than once: {}",
            out.stderr
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn timeout_bounds_a_server_that_never_answers() {
    // A listener that accepts connections and says nothing (for 60 s at
    // most).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < until {
            match listener.accept() {
                Ok((s, _)) => held.push(s),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
    });
    let dir = crate::embedded::temp_dir("silent");
    let file = dir.join("users.csv");
    std::fs::write(&file, "NOM,PRENOM,IDENTIFIANT,TYPE\nBon,Ana,bon,standard\n").unwrap();
    let endpoint = format!("http://{addr}");
    for args in [
        vec!["export", "--account", "X1", "--timeout", "1"],
        vec![
            "import",
            file.to_str().unwrap(),
            "--account",
            "X1",
            "--timeout",
            "1",
        ],
        vec!["import-report", "--account", "X1", "--timeout", "1"],
    ] {
        let started = std::time::Instant::now();
        let out = client(&args, &endpoint, Some("clef_whatever")).await;
        let took = started.elapsed();
        let line = out.failed_once().to_owned();
        eprintln!("{} against a silent server: {took:?}: {line}", args[0]);
        assert!(
            took < std::time::Duration::from_secs(5),
            "{}: {took:?}: {line}",
            args[0]
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn invitations_passwords_and_the_outbox_from_the_command_line() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app().await;
    let mut ops = app.operator().await;
    let org = create_org(&mut ops.accounts, "Cli creds").await;
    create_account(&mut ops.accounts, &org, "CR1").await;
    let invited = ops
        .users
        .create_user(pb::CreateUserRequest {
            user: Some(advanced("Ivo", "Cli", "ivo@example.com")),
            account_code: "CR1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();

    // A new invitation, by user key; its token on the last line.
    let out = run(
        &app,
        &[
            "invite",
            "resend",
            "--user",
            &invited.user_key,
            "--print-token",
        ],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains("valid until"), "{}", out.stdout);
    let token = out.stdout.lines().last().unwrap().to_owned();
    assert!(token.starts_with("clefinv_"), "{}", out.stdout);
    complete(&mut ops, &token)
        .await
        .expect("the printed token works");

    // A password from standard input, never from an argument.
    let (user, _) = create_user(&mut ops, standard("Sol", "Cli"), "CR1", &[], vec![])
        .await
        .unwrap();
    let mut cmd = clef(&["user", "set-password", "--user", &user.login]);
    cmd.env("CLEF_ENDPOINT", format!("http://{}", app.addr))
        .env("CLEF_KEY", &app.operator_key)
        .stdin(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"typed on standard input\n").await.unwrap();
    drop(stdin);
    let done = child.wait_with_output().await.unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(String::from_utf8_lossy(&done.stdout).contains("to be changed at next login"));
    let who = ops
        .portal
        .authenticate_password(pb::AuthenticatePasswordRequest {
            login: user.login.clone(),
            password: "typed on standard input".into(),
        })
        .await
        .expect("the password works")
        .into_inner();
    assert!(who.must_change_password);
    // Too short: refused, the field named.
    let mut cmd = clef(&["user", "set-password", "--user", &user.login, "--keep"]);
    cmd.env("CLEF_ENDPOINT", format!("http://{}", app.addr))
        .env("CLEF_KEY", &app.operator_key)
        .stdin(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"short\n")
        .await
        .unwrap();
    let refused = child.wait_with_output().await.unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("password"));

    // The outbox, from the database: without SMTP, messages are logged.
    let url = database_url(&app.db_options);
    let mut logged = String::new();
    for _ in 0..100 {
        let out = clef(&[
            "outbox",
            "list",
            "--state",
            "logged",
            "--database-url",
            &url,
        ])
        .output()
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        logged = String::from_utf8_lossy(&out.stdout).into_owned();
        if logged.lines().count() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let first: serde_json::Value = serde_json::from_str(logged.lines().next().unwrap()).unwrap();
    assert_eq!(first["state"], "logged");
    assert_eq!(first["to"], "ivo@example.com");
    assert!(!logged.contains("clefinv_"), "{logged}");
    let out = clef(&["outbox", "retry", "--database-url", &url])
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 parked messages back in line"));
}

#[tokio::test]
async fn the_audit_trail_as_json_lines_and_followed() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let app = spawn_app().await;
    org_with_account(&app, "Aud", "AU1").await;
    let mut ops = app.operator().await;
    let (u, _) = create_user(
        &mut ops,
        standard("Ana", "Log"),
        "AU1",
        &[],
        vec![right("shipping.ws")],
    )
    .await
    .unwrap();
    let out = run(
        &app,
        &["audit", "--account", "AU1", "--action", "grants_changed"],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    let lines: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", out.stdout);
    let e = &lines[0];
    assert_eq!(e["action"], "grants_changed");
    assert_eq!(e["account"], "AU1");
    assert_eq!(e["target"]["id"], u.id.as_str());
    assert_eq!(e["target"]["type"], "user");
    assert_eq!(e["actor"]["kind"], "operator");
    assert_eq!(e["changes"]["rights"]["after"][0]["right"], "shipping.ws");
    assert_eq!(e["changes"]["rights"]["before"], serde_json::json!([]));

    let bad = run(&app, &["audit", "--action", "nope"]).await;
    assert!(
        !bad.ok && bad.stderr.contains("unknown --action"),
        "{}",
        bad.stderr
    );
    let bad = run(&app, &["audit", "--since", "yesterday-ish"]).await;
    assert!(!bad.ok && bad.stderr.contains("--since"), "{}", bad.stderr);
    let recent = run(&app, &["audit", "--since", "1h", "--user", &u.id]).await;
    assert!(
        recent.ok && recent.stdout.lines().count() >= 3,
        "{}",
        recent.stdout
    );

    // --follow: the history, then what happens next, as it happens.
    let mut follow = clef(&["audit", "--follow", "--user", &u.id]);
    follow
        .env("CLEF_ENDPOINT", format!("http://{}", app.addr))
        .env("CLEF_KEY", &app.operator_key);
    let mut child = follow.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let history = run(&app, &["audit", "--user", &u.id])
        .await
        .stdout
        .lines()
        .count();
    for _ in 0..history {
        lines.next_line().await.unwrap().expect("a line of history");
    }
    ops.grants
        .revoke_rights(pb::RevokeRightsRequest {
            account_code: "AU1".into(),
            user_id: u.id.clone(),
            rights: vec!["shipping.ws".into()],
        })
        .await
        .unwrap();
    let live = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line())
        .await
        .expect("the revoke was printed")
        .unwrap()
        .unwrap();
    let live: serde_json::Value = serde_json::from_str(&live).unwrap();
    assert_eq!(live["action"], "grants_changed");
    assert_eq!(live["changes"]["rights"]["after"], serde_json::json!([]));
    child.kill().await.unwrap();
}
