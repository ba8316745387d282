//! # alert-linter: are our Prometheus alert rules valid, complete, actionable and quiet?
//!
//! `alert-linter` reads Prometheus rule files (plain `groups:` files,
//! Kubernetes `PrometheusRule` manifests, multi-document streams,
//! directories and globs) and reports findings like a compiler, each with
//! a stable check id, `file:line:col`, a snippet, a hint and, where one is
//! safe, an automatic fix (`--fix`).
//!
//! ```
//! use alert_linter::{Config, LintOutcome, Severity};
//!
//! let rules = "groups:\n- name: api\n  rules:\n  - alert: ApiErrors\n    expr: rate(http_requests_total{status=~\"5..\"}[5m]) > 1\n    severity: critical\n";
//! let outcome = LintOutcome::lint_text("rules.yml", rules, &Config::default());
//! assert!(outcome.diagnostics.iter().any(|d| d.check == "schema/unknown-field"));
//! assert!(outcome.fails(Severity::Error));
//! let report = outcome.report(Severity::Error, "rules.yml");
//! assert_eq!(report.exit_code().code(), 1);
//! ```
//!
//! ## Checks (each documented in `docs/alert-linter/<id>.md`)
//!
//! - **schema**, at parity with `promtool check rules` 2.42: `schema/yaml-syntax`,
//!   `schema/unknown-field` (`severity:` on the rule instead of under `labels:`,
//!   with a fix), `schema/invalid-type`, `schema/group-name`,
//!   `schema/record-or-alert`, `schema/expr-invalid`, `schema/recording-rule`,
//!   `schema/label-name`, `schema/template-invalid`, `schema/duplicate-rule`.
//! - **promql** semantics: `promql/rate-on-non-counter`, `promql/range-too-short`,
//!   `promql/no-comparison`, `promql/for-missing`, `promql/template-label-dropped`,
//!   `promql/absent-labels`, `promql/histogram-quantile-no-le`,
//!   `promql/fragile-regex` (with a fix), `promql/impossible-comparison`.
//! - **policy** (marketplace defaults, see [`Config`]): `policy/severity`,
//!   `policy/summary-missing`, `policy/runbook-missing`, `policy/runbook-not-found`,
//!   `policy/owner-missing`.
//! - **detection time**: `detect/slow-detection`, worst case scrape + evaluation +
//!   `for` + half the range window + notification delay, against a target per
//!   severity (critical: 1 minute).
//! - **coverage**, once per run for the whole rule set: `coverage/critical-paths`
//!   (each of the marketplace's critical paths has an alert that fires whenever
//!   the plan's condition holds: error rate > 5 % for 5m, breaker open for 2m,
//!   pool > 90 % for 1m) and `coverage/alert-count` (20+ alerts on the critical
//!   paths). They fail the run only with `coverage.required: true`.
//! - **online** (`--prometheus URL`, see [`online`]): `online/series-missing`,
//!   `online/query-expensive`, the scrape interval read from the server.
//! - **backtest** ([`online::backtest`]): `backtest/fired`, `backtest/flapping`.
//!
//! Parsing never panics on outside input: bad YAML or PromQL is a finding.

pub mod config;
pub mod coverage;
pub mod diag;
pub mod model;
pub mod online;
pub mod output;
pub mod promql;
pub mod schema;
pub mod semantics;
pub mod synth;
pub mod template;
pub mod yaml;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub use config::Config;
pub use diag::{Diagnostic, Severity};
pub use model::RuleFile;
pub use synth::synthetic_rules;

use coverage::PathCoverage;
use semantics::DetectionTime;

/// A path that cannot be linted at all (a usage error, exit 2).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// Missing path or a glob without matches.
    #[error("{0}: no such file, directory or matching glob")]
    NotFound(String),
    /// Unreadable.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Bad glob.
    #[error("bad glob {0:?}: {1}")]
    Glob(String, String),
}

/// Everything one lint run found.
#[derive(Debug, Clone, Default)]
pub struct LintOutcome {
    /// The parsed files.
    pub files: Vec<RuleFile>,
    /// Findings, sorted by file and position.
    pub diagnostics: Vec<Diagnostic>,
    /// Coverage of each critical path (empty when coverage is off).
    pub coverage: Vec<PathCoverage>,
    /// Worst-case detection time of each alert.
    pub detection: Vec<DetectionTime>,
    /// Check ids that ran.
    pub ran: BTreeSet<&'static str>,
    /// Checks that could not run: (check id, why). They make the report exit 3.
    pub run_errors: Vec<(String, String)>,
    /// Extra report data (online and backtest results).
    pub extra_data: BTreeMap<String, serde_json::Value>,
    /// The configuration used.
    pub config: Config,
}

impl LintOutcome {
    /// Lints in-memory text as if read from `path` (no coverage).
    pub fn lint_text(path: impl AsRef<Path>, text: &str, config: &Config) -> LintOutcome {
        let mut outcome = LintOutcome { config: config.clone(), ..LintOutcome::default() };
        outcome.add_file(path.as_ref(), text);
        outcome.finish_offline(false);
        outcome
    }

    /// Lints files, directories (`*.yml`, `*.yaml`, recursively) and globs.
    pub fn lint_paths(
        paths: &[PathBuf],
        config: &Config,
        with_coverage: bool,
    ) -> Result<LintOutcome, InputError> {
        let mut outcome = LintOutcome { config: config.clone(), ..LintOutcome::default() };
        for file in expand_inputs(paths)? {
            let bytes = std::fs::read(&file)
                .map_err(|source| InputError::Read { path: file.display().to_string(), source })?;
            match String::from_utf8(bytes) {
                Ok(text) => outcome.add_file(&file, &text),
                Err(e) => {
                    let pos = yaml::Pos { line: 1, col: 1 };
                    let message =
                        format!("file is not valid UTF-8 (byte {})", e.utf8_error().valid_up_to());
                    outcome.diagnostics.push(Diagnostic::new(
                        "schema/yaml-syntax",
                        Severity::Error,
                        &file,
                        pos,
                        message,
                    ));
                    outcome.files.push(RuleFile { path: file.clone(), ..RuleFile::default() });
                }
            }
        }
        outcome.finish_offline(with_coverage && config.coverage.enabled);
        Ok(outcome)
    }

    fn add_file(&mut self, path: &Path, text: &str) {
        let mut found = Vec::new();
        let file = model::parse_file(path, text, &mut found);
        schema::check(&file, &mut found);
        let times = semantics::check(&file, &self.config, &mut found);
        self.detection.extend(times);
        self.diagnostics.extend(found);
        self.files.push(file);
    }

    fn finish_offline(&mut self, with_coverage: bool) {
        for (id, _, _) in diag::CHECKS {
            if id.starts_with("schema/")
                || id.starts_with("promql/")
                || id.starts_with("policy/")
                || id.starts_with("detect/")
            {
                self.ran.insert(id);
            }
        }
        if with_coverage {
            self.ran.insert("coverage/critical-paths");
            self.ran.insert("coverage/alert-count");
            self.coverage = coverage::evaluate(&self.files, &self.config.coverage);
            // Coverage is a property of the whole rule set: it is one check in
            // the report (output::report), never a diagnostic pinned to line 1
            // of some file.
        }
        let config = &self.config;
        self.diagnostics.retain(|d| config.enabled(d.check));
        self.sort();
    }

    fn sort(&mut self) {
        self.diagnostics.sort_by(|a, b| (&a.file, a.pos, a.check).cmp(&(&b.file, b.pos, b.check)));
    }

    /// Adds findings from an online check or a backtest.
    pub fn extend(&mut self, checks: &[&'static str], found: Vec<Diagnostic>) {
        self.ran.extend(checks.iter().copied());
        let config = &self.config;
        self.diagnostics.extend(found.into_iter().filter(|d| config.enabled(d.check)));
        self.sort();
    }

    /// (errors, warnings).
    pub fn counts(&self) -> (usize, usize) {
        let errors = self.diagnostics.iter().filter(|d| d.severity == Severity::Error).count();
        let warnings = self.diagnostics.iter().filter(|d| d.severity == Severity::Warning).count();
        (errors, warnings)
    }

    /// Whether any finding is at or above `fail_on`.
    pub fn fails(&self, fail_on: Severity) -> bool {
        self.diagnostics.iter().any(|d| d.severity >= fail_on)
    }

    /// Rules in all files.
    pub fn rule_count(&self) -> usize {
        self.files.iter().map(|f| f.rules().count()).sum()
    }

    /// Alerting rules in all files.
    pub fn alert_count(&self) -> usize {
        self.files.iter().map(|f| f.rules().filter(|(_, r)| r.alert.is_some()).count()).sum()
    }

    /// The shared report; see [`output::report`].
    pub fn report(&self, fail_on: Severity, target: &str) -> shared_types::Report {
        output::report(self, fail_on, target)
    }

    /// The source line a finding points at.
    pub fn source_line(&self, d: &Diagnostic) -> Option<String> {
        let file = self.files.iter().find(|f| f.path == d.file)?;
        file.text.lines().nth((d.pos.line as usize).checked_sub(1)?).map(str::to_owned)
    }

    /// Applies every fix to the files on disk; returns how many were applied.
    pub fn apply_fixes(&self) -> std::io::Result<usize> {
        let mut applied = 0;
        for file in &self.files {
            let fixes: Vec<&diag::Fix> = self
                .diagnostics
                .iter()
                .filter(|d| d.file == file.path)
                .filter_map(|d| d.fix.as_ref())
                .collect();
            if fixes.is_empty() {
                continue;
            }
            let (text, count) = apply_edits(&file.text, &fixes);
            if count > 0 {
                std::fs::write(&file.path, text)?;
                applied += count;
            }
        }
        Ok(applied)
    }
}

/// Applies fixes whose edits do not overlap earlier ones; returns the new
/// text and the number of fixes applied.
pub fn apply_edits(text: &str, fixes: &[&diag::Fix]) -> (String, usize) {
    let mut taken: Vec<(u32, u32)> = Vec::new();
    let mut edits: Vec<&diag::Edit> = Vec::new();
    let mut count = 0;
    for fix in fixes {
        let overlaps = fix.edits.iter().any(|e| {
            taken.iter().any(|&(s, end)| e.start <= end.max(s) && s <= e.end.max(e.start))
        });
        if overlaps {
            continue;
        }
        taken.extend(fix.edits.iter().map(|e| (e.start, e.end)));
        edits.extend(fix.edits.iter());
        count += 1;
    }
    // Bottom-up, so earlier line numbers stay valid; removals before inserts at one line.
    edits.sort_by_key(|e| std::cmp::Reverse((e.start, e.end)));
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for e in edits {
        let start = (e.start as usize).saturating_sub(1).min(lines.len());
        let end = (e.end as usize).min(lines.len()).max(start);
        lines.splice(start..end, e.lines.iter().cloned());
    }
    let mut out = lines.join("\n");
    if text.ends_with('\n') {
        out.push('\n');
    }
    (out, count)
}

/// Files named by `paths`: files as given, directories searched for
/// `*.yml`/`*.yaml`, anything with `*?[` expanded as a glob.
pub fn expand_inputs(paths: &[PathBuf]) -> Result<Vec<PathBuf>, InputError> {
    let mut out = Vec::new();
    for path in paths {
        let text = path.to_string_lossy();
        if path.is_file() {
            out.push(path.clone());
        } else if path.is_dir() {
            let mut found = Vec::new();
            walk_dir(path, &mut found);
            found.sort();
            out.extend(found);
        } else if text.contains(['*', '?', '[']) {
            let matches =
                glob::glob(&text).map_err(|e| InputError::Glob(text.to_string(), e.to_string()))?;
            let mut found: Vec<PathBuf> =
                matches.filter_map(Result::ok).filter(|p| p.is_file()).collect();
            if found.is_empty() {
                return Err(InputError::NotFound(text.to_string()));
            }
            found.sort();
            out.extend(found);
        } else {
            return Err(InputError::NotFound(text.to_string()));
        }
    }
    Ok(out)
}

fn walk_dir(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            walk_dir(&path, out);
        } else if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            out.push(path);
        }
    }
}

/// Lints `paths` with the marketplace's default config, coverage included
/// and required,
/// and returns the report (`cargo xtask verify` runs this on
/// `docs/alert-linter/marketplace-rules.yml`). Unreadable paths become an
/// error check (exit 3).
pub fn lint_marketplace(paths: &[PathBuf]) -> shared_types::Report {
    let target = paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
    let mut config = Config::default();
    config.coverage.required = true;
    match LintOutcome::lint_paths(paths, &config, true) {
        Ok(outcome) => outcome.report(Severity::Warning, &target),
        Err(e) => {
            let mut report =
                shared_types::Report::new("alert-linter", env!("CARGO_PKG_VERSION"), target);
            report.push_check(shared_types::Check::error(
                "inputs",
                "the rule files can be read",
                e.to_string(),
            ));
            report.finish();
            report
        }
    }
}

/// The JSON Schema of the config file (`--config FILE`), for editors and CI
/// to check a config before a run. It checks the file's shape (keys, types,
/// duration syntax); whether each coverage regex compiles is left to
/// [`Config::from_yaml`].
#[cfg(feature = "schema")]
pub fn config_schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(Config);
    schema.insert(
        "$id".to_owned(),
        "https://postlaunch.dev/schemas/alert-linter/config.schema.json".into(),
    );
    schema.insert("title".to_owned(), "alert-linter config".into());
    schema.insert(
        "description".to_owned(),
        "What alert-linter holds rules to. Every key is optional: left out, it keeps the \
         marketplace's launch policy; a list given replaces the default list. Unknown keys \
         are errors."
            .into(),
    );
    // Sorted keys: the committed file must not depend on whether some crate
    // in the build turned on serde_json's `preserve_order`.
    shared_types::sorted_keys(schema.to_value())
}

#[cfg(all(test, feature = "schema"))]
mod config_schema_tests {
    use super::*;

    fn object(value: &serde_json::Value) -> &serde_json::Map<String, serde_json::Value> {
        value.as_object().unwrap_or_else(|| panic!("not an object: {value}"))
    }

    #[test]
    fn config_schema_is_an_object_with_id_and_title() {
        let schema = config_schema();
        let schema = object(&schema);
        assert_eq!(
            schema.get("$id").and_then(serde_json::Value::as_str),
            Some("https://postlaunch.dev/schemas/alert-linter/config.schema.json")
        );
        assert_eq!(
            schema.get("title").and_then(serde_json::Value::as_str),
            Some("alert-linter config")
        );
    }

    #[test]
    fn config_schema_lists_every_config_key_and_rejects_others() {
        // Exhaustive on purpose: a new `Config` field fails to compile here
        // until it is added to the list the schema is checked against.
        let Config {
            scrape_interval: _,
            evaluation_interval: _,
            notification_delay: _,
            policy: _,
            detection_targets: _,
            coverage: _,
            online: _,
            backtest: _,
            disabled_checks: _,
            min_range_scrapes: _,
        } = Config::default();
        let keys = [
            "scrape_interval",
            "evaluation_interval",
            "notification_delay",
            "policy",
            "detection_targets",
            "coverage",
            "online",
            "backtest",
            "disabled_checks",
            "min_range_scrapes",
        ];
        let schema = config_schema();
        let properties = object(&schema["properties"]);
        for key in keys {
            assert!(properties.contains_key(key), "`{key}` missing from the schema's properties");
        }
        assert_eq!(properties.len(), keys.len(), "{:?}", properties.keys());
        assert_eq!(schema["additionalProperties"], serde_json::Value::Bool(false));
        assert!(schema.get("required").is_none(), "every key is optional");
        // Every nested section is `deny_unknown_fields` too.
        for (name, def) in object(&schema["$defs"]) {
            if def.get("properties").is_some() {
                assert_eq!(
                    def["additionalProperties"],
                    serde_json::Value::Bool(false),
                    "$defs/{name} accepts unknown keys"
                );
            }
        }
    }

    #[test]
    fn schema_defaults_are_the_built_in_config() {
        // A config made of the schema's `default`s (top-level keys, and the
        // keys of each section) must read back as `Config::default()`.
        let schema = config_schema();
        let defs = object(&schema["$defs"]);
        let mut file = serde_json::Map::new();
        for (key, property) in object(&schema["properties"]) {
            if let Some(default) = property.get("default") {
                file.insert(key.clone(), default.clone());
            } else if let Some(reference) = property["$ref"].as_str() {
                let name = reference.trim_start_matches("#/$defs/");
                let section: serde_json::Map<_, _> = object(&defs[name]["properties"])
                    .iter()
                    .filter_map(|(k, p)| Some((k.clone(), p.get("default")?.clone())))
                    .collect();
                assert!(!section.is_empty(), "{key}: no defaults in $defs/{name}");
                file.insert(key.clone(), section.into());
            }
        }
        let text = serde_json::Value::Object(file).to_string();
        assert_eq!(Config::from_yaml(&text), Ok(Config::default()), "{text}");
    }

    #[test]
    fn duration_pattern_agrees_with_parse_duration() {
        let schema = config_schema();
        let duration = &schema["$defs"]["Duration"];
        let pattern = duration["pattern"]
            .as_str()
            .unwrap_or_else(|| panic!("no Duration pattern in {schema}"));
        let pattern = regex::Regex::new(pattern).unwrap_or_else(|e| panic!("{e}"));
        let min_length = duration["minLength"].as_u64().unwrap_or(0);
        let schema_accepts =
            |text: &str| text.chars().count() as u64 >= min_length && pattern.is_match(text);
        for text in ["0", "10s", "1m", "1h30m", "500ms", "1m5ms", "2y3w4d5h6m7s8ms", "01s"] {
            assert!(model::parse_duration(text).is_ok(), "{text}");
            assert!(schema_accepts(text), "schema rejects {text:?}");
        }
        for text in ["", "5", "30m1h", "1.5m", "1m1m", "10 s", "-1s", "1sec", "0s0"] {
            assert!(model::parse_duration(text).is_err(), "{text}");
            assert!(!schema_accepts(text), "schema accepts {text:?}");
        }
    }
}
