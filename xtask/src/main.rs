//! `cargo xtask`: parse the task, run it, exit with its code.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;
use clap::{Parser, Subcommand};
use shared_types::{ExitCode, OutputFormat};
use xtask::verify::{self, VerifyOptions};
use xtask::workspace::{self, cargo, run};

/// Tasks for developing and running postlaunch.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", version)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// The monthly verification: start the sandbox, run every tool against it,
    /// print one summary and write target/verify/report.{json,md}.
    Verify {
        /// Summary format on stdout: human, json, junit or markdown.
        #[arg(long, default_value = "human")]
        output: OutputFormat,
        /// The team's system (verify.yaml, docs/verify.md): every step runs
        /// against the parts it names, and the built-in sandbox is not started.
        #[arg(long, value_name = "FILE", conflicts_with = "target")]
        plan: Option<PathBuf>,
        /// Verify a sandbox that is already running at this URL instead of
        /// starting one (e.g. one started with `cargo xtask sandbox`).
        #[arg(long, value_name = "URL")]
        target: Option<String>,
        /// Where the reports go (default target/verify).
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
        /// Where each month's KPI table is kept; the previous month's value
        /// and the baseline (the first month) come from there
        /// (default target/verify/history).
        #[arg(long, value_name = "DIR")]
        history_dir: Option<PathBuf>,
        /// Record this run as month YYYY-MM (default this month, UTC).
        #[arg(long, value_name = "YYYY-MM", value_parser = month)]
        month: Option<String>,
        /// Run only these steps (repeatable): sandbox, load-tester, capacity, database,
        /// pg-failover-probe, reorg-sim, backup-agent, alert-linter, chaos-runner,
        /// bluegreen-promoter, cost-analyzer. With --plan, the plan's `steps`.
        #[arg(long = "step", value_name = "STEP", conflicts_with = "plan")]
        steps: Vec<String>,
    },
    /// Run the sandbox marketplace service (arguments go to it; try `-- --help`).
    /// `cargo xtask sandbox --services` runs it as separate services instead
    /// (gateway, auth, catalog, consumer) against the machine's PostgreSQL and
    /// Redis and a RabbitMQ node of its own, until Ctrl-C.
    Sandbox {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// A local Kubernetes: `cluster up` starts the upstream 1.20.2 control
    /// plane (built once per machine by scripts/build-kubernetes.sh) on
    /// loopback with one postlaunch-node that runs pods as processes, prints
    /// its kubeconfig and kubectl commands to try, and keeps it running until
    /// Ctrl-C.
    Cluster {
        /// `up` (the only action so far).
        #[arg(value_parser = ["up"])]
        action: String,
        /// Also deploy the marketplace (deploy/sandbox) and wait for every
        /// Deployment to be ready: PostgreSQL and Redis are the machine's, RabbitMQ
        /// a node of its own.
        #[arg(long)]
        sandbox: bool,
    },
    /// Install the services tests need (scripts/install-deps.sh), then run every
    /// test of the workspace against them.
    Test {
        /// Skip scripts/install-deps.sh (the services are known to be there).
        #[arg(long)]
        no_install: bool,
        /// Extra arguments for `cargo test` (e.g. a test name filter after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// What a team installing one tool gets: `cargo publish --workspace
    /// --dry-run` (every publishable crate packages and builds alone), then
    /// each tool installed with `cargo install --path crates/TOOL --root DIR
    /// --locked` and its `--help` and `--version` run from DIR/bin.
    Package {
        /// Install only these tools (repeatable); default: every tool.
        #[arg(long = "tool", value_name = "TOOL")]
        tools: Vec<String>,
        /// Build the installed tools with the dev profile (faster; the
        /// release profile is what `cargo install` uses by default).
        #[arg(long)]
        debug: bool,
    },
    /// What CI runs: rustfmt check, clippy with warnings denied, the tests,
    /// rustdoc with warnings denied, and the schema check.
    Ci,
    /// Benchmark a tool side by side with the tool its users would otherwise
    /// pick, on the same input in the same run (release builds).
    Bench {
        /// The tool: load-tester, pg-failover-probe, reorg-sim, alert-linter, backup-agent,
        /// chaos-runner, bluegreen-promoter.
        tool: String,
        /// Repetitions where the benchmark repeats (drills).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// pgbench scale of the backup-agent benchmark's database (50 is about 750 MB).
        #[arg(long, default_value_t = 50)]
        scale: u32,
    },
    /// Write docs/report-schema.json and load-tester's config schemas under
    /// docs/load-tester/ from their types (`--check` only compares).
    Schema {
        /// Fail if a committed schema differs from the generated one.
        #[arg(long)]
        check: bool,
    },
}

/// A month as `YYYY-MM`.
fn month(text: &str) -> Result<String, String> {
    let ok = text.len() == 7
        && text.as_bytes()[4] == b'-'
        && text[..4].parse::<u16>().is_ok()
        && text[5..].parse::<u8>().is_ok_and(|m| (1..=12).contains(&m));
    if ok { Ok(text.to_owned()) } else { Err(format!("{text:?} is not a month YYYY-MM")) }
}

fn main() {
    let cli = Cli::parse();
    let code = match execute(cli.task) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::CouldNotRun
        }
    };
    std::process::exit(code.code());
}

fn execute(task: Task) -> anyhow::Result<ExitCode> {
    match task {
        Task::Verify { output, plan, target, out_dir, history_dir, month, steps } => {
            if let Some(unknown) = steps.iter().find(|s| !verify::STEPS.contains(&s.as_str())) {
                eprintln!("error: unknown --step {unknown:?}; steps: {}", verify::STEPS.join(", "));
                return Ok(ExitCode::Usage);
            }
            let plan = match plan.as_deref().map(xtask::plan::LoadedPlan::read).transpose() {
                Ok(plan) => plan,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::Usage);
                }
            };
            let runtime = tokio::runtime::Runtime::new()?;
            if target.is_none() {
                build_binaries()?;
            }
            let mut options = VerifyOptions { target, plan, ..VerifyOptions::default() };
            if !steps.is_empty() {
                options.steps = steps;
            }
            if let Some(dir) = out_dir {
                options.history_dir = dir.join("history");
                options.out_dir = dir;
            }
            if let Some(dir) = history_dir {
                options.history_dir = dir;
            }
            if let Some(month) = month {
                options.month = month;
            }
            let report = runtime.block_on(verify::run(&options))?;
            print!("{}", verify::render_summary(&report, output));
            eprintln!("wrote {}", options.out_dir.join("report.{json,md,html}").display());
            Ok(report.exit_code())
        }
        Task::Sandbox { args } if args.first().is_some_and(|a| a == "--services") => {
            let mut build = cargo();
            build.args(["build", "--quiet", "-p", "sandbox", "--bins"]);
            run(build)?;
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(services(&args[1..]))?;
            Ok(ExitCode::Success)
        }
        Task::Sandbox { args } => {
            let mut command = cargo();
            command.args(["run", "--quiet", "--package", "sandbox", "--"]).args(args);
            run(command)?;
            Ok(ExitCode::Success)
        }
        Task::Cluster { sandbox, .. } => {
            // The node runs pods from the workspace's binaries.
            let mut build = cargo();
            build.args(["build", "--quiet", "-p", "kube-node", "-p", "sandbox", "--bins"]);
            if sandbox {
                build.args(["-p", "reorg-sim", "-p", "load-tester"]);
            }
            run(build)?;
            let cluster = testkit::KubeCluster::start()?;
            let runtime = tokio::runtime::Runtime::new()?;
            let _rabbit =
                if sandbox { Some(runtime.block_on(deploy_marketplace(&cluster))?) } else { None };
            let kubeconfig = cluster.kubeconfig();
            println!(
                "Kubernetes 1.20.2 control plane and node-1 up in {:.1} s at {}\n\n\
                 export KUBECONFIG={}\n\
                 kubectl get nodes -o wide\n\
                 kubectl apply -f docs/kubernetes/sandbox.yaml\n\
                 kubectl rollout status deployment/sandbox\n\
                 kubectl get pods,endpoints -o wide\n\
                 curl -si http://$(kubectl get service sandbox -o jsonpath='{{.spec.clusterIP}}' | sed 's/^198\\./127./')/healthz\n\
                 kubectl delete pod -l app=sandbox --wait=false && kubectl get pods -w\n\n\
                 Pods are processes; pod IPs are 198.19.{slot}.x and Service IPs 198.18.{slot}.x, served on\n\
                 their 127.19.{slot}.x / 127.18.{slot}.x twins (docs/kubernetes.md).\n\
                 Logs: {} (pod logs under node/pods/). Ctrl-C stops every process.",
                cluster.started_in.as_secs_f64(),
                cluster.server_url(),
                kubeconfig.display(),
                cluster.log_path("kube-apiserver").with_file_name("*.log").display(),
                slot = cluster.slot(),
            );
            // Ctrl-C or SIGTERM: drop the handle so every process is stopped.
            runtime.block_on(shared_types::signals::shutdown());
            drop(cluster);
            Ok(ExitCode::Success)
        }
        Task::Test { no_install, args } => {
            test(no_install, &args)?;
            Ok(ExitCode::Success)
        }
        Task::Ci => {
            let mut fmt = cargo();
            fmt.args(["fmt", "--all", "--check"]);
            run(fmt)?;
            let mut clippy = cargo();
            clippy.args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]);
            run(clippy)?;
            test(false, &[])?;
            let mut doc = cargo();
            doc.args(["doc", "--workspace", "--no-deps"]).env("RUSTDOCFLAGS", "-D warnings");
            run(doc)?;
            schema(true)?;
            package(&[], true)?;
            Ok(ExitCode::Success)
        }
        Task::Package { tools, debug } => {
            package(&tools, debug)?;
            Ok(ExitCode::Success)
        }
        Task::Bench { tool, runs, scale } => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(xtask::bench::bench(&tool, runs, scale))?;
            Ok(ExitCode::Success)
        }
        Task::Schema { check } => {
            schema(check)?;
            Ok(ExitCode::Success)
        }
    }
}

/// The tools a team installs alone, each a crate with a binary of its name.
const TOOLS: [&str; 8] = [
    "alert-linter",
    "backup-agent",
    "bluegreen-promoter",
    "chaos-runner",
    "cost-analyzer",
    "load-tester",
    "pg-failover-probe",
    "reorg-sim",
];

/// The publish dry run, then each tool installed into a temporary root and
/// run from there. The installs share one target directory
/// (`target/install`), so the dependencies are compiled once.
fn package(only: &[String], debug: bool) -> anyhow::Result<()> {
    for tool in only {
        anyhow::ensure!(
            TOOLS.contains(&tool.as_str()),
            "unknown tool {tool:?}: one of {}",
            TOOLS.join(", ")
        );
    }
    let mut publish = cargo();
    publish.args(["publish", "--workspace", "--dry-run", "--allow-dirty", "--quiet"]);
    run(publish)?;
    let root = tempfile::tempdir()?;
    let target = workspace::root().join("target/install");
    for tool in TOOLS.iter().filter(|t| only.is_empty() || only.iter().any(|o| o == *t)) {
        let mut install = cargo();
        install
            .args(["install", "--quiet", "--locked", "--path"])
            .arg(workspace::root().join("crates").join(tool))
            .arg("--root")
            .arg(root.path())
            .env("CARGO_TARGET_DIR", &target);
        if debug {
            install.arg("--debug");
        }
        run(install)?;
        let binary = root.path().join("bin").join(tool);
        for flag in ["--version", "--help"] {
            let output = Command::new(&binary).arg(flag).output()?;
            let text = String::from_utf8_lossy(&output.stdout);
            anyhow::ensure!(
                output.status.success() && text.contains(tool),
                "{} {flag} failed ({}): {text}{}",
                binary.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        println!("installed alone and ran: {tool} ({})", binary.display());
    }
    Ok(())
}

/// Builds every binary the tests and `verify` start as processes.
fn build_binaries() -> anyhow::Result<()> {
    let mut build = cargo();
    build.args(["build", "--quiet", "--workspace", "--bins"]);
    run(build)
}

/// The database the marketplace keeps between runs of `cluster up --sandbox`
/// and `sandbox --services`.
const MARKETPLACE_DATABASE: &str = "postlaunch_sandbox";

/// Deploys deploy/sandbox to `cluster` with the launch plan's catalog, and
/// prints where it answers; the RabbitMQ node must live as long as the cluster.
async fn deploy_marketplace(cluster: &testkit::KubeCluster) -> anyhow::Result<testkit::RabbitMq> {
    println!("starting a RabbitMQ node and deploying deploy/sandbox/marketplace.yaml ...");
    let rabbit = testkit::RabbitMq::start().await?;
    let config = testkit::marketplace::ClusterConfig {
        database_url: testkit::ensure_database(MARKETPLACE_DATABASE).await?,
        redis_url: testkit::local_redis_url(),
        amqp_url: rabbit.amqp_url(),
        collections: 1_000,
        nfts: 100_000,
    };
    let started = std::time::Instant::now();
    testkit::marketplace::deploy_to_cluster(cluster, &config, std::time::Duration::from_secs(300))
        .await?;
    let gateway = cluster.service_address("default", "gateway", 80)?;
    println!(
        "marketplace ready in {:.1} s: {}\n\n\
         curl -s http://{gateway}/api/collections/1\n\
         cargo run -q -p load-tester -- run --target http://{gateway} --users 50 --duration 30s\n\
         (the pool criterion reads the catalog's pool: add --metrics-url http://TWIN:8080/metrics\n\
         for each catalog pod, TWIN being its pod IP with 127 for 198: kubectl get pods -l app=catalog -o wide)\n\
         kubectl get deployments,pods -o wide\n\
         RabbitMQ management: {} (guest/guest)\n",
        started.elapsed().as_secs_f64(),
        testkit::marketplace::CLUSTER_DEPLOYMENTS.join(", "),
        rabbit.management_url(),
    );
    Ok(rabbit)
}

/// `cargo xtask sandbox --services [ARGS]`: every role as a local process,
/// ARGS given to each, until Ctrl-C.
async fn services(args: &[String]) -> anyhow::Result<()> {
    let rabbit = testkit::RabbitMq::start().await?;
    let marketplace = testkit::Marketplace::start(testkit::MarketplaceOptions {
        database_url: Some(testkit::ensure_database(MARKETPLACE_DATABASE).await?),
        redis_url: Some(testkit::local_redis_url()),
        amqp_url: Some(rabbit.amqp_url()),
        common_args: args.to_vec(),
        ..testkit::MarketplaceOptions::default()
    })
    .await?;
    use testkit::marketplace::Role;
    println!(
        "marketplace services up:\n  gateway  {}\n  auth     {} (gRPC {})\n  catalog  {} (gRPC {})\n  \
         consumer {}\n  RabbitMQ {} (management {})\n\n\
         curl -s {}/api/collections/1\n\
         cargo run -q -p load-tester -- run --target {} --metrics-url {}/metrics --metrics-url {}/metrics\n\n\
         Ctrl-C stops them all.",
        marketplace.gateway_url(),
        marketplace.url(Role::Auth),
        marketplace.grpc_addr(Role::Auth).map(|a| a.to_string()).unwrap_or_default(),
        marketplace.url(Role::Catalog),
        marketplace.grpc_addr(Role::Catalog).map(|a| a.to_string()).unwrap_or_default(),
        marketplace.url(Role::Consumer),
        rabbit.amqp_url(),
        rabbit.management_url(),
        marketplace.gateway_url(),
        marketplace.gateway_url(),
        marketplace.gateway_url(),
        marketplace.url(Role::Catalog),
    );
    shared_types::signals::shutdown().await;
    drop(marketplace);
    drop(rabbit);
    Ok(())
}

fn test(no_install: bool, args: &[String]) -> anyhow::Result<()> {
    if !no_install {
        let mut install = Command::new("bash");
        install.arg(workspace::root().join("scripts/install-deps.sh"));
        run(install)?;
    }
    build_binaries()?;
    let mut test = cargo();
    test.args(["test", "--workspace"]).args(args);
    run(test)
}

/// Writes (or with `check`, compares) every published JSON Schema.
fn schema(check: bool) -> anyhow::Result<()> {
    let schemas = [
        ("docs/report-schema.json", verify::report_schema_text(), "the report types"),
        ("docs/verify-plan.schema.json", xtask::plan::schema_text(), "the verify plan"),
        (
            "docs/load-tester/scenario.schema.json",
            schema_text(&load_tester::scenario_schema()),
            "load-tester's scenario file types",
        ),
        (
            "docs/load-tester/metric-mapping.schema.json",
            schema_text(&load_tester::metric_mapping_schema()),
            "load-tester's MetricMapping",
        ),
        (
            "docs/alert-linter/config.schema.json",
            schema_text(&alert_linter::config_schema()),
            "alert-linter's config types",
        ),
        (
            "docs/reorg-sim/scenario.schema.json",
            schema_text(&reorg_sim::scenario_schema()),
            "reorg-sim's scenario types",
        ),
        (
            "docs/chaos-runner/experiment.schema.json",
            schema_text(&chaos_runner::experiment_schema()),
            "chaos-runner's experiment file types",
        ),
        (
            "docs/cost-analyzer/price-model.schema.json",
            schema_text(&cost_analyzer::price_model_schema()),
            "cost-analyzer's price model",
        ),
        (
            "docs/reorg-sim/mapping.schema.json",
            schema_text(&reorg_sim::mapping_schema()),
            "reorg-sim's SQL mapping",
        ),
    ];
    for (file, generated, source) in schemas {
        let path: PathBuf = workspace::root().join(file);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        if check {
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            anyhow::ensure!(
                committed == generated,
                "{} is out of date with {source}: run `cargo xtask schema`",
                path.display()
            );
            eprintln!("{} is up to date", path.display());
        } else {
            std::fs::write(&path, generated)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}

/// A schema as committed: pretty JSON (keys already sorted) and a final newline.
fn schema_text(schema: &serde_json::Value) -> String {
    let mut text = serde_json::to_string_pretty(schema).unwrap_or_default();
    text.push('\n');
    text
}
