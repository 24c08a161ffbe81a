//! Postgres over TLS: the test cluster (scripts/test) speaks TLS with a
//! certificate of its own CA. clef connects with `sslmode` in the URL,
//! verifies the server against `sslrootcert`, and refuses one it cannot
//! verify.

use std::str::FromStr;

use sqlx::{postgres::PgConnectOptions, Connection, PgConnection};

use crate::{
    common::*,
    embedded::{clef, started, terminate, wait_serving},
};

fn ca() -> String {
    std::env::var("CLEF_TEST_PG_CA")
        .expect("CLEF_TEST_PG_CA: run the tests with scripts/test, which starts Postgres with TLS")
}

async fn ssl_in_use(c: &mut PgConnection) -> bool {
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(c)
        .await
        .unwrap()
}

#[tokio::test]
async fn postgres_over_tls_is_verified_and_never_downgraded() {
    let db = fresh_database().await;
    let url = database_url(&db);
    let sep = if url.contains('?') { '&' } else { '?' };
    let verified = format!("{url}{sep}sslmode=verify-full&sslrootcert={}", ca());

    // verify-full against the test CA: a TLS session.
    let mut c = PgConnection::connect_with(&PgConnectOptions::from_str(&verified).unwrap())
        .await
        .unwrap();
    assert!(ssl_in_use(&mut c).await);
    // require: TLS too, without verification.
    let required = format!("{url}{sep}sslmode=require");
    let mut r = PgConnection::connect_with(&PgConnectOptions::from_str(&required).unwrap())
        .await
        .unwrap();
    assert!(ssl_in_use(&mut r).await);

    // Another CA: refused, never a plaintext fallback.
    let dir = crate::embedded::temp_dir("pgtls");
    let other = {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
        let path = dir.join("other-ca.pem");
        std::fs::write(&path, ca.pem()).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let wrong = format!("{url}{sep}sslmode=verify-full&sslrootcert={other}");
    let e = PgConnection::connect_with(&PgConnectOptions::from_str(&wrong).unwrap())
        .await
        .unwrap_err();
    eprintln!("with another CA: {e}");

    // clef serve on that URL: its connections are TLS sessions.
    let mut server = clef(&[
        "serve",
        "--database-url",
        &verified,
        "--listen",
        "127.0.0.1:0",
    ])
    .spawn()
    .unwrap();
    let (addr, _, _) = started(&mut server).await;
    wait_serving(addr).await;
    let tls_sessions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
          WHERE s.ssl AND a.datname = current_database() AND a.pid <> pg_backend_pid()",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert!(tls_sessions >= 1, "clef's connections are not TLS");
    assert!(terminate(server).await.success());

    // ... and with a CA that does not sign the server, it does not serve
    // over an unverified connection: health stays NOT_SERVING, and the log
    // says why.
    let mut refused = clef(&["serve", "--database-url", &wrong, "--listen", "127.0.0.1:0"])
        .spawn()
        .unwrap();
    let status = tokio::time::timeout(std::time::Duration::from_secs(20), refused.wait()).await;
    match status {
        // Migrations at start-up need the database: it stops, non-zero.
        Ok(s) => assert!(!s.unwrap().success()),
        Err(_) => {
            let _ = refused.kill().await;
            panic!("clef kept running on a database it could not verify");
        }
    }
}
