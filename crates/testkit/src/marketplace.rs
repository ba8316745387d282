//! The sandbox as the marketplace's separate services: `gateway`, `auth`,
//! `catalog` and (with RabbitMQ) `consumer`, each its own process of the
//! sandbox binary on fixed loopback ports, so a role killed and started again
//! answers where its peers expect it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::ports::free_port;
use crate::sandbox::{Sandbox, default_binary};
use crate::{Error, Result};

/// One of the marketplace's services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Public REST/GraphQL routes, calling auth and catalog over gRPC.
    Gateway,
    /// Sign-in and sessions.
    Auth,
    /// Collections, NFTs, orders and the outbox relay.
    Catalog,
    /// Applies order events from RabbitMQ.
    Consumer,
}

impl Role {
    /// The `--role` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Auth => "auth",
            Role::Catalog => "catalog",
            Role::Consumer => "consumer",
        }
    }
}

/// What the marketplace runs against.
#[derive(Debug, Clone, Default)]
pub struct MarketplaceOptions {
    /// The sandbox binary; [`default_binary`] when `None`.
    pub binary: Option<PathBuf>,
    /// The catalog's (and orders') PostgreSQL; in memory when `None`.
    pub database_url: Option<String>,
    /// `--database-schema` of the catalog and the consumer.
    pub database_schema: Option<String>,
    /// The gateway's cache and auth's sessions; in-process when `None`.
    pub redis_url: Option<String>,
    /// RabbitMQ for the order events: the catalog relays its outbox there and
    /// a consumer is started (both need `database_url`).
    pub amqp_url: Option<String>,
    /// Mutual TLS between the roles, with certificates from `sandbox certs`.
    pub tls: bool,
    /// Arguments for every role (e.g. `--collections 50 --nfts 500`).
    pub common_args: Vec<String>,
    /// Arguments for the gateway only (e.g. `--breaker-failures 3`).
    pub gateway_args: Vec<String>,
}

#[derive(Debug)]
struct Process {
    running: Option<Sandbox>,
    http: SocketAddr,
    grpc: Option<SocketAddr>,
    args: Vec<String>,
}

/// The running services, killed when dropped.
#[derive(Debug)]
pub struct Marketplace {
    binary: PathBuf,
    processes: BTreeMap<Role, Process>,
    pki: Option<PathBuf>,
    _dir: TempDir,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Marketplace {
    /// Starts auth, catalog and the consumer, then the gateway pointing at them.
    pub async fn start(options: MarketplaceOptions) -> Result<Marketplace> {
        let binary = options.binary.clone().unwrap_or_else(default_binary);
        let dir = tempfile::Builder::new()
            .prefix("postlaunch-marketplace-")
            .tempdir()
            .map_err(|err| Error::io("cannot create a directory for the marketplace", err))?;
        let pki = if options.tls {
            let pki = dir.path().join("pki");
            write_certs(&binary, &pki)?;
            Some(pki)
        } else {
            None
        };
        let tls_args = |role: Role| -> Vec<String> {
            let Some(pki) = &pki else { return Vec::new() };
            let file = |name: String| pki.join(name).display().to_string();
            vec![
                "--tls-cert".to_owned(),
                file(format!("{}.pem", role.as_str())),
                "--tls-key".to_owned(),
                file(format!("{}-key.pem", role.as_str())),
                "--tls-ca".to_owned(),
                file("ca.pem".to_owned()),
            ]
        };
        let database: Vec<String> = options
            .database_url
            .iter()
            .flat_map(|url| ["--database-url".to_owned(), url.clone()])
            .chain(
                options
                    .database_schema
                    .iter()
                    .flat_map(|schema| ["--database-schema".to_owned(), schema.clone()]),
            )
            .collect();
        let amqp: Vec<String> = match (&options.amqp_url, &options.database_url) {
            (Some(url), Some(_)) => vec!["--amqp-url".to_owned(), url.clone()],
            _ => Vec::new(),
        };
        let scheme = if options.tls { "https" } else { "http" };

        let mut processes = BTreeMap::new();
        for role in [Role::Auth, Role::Catalog] {
            let grpc = loopback(free_port());
            let mut args = vec!["--role".to_owned(), role.as_str().to_owned()];
            args.extend(["--grpc-listen".to_owned(), grpc.to_string()]);
            args.extend(tls_args(role));
            if role == Role::Catalog {
                args.extend(database.iter().cloned());
                args.extend(amqp.iter().cloned());
            }
            // Auth keeps its sessions in Redis when there is one: every
            // replica and a restarted auth honour them.
            if let (Role::Auth, Some(url)) = (role, &options.redis_url) {
                args.extend(["--redis-url".to_owned(), url.clone()]);
            }
            args.extend(options.common_args.iter().cloned());
            processes.insert(
                role,
                Process { running: None, http: loopback(free_port()), grpc: Some(grpc), args },
            );
        }
        if !amqp.is_empty() {
            let mut args = vec!["--role".to_owned(), "consumer".to_owned()];
            args.extend(database.iter().cloned());
            args.extend(amqp.iter().cloned());
            processes.insert(
                Role::Consumer,
                Process { running: None, http: loopback(free_port()), grpc: None, args },
            );
        }
        let peer = |role: Role| {
            let addr = processes[&role].grpc.expect("auth and catalog serve gRPC");
            format!("{scheme}://{addr}")
        };
        let mut args = vec!["--role".to_owned(), "gateway".to_owned()];
        args.extend(["--auth-url".to_owned(), peer(Role::Auth)]);
        args.extend(["--catalog-url".to_owned(), peer(Role::Catalog)]);
        args.extend(tls_args(Role::Gateway));
        if let Some(url) = &options.redis_url {
            args.extend(["--redis-url".to_owned(), url.clone()]);
        }
        args.extend(options.gateway_args.iter().cloned());
        args.extend(options.common_args.iter().cloned());
        processes.insert(
            Role::Gateway,
            Process { running: None, http: loopback(free_port()), grpc: None, args },
        );

        let mut marketplace = Marketplace { binary, processes, pki, _dir: dir };
        for role in [Role::Auth, Role::Catalog, Role::Consumer, Role::Gateway] {
            if marketplace.processes.contains_key(&role) {
                marketplace.restart(role).await?;
            }
        }
        Ok(marketplace)
    }

    fn process(&self, role: Role) -> &Process {
        self.processes.get(&role).expect("the role was started (a consumer needs amqp_url)")
    }

    fn process_mut(&mut self, role: Role) -> &mut Process {
        self.processes.get_mut(&role).expect("the role was started (a consumer needs amqp_url)")
    }

    /// `http://127.0.0.1:PORT` of the gateway: the marketplace's public URL.
    pub fn gateway_url(&self) -> String {
        self.url(Role::Gateway)
    }

    /// `http://127.0.0.1:PORT` of a role's HTTP port (for auth, catalog and
    /// the consumer: `/healthz`, `/readyz`, `/metrics`).
    pub fn url(&self, role: Role) -> String {
        format!("http://{}", self.process(role).http)
    }

    /// The gRPC address of auth or catalog.
    pub fn grpc_addr(&self, role: Role) -> Option<SocketAddr> {
        self.process(role).grpc
    }

    /// The directory of `ca.pem`, `ROLE.pem` and `ROLE-key.pem`, with TLS.
    pub fn pki_dir(&self) -> Option<&Path> {
        self.pki.as_deref()
    }

    /// The process id of a running role.
    pub fn pid(&self, role: Role) -> Option<u32> {
        self.process(role).running.as_ref().map(Sandbox::pid)
    }

    /// The stderr log of a role's latest process.
    pub fn log_path(&self, role: Role) -> Option<PathBuf> {
        self.process(role).running.as_ref().map(|s| s.log_path().to_path_buf())
    }

    /// Kills a role with SIGKILL, like a crash.
    pub async fn kill(&mut self, role: Role) -> Result<()> {
        if let Some(mut sandbox) = self.process_mut(role).running.take() {
            sandbox.kill().await?;
        }
        Ok(())
    }

    /// Stops a role with SIGTERM (graceful).
    pub async fn stop(&mut self, role: Role) -> Result<()> {
        if let Some(mut sandbox) = self.process_mut(role).running.take() {
            sandbox.stop().await?;
        }
        Ok(())
    }

    /// Starts a role again (stopping it first if it runs), on the same ports.
    pub async fn restart(&mut self, role: Role) -> Result<()> {
        self.stop(role).await?;
        let binary = self.binary.clone();
        let process = self.process_mut(role);
        let sandbox = Sandbox::start_at(&binary, process.http, &process.args).await?;
        process.running = Some(sandbox);
        Ok(())
    }
}

fn write_certs(binary: &Path, dir: &Path) -> Result<()> {
    let output = std::process::Command::new(binary)
        .arg("certs")
        .arg(dir)
        .output()
        .map_err(|err| Error::io(format!("cannot run {} certs", binary.display()), err))?;
    if !output.status.success() {
        return Err(Error::Unexpected {
            what: format!("{} certs {}", binary.display(), dir.display()),
            detail: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(())
}

/// The shared services the cluster's marketplace uses: the keys of the
/// `marketplace` ConfigMap (`deploy/sandbox/config/marketplace.yaml`).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `DATABASE_URL`: the catalog, orders and the indexer's tables.
    pub database_url: String,
    /// `REDIS_URL`: the gateway's cache.
    pub redis_url: String,
    /// `AMQP_URL`: the order events.
    pub amqp_url: String,
    /// `CATALOG_COLLECTIONS` and `CATALOG_NFTS`: the seeded catalog.
    pub collections: u32,
    /// See `collections`.
    pub nfts: u32,
}

/// The Deployments of `deploy/sandbox/marketplace.yaml`.
pub const CLUSTER_DEPLOYMENTS: [&str; 6] =
    ["auth", "catalog", "gateway", "consumer", "chain", "indexer"];

/// Applies the marketplace to `cluster` (namespace `default`): the
/// `marketplace` ConfigMap from `config`, then `deploy/sandbox/marketplace.yaml`
/// with kubectl, and waits up to `timeout` for every Deployment to have all its
/// replicas ready. On a timeout the error lists each Deployment's state.
pub async fn deploy_to_cluster(
    cluster: &crate::KubeCluster,
    config: &ClusterConfig,
    timeout: std::time::Duration,
) -> Result<()> {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, Patch, PatchParams};

    let client = cluster.client().await?;
    let failed = |what: &str, detail: String| Error::Unexpected { what: what.to_owned(), detail };
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let data = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "marketplace"},
        "data": {
            "DATABASE_URL": config.database_url,
            "REDIS_URL": config.redis_url,
            "AMQP_URL": config.amqp_url,
            "CATALOG_COLLECTIONS": config.collections.to_string(),
            "CATALOG_NFTS": config.nfts.to_string(),
            "CHAIN_SCENARIO": "launch-plan",
            "CHAIN_STEP_INTERVAL": "30s",
        }
    });
    configmaps
        .patch("marketplace", &PatchParams::apply("testkit").force(), &Patch::Apply(&data))
        .await
        .map_err(|e| failed("applying the marketplace ConfigMap", e.to_string()))?;
    let manifest = crate::sandbox::workspace_root().join("deploy/sandbox/marketplace.yaml");
    let output = cluster
        .kubectl()
        .arg("apply")
        .arg("-f")
        .arg(&manifest)
        .output()
        .map_err(|err| Error::io("cannot run kubectl", err))?;
    if !output.status.success() {
        return Err(failed(
            &format!("kubectl apply -f {}", manifest.display()),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ));
    }
    let deployments: Api<Deployment> = Api::namespaced(client, "default");
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut waiting = Vec::new();
        for name in CLUSTER_DEPLOYMENTS {
            let deployment = deployments
                .get(name)
                .await
                .map_err(|e| failed(&format!("reading deployment {name}"), e.to_string()))?;
            let want = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let status = deployment.status.unwrap_or_default();
            let ready = status.ready_replicas.unwrap_or(0);
            let updated = status.updated_replicas.unwrap_or(0);
            if ready < want || updated < want {
                waiting.push(format!("{name}: {ready}/{want} ready, {updated} updated"));
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(failed(
                &format!("waiting {timeout:?} for the marketplace's Deployments"),
                format!(
                    "{}; pod logs are under {}",
                    waiting.join("; "),
                    cluster.log_path("postlaunch-node").with_file_name("node").display()
                ),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}
