//! A self-contained drill that needs nothing but PostgreSQL's binaries: it
//! initdb's a source cluster archiving into the repository with `wal-push`,
//! commits a ledger of rows, takes the backup, commits more, crashes the
//! source, then runs the [`drill`] and checks, row by
//! row, that exactly the rows it expects came back. `cargo xtask verify` and
//! the benchmark use it; it is also the quickest way to see the agent work.

use std::time::{Duration, Instant};

use shared_types::{Check, Measurement, Report};

use crate::drill::{DrillOptions, DrillScenario, drill};
use crate::error::{AgentError, Result};
use crate::object::UploadSettings;
use crate::postgres::base::{self, BaseBackupOptions};
use crate::postgres::scratch::ScratchCluster;
use crate::postgres::{column, connect, logical};
use crate::repository::Repository;

const LEDGER: &str = "public.drill_ledger";

/// Starts a source cluster whose `archive_command` is `<wal_push> %p`.
pub async fn start_source(wal_push: &str, timeout: Duration) -> Result<ScratchCluster> {
    let cluster = ScratchCluster::prepare()?;
    let quoted = format!("'{}'", format!("{wal_push} %p").replace('\'', "''"));
    let conf = format!(
        "{}archive_mode = on\narchive_command = {quoted}\nwal_level = replica\nmax_wal_senders = 4\n",
        cluster.local_settings()
    );
    cluster.initdb(&conf).await?;
    cluster.start(timeout).await?;
    Ok(cluster)
}

/// Commits `count` ledger rows one transaction each; returns the highest id.
async fn commit_rows(client: &tokio_postgres::Client, count: usize) -> Result<i64> {
    let mut last = 0;
    for _ in 0..count {
        let row = client
            .query_one(
                &format!(
                    "INSERT INTO {LEDGER} (payload) VALUES (md5(random()::text)) RETURNING id"
                ),
                &[],
            )
            .await
            .map_err(|e| AgentError::CouldNotRun(format!("writing the ledger: {e}")))?;
        last = column(&row, 0, &format!("writing the ledger {LEDGER}"), "id")?;
    }
    Ok(last)
}

/// Switches to a new WAL segment and waits until the old one is archived.
pub async fn archive_current_wal(client: &tokio_postgres::Client, timeout: Duration) -> Result<()> {
    let segment: String = column(
        &client
            .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
            .await
            .map_err(|e| AgentError::CouldNotRun(format!("pg_switch_wal(): {e}")))?,
        0,
        "SELECT pg_walfile_name(pg_switch_wal())",
        "pg_walfile_name",
    )?;
    let deadline = Instant::now() + timeout;
    loop {
        let row = client
            .query_one("SELECT coalesce(last_archived_wal, ''), coalesce(last_failed_wal, '') FROM pg_stat_archiver", &[])
            .await
            .map_err(|e| AgentError::CouldNotRun(format!("reading pg_stat_archiver: {e}")))?;
        let what = "reading pg_stat_archiver";
        let (archived, failed): (String, String) = (
            column(&row, 0, what, "last_archived_wal")?,
            column(&row, 1, what, "last_failed_wal")?,
        );
        if archived.len() >= 24 && archived[..24] >= *segment.as_str() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(AgentError::CouldNotRun(format!(
                "WAL segment {segment} was not archived within {timeout:?} (last archived {archived:?}, last failed {failed:?}): check archive_command"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs a self-contained drill of `scenario` with `rows` ledger rows before and
/// after the backup, against `repo`.
pub async fn self_contained(
    repo: &Repository,
    wal_push: &str,
    options: &DrillOptions,
    rows: usize,
) -> Result<Report> {
    let timeout = options.timeout;
    let source = start_source(wal_push, timeout).await?;
    let client = connect(&source.url("postgres")).await?;
    client
        .batch_execute(&format!(
            "CREATE TABLE {LEDGER} (id bigserial PRIMARY KEY, payload text NOT NULL, committed_at timestamptz NOT NULL DEFAULT clock_timestamp())"
        ))
        .await
        .map_err(|e| AgentError::CouldNotRun(format!("creating the ledger: {e}")))?;
    let first_batch = commit_rows(&client, rows).await?;
    let backup_started = Instant::now();
    let manifest = match options.scenario {
        DrillScenario::Table => {
            logical::backup(
                repo,
                &source.url("postgres"),
                &[LEDGER.to_owned()],
                &UploadSettings::default(),
            )
            .await?
        }
        _ => {
            let opts = BaseBackupOptions {
                key_tables: vec![LEDGER.to_owned()],
                upload: UploadSettings::default(),
            };
            base::backup(repo, &source.url("postgres"), &opts, |_| {}).await?
        }
    };
    let backup_secs = backup_started.elapsed().as_secs_f64();
    // The PITR target lies between the two batches.
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Both the PITR target and the failure point are read from the source
    // server's clock, the clock of the commit timestamps they are compared with.
    let between = crate::postgres::server_now(&client).await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second_batch = commit_rows(&client, rows).await?;
    if let Err(e) = archive_current_wal(&client, timeout.min(Duration::from_secs(60))).await {
        return Err(AgentError::CouldNotRun(format!(
            "{e}\n--- source server log ---\n{}",
            source.log_tail(8)
        )));
    }
    let failure_point = crate::postgres::server_now(&client).await?;
    source.crash().await?;
    let expected_last = match options.scenario {
        DrillScenario::FullLoss => second_batch,
        DrillScenario::Pitr | DrillScenario::Table => first_batch,
    };
    let mut drill_options = options.clone();
    drill_options.failure_point = Some(failure_point);
    drill_options.failure_clock = crate::drill::FailureClock::Server;
    if options.scenario == DrillScenario::Pitr {
        drill_options.target_time = Some(between);
    }
    drill_options.keep = true;
    let mut report = drill(repo, &drill_options).await?;
    let scratch_url = report
        .data
        .get("scratch")
        .and_then(|s| s.get("url"))
        .and_then(|u| u.as_str())
        .map(str::to_owned)
        .unwrap_or_default();
    let check = match connect(&scratch_url).await {
        Ok(restored) => {
            // A failed query or an unreadable id reads as no rows: the check fails.
            let ids: Vec<i64> = restored
                .query(&format!("SELECT id FROM {LEDGER} ORDER BY id"), &[])
                .await
                .map_err(|e| AgentError::CouldNotRun(e.to_string()))
                .and_then(|rows| {
                    rows.iter()
                        .map(|r| column(r, 0, &format!("reading the ledger {LEDGER}"), "id"))
                        .collect::<Result<Vec<i64>>>()
                })
                .unwrap_or_default();
            let exact = ids.len() as i64 == expected_last
                && ids.iter().enumerate().all(|(i, id)| *id == i as i64 + 1);
            Check::from_bool(
                "ledger",
                format!("rows 1..={expected_last} restored, no more, no fewer"),
                format!("{} row(s), highest id {}", ids.len(), ids.last().copied().unwrap_or(0)),
                exact,
            )
        }
        Err(e) => Check::error("ledger", "restored rows match the ledger", e.to_string()),
    };
    report.push_check(check);
    report.push_measurement(Measurement::new("backup_seconds", backup_secs, "s"));
    report.push_measurement(Measurement::new(
        "backup_stored_bytes",
        manifest.stored_bytes() as f64,
        "B",
    ));
    // The scratch cluster was kept only for the row check: stop and remove it.
    if let Some(dir) = report
        .data
        .remove("scratch")
        .and_then(|s| s.get("dir").and_then(|d| d.as_str()).map(str::to_owned))
    {
        stop_and_remove(&dir).await;
    }
    report.finish();
    Ok(report)
}

async fn stop_and_remove(dir: &str) {
    if let Ok(pg_ctl) = crate::postgres::tools::pg_tool("pg_ctl") {
        let mut cmd = crate::postgres::tools::server_command(&pg_ctl);
        cmd.current_dir(dir)
            .arg("-D")
            .arg(format!("{dir}/data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let _ = cmd.status().await;
    }
    let _ = tokio::fs::remove_dir_all(dir).await;
}
