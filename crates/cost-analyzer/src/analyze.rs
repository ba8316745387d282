//! From what was read to what to change: recommendations with current cost,
//! proposal, monthly saving and risk; allocation by namespace, workload and
//! label with idle cost as its own line; reconciliation with a bill; the
//! verdicts.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use shared_types::{Check, Measurement, Report};

use crate::bill::Bill;
use crate::kube::{Inventory, Workload};
use crate::price::PriceModel;
use crate::prom::{self, Prometheus};
use crate::s3::BucketUsage;
use crate::{Error, quantity};

/// The analysis's settings (KRR's defaults where it has them).
#[derive(Debug, Clone)]
pub struct Options {
    /// History looked at (14 days).
    pub window: Duration,
    /// Range-query step.
    pub step: Duration,
    /// The `rate()` window of counters.
    pub rate_window: Duration,
    /// Fewest samples of a container before it is judged (KRR: 100).
    pub min_samples: usize,
    /// CPU request = this quantile of usage (0.95).
    pub cpu_quantile: f64,
    /// Memory = peak × (1 + this) (0.15).
    pub memory_buffer: f64,
    /// A workload serving fewer requests per second than this over the whole window is idle.
    pub idle_rps: f64,
    /// Series names and queries.
    pub metrics: Metrics,
    /// The plan's savings target (0.30).
    pub target_savings: f64,
    /// The bill may differ from the allocation by this share (0.05).
    pub reconcile_tolerance: f64,
    /// Chargeback by this label.
    pub label: Option<String>,
    /// Backups older than this are past retention.
    pub retention: Duration,
}

/// Series names and queries, mappable.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// CPU seconds counter per container.
    pub cpu: String,
    /// Working-set bytes per container.
    pub memory: String,
    /// Requests per second per pod; `$RATE` is the rate window.
    pub requests_query: String,
    /// Pool connections in use per pod.
    pub pool_in_use: String,
    /// Pool size per pod.
    pub pool_max: String,
    /// Connections open on the database server (postgres_exporter's
    /// `pg_stat_activity_count`): the peak over the window.
    pub db_connections: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            cpu: "container_cpu_usage_seconds_total".into(),
            memory: "container_memory_working_set_bytes".into(),
            // A pod that exports the counter but served nothing but its own
            // scrapes has no matching series: the `or` gives it a 0.
            requests_query: "sum by (namespace, pod) (rate(http_requests_total{route!~\"/metrics|/healthz|/readyz\"}[$RATE])) \
                             or (0 * sum by (namespace, pod) (rate(http_requests_total[$RATE])))"
                .into(),
            pool_in_use: "db_connections_in_use".into(),
            pool_max: "db_connections_max".into(),
            db_connections: "pg_stat_activity_count".into(),
        }
    }
}

/// A PostgreSQL server as read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Database {
    /// host:port/dbname.
    pub target: String,
    /// `max_connections`.
    pub max_connections: f64,
    /// Connections now (pg_stat_activity).
    pub connections: f64,
}

/// What was read, each part optional.
#[derive(Debug, Default)]
pub struct Inputs {
    /// The cluster.
    pub inventory: Option<Inventory>,
    /// Prometheus.
    pub prometheus: Option<Prometheus>,
    /// S3 buckets.
    pub buckets: Option<Vec<BucketUsage>>,
    /// Databases.
    pub databases: Vec<Database>,
    /// The price model and where it came from.
    pub prices: Option<(PriceModel, String)>,
    /// A bill.
    pub bill: Option<(Bill, String)>,
    /// Last month's report.
    pub baseline: Option<Report>,
}

/// One recommendation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    /// Stable id, e.g. `rightsize/default/deployment/shop`.
    pub id: String,
    /// rightsize, idle, volume, node-packing, s3-expire, s3-multipart, s3-class, monitoring, database.
    pub kind: String,
    /// What it is about.
    pub target: String,
    /// What is there now.
    pub current: String,
    /// What to change.
    pub proposed: String,
    /// Monthly cost now.
    pub current_monthly: f64,
    /// Monthly cost after.
    pub proposed_monthly: f64,
    /// Monthly saving (negative: it costs more, e.g. an under-requested container).
    pub saving_monthly: f64,
    /// low, medium or high.
    pub risk: String,
    /// Why, and why that risk.
    pub reason: String,
    /// Whether the saving counts in the total (node packing only realizes others).
    pub in_total: bool,
    /// A `kubectl patch` body, where one applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<Value>,
}

/// A recommendation withheld for lack of evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Withheld {
    /// The workload.
    pub target: String,
    /// Why.
    pub reason: String,
}

/// Usage of one container of a workload over the window.
#[derive(Debug, Clone, Default)]
struct Usage {
    cpu: Vec<f64>,
    memory_peak: f64,
    memory_samples: usize,
}

fn money(v: f64) -> String {
    format!("{v:.2}")
}

/// Unit prices per hour: (per vCPU, per GiB) and the node cost per month.
fn unit_prices(prices: &PriceModel, inv: Option<&Inventory>) -> (f64, f64, f64, Vec<String>) {
    let w = prices.default_node;
    let mut notes = Vec::new();
    let Some(inv) = inv.filter(|i| !i.nodes.is_empty()) else {
        return (
            w.cpu_hour,
            w.memory_gib_hour,
            0.0,
            vec!["no nodes: per-resource default prices".into()],
        );
    };
    let (mut total, mut weighted) = (0.0, 0.0);
    for n in &inv.nodes {
        let gib = n.memory / GIB;
        let (hourly, by_type) = prices.node_hourly(n.instance_type.as_deref(), n.cpu, gib);
        if !by_type {
            notes.push(format!(
                "node {}: instance type {} not in the price model, priced per resource",
                n.name,
                n.instance_type.as_deref().unwrap_or("(none)")
            ));
        }
        total += hourly;
        weighted += n.cpu * w.cpu_hour + gib * w.memory_gib_hour;
    }
    let k = if weighted > 0.0 { total / weighted } else { 1.0 };
    (k * w.cpu_hour, k * w.memory_gib_hour, total * prices.hours(), notes)
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Monthly cost of requests.
fn request_cost(cpu: f64, memory: f64, replicas: f64, cpu_h: f64, mem_h: f64, hours: f64) -> f64 {
    replicas * (cpu * cpu_h + memory / GIB * mem_h) * hours
}

/// Memory for a container: its peak plus the buffer (KRR), at least 16 MiB,
/// and never below its OOM-kill level: a container killed at a limit needed
/// more than that, so it gets the level plus 25 % whatever its samples say
/// (samples taken between kills miss the spike that killed it).
pub fn memory_recommendation(peak: f64, buffer: f64, kill_level: Option<f64>) -> f64 {
    let from_usage = (peak * (1.0 + buffer)).max(16.0 * 1024.0 * 1024.0);
    match kill_level {
        Some(level) => from_usage.max(level * 1.25),
        None => from_usage,
    }
}

/// The analysis. Prometheus is queried here; everything else was read before.
pub async fn analyze(inputs: &Inputs, o: &Options) -> Result<Report, Error> {
    let default_prices;
    let (prices, price_source) = match &inputs.prices {
        Some((p, s)) => (p, s.clone()),
        None => {
            default_prices = PriceModel::default_model();
            (&default_prices, "the default price model".to_owned())
        }
    };
    let hours = prices.hours();
    let target = match (&inputs.inventory, &inputs.prometheus) {
        (Some(_), Some(p)) => format!("cluster + {}", p.url()),
        (Some(_), None) => "cluster".to_owned(),
        (None, Some(p)) => p.url().to_owned(),
        (None, None) => "S3 and databases".to_owned(),
    };
    let mut report = Report::new("cost-analyzer", env!("CARGO_PKG_VERSION"), target);
    let (cpu_h, mem_h, node_monthly, mut notes) = unit_prices(prices, inputs.inventory.as_ref());
    notes.push(format!(
        "prices: {price_source} ({}, {}, {})",
        prices.source, prices.date, prices.currency
    ));
    let empty = Inventory::default();
    let inv = inputs.inventory.as_ref().unwrap_or(&empty);

    // Inputs, each named when absent.
    let input = |id: &str, given: bool, seen: String, flag: &str| {
        if given {
            Check::pass(format!("inputs/{id}"), format!("{id} read"), seen)
        } else {
            Check::skipped(
                format!("inputs/{id}"),
                format!("{id} read"),
                format!("not given ({flag}): its recommendations are not made"),
            )
        }
    };
    report.push_check(input(
        "kubernetes",
        inputs.inventory.is_some(),
        format!(
            "{} nodes, {} workloads, {} pods, {} claims",
            inv.nodes.len(),
            inv.workloads.len(),
            inv.pods.len(),
            inv.claims.len()
        ),
        "--kubeconfig",
    ));
    report.push_check(input(
        "prometheus",
        inputs.prometheus.is_some(),
        inputs.prometheus.as_ref().map_or(String::new(), |p| p.url().to_owned()),
        "--prometheus",
    ));
    report.push_check(input(
        "s3",
        inputs.buckets.is_some(),
        format!("{} buckets", inputs.buckets.as_ref().map_or(0, Vec::len)),
        "--s3-endpoint / --bucket",
    ));
    report.push_check(input(
        "postgres",
        !inputs.databases.is_empty(),
        format!("{} servers", inputs.databases.len()),
        "--database-url",
    ));

    // Usage per workload container, and request rates per workload.
    let end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let start = end - o.window.as_secs_f64();
    let rate = format!("{}s", o.rate_window.as_secs().max(1));
    let pod_workload: BTreeMap<(String, String), String> = inv
        .pods
        .iter()
        .filter_map(|p| Some(((p.namespace.clone(), p.name.clone()), p.workload.clone()?)))
        .collect();
    let workload_of = |labels: &BTreeMap<String, String>| -> Option<String> {
        let ns = labels.get("namespace")?;
        let pod = labels.get("pod")?;
        pod_workload.get(&(ns.clone(), pod.clone())).cloned().or_else(|| {
            crate::kube::workload_of_pod_name(&inv.workloads, ns, pod).map(Workload::id)
        })
    };
    let mut usage: BTreeMap<(String, String), Usage> = BTreeMap::new();
    let mut rps: BTreeMap<String, f64> = BTreeMap::new();
    let mut pools: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    // The server's open connections at their peak over the window, when a
    // postgres_exporter series is scraped.
    let mut db_peak: Option<f64> = None;
    if let Some(p) = &inputs.prometheus {
        let cpu = p
            .range(
                &format!("rate({}{{container!=\"\",container!=\"POD\"}}[{rate}])", o.metrics.cpu),
                start,
                end,
                o.step,
            )
            .await?;
        for s in cpu {
            let (Some(w), Some(c)) = (workload_of(&s.labels), s.labels.get("container")) else {
                continue;
            };
            usage.entry((w, c.clone())).or_default().cpu.extend(s.values);
        }
        let memory = p
            .range(
                &format!("{}{{container!=\"\",container!=\"POD\"}}", o.metrics.memory),
                start,
                end,
                o.step,
            )
            .await?;
        for s in memory {
            let (Some(w), Some(c)) = (workload_of(&s.labels), s.labels.get("container")) else {
                continue;
            };
            let u = usage.entry((w, c.clone())).or_default();
            u.memory_samples += s.values.len();
            u.memory_peak = s.values.iter().copied().fold(u.memory_peak, f64::max);
        }
        let requests =
            p.range(&o.metrics.requests_query.replace("$RATE", &rate), start, end, o.step).await?;
        for s in requests {
            let Some(w) = workload_of(&s.labels) else { continue };
            let peak = s.values.iter().copied().fold(0.0, f64::max);
            *rps.entry(w).or_default() += peak;
        }
        let window = format!("{}s", o.window.as_secs().max(1));
        for (labels, v) in
            p.instant(&format!("max_over_time({}[{window}])", o.metrics.pool_in_use)).await?
        {
            if let Some(w) = workload_of(&labels) {
                let e = pools.entry(w).or_default();
                e.0 = e.0.max(v);
            }
        }
        let step = o.step.as_secs().max(1);
        db_peak = p
            .instant(&format!("max_over_time(sum({})[{window}:{step}s])", o.metrics.db_connections))
            .await?
            .into_iter()
            .map(|(_, v)| v)
            .find(|v| v.is_finite());
        for (labels, v) in
            p.instant(&format!("max_over_time({}[{window}])", o.metrics.pool_max)).await?
        {
            if let Some(w) = workload_of(&labels) {
                let e = pools.entry(w).or_default();
                e.1 = e.1.max(v);
            }
        }
    }

    let mut recs: Vec<Recommendation> = Vec::new();
    let mut withheld: Vec<Withheld> = Vec::new();
    let mut allocation: BTreeMap<String, f64> = BTreeMap::new();
    let mut by_namespace: BTreeMap<String, f64> = BTreeMap::new();
    let mut by_label: BTreeMap<String, f64> = BTreeMap::new();
    let mut requested_total = 0.0;
    // The right-sized totals, for node packing: (cpu, memory) requested after.
    let (mut cpu_after, mut mem_after) = (0.0, 0.0);
    let mut judged = 0usize;
    // What the services' pools can open, and at most had open, over the window.
    let (mut pool_capacity, mut pool_peak) = (0.0, 0.0);
    for w in &inv.workloads {
        let id = w.id();
        let cpu_req: f64 = w.containers.iter().map(|c| c.cpu_request.unwrap_or(0.0)).sum();
        let mem_req: f64 = w.containers.iter().map(|c| c.memory_request.unwrap_or(0.0)).sum();
        let cost = request_cost(cpu_req, mem_req, w.replicas, cpu_h, mem_h, hours);
        requested_total += cost;
        allocation.insert(id.clone(), cost);
        *by_namespace.entry(w.namespace.clone()).or_default() += cost;
        if let Some(key) = &o.label {
            let value = w.labels.get(key).cloned().unwrap_or_else(|| "(none)".into());
            *by_label.entry(format!("{key}={value}")).or_default() += cost;
        }
        // Pools, whether or not the workload's requests change.
        if let Some((peak, max)) = pools.get(&id).copied().filter(|(_, max)| *max > 0.0) {
            pool_capacity += max * w.replicas;
            pool_peak += peak * w.replicas;
            let size = ((peak * 1.5).ceil() + 1.0).max(2.0);
            if size < max {
                recs.push(Recommendation {
                    id: format!("pool/{id}"),
                    kind: "database".into(),
                    target: id.clone(),
                    current: format!("pool of {max} per replica, {peak} in use at most"),
                    proposed: format!("pool of {size} per replica (peak × 1.5 + 1)"),
                    current_monthly: 0.0,
                    proposed_monthly: 0.0,
                    saving_monthly: 0.0,
                    risk: "low".into(),
                    reason: format!(
                        "frees {} database connections over {} replicas",
                        (max - size) * w.replicas,
                        w.replicas
                    ),
                    in_total: false,
                    patch: None,
                });
            }
        }
        if inputs.prometheus.is_none() || w.replicas == 0.0 {
            cpu_after += cpu_req * w.replicas;
            mem_after += mem_req * w.replicas;
            continue;
        }
        let oom: Vec<&crate::kube::OomKill> = inv
            .pods
            .iter()
            .filter(|p| p.workload.as_deref() == Some(id.as_str()))
            .flat_map(|p| p.oom.iter())
            .collect();
        // Evidence per container.
        let mut short = Vec::new();
        let mut lines = (Vec::new(), Vec::new());
        let (mut new_cpu, mut new_mem) = (0.0, 0.0);
        let mut risk = "low";
        let mut reasons = Vec::new();
        let mut patch_containers = Vec::new();
        let mut cpu_p95_total = 0.0;
        for c in &w.containers {
            let u = usage.get(&(id.clone(), c.name.clone())).cloned().unwrap_or_default();
            let samples = u.cpu.len().min(u.memory_samples);
            if samples < o.min_samples {
                short.push(format!("{}: {samples} samples", c.name));
                continue;
            }
            let mut cpu_values = u.cpu.clone();
            let p95 = prom::quantile(&mut cpu_values, o.cpu_quantile);
            cpu_p95_total += p95;
            let mut cpu_rec = p95.max(0.01);
            if let Some(t) = w.hpa.as_ref().and_then(|h| h.cpu_target_percent).filter(|t| *t > 0) {
                let floor = p95 / (f64::from(t) / 100.0);
                if floor > cpu_rec {
                    cpu_rec = floor;
                }
                risk = "medium";
                reasons.push(format!(
                    "HPA {} scales on {t}% CPU: {}'s request kept >= p95/{t}% so it scales at the same load; savings assume today's {} replicas",
                    w.hpa.as_ref().map_or("", |h| h.name.as_str()),
                    c.name,
                    w.replicas
                ));
            }
            let kills: Vec<&&crate::kube::OomKill> =
                oom.iter().filter(|k| k.container == c.name).collect();
            let kill_level = kills.iter().filter_map(|k| k.limit).reduce(f64::max);
            let mem_rec = memory_recommendation(u.memory_peak, o.memory_buffer, kill_level);
            if let Some(level) = kill_level {
                risk = "high";
                let last = kills
                    .iter()
                    .filter_map(|k| k.at.clone())
                    .max()
                    .unwrap_or_else(|| "recently".into());
                reasons.push(format!(
                    "{} was OOM-killed at its {} limit ({last}, {} restarts): memory is not lowered below that level, it is raised to {} (kill level + 25 %)",
                    c.name,
                    quantity::memory(level),
                    kills.iter().map(|k| k.restarts).max().unwrap_or(0),
                    quantity::memory(mem_rec)
                ));
            } else if !kills.is_empty() {
                risk = "high";
                reasons.push(format!("{} was OOM-killed with no memory limit set", c.name));
            }
            if u.memory_peak > 0.0
                && c.memory_limit.is_some_and(|l| u.memory_peak > 0.9 * l)
                && risk != "high"
            {
                risk = "medium";
                reasons.push(format!("{} peaked within 10 % of its memory limit", c.name));
            }
            if samples < 2 * o.min_samples && risk == "low" {
                risk = "medium";
                reasons
                    .push(format!("{} has {samples} samples, under twice --min-samples", c.name));
            }
            new_cpu += cpu_rec;
            new_mem += mem_rec;
            lines.0.push(format!(
                "{}: cpu {} mem {}",
                c.name,
                c.cpu_request.map_or("none".into(), quantity::cpu),
                c.memory_request.map_or("none".into(), quantity::memory)
            ));
            lines.1.push(format!(
                "{}: cpu {} mem {} (p{:.0} {}, peak {} + {:.0} %)",
                c.name,
                quantity::cpu(cpu_rec),
                quantity::memory(mem_rec),
                o.cpu_quantile * 100.0,
                quantity::cpu(p95),
                quantity::memory(u.memory_peak),
                o.memory_buffer * 100.0
            ));
            patch_containers.push(json!({
                "name": c.name,
                "resources": {
                    "requests": {"cpu": quantity::cpu(cpu_rec), "memory": quantity::memory(mem_rec)},
                    "limits": {"memory": quantity::memory(mem_rec)},
                }
            }));
        }
        if !short.is_empty() {
            withheld.push(Withheld {
                target: id.clone(),
                reason: format!(
                    "{}; fewer than --min-samples {} over the {} s window: no recommendation",
                    short.join(", "),
                    o.min_samples,
                    o.window.as_secs()
                ),
            });
            cpu_after += cpu_req * w.replicas;
            mem_after += mem_req * w.replicas;
            continue;
        }
        judged += 1;
        // Idle: nothing served over the whole window.
        if let Some(r) = rps.get(&id).copied()
            && r < o.idle_rps
            && cpu_p95_total < 0.05
        {
            recs.push(Recommendation {
                id: format!("idle/{id}"),
                kind: "idle".into(),
                target: id.clone(),
                current: format!("{} replicas, {} req/s at most over the window", w.replicas, (r * 1000.0).round() / 1000.0),
                proposed: "scale to 0 or remove".into(),
                current_monthly: cost,
                proposed_monthly: 0.0,
                saving_monthly: cost,
                risk: "medium".into(),
                reason: format!(
                    "served under {} req/s for the whole {} s window (CPU p95 {}); check it is not a batch or standby service before removing it",
                    o.idle_rps,
                    o.window.as_secs(),
                    quantity::cpu(cpu_p95_total)
                ),
                in_total: true,
                patch: Some(json!({"spec": {"replicas": 0}})),
            });
            continue;
        }
        let new_cost = request_cost(new_cpu, new_mem, w.replicas, cpu_h, mem_h, hours);
        cpu_after += new_cpu * w.replicas;
        mem_after += new_mem * w.replicas;
        let changed = (new_cpu - cpu_req).abs() > 0.1 * cpu_req.max(0.01)
            || (new_mem - mem_req).abs() > 0.1 * mem_req.max(1.0);
        if !changed {
            continue;
        }
        if reasons.is_empty() {
            reasons.push(format!(
                "{} samples per container over the window; usage is steady",
                o.min_samples
            ));
        }
        recs.push(Recommendation {
            id: format!("rightsize/{id}"),
            kind: "rightsize".into(),
            target: id.clone(),
            current: format!("{} × [{}]", w.replicas, lines.0.join("; ")),
            proposed: format!("{} × [{}]", w.replicas, lines.1.join("; ")),
            current_monthly: cost,
            proposed_monthly: new_cost,
            saving_monthly: cost - new_cost,
            risk: risk.into(),
            reason: reasons.join("; "),
            in_total: true,
            patch: Some(json!({"spec": {"template": {"spec": {"containers": patch_containers}}}})),
        });
    }

    // Volumes: unbound claims, and bound ones no pod mounts.
    let mounted: BTreeSet<(String, String)> = inv
        .pods
        .iter()
        .flat_map(|p| p.claims.iter().map(|c| (p.namespace.clone(), c.clone())))
        .collect();
    let mut storage_monthly = 0.0;
    for c in &inv.claims {
        let price = prices.storage(c.storage_class.as_deref());
        let monthly = c.bytes / GIB * price;
        let id = format!("{}/pvc/{}", c.namespace, c.name);
        if c.phase == "Bound" {
            storage_monthly += monthly;
            *by_namespace.entry(c.namespace.clone()).or_default() += monthly;
            allocation.insert(id.clone(), monthly);
        }
        let unused = !mounted.contains(&(c.namespace.clone(), c.name.clone()));
        if c.phase != "Bound" {
            recs.push(Recommendation {
                id: format!("volume/{id}"),
                kind: "volume".into(),
                target: id.clone(),
                current: format!(
                    "{} claim of {} ({})",
                    c.phase,
                    quantity::human_bytes(c.bytes),
                    c.storage_class.as_deref().unwrap_or("no class")
                ),
                proposed: "delete it if nothing will use it".into(),
                current_monthly: 0.0,
                proposed_monthly: 0.0,
                saving_monthly: 0.0,
                risk: "low".into(),
                reason: format!(
                    "unbound: not billed now, {} a month once a volume is bound to it",
                    money(monthly)
                ),
                in_total: true,
                patch: None,
            });
        } else if unused {
            recs.push(Recommendation {
                id: format!("volume/{id}"),
                kind: "volume".into(),
                target: id.clone(),
                current: format!(
                    "bound claim of {} ({}), mounted by no pod",
                    quantity::human_bytes(c.bytes),
                    c.storage_class.as_deref().unwrap_or("no class")
                ),
                proposed: "snapshot it, then delete the claim and its volume".into(),
                current_monthly: monthly,
                proposed_monthly: 0.0,
                saving_monthly: monthly,
                risk: "medium".into(),
                reason:
                    "no pod mounts it; it may still hold data someone needs (a backup, a migration)"
                        .into(),
                in_total: true,
                patch: None,
            });
        }
    }

    // Node packing: the node count the right-sized requests need.
    if !inv.nodes.is_empty() && inputs.prometheus.is_some() {
        let mut shapes: BTreeMap<String, (usize, f64, f64)> = BTreeMap::new();
        for n in &inv.nodes {
            let e = shapes
                .entry(n.instance_type.clone().unwrap_or_default())
                .or_insert((0, n.cpu, n.memory));
            e.0 += 1;
        }
        let (_, (_, cpu, mem)) = shapes
            .iter()
            .max_by_key(|(_, (count, _, _))| *count)
            .map(|(k, v)| (k.clone(), *v))
            .unwrap_or_default();
        let fill = 0.85;
        let need = ((cpu_after / (cpu * fill)).max(mem_after / (mem * fill))).ceil().max(1.0);
        let have = inv.nodes.len() as f64;
        if cpu > 0.0 && mem > 0.0 {
            // Right-sizing and idle rows lower what is requested; the bill
            // drops only by the nodes removed. This row is the difference, so
            // that the total is what the bill would lose: negative when the
            // nodes cannot shrink as far as the requests did.
            let per_node = node_monthly / have;
            let requested: f64 = recs
                .iter()
                .filter(|r| r.kind == "rightsize" || r.kind == "idle")
                .map(|r| r.saving_monthly)
                .sum();
            let removed = per_node * (have - need).max(0.0);
            recs.push(Recommendation {
                id: "node-packing".into(),
                kind: "node-packing".into(),
                target: "nodes".into(),
                current: format!("{have} nodes ({} a month)", money(node_monthly)),
                proposed: format!("{need} nodes hold the right-sized requests at {:.0} % fill", fill * 100.0),
                current_monthly: node_monthly,
                proposed_monthly: per_node * need.min(have),
                saving_monthly: removed - requested,
                risk: "medium".into(),
                reason: format!(
                    "removing {} nodes saves {} a month, of which the right-sizing and idle rows account for {}: this row is the rest \
                     (capacity nobody requested); zones, anti-affinity and DaemonSets are not modeled",
                    (have - need).max(0.0),
                    money(removed),
                    money(requested)
                ),
                in_total: true,
                patch: None,
            });
        }
    }

    // S3.
    let mut s3_monthly = 0.0;
    let mut by_bucket = BTreeMap::new();
    for b in inputs.buckets.iter().flatten() {
        let monthly: f64 =
            b.bytes_by_class.iter().map(|(c, bytes)| bytes / GIB * prices.s3(c)).sum::<f64>()
                + b.incomplete_uploads.1 / GIB * prices.s3("STANDARD");
        s3_monthly += monthly;
        by_bucket.insert(format!("s3://{}", b.name), monthly);
        if b.expired.0 > 0 && !b.lifecycle {
            let saving = b.expired.1 / GIB * prices.s3("STANDARD");
            recs.push(Recommendation {
                id: format!("s3-expire/{}", b.name),
                kind: "s3-expire".into(),
                target: format!("s3://{}", b.name),
                current: format!("{} objects ({}) older than the {}-day retention, no lifecycle rule", b.expired.0, quantity::human_bytes(b.expired.1), o.retention.as_secs() / 86_400),
                proposed: format!("a lifecycle rule expiring objects after {} days", o.retention.as_secs() / 86_400),
                current_monthly: saving,
                proposed_monthly: 0.0,
                saving_monthly: saving,
                risk: "medium".into(),
                reason: "deletes backups past the retention: check no legal hold or restore drill needs them".into(),
                in_total: true,
                patch: None,
            });
        }
        if b.incomplete_uploads.0 > 0 && !b.aborts_incomplete_uploads {
            let saving = b.incomplete_uploads.1 / GIB * prices.s3("STANDARD");
            recs.push(Recommendation {
                id: format!("s3-multipart/{}", b.name),
                kind: "s3-multipart".into(),
                target: format!("s3://{}", b.name),
                current: format!(
                    "{} incomplete multipart uploads holding {}",
                    b.incomplete_uploads.0,
                    quantity::human_bytes(b.incomplete_uploads.1)
                ),
                proposed: "a lifecycle rule aborting incomplete multipart uploads after 7 days"
                    .into(),
                current_monthly: saving,
                proposed_monthly: 0.0,
                saving_monthly: saving,
                risk: "low".into(),
                reason:
                    "parts of uploads that never completed are billed and invisible in listings"
                        .into(),
                in_total: true,
                patch: None,
            });
        }
        if b.standard_cold_bytes > 0.0 {
            let (now, after) = (prices.s3("STANDARD"), prices.s3("STANDARD_IA"));
            let gib = b.standard_cold_bytes / GIB;
            recs.push(Recommendation {
                id: format!("s3-class/{}", b.name),
                kind: "s3-class".into(),
                target: format!("s3://{}", b.name),
                current: format!("{} in STANDARD older than 30 days", quantity::human_bytes(b.standard_cold_bytes)),
                proposed: "transition to STANDARD_IA after 30 days".into(),
                current_monthly: gib * now,
                proposed_monthly: gib * after,
                saving_monthly: gib * (now - after),
                risk: "medium".into(),
                reason: "STANDARD_IA charges per GB retrieved and a 30-day minimum: right for backups, not for hot data".into(),
                in_total: true,
                patch: None,
            });
        }
    }

    // Monitoring volume.
    let mut monitoring_monthly = 0.0;
    let mut monitoring = Value::Null;
    if let (Some(p), Some(mp)) = (&inputs.prometheus, prices.monitoring) {
        let (series, top) = p.tsdb().await?;
        let ingest =
            p.instant("sum(rate(prometheus_tsdb_head_samples_appended_total[5m]))").await?;
        let (per_second, how) = match ingest.first() {
            Some((_, v)) if *v > 0.0 => {
                (*v, "measured (prometheus_tsdb_head_samples_appended_total)")
            }
            _ => (series / 30.0, "estimated: series / 30 s (Prometheus does not scrape itself)"),
        };
        monitoring_monthly = per_second * hours * 3600.0 / 1e6 * mp.per_million_samples;
        monitoring = json!({"series": series, "samples_per_second": per_second, "how": how, "top": top, "monthly": monitoring_monthly});
        if let Some((name, count)) = top.first()
            && series > 0.0
            && count / series > 0.25
        {
            let share = count / series;
            recs.push(Recommendation {
                id: format!("monitoring/{name}"),
                kind: "monitoring".into(),
                target: format!("series {name}"),
                current: format!("{count} of {series} series ({:.0} %)", share * 100.0),
                proposed: format!("drop or aggregate {name} at scrape time (metric_relabel_configs) if no rule or dashboard reads it"),
                current_monthly: monitoring_monthly * share,
                proposed_monthly: 0.0,
                saving_monthly: monitoring_monthly * share,
                risk: "medium".into(),
                reason: "check alert rules and dashboards first (alert-linter's coverage lists what rules read)".into(),
                in_total: true,
                patch: None,
            });
        }
    }

    // Databases: max_connections against what the pools can open and what
    // was open at the peak.
    for d in &inputs.databases {
        let peak = match db_peak {
            Some(v) => format!("{v} at the peak over the window ({})", o.metrics.db_connections),
            None if pool_peak > 0.0 => format!(
                "{pool_peak} at most in the services' pools over the window (no {} series)",
                o.metrics.db_connections
            ),
            None => format!("{} open now (no series over the window)", d.connections),
        };
        let needed = pool_capacity.max(db_peak.unwrap_or(0.0)).max(d.connections);
        let proposed = (needed * 1.1).ceil() + 3.0; // + superuser_reserved_connections
        let (risk, proposal, reason) = if pool_capacity > d.max_connections {
            (
                "high",
                format!("raise max_connections to {proposed} or shrink the pools"),
                format!(
                    "the pools can open {pool_capacity} connections (pool × replicas) but the server allows {}: a traffic peak or a scale-out gets 'too many connections'",
                    d.max_connections
                ),
            )
        } else if pool_capacity > 0.0 && proposed < d.max_connections {
            (
                "low",
                format!("max_connections {proposed} (pools' {pool_capacity} + 10 % + reserved)"),
                format!(
                    "{} allowed connections are never opened by the pools; each reserves server memory",
                    d.max_connections - proposed
                ),
            )
        } else {
            (
                "low",
                format!("keep max_connections {}", d.max_connections),
                if pool_capacity > 0.0 {
                    format!("the pools can open {pool_capacity}: the server's limit fits them")
                } else {
                    "no pool series (db_connections_max) for the services: size max_connections from their pools by hand".to_owned()
                },
            )
        };
        recs.push(Recommendation {
            id: format!("database/{}", d.target),
            kind: "database".into(),
            target: d.target.clone(),
            current: format!("max_connections {}; connections: {peak}", d.max_connections),
            proposed: proposal,
            current_monthly: 0.0,
            proposed_monthly: 0.0,
            saving_monthly: 0.0,
            risk: risk.into(),
            reason: format!("{reason}; pools are sized in the `pool/` rows"),
            in_total: false,
            patch: None,
        });
    }

    // Totals: the allocation, idle capacity, the categories.
    let idle_cost = (node_monthly - requested_total).max(0.0);
    let compute = if node_monthly > 0.0 { node_monthly } else { requested_total };
    let total = compute + storage_monthly + s3_monthly + monitoring_monthly;
    let savings: f64 = recs.iter().filter(|r| r.in_total).map(|r| r.saving_monthly).sum();
    let categories = BTreeMap::from([
        ("compute".to_owned(), compute),
        ("storage".to_owned(), storage_monthly),
        ("object-storage".to_owned(), s3_monthly),
        ("monitoring".to_owned(), monitoring_monthly),
    ]);

    // Evidence and verdicts.
    let criterion = format!("savings >= {:.0}% of the monthly cost", o.target_savings * 100.0);
    let usage_given = inputs.prometheus.is_some() && inputs.inventory.is_some();
    report.push_check(if !usage_given {
        Check::not_evaluated("savings", criterion, "no usage to right-size from: pass --kubeconfig and --prometheus")
    } else if judged == 0 && !inv.workloads.is_empty() {
        Check::not_evaluated("savings", criterion, format!("every workload was withheld for too few samples ({} withheld): a longer --window or a lower --min-samples", withheld.len()))
    } else if total <= 0.0 {
        Check::not_evaluated("savings", criterion, "nothing costs anything under the price model")
    } else {
        let share = savings / total;
        Check::from_bool(
            "savings",
            criterion,
            format!("{} of {} a month ({:.1} %), {} recommendations, {} withheld", money(savings), money(total), share * 100.0, recs.len(), withheld.len()),
            share >= o.target_savings,
        )
    });
    if let Some(baseline) = &inputs.baseline {
        let criterion =
            format!("infrastructure cost -{:.0}% against the baseline", o.target_savings * 100.0);
        let before =
            baseline.measurements.iter().find(|m| m.name == "monthly_cost").map(|m| m.value);
        report.push_check(match before {
            Some(b) if b > 0.0 => {
                let change = (total - b) / b;
                Check::from_bool(
                    "month-over-month",
                    criterion,
                    format!("{} → {} a month ({:+.1} %)", money(b), money(total), change * 100.0),
                    change <= -o.target_savings,
                )
            }
            _ => Check::not_evaluated(
                "month-over-month",
                criterion,
                "the baseline report has no monthly_cost measurement",
            ),
        });
    }
    let mut reconciliation = Value::Null;
    if let Some((bill, source)) = &inputs.bill {
        let mut rows = Vec::new();
        let mut names: BTreeSet<String> = categories.keys().cloned().collect();
        names.extend(bill.by_category.keys().cloned());
        // Remainders of opposite signs do not cancel: each category must be explained.
        let (mut unexplained, mut off) = (0.0, 0.0);
        for name in &names {
            let allocated = categories.get(name).copied().unwrap_or(0.0);
            let billed = bill.by_category.get(name).copied().unwrap_or(0.0);
            unexplained += billed - allocated;
            off += (billed - allocated).abs();
            rows.push(json!({"category": name, "allocated": allocated, "billed": billed, "remainder": billed - allocated}));
        }
        let billed_total = bill.total();
        let share = if billed_total > 0.0 { off / billed_total } else { f64::INFINITY };
        let lines: Vec<String> = rows
            .iter()
            .filter(|r| r["remainder"].as_f64().is_some_and(|v| v.abs() >= 0.005))
            .map(|r| {
                format!(
                    "{} {:+.2}",
                    r["category"].as_str().unwrap_or_default(),
                    r["remainder"].as_f64().unwrap_or(0.0)
                )
            })
            .collect();
        report.push_check(Check::from_bool(
            "bill-reconciled",
            format!(
                "the allocation explains the bill within {:.0}%",
                o.reconcile_tolerance * 100.0
            ),
            format!(
                "billed {} ({} rows, {source}), allocated {}, net remainder {}, by category {} ({:.1} % of the bill){}",
                money(billed_total),
                bill.rows,
                money(total),
                money(unexplained),
                money(off),
                share * 100.0,
                if lines.is_empty() { String::new() } else { format!(": {}", lines.join(", ")) }
            ),
            share <= o.reconcile_tolerance,
        ));
        report.push_measurement(Measurement::new(
            "bill_total",
            billed_total,
            prices.currency.as_str(),
        ));
        report.push_measurement(Measurement::new(
            "bill_unexplained",
            unexplained,
            prices.currency.as_str(),
        ));
        reconciliation = json!({"source": source, "billed": billed_total, "allocated": total, "unexplained": unexplained, "by_category": rows});
    }

    let cur = prices.currency.as_str();
    for (name, value) in [
        ("monthly_cost", total),
        ("savings_monthly", savings),
        ("compute_monthly", compute),
        ("idle_cost_monthly", idle_cost),
        ("storage_monthly", storage_monthly),
        ("object_storage_monthly", s3_monthly),
        ("monitoring_monthly", monitoring_monthly),
    ] {
        report.push_measurement(Measurement::new(name, value, cur));
    }
    report.push_measurement(Measurement::new(
        "savings_percent",
        if total > 0.0 { savings / total * 100.0 } else { f64::NAN },
        "%",
    ));
    report.push_measurement(Measurement::new("recommendations", recs.len() as f64, ""));
    report.push_measurement(Measurement::new("withheld", withheld.len() as f64, ""));
    report.push_measurement(Measurement::new("workloads", inv.workloads.len() as f64, ""));
    report
        .data
        .insert("recommendations".into(), serde_json::to_value(&recs).unwrap_or(Value::Null));
    report.data.insert("withheld".into(), serde_json::to_value(&withheld).unwrap_or(Value::Null));
    report.data.insert(
        "allocation".into(),
        json!({
            "currency": cur,
            "unit_prices": {"cpu_hour": cpu_h, "memory_gib_hour": mem_h},
            "by_category": categories,
            "idle": {"monthly": idle_cost, "why": "node capacity no workload requests"},
            "by_namespace": by_namespace,
            "by_workload": allocation,
            "by_label": by_label,
            "by_bucket": by_bucket,
            "notes": notes,
        }),
    );
    if !reconciliation.is_null() {
        report.data.insert("reconciliation".into(), reconciliation);
    }
    if !monitoring.is_null() {
        report.data.insert("monitoring".into(), monitoring);
    }
    report.finish();
    Ok(report)
}

/// The recommendations of a report as a table (human) or Markdown.
pub fn table(report: &Report, markdown: bool) -> String {
    let recs: Vec<Recommendation> = report
        .data
        .get("recommendations")
        .and_then(|v| serde_json::from_value::<Vec<Value>>(v.clone()).ok())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| {
            Some(Recommendation {
                id: v["id"].as_str()?.to_owned(),
                kind: v["kind"].as_str()?.to_owned(),
                target: v["target"].as_str()?.to_owned(),
                current: v["current"].as_str()?.to_owned(),
                proposed: v["proposed"].as_str()?.to_owned(),
                current_monthly: v["current_monthly"].as_f64()?,
                proposed_monthly: v["proposed_monthly"].as_f64()?,
                saving_monthly: v["saving_monthly"].as_f64()?,
                risk: v["risk"].as_str()?.to_owned(),
                reason: v["reason"].as_str()?.to_owned(),
                in_total: v["in_total"].as_bool()?,
                patch: None,
            })
        })
        .collect();
    let mut out = String::new();
    if markdown {
        out.push_str("| recommendation | now /month | after | saving | risk | change | why |\n|---|---|---|---|---|---|---|\n");
        for r in &recs {
            out.push_str(&format!(
                "| {} | {:.2} | {:.2} | {:.2}{} | {} | {} | {} |\n",
                r.id,
                r.current_monthly,
                r.proposed_monthly,
                r.saving_monthly,
                if r.in_total { "" } else { " (not in total)" },
                r.risk,
                r.proposed,
                r.reason
            ));
        }
    } else {
        out.push_str(&format!(
            "{:<52} {:>10} {:>10} {:>10}  {:<6} change\n",
            "RECOMMENDATION", "NOW/MONTH", "AFTER", "SAVING", "RISK"
        ));
        for r in &recs {
            out.push_str(&format!(
                "{:<52} {:>10.2} {:>10.2} {:>10.2}{} {:<6} {}\n    {}\n",
                r.id,
                r.current_monthly,
                r.proposed_monthly,
                r.saving_monthly,
                if r.in_total { " " } else { "*" },
                r.risk,
                r.proposed,
                r.reason
            ));
        }
        if recs.iter().any(|r| !r.in_total) {
            out.push_str("* not added to the total (it realizes or overlaps other rows)\n");
        }
    }
    if let Some(w) = report.data.get("withheld").and_then(Value::as_array).filter(|w| !w.is_empty())
    {
        out.push_str(if markdown { "\nWithheld:\n\n" } else { "\nWITHHELD\n" });
        for x in w {
            out.push_str(&format!(
                "- {}: {}\n",
                x["target"].as_str().unwrap_or_default(),
                x["reason"].as_str().unwrap_or_default()
            ));
        }
    }
    out.push('\n');
    out
}

/// `--emit-patches DIR`: one `kubectl patch` file per workload change and an
/// `apply.sh` listing the commands. Never applied by the tool.
pub fn emit_patches(report: &Report, dir: &std::path::Path) -> Result<usize, Error> {
    let fail =
        |e: std::io::Error| Error::CouldNotRun(format!("cannot write {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(fail)?;
    let recs =
        report.data.get("recommendations").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut script = String::from(
        "#!/bin/sh\n# Written by cost-analyzer --emit-patches: review, then run. cost-analyzer never applies them.\nset -e\n",
    );
    let mut n = 0;
    for r in recs {
        let (Some(patch), Some(target)) =
            (r.get("patch").filter(|p| !p.is_null()), r["target"].as_str())
        else {
            continue;
        };
        let parts: Vec<&str> = target.split('/').collect();
        let [ns, kind, name] = parts.as_slice() else { continue };
        let file = format!("{ns}.{kind}.{name}.{}.json", r["kind"].as_str().unwrap_or("patch"));
        std::fs::write(dir.join(&file), serde_json::to_string_pretty(patch).unwrap_or_default())
            .map_err(fail)?;
        script.push_str(&format!(
            "# {} (risk {}): {}\nkubectl -n {ns} patch {kind} {name} --type strategic --patch-file \"$(dirname \"$0\")/{file}\"\n",
            r["id"].as_str().unwrap_or_default(),
            r["risk"].as_str().unwrap_or_default(),
            r["proposed"].as_str().unwrap_or_default()
        ));
        n += 1;
    }
    std::fs::write(dir.join("apply.sh"), script).map_err(fail)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = 1024.0 * 1024.0;

    #[test]
    fn memory_never_goes_below_an_oom_kill_level() {
        let mib = |b: f64| (b / MIB * 1000.0).round() / 1000.0;
        // Sampled at 20 MiB between kills at a 64 MiB limit: 80 MiB, not 23.
        assert_eq!(mib(memory_recommendation(20.0 * MIB, 0.15, Some(64.0 * MIB))), 80.0);
        assert_eq!(mib(memory_recommendation(20.0 * MIB, 0.15, None)), 23.0);
        // A sample above the kill level keeps the usage rule.
        assert_eq!(mib(memory_recommendation(100.0 * MIB, 0.15, Some(64.0 * MIB))), 115.0);
        assert_eq!(mib(memory_recommendation(1.0, 0.15, None)), 16.0);
    }
}
