//! Rendering a [`Report`] for people (a table) and machines
//! (JSON, JUnit XML, Markdown). Entry point: [`Report::render`](crate::Report::render).
//!
//! Every renderer treats the report's text as untrusted: check details often
//! quote a remote server, so control characters (including terminal escape
//! sequences) never reach the output unescaped.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::quantity::format_number;
use crate::report::{Measurement, Report};

pub(crate) mod human;
pub(crate) mod junit;
pub(crate) mod markdown;

/// How a report is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// An aligned table for a terminal (also accepted as `text`, `table`).
    #[default]
    #[serde(alias = "text", alias = "table")]
    Human,
    /// The report as pretty-printed JSON.
    Json,
    /// JUnit XML, for CI systems that show test results (also `xml`).
    #[serde(alias = "xml")]
    Junit,
    /// A GitHub-flavoured Markdown summary, for PR comments and job summaries (also `md`).
    #[serde(alias = "md")]
    Markdown,
}

impl OutputFormat {
    /// Every format, in the order help texts list them.
    pub const ALL: [OutputFormat; 4] =
        [OutputFormat::Human, OutputFormat::Json, OutputFormat::Junit, OutputFormat::Markdown];

    /// The canonical name: `human`, `json`, `junit`, `markdown`.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::Human => "human",
            OutputFormat::Json => "json",
            OutputFormat::Junit => "junit",
            OutputFormat::Markdown => "markdown",
        }
    }
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for OutputFormat {
    type Err = UnknownOutputFormat;

    /// Accepts `human` (`text`, `table`), `json`, `junit` (`xml`) and
    /// `markdown` (`md`), ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "human" | "text" | "table" => Ok(OutputFormat::Human),
            "json" => Ok(OutputFormat::Json),
            "junit" | "xml" => Ok(OutputFormat::Junit),
            "markdown" | "md" => Ok(OutputFormat::Markdown),
            _ => Err(UnknownOutputFormat(s.to_owned())),
        }
    }
}

/// The error for an output format name that is not known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownOutputFormat(String);

impl fmt::Display for UnknownOutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown output format {:?} (expected one of: human, json, junit, markdown)",
            self.0
        )
    }
}

impl std::error::Error for UnknownOutputFormat {}

/// Presentation choices for [`Report::render`](crate::Report::render).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RenderOptions {
    /// Use ANSI colours in the human format (callers set this only when
    /// stdout is a terminal). Other formats ignore it. Default: off.
    pub color: bool,
}

/// `value unit`, e.g. `412 ms`, `12000`, `0.0312 %`.
pub(crate) fn measurement_value(m: &Measurement) -> String {
    let value = format_number(m.value);
    match m.unit.as_str() {
        "" => value,
        unit => format!("{value} {unit}"),
    }
}

/// `text` on one line: newlines and tabs become spaces, other control
/// characters (escape sequences included) are dropped.
pub(crate) fn single_line(text: &str) -> String {
    text.chars()
        .filter_map(|c| match c {
            '\n' | '\t' => Some(' '),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect()
}

impl Report {
    /// Renders the report for people or machines. The result always ends
    /// with a newline, so write it with `print!`, not `println!`.
    pub fn render(&self, format: OutputFormat, options: &RenderOptions) -> String {
        match format {
            OutputFormat::Human => human::render(self, options),
            OutputFormat::Json => {
                let mut json = self.to_json_pretty();
                json.push('\n');
                json
            }
            OutputFormat::Junit => junit::render(self),
            OutputFormat::Markdown => markdown::render(self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_format_parses_names_and_aliases() {
        let parse = |s: &str| s.parse::<OutputFormat>().ok();
        assert_eq!(parse("table"), Some(OutputFormat::Human));
        assert_eq!(parse("JSON"), Some(OutputFormat::Json));
        assert_eq!(parse("xml"), Some(OutputFormat::Junit));
        assert_eq!(parse("md"), Some(OutputFormat::Markdown));
        let err = "yaml".parse::<OutputFormat>().map_err(|e| e.to_string());
        let want = "unknown output format \"yaml\" (expected one of: human, json, junit, markdown)";
        assert_eq!(err, Err(want.to_owned()));
        for format in OutputFormat::ALL {
            assert_eq!(parse(&format.to_string()), Some(format));
        }
        assert_eq!(OutputFormat::default(), OutputFormat::Human);
    }

    #[test]
    fn single_line_drops_escape_sequences() {
        assert_eq!(single_line("a\nb\u{1b}[31mc\r"), "a b[31mc");
    }
}
