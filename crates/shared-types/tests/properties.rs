//! Property tests: parsers never panic, text forms round-trip, verdicts
//! aggregate as the exit-code contract says, renderers contain their input.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

use proptest::prelude::*;
use shared_types::{
    Check, Dimension, Measurement, Op, OutputFormat, Quantity, RenderOptions, Report, Threshold,
    Timestamp, Verdict,
};

fn verdict() -> impl Strategy<Value = Verdict> {
    prop_oneof![
        Just(Verdict::Pass),
        Just(Verdict::Fail),
        Just(Verdict::Skipped),
        Just(Verdict::NotEvaluated),
        Just(Verdict::Error)
    ]
}

fn finite() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |v| v.is_finite()),
        (0_u32..100_000).prop_map(f64::from),
        (0_u32..100_000).prop_map(|n| f64::from(n) / 1000.0),
    ]
}

fn quantity() -> impl Strategy<Value = Quantity> {
    let dimension = prop_oneof![
        Just(Dimension::Duration),
        Just(Dimension::Ratio),
        Just(Dimension::Bytes),
        Just(Dimension::Count)
    ];
    (dimension, finite()).prop_map(|(dimension, value)| {
        // Only counts may be negative.
        let value = if dimension == Dimension::Count { value } else { value.abs() };
        Quantity { value, dimension }
    })
}

fn threshold() -> impl Strategy<Value = Threshold> {
    ("[A-Za-z_][A-Za-z0-9_.:-]{0,20}", proptest::sample::select(Op::ALL.to_vec()), quantity())
        .prop_map(|(metric, op, limit)| Threshold::new(metric, op, limit))
}

/// Arbitrary text, weighted towards the characters thresholds and markup care about.
fn tricky_text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[ -~µμ%<>=!≤\\t\\n\\r\u{1b}\u{0}|&'\"é😀]{0,40}"]
}

fn check() -> impl Strategy<Value = Check> {
    (
        tricky_text(),
        tricky_text(),
        proptest::option::of(tricky_text()),
        verdict(),
        proptest::option::of(tricky_text()),
    )
        .prop_map(|(id, criterion, observed, verdict, detail)| Check {
            id,
            criterion,
            observed,
            verdict,
            detail,
        })
}

fn report() -> impl Strategy<Value = Report> {
    let measurement =
        (tricky_text(), finite(), tricky_text()).prop_map(|(n, v, u)| Measurement::new(n, v, u));
    (
        tricky_text(),
        tricky_text(),
        proptest::collection::vec(check(), 0..6),
        proptest::collection::vec(measurement, 0..4),
        any::<i64>(),
        proptest::option::of(any::<i64>()),
    )
        .prop_map(|(tool, target, checks, measurements, start, end)| {
            let mut report = Report::new(tool, "0.1.0", target);
            report.started_at = Timestamp::from_unix_millis(start);
            report.finished_at = end.map(Timestamp::from_unix_millis);
            report.checks = checks;
            report.measurements = measurements;
            report
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn threshold_parsing_never_panics(text in tricky_text()) {
        let _ = text.parse::<Threshold>();
    }

    #[test]
    fn threshold_errors_point_inside_the_input(text in tricky_text()) {
        if let Err(e) = text.parse::<Threshold>() {
            prop_assert!(e.to_string().starts_with("invalid threshold "));
            if let Some(column) = e.column() {
                prop_assert!(column >= 1 && column <= text.chars().count() + 1);
            }
        }
    }

    #[test]
    fn threshold_display_parses_back_to_the_same_threshold(t in threshold()) {
        let text = t.to_string();
        let back: Result<Threshold, _> = text.parse();
        prop_assert_eq!(back.as_ref().ok(), Some(&t), "{} -> {:?}", text, back);
    }

    #[test]
    fn quantity_display_never_panics(q in quantity(), raw in any::<f64>()) {
        prop_assert!(!q.to_string().is_empty());
        prop_assert!(!Quantity::seconds(raw).to_string().is_empty());
        prop_assert!(!Quantity::bytes(raw).to_string().is_empty());
    }

    #[test]
    fn any_fail_exits_1_else_missing_evidence_exits_3_else_0(verdicts in proptest::collection::vec(verdict(), 0..12)) {
        let mut report = Report::new("t", "1", "x");
        for (i, v) in verdicts.iter().enumerate() {
            report.push_check(Check { verdict: *v, ..Check::pass(i.to_string(), "c", "o") });
        }
        // Only evidence passes: an error, a criterion not evaluated, or a
        // report where nothing passed (empty, or all skipped) exits 3.
        let all_skipped = verdicts.iter().all(|v| *v == Verdict::Skipped);
        let want = if verdicts.contains(&Verdict::Fail) {
            1
        } else if verdicts.contains(&Verdict::Error)
            || verdicts.contains(&Verdict::NotEvaluated)
            || all_skipped
        {
            3
        } else {
            0
        };
        prop_assert_eq!(report.exit_code().code(), want);
        prop_assert_eq!(report.counts().total(), verdicts.len());
        prop_assert_eq!(report.verdict() == Verdict::Skipped, all_skipped);
        prop_assert_eq!(report.verdict() == Verdict::Pass, want == 0);
        report.checks.reverse();
        prop_assert_eq!(report.exit_code().code(), want);
    }

    #[test]
    fn timestamps_round_trip(millis in -62_167_219_200_000_i64..=253_402_300_799_999) {
        let ts = Timestamp::from_unix_millis(millis);
        prop_assert_eq!(ts.as_str().len(), 24);
        prop_assert_eq!(ts.unix_millis(), Some(millis));
        prop_assert_eq!(Timestamp::parse(ts.as_str()), Some(ts));
    }

    #[test]
    fn timestamp_text_sorts_chronologically(a in any::<i64>(), b in any::<i64>()) {
        let (ta, tb) = (Timestamp::from_unix_millis(a), Timestamp::from_unix_millis(b));
        prop_assert_eq!(ta.as_str().cmp(tb.as_str()), ta.unix_millis().cmp(&tb.unix_millis()));
    }

    #[test]
    fn timestamp_parsing_never_panics(text in prop_oneof![any::<String>(), "[0-9:.TZ+ -]{0,32}"]) {
        let _ = Timestamp::parse(&text);
    }

    #[test]
    fn report_json_round_trips_for_any_content(report in report()) {
        prop_assert_eq!(Report::from_json(&report.to_json_pretty()).ok(), Some(report));
    }

    #[test]
    fn renderers_keep_their_structure_whatever_the_text(report in report(), color in any::<bool>()) {
        let options = RenderOptions { color };
        let human = report.render(OutputFormat::Human, &options);
        prop_assert!(human.ends_with('\n'));
        // Only our own colour codes may reach the terminal.
        prop_assert_eq!(human.contains('\u{1b}'), color);

        let junit = report.render(OutputFormat::Junit, &options);
        prop_assert_eq!(junit.matches("<testcase ").count(), report.checks.len());
        let illegal = |c: char| c.is_control() && !matches!(c, '\n' | '\t' | '\r') && (c as u32) < 0x20;
        prop_assert!(!junit.chars().any(illegal));

        let markdown = report.render(OutputFormat::Markdown, &options);
        let rows = markdown.lines().filter(|l| l.starts_with('|')).count();
        let tables = |n: usize| if n == 0 { 0 } else { n + 2 };
        prop_assert_eq!(rows, tables(report.checks.len()) + tables(report.measurements.len()));
    }
}
