//! Finding the programs that tests start: on `PATH`, and PostgreSQL's server
//! tools under `/usr/lib/postgresql/<newest>/bin` (Debian keeps them off `PATH`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Where Debian installs PostgreSQL's versioned server binaries.
pub const POSTGRES_LIB_DIR: &str = "/usr/lib/postgresql";

const INSTALL_HINT: &str = "run scripts/install-deps.sh";

/// The first executable file called `name` in the directories of `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// Like [`which`], failing with "`name` not found on PATH: run
/// scripts/install-deps.sh".
pub fn find(name: &str) -> Result<PathBuf> {
    which(name).ok_or_else(|| Error::BinaryNotFound {
        name: name.to_owned(),
        searched: "on PATH".to_owned(),
        hint: INSTALL_HINT.to_owned(),
    })
}

/// The `bin` directory of the newest PostgreSQL under `/usr/lib/postgresql`
/// that has `initdb`, e.g. `/usr/lib/postgresql/15/bin`.
pub fn postgres_bin_dir() -> Result<PathBuf> {
    let not_found = || Error::BinaryNotFound {
        name: "initdb".to_owned(),
        searched: format!("under {POSTGRES_LIB_DIR}/<version>/bin"),
        hint: format!("{INSTALL_HINT} (PostgreSQL server packages, e.g. postgresql-15)"),
    };
    let entries = std::fs::read_dir(POSTGRES_LIB_DIR).map_err(|_| not_found())?;
    entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let version = version_key(&entry.file_name().to_string_lossy())?;
            let bin = entry.path().join("bin");
            is_executable(&bin.join("initdb")).then_some((version, bin))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, bin)| bin)
        .ok_or_else(not_found)
}

/// Env var naming the only directory to take PostgreSQL tools from (no
/// fallback): points tests and xtask at another PostgreSQL version, or at an
/// empty directory to exercise the "binaries absent" paths.
pub const POSTGRES_BIN_DIR_ENV: &str = "POSTLAUNCH_PG_BIN_DIR";

/// A PostgreSQL tool (`initdb`, `pg_ctl`, `pg_basebackup`, `postgres`, ...)
/// from `$POSTLAUNCH_PG_BIN_DIR` if set, else from [`postgres_bin_dir`],
/// falling back to `PATH`.
pub fn postgres_tool(name: &str) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(POSTGRES_BIN_DIR_ENV) {
        let candidate = PathBuf::from(&dir).join(name);
        return if is_executable(&candidate) {
            Ok(candidate)
        } else {
            Err(Error::BinaryNotFound {
                name: name.to_owned(),
                searched: format!(
                    "in ${POSTGRES_BIN_DIR_ENV} = {}",
                    candidate.parent().unwrap_or(Path::new("")).display()
                ),
                hint: format!(
                    "unset {POSTGRES_BIN_DIR_ENV} or point it at a PostgreSQL bin directory"
                ),
            })
        };
    }
    if let Ok(dir) = postgres_bin_dir() {
        let candidate = dir.join(name);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    which(name).ok_or_else(|| Error::BinaryNotFound {
        name: name.to_owned(),
        searched: format!("under {POSTGRES_LIB_DIR}/<version>/bin or on PATH"),
        hint: format!("{INSTALL_HINT} (it checks the PostgreSQL server binaries)"),
    })
}

/// "15" -> [15], "9.6" -> [9, 6]; `None` for names that are not versions.
fn version_key(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

pub(crate) fn is_executable(path: &Path) -> bool {
    path.metadata()
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert!(version_key("15") > version_key("9.6"));
        assert_eq!(version_key("main"), None);
    }

    #[test]
    fn which_finds_sh() {
        assert!(which("sh").is_some());
        assert!(which("surely-not-a-program-postlaunch").is_none());
    }

    #[test]
    fn missing_binary_says_what_to_run() {
        let err = find("surely-not-a-program-postlaunch").unwrap_err();
        assert_eq!(
            err.to_string(),
            "surely-not-a-program-postlaunch not found on PATH: run scripts/install-deps.sh"
        );
    }

    #[test]
    fn postgres_tools_are_found() {
        for tool in ["initdb", "pg_ctl", "pg_basebackup", "postgres"] {
            assert!(postgres_tool(tool).is_ok(), "{tool}");
        }
    }
}
