//! The report as data: JSON round trips, timestamps, verdict aggregation.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod common;

use common::sample_report;
use shared_types::{
    Check, ExitCode, Measurement, Report, SCHEMA_VERSION, Timestamp, Verdict, VerdictCounts,
};

#[test]
fn report_json_round_trips() {
    let report = sample_report();
    let json = report.to_json_pretty();
    assert_eq!(Report::from_json(&json).ok(), Some(report));
}

#[test]
fn json_uses_the_documented_field_names() {
    let value: serde_json::Value =
        serde_json::from_str(&sample_report().to_json_pretty()).unwrap_or_default();
    assert_eq!(value["schema_version"], SCHEMA_VERSION);
    assert_eq!(value["started_at"], "2026-11-30T13:08:25.123Z");
    assert_eq!(value["checks"][1]["verdict"], "fail");
    assert_eq!(value["checks"][2]["verdict"], "error");
    assert_eq!(value["checks"][3]["verdict"], "skipped");
    assert_eq!(value["checks"][0]["detail"], serde_json::Value::Null);
    assert_eq!(value["measurements"][1]["unit"], "ms");
}

#[test]
fn empty_data_is_omitted_and_unknown_fields_are_ignored() {
    let mut report = Report::new("backup-verifier", "0.2.0", "s3://backups");
    report.finish();
    let json = report.to_json_pretty();
    assert!(!json.contains("\"data\""));
    let newer = json.replacen('{', "{\n  \"added_in_v2\": [1, 2],", 1);
    assert_eq!(Report::from_json(&newer).ok(), Some(report));
}

#[test]
fn malformed_json_is_an_error_not_a_panic() {
    for text in ["", "{", "[]", "{\"tool\": 5}", "{\"schema_version\": \"1\"}"] {
        assert!(Report::from_json(text).is_err(), "{text:?}");
    }
}

#[test]
fn new_report_starts_now_and_finish_stamps_the_end() {
    let before = Timestamp::now();
    let mut report = Report::new("load-tester", "0.1.0", "https://api.example.com");
    assert_eq!(report.schema_version, SCHEMA_VERSION);
    assert!(report.started_at >= before);
    assert_eq!(report.finished_at, None);
    report.finish();
    assert!(report.finished_at.as_ref().is_some_and(|end| *end >= report.started_at));
}

#[test]
fn timestamps_round_trip_through_text_and_json() {
    let ts = Timestamp::from_unix_millis(1_709_164_800_000);
    assert_eq!(ts.as_str(), "2024-02-29T00:00:00.000Z");
    assert_eq!(Timestamp::parse(ts.as_str()), Some(ts.clone()));
    let json = serde_json::to_string(&ts).unwrap_or_default();
    assert_eq!(json, "\"2024-02-29T00:00:00.000Z\"");
    assert_eq!(serde_json::from_str::<Timestamp>(&json).ok(), Some(ts));
    let now = Timestamp::now();
    assert_eq!(now.unix_millis().map(Timestamp::from_unix_millis), Some(now));
}

#[test]
fn sample_report_aggregates_to_fail() {
    let report = sample_report();
    assert_eq!(report.verdict(), Verdict::Fail);
    assert_eq!(report.exit_code(), ExitCode::CriterionNotMet);
    let want = VerdictCounts { passed: 2, failed: 1, skipped: 1, not_evaluated: 0, errors: 1 };
    assert_eq!(report.counts(), want);
}

#[test]
fn verdicts_map_to_exit_codes() {
    let mut report = Report::new("t", "1", "x");
    // Nothing evaluated is never a pass.
    assert_eq!((report.verdict(), report.exit_code().code()), (Verdict::Skipped, 3));
    report.push_check(Check::skipped("a", "c", "not configured"));
    assert_eq!((report.verdict(), report.exit_code().code()), (Verdict::Skipped, 3));
    report.push_check(Check::pass("b", "c", "ok"));
    assert_eq!((report.verdict(), report.exit_code().code()), (Verdict::Pass, 0));
    report.push_check(Check::not_evaluated("e", "c", "no metrics: pass --metrics-url"));
    assert_eq!((report.verdict(), report.exit_code().code()), (Verdict::NotEvaluated, 3));
    report.push_check(Check::error("c", "c", "unreachable"));
    assert_eq!((report.verdict(), report.exit_code().code()), (Verdict::Error, 3));
    report
        .push_check(Check::fail("d", "c", "bad"))
        .push_measurement(Measurement::new("m", 1.0, "s"));
    assert_eq!((report.verdict(), report.exit_code().code()), (Verdict::Fail, 1));
    assert_eq!(ExitCode::Usage.code(), 2);
}
