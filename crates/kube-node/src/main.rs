//! `postlaunch-node`: registers Nodes with a Kubernetes API server and runs
//! the pods bound to them as local processes, with a Service proxy.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use kube_node::addr::PodIps;
use kube_node::images::ImageTable;
use kube_node::metrics::Registry;
use kube_node::node::NodeSpec;
use kube_node::pods::NodeContext;

/// A Kubernetes node that runs pods as local processes (for tests and the
/// sandbox cluster; not for production).
///
/// Examples:
///   postlaunch-node --kubeconfig /tmp/kube/kubeconfig --slot 7
///   postlaunch-node --kubeconfig KC --slot 7 --node node-a,zone=local-a --node node-b,zone=local-b,cpu=2
///   postlaunch-node --kubeconfig KC --slot 7 --image postlaunch/sandbox=target/debug/sandbox
///
/// Pods get IPs in 198.19.SLOT.0/24 and listen on the loopback twin
/// 127.19.SLOT.x (the env var POD_LOOPBACK_IP; write `$(POD_LOOPBACK_IP)` in
/// args). Services with cluster IP 198.18.SLOT.x are served at 127.18.SLOT.x.
/// Stdout gets one line per registered node, then `postlaunch-node ready`.
///
/// Exit codes: 0 stopped by a signal, 2 bad parameters, 3 the API server
/// could not be reached or refused the node.
#[derive(Debug, Parser)]
#[command(name = "postlaunch-node", version, verbatim_doc_comment)]
struct Args {
    /// Kubeconfig of the cluster to join.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Cluster slot (1-127): pod IPs 198.19.SLOT.0/24, Service IPs 198.18.SLOT.0/24.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=127))]
    slot: u8,
    /// A node: `NAME[,cpu=4][,memory=8Gi][,pods=110][,zone=Z][,instance-type=T][,label.K=V]`. Repeatable.
    #[arg(long = "node", default_value = "node-1")]
    nodes: Vec<String>,
    /// An image: REPOSITORY=EXECUTABLE. Repeatable. Built in: postlaunch/sandbox,
    /// postlaunch/reorg-sim, postlaunch/load-tester (beside this binary),
    /// postlaunch/python (python3), postlaunch/shell (/bin/sh).
    #[arg(long = "image")]
    images: Vec<String>,
    /// Pod logs and working directories.
    #[arg(long, default_value = "/tmp/postlaunch-node")]
    state_dir: PathBuf,
    /// First back-off step between restarts after the first, immediate one
    /// (doubling up to 5 min; the kubelet uses 10s).
    #[arg(long, default_value = "10s", value_parser = shared_types::parse_duration)]
    restart_backoff: Duration,
    /// Do not run the Service proxy.
    #[arg(long)]
    no_service_proxy: bool,
    /// Do not install `unreachable` routes for the slot's ranges (needs root).
    #[arg(long)]
    no_route: bool,
    /// Log format on stderr.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    shared_types::init_logs(&args.log_format, "info,kube=warn,hyper=warn");
    // Two rustls providers are linked in a workspace build (ring here,
    // aws-lc-rs through aws-sdk elsewhere): name the one kube's TLS uses.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut specs = Vec::new();
    for text in &args.nodes {
        match NodeSpec::parse(text) {
            Ok(spec) => specs.push(spec),
            Err(why) => {
                eprintln!("postlaunch-node: {why}");
                return ExitCode::from(2);
            }
        }
    }
    let mut entries = default_images();
    entries.extend(args.images.iter().cloned());
    let images = match ImageTable::parse(&entries) {
        Ok(images) => images,
        Err(why) => {
            eprintln!("postlaunch-node: {why}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("postlaunch-node: cannot start the runtime: {err}");
            return ExitCode::from(3);
        }
    };
    // Removed on drop: after a normal stop and after a panic unwinds.
    let _routes = Routes(if args.no_route { Vec::new() } else { add_routes(args.slot) });
    runtime.block_on(run(args, specs, images))
}

/// The `unreachable` routes this node added.
struct Routes(Vec<String>);

impl Drop for Routes {
    fn drop(&mut self) {
        for route in &self.0 {
            let _ = std::process::Command::new("ip")
                .args(["route", "del", "unreachable", route])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// Images found beside this binary (a cargo target directory) and on the system.
fn default_images() -> Vec<String> {
    let mut out = Vec::new();
    let dir = std::env::current_exe().ok().and_then(|p| p.parent().map(PathBuf::from));
    for name in ["sandbox", "reorg-sim", "load-tester"] {
        if let Some(path) = dir.as_ref().map(|d| d.join(name)).filter(|p| p.exists()) {
            out.push(format!("postlaunch/{name}={}", path.display()));
        }
    }
    out.push("postlaunch/python=python3".to_owned());
    out.push("postlaunch/shell=/bin/sh".to_owned());
    out
}

/// `unreachable` routes for the slot's pod and Service ranges, so a dial of
/// a pod or cluster IP fails here instead of leaving the machine.
fn add_routes(slot: u8) -> Vec<String> {
    let mut added = Vec::new();
    for range in [format!("198.18.{slot}.0/24"), format!("198.19.{slot}.0/24")] {
        let status = std::process::Command::new("ip")
            .args(["route", "add", "unreachable", &range])
            .stderr(std::process::Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => added.push(range),
            _ => {
                tracing::warn!(%range, "could not add an unreachable route (not root, or it exists)")
            }
        }
    }
    added
}

async fn run(args: Args, specs: Vec<NodeSpec>, images: ImageTable) -> ExitCode {
    let config = match kube::config::Kubeconfig::read_from(&args.kubeconfig) {
        Ok(kc) => {
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
        }
        Err(err) => {
            eprintln!("postlaunch-node: cannot read {}: {err}", args.kubeconfig.display());
            return ExitCode::from(2);
        }
    };
    let client = match config
        .map_err(|e| e.to_string())
        .and_then(|c| kube::Client::try_from(c).map_err(|e| e.to_string()))
    {
        Ok(client) => client,
        Err(err) => {
            eprintln!("postlaunch-node: kubeconfig {}: {err}", args.kubeconfig.display());
            return ExitCode::from(2);
        }
    };
    let ips = Arc::new(Mutex::new(PodIps::new(args.slot)));
    let cidr = ips.lock().map(|i| i.cidr()).unwrap_or_default();
    let mut tasks = Vec::new();
    for spec in specs {
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(err) => {
                eprintln!("postlaunch-node: cannot listen for metrics: {err}");
                return ExitCode::from(3);
            }
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        if let Err(err) = kube_node::node::register(&client, &spec, &cidr, port).await {
            eprintln!("postlaunch-node: registering node {}: {err}", spec.name);
            return ExitCode::from(3);
        }
        let registry = Registry::default();
        let router = kube_node::metrics::router(registry.clone(), client.clone());
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        }));
        let ctx = Arc::new(NodeContext {
            client: client.clone(),
            node_name: spec.name.clone(),
            images: images.clone(),
            ips: ips.clone(),
            state_dir: args.state_dir.clone(),
            restart_backoff: args.restart_backoff,
            registry,
            host_ip: "127.0.0.1".to_owned(),
        });
        tasks.push(tokio::spawn(kube_node::pods::run(ctx)));
        tasks.push(tokio::spawn(kube_node::node::heartbeat(client.clone(), spec.name.clone())));
        println!(
            "postlaunch-node: node {} registered, cAdvisor metrics at http://127.0.0.1:{port}/metrics/cadvisor",
            spec.name
        );
    }
    if !args.no_service_proxy {
        tasks.push(tokio::spawn(kube_node::proxy::run(client.clone())));
    }
    println!("postlaunch-node ready");
    shared_types::signals::shutdown().await;
    for task in tasks {
        task.abort();
    }
    ExitCode::SUCCESS
}
