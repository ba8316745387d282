//! No input makes the linter panic: arbitrary bytes, YAML-ish noise, and
//! mutations of real rule files all come back as findings.

use alert_linter::{Config, LintOutcome};
use proptest::prelude::*;

const SEED: &str = include_str!("../../../docs/alert-linter/marketplace-rules.yml");

fn lint(text: &str) -> LintOutcome {
    LintOutcome::lint_text("fuzz.yml", text, &Config::default())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let outcome = lint(&text);
        for d in &outcome.diagnostics {
            prop_assert!(d.pos.line >= 1 && d.pos.col >= 1);
        }
    }

    #[test]
    fn yaml_shaped_noise_never_panics(text in "(groups:|- |name: |rules:|  |alert: |expr: |for: |labels:|\\{\\{|\\}\\}|\\$labels\\.|[a-z0-9(){}\\[\\]=~\"'!<>:,.*]|\n){0,80}") {
        let _ = lint(&text);
    }

    #[test]
    fn mutated_marketplace_rules_never_panic(cut in 0usize..SEED.len(), len in 0usize..40, insert in "\\PC{0,12}") {
        let mut text: String = SEED.chars().take(cut).collect();
        text.push_str(&insert);
        text.extend(SEED.chars().skip(cut + len));
        let outcome = lint(&text);
        let _ = alert_linter::output::human(&outcome, alert_linter::Severity::Error, false, shared_types::ExitCode::Success);
        let _ = alert_linter::output::sarif(&outcome);
    }

    #[test]
    fn promql_and_templates_never_panic(expr in "[a-z_]{1,8}(\\{[a-z]+(=|=~|!=)\"[^\"]{0,6}\"\\})?(\\[[0-9]{1,3}[smh]\\])?( (>|<|==|and|or|/|by) [0-9a-z()]{1,6}){0,3}", template in "(\\{\\{|\\}\\}|\\$labels\\.[a-z]+|\\$value|humanize| |\\||if|end|else|\\$x :=|\"|[a-z]){0,20}") {
        let text = format!("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: {expr:?}\n    annotations:\n      summary: {template:?}\n");
        let _ = lint(&text);
    }
}
