//! Schema parity with `promtool check rules` (Prometheus 2.42, Debian's
//! package, installed by scripts/install-deps.sh), measured over the corpus
//! in tests/rules: every file promtool rejects, alert-linter rejects with a
//! schema error; every file promtool accepts gets no schema error.

use std::path::{Path, PathBuf};
use std::process::Command;

use alert_linter::{Config, LintOutcome, Severity};

fn corpus(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/rules").join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("cannot read corpus {}: {e}", root.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    files.sort();
    files
}

fn promtool_accepts(file: &Path) -> bool {
    let status = Command::new("promtool")
        .args(["check", "rules"])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("promtool not runnable ({e}): run scripts/install-deps.sh"));
    status.status.success()
}

fn schema_errors(file: &Path) -> Vec<String> {
    let outcome = LintOutcome::lint_paths(&[file.to_owned()], &Config::default(), false)
        .unwrap_or_else(|e| panic!("{e}"));
    outcome
        .diagnostics
        .iter()
        .filter(|d| d.check.starts_with("schema/") && d.severity == Severity::Error)
        .map(|d| format!("{} {}", d.check, d.location()))
        .collect()
}

#[test]
fn every_file_promtool_rejects_is_rejected_and_no_accepted_file_is() {
    let files: Vec<PathBuf> = corpus("bad").into_iter().chain(corpus("good")).collect();
    assert!(files.len() >= 50, "corpus too small: {}", files.len());
    let (mut promtool_rejects, mut we_reject_too, mut false_rejects) = (0, 0, Vec::new());
    let mut missed = Vec::new();
    for file in &files {
        let ours = schema_errors(file);
        if promtool_accepts(file) {
            if !ours.is_empty() {
                false_rejects.push(format!("{}: {ours:?}", file.display()));
            }
        } else {
            promtool_rejects += 1;
            if ours.is_empty() {
                missed.push(file.display().to_string());
            } else {
                we_reject_too += 1;
            }
        }
    }
    println!(
        "parity: {} files; promtool rejects {promtool_rejects}, alert-linter rejects {we_reject_too} of them; {} accepted files wrongly rejected",
        files.len(),
        false_rejects.len()
    );
    assert!(missed.is_empty(), "promtool rejects but alert-linter accepts: {missed:#?}");
    assert!(
        false_rejects.is_empty(),
        "promtool accepts but alert-linter rejects: {false_rejects:#?}"
    );
    // The bad corpus is bad for promtool: if this fails, a fixture is wrong.
    assert_eq!(promtool_rejects, corpus("bad").len());
}

#[test]
fn each_accepted_fixture_triggers_the_check_it_is_named_after() {
    // fixture name -> check id it must raise (and the only one).
    let expected = [
        ("absent-labels", "promql/absent-labels"),
        ("duplicate-rule", "schema/duplicate-rule"),
        ("for-missing-on-critical", "promql/for-missing"),
        ("fragile-regex", "promql/fragile-regex"),
        ("histogram-no-le", "promql/histogram-quantile-no-le"),
        ("impossible-comparison", "promql/impossible-comparison"),
        ("no-comparison", "promql/no-comparison"),
        ("owner-missing", "policy/owner-missing"),
        ("range-too-short", "promql/range-too-short"),
        ("rate-on-gauge", "promql/rate-on-non-counter"),
        ("runbook-missing", "policy/runbook-missing"),
        ("runbook-not-found", "policy/runbook-not-found"),
        ("severity-not-allowed", "policy/severity"),
        ("slow-detection", "detect/slow-detection"),
        ("pages-on-noise", "detect/pages-on-noise"),
        ("summary-missing", "policy/summary-missing"),
        ("template-label-dropped", "promql/template-label-dropped"),
        ("clean", ""),
        ("recording-rules", ""),
        ("multi-document", ""),
        ("empty", ""),
        ("regex-re2", ""),
    ];
    for file in corpus("good") {
        let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let Some((_, want)) = expected.iter().find(|(name, _)| *name == stem) else {
            panic!("fixture {stem} has no expected check in this test");
        };
        assert!(promtool_accepts(&file), "{stem}: promtool must accept the semantic fixtures");
        let outcome =
            LintOutcome::lint_paths(std::slice::from_ref(&file), &Config::default(), false)
                .unwrap_or_else(|e| panic!("{e}"));
        let found: Vec<&str> = outcome.diagnostics.iter().map(|d| d.check).collect();
        let want: Vec<&str> = if want.is_empty() { vec![] } else { vec![*want] };
        let mut unique = found.clone();
        unique.dedup();
        assert_eq!(unique, want, "{stem}: findings {found:?}");
    }
}

#[test]
fn kubernetes_manifests_are_linted_like_rule_files() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/rules/manifests/prometheusrule.yaml");
    let outcome = LintOutcome::lint_paths(&[file], &Config::default(), false)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(outcome.files[0].is_manifest);
    assert_eq!(
        outcome.rule_count(),
        1,
        "the ConfigMap document is skipped, the PrometheusRule read"
    );
    let unknown: Vec<_> =
        outcome.diagnostics.iter().filter(|d| d.check == "schema/unknown-field").collect();
    assert_eq!(unknown.len(), 1);
    assert_eq!((unknown[0].pos.line, unknown[0].pos.col), (19, 11));
}
