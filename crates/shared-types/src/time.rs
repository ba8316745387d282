//! Wall-clock timestamps as they appear in reports.
//!
//! A [`Timestamp`] is an RFC 3339 string in UTC with millisecond precision,
//! `2026-11-30T13:08:25.123Z`. It is stored as the string itself so that a
//! report read from disk serializes back byte for byte, and so that a report
//! written by a newer or older tool still loads. The calendar conversion is
//! done by hand (Howard Hinnant's `civil_from_days`), which keeps this crate
//! free of a date library.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch of `0000-01-01T00:00:00.000Z`.
const MIN_MILLIS: i64 = -62_167_219_200_000;
/// Milliseconds since the Unix epoch of `9999-12-31T23:59:59.999Z`.
const MAX_MILLIS: i64 = 253_402_300_799_999;
const MILLIS_PER_DAY: i64 = 86_400_000;

/// A point in time, RFC 3339 in UTC with milliseconds: `2026-11-30T13:08:25.123Z`.
///
/// Serializes as a plain JSON string. Deserialization accepts any string (a
/// report must load even if another tool wrote an odd timestamp); use
/// [`Timestamp::unix_millis`] to interpret it, which returns `None` for text
/// that is not RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(String);

impl Timestamp {
    /// The current time of the system clock.
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// Formats a [`SystemTime`]; times outside the years 0000 to 9999 are
    /// clamped to the nearest representable instant.
    pub fn from_system_time(time: SystemTime) -> Self {
        let millis = match time.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
            Err(before) => {
                let before = before.duration();
                let whole = i64::try_from(before.as_millis()).unwrap_or(i64::MAX);
                // Round towards the past, as the formatting of positive times does.
                let partial = i64::from(before.subsec_nanos() % 1_000_000 != 0);
                whole.saturating_add(partial).saturating_neg()
            }
        };
        Self::from_unix_millis(millis)
    }

    /// Formats milliseconds since the Unix epoch (negative is before 1970),
    /// clamped to `0000-01-01T00:00:00.000Z ..= 9999-12-31T23:59:59.999Z`.
    pub fn from_unix_millis(millis: i64) -> Self {
        let millis = millis.clamp(MIN_MILLIS, MAX_MILLIS);
        let days = millis.div_euclid(MILLIS_PER_DAY);
        let in_day = millis.rem_euclid(MILLIS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        let (hour, minute) = (in_day / 3_600_000, in_day / 60_000 % 60);
        let (second, milli) = (in_day / 1000 % 60, in_day % 1000);
        Timestamp(format!(
            "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{milli:03}Z"
        ))
    }

    /// Parses RFC 3339 text (any offset, any number of fractional digits) and
    /// normalizes it to UTC with milliseconds. Returns `None` if it is not
    /// RFC 3339.
    pub fn parse(text: &str) -> Option<Self> {
        parse_rfc3339(text).map(Self::from_unix_millis)
    }

    /// The timestamp as written, e.g. `2026-11-30T13:08:25.123Z`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Milliseconds since the Unix epoch, or `None` if the stored text is not
    /// RFC 3339 (possible only for timestamps read from outside).
    pub fn unix_millis(&self) -> Option<i64> {
        parse_rfc3339(&self.0)
    }

    /// The time from `self` to `later`, or `None` if either is unreadable or
    /// `later` is earlier.
    pub fn duration_until(&self, later: &Timestamp) -> Option<Duration> {
        let span = later.unix_millis()?.checked_sub(self.unix_millis()?)?;
        u64::try_from(span).ok().map(Duration::from_millis)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "format": "date-time",
            "description": "RFC 3339 timestamp in UTC with milliseconds, e.g. 2026-11-30T13:08:25.123Z.",
            "examples": ["2026-11-30T13:08:25.123Z"]
        })
    }
}

/// Year, month (1-12) and day (1-31) of a day count since 1970-01-01.
/// Howard Hinnant, "chrono-Compatible Low-Level Date Algorithms".
pub(crate) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1st
    let mp = (5 * doy + 2) / 153; // month from March, [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Day count since 1970-01-01 of a civil date; the inverse of [`civil_from_days`].
pub(crate) fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Milliseconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.fff...](Z|±HH:MM)`.
fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(range)?;
        digits
            .iter()
            .try_fold(0_i64, |acc, &d| d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0')))
    };
    let sep = |i: usize, allowed: &[u8]| b.get(i).is_some_and(|c| allowed.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let valid_date = (1..=12).contains(&month) && (1..=days_in_month(year, month)).contains(&day);
    if !valid_date || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        // Pad or truncate the fraction to exactly three digits.
        millis = (start..start + 3).try_fold(0, |acc, j| {
            let digit = if j < i { num(j..j + 1)? } else { 0 };
            Some(acc * 10 + digit)
        })?;
    }
    let offset_minutes = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let minutes = oh * 60 + om;
            if *sign == b'+' { minutes } else { -minutes }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_dates() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (951_868_800_000, "2000-03-01T00:00:00.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_709_164_800_000, "2024-02-29T00:00:00.000Z"),
            (1_796_044_105_123, "2026-11-30T13:08:25.123Z"),
            (4_102_444_800_000, "2100-01-01T00:00:00.000Z"),
            (MAX_MILLIS, "9999-12-31T23:59:59.999Z"),
            (MIN_MILLIS, "0000-01-01T00:00:00.000Z"),
            (i64::MAX, "9999-12-31T23:59:59.999Z"),
            (i64::MIN, "0000-01-01T00:00:00.000Z"),
        ];
        for (millis, text) in cases {
            let ts = Timestamp::from_unix_millis(millis);
            assert_eq!(ts.as_str(), text, "{millis}");
            assert_eq!(ts.unix_millis(), Some(millis.clamp(MIN_MILLIS, MAX_MILLIS)));
        }
    }

    #[test]
    fn civil_conversion_is_inverse_over_many_days() {
        for days in (-800_000..3_000_000).step_by(97) {
            let (y, m, d) = civil_from_days(days);
            assert!((1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m));
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn system_time_before_epoch_rounds_down() {
        let t = UNIX_EPOCH - Duration::from_micros(1500);
        assert_eq!(Timestamp::from_system_time(t).as_str(), "1969-12-31T23:59:59.998Z");
        let t = UNIX_EPOCH + Duration::from_micros(1500);
        assert_eq!(Timestamp::from_system_time(t).as_str(), "1970-01-01T00:00:00.001Z");
    }

    #[test]
    fn parses_offsets_and_fractions() {
        let parse = |s: &str| Timestamp::parse(s).map(|t| t.0);
        let want = Some("2026-11-30T13:08:25.123Z".to_owned());
        assert_eq!(parse("2026-11-30T14:08:25.1234+01:00"), want);
        assert_eq!(parse("2026-11-30t13:08:25.123z"), want);
        assert_eq!(parse("2026-11-30T13:08:25Z").as_deref(), Some("2026-11-30T13:08:25.000Z"));
        for bad in [
            "",
            "2026-11-30",
            "2026-02-29T00:00:00Z",
            "2026-11-30T24:00:00Z",
            "2026-11-30T13:08:25.Z",
            "2026-11-30T13:08:25",
            "2026-11-30T13:08:25+1:00",
            "2026-11-30T13:08:25Zjunk",
            "２０２６-11-30T13:08:25Z",
            "+026-11-30T13:08:25Z",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
