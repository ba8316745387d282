//! `cargo xtask verify` refuses bad criteria before starting anything: a clear
//! message and exit code 2.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

use std::process::Command;

fn verify(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xtask")).arg("verify").args(args).output().unwrap()
}

#[test]
fn a_malformed_threshold_exits_2_with_the_parse_error() {
    let output = verify(&["--threshold", "p95 < 500xs"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--threshold"), "{stderr}");
    assert!(stderr.contains("unknown unit \"xs\""), "{stderr}");
    assert!(!stderr.contains("panicked"));
}

#[test]
fn a_threshold_on_an_unmeasured_metric_exits_2_listing_the_known_ones() {
    let output = verify(&["--threshold", "p42 < 1s"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown metric \"p42\""), "{stderr}");
    assert!(stderr.contains("p95, p99"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_says_the_failover_drill_was_not_evaluated_without_postgresql_binaries() {
    let sandbox =
        testkit::Sandbox::start(&["--collections", "10", "--nfts", "100"].map(String::from))
            .await
            .unwrap();
    let empty = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["verify", "--target", sandbox.url(), "--step", "pg-failover-probe", "--out-dir"])
        .arg(empty.path().join("reports"))
        .env(testkit::binaries::POSTGRES_BIN_DIR_ENV, empty.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    // A missing binary is missing evidence: exit 3, never a skip.
    assert_eq!(
        output.status.code(),
        Some(3),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("pg-failover-probe/drill"), "{stdout}");
    assert!(stdout.contains("UNMEASURED"), "{stdout}");
    assert!(stdout.contains("no PostgreSQL server binaries"), "{stdout}");
}
