//! The binary's contract: exit codes 0/1/2, output formats, --fail-on,
//! --fix, and the shipped marketplace rules (lint-clean, promtool-valid).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_alert-linter"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(args: &[&str]) -> Output {
    bin()
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run alert-linter: {e}"))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const MARKETPLACE: &str = "docs/alert-linter/marketplace-rules.yml";

#[test]
fn marketplace_rules_are_lint_clean_covered_and_promtool_valid() {
    let o = run(&["lint", "--fail-on", "warning", MARKETPLACE]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("0 error(s), 0 warning(s)"), "{}", stdout(&o));
    let report = alert_linter::lint_marketplace(&[root().join(MARKETPLACE)]);
    let coverage = report.checks.iter().find(|c| c.id == "coverage/critical-paths");
    assert!(
        coverage.is_some_and(|c| c.verdict == shared_types::Verdict::Pass
            && c.detail.as_deref().is_some_and(|d| d.contains("http-error-rate[auth]"))),
        "{coverage:?}"
    );
    let coverage_ids: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| c.id.starts_with("coverage/"))
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(
        coverage_ids,
        ["coverage/critical-paths", "coverage/alert-count"],
        "coverage is checked once per run"
    );
    let count = report.checks.iter().find(|c| c.id == "coverage/alert-count");
    assert!(count.is_some_and(|c| c.verdict == shared_types::Verdict::Pass), "{count:?}");
    assert_eq!(report.exit_code(), shared_types::ExitCode::Success);
    assert!(report.measurements.iter().any(|m| m.name == "alerts" && m.value >= 20.0));
    let promtool =
        Command::new("promtool").args(["check", "rules", MARKETPLACE]).current_dir(root()).output();
    assert!(promtool.is_ok_and(|p| p.status.success()), "promtool rejects the marketplace rules");
}

#[test]
fn exit_codes_follow_the_contract() {
    // 1: schema error.
    assert_eq!(
        run(&["lint", "--no-coverage", "tests/rules/bad/severity-on-rule.yml"]).status.code(),
        Some(1)
    );
    // 0 at --fail-on error with only a warning, 1 at --fail-on warning.
    let warn_only = "tests/rules/good/owner-missing.yml";
    assert_eq!(run(&["lint", "--no-coverage", warn_only]).status.code(), Some(0));
    assert_eq!(
        run(&["lint", "--no-coverage", "--fail-on", "warning", warn_only]).status.code(),
        Some(1)
    );
    // 2: usage errors.
    assert_eq!(run(&["lint", "no/such/file.yml"]).status.code(), Some(2));
    assert_eq!(run(&["lint", "--output", "yaml", MARKETPLACE]).status.code(), Some(2));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("config.yml");
    std::fs::write(&config, "policy:\n  severites: [page]\n").unwrap_or_else(|e| panic!("{e}"));
    let o = run(&["lint", "--config", &config.to_string_lossy(), MARKETPLACE]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("config.yml:2:"),
        "config errors name file and line"
    );
    // 3: the Prometheus to check against does not answer.
    let port = testkit::free_port();
    let url = format!("http://127.0.0.1:{port}");
    assert_eq!(run(&["lint", "--prometheus", &url, MARKETPLACE]).status.code(), Some(3));
}

#[test]
fn human_output_points_at_file_line_col_with_a_snippet() {
    let o = run(&["lint", "--no-coverage", "tests/rules/bad/severity-on-rule.yml"]);
    let text = stdout(&o);
    assert!(
        text.contains("error[schema/unknown-field]: field `severity` not found in a rule"),
        "{text}"
    );
    assert!(text.contains("--> tests/rules/bad/severity-on-rule.yml:7:9"), "{text}");
    assert!(text.contains("7 |         severity: critical\n  |         ^^^^^^^^"), "{text}");
}

#[test]
fn machine_outputs_carry_every_finding() {
    let file = "tests/rules/good/fragile-regex.yml";
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&run(&["lint", "--no-coverage", "--output", "json", file])))
            .unwrap_or_else(|e| panic!("json output: {e}"));
    assert_eq!(json["tool"], "alert-linter");
    assert_eq!(json["data"]["diagnostics"][0]["check"], "promql/fragile-regex");
    let sarif: serde_json::Value =
        serde_json::from_str(&stdout(&run(&["lint", "--no-coverage", "--output", "sarif", file])))
            .unwrap_or_else(|e| panic!("sarif output: {e}"));
    assert_eq!(sarif["version"], "2.1.0");
    let result = &sarif["runs"][0]["results"][0];
    assert_eq!(result["ruleId"], "promql/fragile-regex");
    assert_eq!(result["locations"][0]["physicalLocation"]["region"]["startLine"], 5);
    let gh = stdout(&run(&["lint", "--no-coverage", "--output", "github", file]));
    assert!(gh.starts_with("::warning file=tests/rules/good/fragile-regex.yml,line=5,col=15,title=promql/fragile-regex::"), "{gh}");
    let junit = stdout(&run(&[
        "lint",
        "--no-coverage",
        "--output",
        "junit",
        "tests/rules/bad/missing-expr.yml",
    ]));
    assert!(junit.contains("<testsuite") && junit.contains("schema/expr-invalid"), "{junit}");
    let md = stdout(&run(&["lint", "--no-coverage", "--output", "markdown", file]));
    assert!(md.contains("promql/fragile-regex"), "{md}");
}

#[test]
fn fix_moves_severity_under_labels_and_rewrites_literal_regexes() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("rules.yml");
    let text = "groups:\n  - name: g\n    rules:\n      - alert: GatewayDown\n        expr: 'up{job=~\"gateway\"} == 0'\n        for: 1m\n        severity: warning\n        labels:\n          team: sre\n        annotations:\n          summary: down\n          runbook_url: https://runbooks.example.com/x\n";
    std::fs::write(&file, text).unwrap_or_else(|e| panic!("{e}"));
    let path = file.to_string_lossy().into_owned();
    assert_eq!(run(&["lint", "--no-coverage", &path]).status.code(), Some(1));
    let o = run(&["lint", "--no-coverage", "--fix", "--fail-on", "warning", &path]);
    let fixed = std::fs::read_to_string(&file).unwrap_or_default();
    assert_eq!(o.status.code(), Some(0), "{}\n{fixed}", stdout(&o));
    assert!(
        fixed.contains("        labels:\n          severity: warning\n          team: sre\n"),
        "{fixed}"
    );
    assert!(fixed.contains("up{job=\"gateway\"} == 0"), "{fixed}");
    let promtool = Command::new("promtool").args(["check", "rules", &path]).output();
    assert!(promtool.is_ok_and(|p| p.status.success()), "fixed file must stay promtool-valid");
}

#[test]
fn synthetic_rules_are_valid_for_promtool_and_the_linter() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("synthetic.yml");
    std::fs::write(&file, alert_linter::synthetic_rules(120)).unwrap_or_else(|e| panic!("{e}"));
    let path = file.to_string_lossy().into_owned();
    let promtool = Command::new("promtool").args(["check", "rules", &path]).output();
    assert!(
        promtool
            .is_ok_and(|p| String::from_utf8_lossy(&p.stdout).contains("SUCCESS: 120 rules found"))
    );
    let o = run(&["lint", "--no-coverage", "--fail-on", "warning", &path]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn directories_and_globs_expand_to_rule_files() {
    let o = run(&["lint", "--no-coverage", "--output", "json", "tests/rules/good"]);
    let json: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap_or_default();
    let files = json["measurements"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == "files"))
        .map(|m| m["value"].clone());
    assert_eq!(files, Some(serde_json::json!(22.0)));
    let o = run(&["lint", "--no-coverage", "tests/rules/bad/yaml-*.yml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("in 4 file(s)"), "{}", stdout(&o));
}

/// Coverage belongs to the whole rule set and fails only where the config
/// asks for it: a clean third-party file linted on its own exits 0 with the
/// uncovered paths listed once (not an error at line 1 of the file); the
/// marketplace's config (coverage.required) makes the same file fail.
#[test]
fn coverage_fails_only_where_the_config_requires_it() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let rules = dir.path().join("third-party.yml");
    std::fs::write(
        &rules,
        "groups:\n- name: node\n  rules:\n  - alert: NodeDiskFull\n    expr: node_filesystem_avail_bytes / node_filesystem_size_bytes < 0.05\n    for: 10m\n    labels:\n      severity: warning\n      team: infra\n    annotations:\n      summary: Disk almost full on {{ $labels.instance }}\n      description: Less than 5% disk left on {{ $labels.instance }}.\n      runbook_url: https://runbooks.example.com/node-disk-full\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let rules = rules.to_string_lossy().into_owned();
    let o = run(&["lint", &rules, "--output", "json"]);
    let report = shared_types::Report::from_json(&stdout(&o))
        .unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)));
    let coverage = report.checks.iter().find(|c| c.id == "coverage/critical-paths");
    assert!(coverage.is_some_and(|c| c.verdict == shared_types::Verdict::Skipped), "{coverage:?}");
    assert_eq!(o.status.code(), Some(0), "a clean third-party file passes: {}", stdout(&o));
    let human = stdout(&run(&["lint", &rules]));
    assert!(!human.contains("path-uncovered"), "no per-path diagnostics: {human}");
    assert!(human.contains("uncovered, not required by the config"), "{human}");

    let o = run(&["lint", &rules, "--config", "docs/alert-linter/marketplace.yml"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("verdict: FAIL"), "the verdict line agrees with the exit code");
}

/// The marketplace rules with `from` replaced by `to`, linted with the
/// marketplace's config through the binary: (exit code, report).
fn lint_changed_marketplace(changes: &[(&str, &str)]) -> (Option<i32>, shared_types::Report) {
    let mut text = std::fs::read_to_string(root().join(MARKETPLACE)).unwrap_or_default();
    for (from, to) in changes {
        assert!(text.contains(from), "{from} not in the marketplace rules");
        text = text.replace(from, to);
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, text).unwrap_or_else(|e| panic!("{e}"));
    let o = run(&[
        "lint",
        &rules.to_string_lossy(),
        "--config",
        "docs/alert-linter/marketplace.yml",
        "--output",
        "json",
    ]);
    let report = shared_types::Report::from_json(&stdout(&o))
        .unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)));
    (o.status.code(), report)
}

fn check<'a>(report: &'a shared_types::Report, id: &str) -> &'a shared_types::Check {
    report.checks.iter().find(|c| c.id == id).unwrap_or_else(|| panic!("no {id} in {report:?}"))
}

/// Launch plan task 11: error rate > 5 % for 5 min, breaker open for 2 min,
/// pool > 90 % for 1 min. An alert on the right metric with a looser
/// threshold or a longer `for` does not cover the path, and the report says
/// which alert and why.
#[test]
fn an_alert_with_the_wrong_threshold_or_for_does_not_cover_its_path() {
    let (code, report) = lint_changed_marketplace(&[
        (
            "/ sum by (job) (rate(http_requests_total[5m])) > 0.05'",
            "/ sum by (job) (rate(http_requests_total[5m])) > 0.5'",
        ),
        (
            "(circuit_breaker_state{state=\"open\"}) == 1'\n        for: 2m",
            "(circuit_breaker_state{state=\"open\"}) == 1'\n        for: 10m",
        ),
        ("db_connections_max) > 0.9'", "db_connections_max) > 0.95'"),
    ]);
    assert_eq!(code, Some(1), "{report:?}");
    let paths = check(&report, "coverage/critical-paths");
    assert_eq!(paths.verdict, shared_types::Verdict::Fail);
    assert_eq!(paths.observed.as_deref(), Some("15 of 22 paths covered"), "{:?}", paths.detail);
    let detail = paths.detail.clone().unwrap_or_default();
    for expected in [
        "http-error-rate[auth]: each service's HTTP 5xx error rate (plan: > 0.05 for 5m)",
        "HttpErrorRateHigh does not count: fires at > 0.5, not whenever the plan's > 0.05 holds",
        "circuit-breakers: circuit breakers open (plan: == 1 for 2m)",
        "CircuitBreakerOpen does not count: for 10m is longer than the plan's 2m",
        "db-pool-saturation",
        "DbPoolSaturated does not count: fires at > 0.95",
    ] {
        assert!(detail.contains(expected), "{expected:?} missing from:\n{detail}");
    }
    // The alerts still watch the critical paths: the count is unchanged.
    assert_eq!(check(&report, "coverage/alert-count").verdict, shared_types::Verdict::Pass);
}

/// "20+ rules covering all critical paths" is a check of its own.
#[test]
fn fewer_than_20_alerts_on_the_critical_paths_fail_the_marketplace_config() {
    let (code, report) = lint_changed_marketplace(&[(
        "alert: CircuitBreakerFlapping\n        expr: 'sum by (job, dependency) (changes(circuit_breaker_state{state=\"open\"}[15m])) > 4'",
        "alert: CircuitBreakerFlapping\n        expr: 'sum by (job, dependency) (changes(cache_hits_total[15m])) > 4'",
    )]);
    assert_eq!(code, Some(1), "{report:?}");
    let count = check(&report, "coverage/alert-count");
    assert_eq!(count.verdict, shared_types::Verdict::Fail);
    assert_eq!(
        count.observed.as_deref(),
        Some("19 alerts on the critical paths (at least 20 wanted)")
    );
    assert_eq!(check(&report, "coverage/critical-paths").verdict, shared_types::Verdict::Pass);
}
