//! Running the tool binaries: xtask is the one place that knows they exist
//! together, and it talks to them only through their command lines and their
//! JSON reports, as a user's script would.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context, bail};
use shared_types::Report;

/// The binary of `tool` built with `profile` (`debug` or `release`).
pub fn binary(profile: &str, tool: &str) -> PathBuf {
    testkit::workspace_binary(profile, tool)
}

/// What a tool run produced.
#[derive(Debug)]
pub struct ToolRun {
    /// The parsed JSON report from stdout.
    pub report: Report,
    /// The exit code.
    pub code: Option<i32>,
    /// Standard error, for diagnostics.
    pub stderr: String,
}

/// Runs `binary args... --output json` and parses its report. Exit codes 0 and
/// 1 carry a report; 2 and 3 are errors carrying the tool's message.
pub async fn run_json(binary: &PathBuf, args: &[String]) -> anyhow::Result<ToolRun> {
    let output = tokio::process::Command::new(binary)
        .args(args)
        .args(["--output", "json"])
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| {
            format!(
                "cannot run {}: build it with `cargo build --workspace --bins`",
                binary.display()
            )
        })?;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let code = output.status.code();
    if !matches!(code, Some(0 | 1)) {
        bail!("{} exited with {:?}: {}", binary.display(), code, stderr.trim());
    }
    let report =
        Report::from_json(&String::from_utf8_lossy(&output.stdout)).with_context(|| {
            format!("{} printed no JSON report; stderr: {}", binary.display(), stderr.trim())
        })?;
    Ok(ToolRun { report, code, stderr })
}
