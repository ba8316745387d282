//! Every tool that connects to PostgreSQL does so as production requires:
//! against a real server with `ssl = on` that rejects plaintext (testkit's
//! TlsPostgres), each tool binary connects with `sslmode=verify-full` and the
//! testkit CA, and refuses a wrong CA with an error naming the host and the
//! TLS reason (exit 3), never a panic. (The sandbox's own test is in
//! crates/sandbox/tests/dependencies.rs.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on the first surprise

use std::process::Output;

use shared_types::Report;

fn tool(name: &str, args: &[&str]) -> Output {
    // In a scratch directory: pg-failover-probe writes its ledger to the cwd.
    let cwd = tempfile::tempdir().unwrap();
    std::process::Command::new(testkit::workspace_binary("debug", name))
        .args(args)
        .current_dir(cwd.path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name} (cargo build --workspace --bins first): {e}"))
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn report(o: &Output) -> Report {
    Report::from_json(&String::from_utf8_lossy(&o.stdout))
        .unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

/// The same run with the other CA: exit 3, host and TLS reason named.
fn assert_wrong_ca_refused(name: &str, o: &Output, server: &testkit::TlsPostgres) {
    assert_eq!(o.status.code(), Some(3), "{name} with a wrong CA: {}", text(o));
    let all = text(o);
    assert!(all.contains(&format!("localhost:{}", server.port())), "{name} names the host: {all}");
    assert!(all.contains("UnknownIssuer"), "{name} gives the TLS reason: {all}");
    assert!(!all.contains("panicked"), "{name}: {all}");
}

fn wrong_ca_url(server: &testkit::TlsPostgres) -> String {
    server.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", server.other_ca_path().display()),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn reorg_sim_indexes_into_a_tls_only_database() {
    let server = testkit::TlsPostgres::start().await.expect("TLS PostgreSQL");
    let url = server.verify_full_url();
    let o = tool(
        "reorg-sim",
        &["run", "--scenario", "shallow", "--database-url", &url, "--output", "json"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!report(&o).checks.is_empty());
    let o = tool(
        "reorg-sim",
        &[
            "run",
            "--scenario",
            "shallow",
            "--database-url",
            &wrong_ca_url(&server),
            "--output",
            "json",
        ],
    );
    assert_wrong_ca_refused("reorg-sim", &o, &server);
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_agent_backs_up_a_tls_only_database() {
    let server = testkit::TlsPostgres::start().await.expect("TLS PostgreSQL");
    let client = shared_types::pg::PgConnectOptions::parse(&server.verify_full_url())
        .unwrap()
        .connect(std::time::Duration::from_secs(10))
        .await
        .unwrap();
    client.batch_execute("CREATE TABLE orders (id int PRIMARY KEY, sku text); INSERT INTO orders SELECT g, 'sku-' || g FROM generate_series(1, 100) g").await.unwrap();
    let repo = tempfile::tempdir().unwrap();
    let repo = repo.path().display().to_string();
    let url = server.verify_full_url();
    let o = tool(
        "backup-agent",
        &["backup", "tables", "--repo", &repo, "--pg-url", &url, "--output", "json"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = tool(
        "backup-agent",
        &[
            "backup",
            "tables",
            "--repo",
            &repo,
            "--pg-url",
            &wrong_ca_url(&server),
            "--output",
            "json",
        ],
    );
    assert_wrong_ca_refused("backup-agent", &o, &server);
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_failover_probe_writes_through_tls() {
    let server = testkit::TlsPostgres::start().await.expect("TLS PostgreSQL");
    let url = server.verify_full_url();
    let o = tool(
        "pg-failover-probe",
        &["watch", "--url", &url, "--duration", "2s", "--output", "json"],
    );
    let r = report(&o);
    let writes =
        r.measurements.iter().find(|m| m.name == "writes_acknowledged").map_or(0.0, |m| m.value);
    assert!(writes > 0.0, "acknowledged writes over TLS: {}", text(&o));
    let o = tool(
        "pg-failover-probe",
        &["watch", "--url", &wrong_ca_url(&server), "--duration", "2s", "--output", "json"],
    );
    assert_wrong_ca_refused("pg-failover-probe", &o, &server);
}
