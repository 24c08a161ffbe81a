//! ImportUsers alongside other work: a concurrent writer meeting a batch,
//! other writes while an import waits for its client, one import per
//! account at a time.

use clef::{pb, service::import::BATCH};
use tonic::Code;

use crate::{
    common::*,
    import::{import, open_import, opts},
};

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
async fn an_import_waiting_for_its_client_does_not_hold_up_other_writes() {
    let app = spawn_app().await;
    org_with_account(&app, "Org", "WAIT").await;
    for (n, dry_run) in [(0, false), (1, true)] {
        let options = pb::ImportOptions {
            dry_run,
            ..opts("WAIT")
        };
        let login = format!("wait{n}-");
        let (tx, mut s) = open_import(
            app.channel().await,
            &app.operator_key,
            options,
            &login,
            BATCH + 200,
        )
        .await;
        // One batch done; the import now waits for more of the file.
        let first = s.message().await.unwrap().expect("a first batch");
        assert_eq!(first.results.len(), BATCH);
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
        assert_eq!(results, BATCH + 200);
        assert_eq!(summary.unwrap().committed, !dry_run);
    }
    let imported: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE login LIKE 'wait%'")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(
        imported,
        BATCH as i64 + 200,
        "the real import's lines, none of the dry run's"
    );
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
    let (a, mut a_out) =
        open_import(app.channel().await, &key, opts("ONE1"), "a", BATCH + 200).await;
    assert_eq!(a_out.message().await.unwrap().unwrap().results.len(), BATCH);
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
            assert_eq!(s.lines, BATCH as i64 + 200);
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
    // One batch's worth, the rest sent once D has taken the account: C
    // has nothing pending meanwhile.
    let (c, mut c_out) = open_import(app.channel().await, &key, c_opts, "c", BATCH).await;
    assert_eq!(c_out.message().await.unwrap().unwrap().results.len(), BATCH);
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
    let rest: String = (BATCH..BATCH + 200)
        .map(|i| format!("Nom{i},Prénom,c{i},standard\n"))
        .collect();
    c.send(pb::ImportUsersRequest {
        msg: Some(pb::import_users_request::Msg::Chunk(rest.into_bytes())),
    })
    .await
    .unwrap();
    drop(c);
    let err = c_out.message().await.expect_err("C stops");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("replaced"), "{}", err.message());
    let (late, deactivated): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE login ~ '^c[0-9]+$' AND substring(login from 2)::int >= $1),
                count(*) FILTER (WHERE status = 'deactivated')
           FROM users",
    )
    .bind(BATCH as i32)
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(late, 0, "C wrote lines after it was replaced");
    assert_eq!(deactivated, 0, "C's sync ran after it was replaced");
}

#[tokio::test]
async fn a_client_waiting_for_a_batchs_results_hears_of_them_and_goes_on() {
    // A client that sends a batch and a little more, then waits for the
    // batch's results before sending the rest, hears of them once they are
    // committed, not only when it next sends (it would wait until the
    // import gives up on it, after its idle limit).
    let app = spawn_app().await;
    org_with_account(&app, "Org", "WAIT").await;
    let (tx, mut s) = open_import(
        app.channel().await,
        &app.operator_key,
        opts("WAIT"),
        "wait",
        BATCH + 100,
    )
    .await;
    let first = s.message().await.unwrap().expect("the first batch");
    assert_eq!(first.results.len(), BATCH);
    let committed: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE login LIKE 'wait%'")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(committed, BATCH as i64, "told once committed");
    let rest: String = (BATCH + 100..BATCH + 200)
        .map(|i| format!("Nom{i},Prénom,wait{i},standard\n"))
        .collect();
    tx.send(pb::ImportUsersRequest {
        msg: Some(pb::import_users_request::Msg::Chunk(rest.into_bytes())),
    })
    .await
    .unwrap();
    drop(tx);
    let (mut told, mut summary) = (first.results.len(), None);
    while let Some(m) = s.message().await.unwrap() {
        told += m.results.len();
        summary = m.summary.or(summary);
    }
    let summary = summary.expect("a summary");
    assert_eq!(told, BATCH + 200);
    let all = BATCH as i64 + 200;
    assert_eq!(summary.counts.get("created"), Some(&all), "{summary:?}");
    assert!(summary.committed);
}

#[tokio::test]
async fn a_client_sending_a_few_lines_hears_of_them_before_its_batch_fills() {
    // Three lines, then the client waits without ending its file: the lines
    // are applied and told after a few seconds, not when a batch's worth has
    // come or the import gives up on the client (its idle limit).
    let app = spawn_app().await;
    org_with_account(&app, "Org", "SLOW").await;
    let (tx, mut s) = open_import(
        app.channel().await,
        &app.operator_key,
        opts("SLOW"),
        "slow",
        3,
    )
    .await;
    let first = tokio::time::timeout(std::time::Duration::from_secs(30), s.message())
        .await
        .expect("the lines were not told while the client waited")
        .unwrap()
        .expect("a first answer");
    assert_eq!(first.results.len(), 3, "{first:?}");
    assert!(first.results.iter().all(|r| r.status_name() == "created"));
    let committed: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE login LIKE 'slow%'")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(committed, 3, "told once committed");
    drop(tx);
    let mut summary = None;
    while let Some(m) = s.message().await.unwrap() {
        assert!(m.results.is_empty(), "told twice: {m:?}");
        summary = m.summary.or(summary);
    }
    assert_eq!(summary.expect("a summary").lines, 3);
}
