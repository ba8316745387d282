//! GitHub-flavoured Markdown, for pull-request comments and CI job summaries.

use std::fmt::Write as _;

use super::{measurement_value, single_line};
use crate::report::Report;

/// Escapes text for a table cell: `|` and `\` are backslash-escaped, as
/// are `<` and `&` where they could start an HTML tag or entity (so a detail
/// quoting `<script>` shows as text while `p95 < 500ms` stays readable);
/// newlines become `<br>`, other control characters are dropped.
pub(crate) fn escape_cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let next = chars.peek().copied().unwrap_or(' ');
        match c {
            '|' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '<' if next.is_ascii_alphabetic() || matches!(next, '/' | '!' | '?') => {
                out.push_str("\\<")
            }
            '&' if next.is_ascii_alphanumeric() || next == '#' => out.push_str("\\&"),
            '\n' => out.push_str("<br>"),
            '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.trim().to_owned()
}

/// Escapes one line of running text (the heading).
fn escape_inline(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in single_line(text).chars() {
        if matches!(c, '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '#' | '|' | '&') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `text` as an inline code span, fenced with more backticks than it contains.
fn code_span(text: &str) -> String {
    let text = single_line(text);
    let longest_run = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest_run + 1);
    if text.starts_with('`') || text.ends_with('`') {
        format!("{fence} {text} {fence}")
    } else {
        format!("{fence}{text}{fence}")
    }
}

fn row(out: &mut String, cells: &[&str]) {
    out.push('|');
    for cell in cells {
        let cell = escape_cell(cell);
        let _ = write!(out, " {cell} |");
    }
    out.push('\n');
}

pub(crate) fn render(report: &Report) -> String {
    let verdict = report.verdict();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### {} {}: {verdict}\n",
        escape_inline(&report.tool),
        escape_inline(&report.version)
    );
    let _ = writeln!(out, "Target: {}\n", code_span(&report.target));

    if report.checks.is_empty() {
        out.push_str("No checks were run.\n\n");
    } else {
        out.push_str("| Check | Verdict | Criterion | Observed | Detail |\n");
        out.push_str("|---|---|---|---|---|\n");
        for check in &report.checks {
            let cells = [
                check.id.as_str(),
                check.verdict.label(),
                check.criterion.as_str(),
                check.observed.as_deref().unwrap_or("-"),
                check.detail.as_deref().unwrap_or(""),
            ];
            row(&mut out, &cells);
        }
        out.push('\n');
    }

    if !report.measurements.is_empty() {
        out.push_str("| Measurement | Value |\n|---|---:|\n");
        for m in &report.measurements {
            row(&mut out, &[&m.name, &measurement_value(m)]);
        }
        out.push('\n');
    }

    let _ = writeln!(
        out,
        "**Verdict: {verdict}** · {} · exit {}",
        report.counts(),
        report.exit_code().code()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_cannot_break_the_table() {
        assert_eq!(
            escape_cell("a|b\\|c\r\nd <i>&amp; < 5 & x"),
            "a\\|b\\\\\\|c<br>d \\<i>\\&amp; < 5 & x"
        );
        assert_eq!(escape_inline("my_tool *v1*"), "my\\_tool \\*v1\\*");
        assert_eq!(code_span("a`b"), "``a`b``");
        assert_eq!(code_span("`x"), "`` `x ``");
    }
}
