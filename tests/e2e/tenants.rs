//! Tenant isolation of the paths that find users by email or login: an
//! import, `GrantAcrossAccounts` and `GetUser` reach only the users the
//! caller manages, and say nothing about the others (the user key is the
//! one way to reach a user of another organization).

use clef::pb;
use tonic::Code;

use crate::common::*;
use crate::import::{assert_nothing_left, import, opts, report};

const NOT_MANAGED: &str = "already used by a user you do not manage; link him by his user key";

/// Organization 1: account X and its admin. Organization 2: account Y,
/// the advanced user Victime and a standard user with a login.
struct Tenants {
    app: TestApp,
    /// The admin of X (a standard user: `admin.users` and `shipping.ws`).
    admin: String,
    admin_login: String,
    victime: pb::User,
    y_user: pb::User,
    /// What nothing said to the admin of X may contain.
    secrets: Vec<String>,
}

const X: &str = "TEN-X1";
const Y: &str = "TEN-Y2";
const VICTIME_EMAIL: &str = "victime@example.com";
const Y_LOGIN: &str = "yann.ygrec";

async fn tenants() -> Tenants {
    let app = spawn_app().await;
    org_with_account(&app, "Organisation Un", X).await;
    let org_y = org_with_account(&app, "Organisation Deux", Y).await;
    let (admin_user, admin) = make_admin(&app, X, "Ada", vec![right("shipping.ws")]).await;
    let mut ops = app.operator().await;
    let (victime, _) = create_user(
        &mut ops,
        advanced("Victor", "Victime", VICTIME_EMAIL),
        Y,
        &["QUAI-3"],
        vec![right("shipping.ws")],
    )
    .await
    .unwrap();
    let (y_user, _) = create_user(
        &mut ops,
        pb::User {
            login: Y_LOGIN.into(),
            ..standard("Yann", "Ygrec")
        },
        Y,
        &[],
        vec![right("shipping.ws")],
    )
    .await
    .unwrap();
    assert_eq!(y_user.login, Y_LOGIN);
    let secrets = vec![
        victime.id.clone(),
        victime.user_key.clone(),
        victime.user_key.replace('-', ""),
        y_user.id.clone(),
        Y.to_owned(),
        org_y,
    ];
    Tenants {
        app,
        admin,
        admin_login: admin_user.login,
        victime,
        y_user,
        secrets,
    }
}

impl Tenants {
    /// Panics when `text` (something said to the admin of X) names a user
    /// of Y or Y itself.
    #[track_caller]
    fn assert_reveals_nothing(&self, what: &str, text: &str) {
        for s in &self.secrets {
            assert!(!text.contains(s.as_str()), "{what} reveals {s:?}: {text}");
        }
    }
}

const ADVANCED_HEADER: &str =
    "TYPE;NOM;PRENOM;FONCTION;EMAIL;TELEPHONE;ADRESSE;CODE POSTAL;VILLE;IDENTIFIANT;shipping.ws";

fn advanced_line(email: &str, login: &str) -> String {
    format!(
        "{ADVANCED_HEADER}\navancé;Victime;Victor;Logisticien;{email};0102030405;1 rue du Port;13000;Marseille;{login};oui\n"
    )
}

fn standard_line(login: &str, email: &str) -> String {
    format!(
        "TYPE;NOM;PRENOM;IDENTIFIANT;EMAIL;shipping.ws\nstandard;Ygrec;Yann;{login};{email};oui\n"
    )
}

#[tokio::test]
async fn an_import_never_reaches_a_user_of_another_tenant_by_email_or_login() {
    let t = tenants().await;
    let app = &t.app;
    // Each file names, by email or login, a user the admin of X does not
    // manage; the column the line fails on.
    let files = [
        // (a) Victime's email, on an advanced line (matched by email).
        ("email", advanced_line(VICTIME_EMAIL, "")),
        // ... whatever its case.
        ("email", advanced_line("VICTIME@Example.COM", "")),
        // (b) the Y user's login, on a standard line (matched by login).
        ("login", standard_line(Y_LOGIN, "")),
        // A new standard user who would take Victime's email.
        ("email", standard_line("nouveau.venu", VICTIME_EMAIL)),
        // A new advanced user who would take the Y user's login.
        ("login", advanced_line("nouveau@example.com", Y_LOGIN)),
    ];
    let mut runs = 0;
    for (column, file) in &files {
        for sync in [false, true] {
            for dry_run in [false, true] {
                for atomic in [false, true] {
                    let options = pb::ImportOptions {
                        mode: if sync {
                            pb::ImportMode::Sync
                        } else {
                            pb::ImportMode::Add
                        } as i32,
                        force: sync,
                        dry_run,
                        atomic,
                        ..opts(X)
                    };
                    let case = format!("sync={sync} dry_run={dry_run} atomic={atomic}\n{file}");
                    let before = snapshot(app).await;
                    let run = import(app, &t.admin, options, file.as_bytes(), 1000).await;
                    assert!(run.error.is_none(), "{case}: {:?}", run.error);
                    assert_eq!(
                        run.statuses(),
                        [(2, "invalid_user_data")],
                        "{case}: {:?}",
                        run.results
                    );
                    let r = &run.results[0];
                    assert_eq!(r.column, *column, "{case}: {r:?}");
                    assert_eq!(r.message, NOT_MANAGED, "{case}");
                    assert_eq!(r.user_id, "", "{case}: the result names the user");
                    t.assert_reveals_nothing(&case, &format!("{run:?}", run = run.results));
                    let summary = run.summary.expect("a summary");
                    assert_eq!(summary.revision, 0, "{case}: the import wrote something");
                    // The report the admin can read says no more.
                    let (info, csv) = report(app, &t.admin, X).await.unwrap();
                    t.assert_reveals_nothing(&case, &csv);
                    t.assert_reveals_nothing(&case, &format!("{info:?}"));
                    assert_nothing_left(app, &before).await;
                    runs += 1;
                }
            }
        }
    }
    assert_eq!(runs, 40);

    // Victime is still Y's alone, as he was.
    let links: Vec<String> = sqlx::query_scalar(
        "SELECT a.code FROM links l JOIN accounts a ON a.id = l.account_id WHERE l.user_id = $1::uuid",
    )
    .bind(&t.victime.id)
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    assert_eq!(links, [Y]);

    // By his user key, the admin of X does reach him: he links him.
    let keyed = format!(
        "TYPE;NOM;PRENOM;FONCTION;EMAIL;TELEPHONE;ADRESSE;CODE POSTAL;VILLE;CLE UTILISATEUR;shipping.ws\n\
         avancé;Victime;Victor;Logisticien;{VICTIME_EMAIL};+33 1 23 45 67 89;12 rue de la Gare;88000;Épinal;{};oui\n",
        t.victime.user_key
    );
    let run = import(app, &t.admin, opts(X), keyed.as_bytes(), 1000).await;
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.statuses(), [(2, "updated")], "{:?}", run.results);
    assert_eq!(run.results[0].user_id, t.victime.id);
}

#[tokio::test]
async fn an_operator_import_matches_users_of_every_tenant() {
    let t = tenants().await;
    let app = &t.app;
    let file = advanced_line(VICTIME_EMAIL, "");
    let run = import(app, &app.operator_key, opts(X), file.as_bytes(), 1000).await;
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.statuses(), [(2, "updated")], "{:?}", run.results);
    assert_eq!(
        run.results[0].user_id, t.victime.id,
        "the operator's import matched Victime"
    );
    let links: Vec<String> = sqlx::query_scalar(
        "SELECT a.code FROM links l JOIN accounts a ON a.id = l.account_id
          WHERE l.user_id = $1::uuid ORDER BY a.code",
    )
    .bind(&t.victime.id)
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    assert_eq!(links, [X, Y]);
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE lower(email) = $1")
        .bind(VICTIME_EMAIL)
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(users, 1, "no second Victime");
}

#[tokio::test]
async fn grant_across_accounts_and_get_user_find_no_user_of_another_tenant() {
    let t = tenants().await;
    let app = &t.app;
    let mut admin = app.client(&t.admin).await;
    let before = snapshot(app).await;

    let across = |email: &str| pb::GrantAcrossAccountsRequest {
        user: Some(pb::UserSelector {
            by: Some(pb::user_selector::By::Email(email.into())),
        }),
        account_codes: vec![X.into()],
        rights: vec![right("shipping.ws")],
    };
    let unknown = expect_code(
        admin
            .grants
            .grant_across_accounts(across("personne@example.com"))
            .await,
        Code::NotFound,
    );
    for email in [VICTIME_EMAIL, "Victime@EXAMPLE.com"] {
        let s = expect_code(
            admin.grants.grant_across_accounts(across(email)).await,
            Code::NotFound,
        );
        assert_eq!(
            s.message(),
            unknown.message(),
            "Victime's email is told apart from an unknown one"
        );
        assert_eq!(s.details(), unknown.details());
        t.assert_reveals_nothing("GrantAcrossAccounts", &format!("{s:?}"));
    }

    let by_login = |login: &str| pb::GetUserRequest {
        by: Some(pb::get_user_request::By::Login(login.into())),
    };
    let unknown = expect_code(
        admin.users.get_user(by_login("personne.inconnue")).await,
        Code::NotFound,
    );
    // The Y user, and Victime (whose login is his email).
    for login in [Y_LOGIN, VICTIME_EMAIL] {
        let s = expect_code(admin.users.get_user(by_login(login)).await, Code::NotFound);
        assert_eq!(s.message(), unknown.message());
        t.assert_reveals_nothing("GetUser", &format!("{s:?}"));
    }
    assert_eq!(
        snapshot(app).await,
        before,
        "a refused call changed something"
    );

    // Positive controls: the users he manages, he finds.
    let me = admin
        .users
        .get_user(by_login(&t.admin_login))
        .await
        .expect("his own login")
        .into_inner();
    assert_eq!(me.login, t.admin_login);
    let mut ops = app.operator().await;
    let (gaston, _) = create_user(
        &mut ops,
        advanced("Gaston", "Gérant", "gaston@example.com"),
        X,
        &[],
        vec![],
    )
    .await
    .unwrap();
    let granted = admin
        .grants
        .grant_across_accounts(across("gaston@example.com"))
        .await
        .expect("a user he manages, by email")
        .into_inner();
    assert_eq!(granted.user_id, gaston.id);
    // The operator finds the Y user by login.
    let found = ops
        .users
        .get_user(by_login(Y_LOGIN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.id, t.y_user.id);
}

/// Fetches the template of X as `key` sees it (both dialects) and imports
/// each twice into X: no line fails, and the second time nothing changes.
async fn template_imports_twice(app: &TestApp, key: &str) {
    let mut imp = pb::import_service_client::ImportServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(key)),
    );
    for excel in [false, true] {
        let csv = imp
            .get_import_template(pb::GetImportTemplateRequest {
                account_code: X.into(),
                excel,
            })
            .await
            .unwrap()
            .into_inner()
            .csv;
        for pass in ["first", "second"] {
            let run = import(app, key, opts(X), &csv, 1000).await;
            assert!(
                run.error.is_none(),
                "excel={excel}, {pass}: {:?}",
                run.error
            );
            assert_eq!(run.results.len(), 1, "excel={excel}, {pass}");
            let r = &run.results[0];
            let allowed: &[&str] = match pass {
                "first" => &["created", "updated", "unchanged"],
                // The same file again changes nothing.
                _ => &["unchanged"],
            };
            assert!(
                allowed.contains(&r.status_name()),
                "excel={excel}, {pass} import of the template: {r:?}\n{}",
                String::from_utf8_lossy(&csv)
            );
        }
    }
}

#[tokio::test]
async fn the_import_template_imports_twice_into_its_account() {
    let t = tenants().await;
    template_imports_twice(&t.app, &t.admin).await;
}

/// The template's example line is an advanced user, and the template offers
/// every right its reader may give, standard-only rights included
/// (`billing.invoices` ...): the example holds only those an advanced user
/// may, so it imports as it is. An admin holding such a right (a standard
/// user may) gets such a template...
#[tokio::test]
async fn the_template_of_an_admin_holding_a_standard_only_right_imports_twice() {
    let t = tenants().await;
    let (_, admin) = make_admin(
        &t.app,
        X,
        "Bea",
        vec![right("shipping.ws"), right("billing.invoices")],
    )
    .await;
    template_imports_twice(&t.app, &admin).await;
}

/// ... and so does every operator (the whole catalog).
#[tokio::test]
async fn an_operators_import_template_imports_twice_into_its_account() {
    let t = tenants().await;
    template_imports_twice(&t.app, &t.app.operator_key).await;
}

/// Sends an import's options and the `lines` of its file as the client
/// chooses; the sender ends the file when dropped.
async fn paced_import(
    channel: tonic::transport::Channel,
    key: &str,
    options: pb::ImportOptions,
) -> (
    tokio::sync::mpsc::Sender<pb::ImportUsersRequest>,
    tonic::Streaming<pb::ImportUsersResponse>,
) {
    let mut c = pb::import_service_client::ImportServiceClient::with_interceptor(
        channel,
        Bearer::new(Some(key)),
    );
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::ImportUsersRequest {
        msg: Some(pb::import_users_request::Msg::Options(options)),
    })
    .await
    .unwrap();
    let s = c
        .import_users(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, s)
}

fn chunk(lines: std::ops::Range<usize>, header: bool) -> pb::ImportUsersRequest {
    let mut file = String::new();
    if header {
        file.push_str("NOM,PRENOM,IDENTIFIANT,TYPE\n");
    }
    for i in lines {
        file.push_str(&format!("Nom{i},Prénom,paced{i},standard\n"));
    }
    pb::ImportUsersRequest {
        msg: Some(pb::import_users_request::Msg::Chunk(file.into_bytes())),
    }
}

/// Runs a write, failing after 5 s; how long it took.
async fn timed<T, F>(what: &str, write: F) -> std::time::Duration
where
    F: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let start = std::time::Instant::now();
    tokio::time::timeout(std::time::Duration::from_secs(5), write)
        .await
        .unwrap_or_else(|_| panic!("{what} waited on the import's client"))
        .unwrap_or_else(|e| panic!("{what}: {e:?}"));
    start.elapsed()
}

#[tokio::test]
async fn an_atomic_import_waiting_for_its_client_holds_up_no_other_account() {
    let a = spawn_app().await;
    let b = spawn_app_on(a.db_options.clone()).await;
    let org = org_with_account(&a, "Org", "LOCK-A").await;
    create_account(&mut a.operator_accounts().await, &org, "LOCK-B").await;
    let mut ops_a = a.operator().await;
    let (on_b, _) = create_user(
        &mut ops_a,
        standard("Bruno", "Bee"),
        "LOCK-B",
        &[],
        vec![right("shipping.ws")],
    )
    .await
    .unwrap();

    // The client sends the options, a batch of lines and 200 more, then
    // pauses 10 s.
    let batch = clef::service::import::BATCH;
    let atomic = pb::ImportOptions {
        atomic: true,
        ..opts("LOCK-A")
    };
    let (tx, mut s) = paced_import(a.channel().await, &a.operator_key, atomic).await;
    tx.send(chunk(0..batch + 200, true)).await.unwrap();
    let paused = std::time::Instant::now();
    // Until the server has had them: staged (an import that does not stage
    // has applied them in its transaction by then).
    for _ in 0..500 {
        let staged: i64 = sqlx::query_scalar("SELECT count(*) FROM import_staged_lines")
            .fetch_one(a.store.pool())
            .await
            .unwrap();
        if staged >= batch as i64 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    // Meanwhile, writes to account B commit at once, on either replica.
    let mut ops_b = b.operator().await;
    let revoke = timed(
        "RevokeRights on B through the second replica",
        ops_b.grants.revoke_rights(pb::RevokeRightsRequest {
            account_code: "LOCK-B".into(),
            user_id: on_b.id.clone(),
            rights: vec!["shipping.ws".into()],
        }),
    )
    .await;
    let create = timed(
        "CreateUser on B",
        create_user(&mut ops_a, standard("Berthe", "Bee"), "LOCK-B", &[], vec![]),
    )
    .await;
    eprintln!("during the pause: RevokeRights {revoke:?}, CreateUser {create:?}");
    assert!(
        revoke < std::time::Duration::from_secs(1),
        "RevokeRights took {revoke:?}"
    );
    assert!(
        create < std::time::Duration::from_secs(1),
        "CreateUser took {create:?}"
    );
    let grants: i64 = sqlx::query_scalar("SELECT count(*) FROM grants WHERE user_id = $1::uuid")
        .bind(&on_b.id)
        .fetch_one(a.store.pool())
        .await
        .unwrap();
    assert_eq!(grants, 0, "the revoke committed");
    let imported: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE login LIKE 'paced%'")
        .fetch_one(a.store.pool())
        .await
        .unwrap();
    assert_eq!(
        imported, 0,
        "an atomic import commits nothing before its end"
    );

    // The client sends the rest after its pause: the import completes.
    tokio::time::sleep(std::time::Duration::from_secs(10).saturating_sub(paused.elapsed())).await;
    tx.send(chunk(batch + 200..batch + 500, false))
        .await
        .unwrap();
    drop(tx);
    let mut statuses = Vec::new();
    let mut summary = None;
    while let Some(m) = s.message().await.unwrap() {
        statuses.extend(m.results.into_iter().map(|r| r.status_name()));
        summary = summary.or(m.summary);
    }
    assert_eq!(statuses.len(), batch + 500);
    assert!(statuses.iter().all(|s| *s == "created"), "{statuses:?}");
    let summary = summary.expect("a summary");
    assert!(summary.committed);
    assert_eq!(summary.lines, batch as i64 + 500);
    let imported: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE login LIKE 'paced%'")
        .fetch_one(a.store.pool())
        .await
        .unwrap();
    assert_eq!(imported, batch as i64 + 500);
}

#[tokio::test]
async fn an_admin_grant_past_its_expiry_on_the_clock_stops_an_import_matching_by_email() {
    let app = spawn_app_with_manual_clock().await;
    org_with_account(&app, "Organisation Un", X).await;
    org_with_account(&app, "Organisation Deux", Y).await;
    let mut ops = app.operator().await;
    // Ada administers X, and Y for the next hour.
    let (ada, ada_key) = create_user(
        &mut ops,
        advanced("Ada", "Admin", "ada@example.com"),
        X,
        &[],
        vec![right("admin.users"), right("shipping.ws")],
    )
    .await
    .unwrap();
    let in_an_hour = prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() + 3600,
        nanos: 0,
    };
    ops.links
        .link_user(pb::LinkUserRequest {
            account_code: Y.into(),
            user_key: ada.user_key.clone(),
            tags: vec![],
            rights: vec![pb::RightGrant {
                expire_time: Some(in_an_hour),
                ..right("admin.users")
            }],
        })
        .await
        .unwrap();
    create_user(
        &mut ops,
        advanced("Victor", "Victime", VICTIME_EMAIL),
        Y,
        &[],
        vec![],
    )
    .await
    .unwrap();
    let file = advanced_line(VICTIME_EMAIL, "");
    let dry = || pb::ImportOptions {
        dry_run: true,
        ..opts(X)
    };
    // While she administers Y, she manages Victime: her line matches him.
    let run = import(&app, &ada_key, dry(), file.as_bytes(), 1000).await;
    assert_eq!(run.statuses(), [(2, "updated")], "{:?}", run.results);
    // Past the grant's expiry on the clock (Postgres' own time has not
    // moved), she no longer does, on this path as on every other.
    app.advance(std::time::Duration::from_secs(2 * 3600));
    let run = import(&app, &ada_key, dry(), file.as_bytes(), 1000).await;
    assert_eq!(
        run.statuses(),
        [(2, "invalid_user_data")],
        "{:?}",
        run.results
    );
    assert_eq!(run.results[0].message, NOT_MANAGED);
}

#[tokio::test]
async fn an_import_changes_a_status_only_for_an_admin_of_every_account_of_the_user() {
    let app = spawn_app().await;
    org_with_account(&app, "Organisation Un", X).await;
    org_with_account(&app, "Organisation Deux", Y).await;
    let mut ops = app.operator().await;
    let (ada, ada_key) = create_user(
        &mut ops,
        advanced("Ada", "Admin", "ada@example.com"),
        X,
        &[],
        vec![right("admin.users")],
    )
    .await
    .unwrap();
    // Victor works for X and for Y; Ada administers X only.
    let (victor, _) = create_user(
        &mut ops,
        advanced("Victor", "Victime", VICTIME_EMAIL),
        X,
        &[],
        vec![],
    )
    .await
    .unwrap();
    let link = |user_key: &str, rights| pb::LinkUserRequest {
        account_code: Y.into(),
        user_key: user_key.into(),
        tags: vec![],
        rights,
    };
    ops.links
        .link_user(link(&victor.user_key, vec![]))
        .await
        .unwrap();
    let file = format!("NOM;PRENOM;EMAIL;ETAT\nVictime;Victor;{VICTIME_EMAIL};désactivé\n");
    let options = || pb::ImportOptions {
        default_kind: pb::UserKind::Advanced as i32,
        ..opts(X)
    };
    let before = snapshot(&app).await;
    let run = import(&app, &ada_key, options(), file.as_bytes(), 1000).await;
    assert_eq!(
        run.statuses(),
        [(2, "invalid_user_data")],
        "{:?}",
        run.results
    );
    let message = &run.results[0].message;
    assert!(
        message.contains("every account") && message.contains(Y),
        "{message}"
    );
    assert_nothing_left(&app, &before).await;
    // Once she administers Y too, the same line deactivates him.
    ops.links
        .link_user(link(&ada.user_key, vec![right("admin.users")]))
        .await
        .unwrap();
    let run = import(&app, &ada_key, options(), file.as_bytes(), 1000).await;
    assert_eq!(run.statuses(), [(2, "updated")], "{:?}", run.results);
    let victor = ops
        .users
        .get_user(pb::GetUserRequest {
            by: Some(pb::get_user_request::By::Id(victor.id.clone())),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(victor.status, pb::UserStatus::Deactivated as i32);
}
