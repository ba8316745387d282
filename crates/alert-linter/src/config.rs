//! What the linter holds rules to. The defaults are the marketplace's
//! launch policy; `--config FILE` (YAML) overrides any part of it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::model::{format_duration, parse_duration};

// With the `schema` feature these types also derive the JSON Schema of the
// `--config` file ([`crate::config_schema`]); their doc comments are its
// descriptions, and `schemars(with)` gives the YAML form where it differs
// from the Rust type (durations are Prometheus duration strings). The
// schema's `default`s are the fields of `Config::default()` as schemars
// serializes them, so duration fields also name a `serialize_with` that
// writes them as the file would (`10s`), not as serde's `{secs, nanos}`.

/// The whole configuration. Every field has a marketplace default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Config {
    /// How often targets are scraped (read from the server when online).
    #[serde(deserialize_with = "duration")]
    #[cfg_attr(feature = "schema", schemars(with = "DurationText"))]
    #[cfg_attr(feature = "schema", serde(serialize_with = "duration_text"))]
    pub scrape_interval: Duration,
    /// How often rule groups are evaluated when a group sets no `interval`.
    #[serde(deserialize_with = "duration")]
    #[cfg_attr(feature = "schema", schemars(with = "DurationText"))]
    #[cfg_attr(feature = "schema", serde(serialize_with = "duration_text"))]
    pub evaluation_interval: Duration,
    /// Time from firing to a notification (Alertmanager `group_wait`).
    #[serde(deserialize_with = "duration")]
    #[cfg_attr(feature = "schema", schemars(with = "DurationText"))]
    #[cfg_attr(feature = "schema", serde(serialize_with = "duration_text"))]
    pub notification_delay: Duration,
    /// Labels, annotations and severities every alert must have.
    pub policy: Policy,
    /// Worst-case detection time allowed per severity (`critical: 1m`).
    #[serde(deserialize_with = "duration_map")]
    #[cfg_attr(feature = "schema", schemars(with = "BTreeMap<String, DurationText>"))]
    #[cfg_attr(feature = "schema", serde(serialize_with = "duration_map_text"))]
    pub detection_targets: BTreeMap<String, Duration>,
    /// The critical paths alerts must cover.
    pub coverage: Coverage,
    /// Online checks (`--prometheus`).
    pub online: Online,
    /// Backtest thresholds.
    pub backtest: Backtest,
    /// Check ids to skip entirely, e.g. `policy/owner-missing`.
    pub disabled_checks: Vec<String>,
    /// Scrape intervals a range selector must span (`promql/range-too-short`):
    /// with fewer, a missed scrape or a restart leaves `rate()` one or two
    /// samples, and it returns nothing or a spike.
    pub min_range_scrapes: u32,
}

/// Policy for labels and annotations.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Policy {
    /// Allowed values of `labels.severity`.
    pub severities: Vec<String>,
    /// Severities that page a person: they need a `for` of at least `min_for`.
    pub paging_severities: Vec<String>,
    /// Minimum `for` of a paging alert.
    #[serde(deserialize_with = "duration")]
    #[cfg_attr(feature = "schema", schemars(with = "DurationText"))]
    #[cfg_attr(feature = "schema", serde(serialize_with = "duration_text"))]
    pub min_for: Duration,
    /// At least one of these labels names the owner.
    pub owner_labels: Vec<String>,
    /// Annotation holding the runbook link.
    pub runbook_annotation: String,
    /// Links starting with this prefix point into the local checkout: the
    /// rest of the link must be an existing file (looked up from the rules
    /// file's folder upwards). Relative links are always local.
    pub runbook_url_prefix: Option<String>,
    /// Scrape intervals of evidence a paging alert judges before it fires
    /// (`detect/pages-on-noise`): its `for` plus the shortest range window
    /// of its expression must span at least this many, so one bad or one
    /// missed scrape does not page (`for: 10s` over a 30s window at a 10s
    /// scrape is 4, short of the default 5).
    pub min_paging_scrapes: u32,
}

/// Critical paths and the services they apply to.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Coverage {
    /// Whether `lint` reports coverage at all.
    pub enabled: bool,
    /// Whether an uncovered critical path fails the run. Off by default, so
    /// a third-party rules file linted on its own is judged on its rules
    /// alone (uncovered paths are listed, the coverage check is skipped);
    /// the marketplace's own config (`docs/alert-linter/marketplace.yml`,
    /// used by `cargo xtask verify`) turns it on.
    pub required: bool,
    /// Services that per-service paths must be covered for.
    pub services: Vec<String>,
    /// The label that names a service in selectors.
    pub service_label: String,
    /// Alerting rules that must watch the critical paths (the launch plan
    /// asks for 20+); checked as `coverage/alert-count`, required with
    /// `required`.
    pub min_alerts: usize,
    /// The critical paths; a list given here replaces the marketplace's.
    pub paths: Vec<CriticalPath>,
}

/// One thing that must be watched, recognised by the metrics an alert reads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CriticalPath {
    /// Stable id, e.g. `http-error-rate`.
    pub id: String,
    /// What it is, for people.
    pub description: String,
    /// Regexes (anchored) of metric names that watch this path.
    pub metrics: Vec<String>,
    /// The selector must also select on this label with `=` or `=~` (e.g.
    /// `status` for errors). Negative matchers (`!=`, `!~`) never satisfy it.
    #[serde(default)]
    pub requires_label: Option<String>,
    /// Values of `requires_label` that count: the selector's matchers on the
    /// label must all select at least one of them (`status=~"5.."` selects
    /// `500`; `status=~"4.."` selects none). Empty: any positive matcher.
    #[serde(default)]
    pub requires_values: Vec<String>,
    /// The condition the plan sets for this path (error rate > 5 % for 5m):
    /// an alert covers the path only if it fires whenever that condition
    /// holds, i.e. its threshold is at the plan's or more sensitive and its
    /// `for` is at most the plan's. Whether a more sensitive alert pages on
    /// noise is for `detect/pages-on-noise` and the backtest to say.
    #[serde(default)]
    pub threshold: Option<PathThreshold>,
    /// Must be covered for every service in `coverage.services`.
    #[serde(default)]
    pub per_service: bool,
}

/// A condition on a path's value, as the launch plan writes it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PathThreshold {
    /// How the value compares with `value`.
    pub op: Comparison,
    /// The threshold, in the unit the metric is in (ratios, not percent: an
    /// alert written as `100 * ratio > 5` is read as `ratio > 0.05`).
    pub value: f64,
    /// How long the condition holds before the plan wants an alert; an
    /// alert's `for` must not be longer.
    #[serde(default, rename = "for", deserialize_with = "optional_duration")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<DurationText>"))]
    pub for_: Option<Duration>,
}

/// A PromQL comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Comparison {
    /// `>`
    #[serde(rename = ">")]
    Greater,
    /// `>=`
    #[serde(rename = ">=")]
    GreaterOrEqual,
    /// `<`
    #[serde(rename = "<")]
    Less,
    /// `<=`
    #[serde(rename = "<=")]
    LessOrEqual,
    /// `==`
    #[serde(rename = "==")]
    Equal,
}

impl Comparison {
    /// The operator as PromQL writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Comparison::Greater => ">",
            Comparison::GreaterOrEqual => ">=",
            Comparison::Less => "<",
            Comparison::LessOrEqual => "<=",
            Comparison::Equal => "==",
        }
    }
}

impl std::fmt::Display for PathThreshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.op.as_str(), self.value)?;
        if let Some(d) = self.for_ {
            write!(f, " for {}", format_duration(d))?;
        }
        Ok(())
    }
}

/// Online-check settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Online {
    /// Regexes of metric names that are intentionally absent on the server.
    pub absent_ok: Vec<String>,
    /// Query cost limit: samples one evaluation may touch.
    pub max_samples: u64,
}

/// Backtest settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Backtest {
    /// More firing episodes than this in the range is flapping.
    pub max_episodes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            scrape_interval: Duration::from_secs(10),
            evaluation_interval: Duration::from_secs(10),
            notification_delay: Duration::from_secs(10),
            policy: Policy::default(),
            detection_targets: [("critical", 60), ("warning", 900), ("info", 3600)]
                .into_iter()
                .map(|(s, secs)| (s.to_owned(), Duration::from_secs(secs)))
                .collect(),
            coverage: Coverage::default(),
            online: Online::default(),
            backtest: Backtest::default(),
            disabled_checks: Vec::new(),
            min_range_scrapes: 4,
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            severities: vec!["critical".into(), "warning".into(), "info".into()],
            paging_severities: vec!["critical".into()],
            min_for: Duration::from_secs(10),
            owner_labels: vec!["team".into(), "owner".into()],
            runbook_annotation: "runbook_url".into(),
            runbook_url_prefix: Some("https://github.com/postlaunch/postlaunch/blob/main/".into()),
            min_paging_scrapes: 5,
        }
    }
}

impl Default for Coverage {
    fn default() -> Self {
        let path =
            |id: &str, description: &str, metrics: &[&str], label: Option<&str>, per_service| {
                CriticalPath {
                    id: id.into(),
                    description: description.into(),
                    metrics: metrics.iter().map(|m| (*m).to_owned()).collect(),
                    requires_label: label.map(str::to_owned),
                    requires_values: Vec::new(),
                    per_service,
                    threshold: None,
                }
            };
        let threshold = |op, value, for_secs| {
            Some(PathThreshold { op, value, for_: Some(Duration::from_secs(for_secs)) })
        };
        Coverage {
            enabled: true,
            required: false,
            services: ["auth", "user", "media", "gateway", "indexer"].map(String::from).to_vec(),
            service_label: "job".into(),
            min_alerts: 20,
            paths: vec![
                CriticalPath {
                    requires_values: ["500", "502", "503", "504"].map(String::from).to_vec(),
                    // Launch plan, task 11: error rate > 5 % for 5 min.
                    threshold: threshold(Comparison::Greater, 0.05, 300),
                    ..path(
                        "http-error-rate",
                        "each service's HTTP 5xx error rate",
                        &["http_requests_total"],
                        Some("status"),
                        true,
                    )
                },
                path(
                    "http-latency",
                    "each service's request latency",
                    &["http_request_duration_seconds(_bucket|_sum|_count)?"],
                    None,
                    true,
                ),
                path(
                    "availability",
                    "each service is up and answering",
                    &["up", "probe_success"],
                    None,
                    true,
                ),
                CriticalPath {
                    // Launch plan, task 11: pool > 90 % for 1 min.
                    threshold: threshold(Comparison::Greater, 0.9, 60),
                    ..path(
                        "db-pool-saturation",
                        "database connection pool saturation",
                        &["db_connections_in_use", "pg_stat_activity_count"],
                        None,
                        false,
                    )
                },
                CriticalPath {
                    requires_values: vec!["open".into()],
                    // Launch plan, task 11: breaker open for 2 min
                    // (`circuit_breaker_state{state="open"}` is 1 while open).
                    threshold: threshold(Comparison::Equal, 1.0, 120),
                    ..path(
                        "circuit-breakers",
                        "circuit breakers open",
                        &["circuit_breaker_state"],
                        Some("state"),
                        false,
                    )
                },
                path(
                    "rabbitmq-consumer-lag",
                    "RabbitMQ consumer lag (messages waiting)",
                    &[
                        "rabbitmq_queue_messages(_ready|_unacknowledged)?",
                        "rabbitmq_detailed_queue_messages_ready",
                    ],
                    None,
                    false,
                ),
                path(
                    "indexer-lag",
                    "chain indexer lag behind the chain head",
                    &[
                        "indexer_(head_)?lag_blocks",
                        "indexer_last_indexed_block",
                        "chain_head_block",
                    ],
                    None,
                    false,
                ),
                path(
                    "indexer-reorgs",
                    "chain reorganisations seen by the indexer",
                    &["indexer_reorgs?_.*"],
                    None,
                    false,
                ),
                path(
                    "backup-freshness",
                    "age of the last good backup",
                    &["backup_last_success_timestamp_seconds", ".*backup.*_timestamp_seconds"],
                    None,
                    false,
                ),
                path(
                    "certificate-expiry",
                    "TLS certificate expiry",
                    &[
                        "probe_ssl_earliest_cert_expiry",
                        "x509_cert_not_after",
                        "certmanager_certificate_expiration_timestamp_seconds",
                    ],
                    None,
                    false,
                ),
            ],
        }
    }
}

impl Default for Online {
    fn default() -> Self {
        Online { absent_ok: Vec::new(), max_samples: 5_000_000 }
    }
}

impl Default for Backtest {
    fn default() -> Self {
        Backtest { max_episodes: 3 }
    }
}

/// A configuration file that cannot be used: where and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not readable.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid.
    #[error("{path}:{line}:{col}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// 1-based line (0 when unknown).
        line: u32,
        /// 1-based column.
        col: u32,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Reads a YAML config; missing keys keep their defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Config::from_yaml(&text).map_err(|(line, col, message)| ConfigError::Invalid {
            path: path.display().to_string(),
            line,
            col,
            message,
        })
    }

    /// Parses config YAML text; errors carry line, column and message.
    pub fn from_yaml(text: &str) -> Result<Config, (u32, u32, String)> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let config: Config = serde_saphyr::from_str(text).map_err(|err| {
            let (line, col) = err.location().map_or((0, 0), |l| {
                (u32::try_from(l.line()).unwrap_or(0), u32::try_from(l.column()).unwrap_or(0))
            });
            let message = err.without_snippet().to_string();
            let message = message.lines().next().unwrap_or_default().to_owned();
            (line, col, message)
        })?;
        for path in &config.coverage.paths {
            for m in &path.metrics {
                if let Err(e) = regex::Regex::new(m) {
                    return Err((0, 0, format!("coverage path {}: bad regex {m:?}: {e}", path.id)));
                }
            }
        }
        Ok(config)
    }

    /// Whether a check id runs.
    pub fn enabled(&self, check: &str) -> bool {
        !self.disabled_checks.iter().any(|c| c == check)
    }
}

/// Schema of a duration as written in the file (parsed by [`parse_duration`]).
#[cfg(feature = "schema")]
struct DurationText;

#[cfg(feature = "schema")]
impl DurationText {
    /// The strings [`parse_duration`] accepts: `0`, or one or more
    /// `<digits><unit>` with each unit at most once, largest first.
    const PATTERN: &'static str =
        "^(0|([0-9]+y)?([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?)$";
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for DurationText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A Prometheus duration: `0`, or numbers with units y, w, d, h, m, s, \
                ms, largest first and each at most once (`1h30m`, `500ms`).",
            "minLength": 1,
            "pattern": DurationText::PATTERN,
            "examples": ["10s", "1m", "1h30m", "0"]
        })
    }
}

/// A duration as the file writes it, for the schema's defaults.
#[cfg(feature = "schema")]
fn duration_text<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

/// Durations by name as the file writes them, for the schema's defaults.
#[cfg(feature = "schema")]
fn duration_map_text<S: serde::Serializer>(
    map: &BTreeMap<String, Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(map.iter().map(|(k, d)| (k, format_duration(*d))))
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = Option::<String>::deserialize(d)?;
    text.map(|t| parse_duration(&t).map_err(serde::de::Error::custom)).transpose()
}

fn duration_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Duration>, D::Error> {
    let raw = BTreeMap::<String, String>::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| parse_duration(&v).map(|d| (k, d)).map_err(serde::de::Error::custom))
        .collect()
}
