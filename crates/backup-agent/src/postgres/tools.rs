//! Finding and running PostgreSQL's programs. Server programs (initdb,
//! pg_ctl, postgres) refuse to run as root: when the agent is root they run as
//! the `postgres` user through `runuser`, and the directories they use are
//! handed to that user.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use crate::error::{AgentError, Result};

/// Env var naming the directory to take PostgreSQL programs from.
pub const PG_BIN_DIR_ENV: &str = "BACKUP_AGENT_PG_BIN_DIR";
/// The OS user server programs run as when the agent runs as root.
pub const POSTGRES_USER: &str = "postgres";

fn is_executable(path: &Path) -> bool {
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `name` from `$BACKUP_AGENT_PG_BIN_DIR`, the newest `/usr/lib/postgresql/<v>/bin`, or `PATH`.
pub fn pg_tool(name: &str) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(PG_BIN_DIR_ENV) {
        let candidate = PathBuf::from(dir).join(name);
        return if is_executable(&candidate) {
            Ok(candidate)
        } else {
            Err(AgentError::CouldNotRun(format!(
                "{name} not found in ${PG_BIN_DIR_ENV} ({}): point it at a PostgreSQL bin directory",
                candidate.display()
            )))
        };
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let key: Option<Vec<u32>> =
                e.file_name().to_string_lossy().split('.').map(|p| p.parse().ok()).collect();
            Some((key?, e.path().join("bin").join(name)))
        })
        .filter(|(_, p)| is_executable(p))
        .collect();
    versions.sort();
    if let Some((_, path)) = versions.pop() {
        return Ok(path);
    }
    which(name).ok_or_else(|| {
        AgentError::CouldNotRun(format!(
            "{name} not found under /usr/lib/postgresql/<version>/bin or on PATH: install the PostgreSQL client/server packages (apt-get install postgresql) or set {PG_BIN_DIR_ENV}"
        ))
    })
}

/// The first executable `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| is_executable(p))
}

/// True when running as root (uid from `/proc/self/status`, no libc needed).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            line.split_whitespace().nth(2)?.parse::<u32>().ok()
        })
        .is_some_and(|uid| uid == 0)
}

/// (uid, gid) of the `postgres` user from `/etc/passwd`.
fn postgres_ids() -> Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd")
        .map_err(|e| AgentError::io("cannot read /etc/passwd", e))?;
    passwd
        .lines()
        .find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.first() == Some(&POSTGRES_USER)).then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
        })
        .ok_or_else(|| {
            AgentError::CouldNotRun(format!(
                "no `{POSTGRES_USER}` user in /etc/passwd: install the PostgreSQL server package, or run backup-agent as the database's OS user"
            ))
        })
}

/// Gives `path` to the postgres user when running as root (no-op otherwise).
pub fn hand_to_postgres(path: &Path) -> Result<()> {
    if !is_root() {
        return Ok(());
    }
    let (uid, gid) = postgres_ids()?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| {
        AgentError::io(format!("cannot chown {} to {POSTGRES_USER}", path.display()), e)
    })
}

/// A command for a server program: run as the postgres user when we are root.
pub fn server_command(program: &Path) -> Command {
    let mut cmd = if is_root() {
        let runuser = which("runuser").unwrap_or_else(|| PathBuf::from("/usr/sbin/runuser"));
        let mut cmd = Command::new(runuser);
        cmd.args(["-u", POSTGRES_USER, "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    };
    cmd.stdin(Stdio::null()).env_remove("PGDATA").env_remove("PGHOST").env_remove("PGPORT");
    cmd
}

/// A client program (pg_dump, pg_basebackup, pg_restore) connecting to `url`:
/// the password goes into `PGPASSWORD`, never onto the command line.
pub fn client_command(name: &str, url: &str) -> Result<(Command, String)> {
    let mut cmd = Command::new(pg_tool(name)?);
    let (url, password) = split_password(url);
    if let Some(password) = password {
        cmd.env("PGPASSWORD", password);
    }
    cmd.stdin(Stdio::null());
    Ok((cmd, url))
}

/// `postgres://u:p@h/db` -> (`postgres://u@h/db`, Some(p)).
pub fn split_password(url: &str) -> (String, Option<String>) {
    let Some(start) = url.find("://").map(|i| i + 3) else { return (url.to_owned(), None) };
    let rest = &url[start..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return (url.to_owned(), None) };
    let userinfo = &rest[..at];
    match userinfo.split_once(':') {
        Some((user, password)) => {
            (format!("{}{user}{}", &url[..start], &rest[at..]), Some(password.to_owned()))
        }
        None => (url.to_owned(), None),
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_leave_the_url() {
        assert_eq!(
            split_password("postgres://app:pw@db:5432/app"),
            ("postgres://app@db:5432/app".to_owned(), Some("pw".to_owned()))
        );
        assert_eq!(
            split_password("postgres://app@db/app"),
            ("postgres://app@db/app".to_owned(), None)
        );
    }
}
