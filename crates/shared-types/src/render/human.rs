//! The human format: an aligned table for a terminal.

use std::fmt::Write as _;

use super::{RenderOptions, measurement_value, single_line};
use crate::report::Report;
use crate::verdict::Verdict;

const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";
const DETAIL_INDENT: &str = "    ";

fn verdict_color(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Pass => "\x1b[32m",
        Verdict::Fail => "\x1b[31m",
        Verdict::Skipped => "\x1b[33m",
        Verdict::NotEvaluated | Verdict::Error => "\x1b[35m",
    }
}

/// Wraps `text` in an ANSI style when colours are on.
struct Paint {
    color: bool,
}

impl Paint {
    fn style(&self, style: &str, text: &str) -> String {
        if self.color { format!("{style}{text}{RESET}") } else { text.to_owned() }
    }

    fn verdict(&self, verdict: Verdict) -> String {
        self.style(verdict_color(verdict), verdict.label())
    }
}

/// A table cell: the text shown and an optional style; widths count the
/// unstyled text, one column per `char`.
struct Cell {
    text: String,
    style: Option<&'static str>,
}

impl Cell {
    fn plain(text: &str) -> Self {
        Cell { text: single_line(text), style: None }
    }

    fn styled(text: &str, style: &'static str) -> Self {
        Cell { text: single_line(text), style: Some(style) }
    }
}

/// Writes rows as left-aligned columns two spaces apart, with no trailing
/// whitespace. Each row is followed by its (already indented) extra lines.
fn table(out: &mut String, paint: &Paint, rows: &[(Vec<Cell>, Vec<String>)]) {
    let columns = rows.iter().map(|(cells, _)| cells.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            let width = |(cells, _): &(Vec<Cell>, Vec<String>)| {
                cells.get(i).map_or(0, |c| c.text.chars().count())
            };
            rows.iter().map(width).max().unwrap_or(0)
        })
        .collect();
    for (cells, extra) in rows {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let last = i + 1 == cells.len();
            let pad = widths.get(i).copied().unwrap_or(0).saturating_sub(cell.text.chars().count());
            match cell.style {
                Some(style) => line.push_str(&paint.style(style, &cell.text)),
                None => line.push_str(&cell.text),
            }
            if !last {
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
        for extra_line in extra {
            out.push_str(extra_line.trim_end());
            out.push('\n');
        }
    }
}

pub(crate) fn render(report: &Report, options: &RenderOptions) -> String {
    let paint = Paint { color: options.color };
    let mut out = String::new();
    let title = format!("{} {}", single_line(&report.tool), single_line(&report.version));
    let _ = writeln!(out, "{} · target {}", paint.style(BOLD, &title), single_line(&report.target));
    out.push('\n');

    if report.checks.is_empty() {
        out.push_str("no checks were run\n");
    } else {
        let header = ["CHECK", "VERDICT", "CRITERION", "OBSERVED"].map(|h| Cell::styled(h, BOLD));
        let mut rows = vec![(Vec::from(header), Vec::new())];
        for check in &report.checks {
            let cells = vec![
                Cell::plain(&check.id),
                Cell::styled(check.verdict.label(), verdict_color(check.verdict)),
                Cell::plain(&check.criterion),
                Cell::plain(check.observed.as_deref().unwrap_or("-")),
            ];
            let details = match (&check.detail, check.verdict) {
                (
                    Some(detail),
                    Verdict::Fail | Verdict::Error | Verdict::NotEvaluated | Verdict::Skipped,
                ) => detail
                    .lines()
                    .map(|line| format!("{DETAIL_INDENT}{}", single_line(line)))
                    .collect(),
                _ => Vec::new(),
            };
            rows.push((cells, details));
        }
        table(&mut out, &paint, &rows);
    }

    if !report.measurements.is_empty() {
        out.push('\n');
        let header = ["MEASUREMENT", "VALUE"].map(|h| Cell::styled(h, BOLD));
        let mut rows = vec![(Vec::from(header), Vec::new())];
        for m in &report.measurements {
            rows.push((vec![Cell::plain(&m.name), Cell::plain(&measurement_value(m))], Vec::new()));
        }
        table(&mut out, &paint, &rows);
    }

    let unmeasured: Vec<String> = report
        .checks
        .iter()
        .filter(|c| c.verdict == Verdict::NotEvaluated)
        .map(|c| single_line(&c.id))
        .collect();
    if !unmeasured.is_empty() {
        let _ = writeln!(
            out,
            "\n{} {}: the evidence is missing (see each detail for how to supply it).\n\
             Waive a criterion you accept unmeasured with --skip-check ID.",
            paint.style(BOLD, "not evaluated:"),
            unmeasured.join(", ")
        );
    } else if report.counts().passed == 0 && report.counts().failed == 0 {
        out.push_str("\nno criterion was evaluated: nothing here is evidence of a pass\n");
    }

    let verdict = report.verdict();
    let _ = writeln!(
        out,
        "\n{}: {} · {} · exit {}",
        paint.style(BOLD, "verdict"),
        paint.verdict(verdict),
        report.counts(),
        report.exit_code().code()
    );
    out
}
