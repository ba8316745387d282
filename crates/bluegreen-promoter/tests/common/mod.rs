//! Helpers of bluegreen-promoter's tests: the local cluster (upstream
//! control plane, postlaunch-node) with the sandbox as `shop` v1 blue, the
//! binary, kubectl reads, reports read back.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use shared_types::{Check, Report, Verdict};
use testkit::KubeCluster;

pub const BIN: &str = env!("CARGO_BIN_EXE_bluegreen-promoter");

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A cluster with `shop` v1 (2 blue pods) serving, and its URLs.
pub struct Shop {
    pub cluster: KubeCluster,
    pub dir: tempfile::TempDir,
    pub active_url: String,
    pub preview_url: String,
}

impl Shop {
    /// Starts the cluster and applies docs/bluegreen-promoter/shop.yaml.
    pub async fn start() -> Shop {
        let cluster = tokio::task::spawn_blocking(KubeCluster::start).await.unwrap().unwrap();
        let manifest = root().join("docs/bluegreen-promoter/shop.yaml");
        for args in [
            vec!["apply", "-f", manifest.to_str().unwrap()],
            vec!["rollout", "status", "deployment/shop-blue", "--timeout=120s"],
        ] {
            let out = cluster.kubectl().args(&args).output().unwrap();
            assert!(
                out.status.success(),
                "kubectl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let active_url =
            format!("http://{}", cluster.service_address("default", "shop", 80).unwrap());
        let preview_url =
            format!("http://{}", cluster.service_address("default", "shop-preview", 80).unwrap());
        let shop = Shop { cluster, dir: tempfile::tempdir().unwrap(), active_url, preview_url };
        shop.wait_version(&shop.active_url.clone(), "v1").await;
        shop
    }

    /// Runs kubectl; its output.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.cluster.kubectl().args(args).output().unwrap()
    }

    /// Runs kubectl, which must succeed; its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl get KIND NAME -o json`.
    pub fn get(&self, kind: &str, name: &str) -> Value {
        serde_json::from_str(&self.kubectl_ok(&["get", kind, name, "-o", "json"])).unwrap()
    }

    /// The colour the active Service selects.
    pub fn serving(&self) -> String {
        self.get("service", "shop")["spec"]["selector"]["colour"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// resourceVersions of everything the app is made of.
    pub fn versions(&self) -> Vec<(String, String)> {
        let out = self.kubectl_ok(&[
            "get",
            "deployments,services,replicasets,pods",
            "-o",
            "jsonpath={range .items[*]}{.kind}/{.metadata.name}={.metadata.resourceVersion}{\"\\n\"}{end}",
        ]);
        out.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// Waits until `url` answers with version `v`.
    pub async fn wait_version(&self, url: &str, v: &str) {
        let started = Instant::now();
        let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
        loop {
            if let Ok(r) = client.get(format!("{url}/healthz")).send().await
                && r.headers().get("x-release").and_then(|h| h.to_str().ok()) == Some(v)
            {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "{url} never answered as {v}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The common arguments: cluster, allow-list, state, the prober's URLs.
    pub fn args(&self) -> Vec<String> {
        [
            "--kubeconfig",
            &self.cluster.kubeconfig().display().to_string(),
            "--allow-namespace",
            "default",
            "--state-dir",
            &self.dir.path().join("state").display().to_string(),
            "--active-url",
            &self.active_url,
            "--preview-url",
            &self.preview_url,
            "--probe-path",
            "/api/collections/1",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// A file in the test's directory.
    pub fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    /// Runs the binary with `args` then `extra`, writing the report to `name`.json.
    pub async fn run(&self, args: &[String], name: &str) -> (i32, Option<Report>, String) {
        let report_path = self.dir.path().join(format!("{name}.json"));
        let mut all = args.to_vec();
        all.extend(["--report".to_owned(), report_path.display().to_string()]);
        let (code, stdout, stderr) = run(&all).await;
        let report =
            std::fs::read_to_string(&report_path).ok().map(|t| Report::from_json(&t).unwrap());
        let _ = std::fs::remove_file(&report_path);
        (code, report, format!("{stdout}\n{stderr}"))
    }
}

/// Runs the binary to the end: (exit code, stdout, stderr).
pub async fn run(args: &[String]) -> (i32, String, String) {
    let args = args.to_vec();
    let out = tokio::task::spawn_blocking(move || Command::new(BIN).args(&args).output().unwrap())
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `s` as owned strings.
pub fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|a| (*a).to_owned()).collect()
}

/// A check of the report, by id.
pub fn check<'a>(report: &'a Report, id: &str) -> &'a Check {
    report
        .checks
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no check {id}: {}", table(report)))
}

/// A measurement's value.
pub fn measure(report: &Report, name: &str) -> f64 {
    report.measurements.iter().find(|m| m.name == name).map_or(f64::NAN, |m| m.value)
}

/// The report as lines for failure messages.
pub fn table(report: &Report) -> String {
    report
        .checks
        .iter()
        .map(|c| {
            format!(
                "{} {:?}: {} {}",
                c.id,
                c.verdict,
                c.observed.clone().unwrap_or_default(),
                c.detail.clone().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts a check's verdict.
pub fn assert_verdict(report: &Report, id: &str, verdict: Verdict) {
    let c = check(report, id);
    assert_eq!(
        c.verdict,
        verdict,
        "{id}: {}\n{}",
        c.observed.clone().unwrap_or_default(),
        table(report)
    );
}

/// The generation and spec of a Deployment, for "untouched" comparisons.
pub fn fingerprint(d: &Value) -> (Value, Value) {
    (d["metadata"]["generation"].clone(), d["spec"].clone())
}
