//! Pass/fail criteria such as `p95 < 500ms` or `error_rate < 0.1%`.
//!
//! A [`Threshold`] is a metric name, a comparison [`Op`] and a limit
//! [`Quantity`]. It parses from and displays as text, which is also its serde
//! form, so criteria can be given on the command line and in config files.
//!
//! # Grammar
//!
//! `metric op number [unit]`, whitespace optional around `op` and between
//! number and unit. The metric is `[A-Za-z_][A-Za-z0-9_.:-]*`; `op` is one
//! of `<`, `<=`, `>`, `>=`, `==`, `!=`; the number is `-?digits(.digits)?`.
//! Units are case-sensitive (`ms` is not `Ms`):
//!
//! | dimension | units                                                                 |
//! |-----------|-----------------------------------------------------------------------|
//! | duration  | `ns`, `us` (`µs`), `ms`, `s` (`sec`), `m` (`min`), `h`, `d`           |
//! | ratio     | `%` (`80%` is the fraction 0.8)                                        |
//! | bytes     | `B`, `KB` (`kB`), `MB`, `GB`, `TB` (powers of 1000), `KiB`, `MiB`, `GiB`, `TiB` |
//! | count     | no unit                                                               |
//!
//! Durations, ratios and byte sizes may not be negative; counts may.
//!
//! # Counts and ratios
//!
//! A bare number is a count, but counts and ratios are both dimensionless,
//! so they compare by raw value: `pool_utilisation <= 0.8` is met by an
//! observed `Quantity::ratio(0.75)` (75 %), and `error_rate < 0.1%` by an
//! observed `Quantity::count(0.0005)`. Any other pairing of dimensions (a
//! duration against a count, bytes against a duration) is an error rather
//! than a guess.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::quantity::{Dimension, Quantity};
use crate::report::Check;

mod parse;

/// A comparison between an observed value and a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==` (exact equality, meant for whole numbers such as `lost == 0`)
    Eq,
    /// `!=`
    Ne,
}

impl Op {
    /// Every operator, in the order error messages list them.
    pub const ALL: [Op; 6] = [Op::Lt, Op::Le, Op::Gt, Op::Ge, Op::Eq, Op::Ne];

    /// The operator as written: `<`, `<=`, `>`, `>=`, `==`, `!=`.
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    /// Whether `observed op limit` holds. False whenever either is NaN.
    pub fn holds(self, observed: f64, limit: f64) -> bool {
        if observed.is_nan() || limit.is_nan() {
            return false;
        }
        match self {
            Op::Lt => observed < limit,
            Op::Le => observed <= limit,
            Op::Gt => observed > limit,
            Op::Ge => observed >= limit,
            Op::Eq => observed == limit,
            Op::Ne => observed != limit,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

/// A criterion: `metric op limit`, e.g. `p95 < 500ms`. See the module docs
/// for the grammar and how counts and ratios compare.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// The metric the limit applies to, e.g. `p95`.
    pub metric: String,
    /// How the observed value must relate to the limit.
    pub op: Op,
    /// The limit, in base units.
    pub limit: Quantity,
}

impl Threshold {
    /// A threshold from its parts. The metric is not validated; a name that
    /// does not match the grammar will display but not parse back.
    pub fn new(metric: impl Into<String>, op: Op, limit: Quantity) -> Threshold {
        Threshold { metric: metric.into(), op, limit }
    }

    /// Whether `observed` meets the threshold. A NaN observation is never
    /// met. Errors if the dimensions cannot be compared (a duration against
    /// a byte size, say); counts and ratios compare by raw value.
    pub fn is_met(&self, observed: Quantity) -> Result<bool, ThresholdError> {
        use Dimension::{Count, Ratio};
        let (want, got) = (self.limit.dimension, observed.dimension);
        let comparable = want == got || matches!((want, got), (Count, Ratio) | (Ratio, Count));
        if !comparable {
            return Err(ThresholdError::mismatch(format!(
                "threshold \"{self}\" limits a {want}, but the observed value \"{observed}\" is a \
                 {got}; measure {} in {}",
                self.metric,
                unit_hint(want),
            )));
        }
        Ok(self.op.holds(observed.value, self.limit.value))
    }

    /// Evaluates `observed` into a [`Check`]: the criterion is this threshold
    /// as text, the observation is `observed` in natural units, the verdict
    /// is pass or fail, or error if the dimensions cannot be compared.
    pub fn check(&self, id: impl Into<String>, observed: Quantity) -> Check {
        let criterion = self.to_string();
        match self.is_met(observed) {
            Ok(true) => Check::pass(id, criterion, observed.to_string()),
            Ok(false) if observed.value.is_nan() => {
                Check::fail(id, criterion, observed.to_string())
                    .with_detail("the observed value is not a number")
            }
            Ok(false) => Check::fail(id, criterion, observed.to_string()),
            Err(e) => {
                Check::error(id, criterion, e.to_string()).with_observed(observed.to_string())
            }
        }
    }
}

fn unit_hint(dimension: Dimension) -> &'static str {
    match dimension {
        Dimension::Duration => "seconds (Quantity::seconds)",
        Dimension::Ratio => "a fraction (Quantity::ratio)",
        Dimension::Bytes => "bytes (Quantity::bytes)",
        Dimension::Count => "a plain number (Quantity::count)",
    }
}

impl fmt::Display for Threshold {
    /// The canonical form, `p95 < 500ms`: it parses back to an equal threshold.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.metric, self.op, self.limit.canonical())
    }
}

impl FromStr for Threshold {
    type Err = ThresholdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse::threshold(s)
    }
}

impl Serialize for Threshold {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Threshold {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for Threshold {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Threshold".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A criterion `metric op number[unit]`; op is one of < <= > >= == !=; \
                units: ns us ms s m h d (durations), % (ratios), B KB MB GB TB KiB MiB GiB TiB \
                (sizes), none (counts).",
            "examples": ["p95 < 500ms", "error_rate < 0.1%", "lost == 0", "backup_size < 10GiB"]
        })
    }
}

/// Why a threshold could not be parsed or evaluated. The message names the
/// input, the column (counted in characters, from 1) and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThresholdError {
    input: Option<String>,
    column: Option<usize>,
    message: String,
}

impl ThresholdError {
    pub(crate) fn parse(input: &str, column: Option<usize>, message: String) -> Self {
        ThresholdError { input: Some(input.to_owned()), column, message }
    }

    fn mismatch(message: String) -> Self {
        ThresholdError { input: None, column: None, message }
    }

    /// The text that failed to parse; `None` for an evaluation error.
    pub fn input(&self) -> Option<&str> {
        self.input.as_deref()
    }

    /// The 1-based character column the problem was found at, if any.
    pub fn column(&self) -> Option<usize> {
        self.column
    }
}

impl fmt::Display for ThresholdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.input {
            Some(input) => write!(f, "invalid threshold {input:?}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ThresholdError {}

/// Parses a duration flag value such as `250ms`, `5s`, `10m`, `1.5h` or `0`,
/// with the threshold language's units, for tools' command lines.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let invalid = || {
        format!(
            "\"{text}\" is not a duration (expected a number and a unit: ms, s, m, h, d; e.g. 500ms, 30s, 10m)"
        )
    };
    let limit = format!("duration < {text}").parse::<Threshold>().map_err(|_| invalid())?.limit;
    match limit.dimension {
        Dimension::Duration if limit.value >= 0.0 => {
            std::time::Duration::try_from_secs_f64(limit.value).map_err(|_| invalid())
        }
        Dimension::Count if limit.value == 0.0 => Ok(std::time::Duration::ZERO),
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod duration_tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn flag_durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "5", "5 parsecs", "80%", "-1s", "1GiB", "s"] {
            assert!(parse_duration(bad).unwrap_err().contains("is not a duration"), "{bad}");
        }
    }
}
