//! ImportUsers: per-line statuses, encodings, dialects, re-import,
//! export round trip, sync guard, dry run, atomic, tenant and delegation.

use clef::pb::{self, Scope};
use tonic::Code;

use crate::common::*;

struct Run {
    results: Vec<pb::LineResult>,
    summary: Option<pb::ImportSummary>,
    error: Option<tonic::Status>,
}

impl Run {
    fn statuses(&self) -> Vec<(i64, &str)> {
        self.results
            .iter()
            .map(|r| (r.line, r.status.as_str()))
            .collect()
    }
}

async fn import(
    app: &TestApp,
    key: &str,
    options: pb::ImportOptions,
    file: &[u8],
    chunk: usize,
) -> Run {
    let mut c = pb::import_service_client::ImportServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(key)),
    );
    let mut msgs = vec![pb::ImportUsersRequest {
        msg: Some(pb::import_users_request::Msg::Options(options)),
    }];
    for part in file.chunks(chunk) {
        msgs.push(pb::ImportUsersRequest {
            msg: Some(pb::import_users_request::Msg::Chunk(part.to_vec())),
        });
    }
    let mut run = Run {
        results: vec![],
        summary: None,
        error: None,
    };
    match c.import_users(tokio_stream::iter(msgs)).await {
        Err(e) => run.error = Some(e),
        Ok(resp) => {
            let mut s = resp.into_inner();
            loop {
                match s.message().await {
                    Ok(Some(m)) => {
                        run.results.extend(m.results);
                        if m.summary.is_some() {
                            run.summary = m.summary;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        run.error = Some(e);
                        break;
                    }
                }
            }
        }
    }
    run
}

fn opts(account: &str) -> pb::ImportOptions {
    pb::ImportOptions {
        account_code: account.into(),
        mode: pb::ImportMode::Add as i32,
        ..Default::default()
    }
}

const HEADER: &str = "NOM;PRÉNOM;FONCTION;EMAIL;TÉLÉPHONE;ADRESSE;CODE POSTAL;VILLE;TAG;shipping.ws;Outil de suivi colis sans accès au Service Client";

fn adv(n: &str, email: &str, ship: &str, track: &str) -> String {
    format!("{n};Zoé;Logisticienne;{email};0102030405;\"1 rue A\nBât B\";88000;Épinal;ATELIER-7;{ship};{track}")
}

#[tokio::test]
async fn every_status_and_the_database_afterwards() {
    let app = spawn_app().await;
    org_with_account(&app, "Org", "IMP1").await;
    let (_, admin) = make_admin(
        &app,
        "IMP1",
        "Ada",
        vec![
            right("shipping.ws"),
            scoped("tracking.tool", Scope::UserTag),
        ],
    )
    .await;
    let file = [
        HEADER.to_owned(),
        adv("Dupré", "a@example.com", "oui", "tag"), // 2-3 created (address spans 2 lines)
        adv("Bec", "b@example.com", "peut-être", "non"), // 4 invalid_choice
        adv("Cour", "not-an-email", "non", "non"),   // 6 invalid_user_data
        adv("Dupré", "A@example.com", "non", "non"), // 8 duplicate_in_file
        adv("Euh", "e@example.com", "non", "consolidé"), // 10 right_not_held
        String::new(),
        String::new(),
    ]
    .join("\n");
    let run = import(&app, &admin, opts("IMP1"), file.as_bytes(), 7).await;
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(
        run.statuses(),
        [
            (2, "created"),
            (4, "invalid_choice"),
            (6, "invalid_user_data"),
            (8, "duplicate_in_file"),
            (10, "right_not_held")
        ]
    );
    assert_eq!(run.results[1].column, "shipping.ws");
    assert!(run.results[1].message.contains("peut-être"));
    assert_eq!(run.results[2].column, "email");
    assert_eq!(run.results[4].column, "tracking.tool");
    let s = run.summary.unwrap();
    assert!(s.committed && s.revision > 0);
    assert_eq!(s.lines, 5);

    // Failed lines changed nothing.
    let emails: Vec<String> =
        sqlx::query_scalar("SELECT email FROM users WHERE email IS NOT NULL ORDER BY email")
            .fetch_all(app.store.pool())
            .await
            .unwrap();
    assert_eq!(emails, ["a@example.com"]);
    let grants: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT g.right_code, g.scope FROM grants g JOIN users u ON u.id = g.user_id WHERE u.email = 'a@example.com' ORDER BY 1",
    )
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    assert_eq!(
        grants,
        [
            ("shipping.ws".into(), None),
            ("tracking.tool".into(), Some("user_tag".into()))
        ]
    );

    // The same file again: unchanged; with a change: updated.
    let run = import(&app, &admin, opts("IMP1"), file.as_bytes(), 1000).await;
    assert_eq!(run.results[0].status, "unchanged");
    let changed = file.replace("a@example.com;0102030405", "a@example.com;0607080910");
    let run = import(&app, &admin, opts("IMP1"), changed.as_bytes(), 1000).await;
    assert_eq!(run.results[0].status, "updated");

    // An account he does not administer: refused whole.
    org_with_account(&app, "Other", "IMP2").await;
    let run = import(&app, &admin, opts("IMP2"), file.as_bytes(), 1000).await;
    assert_eq!(run.error.unwrap().code(), Code::PermissionDenied);
    // A bad header: refused, naming the column.
    let run = import(&app, &admin, opts("IMP1"), b"NOM;SHOE SIZE\nx;y\n", 1000).await;
    let e = run.error.unwrap();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("SHOE SIZE"));
}

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
        run.results.iter().all(|r| r.status == "unchanged"),
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
        .filter(|r| r.status == "deactivated")
        .count();
    assert_eq!(deactivated, 2, "{:?}", run.statuses());
}
