//! The report every tool produces: checks with verdicts, and measurements.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::time::Timestamp;
use crate::verdict::{ExitCode, Verdict, VerdictCounts};

/// The version of the report format, written to [`Report::schema_version`].
/// It changes only when a field changes meaning or is removed.
pub const SCHEMA_VERSION: &str = "2";

/// The result of one tool run: which criteria were checked against which
/// target, with what outcome, and what was measured along the way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Report {
    /// Version of the report format; "2" for this schema (2 added the
    /// `not_evaluated` verdict and made a report that evaluated nothing exit 3).
    pub schema_version: String,
    /// Name of the tool that produced the report, e.g. "load-tester".
    pub tool: String,
    /// Version of that tool.
    pub version: String,
    /// What was tested (a URL, host or database), with secrets already redacted.
    pub target: String,
    /// When the run started.
    pub started_at: Timestamp,
    /// When the run finished; null if it was cut short before finishing.
    pub finished_at: Option<Timestamp>,
    /// The criteria evaluated, in the order they were checked.
    pub checks: Vec<Check>,
    /// Named values measured during the run, with units.
    pub measurements: Vec<Measurement>,
    /// Tool-specific data (full statistics, time series) under stable keys.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, serde_json::Value>,
}

impl Report {
    /// An empty report for `tool` at `version` against `target`, started now.
    /// `target` must already have passwords and tokens redacted.
    pub fn new(
        tool: impl Into<String>,
        version: impl Into<String>,
        target: impl Into<String>,
    ) -> Self {
        Report {
            schema_version: SCHEMA_VERSION.to_owned(),
            tool: tool.into(),
            version: version.into(),
            target: target.into(),
            started_at: Timestamp::now(),
            finished_at: None,
            checks: Vec::new(),
            measurements: Vec::new(),
            data: BTreeMap::new(),
        }
    }

    /// Appends a check.
    pub fn push_check(&mut self, check: Check) -> &mut Self {
        self.checks.push(check);
        self
    }

    /// Appends a measurement.
    pub fn push_measurement(&mut self, m: Measurement) -> &mut Self {
        self.measurements.push(m);
        self
    }

    /// Marks the run as finished now.
    pub fn finish(&mut self) {
        self.finished_at = Some(Timestamp::now());
    }

    /// The overall verdict: any `Fail` makes it `Fail`; otherwise any `Error`
    /// makes it `Error`, then any `NotEvaluated`; if every check was skipped,
    /// or there are no checks, it is `Skipped` (nothing was evaluated);
    /// otherwise `Pass`.
    pub fn verdict(&self) -> Verdict {
        self.counts().verdict()
    }

    /// The exit code for this report, always derived from its checks: `Pass`
    /// exits 0, `Fail` exits 1 (criterion not met); `Error`, `NotEvaluated`
    /// and a report that evaluated nothing (no checks, or all skipped) exit 3.
    pub fn exit_code(&self) -> ExitCode {
        self.verdict().exit_code()
    }

    /// How many checks ended with each verdict.
    pub fn counts(&self) -> VerdictCounts {
        VerdictCounts::from_verdicts(self.checks.iter().map(|c| c.verdict))
    }

    /// Waives the named checks: each not-evaluated (or errored) check whose
    /// id is in `ids` becomes skipped, its detail saying it was waived and
    /// why it was not evaluated. Passes and failures are never changed.
    /// Returns the ids that named no check of this report, so a tool can
    /// warn about a misspelt waiver (which then waives nothing: safe).
    pub fn waive<S: AsRef<str>>(&mut self, ids: &[S]) -> Vec<String> {
        let mut unknown = Vec::new();
        for id in ids {
            let id = id.as_ref();
            let mut found = false;
            for check in self.checks.iter_mut().filter(|c| c.id == id) {
                found = true;
                if matches!(check.verdict, Verdict::NotEvaluated | Verdict::Error) {
                    let why = check.detail.take().unwrap_or_default();
                    check.verdict = Verdict::Skipped;
                    check.detail = Some(if why.is_empty() {
                        format!("waived by --skip-check {id}")
                    } else {
                        format!("waived by --skip-check {id}; not evaluated: {why}")
                    });
                }
            }
            if !found {
                unknown.push(id.to_owned());
            }
        }
        unknown
    }

    /// The report as indented JSON (no trailing newline).
    pub fn to_json_pretty(&self) -> String {
        match serde_json::to_string_pretty(self) {
            Ok(json) => json,
            // Unreachable in practice: every map key is a string and non-finite
            // numbers serialize as null. Still, never panic while reporting.
            Err(e) => {
                serde_json::json!({ "error": format!("cannot serialize report: {e}") }).to_string()
            }
        }
    }

    /// Reads a report written by [`Report::to_json_pretty`] or any JSON
    /// encoder. Unknown fields are ignored so that newer reports still load.
    pub fn from_json(s: &str) -> Result<Report, serde_json::Error> {
        serde_json::from_str(s)
    }
}

/// One criterion and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Check {
    /// Stable identifier of the check, e.g. "p95-latency"; unique within a report.
    pub id: String,
    /// The criterion as a person reads it, e.g. "p95 < 500ms".
    pub criterion: String,
    /// What was observed, e.g. "412 ms"; null if nothing could be observed.
    pub observed: Option<String>,
    /// The outcome.
    pub verdict: Verdict,
    /// Further explanation: why it failed, why it could not run, why it was skipped.
    pub detail: Option<String>,
}

impl Check {
    fn with_verdict(id: impl Into<String>, criterion: impl Into<String>, verdict: Verdict) -> Self {
        Check { id: id.into(), criterion: criterion.into(), observed: None, verdict, detail: None }
    }

    /// A met criterion.
    pub fn pass(
        id: impl Into<String>,
        criterion: impl Into<String>,
        observed: impl Into<String>,
    ) -> Check {
        Check {
            observed: Some(observed.into()),
            ..Check::with_verdict(id, criterion, Verdict::Pass)
        }
    }

    /// A criterion that was evaluated and not met.
    pub fn fail(
        id: impl Into<String>,
        criterion: impl Into<String>,
        observed: impl Into<String>,
    ) -> Check {
        Check {
            observed: Some(observed.into()),
            ..Check::with_verdict(id, criterion, Verdict::Fail)
        }
    }

    /// A criterion that could not be evaluated; `detail` says why.
    pub fn error(
        id: impl Into<String>,
        criterion: impl Into<String>,
        detail: impl Into<String>,
    ) -> Check {
        Check::with_verdict(id, criterion, Verdict::Error).with_detail(detail)
    }

    /// A criterion that applies but could not be judged for lack of
    /// evidence; `missing` says what is missing and how to supply it (which
    /// flag, which series). The run exits 3 unless the check is waived.
    pub fn not_evaluated(
        id: impl Into<String>,
        criterion: impl Into<String>,
        missing: impl Into<String>,
    ) -> Check {
        Check::with_verdict(id, criterion, Verdict::NotEvaluated).with_detail(missing)
    }

    /// A check that does not apply to this target; `reason` becomes the
    /// detail. Never use it for missing evidence: that is
    /// [`Check::not_evaluated`].
    pub fn skipped(
        id: impl Into<String>,
        criterion: impl Into<String>,
        reason: impl Into<String>,
    ) -> Check {
        Check::with_verdict(id, criterion, Verdict::Skipped).with_detail(reason)
    }

    /// Pass if `met`, otherwise fail.
    pub fn from_bool(
        id: impl Into<String>,
        criterion: impl Into<String>,
        observed: impl Into<String>,
        met: bool,
    ) -> Check {
        if met {
            Check::pass(id, criterion, observed)
        } else {
            Check::fail(id, criterion, observed)
        }
    }

    /// Sets (replaces) the detail.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Check {
        self.detail = Some(detail.into());
        self
    }

    /// Sets (replaces) what was observed.
    pub fn with_observed(mut self, observed: impl Into<String>) -> Check {
        self.observed = Some(observed.into());
        self
    }
}

/// A named value measured during a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Measurement {
    /// Stable name, e.g. "latency_p95" or "requests_total".
    pub name: String,
    /// The value; null in JSON stands for a value that is not a finite number.
    #[serde(deserialize_with = "number_or_null")]
    #[cfg_attr(feature = "schema", schemars(with = "NumberOrNull"))]
    pub value: f64,
    /// Unit of the value, e.g. "ms", "s", "B", "req/s", "%"; empty for a plain count.
    pub unit: String,
}

impl Measurement {
    /// A measurement of `value` in `unit`.
    pub fn new(name: impl Into<String>, value: f64, unit: impl Into<String>) -> Self {
        Measurement { name: name.into(), value, unit: unit.into() }
    }
}

/// JSON has no NaN or infinity and serde_json writes them as `null`; read
/// `null` back as NaN so that such a report still loads.
fn number_or_null<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}

/// Schema of [`Measurement::value`]: required, but may be null.
#[cfg(feature = "schema")]
struct NumberOrNull;

#[cfg(feature = "schema")]
impl schemars::JsonSchema for NumberOrNull {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "NumberOrNull".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": ["number", "null"], "format": "double" })
    }
}

/// The JSON Schema of [`Report`], published as `docs/report-schema.json`.
#[cfg(feature = "schema")]
pub fn report_schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(Report);
    schema.insert("$id".to_owned(), "https://postlaunch.dev/schemas/report-v2.json".into());
    schema.insert("title".to_owned(), "postlaunch report".into());
    schema.insert(
        "description".to_owned(),
        "The result of one postlaunch tool run: checks with verdicts (pass, fail, skipped = \
         not applicable or waived by name, not_evaluated = applies but the evidence is \
         missing, error = could not run) and measurements. Exit code 0 = every criterion \
         that applies was evaluated and met, 1 = a criterion not met, 2 = usage error, \
         3 = the run could not be carried out, a criterion was not evaluated, or nothing \
         was evaluated."
            .into(),
    );
    sorted_keys(schema.to_value())
}

/// The same JSON with every object's keys in sorted order, whether or not some
/// crate in the build turned on serde_json's `preserve_order`: committed
/// schema files and their snapshots must not depend on which crates are built
/// together. Tools publishing their own config schemas use it too.
#[cfg(feature = "schema")]
pub fn sorted_keys(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<(String, serde_json::Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(
                entries.into_iter().map(|(k, v)| (k, sorted_keys(v))).collect(),
            )
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(sorted_keys).collect())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_fill_the_right_fields() {
        let c = Check::error("db", "replica lag < 1s", "connection refused");
        assert_eq!(
            (c.verdict, c.observed, c.detail.as_deref()),
            (Verdict::Error, None, Some("connection refused"))
        );
        let c = Check::from_bool("x", "lost == 0", "0", true).with_detail("ok");
        assert_eq!(
            (c.verdict, c.observed.as_deref(), c.detail.as_deref()),
            (Verdict::Pass, Some("0"), Some("ok"))
        );
        assert_eq!(Check::from_bool("x", "c", "1", false).verdict, Verdict::Fail);
    }

    #[test]
    fn unmeasured_criteria_and_empty_reports_never_pass() {
        let mut report = Report::new("t", "1", "x");
        assert_eq!(report.exit_code(), ExitCode::CouldNotRun, "an empty report evaluated nothing");
        report.push_check(Check::skipped("mongo", "restore", "no MongoDB configured"));
        assert_eq!(report.exit_code(), ExitCode::CouldNotRun, "all skipped evaluated nothing");
        report.push_check(Check::pass("p95", "p95 < 500ms", "12 ms"));
        assert_eq!(report.exit_code(), ExitCode::Success);
        report.push_check(Check::not_evaluated("hit", "hit_rate > 80%", "no --metrics-url"));
        assert_eq!(report.exit_code(), ExitCode::CouldNotRun);
        assert_eq!(report.waive(&["hit", "typo"]), ["typo"]);
        assert_eq!(report.exit_code(), ExitCode::Success);
        let waived = &report.checks[2];
        assert_eq!(waived.verdict, Verdict::Skipped);
        assert!(waived.detail.as_deref().is_some_and(|d| d.contains("no --metrics-url")));
        // A failure is never waived away.
        report.push_check(Check::fail("err", "error_rate < 0.1%", "3%"));
        report.waive(&["err"]);
        assert_eq!(report.exit_code(), ExitCode::CriterionNotMet);
    }

    #[test]
    fn not_evaluated_serializes_with_an_underscore() {
        let json = serde_json::to_string(&Verdict::NotEvaluated).unwrap_or_default();
        assert_eq!(json, "\"not_evaluated\"");
    }

    #[test]
    fn null_measurement_reads_back_as_nan() {
        let mut report = Report::new("t", "1", "x");
        report.push_measurement(Measurement::new("nan", f64::NAN, "s"));
        let back = Report::from_json(&report.to_json_pretty()).map(|r| r.measurements[0].value);
        assert!(back.is_ok_and(f64::is_nan));
    }
}
