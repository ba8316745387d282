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
    /// The check does not apply to this target (no MongoDB configured), or the
    /// user waived it by name (`--skip-check ID`). Never a pass: a report whose
    /// checks are all skipped has evaluated nothing and exits 3.
    Skipped,
    /// The criterion applies but the evidence to judge it is missing (no
    /// metrics endpoint, the series is absent, the query failed). Not a pass:
    /// the run exits 3 unless the check is waived by name; `detail` says what
    /// evidence is missing and how to supply it.
    #[serde(rename = "not_evaluated")]
    NotEvaluated,
    /// The run could not be carried out for this check (target unreachable,
    /// dependency missing, tool bug).
    Error,
}

impl Verdict {
    /// The short upper-case label used in tables: `PASS`, `FAIL`, `SKIP`,
    /// `UNMEASURED`, `ERROR`.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Skipped => "SKIP",
            Verdict::NotEvaluated => "UNMEASURED",
            Verdict::Error => "ERROR",
        }
    }

    /// The process exit code a run with this overall verdict ends with. Only
    /// `Pass` exits 0: an overall `Skipped` (nothing evaluated) or
    /// `NotEvaluated` exits 3 like `Error`.
    pub fn exit_code(self) -> ExitCode {
        match self {
            Verdict::Pass => ExitCode::Success,
            Verdict::Fail => ExitCode::CriterionNotMet,
            Verdict::Error | Verdict::NotEvaluated | Verdict::Skipped => ExitCode::CouldNotRun,
        }
    }

    /// Combines check verdicts into an overall one: any `Fail` wins, then any
    /// `Error`, then any `NotEvaluated`; if no check passed (all skipped, or
    /// there are none) the result is `Skipped`, which exits 3; otherwise `Pass`.
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
    /// Checks that applied but lacked the evidence to judge them.
    pub not_evaluated: usize,
    /// Checks that could not be run.
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
                Verdict::NotEvaluated => &mut counts.not_evaluated,
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
            .saturating_add(self.not_evaluated)
            .saturating_add(self.errors)
    }

    /// The overall verdict these counts stand for; see [`Verdict::aggregate`].
    pub fn verdict(&self) -> Verdict {
        if self.failed > 0 {
            Verdict::Fail
        } else if self.errors > 0 {
            Verdict::Error
        } else if self.not_evaluated > 0 {
            Verdict::NotEvaluated
        } else if self.passed == 0 {
            Verdict::Skipped
        } else {
            Verdict::Pass
        }
    }
}

impl fmt::Display for VerdictCounts {
    /// `3 passed, 1 failed, 0 skipped, 0 errors`, with `, 2 not evaluated`
    /// before the errors when any check lacked evidence.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} passed, {} failed, {} skipped", self.passed, self.failed, self.skipped)?;
        if self.not_evaluated > 0 {
            write!(f, ", {} not evaluated", self.not_evaluated)?;
        }
        write!(f, ", {} errors", self.errors)
    }
}

/// The exit status every postlaunch tool ends with. Scripts and CI rely on
/// these numbers; they never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum ExitCode {
    /// 0: every criterion that applies was evaluated and met.
    Success = 0,
    /// 1: the run completed and at least one criterion was not met.
    CriterionNotMet = 1,
    /// 2: the command line or configuration was invalid; nothing was run.
    Usage = 2,
    /// 3: the run could not be carried out (target unreachable, dependency
    /// missing), or a criterion that applies was not evaluated (evidence
    /// missing and not waived), or nothing at all was evaluated.
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

/// Why a tool's command ended without a report: the two exit codes a
/// report cannot carry. Every tool's error type is this one, or wraps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolError {
    /// Bad flags, files or configuration: nothing was run (exit 2).
    Usage(String),
    /// The run could not be carried out: a target unreachable, a program
    /// or file missing (exit 3).
    CouldNotRun(String),
}

impl ToolError {
    /// The contract's exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            ToolError::Usage(_) => ExitCode::Usage,
            ToolError::CouldNotRun(_) => ExitCode::CouldNotRun,
        }
    }
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ToolError::Usage(m) | ToolError::CouldNotRun(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ToolError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregate_prefers_fail_then_error_then_pass() {
        use Verdict::*;
        assert_eq!(Verdict::aggregate([]), Skipped);
        assert_eq!(Verdict::aggregate([Skipped, Skipped]), Skipped);
        assert_eq!(Verdict::aggregate([Skipped, Pass]), Pass);
        assert_eq!(Verdict::aggregate([Pass, NotEvaluated, Skipped]), NotEvaluated);
        assert_eq!(Verdict::aggregate([Pass, Error, NotEvaluated]), Error);
        assert_eq!(Verdict::aggregate([Error, Fail, Pass]), Fail);
    }

    #[test]
    fn exit_codes_are_the_documented_numbers() {
        let codes = [ExitCode::Success, ExitCode::CriterionNotMet, ExitCode::Usage];
        assert_eq!(codes.map(ExitCode::code), [0, 1, 2]);
        assert_eq!(ExitCode::CouldNotRun.code(), 3);
        assert_eq!(Verdict::Fail.exit_code(), ExitCode::CriterionNotMet);
        assert_eq!(Verdict::Error.exit_code(), ExitCode::CouldNotRun);
        assert_eq!(Verdict::Pass.exit_code(), ExitCode::Success);
        // Nothing evaluated, or evidence missing, is never a pass.
        assert_eq!(Verdict::Skipped.exit_code(), ExitCode::CouldNotRun);
        assert_eq!(Verdict::NotEvaluated.exit_code(), ExitCode::CouldNotRun);
        assert_eq!(format!("{:<6}|", Verdict::Skipped), "SKIP  |");
    }
}
