//! The temporary directory a started service lives in, with the log file its
//! stdout and stderr go to.

use std::path::PathBuf;
use std::process::Stdio;

use tempfile::TempDir;

use crate::{Error, Result};

/// A service's temporary directory and its log.
#[derive(Debug)]
pub(crate) struct ServiceDir {
    /// Removed on drop: keep it until the process is gone.
    pub(crate) dir: TempDir,
    /// `<dir>/<name>.log`.
    pub(crate) log_path: PathBuf,
}

impl ServiceDir {
    /// `postlaunch-<name>-XXXX` with an empty `<name>.log` in it.
    pub(crate) fn create(name: &str) -> Result<ServiceDir> {
        let dir =
            tempfile::Builder::new().prefix(&format!("postlaunch-{name}-")).tempdir().map_err(
                |err| Error::io(format!("cannot create a temporary directory for {name}"), err),
            )?;
        let log_path = dir.path().join(format!("{name}.log"));
        std::fs::File::create(&log_path)
            .map_err(|err| Error::io(format!("cannot create {}", log_path.display()), err))?;
        Ok(ServiceDir { dir, log_path })
    }

    /// Handles for a child's stdout and stderr, both appending to the log.
    pub(crate) fn log_stdio(&self) -> Result<(Stdio, Stdio)> {
        Self::log_stdio_of(&self.log_path)
    }

    /// Handles for a child's stdout and stderr, both appending to `log_path`.
    pub(crate) fn log_stdio_of(log_path: &std::path::Path) -> Result<(Stdio, Stdio)> {
        let open = || {
            std::fs::OpenOptions::new()
                .append(true)
                .open(log_path)
                .map_err(|err| Error::io(format!("cannot open {}", log_path.display()), err))
        };
        Ok((Stdio::from(open()?), Stdio::from(open()?)))
    }
}
