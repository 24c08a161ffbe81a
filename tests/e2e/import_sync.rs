//! ImportUsers in sync mode: deactivations reaching the other replica,
//! duplicates and the users a file names spanning batches, and the absent
//! users of accounts the admin does not administer kept.

use clef::pb;

use crate::{
    common::*,
    import::{adv, import, opts, HEADER},
};

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
        run.results.iter().all(|r| r.status_name() == "created"),
        "{:?}",
        run.results[0]
    );

    // Invited: each completes his invitation. B caches all 300 as allowed.
    a.activate_all(&ids).await;
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
    // What an import has met is kept across its batches (in its ledger,
    // not in memory), and forgotten when it ends.
    let n = clef::service::import::BATCH + 200;
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
    first.extend((0..n).map(|i| line(i, "")));
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
    assert_eq!(statuses.len(), n + 2);
    assert_eq!(statuses[0], (2, "right_not_held"));
    assert!(statuses[1..n + 1].iter().all(|(_, s)| *s == "created"));
    assert_eq!(statuses[n + 1], (2 * n as i64 + 4, "duplicate_in_file"));
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
        file(0..n, &extra).as_bytes(),
        8192,
    )
    .await;
    assert!(run.error.is_none(), "{:?}", run.error);
    let statuses = run.statuses();
    assert_eq!(
        statuses.len(),
        n + 2,
        "no deactivation: every user was named"
    );
    assert!(statuses[..n].iter().all(|(_, s)| *s == "unchanged"));
    // Each data line spans two physical lines (the address has a newline).
    assert_eq!(
        statuses[n..],
        [
            (2 * n as i64 + 2, "duplicate_in_file"),
            (2 * n as i64 + 4, "duplicate_in_file")
        ]
    );
    assert!(
        run.results[n + 1].message.contains("user key"),
        "{:?}",
        run.results[n + 1]
    );
    let ledger: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM import_seen) + (SELECT count(*) FROM import_named)",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(ledger, 0, "the ledger is forgotten once the import ends");

    // Users named in either batch are kept; exactly the others go.
    let run = import(&app, &admin, sync, file(0..n - 100, &[]).as_bytes(), 8192).await;
    assert!(run.error.is_none(), "{:?}", run.error);
    let gone = run.users_with("deactivated");
    let mut expected: Vec<String> = sqlx::query_scalar(
        "SELECT id::text FROM users WHERE email LIKE 'u%@example.com'
            AND substring(email from 2 for position('@' in email) - 2)::int >= $1",
    )
    .bind(n as i32 - 100)
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    expected.sort();
    assert_eq!(expected.len(), 100);
    assert_eq!(gone, expected);
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
    // Imported advanced users are invited until they complete it.
    assert_eq!(statuses, ["deactivated", "invited"]);
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE action = 'user_status_changed' AND target_id = $1
            AND changes -> 'status' ->> 'after' = 'deactivated' AND cause LIKE 'import %'",
    )
    .bind(&ids[0])
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(audited, 1);
}
