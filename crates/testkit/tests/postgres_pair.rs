//! PgPair against the machine's real PostgreSQL binaries.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

use std::time::Duration;

use testkit::postgres::connect;
use testkit::{PgPair, PgPairOptions};
use tokio::time::{Instant, sleep};
use tokio_postgres::Client;

/// Polls `client` until `SELECT count(*) FROM t WHERE v = $1` is 1.
async fn wait_for_row(client: &Client, value: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(row) = client.query_one("SELECT count(*) FROM t WHERE v = $1", &[&value]).await
            && row.try_get::<_, i64>(0).unwrap() == 1
        {
            return true;
        }
        sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_and_standby_stream_writes() {
    let pair = PgPair::start(PgPairOptions::default()).await.unwrap();
    assert_ne!(pair.primary_port(), pair.standby_port());
    assert!(pair.data_dir_primary().join("PG_VERSION").exists());
    assert!(pair.data_dir_standby().join("standby.signal").exists());

    let primary = connect(&pair.primary_url()).await.unwrap();
    let standby = connect(&pair.standby_url()).await.unwrap();
    let in_recovery: bool =
        standby.query_one("SELECT pg_is_in_recovery()", &[]).await.unwrap().try_get(0).unwrap();
    assert!(in_recovery, "the standby must be in recovery");

    primary
        .batch_execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('streamed')")
        .await
        .unwrap();
    assert!(
        wait_for_row(&standby, "streamed", Duration::from_secs(5)).await,
        "the row written on the primary did not reach the standby within 5 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synchronous_pair_reports_sync_state() {
    let pair = PgPair::start(PgPairOptions { synchronous: true }).await.unwrap();
    let primary = connect(&pair.primary_url()).await.unwrap();
    let row = primary
        .query_one(
            "SELECT state, sync_state FROM pg_stat_replication WHERE application_name = 'standby1'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.try_get::<_, String>(0).unwrap(), "streaming");
    assert_eq!(row.try_get::<_, String>(1).unwrap(), "sync");

    // A synchronous commit returns only once the standby has it.
    primary.batch_execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('acked')").await.unwrap();
    let standby = connect(&pair.standby_url()).await.unwrap();
    assert!(wait_for_row(&standby, "acked", Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promoted_standby_accepts_writes() {
    let pair = PgPair::start(PgPairOptions { synchronous: true }).await.unwrap();
    let primary = connect(&pair.primary_url()).await.unwrap();
    primary
        .batch_execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('before')")
        .await
        .unwrap();

    pair.stop_primary_immediate().await.unwrap();
    assert!(primary.simple_query("SELECT 1").await.is_err(), "the primary must be down");
    pair.promote_standby().await.unwrap();

    let promoted = connect(&pair.standby_url()).await.unwrap();
    let in_recovery: bool =
        promoted.query_one("SELECT pg_is_in_recovery()", &[]).await.unwrap().try_get(0).unwrap();
    assert!(!in_recovery, "the promoted standby must have left recovery");
    assert!(
        wait_for_row(&promoted, "before", Duration::from_secs(1)).await,
        "a synchronously acknowledged commit was lost"
    );
    promoted.batch_execute("INSERT INTO t VALUES ('after')").await.unwrap();
    assert!(wait_for_row(&promoted, "after", Duration::from_secs(1)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_standby_falls_behind_until_healed() {
    let pair = PgPair::start(PgPairOptions::default()).await.unwrap();
    let primary = connect(&pair.primary_url()).await.unwrap();
    let standby = connect(&pair.standby_url()).await.unwrap();
    primary.batch_execute("CREATE TABLE t (v text)").await.unwrap();

    pair.partition_standby().await.unwrap();
    primary.batch_execute("INSERT INTO t VALUES ('during partition')").await.unwrap();
    assert!(
        !wait_for_row(&standby, "during partition", Duration::from_secs(1)).await,
        "a partitioned standby must not receive WAL"
    );
    let senders: i64 = primary
        .query_one("SELECT count(*) FROM pg_stat_replication", &[])
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(senders, 0, "the primary must have lost its standby");

    pair.heal_standby().await.unwrap();
    assert!(
        wait_for_row(&standby, "during partition", Duration::from_secs(5)).await,
        "a healed standby must catch up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_primary_streams_to_the_standby_again() {
    let pair = PgPair::start(PgPairOptions::default()).await.unwrap();
    let primary = connect(&pair.primary_url()).await.unwrap();
    primary.batch_execute("CREATE TABLE t (v text)").await.unwrap();

    pair.stop_primary_immediate().await.unwrap();
    pair.start_primary().await.unwrap();

    let primary = connect(&pair.primary_url()).await.unwrap();
    primary.batch_execute("INSERT INTO t VALUES ('after restart')").await.unwrap();
    let standby = connect(&pair.standby_url()).await.unwrap();
    assert!(
        wait_for_row(&standby, "after restart", Duration::from_secs(5)).await,
        "the standby did not reconnect to the restarted primary"
    );
}
