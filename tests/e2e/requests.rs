//! Idempotent creates: a `request_id` makes a retried create (even ten at
//! once) answer what the first one created; the same id with another
//! request is refused; each actor has request ids of his own.

use std::sync::Arc;

use clef::{domain::principal::PrincipalKind, pb};
use tonic::Code;

use crate::common::*;

fn new_user(user: pb::User, account: &str, request_id: &str) -> pb::CreateUserRequest {
    pb::CreateUserRequest {
        user: Some(user),
        account_code: account.into(),
        tags: vec!["QUAI-1".into()],
        rights: vec![right("shipping.ws")],
        request_id: request_id.into(),
    }
}

async fn users_with_login(app: &TestApp, login: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM users WHERE login = $1")
        .bind(login)
        .fetch_one(app.store.pool())
        .await
        .unwrap()
}

/// A new operator's key.
async fn another_operator(app: &TestApp) -> String {
    app.store
        .create_principal(None, PrincipalKind::Operator, "second-operator")
        .await
        .unwrap()
        .key
        .expose_secret()
        .to_owned()
}

/// Runs `n` copies of a call at once, each on a client (and connection) of
/// its own; their answers in order.
async fn at_once<C, R, F>(n: usize, clients: Vec<C>, call: F) -> Vec<Result<R, tonic::Status>>
where
    C: Send + 'static,
    R: Send + 'static,
    F: Fn(
            C,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<R, tonic::Status>> + Send>>
        + Send
        + Sync
        + 'static,
{
    assert_eq!(clients.len(), n);
    let start = Arc::new(tokio::sync::Barrier::new(n));
    let call = Arc::new(call);
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| {
            let (start, call) = (start.clone(), call.clone());
            tokio::spawn(async move {
                start.wait().await;
                call(c).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.expect("task"));
    }
    answers
}

#[tokio::test]
async fn create_user_retries_with_a_request_id_answer_the_first_user() {
    let app = spawn_app().await;
    org_with_account(&app, "Org", "REQ1").await;
    let (_, admin) = make_admin(&app, "REQ1", "Ada", vec![right("shipping.ws")]).await;
    let mut c = app.client(&admin).await;
    let req = new_user(standard("Rémi", "Retry"), "REQ1", "create-user-1");

    let first = c.users.create_user(req.clone()).await.unwrap().into_inner();
    assert!(!first.replayed);
    assert!(!first.connection_key.is_empty());
    let user = first.user.clone().unwrap();

    // A retry: the same user, at the same revision, without his key; and
    // nothing written.
    let before = snapshot(&app).await;
    let again = c.users.create_user(req.clone()).await.unwrap().into_inner();
    assert!(again.replayed);
    assert_eq!(again.connection_key, "", "a retry shows the key again");
    let same = again.user.unwrap();
    assert_eq!(same.id, user.id);
    assert_eq!(same.revision, user.revision);
    assert_eq!(same, user, "a retry answers what the first call created");
    assert_eq!(snapshot(&app).await, before, "a retry wrote something");
    assert_eq!(users_with_login(&app, &user.login).await, 1);
    // The first key still works: the retry did not issue another.
    let mut own = app.client(&first.connection_key).await;
    let me = own
        .keys
        .who_am_i(pb::WhoAmIRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.user.unwrap().id, user.id);

    // The same request_id, another request: refused, naming it, writing
    // nothing.
    for changed in [
        new_user(standard("Rémi", "Autre"), "REQ1", "create-user-1"),
        pb::CreateUserRequest {
            tags: vec![],
            ..req.clone()
        },
    ] {
        let s = expect_code(c.users.create_user(changed).await, Code::AlreadyExists);
        assert!(s.message().contains("request_id"), "{}", s.message());
        assert!(!s.message().contains(&user.id), "{}", s.message());
    }
    assert_eq!(
        snapshot(&app).await,
        before,
        "a refused create wrote something"
    );

    // Another actor's request ids are his own: another admin of the same
    // account, and the operator, create their own users under the same id.
    let (_, other_admin) = make_admin(&app, "REQ1", "Bea", vec![right("shipping.ws")]).await;
    let mut other = app.client(&other_admin).await;
    let theirs = other
        .users
        .create_user(new_user(standard("Rémi", "Bis"), "REQ1", "create-user-1"))
        .await
        .expect("another admin's request id")
        .into_inner();
    assert!(!theirs.replayed);
    let theirs = theirs.user.unwrap();
    assert_ne!(theirs.id, user.id);
    let mut ops = app.operator().await;
    let operator_s = ops
        .users
        .create_user(new_user(standard("Rémi", "Ter"), "REQ1", "create-user-1"))
        .await
        .expect("the operator's request id")
        .into_inner()
        .user
        .unwrap();
    assert_ne!(operator_s.id, user.id);
    assert_ne!(operator_s.id, theirs.id);
    // ... and the first admin's retry still answers his own user.
    let again = c.users.create_user(req).await.unwrap().into_inner();
    assert!(again.replayed);
    assert_eq!(again.user.unwrap().id, user.id);
}

#[tokio::test]
async fn ten_concurrent_create_user_retries_create_one_user() {
    let app = spawn_app().await;
    org_with_account(&app, "Org", "REQ2").await;
    let (_, admin) = make_admin(&app, "REQ2", "Ada", vec![right("shipping.ws")]).await;
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(app.client(&admin).await.users);
    }
    let req = new_user(
        advanced("Zoé", "Rafale", "rafale@example.com"),
        "REQ2",
        "burst-1",
    );
    let answers = at_once(10, clients, move |mut c: UserClient| {
        let req = req.clone();
        Box::pin(async move { c.create_user(req).await.map(|r| r.into_inner()) })
    })
    .await;
    let answers: Vec<pb::CreateUserResponse> = answers
        .into_iter()
        .map(|a| a.expect("every retry succeeds"))
        .collect();
    let first: Vec<&pb::CreateUserResponse> = answers.iter().filter(|a| !a.replayed).collect();
    assert_eq!(first.len(), 1, "exactly one call created the user");
    // Advanced: invited; the first answer alone shows the invitation.
    assert!(!first[0].invitation_token.is_empty());
    let user = first[0].user.clone().unwrap();
    for a in &answers {
        let u = a.user.as_ref().unwrap();
        assert_eq!((&u.id, u.revision), (&user.id, user.revision));
        assert_eq!(a.replayed, a.invitation_token.is_empty());
    }
    let (users, recorded): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM users WHERE lower(email) = 'rafale@example.com'),
                (SELECT count(*) FROM request_ids WHERE request_id = 'burst-1')",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!((users, recorded), (1, 1));
}

fn new_account(code: &str, name: &str, org: &str, request_id: &str) -> pb::CreateAccountRequest {
    pb::CreateAccountRequest {
        account: Some(pb::Account {
            code: code.into(),
            display_name: name.into(),
            organization_id: org.into(),
            ..Default::default()
        }),
        request_id: request_id.into(),
    }
}

#[tokio::test]
async fn create_account_retries_create_one_account_even_ten_at_once() {
    let app = spawn_app().await;
    let mut ops = app.operator_accounts().await;
    let org = create_org(&mut ops, "Org").await;
    let req = new_account("RAF-01", "Agence de Rafale", &org, "burst-account");

    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(app.operator_accounts().await);
    }
    let r = req.clone();
    let answers = at_once(10, clients, move |mut c: AccountClient| {
        let r = r.clone();
        Box::pin(async move { c.create_account(r).await.map(|a| a.into_inner()) })
    })
    .await;
    let answers: Vec<pb::Account> = answers
        .into_iter()
        .map(|a| a.expect("every retry succeeds"))
        .collect();
    for a in &answers {
        assert_eq!(a, &answers[0], "every retry answers the same account");
    }
    assert_eq!(answers[0].code, "RAF-01");
    let accounts: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(accounts, 1);

    // A later retry: the same; another display name, or another code, under
    // the same id: refused, naming it, writing nothing.
    let before = snapshot(&app).await;
    let again = ops.create_account(req.clone()).await.unwrap().into_inner();
    assert_eq!(again, answers[0]);
    for changed in [
        new_account("RAF-01", "Autre nom", &org, "burst-account"),
        new_account("RAF-02", "Agence de Rafale", &org, "burst-account"),
    ] {
        let s = expect_code(ops.create_account(changed).await, Code::AlreadyExists);
        assert!(s.message().contains("request_id"), "{}", s.message());
    }
    assert_eq!(
        snapshot(&app).await,
        before,
        "a retry or a refusal wrote something"
    );
    // An id given to an organization is not an account's.
    ops.create_organization(pb::CreateOrganizationRequest {
        display_name: "Autre".into(),
        request_id: "org-then-account".into(),
    })
    .await
    .unwrap();
    let s = expect_code(
        ops.create_account(new_account("RAF-03", "Trois", &org, "org-then-account"))
            .await,
        Code::AlreadyExists,
    );
    assert!(s.message().contains("request_id"), "{}", s.message());
    let accounts: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(accounts, 1, "a refused create wrote an account");

    // Another operator has request ids of his own.
    let key = another_operator(&app).await;
    let mut other = app.accounts(Some(&key)).await;
    let theirs = other
        .create_account(new_account("RAF-04", "Quatre", &org, "burst-account"))
        .await
        .expect("another operator's request id")
        .into_inner();
    assert_eq!(theirs.code, "RAF-04");
}

#[tokio::test]
async fn create_service_principal_retries_answer_the_first_without_its_key() {
    let app = spawn_app().await;
    let mut ops = app.operator().await;
    let req = pb::CreateServicePrincipalRequest {
        name: "tracking-eu".into(),
        request_id: "svc-1".into(),
    };
    let first = ops
        .users
        .create_service_principal(req.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(!first.replayed);
    assert!(!first.connection_key.is_empty());

    let before = snapshot(&app).await;
    let again = ops
        .users
        .create_service_principal(req)
        .await
        .unwrap()
        .into_inner();
    assert!(again.replayed);
    assert_eq!(again.connection_key, "");
    assert_eq!((&again.id, again.revision), (&first.id, first.revision));
    assert_eq!(snapshot(&app).await, before, "a retry wrote something");
    assert_eq!(users_with_login(&app, "tracking-eu").await, 1);
    // The key shown the first time still decides.
    let mut svc = app.authz(&first.connection_key).await;
    let r = check(&mut svc, by_user(&first.id), "NOPE", "shipping.ws", 0).await;
    assert!(!r.allowed);
}

/// The same request_id given to another name is refused naming
/// `request_id`, not as a taken name (nobody holds the second name).
#[tokio::test]
async fn a_service_principal_request_id_given_to_another_name_is_refused_naming_it() {
    let app = spawn_app().await;
    let mut ops = app.operator().await;
    ops.users
        .create_service_principal(pb::CreateServicePrincipalRequest {
            name: "tracking-eu".into(),
            request_id: "svc-1".into(),
        })
        .await
        .unwrap();
    let before = snapshot(&app).await;
    let s = expect_code(
        ops.users
            .create_service_principal(pb::CreateServicePrincipalRequest {
                name: "tracking-us".into(),
                request_id: "svc-1".into(),
            })
            .await,
        Code::AlreadyExists,
    );
    assert_eq!(
        snapshot(&app).await,
        before,
        "a refused create wrote something"
    );
    assert_eq!(users_with_login(&app, "tracking-us").await, 0);
    assert!(s.message().contains("request_id"), "{}", s.message());
    assert!(!s.message().contains("tracking-us"), "{}", s.message());
}
