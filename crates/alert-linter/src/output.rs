//! Writing findings: compiler-style text, SARIF 2.1.0, GitHub workflow
//! commands, and the shared [`Report`] (JSON, JUnit, Markdown).

use std::fmt::Write as _;

use serde_json::json;
use shared_types::{Check, Measurement, Report};

use crate::LintOutcome;
use crate::diag::{CHECKS, Diagnostic, Severity, criterion};

const DOCS_BASE: &str = "https://github.com/postlaunch/postlaunch/blob/main/docs/alert-linter/";

/// Compiler-style diagnostics with source snippets, then a summary line.
/// `exit` is the run's exit code, derived from the report (so the verdict
/// line and the process agree).
pub fn human(
    outcome: &LintOutcome,
    fail_on: Severity,
    color: bool,
    exit: shared_types::ExitCode,
) -> String {
    let paint = |code: &str, text: &str| {
        if color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_owned() }
    };
    let mut out = String::new();
    for d in &outcome.diagnostics {
        let (code, label) = match d.severity {
            Severity::Error => ("1;31", "error"),
            Severity::Warning => ("1;33", "warning"),
            Severity::Info => ("1;36", "info"),
        };
        let _ = writeln!(
            out,
            "{}: {}",
            paint(code, &format!("{label}[{}]", d.check)),
            clean(&d.message)
        );
        let line_no = d.pos.line.to_string();
        let gutter = " ".repeat(line_no.len());
        let _ = writeln!(out, "{gutter}{} {}", paint("1;34", "-->"), d.location());
        if let Some(line) = outcome.source_line(d) {
            let line = clean(&line);
            let col = d.pos.col as usize - 1;
            let width = line
                .chars()
                .skip(col)
                .take_while(|c| !c.is_whitespace() && *c != ':')
                .count()
                .max(1);
            let _ = writeln!(out, "{gutter} {}", paint("1;34", "|"));
            let _ = writeln!(out, "{} {} {line}", paint("1;34", &line_no), paint("1;34", "|"));
            let marks =
                format!("{}{}", " ".repeat(col.min(line.chars().count())), "^".repeat(width));
            let _ = writeln!(out, "{gutter} {} {}", paint("1;34", "|"), paint(code, &marks));
        }
        if let Some(help) = &d.help {
            let _ = writeln!(out, "{gutter} = help: {}", clean(help));
        }
        if let Some(fix) = &d.fix {
            let _ = writeln!(out, "{gutter} = fix: {} (run with --fix)", fix.description);
        }
        let _ = writeln!(out, "{gutter} = see: docs/alert-linter/{}.md", d.check);
        out.push('\n');
    }
    let (errors, warnings) = outcome.counts();
    let covered = outcome.coverage.iter().filter(|c| !c.alerts.is_empty()).count();
    let _ = write!(
        out,
        "alert-linter: {errors} error(s), {warnings} warning(s) in {} file(s) ({} rules, {} alerts)",
        outcome.files.len(),
        outcome.rule_count(),
        outcome.alert_count()
    );
    if !outcome.coverage.is_empty() {
        let _ = write!(out, "; coverage {covered}/{} paths", outcome.coverage.len());
        let uncovered = uncovered_keys(outcome);
        if !uncovered.is_empty() {
            let required =
                if outcome.config.coverage.required { "required" } else { "not required" };
            let _ = write!(out, " (uncovered, {required} by the config: {})", uncovered.join(", "));
        }
    }
    let verdict = match exit {
        shared_types::ExitCode::Success => "PASS",
        shared_types::ExitCode::CriterionNotMet => "FAIL",
        _ => "NOT EVALUATED",
    };
    let _ = writeln!(out, "\nverdict: {verdict} (--fail-on {fail_on}) · exit {}", exit.code());
    out
}

/// The coverage checks of a run, both properties of the whole rule set:
/// every critical path has an alert meeting the plan's condition
/// (`coverage/critical-paths`), and enough alerts watch the critical paths
/// (`coverage/alert-count`). A shortfall fails them only where the config
/// requires coverage; otherwise the checks do not apply to this rule set and
/// are skipped, with what is missing listed.
fn coverage_checks(outcome: &LintOutcome) -> Vec<Check> {
    if outcome.coverage.is_empty() {
        return Vec::new();
    }
    let required = outcome.config.coverage.required;
    let not_required = "coverage is not required by the config (coverage.required: false)";
    let (id, crit) = (
        "coverage/critical-paths",
        "an alert meeting the plan's condition watches every critical path of the marketplace",
    );
    let uncovered: Vec<String> = outcome
        .coverage
        .iter()
        .filter(|c| c.alerts.is_empty())
        .map(|c| {
            let mut line = format!("{}: {}", c.key(), c.description);
            if let Some(condition) = &c.condition {
                line.push_str(&format!(" (plan: {condition})"));
            }
            for miss in &c.near_misses {
                line.push_str(&format!("\n  {} does not count: {}", miss.alert, miss.reason));
            }
            line
        })
        .collect();
    let total = outcome.coverage.len();
    let observed = format!("{} of {total} paths covered", total - uncovered.len());
    let paths = if uncovered.is_empty() {
        let covered: Vec<String> = outcome
            .coverage
            .iter()
            .map(|c| format!("{}: {}", c.key(), c.alerts.join(", ")))
            .collect();
        Check::pass(id, crit, observed).with_detail(covered.join("\n"))
    } else if required {
        Check::fail(id, crit, observed).with_detail(format!(
            "uncovered (add an alert on one of the path's metrics meeting its condition, or remove the path from coverage.paths):\n{}",
            uncovered.join("\n")
        ))
    } else {
        Check::skipped(
            id,
            crit,
            format!("{observed}; {not_required}, uncovered:\n{}", uncovered.join("\n")),
        )
    };

    let min = outcome.config.coverage.min_alerts;
    let on_paths = crate::coverage::alerts_on_paths(&outcome.coverage);
    let (id, crit) =
        ("coverage/alert-count", "at least coverage.min_alerts alerts watch the critical paths");
    let observed =
        format!("{} alerts on the critical paths (at least {min} wanted)", on_paths.len());
    let count = if on_paths.len() >= min {
        Check::pass(id, crit, observed).with_detail(on_paths.join(", "))
    } else if required {
        Check::fail(id, crit, observed).with_detail(on_paths.join(", "))
    } else {
        Check::skipped(id, crit, format!("{observed}; {not_required}"))
    };
    [paths, count]
        .into_iter()
        .map(|check| {
            if outcome.config.enabled(&check.id) {
                check
            } else {
                Check::skipped(check.id, check.criterion, "disabled in the config")
            }
        })
        .collect()
}

/// The uncovered paths, for the human summary.
fn uncovered_keys(outcome: &LintOutcome) -> Vec<String> {
    outcome.coverage.iter().filter(|c| c.alerts.is_empty()).map(|c| c.key()).collect()
}

/// Drops control characters (terminal escapes in a hostile file).
fn clean(text: &str) -> String {
    text.chars().map(|c| if c == '\t' { ' ' } else { c }).filter(|c| !c.is_control()).collect()
}

/// SARIF 2.1.0, for code-scanning uploads.
pub fn sarif(outcome: &LintOutcome) -> String {
    let level = |s: Severity| match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "note",
    };
    let rules: Vec<_> = CHECKS
        .iter()
        .map(|(id, severity, criterion)| {
            json!({
                "id": id,
                "shortDescription": { "text": criterion },
                "helpUri": format!("{DOCS_BASE}{id}.md"),
                "defaultConfiguration": { "level": level(*severity) },
            })
        })
        .collect();
    let results: Vec<_> = outcome
        .diagnostics
        .iter()
        .map(|d| {
            let mut text = d.message.clone();
            if let Some(help) = &d.help {
                text.push_str(&format!(" ({help})"));
            }
            json!({
                "ruleId": d.check,
                "ruleIndex": CHECKS.iter().position(|(id, _, _)| *id == d.check),
                "level": level(d.severity),
                "message": { "text": text },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": uri(&d.file) },
                        "region": { "startLine": d.pos.line, "startColumn": d.pos.col },
                    }
                }],
            })
        })
        .collect();
    let doc = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "alert-linter",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": DOCS_BASE,
                "rules": rules,
            }},
            "results": results,
        }],
    });
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    text
}

fn uri(path: &std::path::Path) -> String {
    let text = path.to_string_lossy().replace('\\', "/");
    text.strip_prefix("./").unwrap_or(&text).to_owned()
}

/// GitHub Actions workflow commands: one `::error file=..,line=..::` per finding.
pub fn github(outcome: &LintOutcome) -> String {
    let data = |s: &str| s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A");
    let prop = |s: &str| data(s).replace(':', "%3A").replace(',', "%2C");
    let mut out = String::new();
    for d in &outcome.diagnostics {
        let kind = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "notice",
        };
        let mut message = d.message.clone();
        if let Some(help) = &d.help {
            message.push_str(&format!("\nhelp: {help}"));
        }
        let _ = writeln!(
            out,
            "::{kind} file={},line={},col={},title={}::{}",
            prop(&uri(&d.file)),
            d.pos.line,
            d.pos.col,
            prop(d.check),
            data(&message)
        );
    }
    out
}

/// The shared report: one check per check id (pass when it found nothing
/// at or above `fail_on`), the two coverage checks, measurements, and
/// every finding under `data.diagnostics`.
pub fn report(outcome: &LintOutcome, fail_on: Severity, target: &str) -> Report {
    let mut report = Report::new("alert-linter", env!("CARGO_PKG_VERSION"), target);
    for (id, _, crit) in CHECKS {
        // Coverage checks are built from the whole rule set, not from findings.
        if id.starts_with("coverage/") || !outcome.ran.contains(id) {
            continue;
        }
        if !outcome.config.enabled(id) {
            report.push_check(Check::skipped(*id, *crit, "disabled in the config"));
            continue;
        }
        let found: Vec<&Diagnostic> =
            outcome.diagnostics.iter().filter(|d| d.check == *id).collect();
        let failing = found.iter().filter(|d| d.severity >= fail_on).count();
        let detail: Vec<String> =
            found.iter().take(20).map(|d| format!("{}: {}", d.location(), d.message)).collect();
        let check = if found.is_empty() {
            Check::pass(*id, *crit, "0 findings")
        } else if failing > 0 {
            Check::fail(*id, *crit, format!("{} finding(s)", found.len()))
                .with_detail(detail.join("\n"))
        } else {
            Check::pass(*id, *crit, format!("{} finding(s) below --fail-on {fail_on}", found.len()))
                .with_detail(detail.join("\n"))
        };
        report.push_check(check);
    }
    for check in coverage_checks(outcome) {
        report.push_check(check);
    }
    for error in &outcome.run_errors {
        report.push_check(Check::error(error.0.clone(), criterion(&error.0), error.1.clone()));
    }
    let (errors, warnings) = outcome.counts();
    report
        .push_measurement(Measurement::new("files", outcome.files.len() as f64, ""))
        .push_measurement(Measurement::new("rules", outcome.rule_count() as f64, ""))
        .push_measurement(Measurement::new("alerts", outcome.alert_count() as f64, ""))
        .push_measurement(Measurement::new("errors", errors as f64, ""))
        .push_measurement(Measurement::new("warnings", warnings as f64, ""));
    if let Some(worst) = outcome
        .detection
        .iter()
        .filter(|d| d.severity == "critical")
        .map(|d| d.worst_case_seconds)
        .reduce(f64::max)
    {
        report.push_measurement(Measurement::new("critical_detection_worst", worst, "s"));
    }
    if !outcome.coverage.is_empty() {
        let covered = outcome.coverage.iter().filter(|c| !c.alerts.is_empty()).count();
        report.push_measurement(Measurement::new(
            "coverage",
            100.0 * covered as f64 / outcome.coverage.len() as f64,
            "%",
        ));
    }
    report.data.insert("diagnostics".into(), json!(outcome.diagnostics));
    report.data.insert("coverage".into(), json!(outcome.coverage));
    report.data.insert("detection".into(), json!(outcome.detection));
    for (key, value) in &outcome.extra_data {
        report.data.insert(key.clone(), value.clone());
    }
    report.finish();
    report
}
