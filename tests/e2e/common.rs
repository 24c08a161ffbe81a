//! Test helpers: a server per test on `127.0.0.1:0` with a database of its own.

use std::{net::SocketAddr, time::Duration};

use clef::{domain::principal::PrincipalKind, pb, store::Store};
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

/// Starts a server on the given database (migrating it), with an operator.
pub async fn spawn_app_on(db_options: PgConnectOptions) -> TestApp {
    let store = Store::connect_lazy(db_options.clone(), 8);
    store.migrate().await.expect("migrate");
    let operator = store
        .create_principal(None, PrincipalKind::Operator, "test-operator")
        .await
        .expect("create operator");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server_store = store.clone();
    tokio::spawn(async move {
        clef::server::serve(server_store, listener, async {
            let _ = rx.await;
        })
        .await
        .expect("server failed");
    });
    TestApp {
        addr,
        operator_key: operator.key.expose_secret().to_owned(),
        store,
        shutdown: Some(tx),
    }
}

impl TestApp {
    pub async fn channel(&self) -> Channel {
        connect(self.addr).await
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
