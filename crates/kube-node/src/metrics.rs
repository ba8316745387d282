//! cAdvisor-style series for Prometheus, per container, read from /proc of
//! the real processes: `container_cpu_usage_seconds_total`,
//! `container_memory_working_set_bytes` (the group's resident set),
//! `container_spec_memory_limit_bytes` (0 without a limit, as cAdvisor),
//! with `namespace`, `pod`, `container` and `image` labels. Served at
//! `/metrics/cadvisor` on the node's kubelet port (the Node's
//! `status.daemonEndpoints.kubeletEndpoint.Port`), where Prometheus'
//! `kubernetes_sd_configs` role `node` finds it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

/// A running container.
#[derive(Debug, Clone)]
pub struct ContainerEntry {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
    /// Image as the manifest names it.
    pub image: String,
    /// Its process group.
    pub pgid: i32,
    /// Memory limit, bytes.
    pub limit_bytes: Option<u64>,
}

/// The containers a node runs, for scrapes.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<BTreeMap<String, ContainerEntry>>>,
}

impl Registry {
    /// Adds or replaces a container (after a restart its group changes).
    pub fn insert(&self, key: String, entry: ContainerEntry) {
        if let Ok(mut map) = self.inner.lock() {
            map.insert(key, entry);
        }
    }

    /// Forgets a container.
    pub fn remove(&self, key: &str) {
        if let Ok(mut map) = self.inner.lock() {
            map.remove(key);
        }
    }

    /// The Prometheus text exposition of every running container.
    pub fn render(&self) -> String {
        let entries: Vec<ContainerEntry> =
            self.inner.lock().map(|m| m.values().cloned().collect()).unwrap_or_default();
        let usage = crate::procfs::usage_by_group();
        let mut cpu = String::new();
        let mut mem = String::new();
        let mut limit = String::new();
        for e in &entries {
            let Some(u) = usage.get(&e.pgid) else { continue };
            let labels = format!(
                "container=\"{}\",image=\"{}\",namespace=\"{}\",pod=\"{}\"",
                escape(&e.container),
                escape(&e.image),
                escape(&e.namespace),
                escape(&e.pod)
            );
            let _ = writeln!(
                cpu,
                "container_cpu_usage_seconds_total{{{labels},cpu=\"total\"}} {}",
                u.cpu_seconds
            );
            let _ = writeln!(mem, "container_memory_working_set_bytes{{{labels}}} {}", u.rss_bytes);
            let _ = writeln!(
                limit,
                "container_spec_memory_limit_bytes{{{labels}}} {}",
                e.limit_bytes.unwrap_or(0)
            );
        }
        format!(
            "# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed in seconds.\n\
             # TYPE container_cpu_usage_seconds_total counter\n{cpu}\
             # HELP container_memory_working_set_bytes Current working set in bytes.\n\
             # TYPE container_memory_working_set_bytes gauge\n{mem}\
             # HELP container_spec_memory_limit_bytes Memory limit for the container.\n\
             # TYPE container_spec_memory_limit_bytes gauge\n{limit}"
        )
    }
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The node's HTTP endpoint: `/metrics/cadvisor`, `/healthz`, and
/// Prometheus HTTP service discovery at `/sd/pods` and `/sd/nodes` (see
/// [`crate::sd`]).
pub fn router(registry: Registry, client: kube::Client) -> axum::Router {
    use axum::routing::get;
    let pods_client = client.clone();
    axum::Router::new()
        .route("/sd/pods", get(move || crate::sd::pods(pods_client.clone())))
        .route("/sd/nodes", get(move || crate::sd::nodes(client.clone())))
        .route(
            "/metrics/cadvisor",
            get(move || {
                let registry = registry.clone();
                async move { ([("content-type", "text/plain; version=0.0.4")], registry.render()) }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
}
