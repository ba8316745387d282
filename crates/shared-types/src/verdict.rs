//! Verdicts and the exit codes they map to.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The outcome of one check, or of a whole report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The criterion was evaluated and met.
    Pass,
    /// The criterion was evaluated and not met.
    Fail,
    /// The check was deliberately not run (disabled, not applicable to this target).
    Skipped,
    /// The criterion could not be evaluated (target unreachable, bad response, tool bug).
    Error,
}

impl Verdict {
    /// The short upper-case label used in tables: `PASS`, `FAIL`, `SKIP`, `ERROR`.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Skipped => "SKIP",
            Verdict::Error => "ERROR",
        }
    }

    /// The process exit code a run with this overall verdict ends with.
    pub fn exit_code(self) -> ExitCode {
        match self {
            Verdict::Fail => ExitCode::CriterionNotMet,
            Verdict::Error => ExitCode::CouldNotRun,
            Verdict::Pass | Verdict::Skipped => ExitCode::Success,
        }
    }

    /// Combines check verdicts into an overall one: any `Fail` wins, then any
    /// `Error`; if every check was skipped (or there are none) the result is
    /// `Skipped`; otherwise `Pass`.
    pub fn aggregate(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
        VerdictCounts::from_verdicts(verdicts).verdict()
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.label())
    }
}

/// How many checks ended with each verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct VerdictCounts {
    /// Checks whose criterion was met.
    pub passed: usize,
    /// Checks whose criterion was not met.
    pub failed: usize,
    /// Checks that were not run.
    pub skipped: usize,
    /// Checks that could not be evaluated.
    pub errors: usize,
}

impl VerdictCounts {
    /// Counts a sequence of verdicts.
    pub fn from_verdicts(verdicts: impl IntoIterator<Item = Verdict>) -> Self {
        let mut counts = VerdictCounts::default();
        for verdict in verdicts {
            let slot = match verdict {
                Verdict::Pass => &mut counts.passed,
                Verdict::Fail => &mut counts.failed,
                Verdict::Skipped => &mut counts.skipped,
                Verdict::Error => &mut counts.errors,
            };
            *slot = slot.saturating_add(1);
        }
        counts
    }

    /// The number of checks counted.
    pub fn total(&self) -> usize {
        self.passed
            .saturating_add(self.failed)
            .saturating_add(self.skipped)
            .saturating_add(self.errors)
    }

    /// The overall verdict these counts stand for; see [`Verdict::aggregate`].
    pub fn verdict(&self) -> Verdict {
        if self.failed > 0 {
            Verdict::Fail
        } else if self.errors > 0 {
            Verdict::Error
        } else if self.passed == 0 {
            Verdict::Skipped
        } else {
            Verdict::Pass
        }
    }
}

impl fmt::Display for VerdictCounts {
    /// `3 passed, 1 failed, 0 skipped, 0 errors`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} passed, {} failed, {} skipped, {} errors",
            self.passed, self.failed, self.skipped, self.errors
        )
    }
}

/// The exit status every postlaunch tool ends with. Scripts and CI rely on
/// these numbers; they never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum ExitCode {
    /// 0: every criterion was met (or every check was skipped).
    Success = 0,
    /// 1: the run completed and at least one criterion was not met.
    CriterionNotMet = 1,
    /// 2: the command line or configuration was invalid; nothing was run.
    Usage = 2,
    /// 3: the run could not be carried out (target unreachable, dependency
    /// missing), so at least one criterion could not be evaluated.
    CouldNotRun = 3,
}

impl ExitCode {
    /// The numeric status, for `std::process::exit`.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// A few words on what the code means, e.g. `criterion not met`.
    pub fn meaning(self) -> &'static str {
        match self {
            ExitCode::Success => "all criteria met",
            ExitCode::CriterionNotMet => "criterion not met",
            ExitCode::Usage => "usage or configuration error",
            ExitCode::CouldNotRun => "could not run",
        }
    }
}

impl fmt::Display for ExitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregate_prefers_fail_then_error_then_pass() {
        use Verdict::*;
        assert_eq!(Verdict::aggregate([]), Skipped);
        assert_eq!(Verdict::aggregate([Skipped, Skipped]), Skipped);
        assert_eq!(Verdict::aggregate([Skipped, Pass]), Pass);
        assert_eq!(Verdict::aggregate([Pass, Error, Skipped]), Error);
        assert_eq!(Verdict::aggregate([Error, Fail, Pass]), Fail);
    }

    #[test]
    fn exit_codes_are_the_documented_numbers() {
        let codes = [ExitCode::Success, ExitCode::CriterionNotMet, ExitCode::Usage];
        assert_eq!(codes.map(ExitCode::code), [0, 1, 2]);
        assert_eq!(ExitCode::CouldNotRun.code(), 3);
        assert_eq!(Verdict::Fail.exit_code(), ExitCode::CriterionNotMet);
        assert_eq!(Verdict::Error.exit_code(), ExitCode::CouldNotRun);
        assert_eq!(Verdict::Skipped.exit_code(), ExitCode::Success);
        assert_eq!(format!("{:<6}|", Verdict::Skipped), "SKIP  |");
    }
}
