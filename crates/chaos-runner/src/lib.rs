//! `chaos-runner`: when a dependency fails, does the marketplace degrade
//! gracefully, lose nothing and recover within budget?
//!
//! An experiment file ([`experiment`]) holds rows of the launch plan's chaos
//! matrix: a steady state (probes), user traffic, faults with a duration and
//! an exact undo, and what must happen (detected within, recovered within,
//! errors graceful, no cascade, no data loss, an alert fires). [`runner`]
//! runs them and judges each row in the shared report contract.
//!
//! Faults are never left behind: each is written to an fsynced [`journal`]
//! before it is applied and undone on success, failure, Ctrl-C, the kill
//! switch ([`halt`]) or an SLO guard breach; after a crash, [`recover`]
//! undoes whatever the journal says is still applied. Faults act only on
//! what the file's allow-list names (loopback hosts always allowed).
//!
//! Fault kinds: processes ([`process`]: SIGSTOP/SIGCONT, kill, term), the
//! TCP fault [`proxy`] (toxiproxy's toxics and API), Kubernetes pods and
//! Deployments ([`kube`], on the `kube` crate), kernel netem in runner-made
//! network namespaces ([`netem`]), commands and HTTP requests with their
//! undo, and a RabbitMQ [`flood`]. Chaos Toolkit experiments (JSON) are read
//! too ([`chaostoolkit`]).

pub mod chaostoolkit;
pub mod error;
pub mod experiment;
pub mod fault;
pub mod flood;
pub mod halt;
pub mod html;
pub mod journal;
pub mod kube;
pub mod netem;
pub mod probe;
pub mod process;
pub mod proxy;
pub mod runner;
pub mod workload;

use std::collections::BTreeMap;
use std::path::Path;

use shared_types::{Check, Report};

pub use error::{ConfigError, Error};
pub use experiment::ExperimentFile;

/// The JSON Schema of the experiment file, published as
/// `docs/chaos-runner/experiment.schema.json` by `cargo xtask schema`.
#[cfg(feature = "schema")]
pub fn experiment_schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(ExperimentFile);
    schema.insert(
        "$id".to_owned(),
        "https://postlaunch.dev/schemas/chaos-runner/experiment.schema.json".into(),
    );
    schema.insert("title".to_owned(), "chaos-runner experiment file".into());
    schema.insert(
        "description".to_owned(),
        "Rows of a chaos matrix: steady-state probes, user traffic, faults with a duration and an \
         exact undo, and the expected behaviour with budgets. `${NAME}` and `${NAME:-default}` are \
         replaced before parsing. Unknown keys are errors."
            .into(),
    );
    shared_types::sorted_keys(schema.to_value())
}

/// Reads an experiment file: a chaos-runner YAML file, or a Chaos Toolkit
/// JSON experiment (recognised by its `steady-state-hypothesis` or `method`
/// keys). `${NAME}` is replaced from `vars`, then the environment.
pub fn load(path: &Path, vars: &BTreeMap<String, String>) -> Result<ExperimentFile, ConfigError> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(format!("cannot read {source}: {e}")))?;
    if chaostoolkit::looks_like(&text) {
        return chaostoolkit::translate(&text, &source, vars);
    }
    let text = experiment::substitute(&text, vars, |n| std::env::var(n).ok())
        .map_err(|(line, m)| ConfigError::at(&source, line as u64, 1, None, &m))?;
    experiment::parse(&text, &source)
}

/// Checks every fault of the file against the allow-list without touching
/// anything: hosts, namespaces and network namespaces by name, processes
/// by what is running now. A refusal is a configuration error (exit 2).
pub fn check_allowed(file: &ExperimentFile) -> Result<(), ConfigError> {
    for spanned in &file.experiments {
        let exp = &spanned.value;
        for step in &exp.method {
            let s = &step.value;
            let refuse = |m: String| {
                ConfigError::at(
                    "allow-list",
                    step.referenced.line(),
                    step.referenced.column(),
                    Some(&format!("{}.method.{}", exp.id, s.name)),
                    &m,
                )
            };
            let hosts: Vec<&str> = [
                s.proxy.as_ref().map(|p| p.api.as_str()),
                s.http.as_ref().and_then(|h| h.apply.url.as_deref()),
                s.http.as_ref().and_then(|h| h.undo.as_ref()).and_then(|u| u.url.as_deref()),
                s.flood.as_ref().map(|f| f.amqp_url.as_str()),
            ]
            .into_iter()
            .flatten()
            .collect();
            for h in hosts {
                fault::host_allowed(&file.allow, h).map_err(refuse)?;
            }
            let namespaces =
                [s.pods.as_ref().map(|p| &p.namespace), s.scale.as_ref().map(|p| &p.namespace)];
            for ns in namespaces.into_iter().flatten() {
                if !file.allow.namespaces.contains(ns) {
                    return Err(refuse(format!(
                        "namespace `{ns}` is not allowed: add it to allow.namespaces"
                    )));
                }
            }
            if let Some(n) = &s.netem
                && !file.allow.netns.contains(&n.netns)
            {
                return Err(refuse(format!(
                    "netns `{}` is not allowed: add it to allow.netns",
                    n.netns
                )));
            }
            if let Some(p) = &s.process {
                match process::resolve(&p.target(), &file.allow.processes) {
                    Err(e) if e.contains("not allowed") || e.contains("refused") => {
                        return Err(refuse(e));
                    }
                    // Nothing running matches yet: the run says so (exit 3), nothing is refused.
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

/// `chaos-runner recover`: undoes every fault the journal holds as applied
/// and not undone (idempotent), appending `undone` entries by `recover`.
/// With `dry_run`, lists them and changes nothing.
pub async fn recover(
    journal_path: &Path,
    kube: Option<&kube::Kube>,
    dry_run: bool,
    report: &mut Report,
) -> Result<(), String> {
    let entries = journal::read(journal_path)?;
    let open = journal::outstanding(&entries);
    report.data.insert("journal".to_owned(), serde_json::json!(journal_path.display().to_string()));
    let criterion = "every journaled fault is undone";
    if open.is_empty() {
        report.push_check(Check::pass(
            "recover/outstanding",
            criterion,
            format!("nothing outstanding in {} entries", entries.len()),
        ));
        return Ok(());
    }
    if dry_run {
        // The plan is the dry run's evidence: made, and nothing changed.
        report.push_check(Check::pass(
            "recover/plan",
            "a recovery plan is made and nothing is changed",
            format!("dry run: {} outstanding fault(s) would be undone", open.len()),
        ));
        for o in &open {
            let undo = o
                .entry
                .undo
                .as_ref()
                .map_or("no undo recorded".to_owned(), journal::Undo::describe);
            report.push_check(Check::skipped(
                format!("recover/{}", o.entry.fault),
                criterion,
                format!("dry run: would {undo}"),
            ));
        }
        return Ok(());
    }
    let j = journal::Journal::open(journal_path)?;
    let http = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(3))
        .build()
        .map_err(|e| e.to_string())?;
    for o in open.iter().rev() {
        let e = &o.entry;
        let id = format!("recover/{}", e.fault);
        let Some(undo) = &e.undo else {
            report.push_check(Check::error(id, criterion, "the journal holds no undo for it"));
            continue;
        };
        match fault::undo(&http, kube, undo).await {
            Ok(()) => {
                j.append(
                    &journal::Key { run: &e.run, experiment: &e.experiment, fault: &e.fault },
                    journal::Event::Undone,
                    None,
                    Some("recover"),
                    None,
                )?;
                report.push_check(Check::pass(
                    id,
                    criterion,
                    format!("undone: {}", undo.describe()),
                ));
            }
            Err(err) => {
                j.append(
                    &journal::Key { run: &e.run, experiment: &e.experiment, fault: &e.fault },
                    journal::Event::UndoFailed,
                    None,
                    Some("recover"),
                    Some(err.clone()),
                )?;
                report.push_check(
                    Check::fail(id, criterion, format!("undo failed: {err}"))
                        .with_detail(format!("still outstanding: {}", undo.describe())),
                );
            }
        }
    }
    Ok(())
}
