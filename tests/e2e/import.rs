//! ImportUsers: per-line statuses, encodings, dialects, re-import,
//! export round trip, sync guard, dry run, atomic, tenant and delegation.

use clef::pb::{self, Scope};
use tonic::Code;

use crate::common::*;

pub(crate) struct Run {
    pub(crate) results: Vec<pb::LineResult>,
    pub(crate) summary: Option<pb::ImportSummary>,
    pub(crate) error: Option<tonic::Status>,
}

impl Run {
    /// The ids of the users whose result has `status`, sorted.
    pub(crate) fn users_with(&self, status: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .results
            .iter()
            .filter(|r| r.status == status)
            .map(|r| r.user_id.clone())
            .collect();
        ids.sort();
        ids
    }

    pub(crate) fn statuses(&self) -> Vec<(i64, &str)> {
        self.results
            .iter()
            .map(|r| (r.line, r.status.as_str()))
            .collect()
    }
}

pub(crate) async fn import(
    app: &TestApp,
    key: &str,
    options: pb::ImportOptions,
    file: &[u8],
    chunk: usize,
) -> Run {
    let chunks: Vec<Vec<u8>> = file.chunks(chunk).map(<[u8]>::to_vec).collect();
    import_on(
        app.channel().await,
        key,
        options,
        tokio_stream::iter(chunks),
    )
    .await
}

/// Runs an import on `channel`, the file's chunks coming from `chunks` as
/// the call takes them (they need not all be in memory).
pub(crate) async fn import_on(
    channel: tonic::transport::Channel,
    key: &str,
    options: pb::ImportOptions,
    chunks: impl tokio_stream::Stream<Item = Vec<u8>> + Send + 'static,
) -> Run {
    use tokio_stream::StreamExt;
    let mut c = pb::import_service_client::ImportServiceClient::with_interceptor(
        channel,
        Bearer::new(Some(key)),
    );
    let first = pb::ImportUsersRequest {
        msg: Some(pb::import_users_request::Msg::Options(options)),
    };
    let msgs = tokio_stream::iter([first]).chain(chunks.map(|part| pb::ImportUsersRequest {
        msg: Some(pb::import_users_request::Msg::Chunk(part)),
    }));
    let mut run = Run {
        results: vec![],
        summary: None,
        error: None,
    };
    match c.import_users(msgs).await {
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

pub(crate) fn opts(account: &str) -> pb::ImportOptions {
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

/// The latest report of an account: `None` when the call is refused.
pub(crate) async fn report(
    app: &TestApp,
    key: &str,
    account: &str,
) -> Result<(pb::ImportReportInfo, String), tonic::Status> {
    let mut c = pb::import_service_client::ImportServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(key)),
    );
    let mut s = c
        .get_import_report(pb::GetImportReportRequest {
            account_code: account.into(),
        })
        .await?
        .into_inner();
    let mut info = None;
    let mut csv = Vec::new();
    while let Some(m) = s.message().await? {
        if m.info.is_some() {
            info = m.info;
        }
        csv.extend(m.chunk);
    }
    Ok((info.expect("info"), String::from_utf8(csv).unwrap()))
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

/// Waits until no transaction of the test's database is open (an import
/// that was interrupted has rolled back).
async fn wait_until_idle(app: &TestApp) {
    for _ in 0..100 {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
               AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()",
        )
        .fetch_one(app.store.pool())
        .await
        .unwrap();
        if open == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("a transaction stayed open");
}

/// Asserts that the users whose login starts with `prefix` are exactly
/// those of the `reported` results, once the dead import's transaction is
/// gone.
pub(crate) async fn assert_exactly_reported_committed(
    app: &TestApp,
    prefix: &str,
    reported: &[String],
) {
    wait_until_idle(app).await;
    let mut stored: Vec<String> =
        sqlx::query_scalar("SELECT id::text FROM users WHERE login LIKE $1 || '%'")
            .bind(prefix)
            .fetch_all(app.store.pool())
            .await
            .unwrap();
    let mut reported = reported.to_vec();
    stored.sort();
    reported.sort();
    assert_eq!(
        stored.len(),
        reported.len(),
        "only the reported lines are committed"
    );
    assert!(
        stored == reported,
        "exactly the reported lines are committed"
    );
}

/// Asserts that the database is as `before` (taken with `snapshot`) once
/// the dead import's transaction is gone.
pub(crate) async fn assert_nothing_left(app: &TestApp, before: &[String]) {
    wait_until_idle(app).await;
    assert_eq!(
        snapshot(app).await,
        before,
        "an atomic import left something"
    );
}

/// The account's report once it says why its import stopped (recorded
/// after the client has its error; waits up to 30 s).
async fn stopped_report(app: &TestApp, key: &str, account: &str) -> (pb::ImportReportInfo, String) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok((info, csv)) = report(app, key, account).await {
            if !info.stopped.is_empty() {
                return (info, csv);
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stop was never recorded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

type Responses = tonic::Streaming<pb::ImportUsersResponse>;

/// Starts an import of `lines` standard users and keeps the request stream
/// open: the returned sender ends it when dropped.
async fn open_import(
    channel: tonic::transport::Channel,
    key: &str,
    options: pb::ImportOptions,
    login: &str,
    lines: usize,
) -> (tokio::sync::mpsc::Sender<pb::ImportUsersRequest>, Responses) {
    let mut c = pb::import_service_client::ImportServiceClient::with_interceptor(
        channel,
        Bearer::new(Some(key)),
    );
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut file = String::from("NOM,PRENOM,IDENTIFIANT,TYPE\n");
    for i in 0..lines {
        file.push_str(&format!("Nom{i},Prénom,{login}{i},standard\n"));
    }
    for msg in [
        pb::import_users_request::Msg::Options(options),
        pb::import_users_request::Msg::Chunk(file.into_bytes()),
    ] {
        tx.send(pb::ImportUsersRequest { msg: Some(msg) })
            .await
            .unwrap();
    }
    let s = c
        .import_users(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, s)
}

/// Waits until the server has staged `n` lines of an atomic import (which
/// answers nothing before the end of its file).
pub(crate) async fn until_staged(store: &clef::store::Store, n: i64) {
    for _ in 0..1000 {
        let staged: i64 = sqlx::query_scalar("SELECT count(*) FROM import_staged_lines")
            .fetch_one(store.pool())
            .await
            .unwrap();
        if staged >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the atomic import never staged {n} lines");
}

/// The first answer of an import (its first batch's results), or, for an
/// atomic import, nothing once its first 500 lines are staged.
async fn first_batch(store: &clef::store::Store, atomic: bool, s: &mut Responses) -> Vec<String> {
    if atomic {
        until_staged(store, 500).await;
        return Vec::new();
    }
    let first = s.message().await.unwrap().expect("a first batch");
    first.results.into_iter().map(|r| r.user_id).collect()
}

/// A client process that sends the options and `lines` standard users,
/// reads the first answer, then dies with the stream still open: its
/// runtime, and so its connection, is dropped (the server sees the
/// connection reset, as when a process is killed).
async fn import_then_vanish(
    app: &TestApp,
    options: pb::ImportOptions,
    lines: usize,
) -> Vec<String> {
    let (addr, key, store) = (app.addr, app.operator_key.clone(), app.store.clone());
    tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let reported = rt.block_on(async move {
            let atomic = options.atomic;
            let (tx, mut s) = open_import(connect(addr).await, &key, options, "gone", lines).await;
            let first = first_batch(&store, atomic, &mut s).await;
            std::mem::forget(tx); // the request stream never ends cleanly
            first
        });
        drop(rt);
        reported
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_client_gone_mid_stream_keeps_exactly_the_lines_reported_done() {
    let app = spawn_app().await;
    org_with_account(&app, "Org", "GONE").await;
    let reported = import_then_vanish(&app, opts("GONE"), 700).await;
    assert_eq!(reported.len(), 500, "one batch answered");
    assert_exactly_reported_committed(&app, "gone", &reported).await;
    // The report says so, that the import did not finish, and why.
    let (info, csv) = stopped_report(&app, &app.operator_key, "GONE").await;
    assert!(info.summary.is_none() && info.finish_time.is_none());
    assert!(info.stopped.contains("client"), "{:?}", info.stopped);
    assert_eq!(csv.lines().count(), 501);

    // Atomic: nothing at all.
    let before = snapshot(&app).await;
    let atomic = pb::ImportOptions {
        atomic: true,
        ..opts("GONE")
    };
    let reported = import_then_vanish(&app, atomic, 700).await;
    assert!(reported.is_empty(), "an atomic import answers at its end");
    assert_nothing_left(&app, &before).await;
}

#[tokio::test]
async fn a_file_cut_mid_line_loses_only_that_line() {
    let app = spawn_app().await;
    org_with_account(&app, "Org", "CUT").await;
    let file = "NOM;PRENOM;IDENTIFIANT;TYPE;shipping.ws\nA;Zoé;cut-a;standard;oui\nB;Zoé;cut-b;standard;oui\nC;Zo";
    let run = import(&app, &app.operator_key, opts("CUT"), file.as_bytes(), 5).await;
    assert_eq!(
        run.statuses(),
        [(2, "created"), (3, "created"), (4, "invalid_user_data")]
    );
    assert_eq!(run.results[2].column, "line");
    assert!(
        run.results[2].message.contains("cut"),
        "{}",
        run.results[2].message
    );
    let logins: Vec<String> =
        sqlx::query_scalar("SELECT login FROM users WHERE login LIKE 'cut-%' ORDER BY login")
            .fetch_all(app.store.pool())
            .await
            .unwrap();
    assert_eq!(logins, ["cut-a", "cut-b"]);
    // Cut inside a quoted cell: the same.
    let file = "NOM;PRENOM;IDENTIFIANT;TYPE\nD;Zoé;cut-d;standard\n\"E;Zo";
    let run = import(&app, &app.operator_key, opts("CUT"), file.as_bytes(), 3).await;
    assert_eq!(run.statuses(), [(2, "created"), (3, "invalid_user_data")]);
}

#[tokio::test]
async fn a_batch_meeting_a_concurrent_writer_still_reports_each_line() {
    let app = spawn_app().await;
    org_with_account(&app, "Org", "RACE").await;
    // Another transaction holds a user with the email of line 3, not yet
    // committed: the import's lookups cannot see it, its batch insert waits
    // on it and fails once it commits.
    let mut other = app.store.pool().begin().await.unwrap();
    // A writer that does not hold the revision counter (so that the
    // import's batch can reach the row), under a revision number of its
    // own: the database refuses access changes without one.
    sqlx::query("SELECT set_config('clef.revision', '0', true)")
        .execute(&mut *other)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO users (id, kind, status, login, display_name, last_name, first_name, email, revision)
         VALUES (gen_random_uuid(), 'operator', 'active', 'racer', 'Racer', 'R', 'R', 'race@example.com', 0)",
    )
    .execute(&mut *other)
    .await
    .unwrap();
    let file = "NOM,PRENOM,IDENTIFIANT,TYPE,EMAIL\nA,Zoé,race-a,standard,a@race.example\n\
                B,Zoé,race-b,standard,race@example.com\nC,Zoé,race-c,standard,c@race.example\n";
    let key = app.operator_key.clone();
    let importing = import(&app, &key, opts("RACE"), file.as_bytes(), 1000);
    let commit_when_blocked = async {
        let mut blocked = false;
        for _ in 0..500 {
            let waiting: i64 =
                sqlx::query_scalar("SELECT count(*) FROM pg_locks WHERE NOT granted")
                    .fetch_one(app.store.pool())
                    .await
                    .unwrap();
            if waiting > 0 {
                blocked = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        other.commit().await.unwrap();
        blocked
    };
    let (run, blocked) = tokio::join!(importing, commit_when_blocked);
    assert!(blocked, "the import's batch never met the uncommitted row");
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(
        run.statuses(),
        [(2, "created"), (3, "invalid_user_data"), (4, "created")],
        "{:?}",
        run.results
    );
    assert_eq!(run.results[1].column, "email");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE email LIKE '%race.example'")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(n, 2);
}

#[tokio::test]
async fn one_file_per_status_and_what_each_leaves_in_the_database() {
    let app = spawn_app().await;
    org_with_account(&app, "Org", "ONE").await;
    let (_, admin) = make_admin(&app, "ONE", "Ada", vec![right("shipping.ws")]).await;
    let head = "NOM;PRENOM;IDENTIFIANT;TYPE;shipping.ws;tracking.ws\n";
    let file = |lines: &[&str]| format!("{head}{}\n", lines.join("\n"));
    let one = |status: &'static str, column: &'static str, line: &'static str| {
        (status, column, file(&[line]))
    };
    // Each failing file changes nothing at all.
    for (status, column, f) in [
        one(
            "invalid_choice",
            "shipping.ws",
            "Bec;Zoé;bec;standard;peut-être;non",
        ),
        one(
            "invalid_user_data",
            "last_name",
            ";Zoé;bec;standard;oui;non",
        ),
        one(
            "right_not_held",
            "tracking.ws",
            "Bec;Zoé;bec;standard;oui;oui",
        ),
        (
            "duplicate_in_file",
            "",
            file(&[
                "Bec;Zoé;bec;standard;oui;non",
                "Bec;Zoé;bec;standard;oui;non",
            ]),
        ),
    ] {
        let before = snapshot(&app).await;
        let atomic = pb::ImportOptions {
            atomic: status == "duplicate_in_file",
            ..opts("ONE")
        };
        let run = import(&app, &admin, atomic, f.as_bytes(), 1000).await;
        assert!(run.error.is_none(), "{status}: {:?}", run.error);
        let last = run.results.last().unwrap();
        assert_eq!(last.status, status, "{run:?}", run = run.statuses());
        assert_eq!(last.column, column, "{status}: {}", last.message);
        let after = snapshot(&app).await;
        // The report is the only trace (it lives outside the snapshot).
        assert_eq!(before, after, "{status} changed something");
    }

    // created, then unchanged, then updated, each as the database says.
    let bec = |ship: &str, mode: pb::ImportMode| {
        let options = pb::ImportOptions {
            mode: mode as i32,
            force: true,
            ..opts("ONE")
        };
        let f = file(&[&format!("Bec;Zoé;bec;standard;{ship};non")]);
        let (app, admin) = (&app, &admin);
        async move { import(app, admin, options, f.as_bytes(), 1000).await }
    };
    let run = bec("oui", pb::ImportMode::Add).await;
    assert_eq!(run.statuses(), [(2, "created")]);
    let grants = |app: &TestApp| {
        let pool = app.store.pool().clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT g.right_code FROM grants g JOIN users u ON u.id = g.user_id WHERE u.login = 'bec' ORDER BY 1",
            )
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(grants(&app).await, ["shipping.ws"]);
    let before = snapshot(&app).await;
    let run = bec("oui", pb::ImportMode::Add).await;
    assert_eq!(run.statuses(), [(2, "unchanged")]);
    assert_eq!(snapshot(&app).await, before, "unchanged wrote something");
    let run = bec("non", pb::ImportMode::Add).await;
    assert_eq!(run.statuses(), [(2, "updated")]);
    assert!(grants(&app).await.is_empty(), "non revokes the right");

    // deactivated: a forced sync naming bec, and cat on a refused line,
    // deactivates exactly the others (not the importing admin himself).
    for login in ["cat", "dan", "eve"] {
        let f = file(&[&format!("Other;Zoé;{login};standard;oui;non")]);
        import(&app, &admin, opts("ONE"), f.as_bytes(), 1000).await;
    }
    let sync = pb::ImportOptions {
        mode: pb::ImportMode::Sync as i32,
        force: true,
        ..opts("ONE")
    };
    let f = file(&[
        "Bec;Zoé;bec;standard;non;non",
        "Other;Zoé;cat;standard;oui;oui",
    ]);
    let run = import(&app, &admin, sync, f.as_bytes(), 1000).await;
    assert_eq!(run.results[1].status, "right_not_held");
    let gone = run.users_with("deactivated");
    let mut expected: Vec<String> =
        sqlx::query_scalar("SELECT id::text FROM users WHERE login IN ('dan', 'eve') ORDER BY 1")
            .fetch_all(app.store.pool())
            .await
            .unwrap();
    expected.sort();
    assert_eq!(gone, expected);
    let statuses: Vec<(String, String)> =
        sqlx::query_as("SELECT login, status FROM users WHERE kind = 'standard' ORDER BY login")
            .fetch_all(app.store.pool())
            .await
            .unwrap();
    let statuses: Vec<(&str, &str)> = statuses
        .iter()
        .map(|(l, s)| (l.as_str(), s.as_str()))
        .collect();
    assert!(statuses.contains(&("bec", "active")), "{statuses:?}");
    assert!(statuses.contains(&("cat", "active")), "{statuses:?}");
    assert!(statuses.contains(&("dan", "deactivated")), "{statuses:?}");
    assert!(statuses.contains(&("eve", "deactivated")), "{statuses:?}");
    assert_eq!(
        statuses.iter().filter(|(_, s)| *s == "active").count(),
        3,
        "bec, cat and the admin stay active: {statuses:?}"
    );
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
    assert!(run.results.iter().all(|r| r.status == "created"));
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

#[tokio::test]
async fn an_import_waiting_for_its_client_does_not_hold_up_other_writes() {
    let app = spawn_app().await;
    org_with_account(&app, "Org", "WAIT").await;
    for (n, dry_run) in [(0, false), (1, true)] {
        let options = pb::ImportOptions {
            dry_run,
            ..opts("WAIT")
        };
        let login = format!("wait{n}-");
        let (tx, mut s) =
            open_import(app.channel().await, &app.operator_key, options, &login, 700).await;
        // One batch done; the import now waits for more of the file.
        let first = s.message().await.unwrap().expect("a first batch");
        assert_eq!(first.results.len(), 500);
        // Meanwhile, another caller writes, and is not kept waiting.
        let mut ops = app.operator().await;
        let write = create_user(
            &mut ops,
            standard("Other", &format!("Writer{n}")),
            "WAIT",
            &[],
            vec![],
        );
        tokio::time::timeout(std::time::Duration::from_secs(5), write)
            .await
            .expect("a write waited for the import's client")
            .unwrap();
        // The client ends its file: the import finishes.
        drop(tx);
        let mut results = first.results.len();
        let mut summary = None;
        while let Some(m) = s.message().await.unwrap() {
            results += m.results.len();
            summary = summary.or(m.summary);
        }
        assert_eq!(results, 700);
        assert_eq!(summary.unwrap().committed, !dry_run);
    }
    let imported: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE login LIKE 'wait%'")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(
        imported, 700,
        "the real import's lines, none of the dry run's"
    );
}

/// Runs one CheckBatch of `shipping.ws` on `account` for `users`; returns
/// how many are allowed.
async fn allowed_count(c: &mut AuthzClient, account: &str, users: &[String]) -> usize {
    let checks = users
        .iter()
        .map(|id| pb::CheckRequest {
            subject: by_user(id),
            account_code: account.into(),
            right: "shipping.ws".into(),
            min_revision: 0,
        })
        .collect();
    c.check_batch(pb::CheckBatchRequest { checks })
        .await
        .expect("check batch")
        .into_inner()
        .results
        .iter()
        .filter(|r| r.allowed)
        .count()
}

#[tokio::test]
async fn a_sync_deactivating_hundreds_of_users_reaches_the_other_replica() {
    // 250 deactivations in one commit are listed over two change notices;
    // the other replica must drop every one of those users, and only them.
    let a = spawn_app().await;
    let b = spawn_app_on(a.db_options.clone()).await;
    org_with_account(&a, "Org", "REP").await;
    let (_, admin) = make_admin(&a, "REP", "Ada", vec![right("shipping.ws")]).await;
    let mut file = vec![HEADER.to_owned()];
    file.extend((0..300).map(|i| {
        adv(
            &format!("User{i}"),
            &format!("u{i}@example.com"),
            "oui",
            "non",
        )
    }));
    let run = import(&a, &admin, opts("REP"), file.join("\n").as_bytes(), 4096).await;
    assert!(run.error.is_none(), "{:?}", run.error);
    let ids: Vec<String> = run.results.iter().map(|r| r.user_id.clone()).collect();
    assert_eq!(ids.len(), 300);
    assert!(
        run.results.iter().all(|r| r.status == "created"),
        "{:?}",
        run.results[0]
    );

    // B caches all 300 as allowed.
    let mut on_b = b.decider().await;
    assert_eq!(allowed_count(&mut on_b, "REP", &ids).await, 300);

    // Sync with the first 50 lines only (the admin is kept: he imports).
    let options = pb::ImportOptions {
        mode: pb::ImportMode::Sync as i32,
        force: true,
        ..opts("REP")
    };
    let run = import(&a, &admin, options, file[..51].join("\n").as_bytes(), 4096).await;
    assert!(run.error.is_none(), "{:?}", run.error);
    let deactivated = run
        .statuses()
        .iter()
        .filter(|(_, s)| *s == "deactivated")
        .count();
    assert_eq!(deactivated, 250);

    let start = std::time::Instant::now();
    loop {
        let still = allowed_count(&mut on_b, "REP", &ids[50..]).await;
        if still == 0 {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(2),
            "replica B still allows {still} deactivated users"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    eprintln!(
        "250 deactivations reached replica B in {:?}",
        start.elapsed()
    );
    assert_eq!(allowed_count(&mut on_b, "REP", &ids[..50]).await, 50);
}

#[tokio::test]
async fn duplicates_and_sync_naming_span_batches() {
    // What an import has met is kept across its batches of 500 lines (in
    // its ledger, not in memory), and forgotten when it ends.
    let app = spawn_app().await;
    org_with_account(&app, "Org", "LEDG").await;
    let (_, admin) = make_admin(&app, "LEDG", "Ada", vec![right("shipping.ws")]).await;
    let header = format!("{HEADER};CLE UTILISATEUR");
    let line = |i: usize, key: &str| {
        format!(
            "{};{key}",
            adv(
                &format!("User{i}"),
                &format!("u{i}@example.com"),
                "oui",
                "non"
            )
        )
    };
    let file = |users: std::ops::Range<usize>, extra: &[String]| {
        let mut f = vec![header.clone()];
        f.extend(users.map(|i| line(i, "")));
        f.extend_from_slice(extra);
        f.join("\n")
    };
    // A line refused in the first batch (a right the admin does not hold)
    // still counts: the same user in the second batch is a duplicate.
    let refused = adv("Newbie", "new@example.com", "oui", "consolidé");
    let again = adv("Newbie", "new@example.com", "oui", "non");
    let mut first = vec![header.clone(), format!("{refused};")];
    first.extend((0..700).map(|i| line(i, "")));
    first.push(format!("{again};"));
    let run = import(
        &app,
        &admin,
        opts("LEDG"),
        first.join("\n").as_bytes(),
        8192,
    )
    .await;
    assert!(run.error.is_none(), "{:?}", run.error);
    let statuses = run.statuses();
    assert_eq!(statuses.len(), 702);
    assert_eq!(statuses[0], (2, "right_not_held"));
    assert!(statuses[1..701].iter().all(|(_, s)| *s == "created"));
    assert_eq!(statuses[701], (1404, "duplicate_in_file"));
    let u3 = run.results[4].user_id.clone();
    let key: String = sqlx::query_scalar("SELECT user_key FROM users WHERE id = $1::uuid")
        .bind(&u3)
        .fetch_one(app.store.pool())
        .await
        .unwrap();

    // In the second batch: u3 again by email, and by his key under another
    // email; both are duplicates of line 5 (first batch).
    let extra = [line(3, ""), line(9999, &key)];
    let sync = pb::ImportOptions {
        mode: pb::ImportMode::Sync as i32,
        ..opts("LEDG")
    };
    let run = import(
        &app,
        &admin,
        sync.clone(),
        file(0..700, &extra).as_bytes(),
        8192,
    )
    .await;
    assert!(run.error.is_none(), "{:?}", run.error);
    let statuses = run.statuses();
    assert_eq!(statuses.len(), 702, "no deactivation: every user was named");
    assert!(statuses[..700].iter().all(|(_, s)| *s == "unchanged"));
    // Each data line spans two physical lines (the address has a newline).
    assert_eq!(
        statuses[700..],
        [(1402, "duplicate_in_file"), (1404, "duplicate_in_file")]
    );
    assert!(
        run.results[701].message.contains("user key"),
        "{:?}",
        run.results[701]
    );
    let ledger: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM import_seen) + (SELECT count(*) FROM import_named)",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(ledger, 0, "the ledger is forgotten once the import ends");

    // Users named in either batch are kept; exactly the others go.
    let run = import(&app, &admin, sync, file(0..600, &[]).as_bytes(), 8192).await;
    assert!(run.error.is_none(), "{:?}", run.error);
    let gone = run.users_with("deactivated");
    let mut expected: Vec<String> = sqlx::query_scalar(
        "SELECT id::text FROM users WHERE email LIKE 'u%@example.com'
            AND substring(email from 2 for position('@' in email) - 2)::int >= 600",
    )
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    expected.sort();
    assert_eq!(expected.len(), 100);
    assert_eq!(gone, expected);
}

#[tokio::test]
async fn one_import_per_account_at_a_time() {
    let app = spawn_app().await;
    let org = org_with_account(&app, "Org", "ONE1").await;
    create_account(&mut app.operator_accounts().await, &org, "TWO2").await;
    let key = app.operator_key.clone();
    let file = "NOM,PRENOM,IDENTIFIANT,TYPE\nLate,Zoé,late1,standard\n";
    let std_opts = |account: &str| pb::ImportOptions {
        default_kind: pb::UserKind::Standard as i32,
        ..opts(account)
    };

    // A runs (its first batch done, its client still sending).
    let (a, mut a_out) = open_import(app.channel().await, &key, opts("ONE1"), "a", 700).await;
    assert_eq!(a_out.message().await.unwrap().unwrap().results.len(), 500);
    let b = import(&app, &key, std_opts("ONE1"), file.as_bytes(), 100).await;
    let err = b.error.expect("refused while A runs");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("another import"),
        "{}",
        err.message()
    );
    assert!(b.results.is_empty());
    // Another account is free.
    let elsewhere = file.replace("late1", "elsewhere1");
    let other = import(&app, &key, std_opts("TWO2"), elsewhere.as_bytes(), 100).await;
    assert!(other.error.is_none(), "{:?}", other.error);

    // Once A has ended, B goes.
    drop(a);
    while let Some(m) = a_out.message().await.unwrap() {
        if let Some(s) = m.summary {
            assert_eq!(s.lines, 700);
        }
    }
    let b = import(&app, &key, std_opts("ONE1"), file.as_bytes(), 100).await;
    assert!(b.error.is_none(), "{:?}", b.error);
    assert_eq!(b.statuses(), [(2, "created")], "{:?}", b.results);

    // An import whose server stopped mid-way (no sign of life for minutes)
    // does not hold the account.
    // C is a forced sync: were its sync step to run after it lost the
    // account, it would deactivate everyone its file does not name.
    let c_opts = pb::ImportOptions {
        mode: pb::ImportMode::Sync as i32,
        force: true,
        ..opts("ONE1")
    };
    let (c, mut c_out) = open_import(app.channel().await, &key, c_opts, "c", 700).await;
    assert_eq!(c_out.message().await.unwrap().unwrap().results.len(), 500);
    sqlx::query("UPDATE import_reports SET active_at = now() - interval '10 minutes'")
        .execute(app.store.pool())
        .await
        .unwrap();
    let d = import(&app, &key, std_opts("ONE1"), file.as_bytes(), 100).await;
    assert!(d.error.is_none(), "{:?}", d.error);
    assert_eq!(d.statuses(), [(2, "unchanged")]);
    // Should C come back to life, its next batch finds, in its own
    // transaction, that it no longer owns the account (fencing): it stops
    // before writing anything more, and its sync never runs.
    drop(c);
    let err = c_out.message().await.expect_err("C stops");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("replaced"), "{}", err.message());
    let (late, deactivated): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE login ~ '^c[0-9]+$' AND substring(login from 2)::int >= 500),
                count(*) FILTER (WHERE status = 'deactivated')
           FROM users",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(late, 0, "C wrote lines after it was replaced");
    assert_eq!(deactivated, 0, "C's sync ran after it was replaced");
}

#[tokio::test]
async fn a_sync_keeps_absent_users_of_accounts_the_admin_does_not_administer() {
    let app = spawn_app().await;
    let org = org_with_account(&app, "Org", "SYA").await;
    create_account(&mut app.operator_accounts().await, &org, "SYB").await;
    let (_, admin) = make_admin(&app, "SYA", "Ada", vec![right("shipping.ws")]).await;
    let lines: Vec<String> = (0..5)
        .map(|i| {
            adv(
                &format!("User{i}"),
                &format!("s{i}@example.com"),
                "oui",
                "non",
            )
        })
        .collect();
    let file = |from: usize| {
        let mut f = vec![HEADER.to_owned()];
        f.extend_from_slice(&lines[from..]);
        f.join("\n")
    };
    let run = import(&app, &admin, opts("SYA"), file(0).as_bytes(), 4096).await;
    assert!(run.error.is_none(), "{:?}", run.error);
    let ids: Vec<String> = run.results.iter().map(|r| r.user_id.clone()).collect();
    // User 1 is on SYB too, which the admin does not administer.
    let user_key: String = sqlx::query_scalar("SELECT user_key FROM users WHERE id = $1::uuid")
        .bind(&ids[1])
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    app.operator()
        .await
        .links
        .link_user(pb::LinkUserRequest {
            account_code: "SYB".into(),
            user_key,
            ..Default::default()
        })
        .await
        .unwrap();

    // Users 0 and 1 absent: 0 goes, 1 stays, naming SYB.
    let sync = pb::ImportOptions {
        mode: pb::ImportMode::Sync as i32,
        force: true,
        ..opts("SYA")
    };
    let run = import(&app, &admin, sync, file(2).as_bytes(), 4096).await;
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.users_with("deactivated"), [ids[0].clone()]);
    let kept = run.users_with("invalid_user_data");
    assert_eq!(kept, [ids[1].clone()]);
    let refusal = run.results.iter().find(|r| r.user_id == ids[1]).unwrap();
    assert_eq!(refusal.line, 0);
    assert!(
        refusal.message.contains("absent, not deactivated") && refusal.message.contains("SYB"),
        "{}",
        refusal.message
    );
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT status FROM users WHERE id = ANY($1::uuid[]) ORDER BY status")
            .bind(&ids[..2])
            .fetch_all(app.store.pool())
            .await
            .unwrap();
    assert_eq!(statuses, ["active", "deactivated"]);
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE action = 'import.deactivate' AND target = 'user/' || $1",
    )
    .bind(&ids[0])
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(audited, 1);
}

#[tokio::test]
async fn a_server_killed_mid_import_keeps_exactly_the_lines_reported_done() {
    // A real `clef serve` process on the test's database, killed (SIGKILL)
    // once it has answered the first batch.
    let app = spawn_app().await;
    let org = org_with_account(&app, "Org", "KILL").await;
    create_account(&mut app.operator_accounts().await, &org, "KILLA").await;
    let url = database_url(&app.db_options);
    let serve = || {
        crate::embedded::clef(&["serve", "--database-url", &url, "--listen", "127.0.0.1:0"])
            .spawn()
            .expect("start clef serve")
    };
    let killed = |options: pb::ImportOptions, login: &'static str| {
        let (key, store) = (app.operator_key.clone(), app.store.clone());
        let mut child = serve();
        async move {
            let (addr, _, _) = crate::embedded::started(&mut child).await;
            let atomic = options.atomic;
            let (tx, mut s) = open_import(connect(addr).await, &key, options, login, 700).await;
            let first = first_batch(&store, atomic, &mut s).await;
            child.start_kill().unwrap();
            child.wait().await.unwrap();
            drop(tx);
            first
        }
    };

    let reported = killed(opts("KILL"), "killed").await;
    assert_eq!(reported.len(), 500);
    // Postgres has rolled back the dead server's open transaction.
    assert_exactly_reported_committed(&app, "killed", &reported).await;
    // The dead import holds its account until it has shown no sign of life
    // for 150 s.
    let next = import(&app, &app.operator_key, opts("KILL"), b"NOM\nX\n", 100).await;
    assert_eq!(next.error.map(|e| e.code()), Some(Code::FailedPrecondition));

    // Atomic (into another account: the first one waits out the dead
    // import's 150 s): nothing at all.
    let before = snapshot(&app).await;
    let atomic = pb::ImportOptions {
        atomic: true,
        ..opts("KILLA")
    };
    assert!(killed(atomic, "atomic").await.is_empty());
    assert_nothing_left(&app, &before).await;
}

#[tokio::test]
async fn postgres_stopping_mid_import_keeps_the_reported_lines_and_frees_the_account_once_back() {
    use clef::embedded::{open, DataDir};
    let dir = crate::embedded::temp_dir("import-pg-down");
    let DataDir::Started(pg) = open(&dir, false).await.unwrap() else {
        panic!("fresh dir is ours")
    };
    let app = spawn_app_on(pg.connect_options()).await;
    org_with_account(&app, "Org", "PGD").await;
    let key = app.operator_key.clone();
    let (tx, mut s) = open_import(app.channel().await, &key, opts("PGD"), "down", 700).await;
    let reported: Vec<String> = s
        .message()
        .await
        .unwrap()
        .expect("a first batch")
        .results
        .into_iter()
        .map(|r| r.user_id)
        .collect();
    assert_eq!(reported.len(), 500);

    // Postgres goes; the file ends: its last 200 lines meet no database.
    pg.stop().await.unwrap();
    drop(tx);
    let err = loop {
        match s.message().await {
            Ok(Some(m)) => assert!(m.results.is_empty(), "lines reported without Postgres"),
            Ok(None) => panic!("the import ended without an error"),
            Err(e) => break e,
        }
    };
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    // Postgres is back: the import's report soon says why it stopped (its
    // server kept trying), so the account takes imports again at once.
    let DataDir::Started(pg) = open(&dir, false).await.unwrap() else {
        panic!("dir released by stop")
    };
    let (info, _) = stopped_report(&app, &key, "PGD").await;
    assert!(info.stopped.contains("unavailable"), "{}", info.stopped);
    assert_exactly_reported_committed(&app, "down", &reported).await;
    let file = b"NOM,PRENOM,IDENTIFIANT,TYPE\nAfter,Zoe,after1,standard\n";
    let next = import(&app, &key, opts("PGD"), file, 100).await;
    assert!(next.error.is_none(), "{:?}", next.error);
    assert_eq!(next.statuses(), [(2, "created")]);
    drop(app);
    pg.stop().await.unwrap();
    std::fs::remove_dir_all(&dir).ok();
}
