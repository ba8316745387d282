//! `bluegreen-promoter`: flags, the cluster connection, the report and the
//! contract's exit code (0 released/met, 1 a gate or criterion failed, 2
//! bad input and nothing changed, 3 could not run or not evaluated).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bluegreen_promoter::app::{AppRef, TemplateChange};
use bluegreen_promoter::cluster::Cluster;
use bluegreen_promoter::gates::{self, AnalysisFile, SmokeFile};
use bluegreen_promoter::journal::Journal;
use bluegreen_promoter::release::{self, Context, DeployOptions, ProbeOptions, RollbackOptions};
use bluegreen_promoter::{Error, argo};
use clap::{Args, Parser, Subcommand};
use shared_types::{ExitCode, OutputFormat, Report, parse_duration};

/// Blue-green releases on Kubernetes, with the evidence.
///
/// An app is its active Service, whose selector names the serving colour
/// (`colour: blue` or `colour: green`), a preview Service (`APP-preview`,
/// created on the first release) and one Deployment per colour. `deploy`
/// starts the new colour beside the serving one, which it does not touch,
/// gates it (rollout ready, health and smoke tests through the preview,
/// PromQL analysis against the serving colour, a pre-switch command),
/// switches with one patch of the active Service's selector, watches, and
/// scales the old colour down after --scale-down-delay. A prober sends
/// steady traffic through the active Service all along and reports failed
/// requests, the longest gap and the instant traffic moved.
///
/// Examples:
///   bluegreen-promoter deploy shop --image web=registry/shop:v2 --allow-namespace prod -n prod \
///     --active-url http://shop.prod --preview-url http://shop-preview.prod \
///     --smoke smoke.yaml --analysis analysis.yaml --prometheus http://prometheus:9090
///   bluegreen-promoter rollback shop -n prod --allow-namespace prod --active-url http://shop.prod
///   bluegreen-promoter status shop -n prod
///   bluegreen-promoter deploy shop --image registry/shop:v3 --dry-run
///   bluegreen-promoter recover --allow-namespace prod
///
/// Exit codes: 0 released (every criterion met), 1 a gate or criterion
/// failed (nothing switched, or switched back), 2 bad input (nothing
/// changed), 3 could not run or a criterion could not be evaluated.
#[derive(Debug, Parser)]
#[command(name = "bluegreen-promoter", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Release a new image or pod template as the idle colour, gate it, switch, watch.
    Deploy(Box<DeployArgs>),
    /// Switch back to the colour that served before (one patch while it is still scaled).
    Rollback(Box<RollbackArgs>),
    /// Print the serving colour, each colour's Deployment and pods, the last release.
    Status(ReadArgs),
    /// Print the releases kept in the active Service's annotations.
    History(ReadArgs),
    /// Stop a release that has not switched: the new colour is scaled to 0;
    /// with --rollout, abort an Argo Rollout as `kubectl argo rollouts abort` does.
    Abort(AbortArgs),
    /// Promote an Argo Rollout (blueGreen) as `kubectl argo rollouts promote` does.
    Promote(PromoteArgs),
    /// Scale the old colour down if its delay has passed (run from cron).
    ScaleDown(ScaleDownArgs),
    /// After a crash: bring every unfinished release in the journal to a
    /// consistent state (the active Service on ready pods, the stable colour preferred).
    Recover(RecoverArgs),
}

#[derive(Debug, Args)]
struct ClusterArgs {
    /// Kubeconfig file (default: KUBECONFIG or ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<String>,
    /// Kubeconfig context.
    #[arg(long, global = true)]
    context: Option<String>,
    /// Namespace of the app.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// The label whose value is the colour, in the Service selector and pod labels.
    #[arg(long, default_value = "colour")]
    colour_label: String,
    /// The preview Service (default: APP-preview).
    #[arg(long)]
    preview_service: Option<String>,
}

#[derive(Debug, Args)]
struct ChangeArgs {
    /// Namespaces bluegreen-promoter may change (repeatable, or comma-separated
    /// in BLUEGREEN_ALLOW_NAMESPACES); `*` allows any. Nothing else is touched.
    #[arg(long = "allow-namespace", env = "BLUEGREEN_ALLOW_NAMESPACES", value_delimiter = ',')]
    allow: Vec<String>,
    /// Print the plan and every change it would send; send nothing.
    #[arg(long)]
    dry_run: bool,
    /// Where the journal lives (default: ~/.local/state/bluegreen-promoter).
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ProbeArgs {
    /// The active Service's URL as clients reach it; the prober sends traffic
    /// through it (without it, zero downtime is not evaluated).
    #[arg(long)]
    active_url: Option<String>,
    /// The preview Service's URL (health, smoke tests, analysis traffic).
    #[arg(long)]
    preview_url: Option<String>,
    /// Prober requests per second.
    #[arg(long, default_value_t = 20.0)]
    probe_rate: f64,
    /// Path the prober requests (a real route of the app).
    #[arg(long, default_value = "/")]
    probe_path: String,
    /// Response header that names the version serving.
    #[arg(long, default_value = "x-release")]
    version_header: String,
}

#[derive(Debug, Args)]
struct OutputArgs {
    /// Report format on stdout: human, json, junit or markdown.
    #[arg(long, default_value = "human")]
    output: OutputFormat,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Accept this criterion unmeasured (repeatable): a not-evaluated check becomes skipped.
    #[arg(long = "skip-check", value_name = "ID")]
    skip_checks: Vec<String>,
    /// Log format on stderr.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[derive(Debug, Args)]
struct DeployArgs {
    /// The app: its active Service's name.
    app: String,
    /// The new image, `IMAGE` (first container) or `CONTAINER=IMAGE` (repeatable).
    #[arg(long)]
    image: Vec<String>,
    /// The new pod template (YAML PodTemplateSpec) instead of the serving one's.
    #[arg(long, value_name = "FILE")]
    pod_template: Option<PathBuf>,
    /// Replicas of the new colour before the switch (default: the serving colour's).
    #[arg(long)]
    preview_replicas: Option<i32>,
    /// Deadline for the new colour's rollout and readiness.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    ready_timeout: Duration,
    /// Health path checked through the preview Service.
    #[arg(long, default_value = "/healthz")]
    health_path: String,
    /// Smoke tests: a YAML list of HTTP requests with expected status, body and latency.
    #[arg(long, value_name = "FILE")]
    smoke: Option<PathBuf>,
    /// A Job manifest (YAML) that must run to completion before the switch.
    #[arg(long, value_name = "FILE")]
    smoke_job: Option<PathBuf>,
    /// A short load-tester run through the preview before the switch: these
    /// arguments after `load-tester run --target PREVIEW_URL`, e.g.
    /// "--users 20 --duration 10s"; its exit code is the gate's verdict.
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    smoke_load: Option<String>,
    /// The load-tester binary for --smoke-load.
    #[arg(long, default_value = "load-tester")]
    load_tester: PathBuf,
    /// PromQL analysis of the new colour against the serving one (YAML).
    #[arg(long, value_name = "FILE")]
    analysis: Option<PathBuf>,
    /// Prometheus URL for the analysis (overrides the file's).
    #[arg(long)]
    prometheus: Option<String>,
    /// A command that must succeed before the switch (schema compatibility, a
    /// migration); it gets BLUEGREEN_APP, _NAMESPACE, _COLOUR, _PREVIEW_URL, _IMAGES.
    #[arg(long)]
    pre_switch_cmd: Option<String>,
    /// Deadline of the pre-switch command and the smoke Job.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    command_timeout: Duration,
    /// Post-promotion watch: metrics again, a failure switches back at once.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    watch_for: Duration,
    /// How long the old colour stays scaled for an instant rollback
    /// (`scale-down APP` does it once due; 0 = at once).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    scale_down_delay: Duration,
    /// Never scale the old colour down.
    #[arg(long)]
    keep_old: bool,
    /// When a gate fails, keep the new colour running (to debug it) instead of scaling it to 0.
    #[arg(long)]
    keep_preview: bool,
    /// The launch plan's deployment budget (deploy_time < 10m).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    deploy_budget: Duration,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    change: ChangeArgs,
    #[command(flatten)]
    probe: ProbeArgs,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Args)]
struct RollbackArgs {
    /// The app.
    app: String,
    /// Deadline for a scaled-down colour to be ready again.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    ready_timeout: Duration,
    /// The launch plan's rollback budget (rollback_time < 2m).
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    budget: Duration,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    change: ChangeArgs,
    #[command(flatten)]
    probe: ProbeArgs,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Args)]
struct ReadArgs {
    /// The app.
    app: String,
    /// `human` or `json`.
    #[arg(long, default_value = "human", value_parser = ["human", "json"])]
    output: String,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(Debug, Args)]
struct AbortArgs {
    /// The app (or --rollout).
    #[arg(required_unless_present = "rollout")]
    app: Option<String>,
    /// An Argo Rollout to abort instead.
    #[arg(long)]
    rollout: Option<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    change: ChangeArgs,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Args)]
struct PromoteArgs {
    /// The Argo Rollout.
    #[arg(long)]
    rollout: String,
    /// Skip the remaining pause and analysis: `status.promoteFull`.
    #[arg(long)]
    full: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    change: ChangeArgs,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Args)]
struct ScaleDownArgs {
    /// The app.
    app: String,
    /// Scale down now even if the delay has not passed.
    #[arg(long)]
    now: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    change: ChangeArgs,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Args)]
struct RecoverArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    change: ChangeArgs,
    #[command(flatten)]
    output: OutputArgs,
}

impl ClusterArgs {
    fn app(&self, name: &str) -> AppRef {
        AppRef {
            namespace: self.namespace.clone(),
            name: name.to_owned(),
            preview: self.preview_service.clone().unwrap_or_else(|| format!("{name}-preview")),
            colour_label: self.colour_label.clone(),
        }
    }

    async fn connect(&self, change: Option<&ChangeArgs>) -> Result<Cluster, Error> {
        let (allowed, dry_run) =
            change.map_or((Vec::new(), true), |c| (c.allow.clone(), c.dry_run));
        Cluster::connect(self.kubeconfig.as_deref(), self.context.as_deref(), allowed, dry_run)
            .await
    }
}

impl ChangeArgs {
    fn journal(&self) -> Journal {
        let dir =
            match (&self.state_dir, std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME")) {
                (Some(d), _, _) => d.clone(),
                (None, Some(x), _) => PathBuf::from(x).join("bluegreen-promoter"),
                (None, None, Some(h)) => PathBuf::from(h).join(".local/state/bluegreen-promoter"),
                (None, None, None) => PathBuf::from(".bluegreen-promoter"),
            };
        Journal::new(dir.join("journal.jsonl"))
    }
}

impl ProbeArgs {
    fn options(&self) -> Result<ProbeOptions, Error> {
        for url in [&self.active_url, &self.preview_url].into_iter().flatten() {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(Error::Usage(format!("{url}: expected an http:// or https:// URL")));
            }
        }
        if !(self.probe_rate > 0.0 && self.probe_rate <= 1000.0) {
            return Err(Error::Usage(format!(
                "--probe-rate {}: expected 0 < rate <= 1000",
                self.probe_rate
            )));
        }
        let trim = |u: &Option<String>| u.as_ref().map(|u| u.trim_end_matches('/').to_owned());
        Ok(ProbeOptions {
            active_url: trim(&self.active_url),
            preview_url: trim(&self.preview_url),
            rate: self.probe_rate,
            path: self.probe_path.clone(),
            version_header: self.version_header.to_ascii_lowercase(),
        })
    }
}

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::Usage.into() } else { ExitCode::Success.into() };
        }
    };
    shared_types::signals::run_tool("bluegreen-promoter", dispatch(cli), Error::exit_code)
}

fn run_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("r{:x}{:x}", millis, std::process::id() & 0xfff)
}

fn read_file(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("cannot read {}: {e}", path.display())))
}

fn images(specs: &[String]) -> Result<Vec<(Option<String>, String)>, Error> {
    specs
        .iter()
        .map(|s| {
            // `web=registry:5000/shop:v2`: a name before `=` (no `/` or `:` in it).
            match s.split_once('=') {
                Some((c, i)) if !c.is_empty() && !c.contains(['/', ':']) && !i.is_empty() => {
                    Ok((Some(c.to_owned()), i.to_owned()))
                }
                Some(_) => {
                    Err(Error::Usage(format!("--image {s:?}: expected IMAGE or CONTAINER=IMAGE")))
                }
                None if s.is_empty() => Err(Error::Usage("--image: empty".to_owned())),
                None => Ok((None, s.clone())),
            }
        })
        .collect()
}

fn emit(report: &mut Report, output: &OutputArgs) -> Result<ExitCode, Error> {
    for unknown in report.waive(&output.skip_checks) {
        eprintln!(
            "bluegreen-promoter: --skip-check {unknown}: no such check in this report (nothing waived)"
        );
    }
    report
        .emit(output.output, output.report.as_deref())
        .map_err(|e| Error::CouldNotRun(e.to_string()))
}

async fn dispatch(cli: Cli) -> Result<ExitCode, Error> {
    match cli.command {
        Command::Deploy(a) => {
            shared_types::init_logs(&a.output.log_format, "warn");
            // Every input is read and checked before anything is changed.
            let template = match &a.pod_template {
                Some(p) => Some(gates::parse_yaml(&read_file(p)?, &p.display().to_string())?),
                None => None,
            };
            if template.is_none() && a.image.is_empty() {
                return Err(Error::Usage(
                    "deploy needs --image or --pod-template: what is the new release?".to_owned(),
                ));
            }
            let change = TemplateChange { template, images: images(&a.image)? };
            let smoke = match &a.smoke {
                Some(p) => Some(SmokeFile::parse(&read_file(p)?, &p.display().to_string())?),
                None => None,
            };
            let smoke_job = match &a.smoke_job {
                Some(p) => Some(gates::parse_yaml(&read_file(p)?, &p.display().to_string())?),
                None => None,
            };
            let analysis = match &a.analysis {
                Some(p) => Some(AnalysisFile::parse(&read_file(p)?, &p.display().to_string())?),
                None => None,
            };
            let prometheus = a
                .prometheus
                .clone()
                .or_else(|| analysis.as_ref().and_then(|f| f.prometheus.clone()));
            let options = DeployOptions {
                app: a.cluster.app(&a.app),
                change,
                preview_replicas: a.preview_replicas,
                probe: a.probe.options()?,
                ready_timeout: a.ready_timeout,
                health_path: a.health_path.clone(),
                smoke,
                smoke_job,
                smoke_load: a.smoke_load.as_ref().map(|args| {
                    (a.load_tester.clone(), args.split_whitespace().map(str::to_owned).collect())
                }),
                analysis,
                prometheus,
                pre_switch_cmd: a.pre_switch_cmd.clone(),
                command_timeout: a.command_timeout,
                watch_for: a.watch_for,
                scale_down_delay: a.scale_down_delay,
                keep_old: a.keep_old,
                keep_preview: a.keep_preview,
                deploy_budget: a.deploy_budget,
                id: run_id(),
            };
            let cluster = a.cluster.connect(Some(&a.change)).await?;
            let ctx = Context { cluster, journal: a.change.journal() };
            let mut report = Box::pin(release::deploy(&ctx, &options)).await?;
            emit(&mut report, &a.output)
        }
        Command::Rollback(a) => {
            shared_types::init_logs(&a.output.log_format, "warn");
            let options = RollbackOptions {
                app: a.cluster.app(&a.app),
                probe: a.probe.options()?,
                ready_timeout: a.ready_timeout,
                budget: a.budget,
                id: run_id(),
            };
            let cluster = a.cluster.connect(Some(&a.change)).await?;
            let ctx = Context { cluster, journal: a.change.journal() };
            let mut report = Box::pin(release::rollback(&ctx, &options)).await?;
            emit(&mut report, &a.output)
        }
        Command::Status(a) => {
            let cluster = a.cluster.connect(None).await?;
            let status = release::status(&cluster, &a.cluster.app(&a.app)).await?;
            if a.output == "json" {
                println!("{}", serde_json::to_string_pretty(&status).unwrap_or_default());
            } else {
                print!("{}", human_status(&status));
            }
            Ok(ExitCode::Success)
        }
        Command::History(a) => {
            let cluster = a.cluster.connect(None).await?;
            let history = release::history(&cluster, &a.cluster.app(&a.app)).await?;
            if a.output == "json" {
                println!("{}", serde_json::to_string_pretty(&history).unwrap_or_default());
            } else {
                println!(
                    "{:>4}  {:<24}  {:<6}  {:>8}  {:<40}  images",
                    "rev", "started", "colour", "deploy s", "outcome"
                );
                for r in &history {
                    let secs = r.deploy_seconds.map_or("-".to_owned(), |s| format!("{s:.1}"));
                    println!(
                        "{:>4}  {:<24}  {:<6}  {:>8}  {:<40}  {}",
                        r.revision,
                        r.started,
                        r.colour,
                        secs,
                        r.outcome,
                        r.images.join(" ")
                    );
                }
            }
            Ok(ExitCode::Success)
        }
        Command::Abort(a) => {
            let cluster = a.cluster.connect(Some(&a.change)).await?;
            let mut report = match (&a.rollout, &a.app) {
                (Some(r), _) => argo::abort(&cluster, &a.cluster.namespace, r).await?,
                (None, Some(app)) => {
                    let ctx = Context { cluster, journal: a.change.journal() };
                    release::abort(&ctx, &a.cluster.app(app)).await?
                }
                (None, None) => {
                    return Err(Error::Usage("abort needs APP or --rollout NAME".to_owned()));
                }
            };
            emit(&mut report, &a.output)
        }
        Command::Promote(a) => {
            let cluster = a.cluster.connect(Some(&a.change)).await?;
            let mut report =
                argo::promote(&cluster, &a.cluster.namespace, &a.rollout, a.full).await?;
            emit(&mut report, &a.output)
        }
        Command::ScaleDown(a) => {
            let cluster = a.cluster.connect(Some(&a.change)).await?;
            let ctx = Context { cluster, journal: a.change.journal() };
            let mut report = release::scale_down(&ctx, &a.cluster.app(&a.app), a.now).await?;
            emit(&mut report, &a.output)
        }
        Command::Recover(a) => {
            let journal = a.change.journal();
            let (allow, dry_run) = (a.change.allow.clone(), a.change.dry_run);
            let (kubeconfig, context) = (a.cluster.kubeconfig.clone(), a.cluster.context.clone());
            let connect = async |e: &bluegreen_promoter::journal::Entry| {
                // The cluster the release was talking to, unless named here.
                let kc = kubeconfig.clone().or_else(|| e.kubeconfig.clone());
                let ctx = context.clone().or_else(|| e.context.clone());
                Cluster::connect(kc.as_deref(), ctx.as_deref(), allow.clone(), dry_run).await
            };
            let mut report = release::recover(&journal, connect).await?;
            emit(&mut report, &a.output)
        }
    }
}

fn human_status(s: &serde_json::Value) -> String {
    let mut out = format!(
        "{}/{}: serving {}{}\n",
        s["namespace"].as_str().unwrap_or_default(),
        s["app"].as_str().unwrap_or_default(),
        s["active"].as_str().unwrap_or("?"),
        s["previous"].as_str().map_or(String::new(), |p| format!(" (previous {p})")),
    );
    if let Some(colours) = s["colours"].as_object() {
        for (colour, c) in colours {
            let images: Vec<&str> =
                c["images"].as_array().into_iter().flatten().filter_map(|i| i.as_str()).collect();
            out.push_str(&format!(
                "  {colour:<6} {:<28} {}/{} ready  revision {}  {}\n",
                c["deployment"].as_str().unwrap_or_default(),
                c["ready"],
                c["replicas"],
                c["revision"].as_str().unwrap_or("-"),
                images.join(" "),
            ));
        }
    }
    if let Some(p) = s["preview"].as_str() {
        out.push_str(&format!("  preview selects {p}\n"));
    }
    if !s["scale_down"].is_null() {
        out.push_str(&format!(
            "  {} scales down at {}\n",
            s["scale_down"]["colour"].as_str().unwrap_or_default(),
            s["scale_down"]["at"].as_str().unwrap_or_default()
        ));
    }
    if !s["last_release"].is_null() {
        let r = &s["last_release"];
        out.push_str(&format!(
            "  last release {} ({}): {}\n",
            r["revision"],
            r["started"].as_str().unwrap_or_default(),
            r["outcome"].as_str().unwrap_or_default()
        ));
    }
    out
}
