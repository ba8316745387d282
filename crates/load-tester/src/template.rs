//! Values in requests: `{{name}}` templates filled from data feeds (ranges,
//! random choices, CSV and JSON rows), values a user extracted earlier (a
//! login token) and built-ins (`{{user}}`, the user's number).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

/// A string with `{{name}}` or `{{name.field}}` holes.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Var(VarRef),
}

/// A reference to a value: a feed, an extracted value or a built-in, and an
/// optional field of it (`{{wallet.address}}`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct VarRef {
    /// The feed, extracted value or built-in.
    pub name: String,
    /// A field of an object value.
    pub field: Option<String>,
}

impl Template {
    /// Parses `text`; an unclosed `{{` or an empty or malformed name is an error.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("unclosed `{{{{` in {text:?} (write `{{{{name}}}}`)"))?;
            let inner = after[..close].trim();
            let (name, field) = match inner.split_once('.') {
                Some((n, f)) => (n, Some(f.to_owned())),
                None => (inner, None),
            };
            let valid = |s: &str| {
                !s.is_empty()
                    && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            };
            if !valid(name) || field.as_deref().is_some_and(|f| !valid(f)) {
                return Err(format!(
                    "`{{{{{inner}}}}}` in {text:?} is not a value name (letters, digits, _ and -, \
                     optionally `.field`)"
                ));
            }
            parts.push(Part::Var(VarRef { name: name.to_owned(), field }));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// The values the template refers to.
    pub fn vars(&self) -> impl Iterator<Item = &VarRef> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v),
            Part::Text(_) => None,
        })
    }

    /// The template when it is exactly one `{{name}}` and nothing else.
    fn single_var(&self) -> Option<&VarRef> {
        match self.parts.as_slice() {
            [Part::Var(v)] => Some(v),
            _ => None,
        }
    }

    /// Fills the holes.
    pub fn render(&self, values: &mut Bindings<'_>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => out.push_str(&value_text(&values.resolve(v))),
            }
        }
        out
    }
}

/// A JSON document whose strings are templates. A string that is exactly
/// `"{{name}}"` takes the value's own type, so `{"id": "{{nft_id}}"}` sends a
/// number when the feed holds numbers.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonTemplate {
    /// Null, booleans and numbers.
    Literal(Value),
    /// A string template.
    Text(Template),
    /// An array.
    Array(Vec<JsonTemplate>),
    /// An object.
    Object(Vec<(String, JsonTemplate)>),
}

impl JsonTemplate {
    /// Parses every string of `value` as a template.
    pub fn parse(value: &Value) -> Result<JsonTemplate, String> {
        Ok(match value {
            Value::String(s) => JsonTemplate::Text(Template::parse(s)?),
            Value::Array(items) => JsonTemplate::Array(
                items.iter().map(JsonTemplate::parse).collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => JsonTemplate::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), JsonTemplate::parse(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => JsonTemplate::Literal(other.clone()),
        })
    }

    /// Every value referred to.
    pub fn vars(&self) -> Vec<&VarRef> {
        match self {
            JsonTemplate::Literal(_) => Vec::new(),
            JsonTemplate::Text(t) => t.vars().collect(),
            JsonTemplate::Array(items) => items.iter().flat_map(JsonTemplate::vars).collect(),
            JsonTemplate::Object(fields) => fields.iter().flat_map(|(_, v)| v.vars()).collect(),
        }
    }

    /// The JSON document with the holes filled.
    pub fn render(&self, values: &mut Bindings<'_>) -> Value {
        match self {
            JsonTemplate::Literal(v) => v.clone(),
            JsonTemplate::Text(t) => match t.single_var() {
                Some(var) => values.resolve(var),
                None => Value::String(t.render(values)),
            },
            JsonTemplate::Array(items) => {
                Value::Array(items.iter().map(|i| i.render(values)).collect())
            }
            JsonTemplate::Object(fields) => {
                Value::Object(fields.iter().map(|(k, v)| (k.clone(), v.render(values))).collect())
            }
        }
    }
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Where a feed's values come from.
#[derive(Debug, Clone)]
pub enum Feed {
    /// A uniformly random integer in `lo..=hi`.
    Range {
        /// Smallest value.
        lo: i64,
        /// Largest value.
        hi: i64,
    },
    /// A random element.
    Choice(Vec<Value>),
    /// Rows of a CSV (objects keyed by the header) or JSON array file, taken
    /// in order by all users together (wrapping around), or at random.
    Rows {
        /// The rows.
        rows: Arc<Vec<Value>>,
        /// Whether to draw at random instead of in order.
        random: bool,
        /// The next row in order, shared by every user.
        next: Arc<AtomicUsize>,
    },
}

impl Feed {
    /// One value.
    pub fn draw(&self, rng: &mut UserRng) -> Value {
        match self {
            Feed::Range { lo, hi } => {
                let span = hi.abs_diff(*lo).saturating_add(1);
                Value::from(lo.wrapping_add(rng.below(span) as i64))
            }
            Feed::Choice(items) => {
                items.get(rng.below(items.len() as u64) as usize).cloned().unwrap_or(Value::Null)
            }
            Feed::Rows { rows, random, next } => {
                let i = if *random {
                    rng.below(rows.len() as u64) as usize
                } else {
                    next.fetch_add(1, Ordering::Relaxed) % rows.len().max(1)
                };
                rows.get(i).cloned().unwrap_or(Value::Null)
            }
        }
    }

    /// Reads a CSV file: the first line names the columns; each row becomes an
    /// object. Numbers stay numbers. Quoted fields may hold commas.
    pub fn load_csv(path: &Path) -> Result<Vec<Value>, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read CSV feed {}: {e}", path.display()))?;
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header = split_csv(lines.next().unwrap_or_default());
        if header.iter().all(String::is_empty) {
            return Err(format!(
                "CSV feed {} is empty: its first line must name the columns",
                path.display()
            ));
        }
        let mut rows = Vec::new();
        for (n, line) in lines.enumerate() {
            let cells = split_csv(line);
            if cells.len() != header.len() {
                return Err(format!(
                    "CSV feed {} line {}: {} fields, the header has {}",
                    path.display(),
                    n + 2,
                    cells.len(),
                    header.len()
                ));
            }
            let row = header
                .iter()
                .zip(cells)
                .map(|(h, c)| {
                    let value = c.parse::<i64>().map(Value::from).unwrap_or(Value::String(c));
                    (h.clone(), value)
                })
                .collect();
            rows.push(Value::Object(row));
        }
        if rows.is_empty() {
            return Err(format!("CSV feed {} has a header but no rows", path.display()));
        }
        Ok(rows)
    }

    /// Reads a JSON file holding a non-empty array.
    pub fn load_json(path: &Path) -> Result<Vec<Value>, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read JSON feed {}: {e}", path.display()))?;
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Array(rows)) if !rows.is_empty() => Ok(rows),
            Ok(_) => Err(format!("JSON feed {} must hold a non-empty array", path.display())),
            Err(e) => Err(format!("JSON feed {} is not valid JSON: {e}", path.display())),
        }
    }
}

fn split_csv(line: &str) -> Vec<String> {
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cell.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => cells.push(std::mem::take(&mut cell).trim().to_owned()),
            (c, _) => cell.push(c),
        }
    }
    cells.push(cell.trim().to_owned());
    cells
}

/// A small, fast per-user random generator (SplitMix64): load generation
/// needs spread, not cryptographic strength.
#[derive(Debug, Clone, Default)]
pub struct UserRng(u64);

impl UserRng {
    /// A generator seeded from `seed`.
    pub fn new(seed: u64) -> UserRng {
        UserRng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64 }
    }
}

/// What a user carries between transactions: its number, its random
/// generator and the values it extracted (tokens).
#[derive(Debug, Clone, Default)]
pub struct UserState {
    /// The user's number, from 0.
    pub index: usize,
    /// Its random generator.
    pub rng: UserRng,
    /// Values extracted from earlier answers, by name.
    pub vars: HashMap<String, Value>,
}

/// The values one transaction sees: each feed is drawn at most once per
/// transaction, so `{{nft_id}}` twice in one request is the same number.
#[derive(Debug)]
pub struct Bindings<'a> {
    feeds: &'a BTreeMap<String, Feed>,
    user: &'a mut UserState,
    drawn: Vec<(String, Value)>,
}

impl<'a> Bindings<'a> {
    /// Bindings over `feeds` for `user`.
    pub fn new(feeds: &'a BTreeMap<String, Feed>, user: &'a mut UserState) -> Self {
        Bindings { feeds, user, drawn: Vec::new() }
    }

    /// The value of `var`: an extracted value, a feed (drawn once), or a
    /// built-in; null when unknown (validation refuses unknown names).
    pub fn resolve(&mut self, var: &VarRef) -> Value {
        let whole = if let Some(v) = self.user.vars.get(&var.name) {
            v.clone()
        } else if let Some((_, v)) = self.drawn.iter().find(|(n, _)| *n == var.name) {
            v.clone()
        } else if let Some(feed) = self.feeds.get(&var.name) {
            let v = feed.draw(&mut self.user.rng);
            self.drawn.push((var.name.clone(), v.clone()));
            v
        } else if var.name == "user" {
            Value::from(self.user.index)
        } else {
            Value::Null
        };
        match &var.field {
            Some(field) => whole.get(field).cloned().unwrap_or(Value::Null),
            None => whole,
        }
    }
}

/// Names every template may use besides feeds and extracted values.
pub const BUILT_INS: &[&str] = &["user"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_from_feeds_once_per_transaction() {
        let mut feeds = BTreeMap::new();
        feeds.insert("id".to_owned(), Feed::Range { lo: 5, hi: 5 });
        feeds.insert("w".to_owned(), Feed::Choice(vec![serde_json::json!({"address": "0xabc"})]));
        let mut user = UserState { index: 7, ..UserState::default() };
        let mut b = Bindings::new(&feeds, &mut user);
        let t = Template::parse("/a/{{id}}/{{ id }}?u={{user}}&w={{w.address}}")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.render(&mut b), "/a/5/5?u=7&w=0xabc");
        let j = JsonTemplate::parse(&serde_json::json!({"id": "{{id}}", "s": "n{{id}}"}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(j.render(&mut b), serde_json::json!({"id": 5, "s": "n5"}));
    }

    #[test]
    fn malformed_templates_are_refused() {
        for bad in ["{{", "a{{}}", "{{a b}}", "{{a.}}"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges_stay_in_bounds_and_csv_quotes_work() {
        let mut rng = UserRng::new(1);
        let feed = Feed::Range { lo: -2, hi: 2 };
        for _ in 0..1000 {
            let v = feed.draw(&mut rng).as_i64().unwrap_or(99);
            assert!((-2..=2).contains(&v));
        }
        assert_eq!(split_csv(r#"a,"b,c","d""e""#), vec!["a", "b,c", "d\"e"]);
    }
}
