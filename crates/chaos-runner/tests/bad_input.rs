//! Bad input never applies anything: an unknown fault, a target outside the
//! allow-list, malformed YAML and unset variables exit 2 naming file, line
//! and key; `plan` touches nothing; parsers never panic.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::run;
use proptest::prelude::*;

const GOOD: &str = "allow: {processes: [sleep]}
experiments:
  - id: freeze
    method:
      - name: stop-it
        process: {action: stop, pid: PID}
        duration: 1s
";

/// A `sleep` the faults may aim at, and its state letter from /proc.
struct Sleeper(std::process::Child);

impl Sleeper {
    fn start() -> Sleeper {
        let sleeper = Sleeper(Command::new("sleep").arg("60").spawn().unwrap());
        // Until the child has exec'd, /proc shows the test binary's command line.
        let cmdline =
            || std::fs::read(format!("/proc/{}/cmdline", sleeper.pid())).unwrap_or_default();
        while !cmdline().starts_with(b"sleep\0") {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        sleeper
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
    fn state(&self) -> char {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn try_file(text: &str, extra: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("e.yaml");
    std::fs::write(&file, text).unwrap();
    let mut args = vec!["run", file.to_str().unwrap(), "--state-dir"];
    let state = dir.path().join("state");
    args.push(state.to_str().unwrap());
    args.extend(extra);
    let (code, out, err) = run(&args).await;
    // Nothing was journaled: nothing was applied.
    assert!(common::journal(&state).is_empty(), "journal written for bad input");
    (code, out, err.replace(file.to_str().unwrap(), "e.yaml"))
}

#[tokio::test]
async fn an_unknown_fault_exits_2_naming_file_line_and_key() {
    let sleeper = Sleeper::start();
    let text = GOOD
        .replace("PID", &sleeper.pid().to_string())
        .replace("process: {action: stop", "explode: {action: stop");
    let (code, _, err) = try_file(&text, &[]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("e.yaml:6:"), "{err}");
    assert!(err.contains("unknown field `explode`"), "{err}");
    assert_eq!(sleeper.state(), 'S');
}

#[tokio::test]
async fn a_target_outside_the_allow_list_exits_2_and_is_not_touched() {
    let sleeper = Sleeper::start();
    let text = GOOD
        .replace("PID", &sleeper.pid().to_string())
        .replace("processes: [sleep]", "processes: [sandbox]");
    let (code, _, err) = try_file(&text, &[]).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("freeze.method.stop-it") && err.contains("add `sleep` to allow.processes"),
        "{err}"
    );
    assert_eq!(sleeper.state(), 'S', "the process was signalled");
    // A proxy API on another host is refused before anything is dialled.
    let remote = "experiments:
  - id: remote
    method:
      - name: toxic
        proxy: {api: 'http://10.255.0.1:8474', proxy: db, toxic: down}
";
    let (code, _, err) = try_file(remote, &[]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("host `10.255.0.1`") && err.contains("allow.hosts"), "{err}");
    // Kubernetes namespaces too.
    let pods = "experiments:
  - id: pods
    method:
      - name: kill
        pods: {namespace: prod, selector: app=api}
";
    let (code, _, err) = try_file(pods, &[]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("namespace `prod` is not allowed"), "{err}");
}

#[tokio::test]
async fn malformed_yaml_unset_variables_and_unknown_rows_exit_2() {
    let (code, _, err) = try_file("experiments:\n  - id: x\n    method: [\n", &[]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("e.yaml:"), "{err}");
    let (code, _, err) =
        try_file("prometheus: ${NO_SUCH_VARIABLE_HERE}\nexperiments: []\n", &[]).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("e.yaml:1:") && err.contains("--var NO_SUCH_VARIABLE_HERE=VALUE"),
        "{err}"
    );
    let sleeper = Sleeper::start();
    let text = GOOD.replace("PID", &sleeper.pid().to_string());
    let (code, _, err) = try_file(&text, &["--experiment", "nope"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--experiment nope"), "{err}");
    let (code, _, err) = try_file(&text.replace("duration: 1s", "duration: soon"), &[]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("e.yaml:7:") && err.contains("not a duration"), "{err}");
    let (code, _, err) =
        try_file(&text.replace("process: {action: stop, pid", "process: {action: pause, pid"), &[])
            .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown variant `pause`"), "{err}");
}

#[tokio::test]
async fn plan_and_dry_run_touch_nothing() {
    let sleeper = Sleeper::start();
    let text = GOOD.replace("PID", &sleeper.pid().to_string());
    let (code, out, err) = try_file(&text, &["--dry-run"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("stop (SIGSTOP) PID {}", sleeper.pid())), "{out}");
    assert!(out.contains(&format!("undo: SIGCONT to PID {}", sleeper.pid())), "{out}");
    assert!(out.contains("nothing was touched"), "{out}");
    assert_eq!(sleeper.state(), 'S');
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("e.yaml");
    std::fs::write(&file, &text).unwrap();
    let (code, out, _) = run(&["plan", file.to_str().unwrap(), "--output", "json"]).await;
    assert_eq!(code, 0);
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["experiments"][0]["faults"][0]["undo"]["kind"], "continue");
    assert_eq!(sleeper.state(), 'S');
    let (code, out, _) = run(&["list-faults"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("proxy latency") && out.contains("netem"), "{out}");
}

#[test]
fn the_shipped_launch_plan_parses() {
    let text =
        std::fs::read_to_string(common::root().join("docs/chaos-runner/launch-plan.yaml")).unwrap();
    let text = chaos_runner::experiment::substitute(
        &text,
        &BTreeMap::from([("TOKEN".to_owned(), "t".to_owned())]),
        |_| None,
    )
    .unwrap();
    let file = chaos_runner::experiment::parse(&text, "launch-plan.yaml").unwrap();
    let ids: Vec<&str> = file.experiments.iter().map(|e| e.value.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "auth-down",
            "database-down",
            "redis-down",
            "rabbitmq-down",
            "rabbitmq-flood",
            "pod-kill",
            "indexer-crash"
        ]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn experiment_files_never_panic_the_parser(text in ".{0,300}") {
        let _ = chaos_runner::experiment::parse(&text, "fuzz.yaml");
        let _ = chaos_runner::chaostoolkit::translate(&text, "fuzz.json", &BTreeMap::new());
    }

    #[test]
    fn mutated_experiment_files_never_panic(cut in 0usize..200, insert in ".{0,12}") {
        let text = GOOD.replace("PID", "1");
        let at = text.char_indices().map(|(i, _)| i).nth(cut % text.chars().count()).unwrap_or(0);
        let mutated = format!("{}{insert}{}", &text[..at], &text[at..]);
        let _ = chaos_runner::experiment::parse(&mutated, "fuzz.yaml");
        let _ = chaos_runner::experiment::substitute(&mutated, &BTreeMap::new(), |_| None);
    }

    #[test]
    fn toxic_attributes_never_panic(kind in "[a-z_]{0,12}", key in "[a-z_]{0,12}", value in proptest::num::f64::ANY) {
        let attrs = BTreeMap::from([(key, serde_json::json!(value))]);
        let _ = chaos_runner::proxy::Toxic::from_parts(&kind, attrs);
    }
}
