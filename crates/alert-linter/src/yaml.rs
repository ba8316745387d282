//! YAML documents as trees of nodes that remember where they came from.
//!
//! serde-saphyr does the parsing (YAML 1.2, duplicate keys rejected, alias
//! budgets against "billion laughs"); [`Node`] keeps every key and value
//! wrapped in [`Spanned`] so that diagnostics can point at `file:line:col`.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// A 1-based line and column (in characters) inside a file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Pos {
    /// 1-based line.
    pub line: u32,
    /// 1-based column, counted in characters.
    pub col: u32,
}

impl Pos {
    /// The position a spanned value was referenced at (line 1 col 1 when unknown).
    pub fn of<T>(spanned: &Spanned<T>) -> Pos {
        Pos { line: clamp(spanned.referenced.line()), col: clamp(spanned.referenced.column()) }
    }
}

/// A 1-based position from serde-saphyr's u64, at least 1.
fn clamp(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX).max(1)
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// One YAML node: scalars keep their resolved type, mappings keep key order.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// `~`, `null` or an empty value.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer scalar.
    Int(i128),
    /// A floating-point scalar.
    Float(f64),
    /// A string scalar (plain or quoted).
    Str(String),
    /// A sequence.
    Seq(Vec<Spanned<Node>>),
    /// A mapping, in document order.
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl Node {
    /// The YAML kind, for "expected a mapping, found a sequence" messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::Int(_) | Node::Float(_) => "a number",
            Node::Str(_) => "a string",
            Node::Seq(_) => "a sequence",
            Node::Map(_) => "a mapping",
        }
    }

    /// The scalar as Go's yaml.v3 decodes it into a `string` field: any
    /// scalar gives its text, null gives "", collections give `None`.
    pub fn as_scalar_string(&self) -> Option<String> {
        match self {
            Node::Null => Some(String::new()),
            Node::Bool(b) => Some(b.to_string()),
            Node::Int(i) => Some(i.to_string()),
            Node::Float(f) => Some(f.to_string()),
            Node::Str(s) => Some(s.clone()),
            Node::Seq(_) | Node::Map(_) => None,
        }
    }

    /// The value under `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Spanned<Node>> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k.value == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Node, E> {
        Ok(i128::try_from(v).map_or(Node::Float(v as f64), Node::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Node, E> {
        Ok(Node::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<KeyText>>()? {
            let value = map.next_value()?;
            let key = Spanned::new(key.value.0, key.referenced, key.defined);
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

/// A mapping key as text, whatever scalar it was (`1: x` has key "1").
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let node = Node::deserialize(deserializer)?;
        Ok(KeyText(node.as_scalar_string().unwrap_or_else(|| format!("<{}>", node.kind()))))
    }
}

/// A YAML syntax error with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Where the parser stopped.
    pub pos: Pos,
    /// What it found wrong.
    pub message: String,
}

/// Parses every document of a (multi-document) YAML stream.
pub fn parse_documents(text: &str) -> Result<Vec<Spanned<Node>>, SyntaxError> {
    serde_saphyr::from_multiple::<Spanned<Node>>(text).map_err(|err| {
        let pos = err
            .location()
            .map(|l| Pos { line: clamp(l.line()), col: clamp(l.column()) })
            .unwrap_or(Pos { line: 1, col: 1 });
        SyntaxError { pos, message: clean_message(&err.without_snippet().to_string()) }
    })
}

/// "unclosed bracket '[' at line 1, column 4" -> "unclosed bracket '['".
fn clean_message(raw: &str) -> String {
    let first = raw.lines().next().unwrap_or(raw).trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let first = match first.rfind(" at line ") {
        Some(i) => &first[..i],
        None => first,
    };
    if let Some(rest) = first.strip_prefix("line ")
        && let Some((_, message)) = rest.split_once(": ")
    {
        return message.to_owned();
    }
    first.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_keep_positions() {
        let docs = parse_documents("groups:\n  - name: a\n").unwrap_or_default();
        let groups = docs[0].value.get("groups").map(Pos::of);
        assert_eq!(groups, Some(Pos { line: 2, col: 3 }));
    }

    #[test]
    fn syntax_errors_have_a_position_and_no_prefix() {
        let err = parse_documents("a: [\n").err();
        assert_eq!(err.map(|e| (e.pos.line, e.message.contains("line "))), Some((1, false)));
    }
}
