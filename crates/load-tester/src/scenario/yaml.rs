//! Reading the scenario YAML: the raw file as serde sees it, the key path
//! of an error, and the validation that turns it into a [`ScenarioPlan`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;
use shared_types::Threshold;

use super::{
    Action, Body, GraphqlOperation, HttpRequest, Scenario, ScenarioError, ScenarioPlan, ThinkTime,
    Transaction,
};
use crate::template::{BUILT_INS, Feed, JsonTemplate, Template};

fn think_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ThinkTime>, D::Error> {
    let text = String::deserialize(d)?;
    ThinkTime::parse(&text).map(Some).map_err(serde::de::Error::custom)
}

// ---------------------------------------------------------------- the file
//
// With the `schema` feature these types also derive the JSON Schema published
// as docs/load-tester/scenario.schema.json; their doc comments are its
// descriptions, and `schemars(with)` gives the YAML form where it differs
// from the Rust type (think times are strings, positions are not in the file).

/// A load-tester scenario file: settings, data feeds and weighted scenarios (kinds of users).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema), schemars(rename = "ScenarioFile"))]
pub(super) struct RawFile {
    /// Name of the plan in reports; the file name when left out.
    #[serde(default)]
    name: Option<String>,
    /// Pause between two transactions of a user, for every scenario.
    #[serde(default, deserialize_with = "think_time")]
    #[cfg_attr(feature = "schema", schemars(with = "ThinkTimeText"))]
    think_time: Option<ThinkTime>,
    /// Headers sent with every request; values are templates (`{{feed}}`).
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Data feeds by name, used in templates as `{{name}}` (`{{name.field}}` for rows).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "BTreeMap<String, RawFeed>"))]
    feeds: BTreeMap<String, Spanned<RawFeed>>,
    /// Criteria on the whole run, on top of the launch plan's defaults; `--threshold` wins.
    #[serde(default)]
    thresholds: Vec<Threshold>,
    /// The kinds of users, each with its share of the load.
    #[cfg_attr(feature = "schema", schemars(with = "Vec<RawScenario>", length(min = 1)))]
    scenarios: Vec<Spanned<RawScenario>>,
}

/// A source of template values: exactly one of `range`, `choice`, `csv` or `json`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema), schemars(rename = "Feed"))]
struct RawFeed {
    /// A random integer from the first bound to the second, both included.
    #[serde(default)]
    range: Option<(i64, i64)>,
    /// A random element of the list.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    choice: Option<Vec<serde_json::Value>>,
    /// A CSV file with a header line, relative to the scenario file; one row per use.
    #[serde(default)]
    csv: Option<String>,
    /// A JSON file holding an array of rows, relative to the scenario file.
    #[serde(default)]
    json: Option<String>,
    /// How rows of a `csv` or `json` feed are handed out; sequential by default.
    #[serde(default)]
    order: Option<FeedOrder>,
}

/// How rows of a file feed are handed out.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
enum FeedOrder {
    /// In file order, wrapping around at the end.
    Sequential,
    /// A random row each time.
    Random,
}

/// A kind of user: a sequence of transactions it repeats.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema), schemars(rename = "Scenario"))]
struct RawScenario {
    /// Name of the scenario.
    name: String,
    /// Relative share of the users; 1 when left out.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    weight: Option<usize>,
    /// Pause between two transactions of this scenario's users; the file's when left out.
    #[serde(default, deserialize_with = "think_time")]
    #[cfg_attr(feature = "schema", schemars(with = "ThinkTimeText"))]
    think_time: Option<ThinkTime>,
    /// The transactions, in order; at least one that is not `on_start`.
    #[cfg_attr(feature = "schema", schemars(with = "Vec<RawTransaction>", length(min = 1)))]
    transactions: Vec<Spanned<RawTransaction>>,
}

/// One measured step: exactly one of `request`, `graphql`, `siwe` or `custom`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema), schemars(rename = "Transaction"))]
struct RawTransaction {
    /// Name, unique in the file; statistics and `tx:<name>:` checks use it.
    name: String,
    /// An HTTP request.
    #[serde(default)]
    request: Option<RawRequest>,
    /// A GraphQL operation; an `errors` array in the answer counts as a failure.
    #[serde(default)]
    graphql: Option<RawGraphql>,
    /// Sign-In with Ethereum (EIP-4361) with a fresh key per user.
    #[serde(default)]
    siwe: Option<RawSiwe>,
    /// A transaction written in Rust, registered under this name.
    #[serde(default)]
    custom: Option<String>,
    /// Statuses that count as success; any 2xx when left out.
    #[serde(default)]
    expect_status: Option<Vec<u16>>,
    /// Extra pause after this transaction, on top of the scenario's.
    #[serde(default, deserialize_with = "think_time")]
    #[cfg_attr(feature = "schema", schemars(with = "ThinkTimeText"))]
    think_time: Option<ThinkTime>,
    /// Criteria on this transaction alone (checks `tx:<name>:<metric>`).
    #[serde(default)]
    thresholds: Vec<Threshold>,
    /// Values taken from the JSON answer for later templates: name to JSON pointer (`/token`).
    #[serde(default)]
    extract: BTreeMap<String, String>,
    /// Run once per user before its loop (sign-in).
    #[serde(default)]
    on_start: bool,
    /// How many times it appears in one pass of the scenario; 1 when left out.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    weight: Option<usize>,
}

/// An HTTP request; text values are templates (`{{feed}}`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema), schemars(rename = "HttpRequest"))]
struct RawRequest {
    /// HTTP method; GET when left out.
    #[serde(default)]
    method: Option<String>,
    /// Path and query starting with `/`, joined to the target (or a full URL).
    path: String,
    /// Extra headers.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// A JSON body (sent as `application/json`); a lone `{{x}}` keeps the value's type.
    #[serde(default)]
    json: Option<serde_json::Value>,
    /// A text body, sent as is; give `json` or `body`, not both.
    #[serde(default)]
    body: Option<String>,
}

/// A GraphQL operation sent as a POST with a JSON body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema), schemars(rename = "GraphqlOperation"))]
struct RawGraphql {
    /// Endpoint path; `/graphql` when left out.
    #[serde(default)]
    path: Option<String>,
    /// The query document.
    query: String,
    /// Variables; a lone `{{x}}` keeps the value's type.
    #[serde(default)]
    variables: Option<serde_json::Value>,
    /// The operation to run, for a document with several.
    #[serde(default)]
    operation_name: Option<String>,
    /// Extra headers.
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// Sign-In with Ethereum against the target's nonce and verify endpoints.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema), schemars(rename = "Siwe"))]
struct RawSiwe {
    /// Where nonces are handed out; `/auth/nonce` when left out.
    #[serde(default)]
    nonce_path: Option<String>,
    /// Where signed messages are verified; `/auth/verify` when left out.
    #[serde(default)]
    verify_path: Option<String>,
}

/// Schema of a think time as written in the file (parsed by [`ThinkTime::parse`]).
#[cfg(feature = "schema")]
struct ThinkTimeText;

#[cfg(feature = "schema")]
impl schemars::JsonSchema for ThinkTimeText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ThinkTime".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A pause: a duration (`1s`, `0`) or a random range `min..max` \
                (`500ms..1500ms`); units ms, s, m, h, d.",
            "examples": ["500ms..1500ms", "1s", "0"]
        })
    }
}

#[cfg(feature = "schema")]
impl ScenarioPlan {
    /// The JSON Schema of the scenario file as schemars derives it; the
    /// published form is [`crate::scenario_schema`].
    pub(crate) fn file_schema() -> schemars::Schema {
        schemars::schema_for!(RawFile)
    }
}

pub(super) fn compile(
    raw: RawFile,
    source: &str,
    base: &Path,
    fallback_name: Option<String>,
) -> Result<ScenarioPlan, ScenarioError> {
    let fail = |line: u64, col: u64, key: &str, message: String| {
        ScenarioError::at(source, line, col, Some(key), &message)
    };
    let mut feeds = BTreeMap::new();
    for (name, spanned) in &raw.feeds {
        let (line, col) = (spanned.referenced.line(), spanned.referenced.column());
        let feed = compile_feed(&spanned.value, base)
            .map_err(|m| fail(line, col, &format!("feeds.{name}"), m))?;
        if BUILT_INS.contains(&name.as_str()) {
            return Err(fail(
                line,
                col,
                &format!("feeds.{name}"),
                format!("`{name}` is a built-in value; name the feed otherwise"),
            ));
        }
        feeds.insert(name.clone(), feed);
    }
    let headers = templates(&raw.headers).map_err(|m| fail(1, 1, "headers", m))?;
    if raw.scenarios.is_empty() {
        return Err(fail(
            1,
            1,
            "scenarios",
            "no scenario: list at least one under `scenarios:`".to_owned(),
        ));
    }

    // Values extracted by any transaction may be used anywhere (a user signs
    // in on start, then reuses the token).
    let extracted: Vec<String> = raw
        .scenarios
        .iter()
        .flat_map(|s| &s.value.transactions)
        .flat_map(|t| t.value.extract.keys().cloned())
        .collect();
    let known = |name: &str| {
        feeds.contains_key(name) || extracted.iter().any(|e| e == name) || BUILT_INS.contains(&name)
    };
    let mut names = Vec::<String>::new();
    let mut scenarios = Vec::new();
    for s in &raw.scenarios {
        let (sl, sc) = (s.referenced.line(), s.referenced.column());
        let s = &s.value;
        if s.weight == Some(0) {
            return Err(fail(
                sl,
                sc,
                "weight",
                format!("scenario `{}` has weight 0; remove it instead", s.name),
            ));
        }
        if s.transactions.iter().all(|t| t.value.on_start) {
            return Err(fail(
                sl,
                sc,
                "transactions",
                format!("scenario `{}` has no transaction to repeat (only on_start ones)", s.name),
            ));
        }
        let mut transactions = Vec::new();
        for t in &s.transactions {
            let (line, col) = (t.referenced.line(), t.referenced.column());
            let t = &t.value;
            if names.contains(&t.name) {
                return Err(fail(
                    line,
                    col,
                    "name",
                    format!("transaction name `{}` is used twice; names must be unique", t.name),
                ));
            }
            names.push(t.name.clone());
            let (action, key) = compile_action(t).map_err(|(key, m)| fail(line, col, key, m))?;
            for var in action_vars(&action).iter().chain(&headers_vars(&headers)) {
                if !known(var) {
                    let mut choices: Vec<&str> = feeds.keys().map(String::as_str).collect();
                    choices.extend(extracted.iter().map(String::as_str));
                    choices.extend(BUILT_INS);
                    return Err(fail(
                        line,
                        col,
                        key,
                        format!(
                            "transaction `{}` uses `{{{{{var}}}}}`, which is no feed, extracted value or built-in (known: {})",
                            t.name,
                            choices.join(", ")
                        ),
                    ));
                }
            }
            for (name, pointer) in &t.extract {
                if !pointer.is_empty() && !pointer.starts_with('/') {
                    return Err(fail(
                        line,
                        col,
                        &format!("extract.{name}"),
                        format!(
                            "`{pointer}` is not a JSON pointer: write `/token` or `/data/login/token`"
                        ),
                    ));
                }
                if feeds.contains_key(name) {
                    return Err(fail(
                        line,
                        col,
                        &format!("extract.{name}"),
                        format!("`{name}` is also a feed; pick another name"),
                    ));
                }
            }
            if t.weight == Some(0) {
                return Err(fail(
                    line,
                    col,
                    "weight",
                    format!("transaction `{}` has weight 0", t.name),
                ));
            }
            transactions.push(Transaction {
                name: t.name.clone(),
                action,
                expect_status: t.expect_status.clone().unwrap_or_default(),
                think_time: t.think_time,
                thresholds: t.thresholds.clone(),
                extract: t.extract.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                on_start: t.on_start,
                weight: t.weight.unwrap_or(1),
            });
        }
        scenarios.push(Scenario {
            name: s.name.clone(),
            weight: s.weight.unwrap_or(1),
            think_time: s.think_time,
            transactions,
        });
    }
    Ok(ScenarioPlan {
        name: raw.name.or(fallback_name).unwrap_or_else(|| "scenario".to_owned()),
        source: source.to_owned(),
        think_time: raw.think_time,
        headers,
        feeds,
        thresholds: raw.thresholds,
        scenarios,
    })
}

fn compile_feed(raw: &RawFeed, base: &Path) -> Result<Feed, String> {
    let given = [raw.range.is_some(), raw.choice.is_some(), raw.csv.is_some(), raw.json.is_some()];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err("a feed needs exactly one of `range: [lo, hi]`, `choice: [...]`, `csv: FILE`, `json: FILE`".to_owned());
    }
    let rows = |rows: Vec<serde_json::Value>| Feed::Rows {
        rows: Arc::new(rows),
        random: raw.order == Some(FeedOrder::Random),
        next: Arc::new(AtomicUsize::new(0)),
    };
    let file = |name: &str| -> PathBuf { base.join(name) };
    Ok(match (&raw.range, &raw.choice, &raw.csv, &raw.json) {
        (Some((lo, hi)), ..) if lo > hi => {
            return Err(format!(
                "range [{lo}, {hi}] is empty: the first bound must not exceed the second"
            ));
        }
        (Some((lo, hi)), ..) => Feed::Range { lo: *lo, hi: *hi },
        (_, Some(items), ..) if items.is_empty() => {
            return Err("choice needs at least one value".to_owned());
        }
        (_, Some(items), ..) => Feed::Choice(items.clone()),
        (_, _, Some(csv), _) => rows(Feed::load_csv(&file(csv))?),
        (_, _, _, Some(json)) => rows(Feed::load_json(&file(json))?),
        _ => return Err("empty feed".to_owned()),
    })
}

fn templates(map: &BTreeMap<String, String>) -> Result<Vec<(String, Template)>, String> {
    map.iter().map(|(k, v)| Ok((k.clone(), Template::parse(v)?))).collect()
}

fn compile_action(t: &RawTransaction) -> Result<(Action, &'static str), (&'static str, String)> {
    let kinds = [t.request.is_some(), t.graphql.is_some(), t.siwe.is_some(), t.custom.is_some()];
    if kinds.iter().filter(|k| **k).count() != 1 {
        return Err((
            "request",
            format!(
                "transaction `{}` needs exactly one of `request`, `graphql`, `siwe`, `custom`",
                t.name
            ),
        ));
    }
    if let Some(r) = &t.request {
        let method = r.method.as_deref().unwrap_or("GET").to_ascii_uppercase();
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| ("request.method", format!("`{method}` is not an HTTP method")))?;
        let body = match (&r.json, &r.body) {
            (Some(_), Some(_)) => {
                return Err(("request.body", "give `json` or `body`, not both".to_owned()));
            }
            (Some(j), None) => {
                Some(Body::Json(JsonTemplate::parse(j).map_err(|m| ("request.json", m))?))
            }
            (None, Some(b)) => {
                Some(Body::Text(Template::parse(b).map_err(|m| ("request.body", m))?))
            }
            (None, None) => None,
        };
        if !r.path.starts_with('/') && !r.path.starts_with("http") {
            return Err(("request.path", format!("path `{}` must start with `/`", r.path)));
        }
        let path = Template::parse(&r.path).map_err(|m| ("request.path", m))?;
        let headers = templates(&r.headers).map_err(|m| ("request.headers", m))?;
        return Ok((Action::Http(HttpRequest { method, path, headers, body }), "request"));
    }
    if let Some(g) = &t.graphql {
        let variables = match &g.variables {
            Some(v) => Some(JsonTemplate::parse(v).map_err(|m| ("graphql.variables", m))?),
            None => None,
        };
        let headers = templates(&g.headers).map_err(|m| ("graphql.headers", m))?;
        return Ok((
            Action::Graphql(GraphqlOperation {
                path: g.path.clone().unwrap_or_else(|| "/graphql".to_owned()),
                query: g.query.clone(),
                variables,
                operation_name: g.operation_name.clone(),
                headers,
            }),
            "graphql",
        ));
    }
    if let Some(s) = &t.siwe {
        return Ok((
            Action::Siwe {
                nonce_path: s.nonce_path.clone().unwrap_or_else(|| "/auth/nonce".to_owned()),
                verify_path: s.verify_path.clone().unwrap_or_else(|| "/auth/verify".to_owned()),
            },
            "siwe",
        ));
    }
    Ok((Action::Custom(t.custom.clone().unwrap_or_default()), "custom"))
}

fn headers_vars(headers: &[(String, Template)]) -> Vec<String> {
    headers.iter().flat_map(|(_, t)| t.vars().map(|v| v.name.clone())).collect()
}

fn action_vars(action: &Action) -> Vec<String> {
    match action {
        Action::Http(r) => {
            let mut vars: Vec<String> = r.path.vars().map(|v| v.name.clone()).collect();
            vars.extend(headers_vars(&r.headers));
            match &r.body {
                Some(Body::Json(j)) => vars.extend(j.vars().into_iter().map(|v| v.name.clone())),
                Some(Body::Text(t)) => vars.extend(t.vars().map(|v| v.name.clone())),
                None => {}
            }
            vars
        }
        Action::Graphql(g) => {
            let mut vars = headers_vars(&g.headers);
            if let Some(v) = &g.variables {
                vars.extend(v.vars().into_iter().map(|v| v.name.clone()));
            }
            vars
        }
        Action::Siwe { .. } | Action::Custom(_) => Vec::new(),
    }
}
