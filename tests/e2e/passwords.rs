//! Passwords: one answer for every refused login, throttling, resets by
//! mail, rehashing at a new cost, a bounded hashing pool, and no secret in
//! clear anywhere.

use std::time::Duration;

use clef::{domain::clock::Clock, pb};
use tonic::Code;

use crate::{common::*, mail::*};

/// An account with its admin, and a standard user of it with an email.
async fn setup(app: &TestApp, code: &str) -> (Clients, pb::User) {
    org_with_account(app, &format!("Org {code}"), code).await;
    let (_, key) = make_admin(app, code, code, vec![]).await;
    let mut admin = app.client(&key).await;
    let mut user = standard("Paul", &format!("Mot{code}"));
    user.email = format!("paul@{code}.example").to_lowercase();
    let (user, _) = create_user(&mut admin, user, code, &[], vec![])
        .await
        .unwrap();
    (admin, user)
}

/// Sets a password as a portal would (an admin may only for users without
/// an email).
async fn set(c: &mut Clients, user: &pb::User, password: &str, keep: bool) {
    c.portal
        .set_password(pb::SetPasswordRequest {
            user_id: user.id.clone(),
            password: password.into(),
            keep_without_change: keep,
        })
        .await
        .expect("set password");
}

async fn login(
    c: &mut Clients,
    login: &str,
    password: &str,
) -> Result<pb::AuthenticatePasswordResponse, tonic::Status> {
    c.portal
        .authenticate_password(pb::AuthenticatePasswordRequest {
            login: login.into(),
            password: password.into(),
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn every_refused_login_gets_the_same_answer() {
    let app = spawn_app().await;
    let (mut admin, user) = setup(&app, "PW1").await;
    set(&mut admin, &user, "chosen by the admin", false).await;

    let ok = login(&mut admin, &user.login, "chosen by the admin")
        .await
        .expect("login");
    assert_eq!(ok.user_id, user.id);
    assert_eq!(ok.status, pb::UserStatus::Active as i32);
    assert!(
        ok.must_change_password,
        "an admin's password is changed at next login"
    );
    admin
        .portal
        .change_password(pb::ChangePasswordRequest {
            login: user.login.clone(),
            current_password: "chosen by the admin".into(),
            new_password: "chosen by Paul himself".into(),
        })
        .await
        .expect("change");
    let ok = login(&mut admin, &user.login, "chosen by Paul himself")
        .await
        .unwrap();
    assert!(!ok.must_change_password);
    expect_code(
        login(&mut admin, &user.login, "chosen by the admin").await,
        Code::Unauthenticated,
    );

    // An invited user has no password; a deactivated one is refused with
    // his right password; a service principal has none.
    let mut ops = app.operator().await;
    let invited = ops
        .users
        .create_user(pb::CreateUserRequest {
            user: Some(advanced("In", "Vited", "invited@pw1.example")),
            account_code: "PW1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let (other, _) = create_user(&mut admin, standard("Dea", "Ctivated"), "PW1", &[], vec![])
        .await
        .unwrap();
    set(&mut admin, &other, "a right password", true).await;
    admin
        .users
        .deactivate_user(pb::DeactivateUserRequest {
            id: other.id.clone(),
        })
        .await
        .unwrap();
    let refusals = [
        login(&mut admin, "nobody-at-all", "chosen by Paul himself").await,
        login(&mut admin, &user.login, "a wrong password").await,
        login(&mut admin, &other.login, "a right password").await,
        login(&mut admin, &invited.login, "anything at all").await,
        login(&mut admin, &user.login, "").await,
    ];
    let messages: Vec<String> = refusals
        .into_iter()
        .map(|r| expect_code(r, Code::Unauthenticated).message().to_owned())
        .collect();
    assert!(messages.iter().all(|m| *m == messages[0]), "{messages:?}");

    // Policy of new passwords: at least 12 characters, any Unicode.
    let short = admin
        .credentials
        .set_password(pb::SetPasswordRequest {
            user_id: user.id.clone(),
            password: "short".into(),
            keep_without_change: true,
        })
        .await;
    assert_eq!(
        violated_fields(&expect_code(short, Code::InvalidArgument)),
        ["password"]
    );
    set(&mut admin, &user, "мой пароль 🔑 très long", true).await;
    login(&mut admin, &user.login, "мой пароль 🔑 très long")
        .await
        .expect("unicode");
}

#[tokio::test]
async fn repeated_failures_lock_the_login_until_it_passes_or_an_admin_clears_it() {
    let app = spawn_app_with_manual_clock().await;
    let (mut admin, user) = setup(&app, "PW2").await;
    set(&mut admin, &user, "the right password", true).await;
    for _ in 0..5 {
        expect_code(
            login(&mut admin, &user.login, "a wrong password").await,
            Code::Unauthenticated,
        );
    }
    // Locked: the right password gets the same refusal.
    let locked = login(&mut admin, &user.login, "the right password").await;
    expect_code(locked, Code::Unauthenticated);
    let seen = admin
        .users
        .get_user(pb::GetUserRequest {
            by: Some(pb::get_user_request::By::Id(user.id.clone())),
        })
        .await
        .unwrap()
        .into_inner()
        .password
        .unwrap();
    assert!(seen.set);
    // The attempt while locked counts too (the lock grows).
    assert_eq!(seen.failed_attempts, 6);
    assert!(seen.locked_until_time.is_some(), "the admin sees the lock");

    // The lock passes (one second after the fifth failure).
    app.advance(Duration::from_secs(2));
    login(&mut admin, &user.login, "the right password")
        .await
        .expect("unlocked by time");

    // Growing: after seven failures, two seconds are not enough.
    for _ in 0..7 {
        let _ = login(&mut admin, &user.login, "a wrong password").await;
    }
    app.advance(Duration::from_secs(2));
    expect_code(
        login(&mut admin, &user.login, "the right password").await,
        Code::Unauthenticated,
    );
    // An admin clears it.
    admin
        .credentials
        .clear_password_lock(pb::ClearPasswordLockRequest {
            user_id: user.id.clone(),
        })
        .await
        .expect("clear");
    login(&mut admin, &user.login, "the right password")
        .await
        .expect("cleared");
}

#[tokio::test]
async fn a_reset_answers_the_same_for_everyone_and_mails_a_single_use_link() {
    let smtp = Smtp::start().await;
    let app = spawn_mailing(&smtp, Clock::manual()).await;
    let (mut admin, user) = setup(&app, "PW3").await;
    let (nomail, _) = create_user(&mut admin, standard("Sans", "Mail"), "PW3", &[], vec![])
        .await
        .unwrap();
    let ask = |login: &str, email: &str| pb::RequestPasswordResetRequest {
        login: login.into(),
        email: email.into(),
    };
    // By login, again at once (within a minute: nothing more is sent),
    // then a minute later by email: a newer link kills the earlier one.
    for (req, mails, later) in [
        (ask(&user.login, ""), 1, 0),
        (ask(&user.login, ""), 1, 61),
        (ask("", &user.email.to_uppercase()), 2, 0),
        (ask("nobody", ""), 2, 0),
        (ask("", "nobody@nowhere.example"), 2, 0),
        (ask(&nomail.login, ""), 2, 0),
    ] {
        let r = admin
            .portal
            .request_password_reset(req)
            .await
            .expect("same answer");
        assert_eq!(r.into_inner(), pb::RequestPasswordResetResponse {});
        smtp.wait_for(&user.email, mails).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.advance(Duration::from_secs(later));
    }
    let mails = smtp.wait_for(&user.email, 2).await;
    assert!(mails
        .iter()
        .all(|m| m.subject == "Réinitialisation de votre mot de passe"));
    // The second request killed the first link.
    let first = mails[0].token("clefrst_").unwrap();
    let second = mails[1].token("clefrst_").unwrap();
    let reset = |token: &str| pb::ResetPasswordRequest {
        token: token.into(),
        new_password: "after the reset link".into(),
    };
    expect_code(
        admin.portal.reset_password(reset(&first)).await,
        Code::FailedPrecondition,
    );
    admin
        .portal
        .reset_password(reset(&second))
        .await
        .expect("reset");
    let again = admin.portal.reset_password(reset(&second)).await;
    expect_code(again, Code::FailedPrecondition);
    let ok = login(&mut admin, &user.login, "after the reset link")
        .await
        .unwrap();
    assert!(!ok.must_change_password);
    // Nobody else got anything.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(smtp.received().len(), 2, "{:?}", smtp.received());
}

#[tokio::test]
async fn a_hash_made_at_another_cost_is_rehashed_at_login() {
    let app = spawn_app().await;
    let (mut admin, user) = setup(&app, "PW4").await;
    set(&mut admin, &user, "kept across costs", true).await;
    let hash = || async {
        sqlx::query_scalar::<_, String>("SELECT hash FROM passwords WHERE user_id = $1::uuid")
            .bind(&user.id)
            .fetch_one(app.store.pool())
            .await
            .unwrap()
    };
    assert!(
        hash().await.starts_with("$argon2id$v=19$m=256,t=1,p=1$"),
        "{}",
        hash().await
    );
    // Another replica hashes at another cost.
    let options = clef::server::ServeOptions {
        hasher: Some(
            clef::hasher::Hasher::new(
                clef::hasher::Cost {
                    memory_kib: 512,
                    iterations: 2,
                    lanes: 1,
                },
                1,
                8,
            )
            .unwrap(),
        ),
        ..test_options()
    };
    let b = spawn_app_with_options(app.db_options.clone(), Clock::system(), options).await;
    let mut on_b = b.client(&b.operator_key).await;
    login(&mut on_b, &user.login, "kept across costs")
        .await
        .expect("old hash verifies");
    // Rehashed just after the answer.
    let mut new = hash().await;
    for _ in 0..100 {
        if new.starts_with("$argon2id$v=19$m=512,") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        new = hash().await;
    }
    assert!(new.starts_with("$argon2id$v=19$m=512,t=2,p=1$"), "{new}");
    login(&mut on_b, &user.login, "kept across costs")
        .await
        .expect("new hash verifies");
    expect_code(
        login(&mut on_b, &user.login, "not it").await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn a_full_hashing_queue_answers_resource_exhausted() {
    let options = clef::server::ServeOptions {
        hasher: Some(clef::hasher::Hasher::new(Default::default(), 1, 1).unwrap()),
        ..test_options()
    };
    let app = spawn_app_with_options(fresh_database().await, Clock::system(), options).await;
    let ops = app.client(&app.operator_key).await;
    let mut calls = Vec::new();
    for i in 0..12 {
        let mut portal = ops.portal.clone();
        calls.push(tokio::spawn(async move {
            portal
                .authenticate_password(pb::AuthenticatePasswordRequest {
                    login: format!("someone-{i}"),
                    password: "whatever it is".into(),
                })
                .await
                .map(|_| ())
                .unwrap_err()
                .code()
        }));
    }
    let mut codes = Vec::new();
    for c in calls {
        codes.push(c.await.unwrap());
    }
    assert!(codes.contains(&Code::ResourceExhausted), "{codes:?}");
    assert!(codes.contains(&Code::Unauthenticated), "{codes:?}");
    assert!(codes
        .iter()
        .all(|c| matches!(c, Code::ResourceExhausted | Code::Unauthenticated)));
}

#[tokio::test]
async fn no_password_or_token_is_anywhere_in_clear() {
    let smtp = Smtp::start().await;
    let app = spawn_mailing(&smtp, Clock::system()).await;
    let (mut admin, user) = setup(&app, "PW5").await;
    const SET: &str = "set-by-admin secret";
    const CHOSEN: &str = "chosen-at-invitation secret";
    const RESET: &str = "chosen-after-reset secret";
    set(&mut admin, &user, SET, false).await;
    let mut ops = app.operator().await;
    let created = ops
        .users
        .create_user(pb::CreateUserRequest {
            user: Some(advanced("Clé", "Secrète", "secret@pw5.example")),
            account_code: "PW5".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mailed = smtp
        .wait_subject(
            "secret@pw5.example",
            "Finalisez la création de votre compte",
        )
        .await
        .token("clefinv_")
        .unwrap();
    ops.portal
        .complete_invitation(pb::CompleteInvitationRequest {
            token: mailed.clone(),
            password: CHOSEN.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    ops.portal
        .request_password_reset(pb::RequestPasswordResetRequest {
            login: user.login.clone(),
            email: String::new(),
        })
        .await
        .unwrap();
    let reset = smtp.wait_for(&user.email, 1).await[0]
        .token("clefrst_")
        .unwrap();
    ops.portal
        .reset_password(pb::ResetPasswordRequest {
            token: reset.clone(),
            new_password: RESET.into(),
        })
        .await
        .unwrap();

    // Every row of every table, as text.
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    let mut dump = String::new();
    for t in &tables {
        let rows: Option<String> =
            sqlx::query_scalar(&format!("SELECT string_agg(x::text, ' ') FROM \"{t}\" x"))
                .fetch_one(app.store.pool())
                .await
                .unwrap();
        dump.push_str(&rows.unwrap_or_default());
    }
    assert!(
        dump.contains("$argon2id$"),
        "the dump reads the passwords table"
    );
    for secret in [
        SET,
        CHOSEN,
        RESET,
        &mailed,
        &reset,
        &created.invitation_token,
    ] {
        assert!(!dump.contains(secret), "{secret:?} is in the database");
    }

    // Exports show no hash.
    let mut export = pb::export_service_client::ExportServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(&app.operator_key)),
    );
    let mut stream = export
        .export_users(pb::ExportUsersRequest {
            team: None,
            of: Some(pb::export_users_request::Of::AccountCode("PW5".into())),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut csv = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        csv.extend(chunk.data);
    }
    let csv = String::from_utf8_lossy(&csv);
    assert!(csv.contains("Secrète"), "{csv}");
    assert!(
        !csv.contains("argon2") && !csv.to_lowercase().contains("mot de passe"),
        "{csv}"
    );
}

#[tokio::test]
async fn an_imports_password_column_makes_users_active_with_a_password_to_change() {
    use crate::import::{import, opts, report};
    let app = spawn_app().await;
    org_with_account(&app, "Org PWI", "PWI").await;
    let (_, key) = make_admin(&app, "PWI", "Ines", vec![right("tracking.ws")]).await;
    let file = "NOM;PRENOM;FONCTION;EMAIL;TELEPHONE;ADRESSE;CODE POSTAL;VILLE;MOT DE PASSE;tracking.ws\n\
                Avec;Anne;Chef;anne@pwi.example;0102030405;1 rue A;88000;Épinal;imported password 1;oui\n\
                Sans;Sam;Chef;sam@pwi.example;0102030405;1 rue A;88000;Épinal;;oui\n\
                Court;Carl;Chef;carl@pwi.example;0102030405;1 rue A;88000;Épinal;tooshort;oui\n";
    // A dry run reports the same and writes nothing.
    let dry = pb::ImportOptions {
        dry_run: true,
        ..opts("PWI")
    };
    let rehearsed = import(&app, &key, dry, file.as_bytes(), 1 << 16).await;
    assert!(rehearsed.error.is_none(), "{:?}", rehearsed.error);
    assert_eq!(
        rehearsed.statuses(),
        [(2, "created"), (3, "created"), (4, "invalid_user_data")]
    );
    let run = import(&app, &key, opts("PWI"), file.as_bytes(), 1 << 16).await;
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(
        run.statuses(),
        [(2, "created"), (3, "created"), (4, "invalid_user_data")],
        "{:?}",
        run.results
    );
    let short = &run.results[2];
    assert_eq!(short.column, "MOT DE PASSE");
    assert!(!short.message.contains("tooshort"), "{}", short.message);

    // With a password: active at once, to change it at first login.
    let mut c = app.client(&key).await;
    let anne = login(&mut c, "anne@pwi.example", "imported password 1")
        .await
        .expect("login");
    assert!(anne.must_change_password);
    assert_eq!(anne.status, pb::UserStatus::Active as i32);
    // Without: invited.
    let statuses: Vec<String> = sqlx::query_scalar(
        "SELECT status FROM users WHERE email IN ('anne@pwi.example', 'sam@pwi.example') ORDER BY email",
    )
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    assert_eq!(statuses, ["active", "invited"]);

    // Neither the report nor the database holds it in clear; the same
    // file again changes nothing.
    let (_, csv) = report(&app, &key, "PWI").await.unwrap();
    assert!(
        !csv.contains("imported password 1") && !csv.contains("tooshort"),
        "{csv}"
    );
    let again = import(&app, &key, opts("PWI"), file.as_bytes(), 1 << 16).await;
    assert_eq!(
        again.statuses(),
        [(2, "unchanged"), (3, "unchanged"), (4, "invalid_user_data")]
    );
    let clear: i64 =
        sqlx::query_scalar("SELECT count(*) FROM passwords WHERE hash LIKE '%imported password%'")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(clear, 0);

    // Atomic imports take no password column (they stage records as sent).
    let atomic = pb::ImportOptions {
        atomic: true,
        ..opts("PWI")
    };
    let refused = import(&app, &key, atomic, file.as_bytes(), 1 << 16).await;
    let e = refused.error.expect("refused");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("atomic"), "{}", e.message());
}

/// The figures of `bench/logins.sh` (ignored: run in release by it): the
/// time of a refused login by cause, at the real argon2id cost, and Check
/// throughput alone and while 50 logins run at once.
#[tokio::test]
#[ignore]
async fn login_figures() {
    use std::time::Instant;
    let options = clef::server::ServeOptions {
        hasher: Some(clef::hasher::Hasher::for_this_machine(Default::default()).unwrap()),
        ..test_options()
    };
    let app = spawn_app_with_options(fresh_database().await, Clock::system(), options).await;
    let (mut admin, user) = setup(&app, "FIG").await;
    set(&mut admin, &user, "the right password", true).await;
    let (gone, _) = create_user(&mut admin, standard("Gone", "User"), "FIG", &[], vec![])
        .await
        .unwrap();
    set(&mut admin, &gone, "the right password", true).await;
    admin
        .users
        .deactivate_user(pb::DeactivateUserRequest {
            id: gone.id.clone(),
        })
        .await
        .unwrap();
    let (_, subject) = create_user(
        &mut admin,
        standard("Sub", "Ject"),
        "FIG",
        &[],
        vec![right("admin.users")],
    )
    .await
    .unwrap();
    let mut ops = app.client(&app.operator_key).await;
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        (v[v.len() / 2], v[v.len() * 9 / 10])
    };
    let mut figures = Vec::new();
    for (case, who, password) in [
        ("unknown login", "nobody-at-all", "the right password"),
        ("wrong password", user.login.as_str(), "a wrong password!"),
        ("inactive user", gone.login.as_str(), "the right password"),
        ("right password", user.login.as_str(), "the right password"),
    ] {
        let mut times = Vec::new();
        for i in 0..60 {
            if case == "wrong password" && i % 4 == 3 {
                // Keep clear of the lock: a success resets the count.
                login(&mut ops, &user.login, "the right password")
                    .await
                    .unwrap();
            }
            let t = Instant::now();
            let _ = login(&mut ops, who, password).await;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let (p50, p90) = median(times);
        figures.push((case, p50));
        println!("logins: {case}: p50 {p50:.2} ms, p90 {p90:.2} ms");
    }
    println!(
        "logins: wrong/unknown {:.3}, inactive/unknown {:.3}",
        figures[1].1 / figures[0].1,
        figures[2].1 / figures[0].1
    );

    // Check throughput, alone then while 50 logins run.
    let checks = |seconds: u64| {
        let app_addr = app.addr;
        let key = subject.clone();
        let svc = app.operator_key.clone();
        async move {
            let stop = Instant::now() + Duration::from_secs(seconds);
            let mut tasks = Vec::new();
            for _ in 0..32 {
                let ch = connect(app_addr).await;
                let mut c =
                    pb::authorization_service_client::AuthorizationServiceClient::with_interceptor(
                        ch,
                        Bearer::new(Some(&svc)),
                    );
                let key = key.clone();
                tasks.push(tokio::spawn(async move {
                    let mut n = 0u64;
                    while Instant::now() < stop {
                        let r = check(&mut c, by_key(&key), "FIG", "admin.users", 0).await;
                        assert!(r.allowed);
                        n += 1;
                    }
                    n
                }));
            }
            let mut total = 0;
            for t in tasks {
                total += t.await.unwrap();
            }
            total as f64 / seconds as f64
        }
    };
    let alone = checks(5).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loggers = Vec::new();
    for _ in 0..50 {
        let mut portal = ops.portal.clone();
        let (stop, login_name) = (stop.clone(), user.login.clone());
        loggers.push(tokio::spawn(async move {
            let (mut done, mut exhausted) = (0u64, 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match portal
                    .authenticate_password(pb::AuthenticatePasswordRequest {
                        login: login_name.clone(),
                        password: "the right password".into(),
                    })
                    .await
                {
                    Err(e) if e.code() == Code::ResourceExhausted => exhausted += 1,
                    _ => done += 1,
                }
            }
            (done, exhausted)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = checks(5).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut logins, mut exhausted) = (0, 0);
    for l in loggers {
        let (d, e) = l.await.unwrap();
        logins += d;
        exhausted += e;
    }
    println!(
        "logins: check alone {alone:.0}/s, during 50 concurrent logins {during:.0}/s (ratio {:.3}); {:.1} logins/s, {exhausted} RESOURCE_EXHAUSTED; cores {}",
        during / alone,
        logins as f64 / 5.5,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
}

#[tokio::test]
async fn malformed_logins_and_emails_are_invalid_never_internal() {
    let app = spawn_app().await;
    let (mut admin, user) = setup(&app, "PW6").await;
    set(&mut admin, &user, "the right password", true).await;
    let long = "l".repeat(3000);
    for bad in ["zoe\u{0}", long.as_str(), "two words", ""] {
        let r = login(&mut admin, bad, "the right password").await;
        let s = expect_code(r, Code::InvalidArgument);
        assert_eq!(violated_fields(&s), ["login"], "{bad:?}");
        let r = admin
            .portal
            .change_password(pb::ChangePasswordRequest {
                login: bad.into(),
                current_password: "the right password".into(),
                new_password: "a brand new password".into(),
            })
            .await;
        expect_code(r, Code::InvalidArgument);
    }
    for (login_cell, email) in [
        ("zoe\u{0}", ""),
        ("", "paul@pw6.example\u{0}"),
        ("", long.as_str()),
    ] {
        let r = admin
            .portal
            .request_password_reset(pb::RequestPasswordResetRequest {
                login: login_cell.into(),
                email: email.into(),
            })
            .await;
        expect_code(r, Code::InvalidArgument);
    }
    let r = admin
        .users
        .get_user(pb::GetUserRequest {
            by: Some(pb::get_user_request::By::Login("zoe\u{0}".into())),
        })
        .await;
    expect_code(r, Code::NotFound);
    // Nothing was counted for them.
    let counted: i64 = sqlx::query_scalar("SELECT count(*) FROM login_failures")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(counted, 0);
    // Surrounding spaces are the same login (and count against it).
    login(
        &mut admin,
        &format!(" {}\t", user.login),
        "the right password",
    )
    .await
    .expect("trimmed");
}

#[tokio::test]
async fn a_reset_link_dies_when_its_user_is_deactivated() {
    let smtp = Smtp::start().await;
    let app = spawn_mailing(&smtp, Clock::system()).await;
    let (mut admin, user) = setup(&app, "PW7").await;
    admin
        .portal
        .request_password_reset(pb::RequestPasswordResetRequest {
            login: user.login.clone(),
            email: String::new(),
        })
        .await
        .unwrap();
    let token = smtp.wait_for(&user.email, 1).await[0]
        .token("clefrst_")
        .unwrap();
    admin
        .users
        .deactivate_user(pb::DeactivateUserRequest {
            id: user.id.clone(),
        })
        .await
        .unwrap();
    admin
        .users
        .reactivate_user(pb::ReactivateUserRequest {
            id: user.id.clone(),
        })
        .await
        .unwrap();
    let r = admin
        .portal
        .reset_password(pb::ResetPasswordRequest {
            token,
            new_password: "after reactivation".into(),
        })
        .await;
    expect_code(r, Code::FailedPrecondition);
}

#[tokio::test]
async fn an_imports_passwords_are_hashed_a_few_hundred_per_batch() {
    // Each password cell is hashed before its batch's transaction opens: a
    // batch holds at most BATCH_PASSWORDS of them, so that the import shows
    // signs of life (and its client hears of its lines) at a steady pace.
    use clef::service::import::BATCH_PASSWORDS;
    let app = spawn_app().await;
    org_with_account(&app, "Org PWB", "PWB").await;
    let (_, key) = make_admin(&app, "PWB", "Ines", vec![right("tracking.ws")]).await;
    let n = BATCH_PASSWORDS + 50;
    let mut file = String::from(
        "NOM;PRENOM;FONCTION;EMAIL;TELEPHONE;ADRESSE;CODE POSTAL;VILLE;MOT DE PASSE;tracking.ws\n",
    );
    for i in 0..n {
        file.push_str(&format!(
            "Nom{i};Anne;Chef;u{i}@pwb.example;0102030405;1 rue A;88000;Épinal;imported password {i};oui\n"
        ));
    }
    let mut c = pb::import_service_client::ImportServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(&key)),
    );
    let requests = [
        pb::import_users_request::Msg::Options(crate::import::opts("PWB")),
        pb::import_users_request::Msg::Chunk(file.into_bytes()),
    ]
    .map(|msg| pb::ImportUsersRequest { msg: Some(msg) });
    let mut s = c
        .import_users(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut told = Vec::new();
    while let Some(m) = s.message().await.unwrap() {
        if !m.results.is_empty() {
            let odd = m.results.iter().find(|r| r.status_name() != "created");
            assert!(odd.is_none(), "{odd:?}");
            told.push(m.results.len());
        }
    }
    assert_eq!(told, [BATCH_PASSWORDS, 50]);
}
