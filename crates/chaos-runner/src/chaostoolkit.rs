//! Chaos Toolkit experiments (JSON), translated into a chaos-runner
//! experiment: the steady-state hypothesis becomes the steady state (checked
//! before, during and after, as Chaos Toolkit checks it before and after),
//! each method action a fault held for its `pauses.after`, and the rollbacks
//! stay rollbacks. `${name}` is filled from the experiment's
//! `configuration` (values, and `{"type": "env"}` entries), then `--var`,
//! then the environment.
//!
//! Supported: `http` providers (url, method, headers, timeout, arguments as
//! the body) and `process` providers (path and arguments, run by `sh -c`),
//! with tolerances that are a status or exit code, a list of them, or a
//! bool. Anything else (python providers, probes in the method, regex or
//! jsonpath tolerances, pauses before) is named in an error: nothing of the
//! experiment runs rather than part of it.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::error::ConfigError;
use crate::experiment;

/// Whether `text` is a Chaos Toolkit experiment (JSON with its keys).
pub fn looks_like(text: &str) -> bool {
    text.trim_start().starts_with('{')
        && serde_json::from_str::<Value>(text).is_ok_and(|v| {
            v.get("steady-state-hypothesis").is_some()
                || (v.get("method").is_some() && v.get("experiments").is_none())
        })
}

/// Translates a Chaos Toolkit experiment.
pub fn translate(
    text: &str,
    source: &str,
    vars: &BTreeMap<String, String>,
) -> Result<experiment::ExperimentFile, ConfigError> {
    let fail = |m: String| ConfigError::new(format!("{source}: Chaos Toolkit experiment: {m}"));
    let raw: Value = serde_json::from_str(text).map_err(|e| fail(format!("not JSON: {e}")))?;
    // Configuration values fill ${name}; env entries read the environment.
    let mut values = vars.clone();
    if let Some(config) = raw.get("configuration").and_then(Value::as_object) {
        for (k, v) in config {
            if values.contains_key(k) {
                continue;
            }
            let value = match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("env") => {
                    let key = o.get("key").and_then(Value::as_str).unwrap_or(k);
                    std::env::var(key).ok().or_else(|| {
                        o.get("default")
                            .map(|d| d.as_str().map_or_else(|| d.to_string(), str::to_owned))
                    })
                }
                _ => {
                    return Err(fail(format!(
                        "configuration `{k}`: only values and {{\"type\": \"env\"}} entries are supported"
                    )));
                }
            };
            if let Some(value) = value {
                values.insert(k.clone(), value);
            }
        }
    }
    let text = experiment::substitute(text, &values, |n| std::env::var(n).ok())
        .map_err(|(line, m)| ConfigError::at(source, line as u64, 1, None, &m))?;
    let raw: Value = serde_json::from_str(&text)
        .map_err(|e| fail(format!("not JSON after substitution: {e}")))?;
    for key in ["secrets", "controls", "extensions"] {
        if raw.get(key).is_some() {
            return Err(fail(format!("`{key}` is not supported")));
        }
    }
    let title = raw.get("title").and_then(Value::as_str).unwrap_or("chaos toolkit experiment");
    let id: String = title
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect::<String>()
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    let id = if id.is_empty() { "experiment".to_owned() } else { id.chars().take(60).collect() };
    let mut steady = Vec::new();
    if let Some(hyp) = raw.get("steady-state-hypothesis") {
        for (i, p) in hyp.get("probes").and_then(Value::as_array).into_iter().flatten().enumerate()
        {
            let at = format!("steady-state-hypothesis.probes[{i}]");
            steady.push(probe(p, &at).map_err(|m| fail(format!("{at}: {m}")))?);
        }
    }
    let mut method = Vec::new();
    for (i, a) in raw.get("method").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let at = format!("method[{i}]");
        method.push(action_step(a).map_err(|m| fail(format!("{at}: {m}")))?);
    }
    if method.is_empty() {
        return Err(fail("the method has no action".to_owned()));
    }
    let mut rollbacks = Vec::new();
    for (i, a) in raw.get("rollbacks").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let at = format!("rollbacks[{i}]");
        let (kind, action) = provider_action(a).map_err(|m| fail(format!("{at}: {m}")))?;
        let _ = kind;
        rollbacks.push(action);
    }
    let file = json!({
        "experiments": [{
            "id": id,
            "title": title,
            "steady_state": steady,
            "method": method,
            "rollbacks": rollbacks,
        }]
    });
    let yaml = serde_json::to_string_pretty(&file).map_err(|e| fail(e.to_string()))?;
    experiment::parse(&yaml, source)
}

fn provider(v: &Value) -> Result<&Map<String, Value>, String> {
    let p = v.get("provider").and_then(Value::as_object).ok_or("no provider")?;
    match p.get("type").and_then(Value::as_str) {
        Some("http" | "process") => Ok(p),
        Some("python") => Err(format!(
            "python provider `{}.{}` cannot run here: chaos-runner runs http and process providers (use its own pods, scale, proxy or process faults)",
            p.get("module").and_then(Value::as_str).unwrap_or("?"),
            p.get("func").and_then(Value::as_str).unwrap_or("?")
        )),
        other => Err(format!("provider type {other:?} is not supported")),
    }
}

fn command_line(p: &Map<String, Value>) -> Result<String, String> {
    let path = p.get("path").and_then(Value::as_str).ok_or("process provider without a path")?;
    let args = match p.get("arguments") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(list)) => list
            .iter()
            .map(|a| a.as_str().map_or_else(|| a.to_string(), str::to_owned))
            .map(|a| shell_quote(&a))
            .collect::<Vec<_>>()
            .join(" "),
        Some(other) => {
            return Err(format!("process arguments must be a string or a list, not {other}"));
        }
    };
    Ok(if args.is_empty() { shell_quote(path) } else { format!("{} {args}", shell_quote(path)) })
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c)) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn seconds(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_f64).map(|s| format!("{}ms", (s * 1000.0).round() as u64))
}

fn probe(v: &Value, at: &str) -> Result<Value, String> {
    let name = v.get("name").and_then(Value::as_str).unwrap_or(at);
    let p = provider(v)?;
    let tolerance = v.get("tolerance").ok_or("no tolerance")?;
    let codes: Vec<i64> = match tolerance {
        Value::Number(n) => vec![n.as_i64().ok_or("a numeric tolerance must be a whole number")?],
        Value::Array(list) => list
            .iter()
            .map(|x| x.as_i64().ok_or("a list tolerance must hold whole numbers"))
            .collect::<Result<_, _>>()?,
        Value::Bool(true) => vec![],
        other => {
            return Err(format!(
                "tolerance {other} is not supported (use a status or exit code, a list of them, or true)"
            ));
        }
    };
    match p.get("type").and_then(Value::as_str) {
        Some("http") => {
            let url = p.get("url").and_then(Value::as_str).ok_or("http provider without a url")?;
            let mut http = json!({ "url": url, "method": p.get("method").and_then(Value::as_str).unwrap_or("GET") });
            http["status"] = if codes.is_empty() {
                json!((200..400).collect::<Vec<u16>>())
            } else {
                json!(codes)
            };
            if let Some(t) = seconds(p.get("timeout")) {
                http["timeout"] = json!(t);
            }
            if let Some(h) = p.get("headers") {
                http["headers"] = h.clone();
            }
            if let Some(b) = p.get("arguments") {
                http["body"] = json!(b.to_string());
            }
            Ok(json!({ "name": name, "http": http }))
        }
        _ => {
            let mut command = json!({ "run": command_line(p)? });
            command["exit_code"] = if codes.is_empty() { json!([0]) } else { json!(codes) };
            if let Some(t) = seconds(p.get("timeout")) {
                command["timeout"] = json!(t);
            }
            Ok(json!({ "name": name, "command": command }))
        }
    }
}

fn provider_action(v: &Value) -> Result<(&'static str, Value), String> {
    if v.get("type").and_then(Value::as_str) == Some("probe") {
        return Err("probes in the method or rollbacks are not supported: move them to the steady-state hypothesis".to_owned());
    }
    let p = provider(v)?;
    match p.get("type").and_then(Value::as_str) {
        Some("http") => {
            let url = p.get("url").and_then(Value::as_str).ok_or("http provider without a url")?;
            let mut action = json!({ "url": url, "method": p.get("method").and_then(Value::as_str).unwrap_or("GET") });
            if let Some(b) = p.get("arguments") {
                action["body"] = json!(b.to_string());
            }
            Ok(("http", action))
        }
        _ => Ok(("command", json!({ "command": command_line(p)? }))),
    }
}

fn action_step(v: &Value) -> Result<Value, String> {
    let name = v.get("name").and_then(Value::as_str).unwrap_or("action");
    if let Some(pauses) = v.get("pauses")
        && pauses.get("before").is_some()
    {
        return Err(format!(
            "action `{name}`: pauses.before is not supported (put a pause after the previous action)"
        ));
    }
    let (kind, action) = provider_action(v)?;
    let hold =
        seconds(v.get("pauses").and_then(|p| p.get("after"))).unwrap_or_else(|| "0ms".to_owned());
    let fault = match kind {
        "http" => json!({ "apply": action }),
        _ => json!({ "apply": action["command"] }),
    };
    Ok(json!({ "name": name, "duration": hold, kind: fault }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTK: &str = r#"{
      "version": "1.0.0",
      "title": "Gateway survives auth being stopped",
      "configuration": {"gateway": "http://127.0.0.1:8080", "pid": {"type": "env", "key": "AUTH_PID", "default": "1234"}},
      "steady-state-hypothesis": {
        "title": "gateway answers",
        "probes": [
          {"type": "probe", "name": "gateway-healthy", "tolerance": 200,
           "provider": {"type": "http", "url": "${gateway}/healthz", "timeout": 3}},
          {"type": "probe", "name": "true-exits-0", "tolerance": 0,
           "provider": {"type": "process", "path": "true"}}
        ]
      },
      "method": [
        {"type": "action", "name": "stop-auth",
         "provider": {"type": "process", "path": "kill", "arguments": "-STOP ${pid}"},
         "pauses": {"after": 5}}
      ],
      "rollbacks": [
        {"type": "action", "name": "continue-auth",
         "provider": {"type": "process", "path": "kill", "arguments": ["-CONT", "${pid}"]}}
      ]
    }"#;

    #[test]
    fn a_chaos_toolkit_experiment_translates() {
        assert!(looks_like(CTK));
        let file = translate(CTK, "e.json", &BTreeMap::new()).unwrap();
        let exp = &file.experiments[0].value;
        assert_eq!(exp.id, "gateway-survives-auth-being-stopped");
        let http = exp.steady_state[0].value.http.as_ref().unwrap();
        assert_eq!(http.url, "http://127.0.0.1:8080/healthz");
        assert_eq!(http.status, [200]);
        assert_eq!(exp.steady_state[1].value.command.as_ref().unwrap().run, "true");
        let step = &exp.method[0].value;
        assert_eq!(step.command.as_ref().unwrap().apply, "kill -STOP 1234");
        assert_eq!(step.duration(), std::time::Duration::from_secs(5));
        assert_eq!(exp.rollbacks[0].command.as_deref(), Some("kill -CONT 1234"));
    }

    #[test]
    fn what_cannot_run_is_named() {
        let python = CTK.replace(
            r#""provider": {"type": "process", "path": "kill", "arguments": "-STOP ${pid}"}"#,
            r#""provider": {"type": "python", "module": "chaosk8s.pod.actions", "func": "terminate_pods"}"#,
        );
        let err = translate(&python, "e.json", &BTreeMap::new()).unwrap_err().to_string();
        assert!(
            err.contains("method[0]") && err.contains("chaosk8s.pod.actions.terminate_pods"),
            "{err}"
        );
        let regex = CTK
            .replace(r#""tolerance": 200"#, r#""tolerance": {"type": "regex", "pattern": "ok"}"#);
        let err = translate(&regex, "e.json", &BTreeMap::new()).unwrap_err().to_string();
        assert!(
            err.contains("steady-state-hypothesis.probes[0]") && err.contains("not supported"),
            "{err}"
        );
    }
}
