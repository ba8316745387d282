//! Coverage: which critical path is watched by which alert, and which is not.
//!
//! An alert watches a path when one of its selectors reads one of the path's
//! metrics, selects the path's label values with positive matchers (`=`,
//! `=~`; a `!=` or `!~` never counts), selects the service (for per-service
//! paths), and, where the plan sets a condition (error rate > 5 % for 5m),
//! compares that selector's side of the expression with a constant so that
//! it fires whenever the plan's condition holds, with a `for` no longer than
//! the plan's. An alert on the right metric that misses the condition is
//! listed as a near miss with the reason.

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{Expr, VectorSelector};
use regex::Regex;
use serde::Serialize;

use crate::config::{Comparison, Coverage, CriticalPath, PathThreshold};
use crate::model::{RuleFile, format_duration};
use crate::promql;

/// The outcome for one path (and one service, for per-service paths).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathCoverage {
    /// Path id, e.g. `http-error-rate`.
    pub path: String,
    /// The service, for per-service paths.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// What the path is.
    pub description: String,
    /// The plan's condition, e.g. `> 0.05 for 5m`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// Alerts that watch it.
    pub alerts: Vec<String>,
    /// Alerts on the path's metrics that do not meet the plan's condition.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub near_misses: Vec<NearMiss>,
}

/// An alert that reads a path's metrics but does not cover it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NearMiss {
    /// The alert.
    pub alert: String,
    /// Why it does not count, e.g. `fires at > 0.5, the plan at > 0.05`.
    pub reason: String,
}

impl PathCoverage {
    /// `http-error-rate` or `http-error-rate[auth]`.
    pub fn key(&self) -> String {
        match &self.service {
            Some(s) => format!("{}[{s}]", self.path),
            None => self.path.clone(),
        }
    }
}

/// Matches every alert of `files` against the critical paths.
pub fn evaluate(files: &[RuleFile], coverage: &Coverage) -> Vec<PathCoverage> {
    let mut out = Vec::new();
    for path in &coverage.paths {
        // Config::from_yaml refuses bad regexes; one built in code that does
        // not compile matches nothing rather than everything.
        let regexes: Vec<Regex> =
            path.metrics.iter().filter_map(|m| Regex::new(&format!("^(?:{m})$")).ok()).collect();
        let services: Vec<Option<&str>> = if path.per_service {
            coverage.services.iter().map(|s| Some(s.as_str())).collect()
        } else {
            vec![None]
        };
        for service in services {
            let mut alerts = Vec::new();
            let mut near_misses = Vec::new();
            for file in files {
                for (_, rule) in file.rules() {
                    let (Some(alert), Some(expr)) = (&rule.alert, &rule.expr) else { continue };
                    // An expression that does not parse (an invalid regex
                    // among them) watches nothing.
                    let Ok(parsed) = promql::parse(&expr.value) else { continue };
                    let watch = |vs: &VectorSelector| {
                        watches(vs, path, &regexes, service, &coverage.service_label)
                    };
                    if !promql::selectors(&parsed).into_iter().any(|(vs, _, _)| watch(vs)) {
                        continue;
                    }
                    let verdict = match &path.threshold {
                        None => Ok(()),
                        Some(plan) => meets(&parsed, rule.for_duration(), plan, &watch),
                    };
                    let name = alert.value.clone();
                    match verdict {
                        Ok(()) if !alerts.contains(&name) => alerts.push(name),
                        Ok(()) => {}
                        Err(reason) => near_misses.push(NearMiss { alert: name, reason }),
                    }
                }
            }
            out.push(PathCoverage {
                path: path.id.clone(),
                service: service.map(str::to_owned),
                description: path.description.clone(),
                condition: path.threshold.as_ref().map(ToString::to_string),
                alerts,
                near_misses,
            });
        }
    }
    out
}

/// Alerts that read a critical path's metrics (covering or near misses).
pub fn alerts_on_paths(coverage: &[PathCoverage]) -> Vec<String> {
    let mut names: Vec<String> = coverage
        .iter()
        .flat_map(|c| c.alerts.iter().cloned().chain(c.near_misses.iter().map(|m| m.alert.clone())))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Whether a selector reads the path's metric with the path's label values
/// and selects `service`.
fn watches(
    vs: &VectorSelector,
    path: &CriticalPath,
    regexes: &[Regex],
    service: Option<&str>,
    service_label: &str,
) -> bool {
    let Some(name) = promql::metric_name(vs) else { return false };
    if !regexes.iter().any(|r| r.is_match(name)) {
        return false;
    }
    let on = |label: &str| -> Vec<&Matcher> {
        vs.matchers.matchers.iter().filter(|m| m.name == label).collect()
    };
    if let Some(label) = &path.requires_label {
        let matchers = on(label);
        let positive = matchers.iter().any(|m| matches!(m.op, MatchOp::Equal | MatchOp::Re(_)));
        if !positive {
            return false;
        }
        if !path.requires_values.is_empty()
            && !path.requires_values.iter().any(|v| matchers.iter().all(|m| m.is_match(v)))
        {
            return false;
        }
    }
    // No matcher on the service label: every service is selected. Each
    // matcher, negative ones included, must select the service; the parser
    // has compiled (and anchored) every regex, so `is_match` is PromQL's.
    service.is_none_or(|service| on(service_label).iter().all(|m| m.is_match(service)))
}

/// Whether the alert fires whenever the plan's condition holds: a
/// comparison of a watching side with a constant that the plan's condition
/// implies, and a `for` no longer than the plan's.
fn meets(
    expr: &Expr,
    for_: std::time::Duration,
    plan: &PathThreshold,
    watch: &dyn Fn(&VectorSelector) -> bool,
) -> Result<(), String> {
    let comparisons = comparisons(expr, watch);
    if comparisons.is_empty() {
        return Err(format!(
            "no comparison of the path's series with a constant (the plan: {})",
            plan
        ));
    }
    if !comparisons.iter().any(|(op, v)| implied(plan, op, *v)) {
        let seen: Vec<String> = comparisons.iter().map(|(op, v)| format!("{op} {v}")).collect();
        return Err(format!(
            "fires at {}, not whenever the plan's {} {} holds",
            seen.join(" / "),
            plan.op.as_str(),
            plan.value
        ));
    }
    if let Some(plan_for) = plan.for_
        && for_ > plan_for
    {
        return Err(format!(
            "for {} is longer than the plan's {}",
            format_duration(for_),
            format_duration(plan_for)
        ));
    }
    Ok(())
}

/// Every `<watched side> <op> <constant>` comparison in `expr` (without
/// `bool`), as (op, constant) with the watched side on the left and the
/// constant brought to the side's unit (`100 * x > 5` is `x > 0.05`).
fn comparisons(expr: &Expr, watch: &dyn Fn(&VectorSelector) -> bool) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    promql::walk(expr, &mut |e| {
        let Expr::Binary(b) = e else { return };
        if !b.op.is_comparison_operator() || b.modifier.as_ref().is_some_and(|m| m.return_bool) {
            return;
        }
        let op = b.op.to_string();
        let (side, op, value) = match (constant(&b.lhs), constant(&b.rhs)) {
            (None, Some(v)) => (&*b.lhs, op, v),
            (Some(v), None) => (&*b.rhs, promql::flip(&op).to_owned(), v),
            _ => return,
        };
        if !promql::selectors(side).into_iter().any(|(vs, _, _)| watch(vs)) {
            return;
        }
        if let Some((op, value)) = unscale(side, op, value) {
            out.push((op, value));
        }
    });
    out
}

/// Brings `side op value` to the unit of the series inside `side`:
/// `100 * x > 5` and `100 * a / b > 5` are `x > 0.05` and `a / b > 0.05`,
/// `x / 60 > 2` is `x > 120`. A negative factor flips the operator.
fn unscale(side: &Expr, op: String, value: f64) -> Option<(String, f64)> {
    let factor = factor(side);
    if factor == 0.0 || !factor.is_finite() {
        return None;
    }
    let op = if factor < 0.0 { promql::flip(&op).to_owned() } else { op };
    Some((op, value / factor))
}

/// The constant factor of a product or quotient (`100 * a / b` is 100),
/// through aggregations that keep the scale.
fn factor(expr: &Expr) -> f64 {
    match promql::unparen(expr) {
        Expr::Binary(b) => {
            let side = |e: &Expr| constant(e).unwrap_or_else(|| factor(e));
            match b.op.to_string().as_str() {
                "*" => side(&b.lhs) * side(&b.rhs),
                "/" => side(&b.lhs) / side(&b.rhs),
                _ => 1.0,
            }
        }
        Expr::Aggregate(agg) if matches!(agg.op.to_string().as_str(), "max" | "min" | "avg") => {
            factor(&agg.expr)
        }
        _ => 1.0,
    }
}

/// Whether every value the plan's condition accepts also trips `op v`.
fn implied(plan: &PathThreshold, op: &str, v: f64) -> bool {
    let p = plan.value;
    match plan.op {
        Comparison::Equal => promql::compare(p, op, v),
        Comparison::Greater => matches!(op, ">" | ">=") && v <= p,
        Comparison::GreaterOrEqual => (op == ">=" && v <= p) || (op == ">" && v < p),
        Comparison::Less => matches!(op, "<" | "<=") && v >= p,
        Comparison::LessOrEqual => (op == "<=" && v >= p) || (op == "<" && v > p),
    }
}

/// The value of a constant expression (`0.05`, `26 * 3600`, `-(1)`).
fn constant(expr: &Expr) -> Option<f64> {
    match promql::unparen(expr) {
        Expr::NumberLiteral(n) => Some(n.val),
        Expr::Unary(u) => constant(&u.expr).map(|v| -v),
        Expr::Binary(b) => {
            let (l, r) = (constant(&b.lhs)?, constant(&b.rhs)?);
            match b.op.to_string().as_str() {
                "+" => Some(l + r),
                "-" => Some(l - r),
                "*" => Some(l * r),
                "/" => Some(l / r),
                "^" => Some(l.powf(r)),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn covering(rules: &str, path: &str) -> (Vec<String>, Vec<NearMiss>) {
        let text = format!("groups:\n- name: g\n  rules:\n{rules}");
        let file = crate::model::parse_file(std::path::Path::new("r.yml"), &text, &mut Vec::new());
        let coverage = evaluate(&[file], &Config::default().coverage);
        let entries: Vec<&PathCoverage> = coverage.iter().filter(|c| c.key() == path).collect();
        assert_eq!(entries.len(), 1, "{path} in {coverage:?}");
        (entries[0].alerts.clone(), entries[0].near_misses.clone())
    }

    fn alert(name: &str, expr: &str, for_: &str) -> String {
        format!("  - alert: {name}\n    expr: '{expr}'\n    for: {for_}\n")
    }

    #[test]
    fn negative_matchers_do_not_count_as_coverage() {
        // `status!~"2.."` is not "5xx"; `job!~"auth"` is everything but auth.
        let rules = alert(
            "NotErrors",
            r#"sum by (job) (rate(http_requests_total{status!~"2.."}[5m])) / sum by (job) (rate(http_requests_total[5m])) > 0.05"#,
            "5m",
        ) + &alert(
            "NotAuth",
            r#"sum by (job) (rate(http_requests_total{status=~"5..", job!~"auth"}[5m])) / sum by (job) (rate(http_requests_total[5m])) > 0.05"#,
            "5m",
        ) + &alert("AuthUpNot", r#"up{job!="auth"} == 0"#, "30s");
        let (alerts, _) = covering(&rules, "http-error-rate[auth]");
        assert!(alerts.is_empty(), "{alerts:?}");
        let (alerts, _) = covering(&rules, "http-error-rate[user]");
        assert_eq!(alerts, ["NotAuth"]);
        assert!(covering(&rules, "availability[auth]").0.is_empty());
        assert_eq!(covering(&rules, "availability[user]").0, ["AuthUpNot"]);
        // 4xx are not the errors the path is about.
        let rules = alert(
            "SignInRejected",
            r#"sum by (job) (rate(http_requests_total{status=~"4.."}[5m])) / sum by (job) (rate(http_requests_total[5m])) > 0.05"#,
            "5m",
        );
        assert!(covering(&rules, "http-error-rate[auth]").0.is_empty());
    }

    #[test]
    fn invalid_regexes_do_not_count_as_coverage() {
        // `(?<name>...)` compiles in Rust but not in Prometheus 2.42's Go RE2.
        let rules = alert("Broken", r#"up{job=~"(auth"} == 0"#, "30s")
            + &alert("GoRefuses", r#"up{job=~"(?<svc>auth)"} == 0"#, "30s")
            + &alert(
                "BrokenErrors",
                r#"rate(http_requests_total{status=~"5..(", job="auth"}[5m]) > 0.05"#,
                "1m",
            );
        assert!(covering(&rules, "availability[auth]").0.is_empty());
        assert!(covering(&rules, "http-error-rate[auth]").0.is_empty());
        // Positive, valid regexes do count.
        let rules = alert("Up", r#"up{job=~"auth|user"} == 0"#, "30s");
        assert_eq!(covering(&rules, "availability[auth]").0, ["Up"]);
        assert!(covering(&rules, "availability[media]").0.is_empty());
    }

    #[test]
    fn thresholds_and_for_are_the_plans() {
        let ratio = r#"sum by (job) (rate(http_requests_total{status=~"5.."}[5m])) / sum by (job) (rate(http_requests_total[5m]))"#;
        let rules = alert("Right", &format!("{ratio} > 0.05"), "5m")
            + &alert("Percent", &format!("100 * {ratio} > 5"), "2m")
            + &alert("Flipped", &format!("0.05 < {ratio}"), "5m")
            + &alert("TooHigh", &format!("{ratio} > 0.5"), "5m")
            + &alert("TooLong", &format!("{ratio} > 0.05"), "15m")
            + &alert("WrongWay", &format!("{ratio} < 0.05"), "5m");
        let (alerts, misses) = covering(&rules, "http-error-rate[auth]");
        assert_eq!(alerts, ["Right", "Percent", "Flipped"]);
        let reason = |name: &str| {
            misses.iter().find(|m| m.alert == name).map(|m| m.reason.clone()).unwrap_or_default()
        };
        assert!(reason("TooHigh").contains("fires at > 0.5"), "{misses:?}");
        assert!(reason("TooLong").contains("for 15m is longer than the plan's 5m"), "{misses:?}");
        assert!(reason("WrongWay").contains("fires at < 0.05"), "{misses:?}");

        let pool = "max by (job) (db_connections_in_use / db_connections_max)";
        let rules = alert("Pool", &format!("{pool} > 0.9"), "1m")
            + &alert("PoolLate", &format!("{pool} > 0.95"), "1m")
            + &alert("PoolSlow", &format!("{pool} > 0.9"), "5m");
        let (alerts, misses) = covering(&rules, "db-pool-saturation");
        assert_eq!(alerts, ["Pool"]);
        assert_eq!(misses.len(), 2, "{misses:?}");

        let open = r#"max by (job, dependency) (circuit_breaker_state{state="open"})"#;
        let rules = alert("Open", &format!("{open} == 1"), "2m")
            + &alert("OpenAny", &format!("{open} > 0"), "1m")
            + &alert("OpenLong", &format!("{open} == 1"), "10m")
            + &alert("Closed", r#"max(circuit_breaker_state{state="closed"}) == 0"#, "2m");
        let (alerts, misses) = covering(&rules, "circuit-breakers");
        assert_eq!(alerts, ["Open", "OpenAny"]);
        assert_eq!(misses.iter().map(|m| m.alert.as_str()).collect::<Vec<_>>(), ["OpenLong"]);
    }
}
