//! Running experiments: steady state before, user traffic, faults journaled
//! then applied, the hold (probes, alerts, the kill switch, the SLO guard),
//! undo, recovery, the data-loss ledger, and a verdict per row.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use shared_types::{Check, Measurement, Quantity, Report};
use tokio::sync::watch;

use crate::experiment::{Experiment, ExperimentFile, Probe};
use crate::fault::{self, Env, Planned};
use crate::journal::{Event, Journal, Key};
use crate::kube::Kube;
use crate::probe::{Outcome, Probes};
use crate::workload::{self, Sample};
use crate::{flood, halt};

/// How a run is carried out.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Only these experiments (all when empty).
    pub only: Vec<String>,
    /// The journal file.
    pub journal: PathBuf,
    /// The kill-switch file.
    pub halt_file: PathBuf,
    /// The cluster, when configured.
    pub kube: Option<Kube>,
    /// `--budget ID=DURATION`: recovery budgets overriding the file's.
    pub budgets: BTreeMap<String, Duration>,
    /// Probe interval (the file's, else 1 s).
    pub interval: Option<Duration>,
    /// Longest wait for recovery when a row has no budget.
    pub recovery_timeout: Duration,
    /// Consecutive passing looks that make "recovered".
    pub settle: u32,
    /// The run id (journal, toxic names).
    pub run: String,
}

/// One point of an experiment's timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mark {
    /// Milliseconds since the experiment started.
    pub at_ms: u64,
    /// `phase`, `fault`, `undo`, `probe`, `alert`, `abort`, `queue`.
    pub kind: &'static str,
    /// What.
    pub name: String,
    /// For probes and undos: whether it held or succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    /// What was seen.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// The record of one experiment, kept in the report's data.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// The row.
    pub id: String,
    /// Its title.
    pub title: Option<String>,
    /// Timeline.
    pub timeline: Vec<Mark>,
    /// The faults applied.
    pub faults: Vec<Planned>,
    /// Why it was cut short.
    pub aborted: Option<String>,
    /// Workload requests sent, answers with errors.
    pub requests: usize,
    /// User-visible errors in the fault window.
    pub user_errors: usize,
}

/// Why a row without steady-state probes has neither health before nor recovery.
const NO_STEADY_STATE: &str =
    "no steady_state probe: add one (an http, tcp or pods probe of what must stay healthy)";

struct Clock(Instant);

impl Clock {
    fn ms(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
    fn secs(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

/// Why the hold ended early.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Abort {
    Halted(String),
    Guard(String),
    Interrupted,
}

impl Abort {
    fn describe(&self) -> String {
        match self {
            Abort::Halted(why) => format!("halted by the kill switch ({why})"),
            Abort::Guard(why) => format!("SLO guard breached: {why}"),
            Abort::Interrupted => "interrupted (Ctrl-C or SIGTERM)".to_owned(),
        }
    }
}

/// Runs the file's experiments into `report`. `interrupted` turns true on
/// Ctrl-C; faults are undone before this returns, whatever happened.
pub async fn run(
    file: &ExperimentFile,
    options: &RunOptions,
    report: &mut Report,
    interrupted: watch::Receiver<bool>,
) -> Result<(), String> {
    if let Some(why) =
        halt::active(&options.halt_file, options.kube.as_ref(), &file.allow.namespaces).await
    {
        return Err(format!("experiments are halted ({why}): run `chaos-runner resume` first"));
    }
    let journal = Arc::new(Journal::open(&options.journal)?);
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| e.to_string())?;
    let probes = Probes {
        http: http.clone(),
        kube: options.kube.clone(),
        prometheus: file.prometheus.clone(),
    };
    let interval =
        options.interval.or(file.probe_interval.map(|d| d.0)).unwrap_or(Duration::from_secs(1));
    let mut records = Vec::new();
    for spanned in &file.experiments {
        let exp = &spanned.value;
        if !options.only.is_empty() && !options.only.contains(&exp.id) {
            continue;
        }
        if *interrupted.borrow() {
            report.push_check(Check::error(
                format!("{}/run", exp.id),
                "experiment runs",
                "not started: interrupted",
            ));
            continue;
        }
        let ctx = Ctx {
            file,
            options,
            journal: journal.clone(),
            http: &http,
            probes: &probes,
            interval,
            interrupted: interrupted.clone(),
        };
        eprintln!("chaos-runner: {} ({})", exp.id, exp.title.as_deref().unwrap_or("experiment"));
        let record = ctx.experiment(exp, report).await;
        records.push(record);
    }
    report
        .data
        .insert("experiments".to_owned(), serde_json::to_value(&records).unwrap_or_default());
    report
        .data
        .insert("journal".to_owned(), serde_json::json!(journal.path().display().to_string()));
    Ok(())
}

struct Ctx<'a> {
    file: &'a ExperimentFile,
    options: &'a RunOptions,
    journal: Arc<Journal>,
    http: &'a reqwest::Client,
    probes: &'a Probes,
    interval: Duration,
    interrupted: watch::Receiver<bool>,
}

/// What the hold saw.
#[derive(Debug, Default)]
struct Seen {
    breach_at: Option<f64>,
    alert_at: Option<f64>,
    alert_error: Option<String>,
    max_depth: Option<u64>,
}

impl Ctx<'_> {
    fn env(&self) -> Env<'_> {
        Env {
            allow: &self.file.allow,
            kube: self.options.kube.as_ref(),
            http: self.http,
            run: &self.options.run,
        }
    }

    async fn experiment(&self, exp: &Experiment, report: &mut Report) -> Record {
        let clock = Clock(Instant::now());
        let id = exp.id.as_str();
        let mut record = Record {
            id: exp.id.clone(),
            title: exp.title.clone(),
            timeline: Vec::new(),
            faults: Vec::new(),
            aborted: None,
            requests: 0,
            user_errors: 0,
        };
        let steady: Vec<&Probe> = exp.steady_state.iter().map(|p| &p.value).collect();
        let mark = |record: &mut Record,
                    kind: &'static str,
                    name: &str,
                    ok: Option<bool>,
                    detail: String| {
            record.timeline.push(Mark {
                at_ms: clock.ms(),
                kind,
                name: name.to_owned(),
                ok,
                detail,
            });
        };
        // 1. The steady state holds before anything is touched.
        let before = self.probes.run_all(steady.iter().copied()).await;
        for o in &before {
            mark(&mut record, "probe", &o.name, Some(o.ok), o.observed.clone());
        }
        let criterion = "steady state holds before the faults";
        if steady.is_empty() {
            // Nothing looked at: neither health before nor recovery after is evidence.
            report.push_check(Check::not_evaluated(
                format!("{id}/steady-state-before"),
                criterion,
                NO_STEADY_STATE,
            ));
        } else if before.iter().all(|o| o.ok) {
            report.push_check(Check::pass(
                format!("{id}/steady-state-before"),
                criterion,
                summary(&before),
            ));
        } else {
            report.push_check(
                Check::fail(format!("{id}/steady-state-before"), criterion, summary(&before))
                    .with_detail("the system was not healthy to begin with: no fault was applied"),
            );
            return record;
        }
        // 2. Users.
        let traffic = exp
            .workload
            .as_ref()
            .map(|w| workload::start(w, self.http.clone(), clock.0, &self.options.run));
        if traffic.is_some() {
            tokio::time::sleep(self.interval).await;
        }
        // 3. Plan again (processes may have new PIDs since validation), journal, apply.
        mark(&mut record, "phase", "faults", None, String::new());
        let fault_start = clock.secs();
        let mut applied: Vec<(Planned, Instant)> = Vec::new();
        let mut fault_errors = Vec::new();
        let env = self.env();
        'steps: for step in &exp.method {
            let planned = match fault::plan(&env, id, &step.value).await {
                Ok(p) => p,
                Err(e) => {
                    fault_errors.push(format!("{}: {e}", step.value.name));
                    break;
                }
            };
            for p in planned {
                if let Err(e) = self.journal.append(
                    &Key { run: &self.options.run, experiment: id, fault: &p.key },
                    Event::Applying,
                    Some(p.undo.clone()),
                    None,
                    None,
                ) {
                    fault_errors.push(e);
                    break 'steps;
                }
                match fault::apply(&env, &p).await {
                    Ok(()) => {
                        let _ = self.journal.append(
                            &Key { run: &self.options.run, experiment: id, fault: &p.key },
                            Event::Applied,
                            None,
                            None,
                            None,
                        );
                        mark(&mut record, "fault", &p.key, Some(true), p.describe.clone());
                        applied.push((p.clone(), Instant::now() + p.duration));
                        record.faults.push(p);
                    }
                    Err(e) => {
                        mark(&mut record, "fault", &p.key, Some(false), e.clone());
                        fault_errors.push(format!("{}: {e}", p.key));
                        // It may be half applied: undo it like the rest.
                        applied.push((p, Instant::now()));
                        break 'steps;
                    }
                }
            }
        }
        // 4. Hold: look, watch the kill switch and the guard, undo each fault when due.
        let mut seen = Seen::default();
        let mut undo_errors = Vec::new();
        let mut abort = None;
        let (abort_tx, mut abort_rx) = watch::channel::<Option<Abort>>(None);
        let watcher = self.watch_aborts(exp, abort_tx);
        let flood_queue = exp.method.iter().find_map(|s| s.value.flood.clone());
        let mut pending = applied;
        let mut last_undo = clock.secs();
        while !pending.is_empty() {
            if !fault_errors.is_empty() {
                break;
            }
            self.look(
                exp,
                &steady,
                &clock,
                fault_start,
                &mut seen,
                &mut record,
                flood_queue.as_ref(),
            )
            .await;
            if seen.breach_at.is_none()
                && let Some(t) = &traffic
                && let Some(first) = t
                    .snapshot()
                    .iter()
                    .filter(|s| s.failed() && s.at_ms as f64 / 1000.0 >= fault_start)
                    .map(|s| s.at_ms)
                    .min()
            {
                seen.breach_at = Some(first as f64 / 1000.0);
            }
            let now = Instant::now();
            let (due, rest): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(_, at)| *at <= now);
            pending = rest;
            for (p, _) in due.into_iter().rev() {
                self.undo(&p, "run", &clock, &mut record, &mut undo_errors).await;
                last_undo = clock.secs();
            }
            if pending.is_empty() {
                break;
            }
            let next_due = pending.iter().map(|(_, at)| *at).min().unwrap_or(now);
            let wait = self.interval.min(next_due.saturating_duration_since(Instant::now()));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = abort_rx.changed() => {}
            }
            if let Some(a) = abort_rx.borrow().clone() {
                abort = Some(a);
                break;
            }
        }
        // Whatever is left (abort, apply error) is undone now, newest first.
        for (p, _) in pending.into_iter().rev() {
            self.undo(&p, "run", &clock, &mut record, &mut undo_errors).await;
            last_undo = clock.secs();
        }
        if let Some(a) = &abort {
            mark(&mut record, "abort", "abort", None, a.describe());
            record.aborted = Some(a.describe());
        }
        // 5. Recovery: the steady state holds `settle` times in a row.
        let budget =
            self.options.budgets.get(id).copied().or(exp.expect.recover_within.map(|d| d.0));
        let recovery_timeout = exp
            .recovery_timeout
            .map(|d| d.0)
            .or(budget.map(|b| (b * 2).max(Duration::from_secs(10))))
            .unwrap_or(self.options.recovery_timeout);
        let mut recovered_at = None;
        if fault_errors.is_empty() && !matches!(abort, Some(Abort::Interrupted | Abort::Halted(_)))
        {
            mark(&mut record, "phase", "recovery", None, String::new());
            let deadline = Instant::now() + recovery_timeout;
            let mut streak = 0;
            let mut first_ok = None;
            loop {
                let outcomes = self
                    .look(
                        exp,
                        &steady,
                        &clock,
                        fault_start,
                        &mut seen,
                        &mut record,
                        flood_queue.as_ref(),
                    )
                    .await;
                let drained = match (&flood_queue, seen.max_depth) {
                    (Some(_), Some(_)) => record
                        .timeline
                        .iter()
                        .rev()
                        .find(|m| m.kind == "queue")
                        .is_some_and(|m| m.detail.starts_with("0 ")),
                    _ => true,
                };
                if outcomes.iter().all(|o| o.ok) && drained {
                    first_ok.get_or_insert(clock.secs());
                    streak += 1;
                    if streak >= self.options.settle.max(1) {
                        recovered_at = first_ok;
                        break;
                    }
                } else {
                    streak = 0;
                    first_ok = None;
                }
                if Instant::now() >= deadline || *self.interrupted.borrow() {
                    break;
                }
                tokio::time::sleep(self.interval).await;
            }
        }
        // A short tail of traffic after recovery, then users stop.
        let samples = match traffic {
            Some(t) => {
                if recovered_at.is_some() {
                    tokio::time::sleep(self.interval).await;
                }
                Some(t.stop().await)
            }
            None => None,
        };
        drop(watcher);
        // 6. Rollbacks: whatever happened.
        for action in &exp.rollbacks {
            let result = match (&action.url, &action.command) {
                (Some(url), _) => {
                    fault::request(
                        self.http,
                        action.method.as_deref().unwrap_or("POST"),
                        url,
                        action.body.as_deref(),
                    )
                    .await
                }
                (None, Some(cmd)) => fault::shell(cmd).await,
                _ => Ok(()),
            };
            let what = action.url.clone().or(action.command.clone()).unwrap_or_default();
            mark(
                &mut record,
                "undo",
                &format!("rollback {what}"),
                Some(result.is_ok()),
                result.err().unwrap_or_default(),
            );
        }
        // 7. Verdicts.
        let window_end = recovered_at.unwrap_or(clock.secs());
        self.verdicts(
            exp,
            report,
            &mut record,
            Verdicts {
                fault_start,
                last_undo,
                recovered_at,
                budget,
                recovery_timeout,
                seen: &seen,
                samples: samples.as_deref(),
                window_end,
                fault_errors: &fault_errors,
                undo_errors: &undo_errors,
                abort: abort.as_ref(),
            },
        )
        .await;
        record
    }

    /// One look during the hold or recovery: steady-state probes, the alert, the queue.
    #[allow(clippy::too_many_arguments)]
    async fn look(
        &self,
        exp: &Experiment,
        steady: &[&Probe],
        clock: &Clock,
        fault_start: f64,
        seen: &mut Seen,
        record: &mut Record,
        flood: Option<&crate::experiment::FloodFault>,
    ) -> Vec<Outcome> {
        let outcomes = self.probes.run_all(steady.iter().copied()).await;
        let now = clock.secs();
        for o in &outcomes {
            record.timeline.push(Mark {
                at_ms: clock.ms(),
                kind: "probe",
                name: o.name.clone(),
                ok: Some(o.ok),
                detail: o.observed.clone(),
            });
        }
        if seen.breach_at.is_none() && outcomes.iter().any(|o| !o.ok) && now >= fault_start {
            seen.breach_at = Some(now);
        }
        if let Some(alert) = &exp.expect.alert
            && seen.alert_at.is_none()
        {
            let base = alert.prometheus.as_ref().or(self.file.prometheus.as_ref());
            if let Some(base) = base {
                let query = format!("ALERTS{{alertname=\"{}\",alertstate=\"firing\"}}", alert.name);
                match crate::probe::series(self.http, base, &query).await {
                    Ok(series) if !series.is_empty() => {
                        seen.alert_at = Some(clock.secs());
                        seen.alert_error = None;
                        record.timeline.push(Mark {
                            at_ms: clock.ms(),
                            kind: "alert",
                            name: alert.name.clone(),
                            ok: Some(true),
                            detail: "firing".to_owned(),
                        });
                    }
                    Ok(_) => seen.alert_error = None,
                    Err(e) => seen.alert_error = Some(e),
                }
            }
        }
        if let Some(f) = flood {
            match flood::depth(&f.amqp_url, &f.queue).await {
                Ok(depth) => {
                    seen.max_depth = Some(seen.max_depth.unwrap_or(0).max(depth));
                    record.timeline.push(Mark {
                        at_ms: clock.ms(),
                        kind: "queue",
                        name: f.queue.clone(),
                        ok: None,
                        detail: format!("{depth} messages"),
                    });
                }
                Err(e) => record.timeline.push(Mark {
                    at_ms: clock.ms(),
                    kind: "queue",
                    name: f.queue.clone(),
                    ok: Some(false),
                    detail: e,
                }),
            }
        }
        outcomes
    }

    async fn undo(
        &self,
        p: &Planned,
        by: &str,
        clock: &Clock,
        record: &mut Record,
        errors: &mut Vec<String>,
    ) {
        let result = fault::undo(self.http, self.options.kube.as_ref(), &p.undo).await;
        let (event, error) = match &result {
            Ok(()) => (Event::Undone, None),
            Err(e) => (Event::UndoFailed, Some(e.clone())),
        };
        if let Err(e) = self.journal.append(
            &Key { run: &self.options.run, experiment: &record.id, fault: &p.key },
            event,
            None,
            Some(by),
            error.clone(),
        ) {
            errors.push(e);
        }
        record.timeline.push(Mark {
            at_ms: clock.ms(),
            kind: "undo",
            name: p.key.clone(),
            ok: Some(result.is_ok()),
            detail: error.clone().unwrap_or_else(|| p.undo.describe()),
        });
        if let Some(e) = error {
            errors.push(format!("{}: {e}", p.key));
        }
    }

    /// Watches the kill switch (file every 200 ms, ConfigMap every second),
    /// the SLO guard (every interval) and Ctrl-C; the first to trip is sent.
    fn watch_aborts(&self, exp: &Experiment, tx: watch::Sender<Option<Abort>>) -> AbortOnDrop {
        let halt_file = self.options.halt_file.clone();
        let kube = self.options.kube.clone();
        let namespaces = self.file.allow.namespaces.clone();
        let guard = exp.guard.as_ref().map(|g| g.value.clone());
        let probes = self.probes.clone();
        let interval = self.interval;
        let mut interrupted = self.interrupted.clone();
        let task = tokio::spawn(async move {
            let mut ticks = 0u64;
            // The first look is at once: a guard never looked at held nothing.
            let mut last_guard = Instant::now().checked_sub(interval).unwrap_or_else(Instant::now);
            loop {
                if *interrupted.borrow() {
                    tx.send_replace(Some(Abort::Interrupted));
                    return;
                }
                if let Some(why) = halt::file_reason(&halt_file) {
                    tx.send_replace(Some(Abort::Halted(why)));
                    return;
                }
                if ticks.is_multiple_of(5)
                    && let Some(k) = &kube
                {
                    for ns in &namespaces {
                        if k.halted(ns).await.unwrap_or(false) {
                            tx.send_replace(Some(Abort::Halted(format!(
                                "ConfigMap {ns}/{}",
                                crate::kube::HALT_CONFIGMAP
                            ))));
                            return;
                        }
                    }
                }
                if let Some(g) = &guard
                    && last_guard.elapsed() >= interval
                {
                    last_guard = Instant::now();
                    let o = probes.run(g).await;
                    if !o.ok {
                        tx.send_replace(Some(Abort::Guard(format!("{}: {}", o.name, o.observed))));
                        return;
                    }
                }
                ticks += 1;
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = interrupted.changed() => {}
                }
            }
        });
        AbortOnDrop(task)
    }

    async fn verdicts(
        &self,
        exp: &Experiment,
        report: &mut Report,
        record: &mut Record,
        v: Verdicts<'_>,
    ) {
        let id = exp.id.as_str();
        let check_id = |name: &str| format!("{id}/{name}");
        let push_m = |report: &mut Report, name: &str, value: f64, unit: &str| {
            report.push_measurement(Measurement::new(format!("{id}.{name}"), value, unit));
        };
        // Faults applied and every one undone.
        let criterion = "every fault applied and undone";
        let check = if !v.undo_errors.is_empty() {
            Check::fail(
                check_id("faults-undone"),
                criterion,
                format!("{} undo failed", v.undo_errors.len()),
            )
            .with_detail(format!(
                "{}; the journal keeps them: run `chaos-runner recover`",
                v.undo_errors.join("; ")
            ))
        } else if !v.fault_errors.is_empty() {
            Check::error(check_id("faults-undone"), criterion, v.fault_errors.join("; "))
                .with_observed("a fault could not be applied; what was applied is undone")
        } else {
            Check::pass(
                check_id("faults-undone"),
                criterion,
                format!("{} applied, {} undone", record.faults.len(), record.faults.len()),
            )
        };
        report.push_check(check);
        if !v.fault_errors.is_empty() {
            return;
        }
        match v.abort {
            Some(Abort::Guard(why)) => {
                report.push_check(
                    Check::fail(
                        check_id("slo-guard"),
                        "the SLO guard holds during the experiment",
                        why.clone(),
                    )
                    .with_detail("aborted and undone"),
                );
            }
            Some(a @ (Abort::Halted(_) | Abort::Interrupted)) => {
                report.push_check(Check::error(
                    check_id("run"),
                    "experiment runs to the end",
                    a.describe(),
                ));
                return;
            }
            None if exp.guard.is_some() => {
                report.push_check(Check::pass(
                    check_id("slo-guard"),
                    "the SLO guard holds during the experiment",
                    "held",
                ));
            }
            None => {}
        }
        // Detection.
        let detect = v.seen.breach_at.map(|t| (t - v.fault_start).max(0.0));
        if let Some(d) = detect {
            push_m(report, "detect_seconds", d, "s");
        }
        if let Some(budget) = exp.expect.detect_within {
            let criterion =
                format!("failure detected within {}", Quantity::seconds(budget.0.as_secs_f64()));
            report.push_check(match detect {
                Some(d) if d <= budget.0.as_secs_f64() => Check::pass(check_id("detected"), criterion, Quantity::seconds(d).to_string()),
                Some(d) => Check::fail(check_id("detected"), criterion, Quantity::seconds(d).to_string()),
                None => Check::fail(check_id("detected"), criterion, "never")
                    .with_detail("the steady state held and no user saw an error during the fault: is the fault reaching the system?"),
            });
        }
        // Recovery: from the undo, or from the fault itself when nothing is
        // undone (a deleted pod, a flood: the system must heal on its own).
        let heals_alone =
            record.faults.iter().all(|p| matches!(p.undo, crate::journal::Undo::Nothing { .. }));
        let (origin, since) =
            if heals_alone { (v.fault_start, "the fault") } else { (v.last_undo, "the undo") };
        let criterion = match v.budget {
            Some(b) => format!(
                "steady state holds again within {} of {since}",
                Quantity::seconds(b.as_secs_f64())
            ),
            None => format!("steady state holds again after {since}"),
        };
        let check = match v.recovered_at {
            _ if exp.steady_state.is_empty() => {
                Check::not_evaluated(check_id("recovered"), criterion, NO_STEADY_STATE)
            }
            Some(at) => {
                let took = (at - origin).max(0.0);
                push_m(report, "recover_seconds", took, "s");
                let observed = Quantity::seconds(took).to_string();
                match v.budget {
                    Some(b) if took > b.as_secs_f64() => {
                        Check::fail(check_id("recovered"), criterion, observed)
                    }
                    _ => Check::pass(check_id("recovered"), criterion, observed),
                }
            }
            None => Check::fail(
                check_id("recovered"),
                criterion,
                format!("not within {}", Quantity::seconds(v.recovery_timeout.as_secs_f64())),
            )
            .with_detail(last_failures(record)),
        };
        report.push_check(check);
        // What users saw, in the window from the first fault to recovery.
        let names: Vec<&str> =
            exp.workload.iter().flat_map(|w| w.requests.iter().map(|r| r.name.as_str())).collect();
        let window: Vec<&Sample> = v
            .samples
            .unwrap_or_default()
            .iter()
            .filter(|s| {
                let t = s.at_ms as f64 / 1000.0;
                t >= v.fault_start && t <= v.window_end
            })
            .collect();
        let errors: Vec<&Sample> = window.iter().copied().filter(|s| s.failed()).collect();
        if let Some(samples) = v.samples {
            record.requests = samples.len();
            record.user_errors = errors.len();
            push_m(report, "requests", samples.len() as f64, "");
            push_m(report, "user_errors", errors.len() as f64, "");
        }
        let no_workload = "no workload: add `workload.requests` so what users see is measured";
        if let Some(max) = exp.expect.max_user_errors {
            let criterion = format!("user-visible errors <= {max}");
            report.push_check(match v.samples {
                None => Check::not_evaluated(check_id("user-errors"), criterion, no_workload),
                Some(_) => {
                    let observed = format!("{} of {} requests", errors.len(), window.len());
                    let check = Check::from_bool(
                        check_id("user-errors"),
                        criterion,
                        observed,
                        errors.len() as u64 <= max,
                    );
                    if errors.is_empty() {
                        check
                    } else {
                        check.with_detail(first_errors(&errors, &names))
                    }
                }
            });
        }
        if let Some(g) = &exp.expect.graceful {
            let criterion = format!(
                "every user-visible error is graceful (status {}{})",
                g.status.iter().map(u16::to_string).collect::<Vec<_>>().join("/"),
                g.content_type.as_ref().map(|c| format!(", {c}")).unwrap_or_default()
            );
            report.push_check(match v.samples {
                None => Check::not_evaluated(check_id("graceful-errors"), criterion, no_workload),
                Some(_) => {
                    let rough: Vec<&Sample> = errors
                        .iter()
                        .copied()
                        .filter(|s| {
                            !(s.status.is_some_and(|st| g.status.contains(&st))
                                && g.content_type.as_ref().is_none_or(|c| {
                                    s.content_type
                                        .as_ref()
                                        .is_some_and(|t| t.starts_with(c.as_str()))
                                }))
                        })
                        .collect();
                    let observed = format!(
                        "{} of {} errors graceful",
                        errors.len() - rough.len(),
                        errors.len()
                    );
                    let check = Check::from_bool(
                        check_id("graceful-errors"),
                        criterion,
                        observed,
                        rough.is_empty(),
                    );
                    if rough.is_empty() {
                        check
                    } else {
                        check.with_detail(first_errors(&rough, &names))
                    }
                }
            });
        }
        if !exp.expect.unaffected.is_empty() {
            let criterion =
                format!("no cascade: {} see no error", exp.expect.unaffected.join(", "));
            let hit: Vec<&Sample> = errors
                .iter()
                .copied()
                .filter(|s| {
                    names
                        .get(s.request)
                        .is_some_and(|n| exp.expect.unaffected.iter().any(|u| u == n))
                })
                .collect();
            let total = window
                .iter()
                .filter(|s| {
                    names
                        .get(s.request)
                        .is_some_and(|n| exp.expect.unaffected.iter().any(|u| u == n))
                })
                .count();
            let check = Check::from_bool(
                check_id("no-cascade"),
                criterion,
                format!("{} errors in {total} requests", hit.len()),
                hit.is_empty(),
            );
            report.push_check(if hit.is_empty() {
                check
            } else {
                check.with_detail(first_errors(&hit, &names))
            });
        }
        if let Some(loss) = &exp.expect.no_data_loss {
            let index = names.iter().position(|n| *n == loss.ledger);
            let acked: BTreeSet<String> = v
                .samples
                .unwrap_or_default()
                .iter()
                .filter(|s| Some(s.request) == index)
                .filter_map(|s| s.ledger_id.clone())
                .collect();
            let within = loss.within.map_or(Duration::from_secs(60), |d| d.0);
            let criterion = format!(
                "no data loss: every acknowledged {} found within {}",
                loss.ledger,
                Quantity::seconds(within.as_secs_f64())
            );
            if acked.is_empty() {
                report.push_check(Check::not_evaluated(
                    check_id("no-data-loss"),
                    criterion,
                    format!(
                        "no `{}` write was acknowledged during the run: nothing to check",
                        loss.ledger
                    ),
                ));
            } else {
                let (missing, error) = ledger_missing(&loss.url, &loss.query, &acked, within).await;
                push_m(report, "acknowledged", acked.len() as f64, "");
                let check = match (missing, error) {
                    (Some(missing), _) if missing.is_empty() => Check::pass(
                        check_id("no-data-loss"),
                        criterion,
                        format!("{} of {} found", acked.len(), acked.len()),
                    ),
                    (Some(missing), _) => {
                        push_m(report, "lost", missing.len() as f64, "");
                        let shown: Vec<&str> =
                            missing.iter().take(20).map(String::as_str).collect();
                        Check::fail(
                            check_id("no-data-loss"),
                            criterion,
                            format!("{} of {} missing", missing.len(), acked.len()),
                        )
                        .with_detail(format!(
                            "missing {} ids: {}{}",
                            loss.ledger,
                            shown.join(", "),
                            if missing.len() > 20 { ", …" } else { "" }
                        ))
                    }
                    (None, e) => Check::not_evaluated(
                        check_id("no-data-loss"),
                        criterion,
                        e.unwrap_or_default(),
                    ),
                };
                report.push_check(check);
            }
        }
        if let Some(alert) = &exp.expect.alert {
            let within = alert.fire_within.map_or(Duration::from_secs(120), |d| d.0);
            let criterion = format!(
                "alert {} fires within {}",
                alert.name,
                Quantity::seconds(within.as_secs_f64())
            );
            let check = match (v.seen.alert_at, &v.seen.alert_error) {
                (Some(at), _) => {
                    let took = (at - v.fault_start).max(0.0);
                    push_m(report, "alert_fire_seconds", took, "s");
                    Check::from_bool(check_id("alert-fired"), criterion, Quantity::seconds(took).to_string(), took <= within.as_secs_f64())
                }
                (None, Some(e)) => Check::not_evaluated(check_id("alert-fired"), criterion, e.clone()),
                (None, None) => Check::fail(check_id("alert-fired"), criterion, "never fired")
                    .with_detail(format!("ALERTS{{alertname=\"{}\",alertstate=\"firing\"}} stayed empty from the first fault to recovery", alert.name)),
            };
            report.push_check(check);
        }
        if let Some(f) = exp.method.iter().find_map(|s| s.value.flood.as_ref()) {
            let within = f.drain_within.map_or(Duration::from_secs(300), |d| d.0);
            let criterion = format!(
                "queue {} drains within {}",
                f.queue,
                Quantity::seconds(within.as_secs_f64())
            );
            if let Some(max) = v.seen.max_depth {
                push_m(report, "max_queue_depth", max as f64, "");
            }
            let drain = v.recovered_at.map(|at| (at - v.fault_start).max(0.0));
            let check = match (drain, v.seen.max_depth) {
                (_, None) => Check::not_evaluated(
                    check_id("drained"),
                    criterion,
                    "the broker never answered a passive declare of the queue: check amqp_url and queue",
                ),
                (Some(d), Some(_)) => {
                    push_m(report, "drain_seconds", d, "s");
                    Check::from_bool(
                        check_id("drained"),
                        criterion,
                        Quantity::seconds(d).to_string(),
                        d <= within.as_secs_f64(),
                    )
                }
                (None, Some(max)) => {
                    Check::fail(check_id("drained"), criterion, format!("not drained (peak {max})"))
                }
            };
            report.push_check(check);
        }
    }
}

struct Verdicts<'a> {
    fault_start: f64,
    last_undo: f64,
    recovered_at: Option<f64>,
    budget: Option<Duration>,
    recovery_timeout: Duration,
    seen: &'a Seen,
    samples: Option<&'a [Sample]>,
    window_end: f64,
    fault_errors: &'a [String],
    undo_errors: &'a [String],
    abort: Option<&'a Abort>,
}

/// Aborts the watcher task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn summary(outcomes: &[Outcome]) -> String {
    outcomes.iter().map(|o| format!("{}: {}", o.name, o.observed)).collect::<Vec<_>>().join("; ")
}

fn last_failures(record: &Record) -> String {
    let mut last: BTreeMap<&str, &str> = BTreeMap::new();
    for m in record.timeline.iter().filter(|m| m.kind == "probe" && m.ok == Some(false)) {
        last.insert(&m.name, &m.detail);
    }
    if last.is_empty() {
        return "no probe failed at the end".to_owned();
    }
    let list: Vec<String> = last.iter().map(|(n, d)| format!("{n}: {d}")).collect();
    format!("still failing: {}", list.join("; "))
}

fn first_errors(errors: &[&Sample], names: &[&str]) -> String {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for s in errors {
        let what = match (s.status, &s.error) {
            (Some(st), _) => {
                format!("{st} {}", s.content_type.as_deref().unwrap_or("(no content type)"))
            }
            (None, Some(e)) => e.clone(),
            (None, None) => "no answer".to_owned(),
        };
        let name = names.get(s.request).copied().unwrap_or("?");
        *by.entry(format!("{name}: {what}")).or_default() += 1;
    }
    by.iter().map(|(k, n)| format!("{n}× {k}")).collect::<Vec<_>>().join("; ")
}

/// The acknowledged ids not found by `query` within `within` (polled every
/// second); `None` with the reason if the database could not be asked.
async fn ledger_missing(
    url: &str,
    query: &str,
    acked: &BTreeSet<String>,
    within: Duration,
) -> (Option<Vec<String>>, Option<String>) {
    let deadline = Instant::now() + within;
    let ids: Vec<String> = acked.iter().cloned().collect();
    let mut last_error;
    let mut last_missing = None;
    loop {
        match crate::probe::connect(url).await {
            Ok(client) => match client.query(query, &[&ids]).await {
                Ok(rows) => {
                    let found: BTreeSet<String> =
                        rows.iter().filter_map(|r| r.try_get::<_, String>(0).ok()).collect();
                    let missing: Vec<String> =
                        ids.iter().filter(|i| !found.contains(*i)).cloned().collect();
                    if missing.is_empty() {
                        return (Some(missing), None);
                    }
                    last_missing = Some(missing);
                    last_error = None;
                }
                Err(e) => {
                    last_error = Some(format!("`{query}`: {}", shared_types::pg::error_chain(&e)))
                }
            },
            Err(e) => last_error = Some(e),
        }
        if Instant::now() >= deadline {
            return match last_missing {
                Some(m) => (Some(m), None),
                None => (None, last_error),
            };
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
