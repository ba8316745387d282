//! Small pieces every tool's command line needs: printing the report and
//! writing its JSON file, the loopback test and URL hosts behind safety
//! allow-lists, and URLs with their passwords masked for messages.

use std::fmt;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use crate::{ExitCode, OutputFormat, RenderOptions, Report};

/// The JSON report file could not be written.
#[derive(Debug)]
pub struct EmitError {
    /// The file.
    pub path: PathBuf,
    /// The I/O error.
    pub source: std::io::Error,
}

impl fmt::Display for EmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot write {}: {}", self.path.display(), self.source)
    }
}

impl std::error::Error for EmitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl Report {
    /// What a tool's `main` does with its report: writes the JSON report to
    /// `json_file` (`--report FILE`) if given, prints the report on stdout in
    /// `format` (colours only on a terminal) and returns the exit code.
    pub fn emit(
        &self,
        format: OutputFormat,
        json_file: Option<&Path>,
    ) -> Result<ExitCode, EmitError> {
        if let Some(path) = json_file {
            std::fs::write(path, self.to_json_pretty())
                .map_err(|source| EmitError { path: path.to_owned(), source })?;
        }
        print!(
            "{}",
            self.render(format, &RenderOptions { color: std::io::stdout().is_terminal() })
        );
        Ok(self.exit_code())
    }
}

/// Logs to stderr, as JSON when `format` is `json`, filtered by `RUST_LOG`
/// or else by `default_filter` (e.g. `warn`). Call once, first thing in `main`.
#[cfg(feature = "logs")]
pub fn init_logs(format: &str, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Whether `host` (a name or an IP address, without port or brackets) is this
/// machine: `localhost` or a loopback address. Tools that change a target act
/// on such hosts without an explicit allow-list entry.
pub fn is_loopback_host(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// One host of a database URL: the bare host (no port, no brackets) and the
/// entry as written (`db:5432`, `[::1]:5432`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlHost {
    /// `db`, `127.0.0.1`, `::1`.
    pub host: String,
    /// The authority entry it came from, port included.
    pub entry: String,
}

/// The hosts of a `postgres://` or `mongodb://` URL (several for a
/// multi-host or replica-set URL), never its credentials. Empty for a URL
/// without a host (a Unix socket: this machine).
pub fn url_hosts(url: &str) -> Vec<UrlHost> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|entry| {
            let host = match entry.strip_prefix('[') {
                Some(v6) => v6.split(']').next().unwrap_or(v6),
                None => entry.split(':').next().unwrap_or(entry),
            };
            UrlHost { host: host.to_owned(), entry: entry.to_owned() }
        })
        .collect()
}

/// The hosts of `hosts` a tool that changes a target must refuse: neither
/// this machine (`localhost`, a loopback address) nor on the allow-list.
/// An allow-list entry names a host (`db.prod`) or one server
/// (`db.prod:5432`, as the URL writes it); names compare case-insensitively.
/// The one allow-list rule of every tool (backup-agent, pg-failover-probe,
/// reorg-sim).
pub fn outside_allow_list(
    hosts: impl IntoIterator<Item = UrlHost>,
    allowed: &[String],
) -> Vec<UrlHost> {
    hosts
        .into_iter()
        .filter(|h| {
            !is_loopback_host(&h.host)
                && !allowed
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(&h.host) || a.eq_ignore_ascii_case(&h.entry))
        })
        .collect()
}

/// The message for hosts [`outside_allow_list`] refused: what was refused,
/// why, and the flags that would allow it (`flag` is e.g. `--allow-target`).
pub fn allow_list_refusal(action: &str, refused: &[UrlHost], flag: &str) -> String {
    let entries: Vec<&str> = refused.iter().map(|h| h.entry.as_str()).collect();
    let hosts: Vec<&str> = refused.iter().map(|h| h.host.as_str()).collect();
    format!(
        "refusing to {action} {}: not this machine and not in {flag}; add {flag} {} if you mean \
         it, or try --dry-run first",
        entries.join(", "),
        hosts.join(&format!(" {flag} "))
    )
}

/// `url` with any password replaced by `***`: `postgres://u:***@h:5432/db`.
/// Only the authority is looked at, so an `@` in the path or query stays.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked =
                if userinfo.contains(':') { format!("{user}:***") } else { user.to_owned() };
            format!("{}{masked}{}", &url[..scheme_end], &rest[at..])
        }
        None => url.to_owned(),
    }
}

/// The key path of a YAML parse error at `line`:`col` (1-based, as
/// serde-saphyr reports them), e.g. `scenarios.transactions.weight`, found
/// from the file's indentation, so a config error can name the key. For a
/// missing or unknown field the message already names it.
pub fn yaml_key_path(text: &str, line: u64, col: u64, message: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let index = usize::try_from(line).ok()?.checked_sub(1)?;
    // (column of the key, the key) of a `key: value` or `- key: value` line.
    let key_of = |l: &str| -> Option<(usize, String)> {
        let trimmed = l.trim_start();
        let mut column = l.len() - trimmed.len();
        let rest = match trimmed.strip_prefix("- ") {
            Some(rest) => {
                column += 2;
                rest
            }
            None => trimmed,
        };
        let (key, _) = rest.split_once(':')?;
        let key = key.trim().trim_matches('"');
        let ok = !key.is_empty() && key.chars().all(|c| c.is_alphanumeric() || "_-. ".contains(c));
        ok.then(|| (column, key.to_owned()))
    };
    let (mut indent, leaf) = match lines.get(index).and_then(|l| key_of(l)) {
        Some((column, key)) if !message.contains("missing field") => (column, Some(key)),
        // The error points at a mapping: its keys sit at the error's column.
        _ => (usize::try_from(col).unwrap_or(1).saturating_sub(1), None),
    };
    let mut path = Vec::new();
    for l in lines.get(..index)?.iter().rev() {
        if indent == 0 {
            break;
        }
        if let Some((column, key)) = key_of(l)
            && column < indent
        {
            path.push(key);
            indent = column;
        }
    }
    path.reverse();
    path.extend(leaf);
    (!path.is_empty()).then(|| path.join("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_allow_list_rule_loopback_host_or_server_case_insensitive() {
        let refused = |url: &str, allowed: &[&str]| -> Vec<String> {
            let allowed: Vec<String> = allowed.iter().map(|a| (*a).to_owned()).collect();
            outside_allow_list(url_hosts(url), &allowed).into_iter().map(|h| h.entry).collect()
        };
        assert!(refused("postgres://u:p@localhost/db", &[]).is_empty());
        assert!(refused("postgres://u:p@[::1]:5432/db", &[]).is_empty());
        assert!(
            refused("postgres:///db?host=/run/postgresql", &[]).is_empty(),
            "a socket is local"
        );
        assert_eq!(refused("postgres://u:p@db.prod:5432/db", &[]), ["db.prod:5432"]);
        assert!(refused("postgres://u:p@DB.prod:5432/db", &["db.PROD"]).is_empty());
        assert!(refused("postgres://db.prod:5432/db", &["db.prod:5432"]).is_empty());
        assert_eq!(refused("postgres://db.prod:5433/db", &["db.prod:5432"]), ["db.prod:5433"]);
        assert_eq!(refused("mongodb://localhost,m2:27017/", &[]), ["m2:27017"]);
        let refused = outside_allow_list(url_hosts("postgres://u:secret@db.prod/app"), &[]);
        let message = allow_list_refusal("restore a table on", &refused, "--allow-target");
        assert!(message.starts_with("refusing to restore a table on db.prod: not this machine"));
        assert!(message.contains("add --allow-target db.prod if"), "{message}");
        assert!(!message.contains("secret"));
    }

    #[test]
    fn hosts_come_out_of_every_url_shape() {
        let hosts =
            |url: &str| -> Vec<String> { url_hosts(url).into_iter().map(|h| h.host).collect() };
        assert_eq!(hosts("postgres://u:p@db.prod:5432/app?x=1"), ["db.prod"]);
        assert_eq!(hosts("postgres://127.0.0.1/app"), ["127.0.0.1"]);
        assert_eq!(hosts("mongodb://u:p@m1:27017,m2:27017/?rs=x"), ["m1", "m2"]);
        assert_eq!(hosts("postgres://[::1]:5432/app"), ["::1"]);
        assert_eq!(url_hosts("postgres://[::1]:5432/app")[0].entry, "[::1]:5432");
        assert!(url_hosts("postgres:///app?host=/run/postgresql").is_empty());
    }

    #[test]
    fn passwords_in_urls_are_masked() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/app"),
            "postgres://app:***@db:5432/app"
        );
        assert_eq!(redact_url("mongodb://u:p@h1,h2/db?x=1"), "mongodb://u:***@h1,h2/db?x=1");
        assert_eq!(redact_url("postgres://app@db/app"), "postgres://app@db/app");
        assert_eq!(redact_url("host=db user=x"), "host=db user=x");
    }

    #[test]
    fn yaml_errors_are_placed_under_their_parent_keys() {
        let text = "a:\n  b:\n    - c: 1\n      d: x\n";
        assert_eq!(yaml_key_path(text, 4, 10, "invalid type").as_deref(), Some("a.b.d"));
        assert_eq!(yaml_key_path(text, 9, 1, "x"), None);
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in ["localhost", "127.0.0.1", "127.1.2.3", "::1"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["db.prod.example", "10.0.0.1", "localhost.example", "", "[::1]"] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn emit_writes_the_json_report_and_returns_the_exit_code() {
        let dir = std::env::temp_dir().join(format!("shared-types-emit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("report.json");
        let mut report = Report::new("t", "1", "x");
        report.push_check(crate::Check::fail("c", "lost == 0", "3"));
        assert_eq!(
            report.emit(OutputFormat::Json, Some(&path)).unwrap(),
            ExitCode::CriterionNotMet
        );
        assert_eq!(Report::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap(), report);
        let missing = dir.join("no-such-dir").join("report.json");
        let err = report.emit(OutputFormat::Json, Some(&missing)).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!("cannot write {}", missing.display())),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
