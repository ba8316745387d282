//! Reading a Prometheus text exposition in tests and in `xtask verify`:
//! sample sums by name and label subset.
//!
//! Tools that watch real targets parse with `prometheus-parse`; this is the
//! small reader test code needs to assert on a scrape of a known service.

use std::collections::BTreeMap;

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name, including `_bucket`/`_sum`/`_count` suffixes.
    pub name: String,
    /// Label pairs, unescaped.
    pub labels: BTreeMap<String, String>,
    /// The value (`NaN`, `+Inf` and `-Inf` included).
    pub value: f64,
}

/// Every sample of one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples(pub Vec<Sample>);

impl Samples {
    /// Whether any sample is named `name`.
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|s| s.name == name)
    }

    /// The sum of the samples named `name` whose labels include all of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }
}

/// Parses the text format; lines that are not samples (comments, blanks,
/// malformed lines) are skipped.
pub fn parse_samples(text: &str) -> Samples {
    Samples(text.lines().filter_map(parse_line).collect())
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample { name: name.to_owned(), labels, value })
}

/// Parses `k="v",k2="v2"}` and returns the labels and the text after `}`.
fn parse_labels(mut text: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        text = text.trim_start_matches([',', ' ']);
        if let Some(after) = text.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after_key) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after_key.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.trim().to_owned(), value);
        text = &after_key[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = r#"# HELP http_requests_total HTTP requests.
# TYPE http_requests_total counter
http_requests_total{route="/api/nfts/{id}",status="200"} 7
http_requests_total{route="/api/nfts/{id}",status="500"} 2
http_requests_total{route="/a,b",status="200"} 1
weird{msg="say \"hi\"\nthere"} 3
process_start_time_seconds 1.7e9
bucket{le="+Inf"} +Inf
not a sample line
"#;

    #[test]
    fn sums_by_name_and_label_subset() {
        let samples = parse_samples(SCRAPE);
        assert_eq!(samples.sum("http_requests_total", &[]), 10.0);
        assert_eq!(samples.sum("http_requests_total", &[("status", "500")]), 2.0);
        assert_eq!(samples.sum("http_requests_total", &[("route", "/a,b")]), 1.0);
        assert_eq!(samples.sum("process_start_time_seconds", &[]), 1.7e9);
        assert!(samples.has("bucket") && !samples.has("not"));
        let weird = samples.0.iter().find(|s| s.name == "weird").unwrap();
        assert_eq!(weird.labels["msg"], "say \"hi\"\nthere");
    }

    #[test]
    fn garbage_is_skipped_not_a_panic() {
        for text in ["{", "x{a=\"", "x{a=\"b\"", "x{a}", "x 1 2 3", "x{a=\"\\", "é{é=\"é\"} 1"] {
            let _ = parse_samples(text);
        }
    }
}
