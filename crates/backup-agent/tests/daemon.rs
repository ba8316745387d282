//! The daemon against real servers: jobs run on their schedules (seconds
//! granularity here), the metrics the backup-freshness alerts read move only
//! on success, a failing job is counted as such, SIGTERM stops it cleanly,
//! and a bad config exits 2 naming the file and the job.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use support::{agent, text};

async fn metrics(url: &str) -> String {
    match reqwest::get(url).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_jobs_feed_the_freshness_metrics_and_stop_on_sigterm() {
    let db = testkit::TempDatabase::create().await.unwrap();
    let client = testkit::postgres::connect(db.url()).await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let port = testkit::free_port();
    let dead = format!("postgres://postgres@127.0.0.1:{}/postgres", testkit::free_port());
    let config = dir.path().join("daemon.yaml");
    std::fs::write(
        &config,
        format!(
            "metrics_listen: 127.0.0.1:{port}\n\
             jobs:\n\
             \x20 - name: tables\n\
             \x20   schedule: \"*/2 * * * * *\"\n\
             \x20   args: [backup, tables, --repo, \"{repo}\", --pg-url, \"{url}\"]\n\
             \x20 - name: broken\n\
             \x20   schedule: \"*/2 * * * * *\"\n\
             \x20   args: [backup, tables, --repo, \"{repo}\", --pg-url, \"{dead}\"]\n\
             \x20 - name: verify\n\
             \x20   schedule: \"*/3 * * * * *\"\n\
             \x20   args: [verify, --repo, \"{repo}\"]\n",
            repo = repo.display(),
            url = db.url(),
        ),
    )
    .unwrap();
    let check = agent(&["daemon", "--config", config.to_str().unwrap(), "--check"]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    assert!(text(&check).contains("tables  next 20"), "{}", text(&check));

    let mut daemon = std::process::Command::new(env!("CARGO_BIN_EXE_backup-agent"))
        .args(["daemon", "--config", config.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen = loop {
        let m = metrics(&url).await;
        let ok =
            value(&m, r#"backup_job_runs_total{job="tables",result="success"}"#).unwrap_or(0.0);
        let failed =
            value(&m, r#"backup_job_runs_total{job="broken",result="failure"}"#).unwrap_or(0.0);
        let verified = value(&m, r#"backup_verified{job="verify"}"#);
        if ok >= 2.0 && failed >= 1.0 && verified == Some(1.0) {
            break m;
        }
        assert!(Instant::now() < deadline, "jobs did not run in time; metrics:\n{m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let fresh =
        value(&seen, r#"backup_last_success_timestamp_seconds{database="postgres",job="tables"}"#)
            .unwrap();
    assert!((now - fresh).abs() < 30.0, "last success {fresh} vs now {now}");
    assert!(
        value(&seen, r#"backup_last_size_bytes{database="postgres",job="tables"}"#).unwrap() > 0.0
    );
    assert_eq!(value(&seen, r#"backup_job_last_exit_code{job="broken"}"#), Some(3.0));
    assert!(
        !seen
            .contains(r#"backup_last_success_timestamp_seconds{database="postgres",job="broken"}"#),
        "a failing job must not look fresh:\n{seen}"
    );
    assert!(
        value(&seen, r#"backup_job_next_run_timestamp_seconds{job="tables"}"#).unwrap()
            >= now - 5.0
    );

    let _ = std::process::Command::new("kill").arg(daemon.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the daemon did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.code(), Some(0));

    let listed = agent(&["list", "--repo", repo.to_str().unwrap(), "--json"]);
    let backups: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let complete = backups.as_array().unwrap().iter().filter(|b| b["state"] == "complete").count();
    assert!(complete >= 2, "{backups}");
}

#[test]
fn a_bad_daemon_config_exits_2_naming_file_and_job() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("daemon.yaml");
    std::fs::write(
        &config,
        "jobs:\n  - name: nightly\n    schedule: \"every night\"\n    args: [backup, postgres]\n",
    )
    .unwrap();
    let out = agent(&["daemon", "--config", config.to_str().unwrap(), "--check"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("daemon.yaml")
            && text(&out).contains("\"nightly\"")
            && text(&out).contains("every night"),
        "{}",
        text(&out)
    );

    std::fs::write(&config, "jobs:\n  - name: nightly\n    schedul: \"0 2 * * *\"\n").unwrap();
    let out = agent(&["daemon", "--config", config.to_str().unwrap(), "--check"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("daemon.yaml") && text(&out).contains("schedul"), "{}", text(&out));
}

/// The shipped example (docs/backup-agent/daemon.yaml) is a valid config.
#[test]
fn the_shipped_daemon_config_checks() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/backup-agent/daemon.yaml");
    let out = agent(&["daemon", "--config", shipped, "--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for job in ["postgres-base", "mongodb", "postgres-verify", "postgres-prune", "pitr-drill"] {
        assert!(text(&out).contains(&format!("{job}  next ")), "{}", text(&out));
    }
}
