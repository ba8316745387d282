//! Snapshots of every output format for one report with all four verdicts.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod common;

use common::sample_report;
use shared_types::{OutputFormat, RenderOptions};

fn render(format: OutputFormat, color: bool) -> String {
    sample_report().render(format, &RenderOptions { color })
}

#[test]
fn human_table_without_color() {
    let out = render(OutputFormat::Human, false);
    assert!(!out.contains('\u{1b}'), "no escape sequences without colour");
    insta::assert_snapshot!("human_plain", out);
}

#[test]
fn human_table_with_color() {
    // ESC is written as \e so the snapshot is readable.
    let out = render(OutputFormat::Human, true).replace('\u{1b}', "\\e");
    insta::assert_snapshot!("human_color", out);
}

#[test]
fn json_is_the_pretty_report() {
    let out = render(OutputFormat::Json, false);
    assert_eq!(out, format!("{}\n", sample_report().to_json_pretty()));
    insta::assert_snapshot!("json", out);
}

#[test]
fn junit_xml() {
    insta::assert_snapshot!("junit", render(OutputFormat::Junit, false));
}

#[test]
fn markdown_summary() {
    insta::assert_snapshot!("markdown", render(OutputFormat::Markdown, false));
}

#[test]
fn empty_report_renders_in_every_format() {
    let mut report = sample_report();
    report.checks.clear();
    report.measurements.clear();
    report.finished_at = None;
    let human = report.render(OutputFormat::Human, &RenderOptions::default());
    insta::assert_snapshot!("human_empty", human);
    let junit = report.render(OutputFormat::Junit, &RenderOptions::default());
    assert!(junit.contains("tests=\"0\" failures=\"0\" errors=\"0\" skipped=\"0\" time=\"0.000\""));
    let markdown = report.render(OutputFormat::Markdown, &RenderOptions::default());
    assert!(markdown.starts_with("### load-tester 0.1.0: SKIP\n"));
}

#[test]
fn every_format_ends_with_one_newline() {
    let report = sample_report();
    for format in OutputFormat::ALL {
        let out = report.render(format, &RenderOptions::default());
        assert!(out.ends_with('\n') && !out.ends_with("\n\n"), "{format}");
    }
}

#[cfg(feature = "schema")]
#[test]
fn report_json_schema() {
    let schema = shared_types::report_schema();
    assert_eq!(schema["$id"], "https://postlaunch.dev/schemas/report-v2.json");
    assert_eq!(schema["$defs"]["Timestamp"]["format"], "date-time");
    let pretty = serde_json::to_string_pretty(&schema).unwrap_or_default();
    insta::assert_snapshot!("report_schema", pretty);
}
