//! Scenarios without writing Rust: the YAML scenario file, its validation
//! (errors name the file, line and key) and the built-in marketplace scenario.
//!
//! ```yaml
//! name: marketplace
//! think_time: 500ms..1500ms          # between two transactions of a user
//! headers: { X-Device-Fingerprint: "lt-{{user}}" }
//! feeds:
//!   nft_id: { range: [1, 100] }
//!   term: { choice: [ape, punk] }
//!   wallet: { csv: wallets.csv }     # or json: rows.json; order: sequential | random
//! thresholds: ["p95 < 500ms"]        # overall, on top of the launch plan defaults
//! scenarios:
//!   - name: browse
//!     weight: 3                      # share of users
//!     transactions:
//!       - name: view nft
//!         request: { method: GET, path: "/api/nfts/{{nft_id}}" }
//!         expect_status: [200]
//!         thresholds: ["p95 < 200ms"]
//!       - name: graphql nft
//!         graphql: { query: "query($id: Int!) { nft(id: $id) { name } }", variables: { id: "{{nft_id}}" } }
//!   - name: buyer
//!     transactions:
//!       - name: sign in
//!         on_start: true             # once per user, before its loop
//!         siwe: {}                   # Sign-In with Ethereum against /auth/nonce + /auth/verify
//!         extract: { token: /token } # JSON pointer into the answer
//!       - name: me
//!         request: { path: /api/me, headers: { Authorization: "Bearer {{token}}" } }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use shared_types::{Threshold, parse_duration};

use crate::template::{Feed, JsonTemplate, Template};

mod yaml;

/// The built-in scenario's YAML: marketplace traffic against the sandbox.
pub const DEFAULT_SCENARIO: &str = include_str!("../scenarios/marketplace.yaml");

/// A random pause `min..=max` (equal bounds for a fixed pause).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThinkTime {
    /// Shortest pause.
    pub min: Duration,
    /// Longest pause.
    pub max: Duration,
}

impl ThinkTime {
    /// Parses `1s`, `500ms..1500ms` or `0`.
    pub fn parse(text: &str) -> Result<ThinkTime, String> {
        let (lo, hi) = text.split_once("..").unwrap_or((text, text));
        let min = parse_duration(lo.trim())?;
        let max = parse_duration(hi.trim())?;
        if min > max {
            return Err(format!("think time {text:?}: the minimum is larger than the maximum"));
        }
        Ok(ThinkTime { min, max })
    }
}

impl fmt::Display for ThinkTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{:?}", self.min)
        } else {
            write!(f, "{:?}..{:?}", self.min, self.max)
        }
    }
}

// ------------------------------------------------------------ the plan

/// A validated scenario file, ready to run.
#[derive(Debug, Clone)]
pub struct ScenarioPlan {
    /// Name of the plan (file name when not given).
    pub name: String,
    /// Where it came from: a path or `built-in`.
    pub source: String,
    /// Default pause between transactions.
    pub think_time: Option<ThinkTime>,
    /// Headers sent with every request.
    pub headers: Vec<(String, Template)>,
    /// Data feeds by name.
    pub feeds: BTreeMap<String, Feed>,
    /// Criteria on the whole run, in addition to the defaults.
    pub thresholds: Vec<Threshold>,
    /// The weighted scenarios.
    pub scenarios: Vec<Scenario>,
}

/// A kind of user: a weighted sequence of transactions.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Name.
    pub name: String,
    /// Relative share of the users.
    pub weight: usize,
    /// Pause between transactions; the plan's when `None`.
    pub think_time: Option<ThinkTime>,
    /// In order.
    pub transactions: Vec<Transaction>,
}

/// One step of a scenario, measured on its own.
#[derive(Debug, Clone)]
pub struct Transaction {
    /// Name, unique in the plan; statistics are kept under it.
    pub name: String,
    /// What it does.
    pub action: Action,
    /// Statuses that count as success; empty means any 2xx.
    pub expect_status: Vec<u16>,
    /// Pause after this transaction, on top of the scenario's.
    pub think_time: Option<ThinkTime>,
    /// Criteria on this transaction alone.
    pub thresholds: Vec<Threshold>,
    /// `name -> JSON pointer` values taken from the answer for later templates.
    pub extract: Vec<(String, String)>,
    /// Run once per user before its loop (sign-in).
    pub on_start: bool,
    /// How many times it appears in one pass of the scenario.
    pub weight: usize,
}

/// What a transaction sends.
#[derive(Debug, Clone)]
pub enum Action {
    /// An HTTP request.
    Http(HttpRequest),
    /// A GraphQL operation; an `errors` array in the answer is a failure.
    Graphql(GraphqlOperation),
    /// Sign-In with Ethereum (EIP-4361) with a fresh key per user.
    Siwe {
        /// Where nonces are handed out.
        nonce_path: String,
        /// Where signed messages are verified.
        verify_path: String,
    },
    /// A transaction written in Rust, registered under this name
    /// (see [`crate::transaction::CustomTransaction`]).
    Custom(String),
}

/// An HTTP request with templates.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// GET, POST, ...
    pub method: reqwest::Method,
    /// Path (and query), joined to the target.
    pub path: Template,
    /// Extra headers.
    pub headers: Vec<(String, Template)>,
    /// Body, if any.
    pub body: Option<Body>,
}

/// A request body.
#[derive(Debug, Clone)]
pub enum Body {
    /// JSON, sent with `content-type: application/json`.
    Json(JsonTemplate),
    /// Text, sent as is.
    Text(Template),
}

/// A GraphQL operation with templated variables.
#[derive(Debug, Clone)]
pub struct GraphqlOperation {
    /// Endpoint path, `/graphql` by default.
    pub path: String,
    /// The query document.
    pub query: String,
    /// Variables.
    pub variables: Option<JsonTemplate>,
    /// Operation name.
    pub operation_name: Option<String>,
    /// Extra headers.
    pub headers: Vec<(String, Template)>,
}

/// Why a scenario file cannot be used. The message names the file, line and key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ScenarioError {
    message: String,
}

impl ScenarioError {
    pub(crate) fn at(
        source: &str,
        line: u64,
        col: u64,
        key: Option<&str>,
        message: &str,
    ) -> ScenarioError {
        let key = key.map(|k| format!(" (key `{k}`)")).unwrap_or_default();
        ScenarioError { message: format!("scenario {source}:{line}:{col}{key}: {message}") }
    }
}

impl ScenarioPlan {
    /// Reads and validates a scenario file; feed files are taken relative to it.
    pub fn from_file(path: &Path) -> Result<ScenarioPlan, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            message: format!("cannot read scenario file {}: {e}", path.display()),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let fallback = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        ScenarioPlan::from_yaml(&text, &path.display().to_string(), &base, fallback)
    }

    /// The built-in marketplace scenario.
    pub fn built_in() -> ScenarioPlan {
        // Covered by a unit test: the embedded file always validates.
        ScenarioPlan::from_yaml(DEFAULT_SCENARIO, "built-in", Path::new("."), None)
            .unwrap_or_else(|e| ScenarioPlan::empty(&e.to_string()))
    }

    fn empty(reason: &str) -> ScenarioPlan {
        ScenarioPlan {
            name: format!("invalid built-in scenario: {reason}"),
            source: "built-in".to_owned(),
            think_time: None,
            headers: Vec::new(),
            feeds: BTreeMap::new(),
            thresholds: Vec::new(),
            scenarios: Vec::new(),
        }
    }

    /// Parses and validates YAML `text` read from `source`; feed files are
    /// taken relative to `base`.
    pub fn from_yaml(
        text: &str,
        source: &str,
        base: &Path,
        fallback_name: Option<String>,
    ) -> Result<ScenarioPlan, ScenarioError> {
        let raw: yaml::RawFile = serde_saphyr::from_str(text).map_err(|err| {
            let (line, col) = err.location().map_or((1, 1), |l| (l.line(), l.column()));
            let message = err.without_snippet().to_string();
            let message = message.lines().next().unwrap_or_default();
            let message = message.rsplit_once(" at line ").map_or(message, |(m, _)| m);
            let key = shared_types::yaml_key_path(text, line, col, message);
            ScenarioError::at(source, line, col, key.as_deref(), message)
        })?;
        yaml::compile(raw, source, base, fallback_name)
    }

    /// Every transaction, in plan order (the order statistics are listed in).
    pub fn transactions(&self) -> impl Iterator<Item = &Transaction> {
        self.scenarios.iter().flat_map(|s| &s.transactions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ScenarioPlan, String> {
        ScenarioPlan::from_yaml(text, "s.yaml", Path::new("."), None).map_err(|e| e.to_string())
    }

    #[test]
    fn the_built_in_scenario_validates() {
        let plan = ScenarioPlan::from_yaml(DEFAULT_SCENARIO, "built-in", Path::new("."), None);
        let plan = plan.unwrap_or_else(|e| panic!("{e}"));
        assert!(plan.scenarios.len() >= 3);
        assert!(plan.transactions().any(|t| matches!(t.action, Action::Graphql(_))));
    }

    #[test]
    fn a_wrong_type_names_line_and_key_path() {
        let err = parse("scenarios:\n  - name: a\n    transactions:\n      - name: x\n        weight: abc\n        request: {path: /}\n").unwrap_err();
        assert!(
            err.starts_with("scenario s.yaml:5:17 (key `scenarios.transactions.weight`)"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_key_and_an_unknown_feed_are_named() {
        let err = parse("scenarios:\n  - name: a\n    transactions:\n      - name: x\n        reqest: {path: /}\n").unwrap_err();
        assert!(err.contains(":5:9") && err.contains("unknown field `reqest`"), "{err}");
        let err = parse("feeds:\n  id: {range: [1, 2]}\nscenarios:\n  - name: a\n    transactions:\n      - name: x\n        request: {path: \"/n/{{nid}}\"}\n").unwrap_err();
        assert!(
            err.contains(":6:9 (key `request`)")
                && err.contains("`{{nid}}`")
                && err.contains("known: id, user"),
            "{err}"
        );
    }

    #[test]
    fn bad_thresholds_and_think_times_point_at_their_line() {
        let err = parse("thresholds: [\"p95 < 5 parsecs\"]\nscenarios: []\n").unwrap_err();
        assert!(err.contains("s.yaml:1:") && err.contains("parsecs"), "{err}");
        let err = parse("think_time: 2s..1s\nscenarios: []\n").unwrap_err();
        assert!(err.contains("s.yaml:1:") && err.contains("minimum is larger"), "{err}");
    }
}
