//! TLS to PostgreSQL as production runs it: a real server with `ssl = on`
//! that rejects plaintext, reached through shared-types' `pg` settings (the
//! ones every tool uses) with each `sslmode`.

use std::time::Duration;

use shared_types::pg::PgConnectOptions;
use testkit::TlsPostgres;

const TIMEOUT: Duration = Duration::from_secs(10);

async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let options = PgConnectOptions::parse(url).map_err(|e| e.to_string())?;
    options.connect(TIMEOUT).await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn verify_full_with_the_right_ca_connects_over_tls() {
    let server = TlsPostgres::start().await.expect("TLS PostgreSQL starts");
    let client = connect(&server.verify_full_url()).await.expect("verify-full connects");
    let row = client
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .await
        .expect("pg_stat_ssl");
    assert!(row.try_get::<_, bool>(0).expect("ssl column"), "the session is encrypted");
    // verify-ca accepts the certificate for a name it does not carry? It has
    // both localhost and 127.0.0.1, so check the IP form under verify-full too.
    let ca = server.ca_path();
    let by_ip =
        server.url("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={}", ca.display()));
    connect(&by_ip).await.expect("verify-full by IP (SAN IP:127.0.0.1)");
    connect(&server.url("localhost", "sslmode=require")).await.expect("require connects");
}

#[tokio::test]
async fn a_wrong_ca_is_refused_naming_the_host_and_the_tls_reason() {
    let server = TlsPostgres::start().await.expect("TLS PostgreSQL starts");
    let other = server.other_ca_path();
    for mode in ["verify-full", "verify-ca"] {
        let url =
            server.url("localhost", &format!("sslmode={mode}&sslrootcert={}", other.display()));
        let err = connect(&url).await.expect_err("a wrong CA must be refused");
        assert!(
            err.contains(&format!("localhost:{}", server.port())),
            "{mode}: names the host: {err}"
        );
        assert!(
            err.contains("UnknownIssuer") || err.contains("certificate"),
            "{mode}: TLS reason: {err}"
        );
    }
}

#[tokio::test]
async fn sslmode_disable_against_a_tls_only_server_gets_the_servers_refusal() {
    let server = TlsPostgres::start().await.expect("TLS PostgreSQL starts");
    let err = connect(&server.url("127.0.0.1", "sslmode=disable")).await.expect_err("refused");
    assert!(
        err.contains("pg_hba.conf") && err.contains("no encryption"),
        "the server's words: {err}"
    );
}
