//! Test helpers: a server per test on `127.0.0.1:0` with a database of its own.

use std::{net::SocketAddr, time::Duration};

use clef::{
    domain::{clock::Clock, principal::PrincipalKind},
    pb,
    store::Store,
};
use sqlx::{postgres::PgConnectOptions, ConnectOptions, Connection};
use tokio::net::TcpListener;
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{interceptor::InterceptedService, Interceptor},
    transport::Channel,
    Code, Request, Status,
};
use tonic_types::StatusExt;

pub type AccountClient =
    pb::account_service_client::AccountServiceClient<InterceptedService<Channel, Bearer>>;

/// A running server with a database of its own.
pub struct TestApp {
    pub addr: SocketAddr,
    /// An operator's connection key.
    pub operator_key: String,
    pub store: Store,
    /// Where its database is, to start a second replica on it.
    pub db_options: PgConnectOptions,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Admin connection options of the test Postgres (started by `scripts/test`).
pub fn admin_options() -> PgConnectOptions {
    let url = std::env::var("CLEF_TEST_DATABASE_URL")
        .expect("CLEF_TEST_DATABASE_URL is not set: run the tests with scripts/test");
    url.parse().expect("valid CLEF_TEST_DATABASE_URL")
}

/// The URL of the database `options` name on the test Postgres (for a
/// `clef` process).
pub fn database_url(options: &PgConnectOptions) -> String {
    let admin = std::env::var("CLEF_TEST_DATABASE_URL").expect("CLEF_TEST_DATABASE_URL");
    let (base, _) = admin.rsplit_once('/').expect("a URL with a database");
    format!("{base}/{}", options.get_database().expect("a database"))
}

/// Creates a fresh database and returns its options.
pub async fn fresh_database() -> PgConnectOptions {
    let admin = admin_options();
    let name = format!("clef_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = admin.connect().await.expect("connect to test postgres");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create test database");
    conn.close().await.ok();
    admin.database(&name)
}

/// Starts a server on its own fresh database.
pub async fn spawn_app() -> TestApp {
    spawn_app_on(fresh_database().await).await
}

/// Starts a server on its own fresh database whose clock the test moves
/// ahead ([`TestApp::advance`]) instead of sleeping until something expires.
pub async fn spawn_app_with_manual_clock() -> TestApp {
    spawn_app_with_clock(fresh_database().await, Clock::manual()).await
}

/// Starts a server on the given database (migrating it), with an operator.
pub async fn spawn_app_on(db_options: PgConnectOptions) -> TestApp {
    spawn_app_with_clock(db_options, Clock::system()).await
}

/// [`spawn_app_on`] with the clock the server compares expiries with.
pub async fn spawn_app_with_clock(db_options: PgConnectOptions, clock: Clock) -> TestApp {
    spawn_app_with_options(db_options, clock, test_options()).await
}

/// [`spawn_app_with_clock`] with explicit server options.
pub async fn spawn_app_with_options(
    db_options: PgConnectOptions,
    clock: Clock,
    options: clef::server::ServeOptions,
) -> TestApp {
    let store = Store::connect_lazy(db_options.clone(), 8).with_clock(clock);
    store.migrate().await.expect("migrate");
    let operator = store
        .create_principal(
            None,
            PrincipalKind::Operator,
            &format!("test-operator-{}", uuid::Uuid::new_v4().simple()),
        )
        .await
        .expect("create operator");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server_store = store.clone();
    tokio::spawn(async move {
        clef::server::serve_with(server_store, listener, options, async {
            let _ = rx.await;
        })
        .await
        .expect("server failed");
    });
    TestApp {
        addr,
        operator_key: operator.key.expose_secret().to_owned(),
        store,
        db_options,
        shutdown: Some(tx),
    }
}

/// A password every helper-completed invitation chooses.
pub const TEST_PASSWORD: &str = "correct horse battery staple";

/// An argon2id cost cheap enough for tests that create many users (the
/// real one is measured by the credential tests and the benchmark).
pub fn cheap_cost() -> clef::hasher::Cost {
    clef::hasher::Cost {
        memory_kib: 256,
        iterations: 1,
        lanes: 1,
    }
}

/// The options of a test server: a cheap password cost, no SMTP.
pub fn test_options() -> clef::server::ServeOptions {
    clef::server::ServeOptions {
        hasher: Some(clef::hasher::Hasher::new(cheap_cost(), 2, 64).expect("hasher")),
        ..Default::default()
    }
}

impl TestApp {
    pub async fn channel(&self) -> Channel {
        connect(self.addr).await
    }

    /// The server's clock.
    pub fn clock(&self) -> &Clock {
        self.store.clock()
    }

    /// Moves the server's clock ahead (an app from
    /// [`spawn_app_with_manual_clock`] only).
    pub fn advance(&self, by: Duration) {
        self.clock().advance(by);
    }

    /// An AccountService client presenting `key` (or no key).
    pub async fn accounts(&self, key: Option<&str>) -> AccountClient {
        pb::account_service_client::AccountServiceClient::with_interceptor(
            self.channel().await,
            Bearer::new(key),
        )
    }

    /// An AccountService client presenting the operator key.
    pub async fn operator_accounts(&self) -> AccountClient {
        self.accounts(Some(&self.operator_key.clone())).await
    }

    /// A key of a new service principal (not an operator).
    pub async fn service_key(&self, name: &str) -> String {
        self.store
            .create_principal(None, PrincipalKind::Service, name)
            .await
            .expect("create service principal")
            .key
            .expose_secret()
            .to_owned()
    }
}

pub async fn connect(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to clef")
}

/// Adds `authorization: Bearer <key>` to every request.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

/// `message` as the holder of `key` sends it, under the W3C trace context
/// `traceparent`.
pub fn traced<T>(message: T, key: &str, traceparent: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    request
}

impl Bearer {
    pub fn new(key: Option<&str>) -> Self {
        Self(key.map(|k| format!("Bearer {k}").parse().expect("ascii key")))
    }

    /// A raw `authorization` header value.
    pub fn raw(value: &str) -> Self {
        Self(Some(value.parse().expect("ascii header")))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// Asserts the status code of a failed call and returns the status.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Ok(v) => panic!("expected {code:?}, got success: {v:?}"),
        Err(s) => {
            assert_eq!(s.code(), code, "unexpected status: {s:?}");
            s
        }
    }
}

/// The fields named by the `BadRequest` details of a status.
pub fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// The rows of a table of calls that did not end as expected, collected so
/// that a test reports every failing row rather than only the first.
#[derive(Debug, Default)]
pub struct Mismatches(Vec<String>);

impl Mismatches {
    /// Records `case` unless `result` failed with `code` and its
    /// `BadRequest` details name exactly `fields`, in that order (none for
    /// a code other than `INVALID_ARGUMENT`). Returns the status.
    pub fn refused<T: std::fmt::Debug>(
        &mut self,
        case: &str,
        result: Result<T, Status>,
        code: Code,
        fields: &[&str],
    ) -> Option<Status> {
        match result {
            Ok(v) => {
                self.0
                    .push(format!("{case}: expected {code:?}, got success: {v:?}"));
                None
            }
            Err(s) => {
                let named = violated_fields(&s);
                if s.code() != code {
                    self.0.push(format!("{case}: expected {code:?}, got {s:?}"));
                } else if named != fields {
                    self.0.push(format!(
                        "{case}: expected fields {fields:?}, got {named:?} ({})",
                        s.message()
                    ));
                }
                Some(s)
            }
        }
    }

    /// Records `case` unless `ok`.
    pub fn check(&mut self, case: &str, ok: bool, detail: impl std::fmt::Display) {
        if !ok {
            self.0.push(format!("{case}: {detail}"));
        }
    }

    /// Fails the test with every recorded row.
    #[track_caller]
    pub fn finish(self) {
        assert!(
            self.0.is_empty(),
            "{} row(s) failed:\n  {}",
            self.0.len(),
            self.0.join("\n  ")
        );
    }
}

/// Creates an organization and returns its id.
pub async fn create_org(client: &mut AccountClient, name: &str) -> String {
    client
        .create_organization(pb::CreateOrganizationRequest {
            display_name: name.into(),
            request_id: String::new(),
        })
        .await
        .expect("create organization")
        .into_inner()
        .id
}

/// Creates an account.
pub async fn create_account(client: &mut AccountClient, org: &str, code: &str) -> pb::Account {
    client
        .create_account(pb::CreateAccountRequest {
            account: Some(pb::Account {
                code: code.into(),
                display_name: format!("Account {code}"),
                organization_id: org.into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .expect("create account")
        .into_inner()
}

pub type UserClient =
    pb::user_service_client::UserServiceClient<InterceptedService<Channel, Bearer>>;
pub type LinkClient =
    pb::link_service_client::LinkServiceClient<InterceptedService<Channel, Bearer>>;
pub type GrantClient =
    pb::grant_service_client::GrantServiceClient<InterceptedService<Channel, Bearer>>;
pub type KeyClient = pb::connection_key_service_client::ConnectionKeyServiceClient<
    InterceptedService<Channel, Bearer>,
>;

pub type CredentialClient =
    pb::credential_service_client::CredentialServiceClient<InterceptedService<Channel, Bearer>>;

/// One client per service, all presenting the same key.
pub struct Clients {
    pub accounts: AccountClient,
    pub users: UserClient,
    pub links: LinkClient,
    pub grants: GrantClient,
    pub keys: KeyClient,
    pub credentials: CredentialClient,
    /// CredentialService as the operator: completes the invitations of the
    /// users the helpers create.
    pub portal: CredentialClient,
}

impl TestApp {
    /// Clients presenting `key`.
    pub async fn client(&self, key: &str) -> Clients {
        let ch = self.channel().await;
        let b = Bearer::new(Some(key));
        Clients {
            accounts: pb::account_service_client::AccountServiceClient::with_interceptor(
                ch.clone(),
                b.clone(),
            ),
            users: pb::user_service_client::UserServiceClient::with_interceptor(
                ch.clone(),
                b.clone(),
            ),
            links: pb::link_service_client::LinkServiceClient::with_interceptor(
                ch.clone(),
                b.clone(),
            ),
            grants: pb::grant_service_client::GrantServiceClient::with_interceptor(
                ch.clone(),
                b.clone(),
            ),
            keys: pb::connection_key_service_client::ConnectionKeyServiceClient::with_interceptor(
                ch.clone(),
                b.clone(),
            ),
            credentials: pb::credential_service_client::CredentialServiceClient::with_interceptor(
                ch.clone(),
                b,
            ),
            portal: pb::credential_service_client::CredentialServiceClient::with_interceptor(
                ch,
                Bearer::new(Some(&self.operator_key)),
            ),
        }
    }

    pub async fn operator(&self) -> Clients {
        self.client(&self.operator_key.clone()).await
    }
}

/// A complete advanced-user profile.
pub fn advanced(first: &str, last: &str, email: &str) -> pb::User {
    pb::User {
        kind: pb::UserKind::Advanced as i32,
        first_name: first.into(),
        last_name: last.into(),
        job_title: "Logisticien".into(),
        email: email.into(),
        phone: "+33 1 23 45 67 89".into(),
        address_lines: vec!["12 rue de la Gare".into()],
        postal_code: "88000".into(),
        city: "Épinal".into(),
        ..Default::default()
    }
}

/// A standard user profile.
pub fn standard(first: &str, last: &str) -> pb::User {
    pb::User {
        kind: pb::UserKind::Standard as i32,
        first_name: first.into(),
        last_name: last.into(),
        login: format!("{first}.{last}").to_lowercase(),
        ..Default::default()
    }
}

pub fn right(code: &str) -> pb::RightGrant {
    pb::RightGrant {
        right: code.into(),
        ..Default::default()
    }
}

pub fn scoped(code: &str, scope: pb::Scope) -> pb::RightGrant {
    pb::RightGrant {
        right: code.into(),
        scope: scope as i32,
        expire_time: None,
    }
}

/// Creates a user on `account` with `rights`; returns (user, key). An
/// advanced user's invitation is completed at once (with
/// [`TEST_PASSWORD`]), so that he is active with a key like a standard one.
pub async fn create_user(
    c: &mut Clients,
    user: pb::User,
    account: &str,
    tags: &[&str],
    rights: Vec<pb::RightGrant>,
) -> Result<(pb::User, String), Status> {
    let r = c
        .users
        .create_user(pb::CreateUserRequest {
            user: Some(user),
            account_code: account.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            rights,
            request_id: String::new(),
        })
        .await?
        .into_inner();
    if r.invitation_token.is_empty() {
        return Ok((r.user.expect("user"), r.connection_key));
    }
    let done = complete(c, &r.invitation_token).await?;
    Ok((done.user.expect("user"), done.connection_key))
}

impl TestApp {
    /// Completes an invitation (as the operator) with the proposed login
    /// and [`TEST_PASSWORD`].
    pub async fn activate(&self, token: &str) -> pb::CompleteInvitationResponse {
        let mut ops = self.operator().await;
        complete(&mut ops, token)
            .await
            .expect("complete invitation")
    }
}

impl TestApp {
    /// Makes invited users (an import's) active: a new invitation for each,
    /// completed at once.
    pub async fn activate_all(&self, ids: &[String]) {
        let mut ops = self.operator().await;
        for id in ids {
            let token = ops
                .credentials
                .resend_invitation(pb::ResendInvitationRequest {
                    user_id: id.clone(),
                })
                .await
                .expect("resend invitation")
                .into_inner()
                .invitation_token;
            complete(&mut ops, &token)
                .await
                .expect("complete invitation");
        }
    }
}

/// Completes an invitation with the proposed login and [`TEST_PASSWORD`].
pub async fn complete(
    c: &mut Clients,
    token: &str,
) -> Result<pb::CompleteInvitationResponse, Status> {
    Ok(c.portal
        .complete_invitation(pb::CompleteInvitationRequest {
            token: token.into(),
            password: TEST_PASSWORD.into(),
            ..Default::default()
        })
        .await?
        .into_inner())
}

/// An admin (standard user with `admin.users` and `extra`) of `account`,
/// created by the operator; returns (user, key).
pub async fn make_admin(
    app: &TestApp,
    account: &str,
    name: &str,
    extra: Vec<pb::RightGrant>,
) -> (pb::User, String) {
    let mut ops = app.operator().await;
    let mut rights = vec![right("admin.users")];
    rights.extend(extra);
    create_user(&mut ops, standard(name, "Admin"), account, &[], rights)
        .await
        .expect("create admin")
}

/// A serialisation of every access-relevant row, to prove refused calls
/// changed nothing.
pub async fn snapshot(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT 'u' || row_to_json(t)::text FROM (SELECT id, status, login, email, last_name, first_name, revision FROM users ORDER BY id) t
         UNION ALL SELECT 'l' || row_to_json(t)::text FROM (SELECT * FROM links ORDER BY user_id, account_id) t
         UNION ALL SELECT 'g' || row_to_json(t)::text FROM (SELECT * FROM grants ORDER BY user_id, account_id, right_code) t
         UNION ALL SELECT 'k' || row_to_json(t)::text FROM (SELECT id, revoked_at, expires_at FROM connection_keys ORDER BY id) t
         UNION ALL SELECT 'r' || (SELECT value FROM revision_counter)::text",
    )
    .fetch_all(app.store.pool())
    .await
    .expect("snapshot")
}

/// An organization with one account, created by the operator.
pub async fn org_with_account(app: &TestApp, org: &str, code: &str) -> String {
    let mut c = app.operator_accounts().await;
    let org = create_org(&mut c, org).await;
    create_account(&mut c, &org, code).await;
    org
}

pub type AuthzClient = pb::authorization_service_client::AuthorizationServiceClient<
    InterceptedService<Channel, Bearer>,
>;

impl TestApp {
    /// An AuthorizationService client for a new service principal.
    pub async fn decider(&self) -> AuthzClient {
        let key = self
            .service_key(&format!("svc-{}", uuid::Uuid::new_v4().simple()))
            .await;
        self.authz(&key).await
    }

    pub async fn authz(&self, key: &str) -> AuthzClient {
        pb::authorization_service_client::AuthorizationServiceClient::with_interceptor(
            self.channel().await,
            Bearer::new(Some(key)),
        )
    }
}

pub fn by_key(k: &str) -> Option<pb::Subject> {
    Some(pb::Subject {
        by: Some(pb::subject::By::ConnectionKey(k.into())),
    })
}

pub fn by_user(id: &str) -> Option<pb::Subject> {
    Some(pb::Subject {
        by: Some(pb::subject::By::UserId(id.into())),
    })
}

pub fn by_user_key(k: &str) -> Option<pb::Subject> {
    Some(pb::Subject {
        by: Some(pb::subject::By::UserKey(k.into())),
    })
}

/// Runs a Check; returns (allowed, scope, reason, revision).
pub async fn check(
    c: &mut AuthzClient,
    subject: Option<pb::Subject>,
    account: &str,
    right: &str,
    min_revision: i64,
) -> pb::CheckResponse {
    c.check(pb::CheckRequest {
        subject,
        account_code: account.into(),
        right: right.into(),
        min_revision,
    })
    .await
    .expect("check")
    .into_inner()
}

/// A line result's status as reports and the CLI name it (`created`).
pub trait StatusName {
    fn status_name(&self) -> &'static str;
}

impl StatusName for pb::LineResult {
    fn status_name(&self) -> &'static str {
        clef::cli::client::line_status_name(self.status)
    }
}
