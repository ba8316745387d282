//! Parsing, displaying and evaluating thresholds.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

use shared_types::{Dimension, Op, Quantity, Threshold, Verdict};

fn parse(text: &str) -> Threshold {
    match text.parse() {
        Ok(threshold) => threshold,
        Err(e) => panic!("{text:?} should parse: {e}"),
    }
}

fn parse_error(text: &str) -> String {
    match text.parse::<Threshold>() {
        Ok(t) => panic!("{text:?} should not parse, got {t:?}"),
        Err(e) => e.to_string(),
    }
}

const GIB: f64 = 1_073_741_824.0;

#[test]
fn launch_plan_criteria_parse_to_base_units() {
    let cases = [
        ("p95 < 500ms", "p95", Op::Lt, Quantity::millis(500.0), "p95 < 500ms"),
        ("p95<300ms", "p95", Op::Lt, Quantity::seconds(0.3), "p95 < 300ms"),
        ("error_rate < 0.1%", "error_rate", Op::Lt, Quantity::ratio(0.001), "error_rate < 0.1%"),
        ("hit_rate > 80%", "hit_rate", Op::Gt, Quantity::ratio(0.8), "hit_rate > 80%"),
        ("downtime < 30s", "downtime", Op::Lt, Quantity::seconds(30.0), "downtime < 30s"),
        ("lost == 0", "lost", Op::Eq, Quantity::count(0.0), "lost == 0"),
        (
            "pool_utilisation <= 0.8",
            "pool_utilisation",
            Op::Le,
            Quantity::count(0.8),
            "pool_utilisation <= 0.8",
        ),
        (
            "restore_time < 4h",
            "restore_time",
            Op::Lt,
            Quantity::seconds(14_400.0),
            "restore_time < 4h",
        ),
        (
            "backup_size < 10GiB",
            "backup_size",
            Op::Lt,
            Quantity::bytes(10.0 * GIB),
            "backup_size < 10GiB",
        ),
    ];
    for (text, metric, op, limit, canonical) in cases {
        let t = parse(text);
        assert_eq!(t, Threshold::new(metric, op, limit), "{text}");
        assert_eq!(t.to_string(), canonical, "{text}");
    }
}

#[test]
fn every_unit_and_operator_is_accepted() {
    let cases = [
        ("a != 10ns", Op::Ne, Quantity::seconds(1e-8), "a != 10ns"),
        ("a >= 250us", Op::Ge, Quantity::seconds(250e-6), "a >= 250us"),
        ("a >= 250µs", Op::Ge, Quantity::seconds(250e-6), "a >= 250us"),
        ("a >= 250μs", Op::Ge, Quantity::seconds(250e-6), "a >= 250us"),
        ("a > 1.5 s", Op::Gt, Quantity::seconds(1.5), "a > 1500ms"),
        ("a > 2sec", Op::Gt, Quantity::seconds(2.0), "a > 2s"),
        ("a < 3m", Op::Lt, Quantity::seconds(180.0), "a < 3min"),
        ("a < 90 min", Op::Lt, Quantity::seconds(5400.0), "a < 90min"),
        ("a < 2d", Op::Lt, Quantity::seconds(172_800.0), "a < 2d"),
        ("a < 512B", Op::Lt, Quantity::bytes(512.0), "a < 512B"),
        ("a < 2KB", Op::Lt, Quantity::bytes(2000.0), "a < 2KB"),
        ("a < 2kB", Op::Lt, Quantity::bytes(2000.0), "a < 2KB"),
        ("a < 1.5KiB", Op::Lt, Quantity::bytes(1536.0), "a < 1536B"),
        ("a < 5 MB", Op::Lt, Quantity::bytes(5e6), "a < 5MB"),
        ("a < 3MiB", Op::Lt, Quantity::bytes(3.0 * 1_048_576.0), "a < 3MiB"),
        ("a < 10GB", Op::Lt, Quantity::bytes(1e10), "a < 10GB"),
        ("a < 1TB", Op::Lt, Quantity::bytes(1e12), "a < 1TB"),
        ("a < 1TiB", Op::Lt, Quantity::bytes(1024.0 * GIB), "a < 1TiB"),
        ("a > -3", Op::Gt, Quantity::count(-3.0), "a > -3"),
        ("a > +3", Op::Gt, Quantity::count(3.0), "a > 3"),
        (
            "\t latency.p99:api-v2_x >=1 % \n",
            Op::Ge,
            Quantity::ratio(0.01),
            "latency.p99:api-v2_x >= 1%",
        ),
    ];
    for (text, op, limit, canonical) in cases {
        let t = parse(text);
        assert_eq!((t.op, t.limit), (op, limit), "{text}");
        assert_eq!(t.to_string(), canonical, "{text}");
        assert_eq!(parse(canonical), t, "{canonical}");
    }
}

#[test]
fn malformed_thresholds_explain_what_was_expected() {
    const UNITS: &str = "expected one of ns, us, µs, ms, s, sec, m, min, h, d, %, B, KB, MB, GB, TB, \
                         KiB, MiB, GiB, TiB, or no unit for a plain count";
    const OPS: &str = "expected one of <, <=, >, >=, ==, !=";
    const NUMBER: &str = "expected digits with an optional fraction, e.g. 500 or 0.5";
    let cases = [
        ("p95 < 500xs".to_owned(), format!("unknown unit \"xs\" at column 10 ({UNITS})")),
        ("p95 < 500MS".to_owned(), format!("unknown unit \"MS\" at column 10 ({UNITS}); did you mean \"ms\"?")),
        ("p95 < 5мс".to_owned(), format!("unknown unit \"мс\" at column 8 ({UNITS})")),
        ("p95".to_owned(), format!("missing comparison operator after \"p95\" at column 4 ({OPS})")),
        ("p95 ~ 5".to_owned(), format!("expected a comparison operator after \"p95\" at column 5, found \"~\" ({OPS})")),
        ("".to_owned(), "empty input (expected `metric op limit`, e.g. \"p95 < 500ms\")".to_owned()),
        (" \t ".to_owned(), "empty input (expected `metric op limit`, e.g. \"p95 < 500ms\")".to_owned()),
        ("p95 < 5..0ms".to_owned(), format!("\"5..0\" at column 7 is not a number ({NUMBER})")),
        ("p95 < 5.ms".to_owned(), format!("\"5.\" at column 7 is not a number ({NUMBER})")),
        ("p95 < .5ms".to_owned(), format!("\".5\" at column 7 is not a number ({NUMBER})")),
        ("p95 < 500ms foo".to_owned(), "trailing input \"foo\" at column 13 (expected nothing after the limit)".to_owned()),
        ("p95 < 5 ms ms".to_owned(), "trailing input \"ms\" at column 12 (expected nothing after the limit)".to_owned()),
        ("p95 < 1,000ms".to_owned(), "trailing input \",000ms\" at column 8 (expected nothing after the limit)".to_owned()),
        ("p95 <".to_owned(), "missing limit after \"<\" at column 6 (expected a number with an optional unit, e.g. 500ms)".to_owned()),
        ("p95 < ms".to_owned(), "expected a number at column 7, found \"ms\" (e.g. 500ms, 0.1%, 10GiB, 0)".to_owned()),
        ("p95 << 5".to_owned(), "expected a number at column 6, found \"<\" (e.g. 500ms, 0.1%, 10GiB, 0)".to_owned()),
        ("p95 < -".to_owned(), "expected a number at column 7, found \"-\" (e.g. 500ms, 0.1%, 10GiB, 0)".to_owned()),
        ("p95 < -5ms".to_owned(), "limit \"-5ms\" at column 7 is negative (a duration cannot be)".to_owned()),
        ("hit_rate > -1%".to_owned(), "limit \"-1%\" at column 12 is negative (a ratio cannot be)".to_owned()),
        ("size < -1 GiB".to_owned(), "limit \"-1GiB\" at column 8 is negative (a byte size cannot be)".to_owned()),
        (format!("n < {}", "9".repeat(400)), format!("limit \"{}...\" at column 5 is too large", "9".repeat(24))),
        (format!("size < {}TiB", "9".repeat(300)), format!("limit \"{}...\" at column 8 is too large", "9".repeat(24))),
        ("95p < 5".to_owned(), "expected a metric name at column 1, found \"95p\" (a metric starts with a letter or _ and continues with letters, digits, _ . : -)".to_owned()),
        ("延迟 < 5ms".to_owned(), "expected a metric name at column 1, found \"延迟\" (a metric starts with a letter or _ and continues with letters, digits, _ . : -)".to_owned()),
        ("p95 = 5".to_owned(), "expected a comparison operator after \"p95\" at column 5, found \"=\" (did you mean ==?)".to_owned()),
        ("p95 => 5".to_owned(), "expected a comparison operator after \"p95\" at column 5, found \"=>\" (did you mean >=?)".to_owned()),
        ("p95 ≤ 5ms".to_owned(), "expected a comparison operator after \"p95\" at column 5, found \"≤\" (did you mean <=?)".to_owned()),
        ("p95é < 5".to_owned(), format!("expected a comparison operator after \"p95\" at column 4, found \"é\" ({OPS})")),
    ];
    for (text, message) in cases {
        let want = format!("invalid threshold {text:?}: {message}");
        assert_eq!(parse_error(&text), want);
    }
}

#[test]
fn errors_report_the_column() {
    let err = "p95 < 500xs".parse::<Threshold>().err();
    assert_eq!(err.as_ref().and_then(|e| e.column()), Some(10));
    assert_eq!(err.as_ref().and_then(|e| e.input()), Some("p95 < 500xs"));
}

#[test]
fn thresholds_serialize_as_their_text() {
    let t = parse("p95<500ms");
    assert_eq!(serde_json::to_string(&t).ok().as_deref(), Some("\"p95 < 500ms\""));
    let back: Result<Threshold, _> = serde_json::from_str("\"backup_size < 10GiB\"");
    assert_eq!(back.ok(), Some(parse("backup_size < 10GiB")));
    let bad = serde_json::from_str::<Threshold>("\"p95 <\"").map_err(|e| e.to_string());
    assert!(bad.is_err_and(|e| e.starts_with("invalid threshold \"p95 <\": missing limit")));
}

#[test]
fn is_met_compares_in_base_units() {
    let p95 = parse("p95 < 500ms");
    assert_eq!(p95.is_met(Quantity::millis(412.0)), Ok(true));
    assert_eq!(p95.is_met(Quantity::seconds(0.5)), Ok(false));
    assert_eq!(p95.is_met(Quantity::seconds(f64::NAN)), Ok(false));
    assert_eq!(parse("x != 1").is_met(Quantity::count(f64::NAN)), Ok(false));
    assert_eq!(parse("lost == 0").is_met(Quantity::count(0.0)), Ok(true));
    assert_eq!(parse("hit_rate > 80%").is_met(Quantity::percent(93.1)), Ok(true));
    assert_eq!(parse("backup_size < 10GiB").is_met(Quantity::bytes(1e10)), Ok(true));
    assert_eq!(parse("restore_time < 4h").is_met(Quantity::seconds(4.0 * 3600.0)), Ok(false));
}

#[test]
fn counts_and_ratios_compare_by_raw_value() {
    let pool = parse("pool_utilisation <= 0.8");
    assert_eq!(pool.limit.dimension, Dimension::Count);
    assert_eq!(pool.is_met(Quantity::ratio(0.75)), Ok(true));
    assert_eq!(pool.is_met(Quantity::percent(85.0)), Ok(false));
    assert_eq!(parse("error_rate < 0.1%").is_met(Quantity::count(0.0005)), Ok(true));
}

#[test]
fn mismatched_dimensions_are_an_error_naming_both() {
    let err = parse("p95 < 500ms").is_met(Quantity::bytes(412.0)).map_err(|e| e.to_string());
    let want = "threshold \"p95 < 500ms\" limits a duration, but the observed value \"412 B\" is a \
                byte size; measure p95 in seconds (Quantity::seconds)";
    assert_eq!(err, Err(want.to_owned()));
    assert!(parse("lost == 0").is_met(Quantity::seconds(0.0)).is_err());
}

#[test]
fn check_turns_an_observation_into_a_verdict() {
    let p95 = parse("p95<500ms");
    let pass = p95.check("p95-latency", Quantity::millis(412.3));
    assert_eq!(pass.verdict, Verdict::Pass);
    assert_eq!(pass.criterion, "p95 < 500ms");
    assert_eq!(pass.observed.as_deref(), Some("412 ms"));

    let fail = p95.check("p95-latency", Quantity::seconds(1.25));
    assert_eq!((fail.verdict, fail.observed.as_deref()), (Verdict::Fail, Some("1.25 s")));

    let nan = p95.check("p95-latency", Quantity::seconds(f64::NAN));
    assert_eq!(nan.verdict, Verdict::Fail);
    assert_eq!(nan.detail.as_deref(), Some("the observed value is not a number"));

    let error = p95.check("p95-latency", Quantity::count(3.0));
    assert_eq!((error.verdict, error.observed.as_deref()), (Verdict::Error, Some("3")));
    assert!(error.detail.is_some_and(|d| d.contains("limits a duration")));
}
