//! The simulator and the reference indexer against software we did not
//! write: ethers.js (npm) as a client checking hashes, parent links, logs and
//! WebSocket subscriptions. Needs `node` and `crates/reorg-sim/tests/node`'s
//! packages (scripts/install-deps.sh installs them).

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

use std::path::{Path, PathBuf};

use reorg_sim::chain::ChainConfig;
use reorg_sim::simulator::ChainSimulator;
use reorg_sim::workload::EventCounts;

fn node_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        dir.join("node_modules/ethers").is_dir(),
        "{}/node_modules is missing: run scripts/install-deps.sh (npm ci there)",
        dir.display()
    );
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn ethers_js_verifies_hashes_parent_links_logs_and_subscriptions() {
    let sim = ChainSimulator::new(ChainConfig::default());
    sim.extend(1100, &EventCounts { mints: 40, transfers: 25, burns: 5, batches: 6, uris: 4 });
    let server = sim.serve(([127, 0, 0, 1], 0).into()).await.unwrap();
    let output = tokio::process::Command::new("node")
        .arg(node_dir().join("simulator-client.mjs"))
        .args([server.http_url(), server.ws_url()])
        .output()
        .await
        .expect("node is on PATH");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "ethers.js client failed: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["hashed"], 31, "{summary}");
    assert!(
        summary["decoded"].as_u64().unwrap() > 0 && summary["logs"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert_eq!(sim.head_number(), 1103, "the client mined through reorgsim_mine");
}
