//! Coverage: which critical path is watched by which alert, and which is not.

use promql_parser::label::MatchOp;
use regex::Regex;
use serde::Serialize;

use crate::config::{Coverage, CriticalPath};
use crate::model::RuleFile;
use crate::promql;

/// The outcome for one path (and one service, for per-service paths).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathCoverage {
    /// Path id, e.g. `http-error-rate`.
    pub path: String,
    /// The service, for per-service paths.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// What the path is.
    pub description: String,
    /// Alerts that watch it.
    pub alerts: Vec<String>,
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
        let regexes: Vec<Regex> =
            path.metrics.iter().filter_map(|m| Regex::new(&format!("^(?:{m})$")).ok()).collect();
        let services: Vec<Option<&str>> = if path.per_service {
            coverage.services.iter().map(|s| Some(s.as_str())).collect()
        } else {
            vec![None]
        };
        for service in services {
            let mut alerts = Vec::new();
            for file in files {
                for (_, rule) in file.rules() {
                    let (Some(alert), Some(expr)) = (&rule.alert, &rule.expr) else { continue };
                    let Ok(parsed) = promql::parse(&expr.value) else { continue };
                    if watches(&parsed, path, &regexes, service, &coverage.service_label)
                        && !alerts.contains(&alert.value)
                    {
                        alerts.push(alert.value.clone());
                    }
                }
            }
            out.push(PathCoverage {
                path: path.id.clone(),
                service: service.map(str::to_owned),
                description: path.description.clone(),
                alerts,
            });
        }
    }
    out
}

fn watches(
    expr: &promql_parser::parser::Expr,
    path: &CriticalPath,
    regexes: &[Regex],
    service: Option<&str>,
    service_label: &str,
) -> bool {
    promql::selectors(expr).into_iter().any(|(vs, _, _)| {
        let Some(name) = promql::metric_name(vs) else { return false };
        if !regexes.iter().any(|r| r.is_match(name)) {
            return false;
        }
        if let Some(label) = &path.requires_label
            && !vs.matchers.matchers.iter().any(|m| &m.name == label)
        {
            return false;
        }
        let Some(service) = service else { return true };
        vs.matchers.matchers.iter().filter(|m| m.name == service_label).all(|m| match &m.op {
            MatchOp::Equal => m.value == service,
            MatchOp::NotEqual => m.value != service,
            MatchOp::Re(re) => Regex::new(&format!(
                "^(?:{})$",
                re.as_str().trim_start_matches('^').trim_end_matches('$')
            ))
            .map(|r| r.is_match(service))
            .unwrap_or(true),
            MatchOp::NotRe(_) => true,
        })
    })
}
