//! The sandbox against the machine's real PostgreSQL and Redis: the catalog is
//! read from PostgreSQL and cache hits land in Redis and in `/metrics`.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod common;

use common::{get, get_json, metric, start};
use testkit::{TempDatabase, local_redis_url, unique_name};

#[tokio::test(flavor = "multi_thread")]
async fn catalog_is_seeded_into_and_read_from_postgres() {
    let db = TempDatabase::create().await.expect("temp database on the local PostgreSQL");
    let sandbox =
        start(&["--database-url", db.url(), "--collections", "40", "--nfts", "1000"]).await;

    let client = testkit::postgres::connect(db.url()).await.unwrap();
    let counts = client
        .query_one("SELECT (SELECT count(*) FROM sandbox.collections), (SELECT count(*) FROM sandbox.nfts)", &[])
        .await
        .unwrap();
    assert_eq!(
        (counts.try_get::<_, i64>(0).unwrap(), counts.try_get::<_, i64>(1).unwrap()),
        (40, 1000)
    );

    // A row changed behind the sandbox's back shows up: reads go to PostgreSQL.
    client
        .execute("UPDATE sandbox.collections SET name = 'Changed In Postgres' WHERE id = 9", &[])
        .await
        .unwrap();
    let collection = get_json(&sandbox, "/api/collections/9").await;
    assert_eq!(collection["name"], "Changed In Postgres");
    let hits = get_json(&sandbox, "/api/search?q=changed%20in").await;
    assert_eq!(hits[0]["id"], 9);

    let nfts = get_json(&sandbox, "/api/collections/9/nfts?per_page=5").await;
    assert_eq!(nfts.as_array().unwrap().len(), 5);
    let ready = get_json(&sandbox, "/readyz").await;
    assert_eq!(ready["catalog"], "postgres");
    assert!(metric(&sandbox, "db_queries_total", &[("operation", "collection")]).await >= 1.0);
    let sessions: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'postlaunch-sandbox' AND datname = $1",
            &[&db.name()],
        )
        .await
        .unwrap()
        .try_get(0).unwrap();
    assert!(sessions >= 1, "the sandbox holds pooled connections to {}", db.name());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_start_reuses_the_seeded_catalog() {
    let db = TempDatabase::create().await.unwrap();
    let first = start(&["--database-url", db.url(), "--collections", "10", "--nfts", "100"]).await;
    drop(first);
    let client = testkit::postgres::connect(db.url()).await.unwrap();
    let seeded_at: String = client
        .query_one("SELECT seeded_at::text FROM sandbox.catalog_meta", &[])
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    let _second =
        start(&["--database-url", db.url(), "--collections", "10", "--nfts", "100"]).await;
    let again: String = client
        .query_one("SELECT seeded_at::text FROM sandbox.catalog_meta", &[])
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(seeded_at, again, "same shape: not seeded twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_hits_come_from_redis_and_show_in_metrics() {
    let namespace = unique_name("sandbox_test");
    let redis_url = local_redis_url();
    let sandbox = start(&[
        "--collections",
        "50",
        "--nfts",
        "500",
        "--redis-url",
        &redis_url,
        "--cache-namespace",
        &namespace,
    ])
    .await;

    let first = get(&sandbox, "/api/collections/4").await;
    assert_eq!(first.headers()["x-cache"], "miss");
    let second = get(&sandbox, "/api/collections/4").await;
    assert_eq!(second.headers()["x-cache"], "hit");
    let third = get(&sandbox, "/api/collections/4").await;
    assert_eq!(third.headers()["x-cache"], "hit");
    assert_eq!(metric(&sandbox, "cache_hits_total", &[]).await, 2.0);
    assert_eq!(metric(&sandbox, "cache_misses_total", &[]).await, 1.0);

    // The entry really lives in Redis, under the namespace, with a TTL.
    let client = redis::Client::open(redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{namespace}:collection:4");
    let value: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut conn).await.unwrap();
    let value: serde_json::Value = serde_json::from_str(&value.expect("key in redis")).unwrap();
    assert_eq!(value["id"], 4);
    let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await.unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "ttl {ttl}");
    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut conn).await.unwrap();
}

/// Production databases require TLS: the catalog is read over
/// `sslmode=verify-full` with the server's CA from a server that rejects
/// plaintext (testkit's TlsPostgres), and a wrong CA stops the start with the
/// host and the TLS reason.
#[tokio::test(flavor = "multi_thread")]
async fn catalog_reads_postgres_over_verify_full_tls() {
    let server = testkit::TlsPostgres::start().await.expect("TLS PostgreSQL");
    let url = server.verify_full_url();
    let sandbox = start(&["--database-url", &url, "--collections", "5", "--nfts", "20"]).await;
    let ready = get_json(&sandbox, "/readyz").await;
    assert_eq!(ready["catalog"], "postgres");
    assert_eq!(get_json(&sandbox, "/api/collections/3").await["id"], 3);

    let wrong = server.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", server.other_ca_path().display()),
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sandbox"))
        .args(["--listen", "127.0.0.1:0", "--database-url", &wrong])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains(&format!("localhost:{}", server.port())), "{stderr}");
    assert!(stderr.contains("UnknownIssuer"), "the TLS reason: {stderr}");
}
