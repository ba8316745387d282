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
