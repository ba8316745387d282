//! A self-contained HTML report: checks, latency percentiles and throughput
//! over time, the per-transaction table and the watched metrics, with charts
//! as inline SVG. No script, no stylesheet or font from the network.

use std::fmt::Write as _;

use shared_types::{Report, Verdict};

use crate::report::RunData;

/// The report as one HTML page.
pub fn render(report: &Report) -> String {
    let mut h = String::new();
    let title = format!("load-tester: {}", esc(&report.target));
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title><style>\
         body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin:1em 0}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child,th:first-child{{text-align:left}}\
         .pass{{color:#080}}.fail{{color:#c00;font-weight:bold}}.skipped{{color:#888}}.error{{color:#c60}}.not-evaluated{{color:#c60;font-weight:bold}}\
         svg{{background:#fafafa;border:1px solid #ddd;margin:0.5em 1em 0.5em 0}}</style></head><body>\
         <h1>{title}</h1><p>verdict: <b class=\"{}\">{}</b> · started {} · exit {}</p>",
        report.verdict().label().to_lowercase(),
        report.verdict().label(),
        esc(report.started_at.as_str()),
        report.exit_code().code()
    );
    h.push_str("<h2>Criteria</h2><table><tr><th>check</th><th>criterion</th><th>observed</th><th>verdict</th><th>detail</th></tr>");
    for c in &report.checks {
        let class = match c.verdict {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Skipped => "skipped",
            Verdict::NotEvaluated => "not-evaluated",
            Verdict::Error => "error",
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{}</td><td style=\"text-align:left\">{}</td></tr>",
            esc(&c.id),
            esc(&c.criterion),
            esc(c.observed.as_deref().unwrap_or("")),
            c.verdict.label(),
            esc(c.detail.as_deref().unwrap_or(""))
        );
    }
    h.push_str("</table>");
    if let Ok(data) = RunData::from_report(report) {
        run_sections(&mut h, &data);
    }
    h.push_str("<h2>Measurements</h2><table>");
    for m in &report.measurements {
        let _ =
            write!(h, "<tr><td>{}</td><td>{:.3} {}</td></tr>", esc(&m.name), m.value, esc(&m.unit));
    }
    h.push_str("</table></body></html>\n");
    h
}

fn run_sections(h: &mut String, data: &RunData) {
    let _ = write!(
        h,
        "<p>{}<br>scenario: {}</p>",
        esc(&data.load_model_description),
        esc(&data.scenario)
    );
    let series = &data.stats.series;
    let t: Vec<f64> = series.iter().map(|p| p.second as f64).collect();
    h.push_str("<h2>Over time</h2>");
    h.push_str(&chart(
        "latency (ms)",
        &t,
        &[
            ("p50", "#2a7", series.iter().map(|p| p.p50_ms).collect()),
            ("p95", "#e80", series.iter().map(|p| p.p95_ms).collect()),
            ("p99", "#c22", series.iter().map(|p| p.p99_ms).collect()),
        ],
    ));
    h.push_str(&chart(
        "requests per second",
        &t,
        &[
            ("requests", "#36c", series.iter().map(|p| p.requests as f64).collect()),
            ("errors", "#c22", series.iter().map(|p| p.errors as f64).collect()),
        ],
    ));
    h.push_str("<h2>Transactions</h2><table><tr><th>transaction</th><th>requests</th><th>errors</th><th>req/s</th><th>p50 ms</th><th>p90 ms</th><th>p95 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th></tr>");
    let mut rows: Vec<(String, crate::stats::Summary)> = data
        .stats
        .transactions
        .iter()
        .map(|(k, v)| (k.clone(), v.summary(data.stats.duration_secs)))
        .collect();
    rows.push(("all".to_owned(), data.stats.overall().summary(data.stats.duration_secs)));
    for (name, s) in rows {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td></tr>",
            esc(&name),
            s.requests,
            s.errors,
            s.rps,
            s.p50_ms,
            s.p90_ms,
            s.p95_ms,
            s.p99_ms,
            s.p999_ms,
            s.max_ms
        );
    }
    h.push_str("</table>");
    let errors = data.stats.overall().errors_by_kind;
    if !errors.is_empty() {
        h.push_str("<h3>Errors by kind</h3><table>");
        for (k, v) in errors {
            let _ = write!(h, "<tr><td>{}</td><td>{v}</td></tr>", esc(&k));
        }
        h.push_str("</table>");
    }
    for s in &data.services {
        let _ = write!(
            h,
            "<h2>Watched: {}</h2><p>{} scrapes, {} failed; restarts: {}</p>",
            esc(&s.url),
            s.scrapes,
            s.failed_scrapes,
            s.restarts
        );
        let t: Vec<f64> = s.series.iter().map(|p| p.t).collect();
        let pct = |f: &dyn Fn(&crate::watch::ServicePoint) -> Option<f64>| -> Vec<f64> {
            s.series.iter().map(|p| f(p).map_or(f64::NAN, |v| v * 100.0)).collect()
        };
        h.push_str(&chart(
            "pool utilisation and cache hit rate (%)",
            &t,
            &[
                ("pool", "#c22", pct(&|p| p.pool_utilisation)),
                ("cache hits", "#2a7", pct(&|p| p.cache_hit_rate)),
            ],
        ));
        h.push_str(&chart(
            "CPU (cores)",
            &t,
            &[("cpu", "#36c", s.series.iter().map(|p| p.cpu_cores.unwrap_or(f64::NAN)).collect())],
        ));
        h.push_str(&chart(
            "resident memory (MiB)",
            &t,
            &[(
                "rss",
                "#84c",
                s.series
                    .iter()
                    .map(|p| p.rss_bytes.map_or(f64::NAN, |b| b / 1_048_576.0))
                    .collect(),
            )],
        ));
        if !s.grpc.is_empty() {
            h.push_str("<h3>gRPC calls</h3><table><tr><th>side</th><th>method</th><th>calls</th><th>errors</th><th>p50 (ms)</th><th>p95 (ms)</th></tr>");
            let ms =
                |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |s| format!("{:.2}", s * 1000.0));
            for m in &s.grpc {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}/{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&m.side),
                    esc(&m.service),
                    esc(&m.method),
                    m.calls,
                    m.errors,
                    ms(m.p50_seconds),
                    ms(m.p95_seconds)
                );
            }
            h.push_str("</table>");
        }
        if !s.breaker_changes.is_empty() {
            h.push_str("<h3>Circuit-breaker changes</h3><table><tr><th>t (s)</th><th>dependency</th><th>from</th><th>to</th></tr>");
            for c in &s.breaker_changes {
                let _ = write!(
                    h,
                    "<tr><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    c.t,
                    esc(&c.dependency),
                    esc(&c.from),
                    esc(&c.to)
                );
            }
            h.push_str("</table>");
        }
    }
}

/// A line chart as inline SVG; NaN values leave gaps.
fn chart(title: &str, x: &[f64], lines: &[(&str, &str, Vec<f64>)]) -> String {
    let (w, hgt, pad) = (560.0, 220.0, 40.0);
    let finite = |v: &&f64| v.is_finite();
    let xmax = x.iter().filter(finite).copied().fold(1.0, f64::max);
    let ymax = lines
        .iter()
        .flat_map(|(_, _, ys)| ys.iter().filter(finite))
        .copied()
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.1;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{hgt}\" role=\"img\"><title>{}</title>\
         <text x=\"{pad}\" y=\"16\" font-size=\"13\">{}</text>\
         <line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999\"/><line x1=\"{pad}\" y1=\"24\" x2=\"{pad}\" y2=\"{}\" stroke=\"#999\"/>\
         <text x=\"2\" y=\"32\" font-size=\"10\">{}</text><text x=\"{}\" y=\"{}\" font-size=\"10\">{:.0} s</text>",
        esc(title),
        esc(title),
        hgt - pad,
        w - 10.0,
        hgt - pad,
        hgt - pad,
        fmt_num(ymax),
        w - 40.0,
        hgt - pad + 14.0,
        xmax
    );
    for (i, (name, color, ys)) in lines.iter().enumerate() {
        let mut d = String::new();
        let mut pen_up = true;
        for (xv, yv) in x.iter().zip(ys) {
            if !yv.is_finite() {
                pen_up = true;
                continue;
            }
            let px = pad + (w - pad - 10.0) * xv / xmax;
            let py = (hgt - pad) - (hgt - pad - 24.0) * yv / ymax;
            let _ = write!(d, "{}{px:.1},{py:.1} ", if pen_up { "M" } else { "L" });
            pen_up = false;
        }
        let _ = write!(
            svg,
            "<path d=\"{d}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"{color}\">{}</text>",
            pad + 10.0 + 90.0 * i as f64,
            hgt - 8.0,
            esc(name)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 { format!("{v:.0}") } else { format!("{v:.2}") }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained_and_escaped() {
        let mut report = Report::new("load-tester", "0", "http://x/<script>");
        report.push_check(shared_types::Check::fail("p95-latency", "p95 < 500ms", "812 ms"));
        let page = render(&report);
        assert!(page.contains("&lt;script&gt;") && !page.contains("<script>"));
        assert!(!page.contains("http-equiv") && !page.contains("src=\"http"));
        let svg = chart("t", &[1.0, 2.0, 3.0], &[("a", "#000", vec![1.0, f64::NAN, 3.0])]);
        // The NaN leaves a gap: the line starts twice.
        assert!(svg.contains("d=\"M") && svg.contains(" M"), "{svg}");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }
}
