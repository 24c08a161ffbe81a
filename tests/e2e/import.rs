//! ImportUsers: what every import test shares (running an import, its
//! report, what it left in the database), and per-line statuses with what
//! each leaves in the database. The other import tests, by topic:
//! `import_files` (encodings, dialects, dry run, atomic, re-import, export
//! round trip, reports), `import_interrupted` (a client, the server or
//! Postgres gone mid-import), `import_concurrency` (other writers and
//! imports meanwhile), `import_sync` (sync mode across batches, replicas
//! and tenants).

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
            .filter(|r| r.status_name() == status)
            .map(|r| r.user_id.clone())
            .collect();
        ids.sort();
        ids
    }

    pub(crate) fn statuses(&self) -> Vec<(i64, &str)> {
        self.results
            .iter()
            .map(|r| (r.line, r.status_name()))
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

pub(crate) const HEADER: &str = "NOM;PRÉNOM;FONCTION;EMAIL;TÉLÉPHONE;ADRESSE;CODE POSTAL;VILLE;TAG;shipping.ws;Outil de suivi colis sans accès au Service Client";

pub(crate) fn adv(n: &str, email: &str, ship: &str, track: &str) -> String {
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
    assert_eq!(run.results[0].status_name(), "unchanged");
    let changed = file.replace("a@example.com;0102030405", "a@example.com;0607080910");
    let run = import(&app, &admin, opts("IMP1"), changed.as_bytes(), 1000).await;
    assert_eq!(run.results[0].status_name(), "updated");

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

pub(crate) type Responses = tonic::Streaming<pb::ImportUsersResponse>;

/// Starts an import of `lines` standard users and keeps the request stream
/// open: the returned sender ends it when dropped.
pub(crate) async fn open_import(
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
/// atomic import, nothing once its first batch of lines is staged.
pub(crate) async fn first_batch(
    store: &clef::store::Store,
    atomic: bool,
    s: &mut Responses,
) -> Vec<String> {
    if atomic {
        until_staged(store, clef::service::import::BATCH as i64).await;
        return Vec::new();
    }
    let first = s.message().await.unwrap().expect("a first batch");
    first.results.into_iter().map(|r| r.user_id).collect()
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
        assert_eq!(last.status_name(), status, "{run:?}", run = run.statuses());
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
    assert_eq!(run.results[1].status_name(), "right_not_held");
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
