//! Safety for the restores that write into a live database (`restore table`,
//! `restore mongo`): a target that is not on this machine must be named in
//! an allow-list, and existing data is replaced only when asked to.
//! `--dry-run` shows what would happen and changes nothing.

use shared_types::{allow_list_refusal, outside_allow_list, url_hosts};

use crate::error::{AgentError, Result};

/// Refuses a target with a host that is neither loopback nor in `allowed`
/// (shared-types' one allow-list rule).
pub fn check_target(url: &str, allowed: &[String], what: &str) -> Result<()> {
    // A URL without a host (a Unix socket) is this machine.
    let refused = outside_allow_list(url_hosts(url), allowed);
    if refused.is_empty() {
        return Ok(());
    }
    Err(AgentError::Usage(format!(
        "{} (or BACKUP_AGENT_ALLOW_TARGET)",
        allow_list_refusal(&format!("{what} on"), &refused, "--allow-target")
    )))
}

/// What a restore would replace, found before anything is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    /// `schema.table` or `db.collection`.
    pub name: String,
    /// Rows or documents there now.
    pub rows: i64,
}

/// Fails when a restore would replace non-empty data and `replace` was not given.
pub fn check_replace(existing: &[Existing], replace: bool) -> Result<()> {
    let occupied: Vec<String> = existing
        .iter()
        .filter(|e| e.rows > 0)
        .map(|e| format!("{} ({} rows)", e.name, e.rows))
        .collect();
    if occupied.is_empty() || replace {
        return Ok(());
    }
    Err(AgentError::Usage(format!(
        "the target already holds {}: pass --replace to drop and restore it, or restore into another database",
        occupied.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_targets_need_the_allow_list() {
        assert!(check_target("postgres://127.0.0.1:5432/app", &[], "restore").is_ok());
        let err =
            check_target("postgres://u:secret@db.prod/app", &[], "restore a table").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("db.prod") && text.contains("--allow-target db.prod"), "{text}");
        assert!(!text.contains("secret"));
        assert!(check_target("postgres://db.prod/app", &["DB.prod".into()], "x").is_ok());
        assert!(check_target("mongodb://localhost,db2/", &[], "x").is_err());
    }

    #[test]
    fn replacing_data_needs_replace() {
        let full = [Existing { name: "public.t".into(), rows: 3 }];
        let empty = [Existing { name: "public.t".into(), rows: 0 }];
        assert!(check_replace(&full, false).unwrap_err().to_string().contains("public.t (3 rows)"));
        assert!(check_replace(&full, true).is_ok());
        assert!(check_replace(&empty, false).is_ok());
    }
}
