//! A throw-away PostgreSQL cluster on a free loopback port: initdb'ed empty
//! (logical restores) or built from a restored base backup (physical restores
//! and PITR). Stopped and removed on drop unless [`ScratchCluster::keep`] is called.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::tools::{hand_to_postgres, pg_tool, server_command, tail};
use crate::error::{AgentError, Result};

/// A scratch cluster.
#[derive(Debug)]
pub struct ScratchCluster {
    dir: TempDir,
    data_dir: PathBuf,
    log_path: PathBuf,
    port: u16,
    pg_ctl: PathBuf,
    keep: bool,
}

/// A free TCP port on 127.0.0.1 (free a moment ago).
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| AgentError::io("cannot bind 127.0.0.1:0 to find a free port", e))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| AgentError::io("local_addr", e))
}

impl ScratchCluster {
    /// A new, empty place for a cluster: a temporary directory given to the
    /// postgres user, and a free port. Nothing runs yet.
    pub fn prepare() -> Result<ScratchCluster> {
        let dir =
            tempfile::Builder::new().prefix("backup-agent-scratch-").tempdir().map_err(|e| {
                AgentError::io("cannot create a temporary directory for the scratch cluster", e)
            })?;
        hand_to_postgres(dir.path())?;
        Ok(ScratchCluster {
            data_dir: dir.path().join("data"),
            log_path: dir.path().join("server.log"),
            dir,
            port: free_port()?,
            pg_ctl: pg_tool("pg_ctl")?,
            keep: false,
        })
    }

    /// The data directory (created by [`initdb`](Self::initdb) or a restore).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The temporary directory holding data and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:<port>/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Leaves the cluster running and its files in place after drop.
    pub fn keep(&mut self) -> PathBuf {
        self.keep = true;
        self.dir.path().to_path_buf()
    }

    /// Creates an empty cluster (trust auth on loopback) with `extra_conf`
    /// appended to postgresql.conf.
    pub async fn initdb(&self, extra_conf: &str) -> Result<()> {
        let mut cmd = server_command(&pg_tool("initdb")?);
        cmd.current_dir(self.dir.path()).arg("-D").arg(&self.data_dir).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
            "--no-instructions",
        ]);
        let output = cmd.output().await.map_err(|e| AgentError::io("cannot run initdb", e))?;
        if !output.status.success() {
            return Err(AgentError::CouldNotRun(format!(
                "initdb -D {} failed: {}",
                self.data_dir.display(),
                tail(&String::from_utf8_lossy(&output.stderr), 10)
            )));
        }
        self.append_conf("postgresql.conf", extra_conf)
    }

    /// Appends settings to a configuration file of the data directory (kept
    /// owned by the postgres user).
    pub fn append_conf(&self, file: &str, text: &str) -> Result<()> {
        use std::io::Write;
        let path = self.data_dir.join(file);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| AgentError::io(format!("cannot open {}", path.display()), e))?;
        f.write_all(format!("\n{text}\n").as_bytes())
            .map_err(|e| AgentError::io(format!("cannot write {}", path.display()), e))?;
        hand_to_postgres(&path)
    }

    /// The settings that make a cluster private to this machine and this run:
    /// loopback only, our port and socket directory, no archiving of its own.
    /// Nothing else: a restored cluster keeps the source's `max_connections`
    /// and friends, which recovery refuses to run below.
    pub fn local_settings(&self) -> String {
        format!(
            "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\narchive_mode = off\n",
            self.port,
            self.dir.path().display()
        )
    }

    /// Starts the server; returns when it accepts connections (`pg_ctl -w`).
    pub async fn start(&self, timeout: Duration) -> Result<()> {
        let mut cmd = server_command(&self.pg_ctl);
        cmd.current_dir(self.dir.path())
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_path)
            .args(["-w", "-t", &timeout.as_secs().max(1).to_string(), "start"])
            .stdout(Stdio::null());
        let output =
            cmd.output().await.map_err(|e| AgentError::io("cannot run pg_ctl start", e))?;
        if output.status.success() {
            return Ok(());
        }
        Err(AgentError::CouldNotRun(format!(
            "the scratch cluster on 127.0.0.1:{} did not start: {}\n--- server log ({}) ---\n{}",
            self.port,
            tail(&String::from_utf8_lossy(&output.stderr), 5),
            self.log_path.display(),
            self.log_tail(20)
        )))
    }

    /// The last lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&std::fs::read_to_string(&self.log_path).unwrap_or_default(), lines)
    }

    /// Waits until the server accepts connections and is out of recovery
    /// (a restore has reached its target and promoted).
    pub async fn wait_until_promoted(&self, timeout: Duration) -> Result<tokio_postgres::Client> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("not tried");
        while Instant::now() < deadline {
            match super::connect(&self.url("postgres")).await {
                Ok(client) => match client.query_one("SELECT pg_is_in_recovery()", &[]).await {
                    Ok(row) => match super::column::<bool>(
                        &row,
                        0,
                        "SELECT pg_is_in_recovery()",
                        "pg_is_in_recovery",
                    ) {
                        Ok(false) => return Ok(client),
                        Ok(true) => last = "still in recovery".to_owned(),
                        Err(e) => last = e.to_string(),
                    },
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
            if !self.data_dir.join("postmaster.pid").exists() {
                return Err(AgentError::CouldNotRun(format!(
                    "the restored server stopped during recovery\n--- server log ---\n{}",
                    self.log_tail(20)
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(AgentError::CouldNotRun(format!(
            "the restored server was not promoted within {timeout:?} (last: {last})\n--- server log ---\n{}",
            self.log_tail(20)
        )))
    }

    /// Stops the server (`-m fast`).
    pub async fn stop(&self) -> Result<()> {
        let mut cmd = server_command(&self.pg_ctl);
        cmd.current_dir(self.dir.path())
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "fast", "-w", "-t", "60", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd.status().await.map_err(|e| AgentError::io("cannot run pg_ctl stop", e))?;
        Ok(())
    }

    /// Crashes the server (`-m immediate`), as a lost primary would.
    pub async fn crash(&self) -> Result<()> {
        let mut cmd = server_command(&self.pg_ctl);
        cmd.current_dir(self.dir.path())
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "immediate", "-w", "-t", "60", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd.status().await.map_err(|e| AgentError::io("cannot run pg_ctl stop", e))?;
        Ok(())
    }
}

impl Drop for ScratchCluster {
    fn drop(&mut self) {
        if self.keep {
            self.dir.disable_cleanup(true);
            return;
        }
        if self.data_dir.join("postmaster.pid").exists() {
            let cmd = server_command(&self.pg_ctl);
            let mut cmd = cmd.into_std();
            cmd.current_dir(self.dir.path())
                .arg("-D")
                .arg(&self.data_dir)
                .args(["-m", "immediate", "-w", "-t", "30", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let _ = cmd.status();
        }
    }
}
