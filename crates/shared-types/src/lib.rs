//! The report contract every postlaunch tool emits.
//!
//! Each tool answers one question about a launched NFT marketplace backend
//! ("does P95 stay under 500 ms?", "does failover lose acknowledged
//! writes?") by evaluating criteria against a target and writing a
//! [`Report`]: a list of [`Check`]s, each with a [`Verdict`], plus named
//! [`Measurement`]s. This crate holds that report, the [`Threshold`]
//! criteria language (`p95 < 500ms`, `error_rate < 0.1%`), and the renderers
//! for people and machines ([`OutputFormat`]: human table, JSON, JUnit XML,
//! Markdown). It depends on serde only (schemars behind the `schema`
//! feature) and never panics on outside input.
//!
//! # Exit codes
//!
//! Every tool ends with [`Report::exit_code`] (or [`ExitCode::Usage`] before
//! a run starts). Scripts and CI rely on these numbers:
//!
//! | code | [`ExitCode`]        | meaning                                                        |
//! |------|---------------------|----------------------------------------------------------------|
//! | 0    | `Success`           | every criterion that applies was evaluated and met             |
//! | 1    | `CriterionNotMet`   | the run completed and at least one check failed                |
//! | 2    | `Usage`             | invalid command line or configuration; nothing was run         |
//! | 3    | `CouldNotRun`       | could not run, a criterion was not evaluated, or none was      |
//!
//! A failed check outranks an error: a report with both exits 1.
//!
//! # No verdict without evidence
//!
//! A criterion that does not apply (no MongoDB configured) is
//! [`Verdict::Skipped`]. A criterion that applies but could not be measured
//! (no metrics endpoint, the series is missing) is [`Verdict::NotEvaluated`]
//! and the run exits 3, unless the user waived it by name with
//! `--skip-check ID` ([`Report::waive`]). A report with no check, or with
//! only skipped ones, has evaluated nothing and exits 3 too.
//!
//! # Example
//!
//! ```
//! use shared_types::{Check, ExitCode, Measurement, OutputFormat, Quantity, RenderOptions, Report, Threshold};
//!
//! let mut report = Report::new("load-tester", "0.1.0", "https://api.example.com");
//! let p95: Threshold = "p95 < 500ms".parse()?;
//! report
//!     .push_check(p95.check("p95-latency", Quantity::millis(412.0)))
//!     .push_check(Check::skipped("ws-latency", "ws_p95 < 200ms", "no websocket endpoint configured"))
//!     .push_check(Check::not_evaluated("cache-hit-rate", "hit_rate > 80%", "no metrics source: pass --metrics-url"))
//!     .push_measurement(Measurement::new("requests_total", 12_000.0, ""));
//! report.finish();
//!
//! assert_eq!(report.checks[0].criterion, "p95 < 500ms");
//! assert_eq!(report.checks[0].observed.as_deref(), Some("412 ms"));
//! assert_eq!(report.exit_code(), ExitCode::CouldNotRun, "the hit rate was not measured");
//! report.waive(&["cache-hit-rate"]);
//! assert_eq!(report.exit_code(), ExitCode::Success);
//!
//! let table = report.render(OutputFormat::Human, &RenderOptions::default());
//! assert!(table.ends_with("verdict: PASS · 1 passed, 0 failed, 2 skipped, 0 errors · exit 0\n"));
//! let back = Report::from_json(&report.to_json_pretty())?;
//! assert_eq!(back, report);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A tool's `main` then does `print!("{}", report.render(format, &options))`
//! and `std::process::exit(report.exit_code().code())`.

pub mod cli;
#[cfg(feature = "postgres")]
pub mod pg;
mod quantity;
pub mod render;
pub mod report;
#[cfg(feature = "signals")]
pub mod signals;
pub mod threshold;
pub mod time;
pub mod verdict;

#[cfg(feature = "logs")]
pub use cli::init_logs;
pub use cli::{
    EmitError, UrlHost, allow_list_refusal, is_loopback_host, outside_allow_list, redact_url,
    url_hosts, yaml_key_path,
};
pub use render::{OutputFormat, RenderOptions, UnknownOutputFormat};
pub use report::{Check, Measurement, Report, SCHEMA_VERSION};
#[cfg(feature = "schema")]
pub use report::{report_schema, sorted_keys};
pub use threshold::{Dimension, Op, Quantity, Threshold, ThresholdError, parse_duration};
pub use time::Timestamp;
pub use verdict::{ExitCode, ToolError, Verdict, VerdictCounts};
