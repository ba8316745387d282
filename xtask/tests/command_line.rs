//! `cargo xtask verify` refuses bad arguments before starting anything (a
//! clear message and exit code 2), and says what it could not evaluate.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

use std::process::Command;

fn verify(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xtask")).arg("verify").args(args).output().unwrap()
}

#[test]
fn a_malformed_month_or_an_unknown_step_exits_2_before_anything_runs() {
    let output = verify(&["--month", "2026-13"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("\"2026-13\" is not a month YYYY-MM"), "{stderr}");
    let output = verify(&["--step", "fuzz"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown --step \"fuzz\""), "{stderr}");
    assert!(!stderr.contains("panicked"));
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
