//! The threshold parser: `metric op number [unit]`.
//!
//! It works on a `Vec<char>` so that positions are character columns and no
//! slicing can land inside a multi-byte character.

use super::{Op, Threshold, ThresholdError};
use crate::quantity::{Dimension, Quantity, Scale, UNIT_LIST, UNITS};

const OPS: &str = "<, <=, >, >=, ==, !=";

struct Cursor<'a> {
    input: &'a str,
    chars: Vec<char>,
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos.saturating_add(ahead)).copied()
    }

    fn skip_whitespace(&mut self) {
        self.take_while(char::is_whitespace);
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> String {
        let start = self.pos;
        while self.peek(0).is_some_and(&keep) {
            self.pos += 1;
        }
        self.text(start, self.pos)
    }

    fn text(&self, start: usize, end: usize) -> String {
        self.chars.get(start..end).unwrap_or_default().iter().collect()
    }

    /// The next whitespace-delimited word, shortened for messages.
    fn word(&self) -> String {
        let word: String =
            self.chars.iter().skip(self.pos).take_while(|c| !c.is_whitespace()).collect();
        shorten(&word)
    }

    /// The 1-based column of the current position.
    fn column(&self) -> usize {
        self.pos + 1
    }

    fn error(&self, message: String) -> ThresholdError {
        ThresholdError::parse(self.input, Some(self.column()), message)
    }
}

fn shorten(text: &str) -> String {
    const MAX: usize = 24;
    if text.chars().count() > MAX {
        format!("{}...", text.chars().take(MAX).collect::<String>())
    } else {
        text.to_owned()
    }
}

fn is_metric_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_metric_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')
}

pub(super) fn threshold(input: &str) -> Result<Threshold, ThresholdError> {
    let mut cur = Cursor { input, chars: input.chars().collect(), pos: 0 };
    cur.skip_whitespace();
    if cur.peek(0).is_none() {
        let message = "empty input (expected `metric op limit`, e.g. \"p95 < 500ms\")".to_owned();
        return Err(ThresholdError::parse(input, None, message));
    }

    if !cur.peek(0).is_some_and(is_metric_start) {
        return Err(cur.error(format!(
            "expected a metric name at column {}, found \"{}\" (a metric starts with a letter \
             or _ and continues with letters, digits, _ . : -)",
            cur.column(),
            cur.word()
        )));
    }
    let metric = cur.take_while(is_metric_char);
    cur.skip_whitespace();

    let op = comparison(&mut cur, &metric)?;
    cur.skip_whitespace();

    let limit = limit(&mut cur, op)?;
    cur.skip_whitespace();
    if cur.peek(0).is_some() {
        let rest = cur.text(cur.pos, cur.chars.len());
        return Err(cur.error(format!(
            "trailing input \"{}\" at column {} (expected nothing after the limit)",
            shorten(rest.trim_end()),
            cur.column()
        )));
    }
    Ok(Threshold { metric, op, limit })
}

fn comparison(cur: &mut Cursor<'_>, metric: &str) -> Result<Op, ThresholdError> {
    let (op, width) = match (cur.peek(0), cur.peek(1)) {
        (Some('<'), Some('=')) => (Op::Le, 2),
        (Some('<'), _) => (Op::Lt, 1),
        (Some('>'), Some('=')) => (Op::Ge, 2),
        (Some('>'), _) => (Op::Gt, 1),
        (Some('='), Some('=')) => (Op::Eq, 2),
        (Some('!'), Some('=')) => (Op::Ne, 2),
        (None, _) => {
            return Err(cur.error(format!(
                "missing comparison operator after \"{metric}\" at column {} (expected one of {OPS})",
                cur.column()
            )));
        }
        (Some(c), next) => {
            let hint = match (c, next) {
                ('=', Some('<')) => " (did you mean <=?)".to_owned(),
                ('=', Some('>')) => " (did you mean >=?)".to_owned(),
                ('=', _) => " (did you mean ==?)".to_owned(),
                ('≤', _) => " (did you mean <=?)".to_owned(),
                ('≥', _) => " (did you mean >=?)".to_owned(),
                ('≠', _) => " (did you mean !=?)".to_owned(),
                _ => format!(" (expected one of {OPS})"),
            };
            return Err(cur.error(format!(
                "expected a comparison operator after \"{metric}\" at column {}, found \"{}\"{hint}",
                cur.column(),
                cur.word()
            )));
        }
    };
    cur.pos += width;
    Ok(op)
}

fn limit(cur: &mut Cursor<'_>, op: Op) -> Result<Quantity, ThresholdError> {
    if cur.peek(0).is_none() {
        return Err(cur.error(format!(
            "missing limit after \"{op}\" at column {} (expected a number with an optional unit, \
             e.g. 500ms)",
            cur.column()
        )));
    }
    let number_at = cur.pos;
    let mut number = String::new();
    if let Some(sign @ ('-' | '+')) = cur.peek(0) {
        cur.pos += 1;
        if sign == '-' {
            number.push('-');
        }
    }
    number.push_str(&cur.take_while(|c| c.is_ascii_digit() || c == '.'));
    let number_text = cur.text(number_at, cur.pos);
    if !number_text.chars().any(|c| c.is_ascii_digit()) {
        cur.pos = number_at;
        return Err(cur.error(format!(
            "expected a number at column {}, found \"{}\" (e.g. 500ms, 0.1%, 10GiB, 0)",
            cur.column(),
            cur.word()
        )));
    }
    let end_of_number = cur.pos;
    let column = number_at + 1;
    if Scale::Pow10(0).apply(&number).is_none() {
        cur.pos = number_at;
        return Err(cur.error(not_a_number(&number_text, column)));
    }
    cur.skip_whitespace();

    let unit_at = cur.pos;
    let unit_text = cur.take_while(|c| c.is_alphabetic() || c == '%');
    let (dimension, scale) = if unit_text.is_empty() {
        (Dimension::Count, Scale::Pow10(0))
    } else {
        match UNITS.iter().find(|u| u.name == unit_text) {
            Some(unit) => (unit.dimension, unit.scale),
            None => {
                cur.pos = unit_at;
                return Err(cur.error(format!(
                    "unknown unit \"{}\" at column {} (expected one of {UNIT_LIST}, or no unit \
                     for a plain count){}",
                    shorten(&unit_text),
                    cur.column(),
                    did_you_mean(&unit_text)
                )));
            }
        }
    };

    let at_number = |cur: &mut Cursor<'_>, message: String| {
        cur.pos = number_at;
        cur.error(message)
    };
    let Some(value) = scale.apply(&number) else {
        return Err(at_number(cur, not_a_number(&number_text, column)));
    };
    let written = format!("{}{unit_text}", cur.text(number_at, end_of_number));
    if !value.is_finite() {
        let message = format!("limit \"{}\" at column {column} is too large", shorten(&written));
        return Err(at_number(cur, message));
    }
    if value < 0.0 && dimension != Dimension::Count {
        let message = format!(
            "limit \"{}\" at column {column} is negative (a {dimension} cannot be)",
            shorten(&written)
        );
        return Err(at_number(cur, message));
    }
    Ok(Quantity { value, dimension })
}

fn not_a_number(text: &str, column: usize) -> String {
    format!(
        "\"{}\" at column {column} is not a number (expected digits with an optional \
         fraction, e.g. 500 or 0.5)",
        shorten(text)
    )
}

/// A suggestion for a unit written in the wrong case, e.g. `MS` for `ms`.
fn did_you_mean(unit: &str) -> String {
    // "M" could mean mega as well as minutes; do not guess.
    if unit == "M" {
        return String::new();
    }
    UNITS
        .iter()
        .find(|u| u.name.to_lowercase() == unit.to_lowercase())
        .map(|u| format!("; did you mean \"{}\"?", u.name))
        .unwrap_or_default()
}
