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
//! Service cluster IPs come from 198.18.128.0/24 (the benchmarking range,
//! which carries no traffic here) and nothing ever dials them.
//!
//! ```text
//! <tmp>/pki/          ca.crt, apiserver.crt/key, admin.crt/key, sa.key/pub
//! <tmp>/etcd/         etcd's data
//! <tmp>/kubeconfig    admin credentials for kubectl and clients
//! <tmp>/*.log         one log per process
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::error::tail_of_file;
use crate::{Error, Result, binaries, free_port};

/// How long the API server may take to answer `/readyz` once started.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running control plane. Every process is killed on drop.
#[derive(Debug)]
pub struct KubeCluster {
    dir: TempDir,
    api_port: u16,
    children: Vec<(&'static str, Child)>,
    /// How long `start` took, for people reading test output.
    pub started_in: Duration,
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
    /// Starts etcd and the three control-plane processes on free loopback
    /// ports; returns once the API server is ready and the `default`
    /// namespace has its service account (the token controller works).
    pub fn start() -> Result<KubeCluster> {
        let began = Instant::now();
        let bin = control_plane_binaries()?;
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
        make_pki(&pki)?;

        let api_port = free_port();
        let mut cluster =
            KubeCluster { dir, api_port, children: Vec::new(), started_in: Duration::ZERO };
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
                "198.18.128.0/24",
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
        cluster.started_in = began.elapsed();
        Ok(cluster)
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
        let log = std::fs::File::create(self.log_path(name))
            .map_err(|err| Error::io(format!("cannot create {name}.log"), err))?;
        let err_log = log.try_clone().map_err(|err| Error::io("cannot clone a log handle", err))?;
        let child = Command::new(program)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .spawn()
            .map_err(|err| Error::io(format!("cannot start {}", program.display()), err))?;
        self.children.push((name, child));
        Ok(())
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

impl Drop for KubeCluster {
    /// Stops the control plane before etcd (reverse start order).
    fn drop(&mut self) {
        for (_, child) in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| Error::io("cannot run openssl (apt-get install openssl)", err))?;
    if output.status.success() {
        return Ok(());
    }
    Err(Error::ProcessFailed {
        what: format!("KubeCluster step pki: openssl {}", args.join(" ")),
        exit_code: output.status.code(),
        log_tail: String::from_utf8_lossy(&output.stderr).into_owned(),
        log_path: None,
        hint: "openssl 3 is expected (Debian's)".to_owned(),
    })
}

/// CA, API server serving certificate, admin client certificate and the
/// service-account signing key pair.
fn make_pki(pki: &Path) -> Result<()> {
    openssl(
        pki,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=postlaunch-kube-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    )?;
    let sign = |name: &str, subject: &str, ext: &str| -> Result<()> {
        openssl(
            pki,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                subject,
            ],
        )?;
        std::fs::write(pki.join(format!("{name}.ext")), ext)
            .map_err(|err| Error::io(format!("cannot write {name}.ext"), err))?;
        openssl(
            pki,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.crt"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ],
        )
    };
    sign(
        "apiserver",
        "/CN=kube-apiserver",
        "subjectAltName=IP:127.0.0.1,IP:198.18.128.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    )?;
    sign(
        "admin",
        "/O=system:masters/CN=postlaunch-admin",
        "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
    )?;
    openssl(pki, &["genrsa", "-out", "sa.key", "2048"])?;
    openssl(pki, &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"])
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
