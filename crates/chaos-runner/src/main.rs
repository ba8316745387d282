//! `chaos-runner`: parse flags, run experiments (or plan, recover, halt,
//! proxy), render the report, exit with the contract's code (0 met, 1 not
//! met, 2 usage, 3 could not run).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chaos_runner::experiment::ExperimentFile;
use chaos_runner::kube::Kube;
use chaos_runner::runner::RunOptions;
use chaos_runner::{Error, fault, netem, proxy};
use clap::{Args, Parser, Subcommand};
use shared_types::{ExitCode, OutputFormat, Report, parse_duration};

/// Run the launch plan's chaos matrix: faults with an exact undo, measured
/// detection and recovery, user-visible errors, data loss and alerts.
///
/// Every fault is journaled (fsynced) before it is applied and undone on
/// success, failure, Ctrl-C, the kill switch or an SLO guard breach; after a
/// crash, `chaos-runner recover` undoes what is left. Faults act only on
/// what the file's `allow` list names (loopback hosts are always allowed).
///
/// Examples:
///   # what would be done, touching nothing
///   chaos-runner plan docs/chaos-runner/launch-plan.yaml --var GATEWAY=http://127.0.0.1:8080
///   # run two rows of the matrix, JSON report to a file
///   chaos-runner run docs/chaos-runner/launch-plan.yaml --experiment auth-down \
///       --experiment redis-down --report chaos.json
///   # a fault proxy in front of Redis and PostgreSQL (services connect to :16379, :15432)
///   chaos-runner proxy --api 127.0.0.1:8474 --proxy redis=127.0.0.1:16379,127.0.0.1:6379 \
///       --proxy postgres=127.0.0.1:15432,127.0.0.1:5432
///   # stop every running experiment now, and undo what a crashed run left
///   chaos-runner halt --reason 'incident 4711' && chaos-runner recover
#[derive(Debug, Parser)]
#[command(name = "chaos-runner", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the experiments of FILE (YAML, or a Chaos Toolkit JSON experiment).
    Run {
        #[command(flatten)]
        input: InputArgs,
        #[command(flatten)]
        output: OutputArgs,
        /// Override a row's recovery budget: ID=DURATION (repeatable), e.g. auth-down=90s.
        #[arg(long = "budget", value_name = "ID=DURATION", value_parser = budget)]
        budgets: Vec<(String, Duration)>,
        /// Probe interval during faults and recovery (default: the file's, else 1s).
        #[arg(long, value_parser = parse_duration)]
        interval: Option<Duration>,
        /// Longest wait for recovery of a row without a budget.
        #[arg(long, default_value = "120s", value_parser = parse_duration)]
        recovery_timeout: Duration,
        /// Consecutive passing looks that count as recovered.
        #[arg(long, default_value_t = 2)]
        settle: u32,
        /// Print the plan instead: what would be done, nothing touched.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print what `run` would do (targets resolved, undo of each fault), touching nothing.
    Plan {
        #[command(flatten)]
        input: InputArgs,
        /// human or json.
        #[arg(long, default_value = "human", value_parser = ["human", "json"])]
        output: String,
    },
    /// List the fault kinds, what each does and its undo.
    ListFaults,
    /// Undo every fault the journal holds as still applied (after a crash); idempotent.
    Recover {
        #[command(flatten)]
        state: StateArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(flatten)]
        output: OutputArgs,
        /// List what would be undone and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The kill switch: running experiments undo their faults and stop; new ones refuse to start.
    Halt {
        #[command(flatten)]
        state: StateArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Why (kept in the halt file and ConfigMap).
        #[arg(long, default_value = "halted by an operator")]
        reason: String,
        /// Also create the ConfigMap chaos-runner-halt in this namespace (repeatable).
        #[arg(long = "namespace")]
        namespaces: Vec<String>,
    },
    /// Clear the kill switch.
    Resume {
        #[command(flatten)]
        state: StateArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Also delete the ConfigMap chaos-runner-halt in this namespace (repeatable).
        #[arg(long = "namespace")]
        namespaces: Vec<String>,
    },
    /// Run the TCP fault proxy (toxiproxy's toxics and HTTP API) until Ctrl-C.
    Proxy {
        /// Where the control API listens.
        #[arg(long, default_value = "127.0.0.1:8474")]
        api: std::net::SocketAddr,
        /// A proxy: NAME=LISTEN,UPSTREAM (repeatable), e.g. redis=127.0.0.1:16379,127.0.0.1:6379.
        #[arg(long = "proxy", required = true, value_name = "NAME=LISTEN,UPSTREAM")]
        proxies: Vec<proxy::ProxySpec>,
        /// Log format on stderr.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        log_format: String,
    },
    /// Create or delete a network namespace with its veth pair (for netem faults).
    Netns {
        /// create or delete.
        #[arg(value_parser = ["create", "delete"])]
        action: String,
        /// The namespace: 1 to 11 of a-z, 0-9 and -.
        name: String,
    },
}

#[derive(Debug, Args)]
struct InputArgs {
    /// The experiment file.
    file: PathBuf,
    /// Fill ${NAME} in the file (repeatable): NAME=VALUE.
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = var)]
    vars: Vec<(String, String)>,
    /// Only this experiment (repeatable).
    #[arg(long = "experiment", value_name = "ID")]
    only: Vec<String>,
    #[command(flatten)]
    state: StateArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(Debug, Args)]
struct StateArgs {
    /// Where the journal and the kill-switch file live.
    #[arg(long, env = "CHAOS_RUNNER_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ClusterArgs {
    /// Kubeconfig for Kubernetes faults and probes (default: KUBECONFIG, ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<String>,
    /// Kubeconfig context.
    #[arg(long)]
    context: Option<String>,
}

#[derive(Debug, Args)]
struct OutputArgs {
    /// Report format on stdout: human, json, junit or markdown.
    #[arg(long, default_value = "human")]
    output: OutputFormat,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Also write an HTML page with the verdicts and each experiment's timeline (SVG).
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Accept this criterion unmeasured (repeatable): a not-evaluated check becomes skipped.
    #[arg(long = "skip-check", value_name = "ID")]
    skip_checks: Vec<String>,
    /// Log format on stderr.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

fn var(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{text}`: expected NAME=VALUE"))
}

fn budget(text: &str) -> Result<(String, Duration), String> {
    let (id, d) = text.split_once('=').ok_or_else(|| format!("`{text}`: expected ID=DURATION"))?;
    Ok((id.to_owned(), parse_duration(d)?))
}

impl StateArgs {
    fn dir(&self) -> PathBuf {
        if let Some(d) = &self.state_dir {
            return d.clone();
        }
        if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
            return PathBuf::from(d).join("chaos-runner");
        }
        match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(".local/state/chaos-runner"),
            None => PathBuf::from(".chaos-runner"),
        }
    }
    fn journal(&self) -> PathBuf {
        self.dir().join("journal.jsonl")
    }
    fn halt_file(&self) -> PathBuf {
        self.dir().join("halt")
    }
}

impl ClusterArgs {
    /// The cluster when one is named or a default kubeconfig exists.
    async fn connect(&self, needed: bool) -> Result<Option<Kube>, Error> {
        let default_exists = std::env::var_os("KUBECONFIG").is_some()
            || std::env::var_os("HOME")
                .is_some_and(|h| Path::new(&h).join(".kube/config").exists());
        if self.kubeconfig.is_none() && !needed && !default_exists {
            return Ok(None);
        }
        Kube::connect(self.kubeconfig.as_deref(), self.context.as_deref()).await.map(Some).map_err(
            |e| {
                if needed {
                    Error::CouldNotRun(e)
                } else {
                    Error::Config(chaos_runner::ConfigError::new(e))
                }
            },
        )
    }
}

/// Whether the selected experiments (all when `only` is empty) touch Kubernetes.
fn needs_kube(file: &ExperimentFile, only: &[String]) -> bool {
    file.experiments.iter().filter(|e| only.is_empty() || only.contains(&e.value.id)).any(|e| {
        e.value.method.iter().any(|s| {
            s.value.pods.is_some() || s.value.scale.is_some() || s.value.chaos_mesh.is_some()
        }) || e.value.steady_state.iter().any(|p| p.value.pods.is_some())
    })
}

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::Usage.into() } else { ExitCode::Success.into() };
        }
    };
    shared_types::signals::run_tool("chaos-runner", dispatch(cli), Error::exit_code)
}

fn target_of(file: &ExperimentFile) -> String {
    let ids: Vec<&str> = file.experiments.iter().map(|e| e.value.id.as_str()).collect();
    ids.join(", ")
}

async fn dispatch(cli: Cli) -> Result<ExitCode, Error> {
    match cli.command {
        Command::Run { input, output, budgets, interval, recovery_timeout, settle, dry_run } => {
            shared_types::init_logs(&output.log_format, "warn");
            let vars: BTreeMap<String, String> = input.vars.iter().cloned().collect();
            let file = chaos_runner::load(&input.file, &vars)?;
            for id in &input.only {
                if !file.experiments.iter().any(|e| e.value.id == *id) {
                    return Err(chaos_runner::ConfigError::new(format!(
                        "--experiment {id}: no such experiment in {}",
                        input.file.display()
                    ))
                    .into());
                }
            }
            chaos_runner::check_allowed(&file)?;
            let kube = input.cluster.connect(needs_kube(&file, &input.only)).await?;
            if dry_run {
                return plan(&file, &input.only, kube.as_ref(), "human").await;
            }
            let options = RunOptions {
                only: input.only.clone(),
                journal: input.state.journal(),
                halt_file: input.state.halt_file(),
                kube,
                budgets: budgets.into_iter().collect(),
                interval,
                recovery_timeout,
                settle,
                run: run_id(),
            };
            let mut report = Report::new(
                "chaos-runner",
                env!("CARGO_PKG_VERSION"),
                format!("{} ({})", input.file.display(), target_of(&file)),
            );
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                shared_types::signals::shutdown().await;
                eprintln!("chaos-runner: stopping: undoing every applied fault");
                stop_tx.send_replace(true);
            });
            chaos_runner::runner::run(&file, &options, &mut report, stop_rx)
                .await
                .map_err(Error::CouldNotRun)?;
            report.finish();
            emit(&mut report, &output)
        }
        Command::Plan { input, output } => {
            let vars: BTreeMap<String, String> = input.vars.iter().cloned().collect();
            let file = chaos_runner::load(&input.file, &vars)?;
            chaos_runner::check_allowed(&file)?;
            let kube = input.cluster.connect(needs_kube(&file, &input.only)).await?;
            plan(&file, &input.only, kube.as_ref(), &output).await
        }
        Command::ListFaults => {
            println!("{:<28} {:<84} undo", "fault", "what it does");
            for (name, what, undo) in fault::CATALOGUE {
                println!("{name:<28} {what:<84} {undo}");
            }
            Ok(ExitCode::Success)
        }
        Command::Recover { state, cluster, output, dry_run } => {
            shared_types::init_logs(&output.log_format, "warn");
            let kube = cluster.connect(false).await.unwrap_or(None);
            let journal = state.journal();
            let mut report = Report::new(
                "chaos-runner",
                env!("CARGO_PKG_VERSION"),
                format!("recover {}", journal.display()),
            );
            chaos_runner::recover(&journal, kube.as_ref(), dry_run, &mut report)
                .await
                .map_err(Error::CouldNotRun)?;
            report.finish();
            emit(&mut report, &output)
        }
        Command::Halt { state, cluster, reason, namespaces } => {
            let kube = if namespaces.is_empty() { None } else { cluster.connect(true).await? };
            let set =
                chaos_runner::halt::halt(&state.halt_file(), &reason, kube.as_ref(), &namespaces)
                    .await
                    .map_err(Error::CouldNotRun)?;
            println!("halted: {}", set.join(", "));
            println!(
                "running experiments undo their faults and stop; `chaos-runner resume` clears it"
            );
            Ok(ExitCode::Success)
        }
        Command::Resume { state, cluster, namespaces } => {
            let kube = if namespaces.is_empty() { None } else { cluster.connect(true).await? };
            chaos_runner::halt::resume(&state.halt_file(), kube.as_ref(), &namespaces)
                .await
                .map_err(Error::CouldNotRun)?;
            println!("resumed: experiments may run");
            Ok(ExitCode::Success)
        }
        Command::Proxy { api, proxies, log_format } => {
            shared_types::init_logs(&log_format, "info");
            proxy::serve(api, proxies, shared_types::signals::shutdown())
                .await
                .map_err(Error::CouldNotRun)?;
            Ok(ExitCode::Success)
        }
        Command::Netns { action, name } => {
            let result = tokio::task::spawn_blocking(move || {
                if action == "create" {
                    netem::create(&name).map(|l| {
                        format!(
                            "netns {} created: host side {} ({}), namespace side {} ({})",
                            l.netns, l.host_device, l.host_addr, l.ns_device, l.ns_addr
                        )
                    })
                } else {
                    netem::delete(&name).map(|()| format!("netns {name} deleted"))
                }
            })
            .await
            .map_err(|e| Error::CouldNotRun(e.to_string()))?;
            match result {
                Ok(text) => {
                    println!("{text}");
                    Ok(ExitCode::Success)
                }
                Err(e) if e.starts_with("netns `") => Err(chaos_runner::ConfigError::new(e).into()),
                Err(e) => Err(Error::CouldNotRun(e)),
            }
        }
    }
}

fn emit(report: &mut Report, output: &OutputArgs) -> Result<ExitCode, Error> {
    for unknown in report.waive(&output.skip_checks) {
        eprintln!(
            "chaos-runner: --skip-check {unknown}: no such check in this report (nothing waived)"
        );
    }
    if let Some(path) = &output.html {
        std::fs::write(path, chaos_runner::html::render(report))
            .map_err(|e| Error::CouldNotRun(format!("cannot write {}: {e}", path.display())))?;
    }
    report
        .emit(output.output, output.report.as_deref())
        .map_err(|e| Error::CouldNotRun(e.to_string()))
}

fn run_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("r{:x}{:x}", millis, std::process::id() & 0xfff)
}

async fn plan(
    file: &ExperimentFile,
    only: &[String],
    kube: Option<&Kube>,
    output: &str,
) -> Result<ExitCode, Error> {
    let http = reqwest::Client::new();
    let env = fault::Env { allow: &file.allow, kube, http: &http, run: "plan" };
    let mut all = Vec::new();
    let mut text = String::new();
    for spanned in &file.experiments {
        let exp = &spanned.value;
        if !only.is_empty() && !only.contains(&exp.id) {
            continue;
        }
        text.push_str(&format!("{}: {}\n", exp.id, exp.title.as_deref().unwrap_or("")));
        for p in &exp.steady_state {
            text.push_str(&format!(
                "  steady state  {} ({})\n",
                p.value.name,
                p.value.kinds().join("")
            ));
        }
        if let Some(w) = &exp.workload {
            let names: Vec<&str> = w.requests.iter().map(|r| r.name.as_str()).collect();
            text.push_str(&format!(
                "  workload      {} req/s over {}\n",
                w.rate.unwrap_or(20.0),
                names.join(", ")
            ));
        }
        let mut planned = Vec::new();
        for step in &exp.method {
            match fault::plan(&env, &exp.id, &step.value).await {
                Ok(list) => {
                    for p in list {
                        text.push_str(&format!(
                            "  fault         {} for {:?}\n                  undo: {}\n",
                            p.describe,
                            p.duration,
                            p.undo.describe()
                        ));
                        planned.push(p);
                    }
                }
                Err(e) => {
                    text.push_str(&format!(
                        "  fault         {}: CANNOT RUN: {e}\n",
                        step.value.name
                    ));
                    return finish_plan(
                        &text,
                        output,
                        &all,
                        Some(Error::CouldNotRun(format!("{}/{}: {e}", exp.id, step.value.name))),
                    );
                }
            }
        }
        if let Some(b) = exp.expect.recover_within {
            text.push_str(&format!("  expect        recovered within {:?}\n", b.0));
        }
        all.push(serde_json::json!({ "id": exp.id, "faults": planned }));
    }
    text.push_str("nothing was touched (plan)\n");
    finish_plan(&text, output, &all, None)
}

fn finish_plan(
    text: &str,
    output: &str,
    all: &[serde_json::Value],
    error: Option<Error>,
) -> Result<ExitCode, Error> {
    if output == "json" {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "experiments": all }))
                .unwrap_or_default()
        );
    } else {
        print!("{text}");
    }
    match error {
        Some(e) => Err(e),
        None => Ok(ExitCode::Success),
    }
}
