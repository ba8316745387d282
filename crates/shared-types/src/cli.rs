//! Small pieces every tool's command line needs: printing the report and
//! writing its JSON file, and the loopback test behind safety allow-lists.

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

/// Whether `host` (a name or an IP address, without port or brackets) is this
/// machine: `localhost` or a loopback address. Tools that change a target act
/// on such hosts without an explicit allow-list entry.
pub fn is_loopback_host(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

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
