//! Who we run as, and the ids of the `postgres` user, read from `/proc` and
//! `/etc/passwd` (the workspace forbids `unsafe`, so no libc calls).

use std::path::Path;

use crate::{Error, Result};

/// The effective uid of this process, from `/proc/self/status`.
pub(crate) fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("Uid:"))?;
    // "Uid:\treal\teffective\tsaved\tfs"
    line.split_whitespace().nth(2)?.parse().ok()
}

/// True when running as root, where PostgreSQL's server tools refuse to run
/// and must be started as the `postgres` user.
pub fn is_root() -> bool {
    effective_uid() == Some(0)
}

/// (uid, gid) of `user`, from `/etc/passwd`.
pub(crate) fn user_ids(user: &str) -> Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd")
        .map_err(|err| Error::io("cannot read /etc/passwd", err))?;
    passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            if fields.next()? != user {
                return None;
            }
            let _password = fields.next()?;
            let uid = fields.next()?.parse().ok()?;
            let gid = fields.next()?.parse().ok()?;
            Some((uid, gid))
        })
        .ok_or_else(|| Error::Unexpected {
            what: format!("looking up user `{user}` in /etc/passwd"),
            detail: format!(
                "no such user: install the PostgreSQL server package (it creates `{user}`)"
            ),
        })
}

/// Gives `path` to `user` (only meaningful, and only done, as root).
pub(crate) fn chown_to(path: &Path, user: &str) -> Result<()> {
    let (uid, gid) = user_ids(user)?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|err| Error::io(format!("cannot chown {} to {user}", path.display()), err))
}
