//! A PostgreSQL 15 server of its own on a free loopback port, with settings
//! the machine's shared server does not have (e.g. `shared_preload_libraries
//! = 'pg_stat_statements'`, which needs a restart there). Trust auth on
//! 127.0.0.1, run as the postgres user, removed when dropped.

use std::path::PathBuf;
use std::process::Stdio;

use tempfile::TempDir;

use crate::error::tail_of_file;
use crate::pg_tls::{TRUST_HBA, init_cluster};
use crate::ports::free_port;
use crate::postgres::{POSTGRES_USER, postgres_user_command};
use crate::{Error, Result, binaries, unix_user};

/// A scratch PostgreSQL server. Dropping it stops the server (`-m immediate`)
/// and removes its directory.
#[derive(Debug)]
pub struct ScratchPostgres {
    dir: TempDir,
    port: u16,
    pg_ctl: PathBuf,
}

impl ScratchPostgres {
    /// Initialises and starts a server whose postgresql.conf ends with
    /// `settings` (`name = value` lines).
    pub async fn start(settings: &[(&str, &str)]) -> Result<ScratchPostgres> {
        let dir =
            tempfile::Builder::new().prefix("postlaunch-pgscratch-").tempdir().map_err(|err| {
                Error::io("cannot create a temporary directory for ScratchPostgres", err)
            })?;
        let pg_ctl = binaries::postgres_tool("pg_ctl")?;
        let initdb = binaries::postgres_tool("initdb")?;
        let path = dir.path().to_owned();
        let port = free_port();
        let conf: String = settings.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        tokio::task::spawn_blocking(move || -> Result<()> {
            if unix_user::is_root() {
                unix_user::chown_to(&path, POSTGRES_USER)?;
            }
            init_cluster(&initdb, &path, port, &conf, TRUST_HBA)
        })
        .await
        .map_err(|err| {
            Error::io("the ScratchPostgres set-up task failed", std::io::Error::other(err))
        })??;
        let server = ScratchPostgres { dir, port, pg_ctl };
        server.pg_ctl_run(&["-w", "-t", "30", "-l"], true)?;
        Ok(server)
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/{database}`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The server log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn pg_ctl_run(&self, args: &[&str], start: bool) -> Result<()> {
        let mut cmd = postgres_user_command(&self.pg_ctl);
        cmd.arg("-D").arg(self.dir.path().join("data")).args(args);
        if start {
            cmd.arg(self.log_path()).arg("start");
        }
        cmd.current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let status = cmd.status().map_err(|err| Error::io("cannot run pg_ctl", err))?;
        if !status.success() && start {
            return Err(Error::ProcessFailed {
                what: format!("pg_ctl start of a scratch server on 127.0.0.1:{}", self.port),
                exit_code: status.code(),
                log_tail: tail_of_file(&self.log_path(), 30),
                log_path: Some(self.log_path()),
                hint: "check the settings passed to ScratchPostgres::start".to_owned(),
            });
        }
        Ok(())
    }
}

impl Drop for ScratchPostgres {
    fn drop(&mut self) {
        if self.dir.path().join("data/postmaster.pid").exists() {
            let _ = self.pg_ctl_run(&["-m", "immediate", "-w", "-t", "30", "stop"], false);
        }
    }
}
