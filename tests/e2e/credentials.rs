//! Invitations and the outbox, against a real SMTP server: an advanced user
//! created or imported is invited by mail (in his language), completes the
//! invitation with the mailed token, becomes active with a key and is told
//! his rights; tokens expire, die when used or resent; deliveries survive
//! an SMTP outage and are never doubled by two replicas.

use std::time::Duration;

use clef::{domain::clock::Clock, pb};
use tonic::Code;

use crate::{common::*, mail::*};

const INVITATION_FR: &str = "Finalisez la création de votre compte";
const INVITATION_EN: &str = "Complete the creation of your account";
const CREATED_FR: &str = "Votre compte a été créé";

/// An organization with account `code`, its admin (who may delegate
/// `rights`), and the admin's clients.
async fn tenant(app: &TestApp, code: &str, rights: &[&str]) -> Clients {
    tenant_key(app, code, rights).await.1
}

async fn tenant_key(app: &TestApp, code: &str, rights: &[&str]) -> (String, Clients) {
    org_with_account(app, &format!("Org {code}"), code).await;
    let (_, key) = make_admin(app, code, code, rights.iter().map(|r| right(r)).collect()).await;
    let c = app.client(&key).await;
    (key, c)
}

async fn invite(
    admin: &mut Clients,
    user: pb::User,
    account: &str,
    rights: &[&str],
) -> pb::CreateUserResponse {
    admin
        .users
        .create_user(pb::CreateUserRequest {
            user: Some(user),
            account_code: account.into(),
            rights: rights.iter().map(|r| right(r)).collect(),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner()
}

async fn complete_with(
    c: &mut Clients,
    token: &str,
    login: &str,
) -> Result<pb::CompleteInvitationResponse, tonic::Status> {
    c.portal
        .complete_invitation(pb::CompleteInvitationRequest {
            token: token.into(),
            login: login.into(),
            password: TEST_PASSWORD.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn an_invited_user_completes_his_invitation_from_the_mail() {
    let smtp = Smtp::start().await;
    let app = spawn_mailing(&smtp, Clock::system()).await;
    let mut admin = tenant(&app, "850061", &["shipping.ws", "tracking.ws"]).await;
    let created = invite(
        &mut admin,
        advanced("Zoé", "Brontë", "zoe@partner.example"),
        "850061",
        &["shipping.ws", "tracking.ws"],
    )
    .await;
    let user = created.user.unwrap();
    assert_eq!(user.status, pb::UserStatus::Invited as i32);
    assert!(created.connection_key.is_empty(), "no key while invited");
    assert!(created.invitation_token.starts_with("clefinv_"));
    let until = created.invitation_expire_time.unwrap().seconds - chrono::Utc::now().timestamp();
    assert!(
        (47 * 3600..=48 * 3600).contains(&until),
        "valid 48 h: {until}"
    );

    // Invited: denied everywhere.
    let mut decider = app.decider().await;
    let r = check(&mut decider, by_user(&user.id), "850061", "shipping.ws", 0).await;
    assert!(!r.allowed);
    assert_eq!(r.reason, pb::DenialReason::InactiveUser as i32);

    let mail = smtp
        .wait_subject("zoe@partner.example", INVITATION_FR)
        .await;
    assert!(mail.body.contains("Madame, Monsieur,"), "{}", mail.body);
    assert!(
        mail.body
            .contains("vient d'être faite par 850061 Admin pour le compte 850061."),
        "{}",
        mail.body
    );
    assert!(
        mail.body.contains("ce lien restera valide 48h"),
        "{}",
        mail.body
    );
    assert!(mail
        .body
        .contains("https://portal.example/clef/invitation?token=clefinv_"));
    assert!(mail.body.contains(&user.user_key), "{}", mail.body);
    let token = mail.token("clefinv_").unwrap();
    assert_ne!(
        token, created.invitation_token,
        "the mail carries a token of its own"
    );

    // Someone else's email as a login: refused, the token still good.
    let r = complete_with(&mut admin, &token, "someone@else.example").await;
    assert_eq!(
        violated_fields(&expect_code(r, Code::InvalidArgument)),
        ["login"]
    );
    let done = complete_with(&mut admin, &token, "zoe.b")
        .await
        .expect("complete");
    let active = done.user.unwrap();
    assert_eq!(active.status, pb::UserStatus::Active as i32);
    assert_eq!(active.login, "zoe.b");
    let r = check(
        &mut decider,
        by_key(&done.connection_key),
        "850061",
        "shipping.ws",
        done.revision,
    )
    .await;
    assert!(r.allowed, "{r:?}");
    // The key works for his own calls too.
    let mut zoe = app.client(&done.connection_key).await;
    zoe.keys
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .expect("his key works");

    let confirmed = smtp.wait_subject("zoe@partner.example", CREATED_FR).await;
    assert!(confirmed.body.contains("zoe.b"), "{}", confirmed.body);
    assert!(
        confirmed
            .body
            .contains("Web Service Affranchissement (850061)"),
        "{}",
        confirmed.body
    );
    assert!(
        confirmed.body.contains("Web Service de suivi (850061)"),
        "{}",
        confirmed.body
    );

    // Every other invitation token died with the completion.
    let again = complete_with(&mut admin, &created.invitation_token, "").await;
    expect_code(again, Code::FailedPrecondition);
}

#[tokio::test]
async fn invitations_speak_the_users_language() {
    let smtp = Smtp::start().await;
    let app = spawn_mailing(&smtp, Clock::system()).await;
    let mut admin = tenant(&app, "EN1", &["tracking.ws"]).await;
    let mut user = advanced("Ann", "Smith", "ann@partner.example");
    user.language = "en-GB".into();
    invite(&mut admin, user, "EN1", &["tracking.ws"]).await;
    let mail = smtp
        .wait_subject("ann@partner.example", INVITATION_EN)
        .await;
    assert!(mail.body.starts_with("Hello Ann,"), "{}", mail.body);
    assert!(mail.body.contains("valid for 48 hours"), "{}", mail.body);
    let token = mail.token("clefinv_").unwrap();
    complete_with(&mut admin, &token, "")
        .await
        .expect("complete");
    let confirmed = smtp
        .wait_subject("ann@partner.example", "Your account has been created")
        .await;
    assert!(
        confirmed.body.contains("Tracking web service (EN1)"),
        "{}",
        confirmed.body
    );
}

#[tokio::test]
async fn an_imported_advanced_user_is_invited_by_mail() {
    let smtp = Smtp::start().await;
    let app = spawn_mailing(&smtp, Clock::system()).await;
    let (key, mut c) = tenant_key(&app, "IMP1", &["tracking.ws"]).await;
    let csv = "NOM;PRENOM;FONCTION;EMAIL;TELEPHONE;ADRESSE;CODE POSTAL;VILLE;tracking.ws\n\
               Durand;Léa;Logisticienne;lea@partner.example;0102030405;1 rue Haute;88000;Épinal;oui\n";
    let run = crate::import::import(
        &app,
        &key,
        crate::import::opts("IMP1"),
        csv.as_bytes(),
        1 << 16,
    )
    .await;
    assert_eq!(
        run.statuses().iter().map(|s| s.1).collect::<Vec<_>>(),
        ["created"],
        "{:?}",
        run.results
    );
    let mail = smtp
        .wait_subject("lea@partner.example", INVITATION_FR)
        .await;
    let token = mail.token("clefinv_").unwrap();
    let done = complete_with(&mut c, &token, "").await.expect("complete");
    assert_eq!(done.user.unwrap().login, "lea@partner.example");
    let mut decider = app.decider().await;
    let r = check(
        &mut decider,
        by_key(&done.connection_key),
        "IMP1",
        "tracking.ws",
        done.revision,
    )
    .await;
    assert!(r.allowed, "{r:?}");
}

#[tokio::test]
async fn tokens_expire_are_single_use_and_die_when_resent() {
    let smtp = Smtp::start().await;
    let app = spawn_mailing(&smtp, Clock::manual()).await;
    let mut admin = tenant(&app, "TOK1", &[]).await;
    let refused = |r: Result<pb::CompleteInvitationResponse, tonic::Status>| {
        expect_code(r, Code::FailedPrecondition)
            .message()
            .to_owned()
    };

    // Expired: 48 h and a second later.
    let first = invite(
        &mut admin,
        advanced("Exp", "Ired", "exp@partner.example"),
        "TOK1",
        &[],
    )
    .await;
    app.advance(Duration::from_secs(48 * 3600 + 1));
    let expired = refused(complete_with(&mut admin, &first.invitation_token, "").await);
    let mut decider = app.decider().await;
    let id = first.user.unwrap().id;
    let r = check(&mut decider, by_user(&id), "TOK1", "admin.users", 0).await;
    assert_eq!(
        r.reason,
        pb::DenialReason::InactiveUser as i32,
        "still invited"
    );

    // Resent (by a portal, which gets the token): a new token, the old
    // ones dead (the mailed one too).
    let resent = admin
        .portal
        .resend_invitation(pb::ResendInvitationRequest {
            user_id: id.clone(),
        })
        .await
        .expect("resend")
        .into_inner();
    assert_ne!(resent.invitation_token, first.invitation_token);

    // Wrong.
    let wrong =
        refused(complete_with(&mut admin, "clefinv_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "").await);
    let garbage = refused(complete_with(&mut admin, "not a token", "").await);

    // Used once, then dead.
    complete_with(&mut admin, &resent.invitation_token, "")
        .await
        .expect("complete");
    let reused = refused(complete_with(&mut admin, &resent.invitation_token, "").await);

    // One message whatever the reason.
    assert_eq!(expired, wrong);
    assert_eq!(expired, garbage);
    assert_eq!(expired, reused);
    assert!(
        expired.contains("unknown, expired or already used"),
        "{expired}"
    );

    // Resending to an active user is refused.
    let again = admin
        .portal
        .resend_invitation(pb::ResendInvitationRequest { user_id: id })
        .await;
    expect_code(again, Code::FailedPrecondition);
}

#[tokio::test]
async fn a_resend_kills_the_mailed_token_too() {
    let smtp = Smtp::start().await;
    let app = spawn_mailing(&smtp, Clock::system()).await;
    let mut admin = tenant(&app, "TOK2", &[]).await;
    let first = invite(
        &mut admin,
        advanced("Re", "Sent", "re@partner.example"),
        "TOK2",
        &[],
    )
    .await;
    let mailed = smtp
        .wait_subject("re@partner.example", INVITATION_FR)
        .await
        .token("clefinv_")
        .unwrap();
    admin
        .credentials
        .resend_invitation(pb::ResendInvitationRequest {
            user_id: first.user.unwrap().id,
        })
        .await
        .expect("resend");
    expect_code(
        complete_with(&mut admin, &mailed, "").await,
        Code::FailedPrecondition,
    );
    // The resent invitation is mailed with a live token.
    let mails = smtp.wait_for("re@partner.example", 2).await;
    let token = mails[1].token("clefinv_").unwrap();
    complete_with(&mut admin, &token, "")
        .await
        .expect("the new mail's token works");
}

#[tokio::test]
async fn a_message_waits_for_the_smtp_server_to_come_back() {
    let mut smtp = Smtp::start().await;
    smtp.stop().await;
    let app = spawn_mailing(&smtp, Clock::system()).await;
    let mut admin = tenant(&app, "DOWN1", &[]).await;
    invite(
        &mut admin,
        advanced("Pat", "Ience", "pat@partner.example"),
        "DOWN1",
        &[],
    )
    .await;
    // Attempts fail and are recorded, the message stays due.
    let mut failed = 0;
    for _ in 0..100 {
        failed = sqlx::query_scalar::<_, i32>(
            "SELECT attempts FROM outbox WHERE kind = 'invitation' AND state = 'pending'",
        )
        .fetch_optional(app.store.pool())
        .await
        .unwrap()
        .unwrap_or(0);
        if failed >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(failed >= 2, "retried while the server is down");
    smtp.restart().await;
    let mail = smtp
        .wait_subject("pat@partner.example", INVITATION_FR)
        .await;
    let token = mail.token("clefinv_").unwrap();
    complete_with(&mut admin, &token, "")
        .await
        .expect("the retried mail's token works");
}

#[tokio::test]
async fn two_replicas_deliver_each_message_once() {
    let smtp = Smtp::start().await;
    let a = spawn_mailing(&smtp, Clock::system()).await;
    let b = replica_mailing(&smtp, a.db_options.clone()).await;
    let mut admin = tenant(&a, "TWO1", &[]).await;
    const N: usize = 30;
    for i in 0..N {
        invite(
            &mut admin,
            advanced(
                "Twin",
                &format!("Nb{i}"),
                &format!("twin{i}@partner.example"),
            ),
            "TWO1",
            &[],
        )
        .await;
    }
    for i in 0..N {
        smtp.wait_for(&format!("twin{i}@partner.example"), 1).await;
    }
    // Nothing more comes.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let invitations = smtp
        .received()
        .into_iter()
        .filter(|m| m.subject == INVITATION_FR)
        .count();
    assert_eq!(invitations, N);
    drop(b);
}

#[tokio::test]
async fn rights_granted_are_told_once_per_user_and_change() {
    let smtp = Smtp::start().await;
    let app = spawn_mailing(&smtp, Clock::system()).await;
    let mut admin = tenant(
        &app,
        "RG1",
        &["shipping.ws", "tracking.ws", "billing.invoices"],
    )
    .await;
    let mut user = standard("Rémi", "Droits");
    user.email = "remi@client.example".into();
    let (user, _) = create_user(&mut admin, user, "RG1", &[], vec![])
        .await
        .unwrap();
    admin
        .grants
        .grant_rights(pb::GrantRightsRequest {
            user_id: user.id.clone(),
            account_code: "RG1".into(),
            rights: vec![
                right("shipping.ws"),
                right("tracking.ws"),
                right("billing.invoices"),
            ],
        })
        .await
        .expect("grant");
    let mail = smtp
        .wait_subject(
            "remi@client.example",
            "De nouveaux droits vous ont été attribués",
        )
        .await;
    assert!(
        mail.body
            .contains("attribués par RG1 Admin sur le compte RG1"),
        "{}",
        mail.body
    );
    for label in [
        "Web Service Affranchissement",
        "Web Service de suivi",
        "Consultation de mes factures",
    ] {
        assert!(mail.body.contains(label), "{label}: {}", mail.body);
    }
    // Granting what he holds tells nothing; one message for the three.
    admin
        .grants
        .grant_rights(pb::GrantRightsRequest {
            user_id: user.id.clone(),
            account_code: "RG1".into(),
            rights: vec![right("shipping.ws")],
        })
        .await
        .expect("grant again");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(smtp.wait_for("remi@client.example", 1).await.len(), 1);
}

#[tokio::test]
async fn an_admin_of_another_tenant_cannot_resend_nor_set_passwords() {
    let app = spawn_app().await;
    let mut a = tenant(&app, "TEN-A", &[]).await;
    let mut b = tenant(&app, "TEN-B", &[]).await;
    let invited = invite(
        &mut a,
        advanced("In", "Vited", "in@a.example"),
        "TEN-A",
        &[],
    )
    .await;
    let (active, _) = create_user(&mut a, standard("Act", "Ive"), "TEN-A", &[], vec![])
        .await
        .unwrap();
    let before = snapshot(&app).await;
    let r = b
        .credentials
        .resend_invitation(pb::ResendInvitationRequest {
            user_id: invited.user.unwrap().id,
        })
        .await;
    expect_code(r, Code::NotFound);
    let r = b
        .credentials
        .set_password(pb::SetPasswordRequest {
            user_id: active.id.clone(),
            password: "a password of B's choosing".into(),
            keep_without_change: true,
        })
        .await;
    expect_code(r, Code::NotFound);
    let r = b
        .credentials
        .clear_password_lock(pb::ClearPasswordLockRequest {
            user_id: active.id.clone(),
        })
        .await;
    expect_code(r, Code::NotFound);
    assert_eq!(snapshot(&app).await, before, "nothing changed");
    // Admins cannot use the portals' RPCs.
    let r = b
        .credentials
        .authenticate_password(pb::AuthenticatePasswordRequest {
            login: active.login.clone(),
            password: TEST_PASSWORD.into(),
        })
        .await;
    expect_code(r, Code::PermissionDenied);
    // A's admin may.
    a.credentials
        .set_password(pb::SetPasswordRequest {
            user_id: active.id,
            password: "a password of A's choosing".into(),
            keep_without_change: false,
        })
        .await
        .expect("A's admin sets it");
}

#[tokio::test]
async fn reactivating_a_user_who_never_completed_invites_him_again() {
    let smtp = Smtp::start().await;
    let app = spawn_mailing(&smtp, Clock::system()).await;
    let mut admin = tenant(&app, "REA1", &[]).await;
    let created = invite(
        &mut admin,
        advanced("Nev", "Er", "never@partner.example"),
        "REA1",
        &[],
    )
    .await;
    let id = created.user.unwrap().id;
    smtp.wait_for("never@partner.example", 1).await;
    admin
        .users
        .deactivate_user(pb::DeactivateUserRequest { id: id.clone() })
        .await
        .expect("an invited user may be deactivated");
    expect_code(
        complete_with(&mut admin, &created.invitation_token, "").await,
        Code::FailedPrecondition,
    );
    let back = admin
        .users
        .reactivate_user(pb::ReactivateUserRequest { id: id.clone() })
        .await
        .expect("reactivate")
        .into_inner();
    assert_eq!(
        back.status,
        pb::UserStatus::Invited as i32,
        "not active without his own key"
    );
    // A new invitation went out (the first one, sent before, and this one).
    let mails = smtp.wait_for("never@partner.example", 2).await;
    assert!(mails.iter().all(|m| m.subject == INVITATION_FR));
    let token = mails.last().unwrap().token("clefinv_").unwrap();
    let done = complete_with(&mut admin, &token, "")
        .await
        .expect("the new invitation works");
    assert_eq!(done.user.unwrap().status, pb::UserStatus::Active as i32);
    // Once completed, deactivation and reactivation are plain.
    admin
        .users
        .deactivate_user(pb::DeactivateUserRequest { id: id.clone() })
        .await
        .unwrap();
    let back = admin
        .users
        .reactivate_user(pb::ReactivateUserRequest { id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.status, pb::UserStatus::Active as i32);
}

#[tokio::test]
async fn the_admin_of_one_account_of_a_shared_user_cannot_take_him_over() {
    let app = spawn_app().await;
    let mut a = tenant(&app, "SHA", &[]).await;
    let mut b = tenant(&app, "SHB", &[]).await;
    // Invited by A, linked by B with his user key.
    let created = invite(
        &mut a,
        advanced("Sha", "Red", "shared@partner.example"),
        "SHA",
        &[],
    )
    .await;
    let user = created.user.unwrap();
    b.links
        .link_user(pb::LinkUserRequest {
            account_code: "SHB".into(),
            user_key: user.user_key.clone(),
            ..Default::default()
        })
        .await
        .expect("B links him");
    let before = snapshot(&app).await;
    let r = b
        .credentials
        .resend_invitation(pb::ResendInvitationRequest {
            user_id: user.id.clone(),
        })
        .await;
    let refused = expect_code(r, Code::PermissionDenied);
    assert!(refused.message().contains("SHA"), "{}", refused.message());
    assert_eq!(snapshot(&app).await, before, "nothing changed");
    // Nor may A, who does not administer SHB; the operator may.
    let resent = a
        .credentials
        .resend_invitation(pb::ResendInvitationRequest {
            user_id: user.id.clone(),
        })
        .await;
    expect_code(resent, Code::PermissionDenied);
    let mut ops = app.operator().await;
    let token = ops
        .credentials
        .resend_invitation(pb::ResendInvitationRequest {
            user_id: user.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .invitation_token;
    complete(&mut ops, &token).await.unwrap();
    // Active now: B cannot set his password, nor can A (he has an email:
    // he chooses his own with a reset link).
    for c in [&mut a, &mut b] {
        let r = c
            .credentials
            .set_password(pb::SetPasswordRequest {
                user_id: user.id.clone(),
                password: "an admin's choice of password".into(),
                keep_without_change: true,
            })
            .await;
        let code = r.unwrap_err().code();
        assert!(
            matches!(code, Code::PermissionDenied | Code::FailedPrecondition),
            "{code:?}"
        );
    }
    let r = b
        .credentials
        .clear_password_lock(pb::ClearPasswordLockRequest {
            user_id: user.id.clone(),
        })
        .await;
    expect_code(r, Code::PermissionDenied);
    // An admin of every account of an invited user resends (it is mailed),
    // but never sees the token.
    let solo = invite(
        &mut a,
        advanced("So", "Lo", "solo@partner.example"),
        "SHA",
        &[],
    )
    .await;
    let resent = a
        .credentials
        .resend_invitation(pb::ResendInvitationRequest {
            user_id: solo.user.unwrap().id,
        })
        .await
        .expect("resend")
        .into_inner();
    assert!(resent.invitation_token.is_empty());
    assert!(resent.invitation_expire_time.is_some());
}

#[tokio::test]
async fn an_advanced_user_imported_deactivated_is_invited_when_reactivated() {
    let app = spawn_app().await;
    let (key, mut admin) = tenant_key(&app, "DOR1", &[]).await;
    let csv = "NOM;PRENOM;FONCTION;EMAIL;TELEPHONE;ADRESSE;CODE POSTAL;VILLE;ETAT\n\
               Dort;Dan;Veilleur;dan@partner.example;0102030405;1 rue Basse;88000;Épinal;désactivé\n";
    let run = crate::import::import(
        &app,
        &key,
        crate::import::opts("DOR1"),
        csv.as_bytes(),
        1 << 16,
    )
    .await;
    assert_eq!(
        run.statuses().iter().map(|s| s.1).collect::<Vec<_>>(),
        ["created"],
        "{:?}",
        run.results
    );
    let id = run.results[0].user_id.clone();
    let keys: i64 =
        sqlx::query_scalar("SELECT count(*) FROM connection_keys WHERE user_id = $1::uuid")
            .bind(&id)
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(keys, 0, "no key before his own password");
    let back = admin
        .users
        .reactivate_user(pb::ReactivateUserRequest { id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.status, pb::UserStatus::Invited as i32);
}

/// An invitation writes a token and a message, each with its trigger: the
/// trail holds one `invitation_issued` per user and transaction, whether
/// it came from `CreateUser`, `ResendInvitation` or an import's batch.
#[tokio::test]
async fn an_invitation_is_one_event_per_transaction() {
    let app = spawn_app().await;
    let (key, mut admin) = tenant_key(&app, "INV1", &["tracking.ws"]).await;
    let created = invite(
        &mut admin,
        advanced("One", "Event", "one@partner.example"),
        "INV1",
        &[],
    )
    .await;
    let invited = created.user.unwrap().id;
    admin
        .portal
        .resend_invitation(pb::ResendInvitationRequest {
            user_id: invited.clone(),
        })
        .await
        .expect("resend");
    let csv = "NOM;PRENOM;FONCTION;EMAIL;TELEPHONE;ADRESSE;CODE POSTAL;VILLE;tracking.ws\n\
               Durand;Léa;Logisticienne;lea@partner.example;0102030405;1 rue Haute;88000;Épinal;oui\n\
               Petit;Jean;Chauffeur;jean@partner.example;0102030406;2 rue Basse;88000;Épinal;non\n";
    let run = crate::import::import(
        &app,
        &key,
        crate::import::opts("INV1"),
        csv.as_bytes(),
        1 << 16,
    )
    .await;
    assert_eq!(
        run.statuses().iter().map(|s| s.1).collect::<Vec<_>>(),
        ["created", "created"],
        "{:?}",
        run.results
    );

    let mut ops = crate::audit::audit_at(app.addr, &app.operator_key).await;
    let events = ops
        .list_events(pb::ListEventsRequest {
            filter: Some(pb::EventFilter {
                actions: vec![pb::AuditAction::InvitationIssued as i32],
                ..Default::default()
            }),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let mut per_user = std::collections::BTreeMap::<String, Vec<i64>>::new();
    for e in &events {
        per_user
            .entry(e.target.as_ref().unwrap().id.clone())
            .or_default()
            .push(e.revision);
    }
    assert_eq!(per_user.len(), 3, "{events:?}");
    // The kept event is the message's: it names the account invited to.
    let first = events
        .iter()
        .find(|e| e.target.as_ref().unwrap().id == invited)
        .unwrap();
    assert_eq!(first.account, "INV1", "{first:?}");
    for (user, revisions) in &per_user {
        let expected = if *user == invited { 2 } else { 1 };
        assert_eq!(revisions.len(), expected, "{user}: {events:?}");
        let mut distinct = revisions.clone();
        distinct.dedup();
        assert_eq!(distinct.len(), expected, "one per transaction: {events:?}");
    }
}
