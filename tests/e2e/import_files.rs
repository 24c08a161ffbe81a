//! ImportUsers on whole files: encodings and dialects (an accent after
//! 64 KiB of ASCII included), dry run, atomic, re-import and the export
//! round trip; reports kept, replaced and guarded.

use clef::pb;
use tonic::Code;

use crate::{
    common::*,
    import::{import, opts, report},
};

#[tokio::test]
async fn encodings_dry_run_atomic_and_round_trip() {
    let app = spawn_app().await;
    let org = org_with_account(&app, "Org", "ENC1").await;
    let _ = org;
    let op = app.operator_key.clone();
    // Windows-1252 with ';' and accents.
    let cp1252: Vec<u8> =
        b"NOM;PRENOM;IDENTIFIANT;TYPE\nL\xE9on;Ir\xE8ne;irene;standard\n".to_vec();
    let run = import(&app, &op, opts("ENC1"), &cp1252, 5).await;
    assert_eq!(run.statuses(), [(2, "created")]);
    let name: String = sqlx::query_scalar("SELECT last_name FROM users WHERE login = 'irene'")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(name, "Léon");
    // UTF-8 with BOM and ','.
    let bom = "\u{feff}NOM,PRENOM,IDENTIFIANT,TYPE\nÉtienne,Noël,noel,standard\n";
    assert_eq!(
        import(&app, &op, opts("ENC1"), bom.as_bytes(), 3)
            .await
            .statuses(),
        [(2, "created")]
    );

    // Dry run: reported, nothing written.
    let before = snapshot(&app).await;
    let file = "NOM,PRENOM,IDENTIFIANT,TYPE\nDry,Run,dry,standard\nBad,,bad,standard\n";
    let run = import(
        &app,
        &op,
        pb::ImportOptions {
            dry_run: true,
            ..opts("ENC1")
        },
        file.as_bytes(),
        1000,
    )
    .await;
    assert_eq!(run.statuses(), [(2, "created"), (3, "invalid_user_data")]);
    assert!(!run.summary.unwrap().committed);
    assert_eq!(snapshot(&app).await, before);
    // Atomic with a bad line: every line reported, nothing at all written.
    let atomic = || pb::ImportOptions {
        atomic: true,
        ..opts("ENC1")
    };
    let run = import(&app, &op, atomic(), file.as_bytes(), 1000).await;
    assert_eq!(run.statuses(), [(2, "created"), (3, "invalid_user_data")]);
    assert!(!run.summary.unwrap().committed);
    assert_eq!(
        snapshot(&app).await,
        before,
        "an atomic import with a failed line wrote something"
    );
    // Atomic without one: everything commits.
    let good = "NOM,PRENOM,IDENTIFIANT,TYPE\nDry,Run,dry,standard\n";
    let run = import(&app, &op, atomic(), good.as_bytes(), 1000).await;
    assert_eq!(run.statuses(), [(2, "created")]);
    assert!(run.summary.unwrap().committed);

    // Export then re-import in sync mode: all unchanged.
    let mut c = pb::export_service_client::ExportServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(&op)),
    );
    let mut s = c
        .export_users(pb::ExportUsersRequest {
            team: None,
            of: Some(pb::export_users_request::Of::AccountCode("ENC1".into())),
            dialect: pb::CsvDialect::Excel as i32,
        })
        .await
        .unwrap()
        .into_inner();
    let mut csv = Vec::new();
    while let Some(ch) = s.message().await.unwrap() {
        csv.extend(ch.data);
    }
    let run = import(
        &app,
        &op,
        pb::ImportOptions {
            mode: pb::ImportMode::Sync as i32,
            ..opts("ENC1")
        },
        &csv,
        64,
    )
    .await;
    assert!(run.error.is_none(), "{:?}", run.error);
    assert!(
        run.results.iter().all(|r| r.status_name() == "unchanged"),
        "{:?}",
        run.statuses()
    );
    assert_eq!(run.results.len(), 3);

    // Sync with a file naming one of three: more than 20 % would go.
    let one = "NOM,PRENOM,IDENTIFIANT,TYPE\nLéon,Irène,irene,standard\n";
    let run = import(
        &app,
        &op,
        pb::ImportOptions {
            mode: pb::ImportMode::Sync as i32,
            ..opts("ENC1")
        },
        one.as_bytes(),
        1000,
    )
    .await;
    assert_eq!(run.error.unwrap().code(), Code::FailedPrecondition);
    let active: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM users WHERE status = 'active' AND kind = 'standard'",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(active, 3);
    let run = import(
        &app,
        &op,
        pb::ImportOptions {
            mode: pb::ImportMode::Sync as i32,
            force: true,
            ..opts("ENC1")
        },
        one.as_bytes(),
        1000,
    )
    .await;
    let deactivated = run
        .results
        .iter()
        .filter(|r| r.status_name() == "deactivated")
        .count();
    assert_eq!(deactivated, 2, "{:?}", run.statuses());
}

#[tokio::test]
async fn reports_are_kept_replaced_and_guarded() {
    let app = spawn_app().await;
    org_with_account(&app, "Org", "REP1").await;
    let (_, admin) = make_admin(&app, "REP1", "Ada", vec![]).await;
    expect_code(report(&app, &admin, "REP1").await, Code::NotFound);

    let file = "NOM,PRENOM,IDENTIFIANT,TYPE\nLéon,Irène,irene,standard\n\"=1+1\",,bad,standard\n";
    let run = import(&app, &admin, opts("REP1"), file.as_bytes(), 1000).await;
    assert_eq!(run.statuses(), [(2, "created"), (3, "invalid_user_data")]);
    let (info, csv) = report(&app, &admin, "REP1").await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "line,status,column,message,user_id");
    assert!(lines[1].starts_with("2,created,,,"), "{csv}");
    assert_eq!(lines[1].split(',').nth(4).unwrap(), run.results[0].user_id);
    assert!(
        lines[2].starts_with("3,invalid_user_data,first_name,"),
        "{csv}"
    );
    assert_eq!(lines.len(), 3);
    let summary = info.summary.expect("finished");
    assert_eq!(summary.lines, 2);
    assert!(summary.committed);
    assert_eq!(summary.counts["created"], 1);
    assert!(info.finish_time.is_some());
    let (started, expires) = (info.start_time.unwrap(), info.expire_time.unwrap());
    assert_eq!(expires.seconds - started.seconds, 7 * 24 * 3600);
    assert_eq!(info.options.unwrap().account_code, "REP1");

    // The next import (a dry run) replaces it.
    let dry = pb::ImportOptions {
        dry_run: true,
        ..opts("REP1")
    };
    let file2 = "NOM,PRENOM,IDENTIFIANT,TYPE\nDry,Run,dry,standard\n";
    import(&app, &admin, dry, file2.as_bytes(), 1000).await;
    let (info, csv) = report(&app, &admin, "REP1").await.unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(csv.contains("2,created"));
    assert!(info.options.unwrap().dry_run);
    assert!(!info.summary.unwrap().committed);

    // A file refused whole (its header) leaves the report in place.
    let bad = b"NOM,SHOE SIZE\nx,y\n";
    let run = import(&app, &admin, opts("REP1"), bad, 1000).await;
    assert_eq!(run.error.unwrap().code(), Code::InvalidArgument);
    let (_, again) = report(&app, &admin, "REP1").await.unwrap();
    assert_eq!(again, csv);

    // Another account's admin may not read it; nobody may read another
    // organization's; a report older than 7 days is gone.
    org_with_account(&app, "Other", "REP2").await;
    let (_, other) = make_admin(&app, "REP2", "Bob", vec![]).await;
    expect_code(report(&app, &other, "REP1").await, Code::PermissionDenied);
    sqlx::query("UPDATE import_reports SET started_at = now() - interval '8 days'")
        .execute(app.store.pool())
        .await
        .unwrap();
    expect_code(report(&app, &admin, "REP1").await, Code::NotFound);
}

#[tokio::test]
async fn an_accent_after_64_kib_of_ascii_is_still_read_right() {
    let app = spawn_app().await;
    org_with_account(&app, "Org", "LATE").await;
    // 70 KiB of plain ASCII, then Windows-1252 as a spreadsheet saves it.
    let mut file = b"NOM;PRENOM;IDENTIFIANT;TYPE;FONCTION\n".to_vec();
    let mut i = 0;
    while file.len() < 70 * 1024 {
        file.extend_from_slice(
            format!("Nom{i};Jean;late{i};standard;{}\n", "x".repeat(80)).as_bytes(),
        );
        i += 1;
    }
    file.extend_from_slice(b"L\xE9on;Ir\xE8ne;late-leon;standard;Cariste\n");
    let run = import(&app, &app.operator_key, opts("LATE"), &file, 4096).await;
    assert!(run.error.is_none(), "{:?}", run.error);
    assert!(run.results.iter().all(|r| r.status_name() == "created"));
    let name: (String, String) =
        sqlx::query_as("SELECT last_name, first_name FROM users WHERE login = 'late-leon'")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(name, ("Léon".into(), "Irène".into()));

    // A file mixing UTF-8 and Windows-1252 lines: each read right.
    let file = b"NOM;PRENOM;IDENTIFIANT;TYPE\nDupr\xC3\xA9;Zo\xC3\xA9;late-zoe;standard\nL\xE9a;Bec;late-lea;standard\n";
    let run = import(&app, &app.operator_key, opts("LATE"), file, 1000).await;
    assert_eq!(run.statuses(), [(2, "created"), (3, "created")]);
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT last_name FROM users WHERE login IN ('late-zoe', 'late-lea') ORDER BY login",
    )
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    assert_eq!(names, ["Léa", "Dupré"]);
}
