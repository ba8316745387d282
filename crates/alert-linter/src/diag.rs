//! Findings: what is wrong, where, how bad, and how to fix it.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::yaml::Pos;

/// How bad a finding is. `--fail-on` picks the lowest severity that fails a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; never fails a run.
    Info,
    /// Probably a silent bug or a policy gap.
    Warning,
    /// Broken: Prometheus would reject or mis-evaluate it.
    Error,
}

impl Severity {
    /// `error`, `warning`, `info`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A safe, mechanical edit of the source that resolves a finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fix {
    /// One line saying what the edit does.
    pub description: String,
    /// Line edits, applied together.
    pub edits: Vec<Edit>,
}

/// Replace lines `start..=end` (1-based) with `lines`; `end == start - 1`
/// inserts before `start` without removing anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edit {
    /// First line replaced (or the line inserted before).
    pub start: u32,
    /// Last line replaced; `start - 1` for a pure insertion.
    pub end: u32,
    /// The new lines.
    pub lines: Vec<String>,
}

/// One finding of one check at one place.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnostic {
    /// Stable check id, e.g. `schema/unknown-field`.
    pub check: &'static str,
    /// How bad it is.
    pub severity: Severity,
    /// The file it is in.
    pub file: PathBuf,
    /// Where in the file.
    pub pos: Pos,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// The rule it is about (alert or record name), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// An automatic fix, applied by `--fix`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<Fix>,
}

impl Diagnostic {
    /// A finding with no help, rule or fix yet.
    pub fn new(
        check: &'static str,
        severity: Severity,
        file: impl Into<PathBuf>,
        pos: Pos,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            check,
            severity,
            file: file.into(),
            pos,
            message: message.into(),
            help: None,
            rule: None,
            fix: None,
        }
    }

    /// Adds a hint.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Names the rule.
    pub fn rule(mut self, rule: Option<&str>) -> Self {
        self.rule = rule.map(str::to_owned);
        self
    }

    /// Attaches a fix.
    pub fn fix(mut self, fix: Fix) -> Self {
        self.fix = Some(fix);
        self
    }

    /// `file:line:col`.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file.display(), self.pos)
    }
}

/// Every check this linter runs: id, default severity, one-line criterion.
/// Each has a page `docs/alert-linter/<id>.md`.
pub const CHECKS: &[(&str, Severity, &str)] = &[
    ("schema/yaml-syntax", Severity::Error, "the file is valid YAML"),
    ("schema/unknown-field", Severity::Error, "no field outside the rules format"),
    (
        "schema/invalid-type",
        Severity::Error,
        "every field has the type and format Prometheus expects",
    ),
    ("schema/group-name", Severity::Error, "every group has a non-empty name, unique in its file"),
    ("schema/record-or-alert", Severity::Error, "every rule sets exactly one of record and alert"),
    (
        "schema/expr-invalid",
        Severity::Error,
        "every expr is set and parses as PromQL (Prometheus 2.42)",
    ),
    (
        "schema/recording-rule",
        Severity::Error,
        "recording rules have a valid metric name and no for/annotations",
    ),
    (
        "schema/label-name",
        Severity::Error,
        "label and annotation names are valid, label values are UTF-8",
    ),
    ("schema/template-invalid", Severity::Error, "label and annotation templates parse"),
    ("schema/duplicate-rule", Severity::Warning, "no two rules with the same name and labels"),
    (
        "promql/rate-on-non-counter",
        Severity::Warning,
        "rate, irate, increase and resets apply to counters",
    ),
    (
        "promql/range-too-short",
        Severity::Error,
        "range selectors span at least min_range_scrapes (4) scrape intervals",
    ),
    (
        "promql/no-comparison",
        Severity::Warning,
        "alert expressions filter with a comparison (or absent)",
    ),
    (
        "promql/for-missing",
        Severity::Warning,
        "paging alerts wait at least one evaluation interval (for)",
    ),
    (
        "promql/template-label-dropped",
        Severity::Error,
        "templates use only labels the expression keeps",
    ),
    (
        "promql/absent-labels",
        Severity::Error,
        "templates on absent() use only labels absent() returns",
    ),
    ("promql/histogram-quantile-no-le", Severity::Error, "histogram_quantile keeps the le label"),
    (
        "promql/fragile-regex",
        Severity::Warning,
        "regex matchers are real regexes, not literals or match-alls",
    ),
    ("promql/impossible-comparison", Severity::Error, "comparisons can be true for some input"),
    ("policy/severity", Severity::Error, "labels.severity is one of the allowed values"),
    ("policy/summary-missing", Severity::Warning, "annotations.summary is set"),
    ("policy/runbook-missing", Severity::Error, "annotations.runbook_url is set"),
    (
        "policy/runbook-not-found",
        Severity::Error,
        "a runbook link into the local docs names an existing file",
    ),
    ("policy/owner-missing", Severity::Warning, "a team or owner label is set"),
    (
        "detect/slow-detection",
        Severity::Error,
        "worst-case detection time is within the severity's target",
    ),
    (
        "detect/pages-on-noise",
        Severity::Warning,
        "paging alerts judge at least policy.min_paging_scrapes scrapes of evidence (for + range)",
    ),
    (
        "coverage/critical-paths",
        Severity::Error,
        "an alert meeting the plan's condition watches every critical path of the marketplace",
    ),
    (
        "coverage/alert-count",
        Severity::Error,
        "at least coverage.min_alerts alerts watch the critical paths",
    ),
    (
        "online/series-missing",
        Severity::Warning,
        "every selector matches series on the live server",
    ),
    (
        "online/query-expensive",
        Severity::Warning,
        "each rule touches at most the configured number of samples",
    ),
    ("backtest/fired", Severity::Warning, "no alert fired over the backtest range"),
    (
        "backtest/flapping",
        Severity::Warning,
        "no alert flaps (fires repeatedly) over the backtest range",
    ),
];

/// The default severity of a check id.
pub fn default_severity(check: &str) -> Severity {
    CHECKS.iter().find(|(id, _, _)| *id == check).map_or(Severity::Error, |(_, s, _)| *s)
}

/// The one-line criterion of a check id.
pub fn criterion(check: &str) -> &'static str {
    CHECKS.iter().find(|(id, _, _)| *id == check).map_or("", |(_, _, c)| c)
}
