//! Schema checks at parity with `promtool check rules` (Prometheus 2.42's
//! `rulefmt.Validate`): group names, record/alert, expr, recording-rule
//! restrictions, label and annotation names, templates, duplicates.

use std::collections::{BTreeMap, HashMap};

use crate::diag::{Diagnostic, Severity};
use crate::model::{Rule, RuleFile};
use crate::{promql, template};

/// `[a-zA-Z_][a-zA-Z0-9_]*`
pub fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
pub fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Runs every schema check on `file`.
pub fn check(file: &RuleFile, out: &mut Vec<Diagnostic>) {
    let path = &file.path;
    let mut seen: HashMap<&str, u32> = HashMap::new();
    let mut rule_keys: BTreeMap<(String, Vec<(String, String)>), u32> = BTreeMap::new();
    for group in &file.groups {
        if group.name.value.is_empty() {
            out.push(Diagnostic::new(
                "schema/group-name",
                Severity::Error,
                path,
                group.pos,
                "group name must not be empty",
            ));
        } else if let Some(first) = seen.insert(&group.name.value, group.name.pos.line) {
            out.push(
                Diagnostic::new(
                    "schema/group-name",
                    Severity::Error,
                    path,
                    group.name.pos,
                    format!("group name {:?} is repeated in the same file", group.name.value),
                )
                .help(format!("the first group with this name is on line {first}; rename one")),
            );
        }
        for rule in &group.rules {
            check_rule(file, rule, out);
            if let Some(name) = rule.name() {
                let mut labels: Vec<(String, String)> = rule
                    .labels
                    .iter()
                    .map(|p| (p.key.value.clone(), p.value.value.clone()))
                    .collect();
                labels.sort();
                let key = (name.to_owned(), labels);
                if let Some(first) = rule_keys.get(&key) {
                    out.push(
                        Diagnostic::new(
                            "schema/duplicate-rule",
                            Severity::Warning,
                            path,
                            rule.pos,
                            format!("rule {name:?} with the same labels is already defined on line {first}"),
                        )
                        .help("give one of them a distinguishing label or remove it")
                        .rule(Some(name)),
                    );
                } else {
                    rule_keys.insert(key, rule.pos.line);
                }
            }
        }
    }
}

fn check_rule(file: &RuleFile, rule: &Rule, out: &mut Vec<Diagnostic>) {
    let path = &file.path;
    let name = rule.name();
    let mut push = |check: &'static str, pos, message: String, help: &str| {
        let d = Diagnostic::new(check, Severity::Error, path, pos, message).rule(name);
        out.push(if help.is_empty() { d } else { d.help(help) });
    };
    let alert = rule.alert.as_ref().filter(|a| !a.value.is_empty());
    let record = rule.record.as_ref().filter(|r| !r.value.is_empty());
    match (alert, record) {
        (Some(_), Some(r)) => push(
            "schema/record-or-alert",
            r.pos,
            "only one of `record` and `alert` may be set".into(),
            "split it into a recording rule and an alert on the recorded series",
        ),
        (None, None) => push(
            "schema/record-or-alert",
            rule.pos,
            "one of `record` or `alert` must be set".into(),
            "",
        ),
        _ => {}
    }
    match rule.expr.as_ref().filter(|e| !e.value.trim().is_empty()) {
        None => {
            push("schema/expr-invalid", rule.pos, "field `expr` must be set in rule".into(), "")
        }
        Some(expr) => {
            if let Err(e) = promql::parse(&expr.value) {
                push(
                    "schema/expr-invalid",
                    expr.pos,
                    format!("could not parse expression: {}", first_line(&e)),
                    "try the expression in the Prometheus UI; promtool rejects it too",
                );
            }
        }
    }
    if let Some(record) = record {
        if !rule.annotations.is_empty() {
            let pos = rule.annotations_pos.unwrap_or(rule.pos);
            push(
                "schema/recording-rule",
                pos,
                "invalid field `annotations` in recording rule".into(),
                "annotations belong on alerts",
            );
        }
        if let Some((d, pos)) = rule.for_
            && !d.is_zero()
        {
            push("schema/recording-rule", pos, "invalid field `for` in recording rule".into(), "");
        }
        if let Some((d, pos)) = rule.keep_firing_for
            && !d.is_zero()
        {
            push(
                "schema/recording-rule",
                pos,
                "invalid field `keep_firing_for` in recording rule".into(),
                "",
            );
        }
        if !is_metric_name(&record.value) {
            push(
                "schema/recording-rule",
                record.pos,
                format!("invalid recording rule name: {:?}", record.value),
                "use level:metric:operations, e.g. job:http_requests:rate5m",
            );
        }
    }
    for pair in &rule.labels {
        if !is_label_name(&pair.key.value) || pair.key.value == "__name__" {
            push(
                "schema/label-name",
                pair.key.pos,
                format!("invalid label name: {:?}", pair.key.value),
                "label names match [a-zA-Z_][a-zA-Z0-9_]*",
            );
        }
    }
    for pair in &rule.annotations {
        if !is_label_name(&pair.key.value) {
            push(
                "schema/label-name",
                pair.key.pos,
                format!("invalid annotation name: {:?}", pair.key.value),
                "annotation names match [a-zA-Z_][a-zA-Z0-9_]*",
            );
        }
    }
    if alert.is_some() {
        for (kind, pair) in rule
            .labels
            .iter()
            .map(|p| ("label", p))
            .chain(rule.annotations.iter().map(|p| ("annotation", p)))
        {
            if let Err(e) = template::check(&pair.value.value) {
                push(
                    "schema/template-invalid",
                    pair.value.pos,
                    format!("{kind} {:?}: template: {}", pair.key.value, e.message),
                    "templates use Go text/template with Prometheus's functions ($labels, $value, humanize...)",
                );
            }
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}
