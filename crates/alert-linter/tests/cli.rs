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
    assert_eq!(
        report.checks.iter().filter(|c| c.id.starts_with("coverage/")).count(),
        1,
        "one coverage check per run"
    );
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
    assert_eq!(files, Some(serde_json::json!(20.0)));
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
