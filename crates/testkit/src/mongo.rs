//! A MongoDB wire-protocol server: `nx-27017` (PyPI), which keeps its data in
//! SQLite files. No real `mongod` can be installed on these machines; nx-27017
//! speaks the protocol the `mongodb` crate uses (OP_MSG, cursors, indexes) and
//! rejects Decimal128. Started on a free loopback port, killed on drop.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::error::tail_of_file;
use crate::ports::{free_port, wait_for_tcp};
use crate::{Error, Result, binaries};

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running nx-27017 with its SQLite files in a temporary directory.
#[derive(Debug)]
pub struct MongoServer {
    child: Child,
    port: u16,
    log_path: PathBuf,
    // Last field: removed after the process is killed.
    _dir: TempDir,
}

impl MongoServer {
    /// Starts `nx-27017` on 127.0.0.1 and waits until it accepts connections.
    pub async fn start() -> Result<MongoServer> {
        let binary = binaries::find("nx-27017").map_err(|_| Error::BinaryNotFound {
            name: "nx-27017".to_owned(),
            searched: "on PATH".to_owned(),
            hint: "pip install nx-27017 (scripts/install-deps.sh does)".to_owned(),
        })?;
        let dir = tempfile::Builder::new()
            .prefix("postlaunch-mongo-")
            .tempdir()
            .map_err(|err| Error::io("cannot create a temporary directory for nx-27017", err))?;
        let port = free_port();
        let log_path = dir.path().join("nx.log");
        let mut child = Command::new(&binary)
            .args(["--host", "127.0.0.1", "-p", &port.to_string(), "--data-dir"])
            .arg(dir.path())
            .arg("--log-file")
            .arg(&log_path)
            .arg("--pid-file")
            .arg(dir.path().join("nx.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| Error::io(format!("cannot start {}", binary.display()), err))?;
        if let Err(err) = wait_for_tcp(format!("127.0.0.1:{port}"), READY_TIMEOUT).await {
            let exit_code = child.try_wait().ok().flatten().and_then(|s| s.code());
            return Err(Error::ProcessFailed {
                what: format!("nx-27017 on 127.0.0.1:{port}"),
                exit_code,
                log_tail: tail_of_file(&log_path, 20),
                log_path: None,
                hint: format!("it did not listen ({err})"),
            });
        }
        Ok(MongoServer { child, port, log_path, _dir: dir })
    }

    /// `mongodb://127.0.0.1:PORT/?directConnection=true`.
    pub fn url(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its log file.
    pub fn log_path(&self) -> &std::path::Path {
        &self.log_path
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        // kill_on_drop sends SIGKILL; reap it so no zombie outlives the test.
        let _ = self.child.start_kill();
        let _ = self.child.try_wait();
    }
}
