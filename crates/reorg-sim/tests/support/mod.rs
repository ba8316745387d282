//! Test support: an `Anvil` handle (a candidate for testkit: it starts the
//! npm package's binary directly, since the node wrapper ignores SIGTERM).

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reorg_sim::node::NodeClient;

/// A running anvil on a free loopback port, killed on drop.
#[derive(Debug)]
pub struct Anvil {
    child: Child,
    url: String,
}

/// The anvil binary installed by scripts/install-deps.sh (npm `@foundry-rs/anvil`).
pub fn anvil_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("REORG_SIM_ANVIL") {
        return PathBuf::from(bin);
    }
    let bin = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/node/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    assert!(
        bin.is_file(),
        "{} is missing: run scripts/install-deps.sh (npm ci in crates/reorg-sim/tests/node)",
        bin.display()
    );
    bin
}

impl Anvil {
    /// Starts anvil and waits until it answers `eth_blockNumber`.
    pub async fn start() -> Anvil {
        let port = testkit::free_port();
        let child = Command::new(anvil_binary())
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--silent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let anvil = Anvil { child, url: format!("http://127.0.0.1:{port}/") };
        let client = NodeClient::new(&anvil.url);
        let deadline = Instant::now() + Duration::from_secs(20);
        while client.block_number().await.is_err() {
            assert!(Instant::now() < deadline, "anvil did not answer on {} within 20s", anvil.url);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anvil
    }

    /// HTTP JSON-RPC URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
