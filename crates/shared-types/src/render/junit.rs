//! JUnit XML, the test-result format CI systems (GitLab, Jenkins, GitHub
//! test reporters) display. One `<testsuite>` per report, one `<testcase>`
//! per check.

use std::fmt::Write as _;

use super::measurement_value;
use crate::report::{Check, Report};
use crate::verdict::Verdict;

/// Escapes text content: the five XML specials, and drops characters XML 1.0
/// cannot carry at all (most C0 controls, U+FFFE, U+FFFF).
pub(crate) fn escape_text(text: &str) -> String {
    escape(text, false)
}

/// Escapes an attribute value; also writes tab, newline and carriage return
/// as character references, since a parser would turn them into spaces.
pub(crate) fn escape_attr(text: &str) -> String {
    escape(text, true)
}

fn escape(text: &str, attribute: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' if attribute => {
                let _ = write!(out, "&#{};", u32::from(c));
            }
            '\t' | '\n' | '\r' => out.push(c),
            c if is_xml_char(c) => out.push(c),
            _ => {}
        }
    }
    out
}

/// Whether XML 1.0 allows `c` (production `Char`, minus tab/newline/CR
/// which the caller handles).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

pub(crate) fn render(report: &Report) -> String {
    let counts = report.counts();
    let seconds = report
        .finished_at
        .as_ref()
        .and_then(|end| report.started_at.duration_until(end))
        .map_or(0.0, |d| d.as_secs_f64());
    let tool = escape_attr(&report.tool);
    let totals = format!(
        "tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{seconds:.3}\"",
        counts.total(),
        counts.failed,
        counts.errors,
        counts.skipped,
    );

    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(out, "<testsuites name=\"{tool}\" {totals}>");
    let _ = writeln!(
        out,
        "  <testsuite name=\"{tool}\" {totals} timestamp=\"{}\">",
        escape_attr(report.started_at.as_str())
    );
    out.push_str("    <properties>\n");
    for (name, value) in [
        ("target", &report.target),
        ("version", &report.version),
        ("schema_version", &report.schema_version),
    ] {
        let _ = writeln!(out, "      <property name=\"{name}\" value=\"{}\"/>", escape_attr(value));
    }
    out.push_str("    </properties>\n");
    for check in &report.checks {
        testcase(&mut out, &tool, check);
    }
    if !report.measurements.is_empty() {
        let lines: Vec<String> = report
            .measurements
            .iter()
            .map(|m| format!("{} = {}", m.name, measurement_value(m)))
            .collect();
        let _ = writeln!(out, "    <system-out>{}</system-out>", escape_text(&lines.join("\n")));
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

fn testcase(out: &mut String, tool: &str, check: &Check) {
    let open = format!("    <testcase classname=\"{tool}\" name=\"{}\"", escape_attr(&check.id));
    let observed = check.observed.as_deref().map(|o| format!("observed: {o}"));
    let body = match (&observed, &check.detail) {
        (Some(o), Some(d)) => format!("{o}\n{d}"),
        (Some(o), None) => o.clone(),
        (None, Some(d)) => d.clone(),
        (None, None) => String::new(),
    };
    let criterion = escape_attr(&check.criterion);
    let inner = match check.verdict {
        Verdict::Pass => match observed {
            None => {
                let _ = writeln!(out, "{open}/>");
                return;
            }
            Some(o) => format!("<system-out>{}</system-out>", escape_text(&o)),
        },
        Verdict::Fail => {
            format!(
                "<failure message=\"{criterion}\" type=\"threshold\">{}</failure>",
                escape_text(&body)
            )
        }
        Verdict::Error => {
            format!("<error message=\"{criterion}\" type=\"error\">{}</error>", escape_text(&body))
        }
        // Missing evidence is an error to a CI dashboard, never a skip.
        Verdict::NotEvaluated => format!(
            "<error message=\"{criterion}\" type=\"not-evaluated\">{}</error>",
            escape_text(&body)
        ),
        Verdict::Skipped => {
            let reason = check.detail.as_deref().unwrap_or(&check.criterion);
            format!("<skipped message=\"{}\"/>", escape_attr(reason))
        }
    };
    let _ = writeln!(out, "{open}>\n      {inner}\n    </testcase>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_specials_and_strips_illegal_characters() {
        assert_eq!(
            escape_text("a<b & \"c\" 'd' >\u{1b}\u{0}\u{FFFE}\n"),
            "a&lt;b &amp; &quot;c&quot; &apos;d&apos; &gt;\n"
        );
        assert_eq!(escape_attr("x\ny\tz\r"), "x&#10;y&#9;z&#13;");
        assert_eq!(escape_text("µs ✓ 😀"), "µs ✓ 😀");
    }
}
