//! PromQL analysis on top of `promql-parser`: parsing at Prometheus 2.42
//! level, walking, the labels an expression keeps, value ranges.

use std::collections::BTreeSet;
use std::time::Duration;

use promql_parser::label::MatchOp;
use promql_parser::parser::{self, Expr, LabelModifier, VectorMatchCardinality, VectorSelector};

/// Functions of Prometheus 2.42 (newer parsers know more; promtool 2.42 rejects those).
const FUNCTIONS_2_42: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atanh",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "cos",
    "cosh",
    "count_over_time",
    "days_in_month",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "deg",
    "delta",
    "deriv",
    "exp",
    "floor",
    "histogram_count",
    "histogram_fraction",
    "histogram_quantile",
    "histogram_sum",
    "holt_winters",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_replace",
    "label_join",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "max_over_time",
    "min_over_time",
    "minute",
    "month",
    "pi",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rad",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sin",
    "sinh",
    "sort",
    "sort_desc",
    "sqrt",
    "stddev_over_time",
    "stdvar_over_time",
    "sum_over_time",
    "tan",
    "tanh",
    "time",
    "timestamp",
    "vector",
    "year",
];

const AGGREGATORS_2_42: &[&str] = &[
    "sum",
    "avg",
    "count",
    "min",
    "max",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "count_values",
    "quantile",
];

/// Functions that need two samples in their range.
pub const TWO_SAMPLE_FUNCTIONS: &[&str] = &[
    "rate",
    "irate",
    "increase",
    "delta",
    "idelta",
    "deriv",
    "resets",
    "changes",
    "predict_linear",
];

/// Functions whose input must be a counter.
pub const COUNTER_FUNCTIONS: &[&str] = &["rate", "irate", "increase", "resets"];

/// Parses `text` as Prometheus 2.42 would: syntax by `promql-parser`, then
/// rejecting functions, aggregations and modifiers 2.42 does not have.
pub fn parse(text: &str) -> Result<Expr, String> {
    let expr = parser::parse(text)?;
    let mut problem = None;
    walk(&expr, &mut |e| {
        if problem.is_some() {
            return;
        }
        match e {
            Expr::Call(call) if !FUNCTIONS_2_42.contains(&call.func.name) => {
                problem = Some(format!(
                    "function \"{}\" is not known to Prometheus 2.42",
                    call.func.name
                ));
            }
            Expr::Aggregate(agg) if !AGGREGATORS_2_42.contains(&agg.op.to_string().as_str()) => {
                problem =
                    Some(format!("aggregation \"{}\" is not known to Prometheus 2.42", agg.op));
            }
            Expr::Binary(b)
                if b.modifier.as_ref().is_some_and(|m| {
                    m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some()
                }) =>
            {
                problem = Some("fill modifiers are not known to Prometheus 2.42".into());
            }
            _ => {}
        }
    });
    if problem.is_none() {
        problem = selectors(&expr).into_iter().find_map(|(vs, _, _)| {
            vs.matchers.matchers.iter().find_map(|m| match &m.op {
                MatchOp::Re(_) | MatchOp::NotRe(_) => re2_problem(&m.value)
                    .map(|p| format!("illegal regex for {}: error parsing regexp: {p}", m.value)),
                _ => None,
            })
        });
    }
    match problem {
        Some(p) => Err(p),
        None => Ok(expr),
    }
}

/// What Go's RE2 syntax (Prometheus) refuses in a regex that Rust's `regex`
/// accepts: `(?<name>...)` groups (Go before 1.22), flags other than `imsU`,
/// and repeat counts above 1000. Without this, a rule promtool rejects
/// would lint clean and count as coverage.
pub fn re2_problem(re: &str) -> Option<String> {
    let bytes = re.as_bytes();
    let mut i = 0;
    let mut in_class = false;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => {
                i += 2;
                continue;
            }
            b'[' if !in_class => in_class = true,
            b']' if in_class => in_class = false,
            b'(' if !in_class && bytes.get(i + 1) == Some(&b'?') => {
                let rest = &re[i + 2..];
                if rest.starts_with('<') {
                    return Some("invalid or unsupported Perl syntax: `(?<`".into());
                }
                if !rest.starts_with('P') && !rest.starts_with(':') {
                    let flags: String =
                        rest.chars().take_while(|c| *c != ')' && *c != ':').collect();
                    if let Some(bad) = flags.chars().find(|c| !"imsU-".contains(*c)) {
                        return Some(format!(
                            "invalid or unsupported Perl syntax: `(?{flags}` (flag {bad:?})"
                        ));
                    }
                }
            }
            b'{' if !in_class => {
                let body: String = re[i + 1..].chars().take_while(|c| *c != '}').collect();
                let counts: Vec<&str> = body.split(',').collect();
                let numeric = counts.len() <= 2
                    && !counts[0].is_empty()
                    && counts.iter().all(|c| c.chars().all(|d| d.is_ascii_digit()));
                if numeric
                    && re[i + 1 + body.len()..].starts_with('}')
                    && counts.iter().any(|c| c.parse::<u64>().map_or(!c.is_empty(), |n| n > 1000))
                {
                    return Some(format!("invalid repeat count: `{{{body}}}`"));
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Calls `f` on `expr` and every sub-expression, parents first.
pub fn walk<'a>(expr: &'a Expr, f: &mut dyn FnMut(&'a Expr)) {
    f(expr);
    match expr {
        Expr::Aggregate(a) => {
            if let Some(p) = &a.param {
                walk(p, f);
            }
            walk(&a.expr, f);
        }
        Expr::Unary(u) => walk(&u.expr, f),
        Expr::Binary(b) => {
            walk(&b.lhs, f);
            walk(&b.rhs, f);
        }
        Expr::Paren(p) => walk(&p.expr, f),
        Expr::Subquery(s) => walk(&s.expr, f),
        Expr::MatrixSelector(m) => {
            // The inner vector selector is not an `Expr`; callers use `selectors`.
            let _ = m;
        }
        Expr::Call(c) => {
            for arg in &c.args.args {
                walk(arg, f);
            }
        }
        Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::VectorSelector(_)
        | Expr::Extension(_) => {}
    }
}

/// Every vector selector, including those inside range selectors, with
/// the range (if any) and the function applied directly to it (if any).
pub fn selectors(expr: &Expr) -> Vec<(&VectorSelector, Option<Duration>, Option<&'static str>)> {
    let mut out = Vec::new();
    walk(expr, &mut |e| match e {
        Expr::VectorSelector(vs) => out.push((vs, None, None)),
        Expr::Call(call) => {
            for arg in &call.args.args {
                if let Expr::MatrixSelector(m) = &**arg {
                    out.push((&m.vs, Some(m.range), Some(call.func.name)));
                }
            }
        }
        Expr::MatrixSelector(m) => out.push((&m.vs, Some(m.range), None)),
        _ => {}
    });
    // A vector selector directly under a function is also reported by the
    // walk with no function: keep the richer entry only.
    out
}

/// The metric name of a selector (`foo` or `{__name__="foo"}`).
pub fn metric_name(vs: &VectorSelector) -> Option<&str> {
    vs.name.as_deref().or_else(|| {
        vs.matchers
            .matchers
            .iter()
            .find(|m| m.name == "__name__" && m.op == MatchOp::Equal)
            .map(|m| m.value.as_str())
    })
}

/// Label names a selector pins with `=` (what `absent()` returns).
pub fn equality_labels(vs: &VectorSelector) -> BTreeSet<String> {
    vs.matchers
        .matchers
        .iter()
        .filter(|m| m.op == MatchOp::Equal && m.name != "__name__")
        .map(|m| m.name.clone())
        .collect()
}

/// `expr` without enclosing parentheses.
pub fn unparen(mut expr: &Expr) -> &Expr {
    while let Expr::Paren(p) = expr {
        expr = &p.expr;
    }
    expr
}

/// The labels the series of an expression's result can carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelSet {
    /// Exactly these labels (after `by (...)`, `absent()`, `on (...)`).
    Known(BTreeSet<String>),
    /// Whatever the input series had, minus these.
    AllBut(BTreeSet<String>),
}

impl LabelSet {
    /// Whether a series of this set can carry `label`.
    pub fn may_have(&self, label: &str) -> bool {
        match self {
            LabelSet::Known(set) => set.contains(label),
            LabelSet::AllBut(removed) => !removed.contains(label),
        }
    }

    fn minus(self, labels: &[String]) -> LabelSet {
        match self {
            LabelSet::Known(mut set) => {
                for l in labels {
                    set.remove(l);
                }
                LabelSet::Known(set)
            }
            LabelSet::AllBut(mut removed) => {
                removed.extend(labels.iter().cloned());
                LabelSet::AllBut(removed)
            }
        }
    }

    fn plus(self, labels: &[String]) -> LabelSet {
        match self {
            LabelSet::Known(mut set) => {
                set.extend(labels.iter().cloned());
                LabelSet::Known(set)
            }
            LabelSet::AllBut(mut removed) => {
                for l in labels {
                    removed.remove(l);
                }
                LabelSet::AllBut(removed)
            }
        }
    }

    fn union(self, other: LabelSet) -> LabelSet {
        match (self, other) {
            (LabelSet::Known(mut a), LabelSet::Known(b)) => {
                a.extend(b);
                LabelSet::Known(a)
            }
            (LabelSet::AllBut(a), LabelSet::AllBut(b)) => {
                LabelSet::AllBut(a.intersection(&b).cloned().collect())
            }
            (LabelSet::AllBut(removed), LabelSet::Known(known))
            | (LabelSet::Known(known), LabelSet::AllBut(removed)) => {
                LabelSet::AllBut(removed.difference(&known).cloned().collect())
            }
        }
    }
}

/// Why a label set is narrow: for naming the check that reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Narrowed {
    /// Nothing in particular.
    Other,
    /// `absent()` / `absent_over_time()` decided the labels.
    Absent,
}

/// The labels `expr`'s result series carry, and what narrowed them.
pub fn output_labels(expr: &Expr) -> (LabelSet, Narrowed) {
    let empty = || LabelSet::Known(BTreeSet::new());
    match expr {
        Expr::VectorSelector(_) | Expr::MatrixSelector(_) => {
            (LabelSet::AllBut(BTreeSet::new()), Narrowed::Other)
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {
            (empty(), Narrowed::Other)
        }
        Expr::Paren(p) => output_labels(&p.expr),
        Expr::Unary(u) => output_labels(&u.expr),
        Expr::Subquery(s) => output_labels(&s.expr),
        Expr::Aggregate(agg) => {
            let op = agg.op.to_string();
            let (inner, why) = output_labels(&agg.expr);
            if op == "topk" || op == "bottomk" {
                return (inner, why);
            }
            let mut set = match &agg.modifier {
                Some(LabelModifier::Include(by)) => {
                    LabelSet::Known(by.labels.iter().cloned().collect())
                }
                Some(LabelModifier::Exclude(without)) => inner.minus(&without.labels),
                None => empty(),
            };
            if op == "count_values"
                && let Some(param) = &agg.param
                && let Expr::StringLiteral(s) = unparen(param)
            {
                set = set.plus(std::slice::from_ref(&s.val));
            }
            (set, Narrowed::Other)
        }
        Expr::Call(call) => {
            let args = &call.args.args;
            match call.func.name {
                "absent" | "absent_over_time" => {
                    let labels = match args.first().map(|a| unparen(a)) {
                        Some(Expr::VectorSelector(vs)) => equality_labels(vs),
                        Some(Expr::MatrixSelector(m)) => equality_labels(&m.vs),
                        _ => BTreeSet::new(),
                    };
                    (LabelSet::Known(labels), Narrowed::Absent)
                }
                "scalar" | "time" | "vector" | "pi" | "year" | "month" | "day_of_month"
                | "day_of_week" | "day_of_year" | "hour" | "minute" | "days_in_month"
                    if args.is_empty()
                        || call.func.name == "vector"
                        || call.func.name == "scalar" =>
                {
                    (empty(), Narrowed::Other)
                }
                "label_replace" | "label_join" => {
                    let (inner, why) =
                        args.first().map_or((empty(), Narrowed::Other), |a| output_labels(a));
                    match args.get(1).map(|a| unparen(a)) {
                        Some(Expr::StringLiteral(dst)) => {
                            (inner.plus(std::slice::from_ref(&dst.val)), why)
                        }
                        _ => (inner, why),
                    }
                }
                "histogram_quantile" => {
                    let (inner, why) =
                        args.get(1).map_or((empty(), Narrowed::Other), |a| output_labels(a));
                    (inner.minus(&["le".to_owned()]), why)
                }
                _ => args
                    .iter()
                    .map(|a| output_labels(a))
                    .find(|(set, _)| *set != empty() || args.len() == 1)
                    .unwrap_or((empty(), Narrowed::Other)),
            }
        }
        Expr::Binary(b) => {
            let (lhs, lwhy) = output_labels(&b.lhs);
            let (rhs, rwhy) = output_labels(&b.rhs);
            let lscalar = is_scalar(&b.lhs);
            let rscalar = is_scalar(&b.rhs);
            if lscalar && rscalar {
                return (empty(), Narrowed::Other);
            }
            if rscalar {
                return (lhs, lwhy);
            }
            if lscalar {
                return (rhs, rwhy);
            }
            let op = b.op.to_string();
            if op == "or" {
                return (lhs.union(rhs), Narrowed::Other);
            }
            if op == "and" || op == "unless" {
                return (lhs, lwhy);
            }
            let Some(modifier) = &b.modifier else { return (lhs, lwhy) };
            match &modifier.card {
                VectorMatchCardinality::ManyToOne(extra) => (lhs.plus(&extra.labels), lwhy),
                VectorMatchCardinality::OneToMany(extra) => (rhs.plus(&extra.labels), rwhy),
                _ => match &modifier.matching {
                    Some(LabelModifier::Include(on)) => {
                        (LabelSet::Known(on.labels.iter().cloned().collect()), Narrowed::Other)
                    }
                    Some(LabelModifier::Exclude(ignoring)) => (lhs.minus(&ignoring.labels), lwhy),
                    None => (lhs, lwhy),
                },
            }
        }
    }
}

/// Whether `expr` evaluates to a scalar (a number, `scalar()`, `time()`).
pub fn is_scalar(expr: &Expr) -> bool {
    expr.value_type() == parser::value::ValueType::Scalar
}

/// The values `expr` can take, when the operators make it knowable.
pub fn value_range(expr: &Expr) -> (f64, f64) {
    const ANY: (f64, f64) = (f64::NEG_INFINITY, f64::INFINITY);
    const NON_NEGATIVE: (f64, f64) = (0.0, f64::INFINITY);
    match unparen(expr) {
        Expr::NumberLiteral(n) => (n.val, n.val),
        Expr::VectorSelector(vs) if metric_name(vs) == Some("up") => (0.0, 1.0),
        Expr::Call(call) => {
            let arg = call.args.args.first();
            let arg_range = || arg.map_or(ANY, |a| value_range(a));
            match call.func.name {
                "absent" | "absent_over_time" | "present_over_time" => (1.0, 1.0),
                "rate" | "irate" | "increase" | "resets" | "changes" | "count_over_time"
                | "histogram_count" | "abs" | "sqrt" | "exp" => NON_NEGATIVE,
                "clamp_min" => {
                    (literal(call.args.args.get(1)).unwrap_or(f64::NEG_INFINITY), arg_range().1)
                }
                "clamp_max" => {
                    (arg_range().0, literal(call.args.args.get(1)).unwrap_or(f64::INFINITY))
                }
                "clamp" => (
                    literal(call.args.args.get(1)).unwrap_or(f64::NEG_INFINITY),
                    literal(call.args.args.get(2)).unwrap_or(f64::INFINITY),
                ),
                "avg_over_time" | "min_over_time" | "max_over_time" | "last_over_time"
                | "round" | "ceil" | "floor" => arg_range(),
                _ => ANY,
            }
        }
        Expr::Aggregate(agg) => {
            let inner = value_range(&agg.expr);
            match agg.op.to_string().as_str() {
                "count" => (1.0, f64::INFINITY),
                "group" => (1.0, 1.0),
                "avg" | "min" | "max" | "topk" | "bottomk" | "quantile" => inner,
                "sum" if inner.0 >= 0.0 => NON_NEGATIVE,
                _ => ANY,
            }
        }
        _ => ANY,
    }
}

#[allow(clippy::borrowed_box)] // the parser's argument list holds boxes
fn literal(expr: Option<&Box<Expr>>) -> Option<f64> {
    match expr.map(|e| unparen(e.as_ref())) {
        Some(Expr::NumberLiteral(n)) => Some(n.val),
        Some(Expr::Unary(u)) => match unparen(&u.expr) {
            Expr::NumberLiteral(n) => Some(-n.val),
            _ => None,
        },
        _ => None,
    }
}

/// Whether `expr` filters (a comparison without `bool`, `absent()`, or a set
/// operation over such), i.e. can return nothing when all is well.
pub fn filters(expr: &Expr) -> bool {
    match unparen(expr) {
        Expr::Binary(b) => {
            let op = b.op;
            if op.is_comparison_operator() {
                return !b.modifier.as_ref().is_some_and(|m| m.return_bool);
            }
            if op.is_set_operator() {
                let name = op.to_string();
                return if name == "or" {
                    filters(&b.lhs) && filters(&b.rhs)
                } else {
                    filters(&b.lhs) || (name == "and" && filters(&b.rhs))
                };
            }
            // Arithmetic on a filtered vector stays filtered.
            (!is_scalar(&b.lhs) && filters(&b.lhs)) || (!is_scalar(&b.rhs) && filters(&b.rhs))
        }
        Expr::Call(call) => {
            matches!(call.func.name, "absent" | "absent_over_time")
                || (call.func.name != "vector"
                    && call.args.args.iter().any(|a| !is_scalar(a) && filters(a)))
        }
        Expr::Aggregate(agg) => filters(&agg.expr) && agg.op.to_string() != "count",
        _ => false,
    }
}

/// The longest range window (matrix selectors and subqueries) in `expr`.
pub fn longest_window(expr: &Expr) -> Duration {
    let mut longest = Duration::ZERO;
    walk(expr, &mut |e| match e {
        Expr::Call(call) => {
            for arg in &call.args.args {
                if let Expr::MatrixSelector(m) = &**arg {
                    longest = longest.max(m.range);
                }
            }
        }
        Expr::Subquery(s) => longest = longest.max(s.range),
        _ => {}
    });
    longest
}

/// `l OP r` for a PromQL comparison operator (`!=` for anything else).
pub fn compare(l: f64, op: &str, r: f64) -> bool {
    match op {
        ">" => l > r,
        ">=" => l >= r,
        "<" => l < r,
        "<=" => l <= r,
        "==" => l == r,
        _ => l != r,
    }
}

/// The operator with its sides swapped (`5 < x` is `x > 5`).
pub fn flip(op: &str) -> &str {
    match op {
        ">" => "<",
        ">=" => "<=",
        "<" => ">",
        "<=" => ">=",
        other => other,
    }
}

/// The shortest range window (matrix selector or subquery) in `expr`;
/// `None` when it has none (an instant gauge comparison).
pub fn shortest_window(expr: &Expr) -> Option<Duration> {
    let mut shortest: Option<Duration> = None;
    let mut see = |d: Duration| shortest = Some(shortest.map_or(d, |s| s.min(d)));
    walk(expr, &mut |e| match e {
        Expr::Call(call) => {
            for arg in &call.args.args {
                if let Expr::MatrixSelector(m) = &**arg {
                    see(m.range);
                }
            }
        }
        Expr::Subquery(s) => see(s.range),
        _ => {}
    });
    shortest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shortest_window_is_found() {
        let e = parse("rate(a_total[5m]) / rate(b_total[40s]) > 1").unwrap();
        assert_eq!(shortest_window(&e), Some(Duration::from_secs(40)));
        assert_eq!(shortest_window(&parse("up == 0").unwrap()), None);
    }

    fn labels(q: &str) -> LabelSet {
        parse(q).map(|e| output_labels(&e).0).unwrap_or(LabelSet::Known(BTreeSet::new()))
    }

    #[test]
    fn aggregation_and_absent_narrow_labels() {
        assert!(!labels("sum(rate(x_total[5m])) > 1").may_have("instance"));
        assert!(labels("sum by (route) (rate(x_total[5m])) > 1").may_have("route"));
        assert!(!labels("absent(up{job=\"a\"})").may_have("instance"));
        assert!(labels("absent(up{job=\"a\"})").may_have("job"));
        assert!(labels("up == 0").may_have("instance"));
        assert!(!labels("sum without (instance) (up) == 0").may_have("instance"));
    }

    #[test]
    fn newer_functions_are_rejected_like_prometheus_2_42() {
        assert!(parse("sort_by_label(up, \"job\")").is_err());
        assert!(parse("limitk(2, up)").is_err());
        assert!(parse("rate(x_total[5m]) > 0").is_ok());
    }

    #[test]
    fn regexes_go_refuses_are_invalid_like_prometheus_2_42() {
        // Each was accepted by Rust's regex and refused by promtool 2.42.
        assert!(parse(r#"up{job=~"(?<svc>auth)"} == 0"#).is_err());
        assert!(parse(r#"up{job=~"a{2,1001}"} == 0"#).is_err());
        assert!(parse(r#"up{job!~"(?x)auth"} == 0"#).is_err());
        assert!(parse(r#"rate(x_total{job=~"(?<svc>auth)"}[5m]) > 0"#).is_err());
        assert!(parse(r#"up{job=~"(?P<svc>auth)|(?i:user)|a{2,1000}|[{]"} == 0"#).is_ok());
    }

    #[test]
    fn filters_and_ranges() {
        let f = |q: &str| parse(q).map(|e| filters(&e)).unwrap_or(false);
        assert!(f("up == 0"));
        assert!(f("absent(up)"));
        assert!(!f("rate(x_total[5m])"));
        assert!(!f("up == bool 0"));
        let r = |q: &str| parse(q).map(|e| value_range(&e)).unwrap_or((0.0, 0.0));
        assert_eq!(r("absent(up)"), (1.0, 1.0));
        assert_eq!(r("rate(x_total[5m])").0, 0.0);
    }
}
