//! A real Ethereum node: anvil (npm `@foundry-rs/anvil`, installed under
//! `crates/reorg-sim/tests/node` by `scripts/install-deps.sh`) on a free
//! loopback port, killed on drop.
//!
//! The platform package's binary
//! (`node_modules/@foundry-rs/anvil-linux-<arch>/bin/anvil`) is started
//! directly, not the `anvil` node wrapper: the wrapper ignores SIGTERM and
//! would outlive the test. [`ANVIL_ENV`] points at another binary.
//!
//! ```no_run
//! # async fn example() -> testkit::Result<()> {
//! let anvil = testkit::Anvil::start().await?;
//! println!("JSON-RPC on {}", anvil.url());
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tempfile::TempDir;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep};

use crate::error::tail_of_file;
use crate::ports::{free_port, http_client};
use crate::sandbox::workspace_root;
use crate::service_dir::ServiceDir;
use crate::{Error, Result, binaries};

/// Env var naming the anvil binary to start instead of the npm package's.
pub const ANVIL_ENV: &str = "POSTLAUNCH_ANVIL";

/// Where `scripts/install-deps.sh` runs `npm ci`, relative to the workspace root.
pub const NODE_DIR: &str = "crates/reorg-sim/tests/node";

const INSTALL_HINT: &str = "run scripts/install-deps.sh (npm ci in crates/reorg-sim/tests/node installs @foundry-rs/anvil)";

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The anvil binary: `$POSTLAUNCH_ANVIL` if set, else the one the npm
/// platform package for this CPU ships under [`NODE_DIR`].
pub fn binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os(ANVIL_ENV) {
        let bin = PathBuf::from(bin);
        return if binaries::is_executable(&bin) {
            Ok(bin)
        } else {
            Err(Error::BinaryNotFound {
                name: "anvil".to_owned(),
                searched: format!("at ${ANVIL_ENV} = {}", bin.display()),
                hint: format!("unset {ANVIL_ENV} or point it at an anvil binary"),
            })
        };
    }
    let arch = if std::env::consts::ARCH == "aarch64" { "arm64" } else { "amd64" };
    let bin = workspace_root()
        .join(NODE_DIR)
        .join(format!("node_modules/@foundry-rs/anvil-linux-{arch}/bin/anvil"));
    if binaries::is_executable(&bin) {
        Ok(bin)
    } else {
        Err(Error::BinaryNotFound {
            name: "anvil".to_owned(),
            searched: format!("at {}", bin.display()),
            hint: INSTALL_HINT.to_owned(),
        })
    }
}

/// A running anvil with its log in a temporary directory.
#[derive(Debug)]
pub struct Anvil {
    child: Child,
    port: u16,
    url: String,
    log_path: PathBuf,
    // Last field: removed after the process is killed.
    _dir: TempDir,
}

impl Anvil {
    /// Starts anvil (from [`binary`]) on 127.0.0.1 with its defaults (chain
    /// id 31337, ten funded accounts, automining) and waits until it answers
    /// `eth_blockNumber`.
    pub async fn start() -> Result<Anvil> {
        Anvil::start_with_args(&[]).await
    }

    /// Like [`start`](Self::start), with `extra_args` appended to anvil's
    /// command line (e.g. `--no-mining`, `--block-time 1`).
    pub async fn start_with_args(extra_args: &[&str]) -> Result<Anvil> {
        let binary = binary()?;
        let service = ServiceDir::create("anvil")?;
        let (stdout, stderr) = service.log_stdio()?;
        let port = free_port();
        // --silent: no banner or per-request lines; start-up errors ("Address
        // already in use") still reach stderr, hence the log.
        let child = Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--silent"])
            .args(extra_args)
            .current_dir(service.dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| {
                Error::io(format!("cannot start {} ({INSTALL_HINT})", binary.display()), err)
            })?;
        let url = format!("http://127.0.0.1:{port}/");
        let mut anvil = Anvil { child, port, url, log_path: service.log_path, _dir: service.dir };
        anvil.wait_until_ready().await?;
        Ok(anvil)
    }

    /// Polls `eth_blockNumber` until it returns a result, failing early with
    /// the log's tail if anvil exits.
    async fn wait_until_ready(&mut self) -> Result<()> {
        let http = http_client()?;
        let url = self.url.clone();
        let request = serde_json::json!({
            "jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []
        });
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let last =
                match http.post(&url).json(&request).timeout(Duration::from_secs(2)).send().await {
                    Ok(response) => match response.json::<serde_json::Value>().await {
                        Ok(body) if body.get("result").is_some() => return Ok(()),
                        Ok(body) => format!("answer without a result: {body}"),
                        Err(err) => format!("unreadable answer: {err}"),
                    },
                    Err(err) => err.to_string(),
                };
            let exited = self.child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() >= deadline {
                let hint = match exited {
                    Some(status) => format!("it exited at start ({status})"),
                    None => format!(
                        "it did not answer eth_blockNumber on {url} within {READY_TIMEOUT:?} (last attempt: {last})"
                    ),
                };
                return Err(Error::ProcessFailed {
                    what: format!("anvil on 127.0.0.1:{}", self.port),
                    exit_code: exited.and_then(|status| status.code()),
                    log_tail: tail_of_file(&self.log_path, 20),
                    log_path: None,
                    hint,
                });
            }
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:PORT/`, the HTTP JSON-RPC endpoint.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The port anvil listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// anvil's stdout and stderr (errors only: it runs with `--silent`).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        // kill_on_drop sends SIGKILL; reap it so no zombie outlives the test.
        let _ = self.child.start_kill();
        let _ = self.child.try_wait();
    }
}
