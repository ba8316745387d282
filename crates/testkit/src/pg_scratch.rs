//! A PostgreSQL 15 server of its own on a free loopback port, with settings
//! the machine's shared server does not have (e.g. `shared_preload_libraries
//! = 'pg_stat_statements'`, which needs a restart there). Trust auth on
//! 127.0.0.1, run as the postgres user, removed when dropped.

use std::path::PathBuf;

use tempfile::TempDir;

use crate::pg_tls::{TRUST_HBA, init_cluster, pg_ctl, stop_if_running};
use crate::ports::free_port;
use crate::postgres::POSTGRES_USER;
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
        server.start_server()?;
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

    fn start_server(&self) -> Result<()> {
        let what = format!("pg_ctl start of a scratch server on 127.0.0.1:{}", self.port);
        let hint = "check the settings passed to ScratchPostgres::start";
        pg_ctl(&self.pg_ctl, self.dir.path(), &["-w", "-t", "30", "-l"], Some((&what, hint)))
    }
}

impl Drop for ScratchPostgres {
    fn drop(&mut self) {
        stop_if_running(&self.pg_ctl, self.dir.path());
    }
}
