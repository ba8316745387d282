//! The verification plan (`cargo xtask verify --plan verify.yaml`): the team's
//! own system, by part, and which steps to run against it. Without a plan,
//! verify runs every step against the built-in sandbox.
//!
//! The plan is checked whole before anything runs: an unknown key, a missing
//! part a step needs, a step that changes the system without being enabled
//! for it, or an address outside `allow.hosts` exits 2 naming the file, the
//! line and the key. The JSON Schema is docs/verify-plan.schema.json.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;

/// A verification plan file.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The system under test, by part; each step reads the parts it needs.
    #[serde(default)]
    pub system: System,
    /// Where steps may send traffic; every address in `system` must be on it.
    #[serde(default)]
    pub allow: Allow,
    /// Steps to run, in verify's order (see `cargo xtask verify --help`).
    pub steps: Vec<String>,
    /// Steps that change the system (chaos-runner, pg-failover-probe,
    /// bluegreen-promoter) run only when listed here as well.
    #[serde(default)]
    pub enable_changes: Vec<String>,
    /// The load step's run.
    #[serde(default)]
    pub load: LoadPlan,
    /// The capacity step's search.
    #[serde(default)]
    pub capacity: CapacityPlan,
    /// The chaos step: an experiment file run as it is, against the system.
    #[serde(default)]
    pub chaos: Option<ChaosPlan>,
    /// The failover step: a drill of the system's database.
    #[serde(default)]
    pub failover: Option<FailoverPlan>,
    /// The reorg step: the team's indexer under reorg-sim.
    #[serde(default)]
    pub indexer: Option<IndexerPlan>,
    /// The release step: a blue-green release of an app on the system's
    /// cluster (`system.kubeconfig`), then its rollback.
    #[serde(default)]
    pub release: Option<ReleasePlan>,
    /// KPIs (by id: p95, error-rate, uptime, mttr, load-capacity,
    /// db-query-time, cache-hit-rate, infrastructure-cost) waived on purpose,
    /// with the reason printed in the table.
    #[serde(default)]
    pub waive: BTreeMap<String, String>,
}

/// The system's parts.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct System {
    /// The gateway's base URL (the marketplace's API).
    pub gateway: Option<String>,
    /// Where the gateway's Prometheus series are scraped; default GATEWAY/metrics.
    pub metrics_url: Option<String>,
    /// The Prometheus that scrapes the system: KPIs over the month come from it.
    pub prometheus: Option<PrometheusPlan>,
    /// The application database (`postgres://…`, `sslmode` honoured):
    /// `pg_stat_statements`, indexes, connections, and the backup step's source.
    pub database: Option<String>,
    /// The kubeconfig of the system's cluster (cost-analyzer).
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context; default its current one.
    pub context: Option<String>,
    /// The namespaces cost-analyzer looks at; default all.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Alert rule files (alert-linter).
    #[serde(default)]
    pub rules: Vec<PathBuf>,
    /// alert-linter's config for those rules; default the shipped marketplace one.
    pub rules_config: Option<PathBuf>,
}

/// The system's Prometheus.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrometheusPlan {
    /// Base URL, e.g. `http://127.0.0.1:9090`.
    pub url: String,
    /// Label matchers selecting the marketplace's own series, e.g.
    /// `job="gateway"`; added to every query.
    #[serde(default)]
    pub selector: String,
    /// The window the KPIs are read over; default `30d` (the month).
    #[serde(default = "default_window")]
    pub window: String,
    /// Series names, when the system's differ from the launch plan's.
    #[serde(default)]
    pub series: SeriesNames,
}

fn default_window() -> String {
    "30d".to_owned()
}

/// The series the KPIs read from Prometheus.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SeriesNames {
    /// Request latency histogram (`_bucket` is appended).
    pub request_duration: String,
    /// Request counter with a `status` label.
    pub requests: String,
    /// The label of `requests` holding the HTTP status code.
    pub status_label: String,
    /// Cache hit counter.
    pub cache_hits: String,
    /// Cache miss counter.
    pub cache_misses: String,
}

impl Default for SeriesNames {
    fn default() -> Self {
        Self {
            request_duration: "http_request_duration_seconds".to_owned(),
            requests: "http_requests_total".to_owned(),
            status_label: "status".to_owned(),
            cache_hits: "cache_hits_total".to_owned(),
            cache_misses: "cache_misses_total".to_owned(),
        }
    }
}

/// The allow-list.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Allow {
    /// Hosts (names or IP addresses, no port) steps may reach.
    /// Default: this machine only (127.0.0.1, ::1, localhost).
    #[serde(default = "loopback")]
    pub hosts: Vec<String>,
    /// Kubernetes namespaces the release step may change.
    #[serde(default)]
    pub namespaces: Vec<String>,
}

fn loopback() -> Vec<String> {
    ["127.0.0.1", "::1", "localhost"].map(String::from).to_vec()
}

impl Default for Allow {
    fn default() -> Self {
        Self { hosts: loopback(), namespaces: Vec::new() }
    }
}

/// The load step's closed-model run of the built-in marketplace scenario.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LoadPlan {
    /// Concurrent users.
    pub users: u32,
    /// Length of the run, e.g. `30m`.
    pub duration: String,
    /// Think time between a user's requests, e.g. `1s..3s`.
    pub think_time: String,
}

impl Default for LoadPlan {
    fn default() -> Self {
        Self { users: 20, duration: "5s".to_owned(), think_time: "0ms..50ms".to_owned() }
    }
}

/// The capacity step's search (`load-tester capacity`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CapacityPlan {
    /// First step's users.
    pub start_users: u32,
    /// Users added per step.
    pub step_users: u32,
    /// Largest step; the KPI is not measured at 10K unless this reaches it.
    pub max_users: u32,
    /// How long each step holds, e.g. `1m`.
    pub step_duration: String,
}

impl Default for CapacityPlan {
    fn default() -> Self {
        Self { start_users: 10, step_users: 10, max_users: 30, step_duration: "3s".to_owned() }
    }
}

/// The chaos step against the system.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChaosPlan {
    /// The experiment file (chaos-runner's format).
    pub experiment: PathBuf,
    /// Only these experiments of the file; default all.
    #[serde(default)]
    pub only: Vec<String>,
    /// `--var NAME=VALUE` for the file.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
}

/// The failover drill against the system's database.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailoverPlan {
    /// The multi-host URL the probe writes through.
    pub url: String,
    /// The commands that cause the failover, run in order (`--step`).
    #[serde(default)]
    pub steps: Vec<String>,
}

/// The team's indexer, run by reorg-sim against its simulated chain.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IndexerPlan {
    /// The shell command starting the indexer (it gets REORG_SIM_RPC_URL and
    /// REORG_SIM_DATABASE_URL).
    pub cmd: String,
    /// reorg-sim's SQL mapping of the indexer's tables.
    pub mapping: PathBuf,
    /// The database the indexer writes to (a test database: reorg-sim
    /// empties the mapping's schema before the scenario).
    pub database: String,
    /// The scenario; default the launch plan's 50-block reorg.
    #[serde(default = "launch_plan")]
    pub scenario: String,
}

fn launch_plan() -> String {
    "launch-plan".to_owned()
}

/// A release of an app by bluegreen-promoter.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleasePlan {
    /// The app (its active Service's name).
    pub app: String,
    /// Its namespace; must be in `allow.namespaces`.
    pub namespace: String,
    /// The new image, `CONTAINER=IMAGE` or `IMAGE`.
    pub image: String,
    /// The active Service's URL as clients reach it (the prober's).
    pub active_url: String,
    /// The preview Service's URL.
    pub preview_url: Option<String>,
    /// The path the prober and health checks request.
    #[serde(default = "root_path")]
    pub probe_path: String,
    /// Smoke tests (bluegreen-promoter's YAML).
    pub smoke: Option<PathBuf>,
    /// Roll the release back once it is measured (default true: the run
    /// leaves the app as it found it).
    #[serde(default = "yes")]
    pub rollback: bool,
}

fn root_path() -> String {
    "/".to_owned()
}

fn yes() -> bool {
    true
}

/// A plan that cannot run: exit 2, nothing started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError(pub String);

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PlanError {}

/// Steps that change what they run against.
/// (reorg-sim empties the indexer's schema before its scenario.)
pub const CHANGING_STEPS: [&str; 4] =
    ["chaos-runner", "pg-failover-probe", "bluegreen-promoter", "reorg-sim"];

/// A plan read from a file, its relative paths resolved against the file's
/// directory.
#[derive(Debug, Clone)]
pub struct LoadedPlan {
    /// The file, for messages and reports.
    pub path: PathBuf,
    /// Its content.
    pub plan: Plan,
}

impl LoadedPlan {
    /// Reads, parses and checks `path`.
    pub fn read(path: &Path) -> Result<LoadedPlan, PlanError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| PlanError(format!("{}: cannot read the plan: {e}", path.display())))?;
        let mut plan = parse(&text, &path.display().to_string())?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        plan.system.rules.iter_mut().for_each(resolve);
        plan.system.rules_config.iter_mut().for_each(resolve);
        plan.system.kubeconfig.iter_mut().for_each(resolve);
        if let Some(chaos) = plan.chaos.as_mut() {
            resolve(&mut chaos.experiment);
        }
        if let Some(indexer) = plan.indexer.as_mut() {
            resolve(&mut indexer.mapping);
        }
        if let Some(smoke) = plan.release.as_mut().and_then(|r| r.smoke.as_mut()) {
            resolve(smoke);
        }
        Ok(LoadedPlan { path: path.to_owned(), plan })
    }
}

/// Parses and checks a plan's text; `source` names it in errors.
pub fn parse(text: &str, source: &str) -> Result<Plan, PlanError> {
    let plan: Plan = serde_saphyr::from_str(text).map_err(|err| {
        let (line, col) = err.location().map_or((1, 1), |l| (l.line(), l.column()));
        let message = err.without_snippet().to_string();
        let message = message.lines().next().unwrap_or_default();
        let message = message.rsplit_once(" at line ").map_or(message, |(m, _)| m);
        let key = shared_types::yaml_key_path(text, line, col, message)
            .map(|k| format!(" {k}"))
            .unwrap_or_default();
        PlanError(format!("{source}:{line}:{col}{key}: {message}"))
    })?;
    check(&plan, text, source)?;
    Ok(plan)
}

/// Where `key: value` is written: (line, column) of the key, 1-based.
fn locate(text: &str, key: &str, value: &str) -> (usize, usize) {
    text.lines()
        .enumerate()
        .find_map(|(i, line)| {
            let at = line.find(&format!("{key}:"))?;
            line[at..].contains(value).then_some((i + 1, at + 1))
        })
        .or_else(|| {
            text.lines().enumerate().find_map(|(i, line)| line.find(value).map(|c| (i + 1, c + 1)))
        })
        .unwrap_or((1, 1))
}

fn check(plan: &Plan, text: &str, source: &str) -> Result<(), PlanError> {
    let at = |key: &str, value: &str, message: String| {
        let (line, col) = locate(text, key.rsplit('.').next().unwrap_or(key), value);
        PlanError(format!("{source}:{line}:{col} {key}: {message}"))
    };
    for step in &plan.steps {
        if !crate::verify::STEPS.contains(&step.as_str()) {
            return Err(at(
                "steps",
                step,
                format!("unknown step {step:?}; steps: {}", crate::verify::STEPS.join(", ")),
            ));
        }
        if CHANGING_STEPS.contains(&step.as_str()) && !plan.enable_changes.contains(step) {
            return Err(at(
                "steps",
                step,
                format!(
                    "{step} changes the system it runs against: list it under enable_changes \
                     to run it"
                ),
            ));
        }
    }
    for id in plan.waive.keys() {
        if !crate::kpi::IDS.contains(&id.as_str()) {
            return Err(at(
                "waive",
                id,
                format!("unknown KPI {id:?}; KPIs: {}", crate::kpi::IDS.join(", ")),
            ));
        }
    }
    let system = &plan.system;
    let mut urls: Vec<(&str, &str)> = Vec::new();
    if let Some(url) = &system.gateway {
        urls.push(("system.gateway", url));
    }
    if let Some(url) = &system.metrics_url {
        urls.push(("system.metrics_url", url));
    }
    if let Some(p) = &system.prometheus {
        urls.push(("system.prometheus.url", &p.url));
        shared_types::parse_duration(&p.window)
            .map_err(|e| at("system.prometheus.window", &p.window, e))?;
    }
    if let Some(url) = &system.database {
        urls.push(("system.database", url));
    }
    if let Some(f) = &plan.failover {
        urls.push(("failover.url", &f.url));
    }
    if let Some(i) = &plan.indexer {
        urls.push(("indexer.database", &i.database));
    }
    if let Some(r) = &plan.release {
        urls.push(("release.active_url", &r.active_url));
        if let Some(url) = &r.preview_url {
            urls.push(("release.preview_url", url));
        }
        if !plan.allow.namespaces.contains(&r.namespace) {
            return Err(at(
                "release.namespace",
                &r.namespace,
                format!(
                    "namespace {:?} is not in allow.namespaces: add it there to let the release \
                     step change it",
                    r.namespace
                ),
            ));
        }
    }
    for (key, url) in urls {
        let hosts: Vec<String> = if url.starts_with("postgres") {
            shared_types::url_hosts(url).into_iter().map(|h| h.host).collect()
        } else {
            let parsed = reqwest::Url::parse(url)
                .map_err(|e| at(key, url, format!("{url:?} is not a URL: {e}")))?;
            let host = parsed.host_str().unwrap_or_default();
            vec![host.trim_start_matches('[').trim_end_matches(']').to_owned()]
        };
        for host in hosts {
            if !plan.allow.hosts.iter().any(|allowed| allowed.eq_ignore_ascii_case(&host)) {
                return Err(at(
                    key,
                    url,
                    format!(
                        "host {host:?} is not in allow.hosts ({}): add it there to let verify \
                         reach it",
                        plan.allow.hosts.join(", ")
                    ),
                ));
            }
        }
    }
    for (step, needs, present) in [
        ("sandbox", "system.gateway", system.gateway.is_some()),
        ("load-tester", "system.gateway", system.gateway.is_some()),
        ("capacity", "system.gateway", system.gateway.is_some()),
        ("database", "system.database", system.database.is_some()),
        ("backup-agent", "system.database", system.database.is_some()),
        ("alert-linter", "system.rules", !system.rules.is_empty()),
        ("cost-analyzer", "system.prometheus", system.prometheus.is_some()),
        ("chaos-runner", "chaos", plan.chaos.is_some()),
        ("pg-failover-probe", "failover", plan.failover.is_some()),
        ("reorg-sim", "indexer", plan.indexer.is_some()),
        (
            "bluegreen-promoter",
            "release and system.kubeconfig",
            plan.release.is_some() && system.kubeconfig.is_some(),
        ),
    ] {
        if plan.steps.iter().any(|s| s == step) && !present {
            return Err(at("steps", step, format!("step {step} needs {needs}")));
        }
    }
    for (key, value) in [
        ("load.duration", &plan.load.duration),
        ("capacity.step_duration", &plan.capacity.step_duration),
    ] {
        shared_types::parse_duration(value).map_err(|e| at(key, value, e))?;
    }
    Ok(())
}

/// The JSON Schema of the plan, as committed in docs/verify-plan.schema.json.
pub fn schema_text() -> String {
    let schema = schemars::schema_for!(Plan);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "system:\n  gateway: http://127.0.0.1:8080\n  database: postgres://postgres@127.0.0.1:5432/app\nsteps: [sandbox, load-tester, database]\n";

    #[test]
    fn a_good_plan_parses() {
        let plan = parse(GOOD, "verify.yaml").unwrap();
        assert_eq!(plan.steps, ["sandbox", "load-tester", "database"]);
        assert_eq!(plan.load.users, 20);
    }

    #[test]
    fn an_unknown_key_names_file_line_and_key() {
        let text = "system:\n  gateway: http://127.0.0.1:8080\n  gatway: http://x\nsteps: []\n";
        let err = parse(text, "verify.yaml").unwrap_err().0;
        assert!(err.starts_with("verify.yaml:3:"), "{err}");
        assert!(err.contains("gatway"), "{err}");
    }

    #[test]
    fn a_host_outside_the_allow_list_names_the_key_and_line() {
        let text = "system:\n  gateway: http://127.0.0.1:8080\n  prometheus:\n    url: http://prometheus.prod:9090\nsteps: [sandbox]\n";
        let err = parse(text, "p.yaml").unwrap_err().0;
        assert!(err.starts_with("p.yaml:4:5 system.prometheus.url:"), "{err}");
        assert!(err.contains("prometheus.prod"), "{err}");
        let db = "system:\n  database: postgres://u:pw@db.prod:5432/app\nsteps: [database]\n";
        let err = parse(db, "p.yaml").unwrap_err().0;
        assert!(err.starts_with("p.yaml:2:3 system.database:"), "{err}");
        assert!(!err.contains("pw"), "the password stays out of messages: {err}");
    }

    #[test]
    fn a_changing_step_needs_enable_changes_and_steps_need_their_part() {
        let text = "system:\n  gateway: http://127.0.0.1:1\nsteps: [chaos-runner]\n";
        assert!(parse(text, "p").unwrap_err().0.contains("enable_changes"));
        let text = "steps: [load-tester]\n";
        assert!(parse(text, "p").unwrap_err().0.contains("needs system.gateway"));
        let text = "steps: [sandbox, fuzz]\n";
        assert!(parse(text, "p").unwrap_err().0.contains("unknown step \"fuzz\""));
        let text = "steps: []\nwaive:\n  p96: because\n";
        assert!(parse(text, "p").unwrap_err().0.contains("unknown KPI"));
    }

    #[test]
    fn a_release_needs_its_namespace_allowed_and_a_kubeconfig() {
        let release = "release:\n  app: shop\n  namespace: prod\n  image: shop:v2\n  active_url: http://127.0.0.1:30080\n";
        let text = format!(
            "system:\n  kubeconfig: kc\nsteps: [bluegreen-promoter]\nenable_changes: [bluegreen-promoter]\n{release}"
        );
        let err = parse(&text, "p").unwrap_err().0;
        assert!(err.starts_with("p:7:3 release.namespace:"), "{err}");
        let allowed = format!("{text}allow:\n  namespaces: [prod]\n");
        assert!(parse(&allowed, "p").is_ok());
        let no_kubeconfig = allowed.replace("system:\n  kubeconfig: kc\n", "");
        assert!(
            parse(&no_kubeconfig, "p").unwrap_err().0.contains("release and system.kubeconfig")
        );
    }
}
