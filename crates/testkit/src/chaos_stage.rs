//! The stage chaos-runner's launch-plan matrix plays on: the sandbox
//! marketplace as processes (gateway, auth, catalog, consumer) on a scratch
//! database of the machine's PostgreSQL, its Redis and a RabbitMQ node of
//! its own, every dependency behind one `chaos-runner proxy`, a Prometheus
//! loaded with the shipped marketplace rules scraping the gateway, and a
//! signed-in session. [`ChaosStage::vars`] fills the launch plan's
//! `${VARS}`. Used by chaos-runner's tests and `cargo xtask verify`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::marketplace::Role;
use crate::wallet::{Wallet, sign_in};
use crate::{
    Error, Marketplace, MarketplaceOptions, Prometheus, PrometheusOptions, RabbitMq, Result,
    TempDatabase,
};

/// How the stage is built.
#[derive(Debug, Clone, Default)]
pub struct ChaosStageOptions {
    /// The chaos-runner binary (for its proxy); default `target/debug/chaos-runner`.
    pub chaos_runner: Option<PathBuf>,
    /// The sandbox binary; default `target/debug/sandbox`.
    pub sandbox: Option<PathBuf>,
    /// Start the sandbox broken on purpose (`--no-cache-fallback --no-outbox`).
    pub broken: bool,
    /// Messages of the flood row (the launch plan's default is 10,000).
    pub flood_messages: Option<u32>,
}

/// The running stage; every process stops when it is dropped.
#[derive(Debug)]
pub struct ChaosStage {
    /// The marketplace.
    pub marketplace: Marketplace,
    /// Prometheus with the shipped rules.
    pub prometheus: Prometheus,
    /// The RabbitMQ node.
    pub rabbitmq: RabbitMq,
    /// The control API of the fault proxy.
    pub proxy_api: String,
    /// The scratch database (direct, not through the proxy).
    pub database: TempDatabase,
    vars: Vec<(String, String)>,
    proxy: Child,
}

fn free_port() -> u16 {
    crate::ports::free_port()
}

fn unexpected(what: &str, detail: String) -> Error {
    Error::Unexpected { what: what.to_owned(), detail }
}

impl ChaosStage {
    /// Starts everything (20 to 40 s, RabbitMQ most of it).
    pub async fn start(options: ChaosStageOptions) -> Result<ChaosStage> {
        let database = TempDatabase::create().await?;
        let rabbitmq = RabbitMq::start().await?;
        let pg = shared_types::url_hosts(database.url())
            .into_iter()
            .next()
            .map(|h| h.entry)
            .ok_or_else(|| {
                unexpected("reading the database URL", format!("no host in {}", database.url()))
            })?;
        let redis = crate::local::local_redis_url();
        let redis = redis.trim_start_matches("redis://").trim_end_matches('/').to_owned();
        let upstreams = [
            ("postgres", pg.clone()),
            ("redis", redis),
            ("amqp", format!("127.0.0.1:{}", rabbitmq.amqp_port())),
        ];
        let binary = options
            .chaos_runner
            .clone()
            .unwrap_or_else(|| crate::workspace_binary("debug", "chaos-runner"));
        let api_port = free_port();
        let mut cmd = Command::new(&binary);
        cmd.args(["proxy", "--api", &format!("127.0.0.1:{api_port}")]);
        let mut ports = Vec::new();
        for (name, upstream) in &upstreams {
            let port = free_port();
            ports.push(port);
            cmd.args(["--proxy", &format!("{name}=127.0.0.1:{port},{upstream}")]);
        }
        let mut proxy = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().map_err(|e| {
            Error::io(
                format!("starting {} proxy (cargo build -p chaos-runner)", binary.display()),
                e,
            )
        })?;
        let mut line = String::new();
        if let Some(out) = proxy.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        if !line.starts_with("chaos-runner proxy listening on ") {
            let _ = proxy.kill();
            return Err(unexpected("starting chaos-runner proxy", format!("it printed {line:?}")));
        }
        let through = |port: u16| database.url().replacen(&pg, &format!("127.0.0.1:{port}"), 1);
        let mut common_args: Vec<String> =
            ["--collections", "20", "--nfts", "200"].map(str::to_owned).to_vec();
        common_args.extend([
            "--cache-namespace".to_owned(),
            format!("chaos-{}-{}", std::process::id(), api_port),
        ]);
        if options.broken {
            common_args.extend(["--no-cache-fallback".to_owned(), "--no-outbox".to_owned()]);
        }
        let marketplace = Marketplace::start(MarketplaceOptions {
            binary: Some(options.sandbox.clone().unwrap_or_else(crate::sandbox::default_binary)),
            database_url: Some(through(ports[0])),
            redis_url: Some(format!("redis://127.0.0.1:{}/", ports[1])),
            amqp_url: Some(format!("amqp://guest:guest@127.0.0.1:{}/%2f", ports[2])),
            common_args,
            ..MarketplaceOptions::default()
        })
        .await?;
        let gateway = marketplace.gateway_url();
        let prometheus = Prometheus::start(PrometheusOptions {
            targets: vec![gateway.trim_start_matches("http://").to_owned()],
            rule_files: vec![
                crate::sandbox::workspace_root().join("docs/alert-linter/marketplace-rules.yml"),
            ],
            ..PrometheusOptions::default()
        })
        .await?;
        let token = sign_in(&gateway, &Wallet::new(7), "chaos-stage")
            .await
            .map_err(|(status, body)| unexpected("signing in", format!("{status} {body}")))?;
        let auth = marketplace.grpc_addr(Role::Auth).ok_or_else(|| {
            unexpected("finding the auth role", "it has no gRPC address".to_owned())
        })?;
        let proxy_api = format!("http://127.0.0.1:{api_port}");
        let mut vars = vec![
            ("GATEWAY".to_owned(), gateway),
            ("TOKEN".to_owned(), token),
            ("DEVICE".to_owned(), "chaos-stage".to_owned()),
            ("PROXY_API".to_owned(), proxy_api.clone()),
            // Only this stage's auth process: never another sandbox on the machine.
            ("AUTH_MATCH".to_owned(), format!("--role auth --grpc-listen {auth}")),
            ("DATABASE_URL".to_owned(), database.url().to_owned()),
            ("PROMETHEUS".to_owned(), prometheus.url().to_owned()),
            ("AMQP_URL".to_owned(), rabbitmq.amqp_url()),
        ];
        if let Some(n) = options.flood_messages {
            vars.push(("FLOOD_MESSAGES".to_owned(), n.to_string()));
        }
        Ok(ChaosStage { marketplace, prometheus, rabbitmq, proxy_api, database, vars, proxy })
    }

    /// `--var NAME=VALUE` arguments filling the launch plan's variables.
    pub fn vars(&self) -> Vec<String> {
        self.vars.iter().flat_map(|(k, v)| ["--var".to_owned(), format!("{k}={v}")]).collect()
    }
}

impl Drop for ChaosStage {
    fn drop(&mut self) {
        let _ = self.proxy.kill();
        let _ = self.proxy.wait();
    }
}
