//! Safety for the restores that write into a live database (`restore table`,
//! `restore mongo`): a target that is not on this machine must be named in
//! an allow-list, and existing data is replaced only when asked to.
//! `--dry-run` shows what would happen and changes nothing.

use shared_types::is_loopback_host;

use crate::error::{AgentError, Result};

/// The hosts of a `postgres://` or `mongodb://` URL (several for a
/// replica-set or multi-host URL), without ports or credentials.
pub fn url_hosts(url: &str) -> Vec<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| {
            if let Some(v6) = h.strip_prefix('[') {
                v6.split(']').next().unwrap_or(v6).to_owned()
            } else {
                h.rsplit_once(':').map_or(h, |(host, _)| host).to_owned()
            }
        })
        .collect()
}

/// Refuses a target with a host that is neither loopback nor in `allowed`.
pub fn check_target(url: &str, allowed: &[String], what: &str) -> Result<()> {
    let hosts = url_hosts(url);
    if hosts.is_empty() {
        return Ok(()); // a Unix socket: this machine
    }
    let outside: Vec<&String> = hosts
        .iter()
        .filter(|h| !is_loopback_host(h) && !allowed.iter().any(|a| a.eq_ignore_ascii_case(h)))
        .collect();
    if outside.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = outside.iter().map(|h| h.as_str()).collect();
    Err(AgentError::Usage(format!(
        "refusing to {what} on {}: not this machine and not in --allow-target (or BACKUP_AGENT_ALLOW_TARGET); add --allow-target {} if you mean it, or try --dry-run first",
        names.join(", "),
        names.join(" --allow-target ")
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
    fn hosts_come_out_of_every_url_shape() {
        assert_eq!(url_hosts("postgres://u:p@db.prod:5432/app?x=1"), ["db.prod"]);
        assert_eq!(url_hosts("postgres://127.0.0.1/app"), ["127.0.0.1"]);
        assert_eq!(url_hosts("mongodb://u:p@m1:27017,m2:27017/?rs=x"), ["m1", "m2"]);
        assert_eq!(url_hosts("postgres://[::1]:5432/app"), ["::1"]);
        assert!(url_hosts("postgres:///app?host=/run/postgresql").is_empty());
    }

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
