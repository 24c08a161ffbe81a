//! The client subcommands through the real binary: import, import-report,
//! export, grant-across, revoke-everywhere.

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
    let mut cmd = clef(args);
    cmd.env("CLEF_KEY", &app.operator_key)
        .env("CLEF_ENDPOINT", format!("http://{}", app.addr));
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
