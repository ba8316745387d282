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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "think_time")]
    think_time: Option<ThinkTime>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    feeds: BTreeMap<String, Spanned<RawFeed>>,
    #[serde(default)]
    thresholds: Vec<Threshold>,
    scenarios: Vec<Spanned<RawScenario>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeed {
    #[serde(default)]
    range: Option<(i64, i64)>,
    #[serde(default)]
    choice: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    csv: Option<String>,
    #[serde(default)]
    json: Option<String>,
    #[serde(default)]
    order: Option<FeedOrder>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum FeedOrder {
    Sequential,
    Random,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    #[serde(default)]
    weight: Option<usize>,
    #[serde(default, deserialize_with = "think_time")]
    think_time: Option<ThinkTime>,
    transactions: Vec<Spanned<RawTransaction>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTransaction {
    name: String,
    #[serde(default)]
    request: Option<RawRequest>,
    #[serde(default)]
    graphql: Option<RawGraphql>,
    #[serde(default)]
    siwe: Option<RawSiwe>,
    #[serde(default)]
    custom: Option<String>,
    #[serde(default)]
    expect_status: Option<Vec<u16>>,
    #[serde(default, deserialize_with = "think_time")]
    think_time: Option<ThinkTime>,
    #[serde(default)]
    thresholds: Vec<Threshold>,
    #[serde(default)]
    extract: BTreeMap<String, String>,
    #[serde(default)]
    on_start: bool,
    #[serde(default)]
    weight: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    #[serde(default)]
    method: Option<String>,
    path: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    json: Option<serde_json::Value>,
    #[serde(default)]
    body: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGraphql {
    #[serde(default)]
    path: Option<String>,
    query: String,
    #[serde(default)]
    variables: Option<serde_json::Value>,
    #[serde(default)]
    operation_name: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSiwe {
    #[serde(default)]
    nonce_path: Option<String>,
    #[serde(default)]
    verify_path: Option<String>,
}

/// The key at `line`:`col` and its parents, e.g.
/// `scenarios[].transactions[].weight`, from the file's indentation. For a
/// missing or unknown field the message already names it.
pub(super) fn key_path(text: &str, line: u64, col: u64, message: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let index = usize::try_from(line).ok()?.checked_sub(1)?;
    // (column of the key, the key) of a `key: value` or `- key: value` line.
    let key_of = |l: &str| -> Option<(usize, String)> {
        let trimmed = l.trim_start();
        let mut column = l.len() - trimmed.len();
        let rest = match trimmed.strip_prefix("- ") {
            Some(rest) => {
                column += 2;
                rest
            }
            None => trimmed,
        };
        let (key, _) = rest.split_once(':')?;
        let key = key.trim().trim_matches('"');
        let ok = !key.is_empty() && key.chars().all(|c| c.is_alphanumeric() || "_-. ".contains(c));
        ok.then(|| (column, key.to_owned()))
    };
    let (mut indent, leaf) = match lines.get(index).and_then(|l| key_of(l)) {
        Some((column, key)) if !message.contains("missing field") => (column, Some(key)),
        // The error points at a mapping: its keys sit at the error's column.
        _ => (usize::try_from(col).unwrap_or(1).saturating_sub(1), None),
    };
    let mut path = Vec::new();
    for l in lines.get(..index)?.iter().rev() {
        if indent == 0 {
            break;
        }
        if let Some((column, key)) = key_of(l)
            && column < indent
        {
            path.push(key);
            indent = column;
        }
    }
    path.reverse();
    path.extend(leaf);
    (!path.is_empty()).then(|| path.join("."))
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
