//! The release, rollback, abort, scale-down and recovery, each ending in a
//! report whose checks are what was measured.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use serde_json::{Value, json};
use shared_types::{Check, Measurement, Report, Timestamp};

use crate::app::{self, AppRef, AppState, Release, TemplateChange};
use crate::cluster::Cluster;
use crate::gates::{self, AnalysisFile, SmokeFile};
use crate::journal::{Entry, Journal};
use crate::prober::{self, Prober, Sample};
use crate::{Error, keys};

/// The prober's settings.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// The active Service's URL, as clients reach it.
    pub active_url: Option<String>,
    /// The preview Service's URL.
    pub preview_url: Option<String>,
    /// Requests per second.
    pub rate: f64,
    /// Path probed (the app's real route, not only its health check).
    pub path: String,
    /// The response header holding the version.
    pub version_header: String,
}

/// `deploy`'s settings.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    /// The app.
    pub app: AppRef,
    /// The new image or template.
    pub change: TemplateChange,
    /// Replicas of the new colour before the switch (default: the active one's).
    pub preview_replicas: Option<i32>,
    /// The prober.
    pub probe: ProbeOptions,
    /// Deadline for the new colour's pods to be ready.
    pub ready_timeout: Duration,
    /// Health path checked through the preview Service.
    pub health_path: String,
    /// `--smoke`.
    pub smoke: Option<SmokeFile>,
    /// `--smoke-job`.
    pub smoke_job: Option<Job>,
    /// `--smoke-load`: the load-tester binary and its extra arguments.
    pub smoke_load: Option<(std::path::PathBuf, Vec<String>)>,
    /// `--analysis`.
    pub analysis: Option<AnalysisFile>,
    /// Prometheus for the analysis.
    pub prometheus: Option<String>,
    /// `--pre-switch-cmd`.
    pub pre_switch_cmd: Option<String>,
    /// Deadline of the pre-switch command and of the smoke Job.
    pub command_timeout: Duration,
    /// Post-promotion watch.
    pub watch_for: Duration,
    /// Delay before the old colour is scaled to 0.
    pub scale_down_delay: Duration,
    /// Never scale the old colour down.
    pub keep_old: bool,
    /// Keep the new colour running when a gate fails (to debug it).
    pub keep_preview: bool,
    /// The launch plan's deployment budget.
    pub deploy_budget: Duration,
    /// The run's id (journal, history).
    pub id: String,
}

/// The state directory's journal, and the release's identity in it.
#[derive(Debug, Clone)]
pub struct Context {
    /// The cluster.
    pub cluster: Cluster,
    /// The journal.
    pub journal: Journal,
}

impl Context {
    fn entry(&self, id: &str, app: &AppRef, stable: &str, candidate: &str, step: &str) -> Entry {
        Entry {
            release: id.to_owned(),
            step: step.to_owned(),
            at: Timestamp::now().as_str().to_owned(),
            namespace: app.namespace.clone(),
            app: app.name.clone(),
            colour_label: app.colour_label.clone(),
            preview: Some(app.preview.clone()),
            stable: stable.to_owned(),
            candidate: candidate.to_owned(),
            kubeconfig: self.cluster.kubeconfig.clone(),
            context: self.cluster.context.clone(),
            outcome: None,
        }
    }

    /// Writes a journal step (never under `--dry-run`).
    fn log(&self, entry: Entry) -> Result<(), Error> {
        if self.cluster.dry_run() { Ok(()) } else { self.journal.write(&entry) }
    }

    fn end(&self, mut entry: Entry, outcome: &str) -> Result<(), Error> {
        entry.step = "end".to_owned();
        entry.outcome = Some(outcome.to_owned());
        entry.at = Timestamp::now().as_str().to_owned();
        self.log(entry)
    }
}

fn report_for(app: &AppRef) -> Report {
    Report::new(
        "bluegreen-promoter",
        env!("CARGO_PKG_VERSION"),
        format!("{}/{}", app.namespace, app.name),
    )
}

/// The serialized history with `release` added or replaced (by id), at most 20 kept.
fn history_with(history: &[Release], release: &Release) -> String {
    let mut all: Vec<Release> = history.iter().filter(|r| r.id != release.id).cloned().collect();
    all.push(release.clone());
    let skip = all.len().saturating_sub(20);
    serde_json::to_string(&all[skip..]).unwrap_or_else(|_| "[]".to_owned())
}

/// Ready pods of a colour, and their names.
async fn ready_pods(
    cluster: &Cluster,
    ns: &str,
    selector: &str,
) -> Result<(usize, Vec<String>), Error> {
    let pods = cluster.pods(ns, selector).await?;
    let ready = pods.iter().filter(|p| app::pod_ready(p)).count();
    Ok((ready, pods.iter().filter_map(|p| p.metadata.name.clone()).collect()))
}

/// Waits for a Deployment's rollout to complete and every pod of `selector`
/// to be ready; `Err` carries why not, at the deadline.
async fn wait_ready(
    cluster: &Cluster,
    app: &AppRef,
    deployment: &str,
    selector: &str,
    deadline: Duration,
    abort_flag: Option<&str>,
) -> Result<Result<Duration, String>, Error> {
    let started = Instant::now();
    let ns = &app.namespace;
    loop {
        let d = cluster.deployment(ns, deployment).await?;
        let pods = cluster.pods(ns, selector).await?;
        let (desired, status) = match &d {
            Some(d) => (
                d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                d.status.clone().unwrap_or_default(),
            ),
            None => return Ok(Err(format!("Deployment {ns}/{deployment} is gone"))),
        };
        let generation = d.as_ref().and_then(|d| d.metadata.generation).unwrap_or(0);
        let observed = status.observed_generation.unwrap_or(0) >= generation;
        let updated = status.updated_replicas.unwrap_or(0);
        let ready_replicas = status.ready_replicas.unwrap_or(0);
        let ready = pods.iter().filter(|p| app::pod_ready(p)).count();
        let total = status.replicas.unwrap_or(0);
        if observed
            && updated == desired
            && ready_replicas == desired
            && total == desired
            && ready == desired as usize
            && pods.len() == desired as usize
        {
            return Ok(Ok(started.elapsed()));
        }
        if let Some(flag) = abort_flag
            && aborted(cluster, app, flag).await?
        {
            return Ok(Err("aborted by `bluegreen-promoter abort`".to_owned()));
        }
        if started.elapsed() >= deadline {
            let unready: Vec<String> =
                pods.iter().filter(|p| !app::pod_ready(p)).map(app::pod_summary).collect();
            return Ok(Err(format!(
                "{ready}/{desired} pods ready after {} s (rollout: {updated} updated, {ready_replicas} ready); {}",
                deadline.as_secs(),
                unready.join("; ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Whether `abort` was asked for since the release began at `since`.
async fn aborted(cluster: &Cluster, app: &AppRef, since: &str) -> Result<bool, Error> {
    let service = cluster.service(&app.namespace, &app.name).await?;
    Ok(service
        .and_then(|s| s.metadata.annotations)
        .and_then(|a| a.get(keys::ABORT).cloned())
        .is_some_and(|at| at.as_str() >= since))
}

/// Waits until the Service's Endpoints hold exactly the ready pods of `selector`.
async fn wait_endpoints(
    cluster: &Cluster,
    app: &AppRef,
    selector: &str,
    deadline: Duration,
) -> Result<Option<Duration>, Error> {
    let started = Instant::now();
    let ns = &app.namespace;
    loop {
        let pods = cluster.pods(ns, selector).await?;
        let want: BTreeSet<String> = pods
            .iter()
            .filter(|p| app::pod_ready(p))
            .filter_map(|p| p.status.as_ref().and_then(|s| s.pod_ip.clone()))
            .collect();
        let have: BTreeSet<String> = cluster
            .endpoints(ns, &app.name)
            .await?
            .and_then(|e| e.subsets)
            .into_iter()
            .flatten()
            .flat_map(|s| s.addresses.unwrap_or_default())
            .map(|a| a.ip)
            .collect();
        if !want.is_empty() && want == have {
            return Ok(Some(started.elapsed()));
        }
        if started.elapsed() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The fingerprint of a Deployment that must not change: generation, spec, labels.
fn fingerprint(d: Option<&Deployment>) -> (Option<i64>, Value, Value) {
    (
        d.and_then(|d| d.metadata.generation),
        d.map_or(Value::Null, |d| serde_json::to_value(&d.spec).unwrap_or(Value::Null)),
        d.map_or(Value::Null, |d| serde_json::to_value(&d.metadata.labels).unwrap_or(Value::Null)),
    )
}

/// The version served before `at`, from the last good answer sent before it.
fn version_before(samples: &[Sample], at: Duration) -> Option<String> {
    samples.iter().filter(|s| s.sent < at && s.ok()).filter_map(|s| s.version.clone()).next_back()
}

/// The first version other than `old` answered after `at`.
fn version_after(samples: &[Sample], at: Duration, old: Option<&str>) -> Option<String> {
    samples
        .iter()
        .filter(|s| s.sent >= at && s.ok())
        .filter_map(|s| s.version.clone())
        .find(|v| Some(v.as_str()) != old)
}

/// How long the prober keeps looking after a switch, at least.
const PROBE_SETTLE: Duration = Duration::from_secs(2);

/// Zero-downtime checks from the prober's samples over `[0, end]`, traffic
/// moving at `moved_at`.
fn traffic_checks(
    report: &mut Report,
    samples: Option<&[Sample]>,
    moved_at: Option<Duration>,
    end: Duration,
) {
    let Some(samples) = samples else {
        let missing = "no prober: pass --active-url (the active Service as clients reach it)";
        report.push_check(Check::not_evaluated("failed-requests", "failed_requests == 0", missing));
        report.push_check(Check::not_evaluated(
            "traffic-moved",
            "traffic moves from old to new at one instant",
            missing,
        ));
        return;
    };
    let (old, new) = match moved_at {
        Some(at) => {
            let old = version_before(samples, at);
            let new = version_after(samples, at, old.as_deref());
            (old, new)
        }
        None => (None, None),
    };
    let sum = prober::summarize(samples, Duration::ZERO, end, old.as_deref(), new.as_deref());
    report.push_measurement(Measurement::new("probe_requests", sum.requests as f64, ""));
    report.push_measurement(Measurement::new("failed_requests", sum.failed as f64, ""));
    report.push_measurement(Measurement::new(
        "longest_gap",
        sum.longest_gap.as_secs_f64() * 1000.0,
        "ms",
    ));
    let versions: Vec<String> = sum.by_version.iter().map(|(v, n)| format!("{v}: {n}")).collect();
    let observed = format!(
        "{} failed of {}; longest gap {} ms; answers {}",
        sum.failed,
        sum.requests,
        sum.longest_gap.as_millis(),
        versions.join(", ")
    );
    if sum.requests == 0 {
        report.push_check(Check::not_evaluated(
            "failed-requests",
            "failed_requests == 0",
            "the prober sent no request",
        ));
    } else {
        report.push_check(Check::from_bool(
            "failed-requests",
            "failed_requests == 0",
            observed,
            sum.failed == 0,
        ));
    }
    let criterion = "traffic moves from old to new at one instant";
    let check = match (moved_at, &old, &new, sum.first_new) {
        (None, ..) => {
            Check::skipped("traffic-moved", criterion, "traffic did not move in this run")
        }
        (Some(_), None, _, _) => Check::not_evaluated(
            "traffic-moved",
            criterion,
            "no good answer before the switch carried the version header (--version-header)",
        ),
        (Some(_), Some(o), None, _) | (Some(_), Some(o), Some(_), None) => Check::fail(
            "traffic-moved",
            criterion,
            format!("every answer after the switch still came from {o}"),
        ),
        (Some(at), Some(o), Some(n), Some(first)) => {
            let last_old =
                sum.last_old.map_or("none".to_owned(), |t| format!("{:.3} s", t.as_secs_f64()));
            let observed = format!(
                "first {n} answer sent at {:.3} s (patch at {:.3} s), last {o} answer sent at {last_old}; \
                 {} {o} answers after the first {n}",
                first.as_secs_f64(),
                at.as_secs_f64(),
                sum.old_after_new
            );
            report.push_measurement(Measurement::new(
                "traffic_moved_after_patch",
                first.saturating_sub(at).as_secs_f64(),
                "s",
            ));
            Check::from_bool("traffic-moved", criterion, observed, sum.old_after_new == 0)
        }
    };
    report.push_check(check);
}

/// A gate that was asked for and did not run because an earlier one failed:
/// not evaluated (the release failed already; this gate says nothing).
fn not_reached(id: &str, criterion: &str, failed: &str) -> Check {
    Check::not_evaluated(id, criterion, format!("not run: gate `{failed}` failed first"))
}

/// The GET health check through the preview: three good answers in a row.
async fn preview_health(url: &str, path: &str, header: &str) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
        .build();
    let client = client.map_err(|e| e.to_string())?;
    let mut versions = BTreeSet::new();
    for _ in 0..3 {
        let answer = client
            .get(format!("{url}{path}"))
            .send()
            .await
            .map_err(|e| format!("GET {url}{path}: {e}"))?;
        if !answer.status().is_success() {
            return Err(format!("GET {url}{path}: {}", answer.status()));
        }
        if let Some(v) = answer.headers().get(header).and_then(|v| v.to_str().ok()) {
            versions.insert(v.to_owned());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let versions: Vec<String> = versions.into_iter().collect();
    Ok(format!(
        "3/3 GET {path} answered 2xx; version {}",
        if versions.is_empty() { "-".to_owned() } else { versions.join(", ") }
    ))
}

/// Runs the smoke Job to completion; `Ok(Ok(detail))` when it succeeded.
async fn smoke_job(
    ctx: &Context,
    app: &AppRef,
    job: &Job,
    id: &str,
    deadline: Duration,
) -> Result<Result<String, String>, Error> {
    let mut job = job.clone();
    let base = job.metadata.name.clone().unwrap_or_else(|| format!("{}-smoke", app.name));
    let name = format!("{base}-{id}");
    job.metadata.name = Some(name.clone());
    job.metadata.namespace = Some(app.namespace.clone());
    ctx.cluster.create_job(&app.namespace, &job).await?;
    let started = Instant::now();
    let outcome = loop {
        let status = ctx
            .cluster
            .job(&app.namespace, &name)
            .await?
            .and_then(|j| j.status)
            .unwrap_or_default();
        if status.succeeded.unwrap_or(0) >= 1 {
            break Ok(format!("Job {name} succeeded in {:.1} s", started.elapsed().as_secs_f64()));
        }
        let failed_condition = status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Failed" && c.status == "True");
        if failed_condition {
            break Err(format!("Job {name} failed ({} failed pods)", status.failed.unwrap_or(0)));
        }
        if started.elapsed() >= deadline {
            break Err(format!("Job {name} did not complete within {} s", deadline.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    ctx.cluster.delete_job(&app.namespace, &name).await?;
    Ok(outcome)
}

/// What the analysis gate concluded.
fn analysis_check(
    id: &str,
    criterion: &str,
    results: &[gates::MetricResult],
    samples: &str,
) -> Check {
    let lines: Vec<String> = results
        .iter()
        .map(|r| {
            let verdict = match r.met {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "not evaluated",
            };
            format!("{} {verdict}: {}", r.name, r.detail)
        })
        .collect();
    let observed = format!("{samples}; {}", lines.join("; "));
    if results.iter().any(|r| r.met == Some(false)) {
        Check::fail(id, criterion, observed)
    } else if results.iter().any(|r| r.met.is_none()) {
        Check::not_evaluated(id, criterion, observed)
    } else {
        Check::pass(id, criterion, observed)
    }
}

/// The pre-switch analysis: preview traffic for the window, then each metric.
async fn pre_switch_analysis(
    file: &AnalysisFile,
    prometheus: &str,
    candidate: &str,
    stable: &str,
    probe: &ProbeOptions,
    origin: Instant,
) -> Check {
    let criterion = format!("{candidate} meets every metric against {stable} with enough samples");
    let load = probe.preview_url.as_ref().map(|url| {
        Prober::start(
            format!("{url}{}", probe.path),
            probe.rate,
            probe.version_header.clone(),
            origin,
        )
    });
    let window = file.window();
    let started = Instant::now();
    let client =
        reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
    tokio::time::sleep(window).await;
    // Enough samples for both colours, waiting up to one more window.
    let counts = loop {
        let mut counts = Vec::new();
        for colour in [candidate, stable] {
            let q = gates::substitute(&file.samples.query, colour, started.elapsed());
            counts.push((colour, gates::query(&client, prometheus, &q).await));
        }
        let enough = counts.iter().all(|(_, c)| matches!(c, Ok(Some(n)) if *n >= file.samples.min));
        if enough || started.elapsed() >= window * 2 {
            break counts;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    if let Some(load) = load {
        load.finish().await;
    }
    let samples: Vec<String> = counts
        .iter()
        .map(|(c, n)| match n {
            Ok(Some(n)) => format!("{c} {n:.0} samples"),
            Ok(None) => format!("{c} no samples"),
            Err(e) => format!("{c}: {e}"),
        })
        .collect();
    let samples = samples.join(", ");
    let short = counts.iter().any(|(_, c)| !matches!(c, Ok(Some(n)) if *n >= file.samples.min));
    if short {
        return Check::not_evaluated(
            "analysis",
            criterion,
            format!(
                "{samples}; fewer than {} per colour (is there traffic to both? --preview-url, --active-url)",
                file.samples.min
            ),
        );
    }
    let results =
        gates::analyse(file, prometheus, candidate, Some(stable), started.elapsed()).await;
    analysis_check("analysis", &criterion, &results, &samples)
}

/// `deploy APP`: the whole release. Returns the report; its checks decide the exit code.
pub async fn deploy(ctx: &Context, o: &DeployOptions) -> Result<Report, Error> {
    let origin = Instant::now();
    let app = &o.app;
    let ns = app.namespace.as_str();
    let cluster = &ctx.cluster;
    let mut report = report_for(app);
    let state = AppState::read(cluster, app).await?;
    let stable = state.active.clone();
    let candidate = app::other(&stable)?.to_owned();
    let stable_selector = state.colour_selector(app, &stable);
    let candidate_selector = state.colour_selector(app, &candidate);
    let (stable_ready, _) = ready_pods(cluster, ns, &stable_selector).await?;
    if stable_ready == 0 {
        return Err(Error::Usage(format!(
            "Service {ns}/{} selects {stable_selector}, which matches no ready pod: nothing is serving to release beside",
            app.name
        )));
    }
    let revision = state.history.last().map_or(1, |r| r.revision + 1);
    let (green, created) =
        app::green_deployment(&state, app, &o.change, o.preview_replicas, revision)?;
    let green_name = green.metadata.name.clone().unwrap_or_default();
    let images = green.spec.as_ref().map(|s| app::images(&s.template)).unwrap_or_default();
    let started_at = Timestamp::now().as_str().to_owned();
    let mut release = Release {
        revision,
        id: o.id.clone(),
        colour: candidate.clone(),
        images: images.clone(),
        started: started_at.clone(),
        outcome: "deploying".to_owned(),
        deploy_seconds: None,
    };
    let blue_before = fingerprint(state.deployment(&stable));
    let entry = ctx.entry(&o.id, app, &stable, &candidate, "begin");

    if cluster.dry_run() {
        return dry_run_deploy(ctx, o, &state, &green, created, &release, &stable, &candidate)
            .await;
    }

    ctx.log(entry.clone())?;
    let prober = o.probe.active_url.as_ref().map(|url| {
        Prober::start(
            format!("{url}{}", o.probe.path),
            o.probe.rate,
            o.probe.version_header.clone(),
            origin,
        )
    });
    // A stale abort from an earlier release must not stop this one.
    if state.annotation(keys::ABORT).is_some() {
        cluster
            .patch_service(ns, &app.name, json!({"metadata": {"annotations": {keys::ABORT: null}}}))
            .await?;
    }
    if created {
        cluster.create_deployment(ns, &green).await?;
    } else {
        cluster.replace_deployment(ns, &green).await?;
    }
    match &state.preview {
        Some(_) => {
            let patch = json!({"spec": {"selector": {app.colour_label.clone(): candidate}}});
            cluster.patch_service(ns, &app.preview, patch).await?;
        }
        None => cluster.create_service(ns, &app::preview_service(&state, app, &candidate)).await?,
    }
    ctx.log(Entry { step: "green-applied".into(), ..entry.clone() })?;

    // The gates, in order; the first that does not pass stops the release.
    let mut failed: Option<&'static str> = None;
    let ready = wait_ready(
        cluster,
        app,
        &green_name,
        &candidate_selector,
        o.ready_timeout,
        Some(&started_at),
    )
    .await?;
    let criterion = format!(
        "{candidate}'s rollout complete and every pod ready within {} s",
        o.ready_timeout.as_secs()
    );
    let check = match ready {
        Ok(took) => {
            report.push_measurement(Measurement::new("ready_seconds", took.as_secs_f64(), "s"));
            Check::pass("green-ready", criterion, format!("ready in {:.1} s", took.as_secs_f64()))
        }
        Err(why) => {
            failed = Some("green-ready");
            Check::fail("green-ready", criterion, why)
        }
    };
    report.push_check(check);

    let criterion = format!("GET {} through the preview Service answers 2xx", o.health_path);
    report.push_check(match (failed, &o.probe.preview_url) {
        (Some(f), _) => not_reached("preview-health", &criterion, f),
        (None, None) => {
            failed = Some("preview-health");
            Check::not_evaluated(
                "preview-health",
                criterion,
                "pass --preview-url (the preview Service as the promoter reaches it)",
            )
        }
        (None, Some(url)) => {
            match preview_health(url, &o.health_path, &o.probe.version_header).await {
                Ok(seen) => Check::pass("preview-health", criterion, seen),
                Err(why) => {
                    failed = Some("preview-health");
                    Check::fail("preview-health", criterion, why)
                }
            }
        }
    });

    let criterion = "every smoke request meets its expectations through the preview";
    report.push_check(match (failed, &o.smoke, &o.probe.preview_url) {
        (Some(f), Some(_), _) => not_reached("smoke", criterion, f),
        (_, None, _) => Check::skipped("smoke", criterion, "no --smoke file"),
        (None, Some(_), None) => {
            failed = Some("smoke");
            Check::not_evaluated("smoke", criterion, "pass --preview-url")
        }
        (None, Some(file), Some(url)) => {
            let (n, failures) = gates::run_smoke(file, url).await;
            if failures.is_empty() {
                Check::pass("smoke", criterion, format!("{n}/{n} requests met"))
            } else {
                failed = Some("smoke");
                Check::fail(
                    "smoke",
                    criterion,
                    format!("{} of {n} failed: {}", failures.len(), failures.join("; ")),
                )
            }
        }
    });

    let criterion = "the smoke Job runs to completion";
    report.push_check(match (failed, &o.smoke_job) {
        (_, None) => Check::skipped("smoke-job", criterion, "no --smoke-job manifest"),
        (Some(f), Some(_)) => not_reached("smoke-job", criterion, f),
        (None, Some(job)) => match smoke_job(ctx, app, job, &o.id, o.command_timeout).await? {
            Ok(seen) => Check::pass("smoke-job", criterion, seen),
            Err(why) => {
                failed = Some("smoke-job");
                Check::fail("smoke-job", criterion, why)
            }
        },
    });

    let criterion = "a short load-tester run through the preview meets its criteria";
    let check = match (failed, &o.smoke_load, &o.probe.preview_url) {
        (_, None, _) => Check::skipped("smoke-load", criterion, "no --smoke-load"),
        (Some(f), Some(_), _) => not_reached("smoke-load", criterion, f),
        (None, Some(_), None) => {
            Check::not_evaluated("smoke-load", criterion, "pass --preview-url")
        }
        (None, Some((binary, extra)), Some(url)) => {
            gates::run_load_tester(binary, url, extra, o.command_timeout, criterion).await
        }
    };
    if failed.is_none()
        && check.verdict != shared_types::Verdict::Pass
        && check.verdict != shared_types::Verdict::Skipped
    {
        failed = Some("smoke-load");
    }
    report.push_check(check);

    let criterion = "the new colour meets every metric against the serving one";
    report.push_check(match (failed, &o.analysis, &o.prometheus) {
        (_, None, _) => Check::skipped("analysis", criterion, "no --analysis file"),
        (Some(f), Some(_), _) => not_reached("analysis", criterion, f),
        (None, Some(_), None) => {
            failed = Some("analysis");
            Check::not_evaluated(
                "analysis",
                criterion,
                "no Prometheus: pass --prometheus URL or set `prometheus:` in the analysis file",
            )
        }
        (None, Some(file), Some(prom)) => {
            let check =
                pre_switch_analysis(file, prom, &candidate, &stable, &o.probe, origin).await;
            if check.verdict != shared_types::Verdict::Pass {
                failed = Some("analysis");
            }
            check
        }
    });

    let criterion = "the pre-switch command (schema compatibility, migration) succeeds";
    report.push_check(match (failed, &o.pre_switch_cmd) {
        (_, None) => Check::skipped("pre-switch", criterion, "no --pre-switch-cmd"),
        (Some(f), Some(_)) => not_reached("pre-switch", criterion, f),
        (None, Some(cmd)) => {
            let env = [
                ("BLUEGREEN_APP", app.name.clone()),
                ("BLUEGREEN_NAMESPACE", app.namespace.clone()),
                ("BLUEGREEN_COLOUR", candidate.clone()),
                ("BLUEGREEN_STABLE_COLOUR", stable.clone()),
                ("BLUEGREEN_PREVIEW_URL", o.probe.preview_url.clone().unwrap_or_default()),
                ("BLUEGREEN_IMAGES", images.join(" ")),
            ];
            match gates::run_command(cmd, &env, o.command_timeout).await {
                Ok((true, out)) => Check::pass("pre-switch", criterion, out),
                Ok((false, out)) => {
                    failed = Some("pre-switch");
                    Check::fail("pre-switch", criterion, out)
                }
                Err(why) => {
                    failed = Some("pre-switch");
                    Check::error("pre-switch", criterion, why)
                }
            }
        }
    });
    if failed.is_none() && aborted(cluster, app, &started_at).await? {
        failed = Some("abort");
        report.push_check(Check::fail(
            "aborted",
            "nobody aborted the release",
            "`bluegreen-promoter abort` was run",
        ));
    }

    let blue_now = cluster
        .deployment(ns, &state.deployments[&stable].metadata.name.clone().unwrap_or_default())
        .await?;
    let untouched = fingerprint(blue_now.as_ref()) == blue_before;
    report.push_check(Check::from_bool(
        "blue-untouched",
        format!("{stable}'s Deployment (spec, generation, labels) unchanged until the switch"),
        format!(
            "generation {:?} before, {:?} at the switch",
            blue_before.0,
            blue_now.as_ref().and_then(|d| d.metadata.generation)
        ),
        untouched,
    ));

    if let Some(gate) = failed {
        release.outcome = format!("failed: {gate}");
        teardown(ctx, o, &green_name, &stable).await?;
        let end = origin.elapsed();
        let samples = match prober {
            Some(p) => Some(p.finish().await),
            None => None,
        };
        traffic_checks(&mut report, samples.as_deref(), None, end);
        write_history(cluster, app, &state.history, &release).await?;
        ctx.end(entry, &release.outcome)?;
        finish(&mut report, cluster, origin);
        return Ok(report);
    }

    // The switch: one merge patch of the active Service's selector.
    ctx.log(Entry { step: "switch".into(), ..entry.clone() })?;
    let switch_at = origin.elapsed();
    release.outcome = "promoted".to_owned();
    release.deploy_seconds = Some(switch_at.as_secs_f64());
    let patch = json!({
        "spec": {"selector": {app.colour_label.clone(): candidate}},
        "metadata": {"annotations": {keys::PREVIOUS: stable, keys::HISTORY: history_with(&state.history, &release)}},
    });
    cluster.patch_service(ns, &app.name, patch).await?;
    let endpoints =
        wait_endpoints(cluster, app, &candidate_selector, Duration::from_secs(30)).await?;
    ctx.log(Entry { step: "switched".into(), ..entry.clone() })?;
    let check = match endpoints {
        Some(t) => {
            report.push_measurement(Measurement::new("endpoints_seconds", t.as_secs_f64(), "s"));
            Check::pass(
                "switch",
                "the active Service's endpoints are the new colour's pods",
                format!("in {:.2} s after the patch", t.as_secs_f64()),
            )
        }
        None => Check::fail(
            "switch",
            "the active Service's endpoints are the new colour's pods",
            "not within 30 s of the patch",
        ),
    };
    report.push_check(check);
    report.push_measurement(Measurement::new("deploy_seconds", switch_at.as_secs_f64(), "s"));
    report.push_check(Check::from_bool(
        "deploy-time",
        format!("deploy_time < {}m", o.deploy_budget.as_secs() / 60),
        format!("{:.1} s from deploy to the switch", switch_at.as_secs_f64()),
        switch_at < o.deploy_budget,
    ));

    // Post-promotion watch: a failure switches back at once.
    let watch = watch_after_switch(o, &candidate, switch_at, origin, cluster, &started_at).await;
    let mut samples_opt = None;
    let (post_check, rolled_back) = match watch {
        Ok(detail) => (
            Check::pass(
                "post-promotion",
                "the new colour holds every metric while watched",
                detail,
            ),
            false,
        ),
        Err(why) => {
            ctx.log(Entry { step: "switch-back".into(), ..entry.clone() })?;
            let back = json!({"spec": {"selector": {app.colour_label.clone(): stable}}, "metadata": {"annotations": {keys::PREVIOUS: candidate}}});
            cluster.patch_service(ns, &app.name, back).await?;
            let took =
                wait_endpoints(cluster, app, &stable_selector, Duration::from_secs(30)).await?;
            release.outcome = "rolled-back: post-promotion".to_owned();
            let when = took.map_or("endpoints not back within 30 s".to_owned(), |t| {
                format!("endpoints back in {:.2} s", t.as_secs_f64())
            });
            (
                Check::fail(
                    "post-promotion",
                    "the new colour holds every metric while watched",
                    format!("{why}; switched back to {stable} ({when})"),
                ),
                true,
            )
        }
    };
    // The prober looks a moment past the switch even without a watch: the
    // Service proxies follow the Endpoints a little after the API has them.
    if prober.is_some() && !rolled_back {
        let settled = switch_at + PROBE_SETTLE;
        tokio::time::sleep(settled.saturating_sub(origin.elapsed())).await;
    }
    let end = origin.elapsed();
    if let Some(p) = prober {
        samples_opt = Some(p.finish().await);
    }
    // The prober's failures during the watch count too (they are users' errors).
    if !rolled_back
        && let Some(samples) = &samples_opt
        && o.watch_for > Duration::ZERO
    {
        let after: Vec<&Sample> = samples.iter().filter(|s| s.sent >= switch_at).collect();
        let bad = after.iter().filter(|s| !s.ok()).count();
        if bad > 0 {
            // Already switched for good by the time we see it: report, do not hide.
            report.push_check(Check::fail(
                "post-promotion-errors",
                "no failed request after the switch",
                format!("{bad} of {} failed", after.len()),
            ));
        }
    }
    report.push_check(post_check);
    traffic_checks(&mut report, samples_opt.as_deref(), Some(switch_at), end);

    if !rolled_back {
        scale_down_later(ctx, o, &state, &stable).await?;
    }
    write_history(cluster, app, &state.history, &release).await?;
    ctx.end(entry, &release.outcome)?;
    finish(&mut report, cluster, origin);
    Ok(report)
}

/// The post-promotion watch; `Err` says what failed.
async fn watch_after_switch(
    o: &DeployOptions,
    candidate: &str,
    switch_at: Duration,
    origin: Instant,
    cluster: &Cluster,
    started_at: &str,
) -> Result<String, String> {
    let app = &o.app;
    if o.watch_for.is_zero() {
        return Ok("no watch (--watch-for 0)".to_owned());
    }
    let interval = o.analysis.as_ref().map_or(Duration::from_secs(5), AnalysisFile::interval);
    let mut looks = 0;
    while origin.elapsed() < switch_at + o.watch_for {
        tokio::time::sleep(
            interval.min((switch_at + o.watch_for).saturating_sub(origin.elapsed())),
        )
        .await;
        if aborted(cluster, app, started_at).await.unwrap_or(false) {
            return Err("aborted by `bluegreen-promoter abort`".to_owned());
        }
        if let (Some(file), Some(prom)) = (&o.analysis, &o.prometheus) {
            let since = origin.elapsed().saturating_sub(switch_at);
            let results = gates::analyse(file, prom, candidate, None, since).await;
            looks += 1;
            if let Some(bad) = results.iter().find(|r| r.met == Some(false)) {
                return Err(format!(
                    "after {:.0} s: {} {}",
                    since.as_secs_f64(),
                    bad.name,
                    bad.detail
                ));
            }
        }
    }
    Ok(if o.analysis.is_some() {
        format!("{looks} looks over {} s, every metric met", o.watch_for.as_secs())
    } else {
        format!("watched {} s; no --analysis, so no metric was looked at", o.watch_for.as_secs())
    })
}

/// A failed gate: the new colour scaled to 0 (unless kept), the preview back on the serving colour.
async fn teardown(
    ctx: &Context,
    o: &DeployOptions,
    green: &str,
    stable: &str,
) -> Result<(), Error> {
    let app = &o.app;
    if !o.keep_preview {
        ctx.cluster
            .patch_deployment(&app.namespace, green, json!({"spec": {"replicas": 0}}))
            .await?;
        let patch = json!({"spec": {"selector": {app.colour_label.clone(): stable}}});
        ctx.cluster.patch_service(&app.namespace, &app.preview, patch).await?;
    }
    Ok(())
}

/// The old colour's scale-down: now, or recorded as due on the Service.
async fn scale_down_later(
    ctx: &Context,
    o: &DeployOptions,
    state: &AppState,
    old: &str,
) -> Result<(), Error> {
    if o.keep_old {
        return Ok(());
    }
    let app = &o.app;
    if o.scale_down_delay.is_zero() {
        let d = &state.deployments[old];
        return scale_to_zero(&ctx.cluster, app, d).await;
    }
    let at = Timestamp::from_system_time(std::time::SystemTime::now() + o.scale_down_delay);
    let value = json!({"colour": old, "at": at.as_str()}).to_string();
    ctx.cluster
        .patch_service(
            &app.namespace,
            &app.name,
            json!({"metadata": {"annotations": {keys::SCALE_DOWN: value}}}),
        )
        .await
}

async fn scale_to_zero(cluster: &Cluster, app: &AppRef, d: &Deployment) -> Result<(), Error> {
    let name = d.metadata.name.clone().unwrap_or_default();
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let patch = json!({"spec": {"replicas": 0}, "metadata": {"annotations": {keys::REPLICAS: replicas.to_string()}}});
    cluster.patch_deployment(&app.namespace, &name, patch).await
}

async fn write_history(
    cluster: &Cluster,
    app: &AppRef,
    history: &[Release],
    release: &Release,
) -> Result<(), Error> {
    let patch =
        json!({"metadata": {"annotations": {keys::HISTORY: history_with(history, release)}}});
    cluster.patch_service(&app.namespace, &app.name, patch).await
}

fn finish(report: &mut Report, cluster: &Cluster, origin: Instant) {
    report.push_measurement(Measurement::new("api_calls", cluster.calls() as f64, ""));
    report.push_measurement(Measurement::new("run_seconds", origin.elapsed().as_secs_f64(), "s"));
    report.finish();
}

/// `--dry-run`: every change the release would send, in order, nothing sent.
#[allow(clippy::too_many_arguments)] // one call site
async fn dry_run_deploy(
    ctx: &Context,
    o: &DeployOptions,
    state: &AppState,
    green: &Deployment,
    created: bool,
    release: &Release,
    stable: &str,
    candidate: &str,
) -> Result<Report, Error> {
    let app = &o.app;
    let ns = app.namespace.as_str();
    let cluster = &ctx.cluster;
    if created {
        cluster.create_deployment(ns, green).await?;
    } else {
        cluster.replace_deployment(ns, green).await?;
    }
    match &state.preview {
        Some(_) => {
            cluster
                .patch_service(
                    ns,
                    &app.preview,
                    json!({"spec": {"selector": {app.colour_label.clone(): candidate}}}),
                )
                .await?
        }
        None => cluster.create_service(ns, &app::preview_service(state, app, candidate)).await?,
    }
    let patch = json!({
        "spec": {"selector": {app.colour_label.clone(): candidate}},
        "metadata": {"annotations": {keys::PREVIOUS: stable, keys::HISTORY: history_with(&state.history, release)}},
    });
    cluster.patch_service(ns, &app.name, patch).await?;
    scale_down_later(ctx, o, state, stable).await?;
    plan_report(
        app,
        cluster,
        format!(
            "release {} of {}: {stable} → {candidate}, gates then switch",
            release.revision, app.name
        ),
    )
}

fn plan_report(app: &AppRef, cluster: &Cluster, what: String) -> Result<Report, Error> {
    let mut report = report_for(app);
    let changes = cluster.changes();
    let lines: Vec<String> = changes.iter().map(|c| format!("{} {}", c.verb, c.object)).collect();
    report.push_check(Check::pass(
        "plan",
        "--dry-run: the plan is printed and nothing is sent",
        format!("{what}; {} changes: {}", changes.len(), lines.join(", ")),
    ));
    report.data.insert("changes".to_owned(), serde_json::to_value(&changes).unwrap_or(Value::Null));
    report.push_measurement(Measurement::new("api_calls", cluster.calls() as f64, ""));
    report.finish();
    Ok(report)
}

/// `rollback`'s settings.
#[derive(Debug, Clone)]
pub struct RollbackOptions {
    /// The app.
    pub app: AppRef,
    /// The prober.
    pub probe: ProbeOptions,
    /// Deadline for a scaled-down colour to come back.
    pub ready_timeout: Duration,
    /// The launch plan's rollback budget.
    pub budget: Duration,
    /// The run's id.
    pub id: String,
}

/// `rollback APP`: back to the colour that served before, one selector patch
/// while it is still scaled (no analysis, no new pod); scaled up first otherwise.
pub async fn rollback(ctx: &Context, o: &RollbackOptions) -> Result<Report, Error> {
    let origin = Instant::now();
    let app = &o.app;
    let ns = app.namespace.as_str();
    let cluster = &ctx.cluster;
    let mut report = report_for(app);
    let state = AppState::read(cluster, app).await?;
    let current = state.active.clone();
    let target =
        state.previous().unwrap_or_else(|| app::other(&current).unwrap_or("blue").to_owned());
    if target == current {
        return Err(Error::Usage(format!(
            "{} already serves {current}: nothing to roll back to",
            app.name
        )));
    }
    let deployment = state.deployment(&target).cloned().ok_or_else(|| {
        Error::Usage(format!("no {target} Deployment of {} to roll back to", app.name))
    })?;
    let target_name = deployment.metadata.name.clone().unwrap_or_default();
    let target_selector = state.colour_selector(app, &target);
    let all_selector = app::selector_string(&state.base_selector);
    let (_, pods_before) = ready_pods(cluster, ns, &all_selector).await?;
    let desired = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let (ready, _) = ready_pods(cluster, ns, &target_selector).await?;
    let scaled_down = desired == 0 || ready == 0;
    let entry = ctx.entry(&o.id, app, &current, &target, "begin");
    let release = Release {
        revision: state.history.last().map_or(1, |r| r.revision + 1),
        id: o.id.clone(),
        colour: target.clone(),
        images: deployment.spec.as_ref().map(|s| app::images(&s.template)).unwrap_or_default(),
        started: Timestamp::now().as_str().to_owned(),
        outcome: "rollback".to_owned(),
        deploy_seconds: None,
    };
    let patch = json!({
        "spec": {"selector": {app.colour_label.clone(): target}},
        "metadata": {"annotations": {keys::PREVIOUS: current, keys::HISTORY: history_with(&state.history, &release), keys::SCALE_DOWN: null}},
    });
    if cluster.dry_run() {
        if scaled_down {
            let replicas = deployment
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(keys::REPLICAS))
                .and_then(|r| r.parse::<i32>().ok())
                .unwrap_or(1);
            cluster
                .patch_deployment(ns, &target_name, json!({"spec": {"replicas": replicas}}))
                .await?;
        }
        cluster.patch_service(ns, &app.name, patch).await?;
        return plan_report(
            app,
            cluster,
            format!("rollback of {}: {current} → {target}", app.name),
        );
    }
    ctx.log(entry.clone())?;
    let prober = o.probe.active_url.as_ref().map(|url| {
        Prober::start(
            format!("{url}{}", o.probe.path),
            o.probe.rate,
            o.probe.version_header.clone(),
            origin,
        )
    });
    // A short look at the current version first, so the switch has a
    // before; not counted in the rollback time.
    let reading = origin.elapsed();
    if prober.is_some() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let acting = origin.elapsed();
    let clock = |t: Duration| t.saturating_sub(acting) + reading;
    if scaled_down {
        let replicas = deployment
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(keys::REPLICAS))
            .and_then(|r| r.parse::<i32>().ok())
            .unwrap_or(1);
        cluster.patch_deployment(ns, &target_name, json!({"spec": {"replicas": replicas}})).await?;
        let up =
            wait_ready(cluster, app, &target_name, &target_selector, o.ready_timeout, None).await?;
        report.push_check(match up {
            Ok(t) => Check::pass(
                "scaled-up",
                format!("{target} scaled back up and ready"),
                format!("{replicas} pods ready in {:.1} s", t.as_secs_f64()),
            ),
            Err(why) => {
                let end = origin.elapsed();
                let samples = match prober {
                    Some(p) => Some(p.finish().await),
                    None => None,
                };
                report.push_check(Check::fail(
                    "scaled-up",
                    format!("{target} scaled back up and ready"),
                    why,
                ));
                traffic_checks(&mut report, samples.as_deref(), None, end);
                ctx.end(entry, "failed: scale-up")?;
                finish(&mut report, cluster, origin);
                return Ok(report);
            }
        });
    }
    ctx.log(Entry { step: "switch".into(), ..entry.clone() })?;
    let switch_at = origin.elapsed();
    cluster.patch_service(ns, &app.name, patch).await?;
    let endpoints = wait_endpoints(cluster, app, &target_selector, Duration::from_secs(30)).await?;
    ctx.log(Entry { step: "switched".into(), ..entry.clone() })?;
    // Watch the traffic settle for a moment after the endpoints moved.
    let traffic_back = match &prober {
        Some(_) => {
            tokio::time::sleep(PROBE_SETTLE).await;
            None
        }
        None => endpoints,
    };
    let end = origin.elapsed();
    let samples = match prober {
        Some(p) => Some(p.finish().await),
        None => None,
    };
    // Rollback time: from the command to the first answer from the target colour.
    let rollback_time = match &samples {
        Some(s) => {
            let old = version_before(s, switch_at);
            let new = version_after(s, switch_at, old.as_deref());
            s.iter()
                .find(|x| x.sent >= switch_at && x.ok() && x.version.is_some() && x.version == new)
                .map(|x| clock(x.done))
        }
        None => traffic_back.map(|t| clock(switch_at + t)),
    };
    let criterion = format!("rollback_time < {}m", o.budget.as_secs() / 60);
    let check = match rollback_time {
        Some(t) => {
            report.push_measurement(Measurement::new("rollback_seconds", t.as_secs_f64(), "s"));
            Check::from_bool(
                "rollback-time",
                criterion,
                format!(
                    "{:.2} s from rollback to the first answer from {target} (reading the app, any scale-up, the patch)",
                    t.as_secs_f64()
                ),
                t < o.budget,
            )
        }
        None => Check::fail(
            "rollback-time",
            criterion,
            format!("no answer from {target} seen (endpoints moved: {})", endpoints.is_some()),
        ),
    };
    report.push_check(check);
    if let Some(t) = endpoints {
        report.push_measurement(Measurement::new("endpoints_seconds", t.as_secs_f64(), "s"));
    }
    let (_, pods_after) = ready_pods(cluster, ns, &all_selector).await?;
    let before: BTreeSet<&String> = pods_before.iter().collect();
    let new_pods: Vec<&String> = pods_after.iter().filter(|p| !before.contains(p)).collect();
    let criterion = "a rollback within the scale-down delay creates no pod";
    report.push_check(if scaled_down {
        Check::skipped(
            "no-new-pods",
            criterion,
            format!("{target} had been scaled down: its pods were started again"),
        )
    } else {
        Check::from_bool(
            "no-new-pods",
            criterion,
            format!("{} pods before, {} new after", pods_before.len(), new_pods.len()),
            new_pods.is_empty(),
        )
    });
    traffic_checks(&mut report, samples.as_deref(), Some(switch_at), end);
    ctx.end(entry, "rolled back")?;
    finish(&mut report, cluster, origin);
    Ok(report)
}

/// `abort APP`: a release not yet switched stops at its next look; the new
/// colour is scaled to 0 and the preview points back at the serving colour.
pub async fn abort(ctx: &Context, app: &AppRef) -> Result<Report, Error> {
    let origin = Instant::now();
    let cluster = &ctx.cluster;
    let state = AppState::read(cluster, app).await?;
    let idle = app::other(&state.active)?;
    let ns = app.namespace.as_str();
    let now = Timestamp::now().as_str().to_owned();
    cluster
        .patch_service(ns, &app.name, json!({"metadata": {"annotations": {keys::ABORT: now}}}))
        .await?;
    if let Some(d) = state.deployment(idle) {
        let name = d.metadata.name.clone().unwrap_or_default();
        cluster.patch_deployment(ns, &name, json!({"spec": {"replicas": 0}})).await?;
    }
    if state.preview.is_some() {
        cluster
            .patch_service(
                ns,
                &app.preview,
                json!({"spec": {"selector": {app.colour_label.clone(): state.active}}}),
            )
            .await?;
    }
    if cluster.dry_run() {
        return plan_report(app, cluster, format!("abort of {}'s release of {idle}", app.name));
    }
    let mut report = report_for(app);
    let (ready, _) = ready_pods(cluster, ns, &state.colour_selector(app, &state.active)).await?;
    report.push_check(Check::from_bool(
        "abort",
        "the serving colour keeps serving and the new one is stopped",
        format!("{} serves with {ready} ready pods; {idle} scaled to 0", state.active),
        ready > 0,
    ));
    finish(&mut report, cluster, origin);
    Ok(report)
}

/// `scale-down APP`: performs a scale-down that is due (run it from cron,
/// or after the delay); one not yet due is reported with its time.
pub async fn scale_down(ctx: &Context, app: &AppRef, now_anyway: bool) -> Result<Report, Error> {
    let origin = Instant::now();
    let cluster = &ctx.cluster;
    let state = AppState::read(cluster, app).await?;
    let mut report = report_for(app);
    let criterion = "the old colour is scaled down once its delay has passed";
    let pending: Option<Value> =
        state.annotation(keys::SCALE_DOWN).and_then(|v| serde_json::from_str(v).ok());
    let Some(pending) = pending else {
        report.push_check(Check::pass("scale-down", criterion, "nothing pending"));
        finish(&mut report, cluster, origin);
        return Ok(report);
    };
    let colour = pending["colour"].as_str().unwrap_or_default().to_owned();
    let at = pending["at"].as_str().unwrap_or_default().to_owned();
    if colour == state.active {
        cluster
            .patch_service(
                &app.namespace,
                &app.name,
                json!({"metadata": {"annotations": {keys::SCALE_DOWN: null}}}),
            )
            .await?;
        report.push_check(Check::pass(
            "scale-down",
            criterion,
            format!("{colour} serves again (rolled back): its scale-down is cancelled"),
        ));
    } else if now_anyway || at.as_str() <= Timestamp::now().as_str() {
        if let Some(d) = state.deployment(&colour) {
            scale_to_zero(cluster, app, d).await?;
        }
        cluster
            .patch_service(
                &app.namespace,
                &app.name,
                json!({"metadata": {"annotations": {keys::SCALE_DOWN: null}}}),
            )
            .await?;
        report.push_check(Check::pass(
            "scale-down",
            criterion,
            format!("{colour} scaled to 0 (due at {at})"),
        ));
    } else {
        report.push_check(Check::pass(
            "scale-down",
            criterion,
            format!("{colour} stays scaled for an instant rollback until {at}"),
        ));
    }
    if cluster.dry_run() {
        return plan_report(app, cluster, format!("scale-down of {}'s {colour}", app.name));
    }
    finish(&mut report, cluster, origin);
    Ok(report)
}

/// `recover`: every release the journal holds without an end is brought to
/// a consistent state: the active Service selects ready pods, the stable
/// colour preferred (a release whose watch never finished is not proven).
pub async fn recover(
    journal: &Journal,
    connect: impl AsyncFn(&Entry) -> Result<Cluster, Error>,
) -> Result<Report, Error> {
    let origin = Instant::now();
    let outstanding = journal.outstanding()?;
    let mut report = Report::new(
        "bluegreen-promoter",
        env!("CARGO_PKG_VERSION"),
        journal.path().display().to_string(),
    );
    report.push_check(Check::pass(
        "journal-read",
        "the journal is read and every unfinished release found",
        format!("{} unfinished release(s) in {}", outstanding.len(), journal.path().display()),
    ));
    let mut calls = 0;
    for entries in outstanding {
        let Some(last) = entries.last().cloned() else { continue };
        let cluster = connect(&last).await?;
        let ctx = Context { cluster: cluster.clone(), journal: journal.clone() };
        let app = AppRef {
            namespace: last.namespace.clone(),
            name: last.app.clone(),
            preview: last.preview.clone().unwrap_or_else(|| format!("{}-preview", last.app)),
            colour_label: last.colour_label.clone(),
        };
        let id = format!("release/{}", last.release);
        let criterion =
            format!("{}: the active Service selects ready pods after recovery", app.name);
        let state = AppState::read(&cluster, &app).await?;
        let ns = app.namespace.as_str();
        let stable_sel = state.colour_selector(&app, &last.stable);
        let (stable_ready, _) = ready_pods(&cluster, ns, &stable_sel).await?;
        let steps: Vec<&str> = entries.iter().map(|e| e.step.as_str()).collect();
        let outcome = if state.active == last.candidate && stable_ready > 0 {
            let patch = json!({"spec": {"selector": {app.colour_label.clone(): last.stable}}, "metadata": {"annotations": {keys::PREVIOUS: last.candidate}}});
            cluster.patch_service(ns, &app.name, patch).await?;
            format!(
                "switched back to {}: the release of {} stopped after `{}` before its watch finished",
                last.stable,
                last.candidate,
                steps.join(" → ")
            )
        } else if state.active == last.candidate {
            format!("kept {}: {} has no ready pod to go back to", last.candidate, last.stable)
        } else {
            if let Some(d) = state.deployment(&last.candidate)
                && last.step != "begin"
            {
                let name = d.metadata.name.clone().unwrap_or_default();
                cluster.patch_deployment(ns, &name, json!({"spec": {"replicas": 0}})).await?;
            }
            format!(
                "{} kept serving; the unswitched {} was scaled to 0 (steps: {})",
                last.stable,
                last.candidate,
                steps.join(" → ")
            )
        };
        calls += cluster.calls();
        if cluster.dry_run() {
            report.push_check(Check::pass(id, criterion, format!("would be: {outcome}")));
            continue;
        }
        let serving = AppState::read(&cluster, &app).await?;
        let (ready, _) =
            ready_pods(&cluster, ns, &serving.colour_selector(&app, &serving.active)).await?;
        if let Some(mut record) = serving.history.iter().find(|r| r.id == last.release).cloned() {
            record.outcome = format!("recovered: {outcome}");
            write_history(&cluster, &app, &serving.history, &record).await?;
        }
        ctx.end(last.clone(), &format!("recovered: {outcome}"))?;
        report.push_check(Check::from_bool(
            id,
            criterion,
            format!("{outcome}; {} serves with {ready} ready pods", serving.active),
            ready > 0,
        ));
        calls += cluster.calls();
    }
    report.push_measurement(Measurement::new("api_calls", calls as f64, ""));
    report.push_measurement(Measurement::new("run_seconds", origin.elapsed().as_secs_f64(), "s"));
    report.finish();
    Ok(report)
}

/// `status APP`: the serving colour, each colour's Deployment and pods, the last release.
pub async fn status(cluster: &Cluster, app: &AppRef) -> Result<Value, Error> {
    let state = AppState::read(cluster, app).await?;
    let mut colours = BTreeMap::new();
    for (colour, d) in &state.deployments {
        let (ready, pods) =
            ready_pods(cluster, &app.namespace, &state.colour_selector(app, colour)).await?;
        colours.insert(
            colour.clone(),
            json!({
                "deployment": d.metadata.name,
                "images": d.spec.as_ref().map(|s| app::images(&s.template)).unwrap_or_default(),
                "revision": d.metadata.annotations.as_ref().and_then(|a| a.get(keys::REVISION)),
                "replicas": d.spec.as_ref().and_then(|s| s.replicas),
                "ready": ready,
                "pods": pods,
            }),
        );
    }
    Ok(json!({
        "app": app.name,
        "namespace": app.namespace,
        "active": state.active,
        "previous": state.previous(),
        "preview": state.preview.as_ref().and_then(|p| p.spec.as_ref()).and_then(|s| s.selector.as_ref()).and_then(|s| s.get(&app.colour_label)),
        "colours": colours,
        "scale_down": state.annotation(keys::SCALE_DOWN).and_then(|v| serde_json::from_str::<Value>(v).ok()),
        "last_release": state.history.last(),
    }))
}

/// `history APP`: the releases, oldest first.
pub async fn history(cluster: &Cluster, app: &AppRef) -> Result<Vec<Release>, Error> {
    Ok(AppState::read(cluster, app).await?.history)
}
