//! The same Chaos Toolkit experiment run by `chaos` (PyPI chaostoolkit
//! 1.19.0) and by chaos-runner against the same sandbox: the same verdict,
//! for one that holds and one that deviates.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod common;

use std::path::Path;
use std::process::Command;

use common::{check, report, run, table};
use shared_types::Verdict;

/// `chaos run` of `experiment`: its exit code and journal.
fn chaos_toolkit(dir: &Path, experiment: &Path) -> (i32, serde_json::Value) {
    let chaos = testkit::binaries::find("chaos")
        .expect("chaos (pip install chaostoolkit==1.19.0; scripts/install-deps.sh does)");
    let journal =
        dir.join(format!("{}.journal.json", experiment.file_stem().unwrap().to_string_lossy()));
    let out = Command::new(chaos)
        .current_dir(dir)
        .args([
            "--no-version-check",
            "--log-file",
            &dir.join("chaostoolkit.log").display().to_string(),
        ])
        .args([
            "run",
            "--journal-path",
            &journal.display().to_string(),
            &experiment.display().to_string(),
        ])
        .output()
        .unwrap();
    let journal: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&journal).unwrap_or_else(|e| {
            panic!(
                "no journal ({e}): {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        }))
        .unwrap();
    (out.status.code().unwrap_or(-1), journal)
}

async fn chaos_runner(dir: &Path, experiment: &Path) -> (i32, shared_types::Report) {
    let report_path =
        dir.join(format!("{}.report.json", experiment.file_stem().unwrap().to_string_lossy()));
    let (code, stdout, stderr) = run(&[
        "run",
        &experiment.display().to_string(),
        "--state-dir",
        &dir.join("state").display().to_string(),
        "--recovery-timeout",
        "5s",
        "--report",
        &report_path.display().to_string(),
    ])
    .await;
    assert!(report_path.exists(), "{stdout}\n{stderr}");
    (code, report(&report_path))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_toolkit_and_chaos_runner_agree_on_the_same_experiments() {
    let sandbox = testkit::Sandbox::start(&[
        "--collections".into(),
        "20".into(),
        "--nfts".into(),
        "100".into(),
    ])
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hypothesis = |timeout: u32| {
        serde_json::json!({
            "title": "the catalog answers",
            "probes": [{
                "type": "probe", "name": "collections", "tolerance": 200,
                "provider": {"type": "http", "url": "${base}/api/collections?page=1", "timeout": timeout}
            }]
        })
    };
    // 1. Holds: 100 ms of added latency stays within the probe's timeout.
    let holds = serde_json::json!({
        "version": "1.0.0",
        "title": "catalog tolerates 100 ms of latency",
        "description": "a fault the system absorbs",
        "configuration": {"base": sandbox.url()},
        "steady-state-hypothesis": hypothesis(3),
        "method": [{
            "type": "action", "name": "add-latency",
            "provider": {"type": "http", "url": "${base}/admin/faults", "method": "POST",
                         "headers": {"Content-Type": "application/json"}, "arguments": {"latency_ms": 100}},
            "pauses": {"after": 2}
        }],
        "rollbacks": [{
            "type": "action", "name": "clear-faults",
            "provider": {"type": "http", "url": "${base}/admin/faults", "method": "DELETE"}
        }]
    });
    // 2. Deviates: the sandbox is stopped (SIGSTOP) until the rollback, so the
    // hypothesis after the method fails in both tools.
    let deviates = serde_json::json!({
        "version": "1.0.0",
        "title": "catalog survives being frozen",
        "description": "a fault the system does not absorb until the rollback",
        "configuration": {"base": sandbox.url(), "pid": sandbox.pid().to_string()},
        "steady-state-hypothesis": hypothesis(1),
        "method": [{
            "type": "action", "name": "freeze",
            "provider": {"type": "process", "path": "kill", "arguments": "-STOP ${pid}"},
            "pauses": {"after": 1}
        }],
        "rollbacks": [{
            "type": "action", "name": "thaw",
            "provider": {"type": "process", "path": "kill", "arguments": "-CONT ${pid}"}
        }]
    });
    for (name, experiment, want) in [("holds", holds, 0), ("deviates", deviates, 1)] {
        let path = dir.path().join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_string_pretty(&experiment).unwrap()).unwrap();
        let (ctk_code, journal) = chaos_toolkit(dir.path(), &path);
        // Chaos Toolkit's default rollback strategy skips the rollbacks when
        // a hypothesis probe failed to run (the frozen sandbox times it out,
        // status "failed"): it leaves the sandbox stopped. Thaw it by hand;
        // chaos-runner runs the rollbacks whatever happened.
        if journal["status"] == "failed" {
            let _ = Command::new("kill").args(["-CONT", &sandbox.pid().to_string()]).status();
        }
        let (ours, ours_report) = chaos_runner(dir.path(), &path).await;
        assert_eq!(ctk_code, want, "chaos toolkit on {name}: {journal}");
        assert_eq!(
            ours,
            ctk_code,
            "{name}: chaos toolkit exited {ctk_code} (deviated {}), chaos-runner {ours}\n{}",
            journal["deviated"],
            table(&ours_report)
        );
        let id = ours_report.checks[0].id.split('/').next().unwrap().to_owned();
        let recovered = check(&ours_report, &format!("{id}/recovered")).verdict;
        assert_eq!(
            journal["deviated"] == true,
            recovered == Verdict::Fail,
            "{name}: {}",
            table(&ours_report)
        );
        // The rollback ran in both: the sandbox answers again.
        let answer = reqwest::get(format!("{}/healthz", sandbox.url())).await.unwrap();
        assert_eq!(answer.status(), 200);
    }
}
