//! The upstream Kubernetes control plane on loopback: etcd, kube-apiserver,
//! kube-controller-manager and kube-scheduler, all upstream binaries
//! (Kubernetes 1.20.2 built from Debian's source package by
//! `scripts/build-kubernetes.sh`; etcd is Debian's `etcd-server`).
//!
//! Nothing here is ours but the wiring: certificates made with openssl at
//! start (a CA, the API server's serving certificate for 127.0.0.1, an admin
//! client certificate in `system:masters`, the service-account key pair),
//! free loopback ports, and a kubeconfig file. The API server runs with TLS,
//! RBAC and the Node authorizer; the controller manager runs every controller
//! but node lifecycle (no kubelet heartbeats here), including the
//! service-account token controller without which no pod can be created.
//! Each cluster takes a free *slot* K (1-127, held by a lock file for its
//! lifetime, so clusters of parallel tests never share addresses): Service
//! cluster IPs come from 198.18.K.0/24 and pod IPs from 198.19.K.0/24 (the
//! benchmarking range, which carries no traffic here). Nothing dials them:
//! pods listen, and the Service proxy accepts, on their loopback twins
//! (`198.19.K.x` → `127.19.K.x`; see the `kube-node` crate).
//!
//! The node is ours, not upstream: `postlaunch-node` (crate `kube-node`)
//! registers the Nodes, runs the pods bound to them as local processes and
//! proxies Services. Upstream's kubelet needs a container runtime, which
//! these machines cannot run.
//!
//! ```text
//! <tmp>/pki/          ca.crt, apiserver.crt/key, admin.crt/key, sa.key/pub
//! <tmp>/etcd/         etcd's data
//! <tmp>/kubeconfig    admin credentials for kubectl and clients
//! <tmp>/*.log         one log per process (postlaunch-node.log: the node's)
//! <tmp>/node/         pod logs: pods/NAMESPACE_NAME_UID/CONTAINER.log
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::error::tail_of_file;
use crate::pki::{self, Key};
use crate::{Error, Result, binaries, free_port};

/// How long the API server may take to answer `/readyz` once started.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the slot lock files live.
const SLOT_DIR: &str = "/tmp/postlaunch-kube-slots";

/// What a [`KubeCluster`] runs besides the control plane.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// `postlaunch-node --node` specs (`NAME[,cpu=4][,memory=8Gi][,zone=Z]...`);
    /// empty: no node (control plane only).
    pub nodes: Vec<String>,
    /// Extra `--image REPOSITORY=PATH` entries.
    pub images: Vec<String>,
    /// The node's first back-off step between container restarts (the
    /// kubelet's 10 s is slow for tests; 1 s by default here).
    pub restart_backoff: Duration,
}

impl Default for KubeOptions {
    /// One node, `node-1`, with 4 CPUs and 8Gi, in zone `local-a`.
    fn default() -> Self {
        KubeOptions {
            nodes: vec!["node-1".to_owned()],
            images: Vec::new(),
            restart_backoff: Duration::from_secs(1),
        }
    }
}

/// A running control plane and node. Every process is stopped on drop.
#[derive(Debug)]
pub struct KubeCluster {
    dir: TempDir,
    api_port: u16,
    slot: u8,
    _slot_lock: File,
    node: Option<Child>,
    children: Vec<(&'static str, Child)>,
    /// How long `start` took, for people reading test output.
    pub started_in: Duration,
}

/// Takes the first free slot: its lock file stays locked while the cluster runs.
fn take_slot() -> Result<(u8, File)> {
    std::fs::create_dir_all(SLOT_DIR)
        .map_err(|err| Error::io(format!("cannot create {SLOT_DIR}"), err))?;
    for slot in 1..=127u8 {
        let path = Path::new(SLOT_DIR).join(format!("slot-{slot}.lock"));
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|err| Error::io(format!("cannot open {}", path.display()), err))?;
        if file.try_lock().is_ok() {
            return Ok((slot, file));
        }
    }
    Err(Error::io(
        "every KubeCluster slot (1-127) is taken",
        std::io::Error::other(format!("all lock files in {SLOT_DIR} are held")),
    ))
}

/// `postlaunch-node`, built by `cargo build --workspace --bins` (which
/// `cargo xtask test` runs first).
pub fn node_binary() -> Result<PathBuf> {
    let path = crate::sandbox::workspace_binary("debug", "postlaunch-node");
    if path.exists() {
        return Ok(path);
    }
    Err(Error::BinaryNotFound {
        name: "postlaunch-node".to_owned(),
        searched: path.display().to_string(),
        hint: "cargo build -p kube-node (cargo xtask test builds every binary first)".to_owned(),
    })
}

/// The directory holding the upstream binaries: the cache that
/// `scripts/build-kubernetes.sh` fills, building on first use (about 9
/// minutes on 2 cores, once per machine).
pub fn control_plane_binaries() -> Result<PathBuf> {
    let script = crate::sandbox::workspace_root().join("scripts/build-kubernetes.sh");
    let output = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|err| Error::io(format!("cannot run {}", script.display()), err))?;
    let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if !output.status.success() || !dir.join("kube-apiserver").exists() {
        return Err(Error::ProcessFailed {
            what: format!("building the Kubernetes control plane ({})", script.display()),
            exit_code: output.status.code(),
            log_tail: String::from_utf8_lossy(&output.stdout).into_owned(),
            log_path: None,
            hint: "read the script's output above; it needs apt (Debian's golang-go, etcd-server)"
                .to_owned(),
        });
    }
    Ok(dir)
}

impl KubeCluster {
    /// [`KubeCluster::start_with`] the default options: one node.
    pub fn start() -> Result<KubeCluster> {
        KubeCluster::start_with(&KubeOptions::default())
    }

    /// Starts etcd and the three control-plane processes on free loopback
    /// ports, then `postlaunch-node` with `options`; returns once the API
    /// server is ready, the `default` namespace has its service account (the
    /// token controller works) and every node is registered and Ready.
    pub fn start_with(options: &KubeOptions) -> Result<KubeCluster> {
        let began = Instant::now();
        let bin = control_plane_binaries()?;
        let node_bin = if options.nodes.is_empty() { None } else { Some(node_binary()?) };
        let etcd = binaries::which("etcd").ok_or_else(|| Error::BinaryNotFound {
            name: "etcd".to_owned(),
            searched: "on PATH".to_owned(),
            hint: "apt-get install etcd-server (scripts/build-kubernetes.sh does)".to_owned(),
        })?;
        let dir = tempfile::Builder::new()
            .prefix("postlaunch-kube-")
            .tempdir()
            .map_err(|err| Error::io("cannot create a temporary directory for KubeCluster", err))?;
        let pki = dir.path().join("pki");
        std::fs::create_dir(&pki).map_err(|err| Error::io("cannot create pki/", err))?;
        let (slot, slot_lock) = take_slot()?;
        make_pki(&pki, slot)?;

        let api_port = free_port();
        let mut cluster = KubeCluster {
            dir,
            api_port,
            slot,
            _slot_lock: slot_lock,
            node: None,
            children: Vec::new(),
            started_in: Duration::ZERO,
        };
        let d = cluster.dir.path().to_owned();
        let kubeconfig = cluster.kubeconfig();
        write_kubeconfig(&kubeconfig, api_port, &pki)?;

        let (etcd_port, peer_port) = (free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        cluster.spawn(
            "etcd",
            &etcd,
            &[
                "--name",
                "default",
                "--data-dir",
                &path(&d.join("etcd")),
                "--listen-client-urls",
                &etcd_url,
                "--advertise-client-urls",
                &etcd_url,
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
                "--initial-cluster",
                &format!("default=http://127.0.0.1:{peer_port}"),
                "--listen-metrics-urls",
                &format!("http://127.0.0.1:{}", free_port()),
            ],
        )?;
        let etcd_deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", etcd_port)).is_err() {
            if Instant::now() > etcd_deadline {
                return Err(cluster.failed("etcd", "etcd did not listen within 20 s"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }

        let p = |f: &str| path(&pki.join(f));
        cluster.spawn(
            "kube-apiserver",
            &bin.join("kube-apiserver"),
            &[
                "--etcd-servers",
                &etcd_url,
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
                "--secure-port",
                &api_port.to_string(),
                "--tls-cert-file",
                &p("apiserver.crt"),
                "--tls-private-key-file",
                &p("apiserver.key"),
                "--client-ca-file",
                &p("ca.crt"),
                "--service-account-key-file",
                &p("sa.pub"),
                "--service-account-signing-key-file",
                &p("sa.key"),
                "--service-account-issuer",
                "https://kubernetes.default.svc.cluster.local",
                "--authorization-mode",
                "Node,RBAC",
                "--service-cluster-ip-range",
                &format!("198.18.{slot}.0/24"),
                "--allow-privileged=true",
                "--profiling=false",
            ],
        )?;
        cluster.wait_ready()?;

        let kc = path(&kubeconfig);
        cluster.spawn(
            "kube-controller-manager",
            &bin.join("kube-controller-manager"),
            &[
                "--kubeconfig",
                &kc,
                "--authentication-kubeconfig",
                &kc,
                "--authorization-kubeconfig",
                &kc,
                "--controllers",
                "*,-nodelifecycle",
                "--service-account-private-key-file",
                &p("sa.key"),
                "--root-ca-file",
                &p("ca.crt"),
                "--use-service-account-credentials=false",
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                &free_port().to_string(),
                "--port",
                "0",
                "--leader-elect=false",
            ],
        )?;
        cluster.spawn(
            "kube-scheduler",
            &bin.join("kube-scheduler"),
            &[
                "--kubeconfig",
                &kc,
                "--authentication-kubeconfig",
                &kc,
                "--authorization-kubeconfig",
                &kc,
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                &free_port().to_string(),
                "--port",
                "0",
                "--leader-elect=false",
            ],
        )?;
        cluster.wait_for_default_service_account()?;
        if let Some(node_bin) = node_bin {
            cluster.start_node(&node_bin, options)?;
        }
        cluster.started_in = began.elapsed();
        Ok(cluster)
    }

    fn start_node(&mut self, program: &Path, options: &KubeOptions) -> Result<()> {
        let log_path = self.log_path("postlaunch-node");
        let mut cmd = Command::new(program);
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--slot")
            .arg(self.slot.to_string())
            .arg("--state-dir")
            .arg(self.dir.path().join("node"))
            .arg("--restart-backoff")
            .arg(format!("{}ms", options.restart_backoff.as_millis()));
        for node in &options.nodes {
            cmd.arg("--node").arg(node);
        }
        for image in &options.images {
            cmd.arg("--image").arg(image);
        }
        self.node = Some(self.launch("postlaunch-node", &mut cmd)?);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if text.lines().any(|l| l == "postlaunch-node ready") {
                break;
            }
            if let Some(node) = &mut self.node
                && !matches!(node.try_wait(), Ok(None))
            {
                return Err(self.failed("postlaunch-node", "exited during start-up"));
            }
            if Instant::now() > deadline {
                return Err(
                    self.failed("postlaunch-node", "did not register its nodes within 60 s")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // The scheduler must see the nodes Ready and untainted before pods can land.
        let names: Vec<&str> =
            options.nodes.iter().map(|n| n.split(',').next().unwrap_or("")).collect();
        while Instant::now() < deadline {
            let ready = names.iter().all(|name| {
                self.kubectl()
                    .args([
                        "get",
                        "node",
                        name,
                        "-o",
                        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.spec.taints}",
                    ])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "True")
            });
            if ready {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(self.failed("postlaunch-node", "its nodes were not Ready and untainted within 60 s"))
    }

    /// Kills the node process with SIGKILL, as a crash would (its pods'
    /// processes die with it: they run under PR_SET_PDEATHSIG).
    pub fn kill_node(&mut self) {
        if let Some(mut node) = self.node.take() {
            let _ = node.kill();
            let _ = node.wait();
        }
        self.remove_routes();
    }

    /// Removes the slot's unreachable routes if the node could not (it was
    /// killed); nothing when they are gone already.
    fn remove_routes(&self) {
        for range in [format!("198.18.{}.0/24", self.slot), format!("198.19.{}.0/24", self.slot)] {
            let _ = Command::new("ip")
                .args(["route", "del", "unreachable", &range])
                .stderr(Stdio::null())
                .status();
        }
    }

    /// The cluster's slot: pod IPs in 198.19.SLOT.0/24, Service IPs in 198.18.SLOT.0/24.
    pub fn slot(&self) -> u8 {
        self.slot
    }

    /// A `kube` client with the admin credentials.
    pub async fn client(&self) -> Result<kube::Client> {
        // ring, named: a workspace build links aws-lc-rs too, and rustls
        // then cannot pick a provider on its own.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let fail = |what: String| Error::io("KubeCluster client", std::io::Error::other(what));
        let kubeconfig = kube::config::Kubeconfig::read_from(self.kubeconfig())
            .map_err(|e| fail(e.to_string()))?;
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .map_err(|e| fail(e.to_string()))?;
        kube::Client::try_from(config).map_err(|e| fail(e.to_string()))
    }

    /// Where a Service's cluster IP is served: its loopback twin
    /// (`198.18.K.x:PORT` → `127.18.K.x:PORT`), from `kubectl get service`.
    pub fn service_address(&self, namespace: &str, name: &str, port: u16) -> Result<String> {
        let out = self
            .kubectl()
            .args(["-n", namespace, "get", "service", name, "-o", "jsonpath={.spec.clusterIP}"])
            .output()
            .map_err(|err| Error::io("cannot run kubectl", err))?;
        let ip = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        loopback_twin(&ip).map(|twin| format!("{twin}:{port}")).ok_or_else(|| {
            Error::io(
                format!("service {namespace}/{name}"),
                std::io::Error::other(format!("cluster IP {ip:?} is not in 198.18.0.0/15")),
            )
        })
    }

    /// Prometheus `scrape_configs` entries discovering this cluster through
    /// the API server: job `kubernetes-pods` (pods annotated
    /// `prometheus.io/scrape: "true"`, at `prometheus.io/port` and
    /// `prometheus.io/path`, their IPs mapped to the loopback twins, each pod
    /// label a series label, e.g. `colour`, `app`) and job
    /// `kubernetes-cadvisor` (each node's `/metrics/cadvisor`).
    ///
    /// Debian's Prometheus is built without `kubernetes_sd_configs`, so the
    /// targets come from the node's HTTP service discovery (`/sd/pods`,
    /// `/sd/nodes`), which lists the API server's pods and nodes with the
    /// same `__meta_kubernetes_*` labels; the relabelling below is what one
    /// writes for `kubernetes_sd_configs` on a real cluster.
    pub fn prometheus_scrape_configs(&self) -> String {
        let port = self.node_metrics_port().unwrap_or(0);
        let sd = |role: &str| {
            format!(
                "    http_sd_configs:\n      - url: \"http://127.0.0.1:{port}/sd/{role}\"\n        refresh_interval: 2s\n"
            )
        };
        let pods = r#"    relabel_configs:
      - { source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape], regex: "true", action: keep }
      - { source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path], regex: "(.+)", target_label: __metrics_path__ }
      - { source_labels: [__meta_kubernetes_pod_ip, __meta_kubernetes_pod_annotation_prometheus_io_port], regex: "198\\.(\\d+\\.\\d+\\.\\d+);(\\d+)", replacement: "127.$1:$2", target_label: __address__ }
      - { source_labels: [__address__], regex: "198\\.(1[89]\\..*)", replacement: "127.$1", target_label: __address__ }
      - { source_labels: [__meta_kubernetes_namespace], target_label: namespace }
      - { source_labels: [__meta_kubernetes_pod_name], target_label: pod }
      - { regex: "__meta_kubernetes_pod_label_(.+)", action: labelmap }
"#;
        let nodes = "    relabel_configs:\n      - { source_labels: [__meta_kubernetes_node_name], target_label: node }\n";
        format!(
            "  - job_name: kubernetes-pods\n{}{pods}  - job_name: kubernetes-cadvisor\n    metrics_path: /metrics/cadvisor\n{}{nodes}",
            sd("pods"),
            sd("nodes"),
        )
    }

    /// The first node's HTTP port (`/metrics/cadvisor`, `/sd/*`), from its log.
    pub fn node_metrics_port(&self) -> Option<u16> {
        let log = std::fs::read_to_string(self.log_path("postlaunch-node")).ok()?;
        let line = log.lines().find(|l| l.contains("cAdvisor metrics at http://127.0.0.1:"))?;
        let rest = &line[line.find("127.0.0.1:")? + "127.0.0.1:".len()..];
        rest.split('/').next()?.parse().ok()
    }

    /// `https://127.0.0.1:PORT`.
    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.api_port)
    }

    /// The admin kubeconfig (`kubectl --kubeconfig PATH ...`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// A `kubectl` command with this cluster's kubeconfig.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(binaries::which("kubectl").unwrap_or_else(|| "kubectl".into()));
        cmd.arg("--kubeconfig").arg(self.kubeconfig()).stdin(Stdio::null());
        cmd
    }

    /// The log of one process (`etcd`, `kube-apiserver`, ...).
    pub fn log_path(&self, process: &str) -> PathBuf {
        self.dir.path().join(format!("{process}.log"))
    }

    /// Whether each process is still running, by name.
    pub fn processes_running(&mut self) -> Vec<(&'static str, bool)> {
        self.children.iter_mut().map(|(n, c)| (*n, matches!(c.try_wait(), Ok(None)))).collect()
    }

    fn spawn(&mut self, name: &'static str, program: &Path, args: &[&str]) -> Result<()> {
        let child = self.launch(name, Command::new(program).args(args))?;
        self.children.push((name, child));
        Ok(())
    }

    /// Starts `cmd` in the cluster's directory, stdout and stderr to `NAME.log`.
    fn launch(&self, name: &str, cmd: &mut Command) -> Result<Child> {
        let log = File::create(self.log_path(name))
            .map_err(|err| Error::io(format!("cannot create {name}.log"), err))?;
        let err_log = log.try_clone().map_err(|err| Error::io("cannot clone a log handle", err))?;
        cmd.current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .spawn()
            .map_err(|err| {
                Error::io(format!("cannot start {}", cmd.get_program().to_string_lossy()), err)
            })
    }

    fn failed(&self, process: &str, what: &str) -> Error {
        Error::ProcessFailed {
            what: format!("KubeCluster step {process}: {what}"),
            exit_code: None,
            log_tail: tail_of_file(&self.log_path(process), 30),
            log_path: Some(self.log_path(process)),
            hint: "read the process log".to_owned(),
        }
    }

    fn kubectl_ok(&self, args: &[&str]) -> bool {
        self.kubectl()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if self.kubectl_ok(&["get", "--raw", "/readyz"]) {
                return Ok(());
            }
            let exited = self
                .children
                .iter_mut()
                .find_map(|(name, c)| (!matches!(c.try_wait(), Ok(None))).then_some(*name));
            if let Some(name) = exited {
                return Err(self.failed(name, "exited during start-up"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(self.failed("kube-apiserver", "/readyz did not answer ok within 60 s"))
    }

    /// The token controller creates `default/default` and its token; until
    /// then no pod can be admitted.
    fn wait_for_default_service_account(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            let secrets = self
                .kubectl()
                .args(["get", "serviceaccount", "default", "-o", "jsonpath={.secrets[0].name}"])
                .output();
            if secrets.is_ok_and(|o| o.status.success() && !o.stdout.is_empty()) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(self.failed(
            "kube-controller-manager",
            "the default service account got no token within 60 s",
        ))
    }
}

/// `198.18.a.b` / `198.19.a.b` → `127.18.a.b` / `127.19.a.b`.
pub fn loopback_twin(ip: &str) -> Option<String> {
    let rest = ip.strip_prefix("198.")?;
    (rest.starts_with("18.") || rest.starts_with("19.")).then(|| format!("127.{rest}"))
}

impl Drop for KubeCluster {
    /// Stops the node first (SIGTERM, so it removes its routes and kills its
    /// pods), then the control plane before etcd (reverse start order).
    fn drop(&mut self) {
        if let Some(mut node) = self.node.take() {
            if let Some(pid) =
                i32::try_from(node.id()).ok().and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(node.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = node.kill();
            let _ = node.wait();
            self.remove_routes();
        }
        for (_, child) in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// CA, API server serving certificate, admin client certificate and the
/// service-account signing key pair.
fn make_pki(pki: &Path, slot: u8) -> Result<()> {
    pki::ca(pki, "ca", "postlaunch-kube-ca", Key::Rsa2048)?;
    pki::signed(
        pki,
        "ca",
        "apiserver",
        "/CN=kube-apiserver",
        &format!(
            "subjectAltName=IP:127.0.0.1,IP:198.18.{slot}.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"
        ),
        Key::Rsa2048,
    )?;
    pki::signed(
        pki,
        "ca",
        "admin",
        "/O=system:masters/CN=postlaunch-admin",
        "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
        Key::Rsa2048,
    )?;
    pki::openssl(pki, &["genrsa", "-out", "sa.key", "2048"])?;
    pki::openssl(pki, &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"])
}

fn write_kubeconfig(file: &Path, port: u16, pki: &Path) -> Result<()> {
    let p = |f: &str| path(&pki.join(f));
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: postlaunch\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority: {ca}\n\
         users:\n- name: admin\n  user:\n    client-certificate: {crt}\n    client-key: {key}\n\
         contexts:\n- name: postlaunch\n  context:\n    cluster: postlaunch\n    user: admin\n    namespace: default\ncurrent-context: postlaunch\n",
        ca = p("ca.crt"),
        crt = p("admin.crt"),
        key = p("admin.key"),
    );
    std::fs::write(file, text)
        .map_err(|err| Error::io(format!("cannot write {}", file.display()), err))
}
