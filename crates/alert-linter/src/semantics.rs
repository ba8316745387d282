//! Offline checks of what rules mean: PromQL semantics, policy, and the
//! worst-case time from a fault to a notification.

use std::path::Path;
use std::time::Duration;

use promql_parser::label::MatchOp;
use promql_parser::parser::Expr;
use serde::Serialize;

use crate::config::Config;
use crate::diag::{Diagnostic, Edit, Fix};
use crate::model::{Group, Rule, RuleFile, format_duration};
use crate::promql::{self, COUNTER_FUNCTIONS, LabelSet, Narrowed, TWO_SAMPLE_FUNCTIONS};
use crate::template;

/// How long an alert takes, at worst, to notify after a fault starts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetectionTime {
    /// The alert.
    pub alert: String,
    /// Its severity label.
    pub severity: String,
    /// Worst case, in seconds.
    pub worst_case_seconds: f64,
    /// The target for its severity, in seconds (none: no target).
    pub target_seconds: Option<f64>,
}

/// Checks every rule of `file`; returns the detection time of each alert.
pub fn check(file: &RuleFile, config: &Config, out: &mut Vec<Diagnostic>) -> Vec<DetectionTime> {
    let mut times = Vec::new();
    for (group, rule) in file.rules() {
        let Some(expr_text) = &rule.expr else { continue };
        let Ok(expr) = promql::parse(&expr_text.value) else { continue };
        let mut ctx = Ctx { file, rule, config, out: &mut *out };
        ctx.rate_and_range(&expr);
        ctx.fragile_regex(&expr);
        ctx.impossible(&expr);
        if rule.alert.as_ref().is_some_and(|a| !a.value.is_empty()) && rule.record.is_none() {
            ctx.comparison(&expr);
            ctx.histogram_le(&expr);
            ctx.template_labels(&expr);
            ctx.policy();
            ctx.for_and_detection(group, &expr, &mut times);
        }
    }
    times
}

struct Ctx<'a> {
    file: &'a RuleFile,
    rule: &'a Rule,
    config: &'a Config,
    out: &'a mut Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn push(
        &mut self,
        check: &'static str,
        pos: crate::yaml::Pos,
        message: String,
        help: String,
    ) -> Option<&mut Diagnostic> {
        if !self.config.enabled(check) {
            return None;
        }
        let severity = crate::diag::default_severity(check);
        self.out.push(
            Diagnostic::new(check, severity, &self.file.path, pos, message)
                .help(help)
                .rule(self.rule.name()),
        );
        self.out.last_mut()
    }

    fn expr_pos(&self) -> crate::yaml::Pos {
        self.rule.expr.as_ref().map_or(self.rule.pos, |e| e.pos)
    }

    fn rate_and_range(&mut self, expr: &Expr) {
        let scrape = self.config.scrape_interval;
        for (vs, range, func) in promql::selectors(expr) {
            let (Some(range), Some(func)) = (range, func) else { continue };
            let name = promql::metric_name(vs).unwrap_or("");
            if COUNTER_FUNCTIONS.contains(&func) && !name.is_empty() && !looks_like_counter(name) {
                self.push(
                    "promql/rate-on-non-counter",
                    self.expr_pos(),
                    format!("{func}() on `{name}`, which is not named like a counter (_total, _count, _sum, _bucket)"),
                    format!("{func}() of a gauge is meaningless; use deriv() or delta() for gauges, or rename the counter to {name}_total"),
                );
            }
            let floor = if TWO_SAMPLE_FUNCTIONS.contains(&func) { 2 } else { 1 };
            let scrapes = self.config.min_range_scrapes.max(floor);
            let needed = scrape * scrapes;
            if range < needed {
                self.push(
                    "promql/range-too-short",
                    self.expr_pos(),
                    format!(
                        "{func}({name}[{}]) spans fewer than {scrapes} scrapes at a {} scrape interval: one missed scrape or a restart leaves it too few samples, and it returns nothing or a spike",
                        format_duration(range),
                        format_duration(scrape)
                    ),
                    format!(
                        "use a range of at least {} ({scrapes}x the scrape interval; `min_range_scrapes` in the config sets the multiple)",
                        format_duration(needed)
                    ),
                );
            }
        }
    }

    fn fragile_regex(&mut self, expr: &Expr) {
        let text = self.rule.expr.as_ref().map(|e| e.value.clone()).unwrap_or_default();
        for (vs, _, _) in promql::selectors(expr) {
            for m in &vs.matchers.matchers {
                let (MatchOp::Re(_) | MatchOp::NotRe(_)) = &m.op else { continue };
                let literal = !m.value.chars().any(|c| ".*+?()[]{}|^$\\".contains(c));
                if m.name == "__name__" {
                    self.push(
                        "promql/fragile-regex",
                        self.expr_pos(),
                        format!("regex on the metric name (`__name__=~{:?}`): the alert silently stops matching when a metric is renamed", m.value),
                        "select metrics by exact name".into(),
                    );
                } else if m.value == ".*" && matches!(m.op, MatchOp::Re(_)) {
                    self.push(
                        "promql/fragile-regex",
                        self.expr_pos(),
                        format!(
                            "`{}=~\".*\"` matches everything, including series without the label",
                            m.name
                        ),
                        "remove the matcher, or use `=~\".+\"` to require the label".into(),
                    );
                } else if literal && !m.value.is_empty() {
                    let op =
                        if matches!(m.op, MatchOp::Re(_)) { ("=~", "=") } else { ("!~", "!=") };
                    let from = format!("{}{}\"{}\"", m.name, op.0, m.value);
                    let to = format!("{}{}\"{}\"", m.name, op.1, m.value);
                    let fix = self.inline_fix(&from, &to, &text);
                    if let Some(d) = self.push(
                        "promql/fragile-regex",
                        self.expr_pos(),
                        format!("`{from}` is a regex without metacharacters: an equality matcher says the same, faster"),
                        format!("write `{to}`"),
                    ) {
                        d.fix = fix;
                    }
                }
            }
        }
    }

    /// A fix replacing `from` by `to` on the one source line holding it.
    fn inline_fix(&self, from: &str, to: &str, expr_text: &str) -> Option<Fix> {
        if expr_text.matches(from).count() != 1 {
            return None;
        }
        let expr = self.rule.expr.as_ref()?;
        let lines: Vec<&str> = self.file.text.lines().collect();
        let end = (expr.pos.line as usize + expr_text.lines().count() + 1).min(lines.len());
        let start = expr.pos.line as usize - 1;
        let hits: Vec<usize> = (start..end).filter(|&i| lines[i].contains(from)).collect();
        let [i] = hits.as_slice() else { return None };
        Some(Fix {
            description: format!("replace `{from}` with `{to}`"),
            edits: vec![Edit {
                start: *i as u32 + 1,
                end: *i as u32 + 1,
                lines: vec![lines[*i].replacen(from, to, 1)],
            }],
        })
    }

    fn impossible(&mut self, expr: &Expr) {
        let mut found = Vec::new();
        promql::walk(expr, &mut |e| {
            let Expr::Binary(b) = e else { return };
            if !b.op.is_comparison_operator() {
                return;
            }
            let op = b.op.to_string();
            let (range, value, op) = match (promql::unparen(&b.lhs), promql::unparen(&b.rhs)) {
                (Expr::NumberLiteral(_), Expr::NumberLiteral(_)) => {
                    let (l, r) = (promql::value_range(&b.lhs).0, promql::value_range(&b.rhs).0);
                    if !promql::compare(l, &op, r) {
                        found.push(format!(
                            "`{e}` is a comparison of two constants that is never true"
                        ));
                    }
                    return;
                }
                (_, Expr::NumberLiteral(n)) => (promql::value_range(&b.lhs), n.val, op),
                (Expr::NumberLiteral(n), _) => {
                    (promql::value_range(&b.rhs), n.val, promql::flip(&op).to_owned())
                }
                _ => return,
            };
            let (lo, hi) = range;
            let never = match op.as_str() {
                ">" => hi <= value,
                ">=" => hi < value,
                "<" => lo >= value,
                "<=" => lo > value,
                "==" => value < lo || value > hi,
                _ => false,
            };
            if never {
                found.push(format!(
                    "`{e}` can never be true: the left side is always within [{lo}, {hi}]"
                ));
            }
        });
        for message in found {
            self.push(
                "promql/impossible-comparison",
                self.expr_pos(),
                message,
                "fix the threshold or the operator".into(),
            );
        }
    }

    fn comparison(&mut self, expr: &Expr) {
        if !promql::filters(expr) {
            self.push(
                "promql/no-comparison",
                self.expr_pos(),
                "the alert expression has no comparison: it fires for every series it returns, i.e. always".into(),
                "add a threshold (`> 0.05`), or use absent() for missing data".into(),
            );
        }
    }

    fn histogram_le(&mut self, expr: &Expr) {
        let mut bad = Vec::new();
        promql::walk(expr, &mut |e| {
            let Expr::Call(call) = e else { return };
            if call.func.name != "histogram_quantile" {
                return;
            }
            let Some(arg) = call.args.args.get(1) else { return };
            if let Expr::Aggregate(agg) = promql::unparen(arg) {
                let keeps_le = match &agg.modifier {
                    Some(promql_parser::parser::LabelModifier::Include(by)) => {
                        by.labels.iter().any(|l| l == "le")
                    }
                    Some(promql_parser::parser::LabelModifier::Exclude(w)) => {
                        !w.labels.iter().any(|l| l == "le")
                    }
                    None => false,
                };
                if !keeps_le {
                    bad.push(format!("histogram_quantile over `{}` which drops the `le` label: it returns nothing", agg.op));
                }
            }
        });
        for message in bad {
            self.push(
                "promql/histogram-quantile-no-le",
                self.expr_pos(),
                message,
                "aggregate `by (le, ...)`".into(),
            );
        }
    }

    fn template_labels(&mut self, expr: &Expr) {
        let (set, why) = promql::output_labels(expr);
        for pair in self.rule.labels.iter().chain(&self.rule.annotations) {
            let Ok(used) = template::check(&pair.value.value) else { continue };
            for label in used {
                if set.may_have(&label) {
                    continue;
                }
                let kept = match &set {
                    LabelSet::Known(k) if k.is_empty() => "no labels".to_owned(),
                    LabelSet::Known(k) => {
                        format!("only {}", k.iter().cloned().collect::<Vec<_>>().join(", "))
                    }
                    LabelSet::AllBut(_) => "not this label".to_owned(),
                };
                let (check, help) = match why {
                    Narrowed::Absent => (
                        "promql/absent-labels",
                        "absent() returns only the labels of its `=` matchers: pin the label in the selector or drop it from the template",
                    ),
                    Narrowed::Other => (
                        "promql/template-label-dropped",
                        "keep the label in the aggregation (`by (...)`) or drop it from the template",
                    ),
                };
                self.push(
                    check,
                    pair.value.pos,
                    format!("`{}` uses `$labels.{label}`, but the expression's result keeps {kept}: it renders empty", pair.key.value),
                    help.into(),
                );
            }
        }
    }

    fn policy(&mut self) {
        let policy = &self.config.policy;
        let rule = self.rule;
        match rule.label("severity") {
            None => {
                self.push(
                    "policy/severity",
                    rule.labels_pos.unwrap_or(rule.pos),
                    "alert has no `severity` label".into(),
                    format!(
                        "add `severity:` under labels: one of {}",
                        policy.severities.join(", ")
                    ),
                );
            }
            Some(s) if !policy.severities.contains(&s.value) => {
                self.push(
                    "policy/severity",
                    s.pos,
                    format!(
                        "severity {:?} is not one of {}",
                        s.value,
                        policy.severities.join(", ")
                    ),
                    "use an allowed severity, or change `policy.severities` in the config".into(),
                );
            }
            Some(_) => {}
        }
        if rule.annotation("summary").is_none_or(|s| s.value.trim().is_empty()) {
            self.push("policy/summary-missing", rule.annotations_pos.unwrap_or(rule.pos), "alert has no `summary` annotation".into(), "add a one-line summary under annotations, e.g. \"{{ $labels.job }} error rate above 5%\"".into());
        }
        let key = policy.runbook_annotation.clone();
        match rule.annotation(&key) {
            None => {
                self.push(
                    "policy/runbook-missing",
                    rule.annotations_pos.unwrap_or(rule.pos),
                    format!("alert has no `{key}` annotation"),
                    "link the runbook the on-call person should follow".into(),
                );
            }
            Some(link) => {
                if let Some(local) =
                    local_runbook(&link.value, policy.runbook_url_prefix.as_deref())
                    && !runbook_exists(&self.file.path, &local)
                {
                    self.push(
                        "policy/runbook-not-found",
                        link.pos,
                        format!("runbook `{local}` does not exist"),
                        "write the runbook or fix the link".into(),
                    );
                }
            }
        }
        if !policy.owner_labels.iter().any(|l| rule.label(l).is_some()) {
            self.push(
                "policy/owner-missing",
                rule.labels_pos.unwrap_or(rule.pos),
                format!("alert has no owner label ({})", policy.owner_labels.join(" or ")),
                "say which team gets paged".into(),
            );
        }
    }

    fn for_and_detection(&mut self, group: &Group, expr: &Expr, times: &mut Vec<DetectionTime>) {
        let config = self.config;
        let rule = self.rule;
        let severity = rule.label("severity").map(|s| s.value.clone()).unwrap_or_default();
        let eval =
            group.interval.unwrap_or(config.evaluation_interval).max(Duration::from_millis(1));
        let for_ = rule.for_duration();
        if config.policy.paging_severities.contains(&severity) && for_ < config.policy.min_for {
            let pos = rule.for_.map_or(rule.pos, |(_, p)| p);
            self.push(
                "promql/for-missing",
                pos,
                format!(
                    "paging ({severity}) alert with `for: {}`: one noisy evaluation pages someone",
                    format_duration(for_)
                ),
                format!("set `for:` to at least {}", format_duration(config.policy.min_for)),
            );
        }
        if config.policy.paging_severities.contains(&severity) {
            let window = promql::shortest_window(expr).unwrap_or(Duration::ZERO);
            let needed = config.scrape_interval * config.policy.min_paging_scrapes;
            if for_ + window < needed {
                let pos = rule.for_.map_or(rule.pos, |(_, p)| p);
                self.push(
                    "detect/pages-on-noise",
                    pos,
                    format!(
                        "paging ({severity}) alert judges {} of evidence (`for: {}` over a {} window), fewer than {} scrapes at {}: one bad or missed scrape can page someone",
                        format_duration(for_ + window),
                        format_duration(for_),
                        format_duration(window),
                        config.policy.min_paging_scrapes,
                        format_duration(config.scrape_interval)
                    ),
                    format!(
                        "lengthen `for` or the shortest range so together they span at least {} (`policy.min_paging_scrapes` sets the count)",
                        format_duration(needed)
                    ),
                );
            }
        }
        let worst = detection_time(
            config.scrape_interval,
            eval,
            for_,
            promql::longest_window(expr),
            config.notification_delay,
        );
        let target = config.detection_targets.get(&severity).copied();
        if let Some(target) = target
            && worst > target
        {
            let pos = rule.alert.as_ref().map_or(rule.pos, |a| a.pos);
            self.push(
                "detect/slow-detection",
                pos,
                format!(
                    "worst-case detection {} exceeds the {severity} target {} (scrape {} + evaluation {} + for {} + half the {} window + notification {})",
                    format_duration(worst), format_duration(target), format_duration(config.scrape_interval),
                    format_duration(eval), format_duration(for_), format_duration(promql::longest_window(expr)),
                    format_duration(config.notification_delay)
                ),
                "shorten `for` or the range window, or lower the severity".into(),
            );
        }
        times.push(DetectionTime {
            alert: rule.name().unwrap_or_default().to_owned(),
            severity,
            worst_case_seconds: worst.as_secs_f64(),
            target_seconds: target.map(|t| t.as_secs_f64()),
        });
    }
}

/// Worst case from fault to notification: the fault lands just after a
/// scrape (one scrape interval to be seen) and just after an evaluation
/// (one evaluation interval); `for` is counted in whole evaluations; a
/// windowed function (rate, avg_over_time) crosses its threshold after
/// half its window for a fault of twice the threshold; then the
/// notification delay (Alertmanager `group_wait`).
pub fn detection_time(
    scrape: Duration,
    eval: Duration,
    for_: Duration,
    window: Duration,
    notify: Duration,
) -> Duration {
    let evals = for_.as_millis().div_ceil(eval.as_millis().max(1));
    let for_rounded = eval * u32::try_from(evals).unwrap_or(u32::MAX);
    scrape + eval + for_rounded + window / 2 + notify
}

fn looks_like_counter(name: &str) -> bool {
    name.contains(':')
        || ["_total", "_count", "_sum", "_bucket", "_created"].iter().any(|s| name.ends_with(s))
}

/// The repository path a runbook link points at, when it is local.
fn local_runbook(link: &str, prefix: Option<&str>) -> Option<String> {
    if let Some(rest) = prefix.and_then(|p| link.strip_prefix(p)) {
        return Some(rest.split('#').next().unwrap_or(rest).to_owned());
    }
    if link.contains("://") || link.is_empty() {
        return None;
    }
    Some(link.split('#').next().unwrap_or(link).to_owned())
}

/// Looks for `local` from the rules file's folder upwards.
fn runbook_exists(rules_file: &Path, local: &str) -> bool {
    let dir = rules_file.parent().map(Path::to_path_buf).unwrap_or_default();
    let dir = if dir.as_os_str().is_empty() { std::path::PathBuf::from(".") } else { dir };
    let start = dir.canonicalize().unwrap_or(dir);
    start.ancestors().any(|a| a.join(local).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_time_adds_up_the_delays() {
        let s = Duration::from_secs;
        assert_eq!(detection_time(s(10), s(10), s(15), s(60), s(10)), s(10 + 10 + 20 + 30 + 10));
        assert_eq!(detection_time(s(15), s(15), s(0), s(0), s(0)), s(30));
    }

    #[test]
    fn runbook_links_into_the_repo_are_local() {
        let prefix = Some("https://x/blob/main/");
        assert_eq!(
            local_runbook("https://x/blob/main/docs/a.md#s", prefix),
            Some("docs/a.md".into())
        );
        assert_eq!(local_runbook("https://wiki/a", prefix), None);
        assert_eq!(local_runbook("../runbooks/a.md", prefix), Some("../runbooks/a.md".into()));
    }
}
