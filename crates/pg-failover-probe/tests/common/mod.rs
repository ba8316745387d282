//! Shared by the probe's integration tests: reading the probe table directly,
//! independently of the probe.

#![allow(clippy::unwrap_used, dead_code)] // tests fail loudly on the first surprise

use std::collections::BTreeSet;

use pg_failover_probe::ledger::WriteKey;

/// Every probe row of `run_id` on the server at `url`, keyed like the ledger.
pub async fn probe_rows(url: &str, run_id: &str) -> BTreeSet<WriteKey> {
    let client = testkit::postgres::connect(url).await.unwrap();
    client
        .query(
            "SELECT incarnation, writer, seq FROM postlaunch_probe.probe_writes WHERE run_id = $1",
            &[&run_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let int = |i| r.try_get::<_, i32>(i).unwrap() as u32;
            (int(0), int(1), r.try_get::<_, i64>(2).unwrap() as u64)
        })
        .collect()
}
