//! A checker for the Go `text/template` subset Prometheus expands in alert
//! labels and annotations: actions parse, control blocks balance, every
//! function exists in Prometheus 2.42, every variable is defined. It also
//! returns the labels a template reads (`$labels.x`, `.Labels.x`,
//! `index $labels "x"`), for the label-flow checks.

/// Functions Prometheus 2.42 defines for templates, plus Go's built-ins.
const FUNCTIONS: &[&str] = &[
    // text/template built-ins
    "and",
    "call",
    "html",
    "index",
    "slice",
    "js",
    "len",
    "not",
    "or",
    "print",
    "printf",
    "println",
    "urlquery",
    "eq",
    "ge",
    "gt",
    "le",
    "lt",
    "ne",
    // Prometheus template functions
    "query",
    "first",
    "label",
    "value",
    "strvalue",
    "args",
    "reReplaceAll",
    "safeHtml",
    "match",
    "title",
    "toUpper",
    "toLower",
    "graphLink",
    "tableLink",
    "sortByLabel",
    "humanize",
    "humanize1024",
    "humanizeDuration",
    "humanizePercentage",
    "humanizeTimestamp",
    "toTime",
    "pathPrefix",
    "externalURL",
    "parseDuration",
    "stripPort",
];

const PREDEFINED: &[&str] = &["$", "$labels", "$externalLabels", "$externalURL", "$value"];

/// A template error: byte offset in the template and a message in Go's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// Byte offset of the action at fault.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

/// Checks `text`; on success returns the label names it reads.
pub fn check(text: &str) -> Result<Vec<String>, TemplateError> {
    let mut labels = Vec::new();
    let mut scopes: Vec<(String, Vec<String>)> = Vec::new(); // (keyword, declared vars)
    let mut declared: Vec<String> = PREDEFINED.iter().map(|s| (*s).to_owned()).collect();
    let mut rest = text;
    let mut offset = 0;
    while let Some(start) = rest.find("{{") {
        let action_offset = offset + start;
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(err(action_offset, "unclosed action"));
        };
        let mut body = &after[..end];
        body = body.strip_prefix('-').unwrap_or(body);
        body = body.strip_suffix('-').unwrap_or(body);
        let body = body.trim();
        if body.starts_with("/*") {
            if !body.ends_with("*/") {
                return Err(err(action_offset, "unclosed comment"));
            }
        } else {
            let tokens = tokenize(body).map_err(|m| err(action_offset, &m))?;
            action(&tokens, &mut scopes, &mut declared, &mut labels)
                .map_err(|m| err(action_offset, &m))?;
        }
        let consumed = start + 2 + end + 2;
        offset += consumed;
        rest = &rest[consumed..];
    }
    if let Some((keyword, _)) = scopes.last() {
        return Err(err(
            text.len(),
            &format!("unexpected EOF: {{{{{keyword}}}}} has no {{{{end}}}}"),
        ));
    }
    Ok(labels)
}

fn err(offset: usize, message: &str) -> TemplateError {
    TemplateError { offset, message: message.to_owned() }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Var(String, Vec<String>),
    Field(Vec<String>),
    Str(String),
    Number,
    Pipe,
    Open,
    Close,
    Declare,
    Assign,
    Comma,
}

fn tokenize(body: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = body.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let fields = |i: &mut usize| {
        let mut names = Vec::new();
        while *i < chars.len() && chars[*i] == '.' {
            *i += 1;
            let start = *i;
            while *i < chars.len() && (chars[*i].is_alphanumeric() || chars[*i] == '_') {
                *i += 1;
            }
            names.push(chars[start..*i].iter().collect::<String>());
        }
        names
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '|' => {
                tokens.push(Token::Pipe);
                i += 1;
            }
            '(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            ')' => {
                tokens.push(Token::Close);
                i += 1;
            }
            ',' => {
                tokens.push(Token::Comma);
                i += 1;
            }
            ':' if chars.get(i + 1) == Some(&'=') => {
                tokens.push(Token::Declare);
                i += 2;
            }
            '=' => {
                tokens.push(Token::Assign);
                i += 1;
            }
            '"' | '`' | '\'' => {
                let quote = c;
                let mut value = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(format!(
                                "unterminated quoted string starting with {quote}"
                            ));
                        }
                        Some('\\') if quote != '`' => {
                            value.extend(chars.get(i + 1));
                            i += 2;
                        }
                        Some(&ch) if ch == quote => {
                            i += 1;
                            break;
                        }
                        Some(&ch) => {
                            value.push(ch);
                            i += 1;
                        }
                    }
                }
                tokens.push(Token::Str(value));
            }
            '$' => {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let name: String = chars[start..i].iter().collect();
                tokens.push(Token::Var(name, fields(&mut i)));
            }
            '.' => {
                let names = fields(&mut i);
                tokens.push(Token::Field(names));
            }
            c if c.is_ascii_digit() || c == '-' || c == '+' => {
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || ".+-_".contains(chars[i])) {
                    i += 1;
                }
                tokens.push(Token::Number);
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                tokens.push(Token::Ident(chars[start..i].iter().collect()));
                // method-style field access on a call result: (x).Foo is rare; skip fields
                let _ = fields(&mut i);
            }
            other => return Err(format!("unexpected {other:?} in command")),
        }
    }
    Ok(tokens)
}

fn action(
    tokens: &[Token],
    scopes: &mut Vec<(String, Vec<String>)>,
    declared: &mut Vec<String>,
    labels: &mut Vec<String>,
) -> Result<(), String> {
    let Some(first) = tokens.first() else {
        return Err("missing value for command".into());
    };
    let mut pipeline = tokens;
    if let Token::Ident(word) = first {
        match word.as_str() {
            "end" => {
                return match scopes.pop() {
                    Some((_, vars)) => {
                        declared.truncate(declared.len() - vars.len());
                        Ok(())
                    }
                    None => Err("unexpected {{end}}".into()),
                };
            }
            "else" => {
                match scopes.last() {
                    Some((k, _)) if k == "if" || k == "range" || k == "with" => {}
                    _ => return Err("unexpected {{else}}".into()),
                }
                pipeline = &tokens[1..];
                if let Some(Token::Ident(w)) = pipeline.first()
                    && (w == "if" || w == "with")
                {
                    pipeline = &pipeline[1..];
                }
                if pipeline.is_empty() {
                    return Ok(());
                }
            }
            "if" | "range" | "with" => {
                scopes.push((word.clone(), Vec::new()));
                pipeline = &tokens[1..];
                if pipeline.is_empty() {
                    return Err(format!("missing value for {word}"));
                }
            }
            "define" | "block" => {
                scopes.push((word.clone(), Vec::new()));
                return match tokens.get(1) {
                    Some(Token::Str(_)) => Ok(()),
                    _ => Err(format!("{word} clause needs a quoted name")),
                };
            }
            "template" => {
                return match tokens.get(1) {
                    Some(Token::Str(_)) => Ok(()),
                    _ => Err("template clause needs a quoted name".into()),
                };
            }
            "break" | "continue" => return Ok(()),
            _ => {}
        }
    }
    // Declarations: `$x := pipeline` or `$i, $x := pipeline` (range).
    let mut body = pipeline;
    if let Some(pos) = body.iter().position(|t| matches!(t, Token::Declare | Token::Assign)) {
        let is_declare = body[pos] == Token::Declare;
        for t in &body[..pos] {
            match t {
                Token::Var(name, fields) if fields.is_empty() => {
                    if is_declare {
                        declared.push(name.clone());
                        if let Some((_, vars)) = scopes.last_mut() {
                            vars.push(name.clone());
                        }
                    } else if !declared.contains(name) {
                        return Err(format!("undefined variable \"{name}\""));
                    }
                }
                Token::Comma => {}
                _ => return Err("bad declaration syntax".into()),
            }
        }
        body = &body[pos + 1..];
        if body.is_empty() {
            return Err("missing value for command".into());
        }
    }
    let mut depth = 0i32;
    let mut expect_command = true;
    for (i, t) in body.iter().enumerate() {
        match t {
            Token::Open => depth += 1,
            Token::Close => {
                depth -= 1;
                if depth < 0 {
                    return Err("unexpected right paren".into());
                }
            }
            Token::Pipe => {
                if expect_command {
                    return Err("missing value for command".into());
                }
                expect_command = true;
                continue;
            }
            Token::Ident(name) => {
                if !FUNCTIONS.contains(&name.as_str())
                    && !["true", "false", "nil"].contains(&name.as_str())
                {
                    return Err(format!("function \"{name}\" not defined"));
                }
                if name == "index"
                    && let (Some(Token::Var(v, f)), Some(Token::Str(label))) =
                        (body.get(i + 1), body.get(i + 2))
                    && v == "$labels"
                    && f.is_empty()
                {
                    labels.push(label.clone());
                }
            }
            Token::Var(name, fields) => {
                if !declared.contains(name) {
                    return Err(format!("undefined variable \"{name}\""));
                }
                if name == "$labels" && fields.len() == 1 {
                    labels.push(fields[0].clone());
                }
            }
            Token::Field(names) => {
                if names.len() == 2 && names[0] == "Labels" && !names[1].is_empty() {
                    labels.push(names[1].clone());
                }
            }
            Token::Declare | Token::Assign => return Err("unexpected declaration".into()),
            Token::Comma => return Err("unexpected comma".into()),
            Token::Str(_) | Token::Number => {}
        }
        expect_command = false;
    }
    if depth != 0 {
        return Err("unclosed left paren".into());
    }
    if expect_command {
        return Err("missing value for command".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn prometheus_templates_parse_and_report_labels() {
        let labels =
            check("{{ $labels.instance }} at {{ $value | humanizePercentage }} {{ .Labels.job }}");
        assert_eq!(labels, Ok(vec!["instance".to_owned(), "job".to_owned()]));
        assert!(check("{{ if gt $value 1.0 }}high{{ else }}low{{ end }}").is_ok());
        assert!(check("{{ range $i, $x := query \"up\" }}{{ $x.Value }}{{ end }}").is_ok());
    }

    #[test]
    fn broken_templates_are_rejected() {
        assert!(check("{{ $labels.instance ").is_err());
        assert!(check("{{ humanise $value }}").is_err());
        assert!(check("{{ $foo }}").is_err());
        assert!(check("{{ if true }}x").is_err());
        assert!(check("{{ end }}").is_err());
        assert!(check("{{ }}").is_err());
        assert!(check("{{ $x := 1 }}{{ $x }}").is_ok());
    }
}
