//! The machine's pre-started PostgreSQL, through TempDatabase.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

use testkit::postgres::connect;
use testkit::{TempDatabase, local_postgres_url};

async fn database_exists(name: &str) -> bool {
    let admin = connect(&local_postgres_url()).await.expect("connect to the local PostgreSQL");
    let row = admin
        .query_one("SELECT count(*) FROM pg_database WHERE datname = $1", &[&name])
        .await
        .expect("query pg_database");
    row.try_get::<_, i64>(0).unwrap() == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temp_database_is_created_and_dropped() {
    let db = TempDatabase::create().await.unwrap();
    let name = db.name().to_owned();
    assert!(name.starts_with("postlaunch_test_"));
    assert!(db.url().ends_with(&format!("/{name}")));
    assert!(database_exists(&name).await);

    // An open connection must not keep the database alive: the drop uses FORCE.
    let client = connect(db.url()).await.unwrap();
    client.batch_execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)").await.unwrap();
    let current: String =
        client.query_one("SELECT current_database()", &[]).await.unwrap().try_get(0).unwrap();
    assert_eq!(current, name);

    drop(db); // inside a multi-thread runtime, on purpose
    assert!(!database_exists(&name).await, "{name} was not dropped");
}

#[tokio::test(flavor = "current_thread")]
async fn temp_database_drops_from_a_current_thread_runtime() {
    let db = TempDatabase::create().await.unwrap();
    let name = db.name().to_owned();
    drop(db);
    assert!(!database_exists(&name).await, "{name} was not dropped");
}
