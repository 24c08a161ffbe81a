//! ImportUsers cut short: a client gone mid-stream, a file cut mid-line, a
//! server killed and Postgres stopping mid-import keep exactly the lines
//! reported done, and record why the import stopped.

use clef::{pb, service::import::BATCH};
use tonic::Code;

use crate::{
    common::*,
    import::{
        assert_exactly_reported_committed, assert_nothing_left, first_batch, import, open_import,
        opts, report,
    },
};

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
    let reported = import_then_vanish(&app, opts("GONE"), BATCH + 200).await;
    assert_eq!(reported.len(), BATCH, "one batch answered");
    assert_exactly_reported_committed(&app, "gone", &reported).await;
    // The report says so, that the import did not finish, and why.
    let (info, csv) = stopped_report(&app, &app.operator_key, "GONE").await;
    assert!(info.summary.is_none() && info.finish_time.is_none());
    assert!(info.stopped.contains("client"), "{:?}", info.stopped);
    assert_eq!(csv.lines().count(), BATCH + 1);

    // Atomic: nothing at all.
    let before = snapshot(&app).await;
    let atomic = pb::ImportOptions {
        atomic: true,
        ..opts("GONE")
    };
    let reported = import_then_vanish(&app, atomic, BATCH + 200).await;
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
            let (tx, mut s) =
                open_import(connect(addr).await, &key, options, login, BATCH + 200).await;
            let first = first_batch(&store, atomic, &mut s).await;
            child.start_kill().unwrap();
            child.wait().await.unwrap();
            drop(tx);
            first
        }
    };

    let reported = killed(opts("KILL"), "killed").await;
    assert_eq!(reported.len(), BATCH);
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
    let (tx, mut s) =
        open_import(app.channel().await, &key, opts("PGD"), "down", BATCH + 200).await;
    let reported: Vec<String> = s
        .message()
        .await
        .unwrap()
        .expect("a first batch")
        .results
        .into_iter()
        .map(|r| r.user_id)
        .collect();
    assert_eq!(reported.len(), BATCH);

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
