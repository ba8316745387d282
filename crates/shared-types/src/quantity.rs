//! Quantities with a dimension: durations, ratios, byte sizes and plain counts.

use std::fmt;

/// What kind of quantity a value is; each has one base unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dimension {
    /// Time, in seconds.
    Duration,
    /// A fraction, 0.0 to 1.0 (80 % is 0.8).
    Ratio,
    /// A size, in bytes.
    Bytes,
    /// A plain number without unit.
    Count,
}

impl Dimension {
    /// The word used in messages: `duration`, `ratio`, `byte size`, `count`.
    pub fn name(self) -> &'static str {
        match self {
            Dimension::Duration => "duration",
            Dimension::Ratio => "ratio",
            Dimension::Bytes => "byte size",
            Dimension::Count => "count",
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A value in the base unit of its dimension: seconds, fraction, bytes, or a
/// plain number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantity {
    /// The value in the base unit of `dimension`.
    pub value: f64,
    /// What the value measures.
    pub dimension: Dimension,
}

impl Quantity {
    /// A duration in seconds.
    pub fn seconds(seconds: f64) -> Self {
        Quantity { value: seconds, dimension: Dimension::Duration }
    }

    /// A duration in milliseconds.
    pub fn millis(millis: f64) -> Self {
        Quantity::seconds(millis / 1000.0)
    }

    /// A ratio given as a fraction, normally 0.0 to 1.0.
    pub fn ratio(fraction: f64) -> Self {
        Quantity { value: fraction, dimension: Dimension::Ratio }
    }

    /// A ratio given in percent: `percent(80.0)` is the fraction 0.8.
    pub fn percent(percent: f64) -> Self {
        Quantity::ratio(percent / 100.0)
    }

    /// A size in bytes.
    pub fn bytes(bytes: f64) -> Self {
        Quantity { value: bytes, dimension: Dimension::Bytes }
    }

    /// A plain number.
    pub fn count(count: f64) -> Self {
        Quantity { value: count, dimension: Dimension::Count }
    }

    /// The value written for a threshold: exact (it parses back to the same
    /// `f64`) and without a space, e.g. `500ms`, `0.1%`, `10GiB`, `0.8`.
    pub(crate) fn canonical(&self) -> String {
        let v = self.value;
        if !v.is_finite() {
            return format!("{v}{}", base_suffix(self.dimension));
        }
        // The largest unit in which the value is a whole number, if any.
        for unit in UNITS.iter().filter(|u| u.dimension == self.dimension && u.canonical) {
            let text = unit.scale.express(v);
            if v != 0.0 && !text.contains('.') && unit.scale.apply(&text) == Some(v) {
                return format!("{text}{}", unit.name);
            }
        }
        // Otherwise the shortest exact decimal among the power-of-ten units
        // (shifting the decimal point is always exact); a count has no unit.
        UNITS
            .iter()
            .filter(|u| u.dimension == self.dimension && u.canonical)
            .filter(|u| matches!(u.scale, Scale::Pow10(_)))
            .map(|u| format!("{}{}", u.scale.express(v), u.name))
            .min_by_key(String::len)
            .unwrap_or_else(|| Scale::Pow10(0).express(v))
    }
}

fn base_suffix(dimension: Dimension) -> &'static str {
    match dimension {
        Dimension::Duration => "s",
        Dimension::Ratio => "%",
        Dimension::Bytes => "B",
        Dimension::Count => "",
    }
}

impl fmt::Display for Quantity {
    /// The natural unit with about three significant digits, for people:
    /// `412 ms`, `1.25 s`, `3 min`, `4 h`, `80 %`, `0.1 %`, `1.5 GiB`, `12000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.value;
        if !v.is_finite() {
            let suffix = base_suffix(self.dimension);
            return if suffix.is_empty() { write!(f, "{v}") } else { write!(f, "{v} {suffix}") };
        }
        // (unit, unit size in base units, largest value shown in this unit)
        const DURATIONS: &[(&str, f64, f64)] = &[
            ("ns", 1e-9, 1000.0),
            ("µs", 1e-6, 1000.0),
            ("ms", 1e-3, 1000.0),
            ("s", 1.0, 60.0),
            ("min", 60.0, 60.0),
            ("h", 3600.0, 24.0),
            ("d", 86_400.0, f64::INFINITY),
        ];
        const BYTES: &[(&str, f64, f64)] = &[
            ("B", 1.0, 1024.0),
            ("KiB", 1024.0, 1024.0),
            ("MiB", 1_048_576.0, 1024.0),
            ("GiB", 1_073_741_824.0, 1024.0),
            ("TiB", 1_099_511_627_776.0, f64::INFINITY),
        ];
        if v == 0.0 && self.dimension != Dimension::Ratio {
            let suffix = base_suffix(self.dimension);
            return if suffix.is_empty() { f.write_str("0") } else { write!(f, "0 {suffix}") };
        }
        let scales = match self.dimension {
            Dimension::Count => return f.write_str(&format_number(v)),
            Dimension::Ratio => return write!(f, "{} %", format_number(v * 100.0)),
            Dimension::Duration => DURATIONS,
            Dimension::Bytes => BYTES,
        };
        // The first unit in which the rounded value stays below the next unit.
        let mut chosen = ("", 1.0, 0.0);
        for &(name, size, limit) in scales {
            chosen = (name, size, limit);
            let shown = format_number(v.abs() / size);
            if shown.parse::<f64>().is_ok_and(|n| n < limit) {
                break;
            }
        }
        write!(f, "{} {}", format_number(v / chosen.1), chosen.0)
    }
}

/// About three significant digits, no exponent, no trailing zeros; whole
/// numbers are printed exactly (`12000`, not `1.2e4`).
pub(crate) fn format_number(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v.fract() == 0.0 {
        return normalize_zero(format!("{v:.0}"));
    }
    let magnitude = v.abs().log10().floor();
    let decimals = (2.0 - magnitude).clamp(0.0, 12.0) as usize;
    let mut text = format!("{v:.decimals$}");
    if text.contains('.') {
        text.truncate(text.trim_end_matches('0').trim_end_matches('.').len());
    }
    normalize_zero(text)
}

fn normalize_zero(text: String) -> String {
    if text == "-0" { "0".to_owned() } else { text }
}

/// How a unit converts to its base unit.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scale {
    /// Multiply by 10^n; done by shifting the decimal point, which is exact.
    Pow10(i32),
    /// Multiply by a factor that is not a power of ten (60, 3600, 1024, ...).
    Factor(f64),
}

impl Scale {
    /// The base-unit value of a decimal number written in this unit, or
    /// `None` if `number` is not `-?digits(.digits)?`.
    pub(crate) fn apply(self, number: &str) -> Option<f64> {
        let unsigned = number.strip_prefix('-').unwrap_or(number);
        let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, "0"));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(int) || !digits(frac) {
            return None;
        }
        match self {
            // Parsing "500e-3" rounds once, correctly; "500" * 0.001 would not.
            Scale::Pow10(n) => format!("{number}e{n}").parse().ok(),
            Scale::Factor(factor) => number.parse::<f64>().ok().map(|v| v * factor),
        }
    }

    /// `value` (in base units) written as a plain decimal in this unit. For
    /// `Pow10` the digits are exactly those of the shortest representation of
    /// `value`, so [`Scale::apply`] gives `value` back.
    pub(crate) fn express(self, value: f64) -> String {
        match self {
            Scale::Factor(factor) => normalize_zero(format!("{}", value / factor)),
            Scale::Pow10(n) => {
                let sci = format!("{:e}", value.abs()); // "1.5e-10", "5e2"
                let Some((mantissa, exp)) = sci.split_once('e') else { return sci };
                let exp: i64 = exp.parse().unwrap_or(0);
                let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
                if digits.bytes().all(|b| b == b'0') {
                    return "0".to_owned();
                }
                // Number of digits before the decimal point in the new unit.
                let point = 1 + exp - i64::from(n);
                let len = digits.len() as i64;
                let text = if point <= 0 {
                    format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
                } else if point >= len {
                    format!("{digits}{}", "0".repeat((point - len) as usize))
                } else {
                    let (int, frac) = digits.split_at(point as usize);
                    format!("{int}.{frac}")
                };
                if value.is_sign_negative() { format!("-{text}") } else { text }
            }
        }
    }
}

/// A unit the threshold parser accepts.
#[derive(Debug)]
pub(crate) struct Unit {
    pub(crate) name: &'static str,
    pub(crate) dimension: Dimension,
    pub(crate) scale: Scale,
    /// Used when writing canonical thresholds (aliases are only read).
    canonical: bool,
}

const fn unit(name: &'static str, dimension: Dimension, scale: Scale, canonical: bool) -> Unit {
    Unit { name, dimension, scale, canonical }
}

/// Every accepted unit; canonical ones from largest to smallest per dimension.
pub(crate) const UNITS: &[Unit] = {
    use Dimension::{Bytes, Duration, Ratio};
    use Scale::{Factor, Pow10};
    &[
        unit("d", Duration, Factor(86_400.0), true),
        unit("h", Duration, Factor(3600.0), true),
        unit("min", Duration, Factor(60.0), true),
        unit("s", Duration, Pow10(0), true),
        unit("ms", Duration, Pow10(-3), true),
        unit("us", Duration, Pow10(-6), true),
        unit("ns", Duration, Pow10(-9), true),
        unit("m", Duration, Factor(60.0), false),
        unit("sec", Duration, Pow10(0), false),
        unit("µs", Duration, Pow10(-6), false),
        unit("μs", Duration, Pow10(-6), false), // Greek mu, as some keyboards type it
        unit("%", Ratio, Pow10(-2), true),
        unit("TB", Bytes, Pow10(12), true),
        unit("TiB", Bytes, Factor(1_099_511_627_776.0), true),
        unit("GB", Bytes, Pow10(9), true),
        unit("GiB", Bytes, Factor(1_073_741_824.0), true),
        unit("MB", Bytes, Pow10(6), true),
        unit("MiB", Bytes, Factor(1_048_576.0), true),
        unit("KB", Bytes, Pow10(3), true),
        unit("KiB", Bytes, Factor(1024.0), true),
        unit("B", Bytes, Pow10(0), true),
        unit("kB", Bytes, Pow10(3), false),
    ]
};

/// The list of units shown in error messages.
pub(crate) const UNIT_LIST: &str =
    "ns, us, µs, ms, s, sec, m, min, h, d, %, B, KB, MB, GB, TB, KiB, MiB, GiB, TiB";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_natural_units() {
        let cases = [
            (Quantity::millis(412.3), "412 ms"),
            (Quantity::seconds(1.25), "1.25 s"),
            (Quantity::seconds(180.0), "3 min"),
            (Quantity::seconds(90.0), "1.5 min"),
            (Quantity::seconds(4.0 * 3600.0), "4 h"),
            (Quantity::seconds(3.0 * 86_400.0), "3 d"),
            (Quantity::seconds(0.9996), "1 s"),
            (Quantity::seconds(0.0), "0 s"),
            (Quantity::seconds(2.5e-6), "2.5 µs"),
            (Quantity::seconds(-0.5), "-500 ms"),
            (Quantity::percent(80.0), "80 %"),
            (Quantity::ratio(0.001), "0.1 %"),
            (Quantity::ratio(0.000_123_4), "0.0123 %"),
            (Quantity::bytes(1.5 * 1_073_741_824.0), "1.5 GiB"),
            (Quantity::bytes(512.0), "512 B"),
            (Quantity::bytes(1e10), "9.31 GiB"),
            (Quantity::count(12_000.0), "12000"),
            (Quantity::count(0.8), "0.8"),
            (Quantity::count(-0.0), "0"),
            (Quantity::count(f64::NAN), "NaN"),
            (Quantity::seconds(f64::INFINITY), "inf s"),
        ];
        for (q, text) in cases {
            assert_eq!(q.to_string(), text, "{q:?}");
        }
    }

    #[test]
    fn canonical_form_is_exact_and_compact() {
        let cases = [
            (Quantity::millis(500.0), "500ms"),
            (Quantity::seconds(0.3), "300ms"),
            (Quantity::seconds(1.5), "1500ms"),
            (Quantity::seconds(90.0), "90s"),
            (Quantity::seconds(14_400.0), "4h"),
            (Quantity::seconds(1e-10), "0.1ns"),
            (Quantity::seconds(0.0), "0s"),
            (Quantity::percent(0.1), "0.1%"),
            (Quantity::percent(80.0), "80%"),
            (Quantity::bytes(10.0 * 1_073_741_824.0), "10GiB"),
            (Quantity::bytes(1e10), "10GB"),
            (Quantity::count(0.8), "0.8"),
            (Quantity::count(1e21), "1000000000000000000000"),
        ];
        for (q, text) in cases {
            assert_eq!(q.canonical(), text, "{q:?}");
        }
    }
}
