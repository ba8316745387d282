//! Rule files as Prometheus 2.42 reads them (`rulefmt`), built from YAML
//! nodes with every structural problem reported as a diagnostic.
//!
//! Accepted shapes: a rules file (`groups:`), a Kubernetes `PrometheusRule`
//! manifest (`spec.groups`), and multi-document streams of either. Other
//! Kubernetes kinds in a stream are skipped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_saphyr::Spanned;

use crate::diag::{Diagnostic, Edit, Fix, Severity};
use crate::yaml::{Node, Pos, parse_documents};

/// A string from the file with the position of its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    /// The value.
    pub value: String,
    /// Where it starts.
    pub pos: Pos,
}

/// A `key: value` pair of `labels:` or `annotations:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// The key, positioned at the key.
    pub key: Text,
    /// The value, positioned at the value.
    pub value: Text,
}

/// One rule (alerting or recording).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rule {
    /// Where the rule's mapping starts.
    pub pos: Pos,
    /// `alert:` name.
    pub alert: Option<Text>,
    /// `record:` name.
    pub record: Option<Text>,
    /// `expr:`.
    pub expr: Option<Text>,
    /// `for:`, with the position of its value.
    pub for_: Option<(Duration, Pos)>,
    /// `keep_firing_for:`.
    pub keep_firing_for: Option<(Duration, Pos)>,
    /// `labels:` key position, when present.
    pub labels_pos: Option<Pos>,
    /// `labels:` entries.
    pub labels: Vec<Pair>,
    /// `annotations:` key position, when present.
    pub annotations_pos: Option<Pos>,
    /// `annotations:` entries.
    pub annotations: Vec<Pair>,
}

impl Rule {
    /// The alert or record name.
    pub fn name(&self) -> Option<&str> {
        self.alert.as_ref().or(self.record.as_ref()).map(|t| t.value.as_str())
    }

    /// The value of a label.
    pub fn label(&self, key: &str) -> Option<&Text> {
        self.labels.iter().find(|p| p.key.value == key).map(|p| &p.value)
    }

    /// The value of an annotation.
    pub fn annotation(&self, key: &str) -> Option<&Text> {
        self.annotations.iter().find(|p| p.key.value == key).map(|p| &p.value)
    }

    /// `for`, zero when absent.
    pub fn for_duration(&self) -> Duration {
        self.for_.map(|(d, _)| d).unwrap_or_default()
    }
}

/// One rule group.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Group {
    /// `name:` (empty when missing).
    pub name: Text,
    /// Where the group's mapping starts.
    pub pos: Pos,
    /// `interval:`, when set.
    pub interval: Option<Duration>,
    /// The rules, in order.
    pub rules: Vec<Rule>,
}

impl Default for Text {
    fn default() -> Self {
        Text { value: String::new(), pos: Pos { line: 1, col: 1 } }
    }
}

/// A parsed file: its groups (from every document) and its source text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleFile {
    /// Path as given.
    pub path: PathBuf,
    /// The source, for snippets and fixes.
    pub text: String,
    /// Groups of all documents.
    pub groups: Vec<Group>,
    /// `true` when some document is a `PrometheusRule` manifest.
    pub is_manifest: bool,
}

impl RuleFile {
    /// Every rule with its group.
    pub fn rules(&self) -> impl Iterator<Item = (&Group, &Rule)> {
        self.groups.iter().flat_map(|g| g.rules.iter().map(move |r| (g, r)))
    }
}

const GROUP_FIELDS: &[&str] = &["name", "interval", "limit", "rules"];
const RULE_FIELDS: &[&str] =
    &["record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations"];
/// Keys that belong under `labels:` when found on a rule.
const LABEL_LIKE: &[&str] = &["severity", "team", "owner", "service", "priority", "page"];
/// Keys that belong under `annotations:` when found on a rule.
const ANNOTATION_LIKE: &[&str] = &["summary", "description", "runbook_url", "runbook", "message"];

/// Parses `text` (the contents of `path`) into groups, pushing schema
/// diagnostics for everything Prometheus's loader would refuse.
pub fn parse_file(path: &Path, text: &str, out: &mut Vec<Diagnostic>) -> RuleFile {
    let mut file = RuleFile { path: path.to_owned(), text: text.to_owned(), ..RuleFile::default() };
    let docs = match parse_documents(text) {
        Ok(docs) => docs,
        Err(err) => {
            out.push(
                Diagnostic::new("schema/yaml-syntax", Severity::Error, path, err.pos, err.message)
                    .help("fix the YAML; `promtool check rules` rejects this file too"),
            );
            return file;
        }
    };
    let mut p = Parser { path, lines: text.lines().collect(), out };
    for doc in &docs {
        p.document(doc, &mut file);
    }
    file
}

struct Parser<'a> {
    path: &'a Path,
    lines: Vec<&'a str>,
    out: &'a mut Vec<Diagnostic>,
}

impl Parser<'_> {
    fn push(&mut self, check: &'static str, pos: Pos, message: String) -> &mut Diagnostic {
        self.out.push(Diagnostic::new(check, Severity::Error, self.path, pos, message));
        let last = self.out.len() - 1;
        &mut self.out[last]
    }

    fn wrong_type(&mut self, what: &str, expected: &str, node: &Spanned<Node>) {
        let message = format!("{what} must be {expected}, found {}", node.value.kind());
        self.push("schema/invalid-type", Pos::of(node), message);
    }

    fn document(&mut self, doc: &Spanned<Node>, file: &mut RuleFile) {
        let entries = match &doc.value {
            Node::Null => return,
            Node::Map(entries) => entries,
            _ => return self.wrong_type("a rules document", "a mapping with `groups:`", doc),
        };
        let kind = doc.value.get("kind").and_then(|k| k.value.as_scalar_string());
        let api = doc.value.get("apiVersion").and_then(|k| k.value.as_scalar_string());
        if kind.is_some() || api.is_some() {
            if kind.as_deref() != Some("PrometheusRule") {
                return; // another Kubernetes object in the stream
            }
            file.is_manifest = true;
            match doc.value.get("spec") {
                Some(spec) => match &spec.value {
                    Node::Map(_) => {
                        if let Some(groups) = spec.value.get("groups") {
                            self.groups(groups, file);
                        }
                    }
                    _ => self.wrong_type("`spec`", "a mapping", spec),
                },
                None => {
                    let pos = Pos::of(doc);
                    self.push("schema/unknown-field", pos, "PrometheusRule without `spec`".into());
                }
            }
            return;
        }
        for (key, value) in entries {
            if key.value == "groups" {
                self.groups(value, file);
            } else {
                let message =
                    format!("field `{}` not found in a rules file (only `groups`)", key.value);
                self.push("schema/unknown-field", Pos::of(key), message);
            }
        }
    }

    fn groups(&mut self, node: &Spanned<Node>, file: &mut RuleFile) {
        let items = match &node.value {
            Node::Null => return,
            Node::Seq(items) => items,
            _ => return self.wrong_type("`groups`", "a list", node),
        };
        for item in items {
            let Node::Map(entries) = &item.value else {
                self.wrong_type("a group", "a mapping", item);
                continue;
            };
            let mut group = Group { pos: Pos::of(item), ..Group::default() };
            group.name.pos = group.pos;
            for (key, value) in entries {
                match key.value.as_str() {
                    "name" => match value.value.as_scalar_string() {
                        Some(name) => group.name = Text { value: name, pos: Pos::of(value) },
                        None => self.wrong_type("`name`", "a string", value),
                    },
                    "interval" => group.interval = self.duration("interval", value),
                    "limit" => {
                        if !matches!(value.value, Node::Int(_) | Node::Null) {
                            self.wrong_type("`limit`", "an integer", value);
                        }
                    }
                    "rules" => match &value.value {
                        Node::Null => {}
                        Node::Seq(rules) => {
                            for rule in rules {
                                if let Some(rule) = self.rule(rule) {
                                    group.rules.push(rule);
                                }
                            }
                        }
                        _ => self.wrong_type("`rules`", "a list", value),
                    },
                    other => {
                        let message = format!(
                            "field `{other}` not found in a rule group (expected one of {})",
                            GROUP_FIELDS.join(", ")
                        );
                        self.push("schema/unknown-field", Pos::of(key), message);
                    }
                }
            }
            file.groups.push(group);
        }
    }

    fn rule(&mut self, node: &Spanned<Node>) -> Option<Rule> {
        let Node::Map(entries) = &node.value else {
            self.wrong_type("a rule", "a mapping", node);
            return None;
        };
        let mut rule = Rule { pos: Pos::of(node), ..Rule::default() };
        let first_diag = self.out.len();
        let mut misplaced = Vec::new();
        for (key, value) in entries {
            match key.value.as_str() {
                "record" => rule.record = self.string("record", value),
                "alert" => rule.alert = self.string("alert", value),
                "expr" => rule.expr = self.string("expr", value),
                "for" => rule.for_ = self.duration("for", value).map(|d| (d, Pos::of(value))),
                "keep_firing_for" => {
                    rule.keep_firing_for =
                        self.duration("keep_firing_for", value).map(|d| (d, Pos::of(value)))
                }
                "labels" => {
                    rule.labels_pos = Some(Pos::of(key));
                    rule.labels = self.pairs("labels", value);
                }
                "annotations" => {
                    rule.annotations_pos = Some(Pos::of(key));
                    rule.annotations = self.pairs("annotations", value);
                }
                other => {
                    let message = format!(
                        "field `{other}` not found in a rule (expected one of {})",
                        RULE_FIELDS.join(", ")
                    );
                    let pos = Pos::of(key);
                    let help = if LABEL_LIKE.contains(&other) {
                        format!("`{other}` is a label: move it under `labels:`")
                    } else if ANNOTATION_LIKE.contains(&other) {
                        format!("`{other}` is an annotation: move it under `annotations:`")
                    } else {
                        "remove it or fix its spelling".to_owned()
                    };
                    self.push("schema/unknown-field", pos, message).help = Some(help);
                    misplaced.push((self.out.len() - 1, other.to_owned(), pos, value));
                }
            }
        }
        for (index, key, pos, value) in misplaced {
            if let Some(fix) = self.move_fix(&rule, &key, pos, value) {
                self.out[index].fix = Some(fix);
            }
        }
        let name = rule.name().map(str::to_owned);
        for d in &mut self.out[first_diag..] {
            d.rule.clone_from(&name);
        }
        Some(rule)
    }

    /// Moves `key: scalar` from the rule level under `labels:` / `annotations:`.
    fn move_fix(&self, rule: &Rule, key: &str, pos: Pos, value: &Spanned<Node>) -> Option<Fix> {
        let (block, block_pos, first) = if LABEL_LIKE.contains(&key) {
            ("labels", rule.labels_pos, rule.labels.first())
        } else if ANNOTATION_LIKE.contains(&key) {
            ("annotations", rule.annotations_pos, rule.annotations.first())
        } else {
            return None;
        };
        let line = *self.lines.get(pos.line as usize - 1)?;
        // Only a one-line `key: scalar`, in block style.
        if Pos::of(value).line != pos.line || value.value.as_scalar_string().is_none() {
            return None;
        }
        let indent = pos.col as usize - 1;
        if line.chars().take(indent).any(|c| c != ' ' && c != '-') {
            return None;
        }
        let entry = line.chars().skip(indent).collect::<String>();
        let remove = Edit { start: pos.line, end: pos.line, lines: Vec::new() };
        let mut edits = Vec::new();
        match block_pos {
            Some(bp) => {
                let child_indent = match first {
                    Some(pair) if pair.key.pos.line > bp.line => pair.key.pos.col as usize - 1,
                    None => bp.col as usize + 1,
                    Some(_) => return None, // flow style `labels: {a: b}`
                };
                if matches!(self.lines.get(bp.line as usize - 1), Some(l) if l.trim_end().ends_with('}'))
                {
                    return None;
                }
                let insert = Edit {
                    start: bp.line + 1,
                    end: bp.line,
                    lines: vec![format!("{}{entry}", " ".repeat(child_indent))],
                };
                edits.push(insert);
                edits.push(remove);
            }
            None => {
                let head = if line.chars().take(indent).any(|c| c == '-') {
                    return None; // the key opens the list item; leave it to a person
                } else {
                    " ".repeat(indent)
                };
                edits.push(Edit {
                    start: pos.line,
                    end: pos.line,
                    lines: vec![format!("{head}{block}:"), format!("{head}  {entry}")],
                });
            }
        }
        Some(Fix { description: format!("move `{key}` under `{block}:`"), edits })
    }

    fn string(&mut self, what: &str, value: &Spanned<Node>) -> Option<Text> {
        match value.value.as_scalar_string() {
            Some(s) => Some(Text { value: s, pos: Pos::of(value) }),
            None => {
                self.wrong_type(&format!("`{what}`"), "a string", value);
                None
            }
        }
    }

    fn duration(&mut self, what: &str, value: &Spanned<Node>) -> Option<Duration> {
        if value.value == Node::Null {
            return None;
        }
        let text = value.value.as_scalar_string();
        match text.as_deref().map(parse_duration) {
            Some(Ok(d)) => Some(d),
            Some(Err(e)) => {
                let message = format!("`{what}`: {e}");
                self.push("schema/invalid-type", Pos::of(value), message).help =
                    Some("durations look like 30s, 5m, 1h30m, 1d".into());
                None
            }
            None => {
                self.wrong_type(&format!("`{what}`"), "a duration", value);
                None
            }
        }
    }

    fn pairs(&mut self, what: &str, value: &Spanned<Node>) -> Vec<Pair> {
        let entries = match &value.value {
            Node::Null => return Vec::new(),
            Node::Map(entries) => entries,
            _ => {
                self.wrong_type(&format!("`{what}`"), "a mapping of strings", value);
                return Vec::new();
            }
        };
        let mut pairs = Vec::new();
        for (k, v) in entries {
            match v.value.as_scalar_string() {
                Some(s) => pairs.push(Pair {
                    key: Text { value: k.value.clone(), pos: Pos::of(k) },
                    value: Text { value: s, pos: Pos::of(v) },
                }),
                None => self.wrong_type(&format!("`{what}.{}`", k.value), "a string", v),
            }
        }
        pairs
    }
}

/// Parses a Prometheus duration (`model.ParseDuration`): `0` or units
/// y w d h m s ms in that order, each at most once, e.g. `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const UNITS: [(&str, u64); 7] = [
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ];
    let invalid = || format!("not a valid duration string: {text:?}");
    if text.is_empty() {
        return Err("empty duration string".into());
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text;
    let mut total: u64 = 0;
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let index = UNITS[next_unit..]
            .iter()
            .position(|(u, _)| *u == unit)
            .map(|i| i + next_unit)
            .ok_or_else(invalid)?;
        next_unit = index + 1;
        total = number
            .checked_mul(UNITS[index].1)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(|| format!("duration out of range: {text:?}"))?;
    }
    Ok(Duration::from_millis(total))
}

/// `1m30s`-style text for a duration.
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in
        [("d", 86_400_000u128), ("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)]
    {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_prometheus_rules() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("30m1h").is_err());
        assert!(parse_duration("1.5m").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
    }

    #[test]
    fn severity_on_the_rule_gets_a_move_fix() {
        let text = "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up == 0\n    severity: critical\n    labels:\n      team: sre\n";
        let mut out = Vec::new();
        let file = parse_file(Path::new("r.yml"), text, &mut out);
        assert_eq!(file.groups[0].rules.len(), 1);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].check, out[0].pos), ("schema/unknown-field", Pos { line: 6, col: 5 }));
        let fix = out[0].fix.clone().map(|f| f.edits);
        assert_eq!(fix.map(|e| e[0].lines.clone()), Some(vec!["      severity: critical".into()]));
    }
}
