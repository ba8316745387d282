//! The experiment file: steady-state probes, user traffic, faults with their
//! duration and target, the expected behaviour with budgets, and the
//! allow-list of what may be changed.
//!
//! One file holds one or more experiments (the launch plan's matrix is one
//! file, a row per experiment). `${NAME}` and `${NAME:-default}` in the text
//! are replaced before parsing, from `--var NAME=VALUE` and then from the
//! environment, so one file serves the sandbox and a team's own system.
//!
//! With the `schema` feature these types derive the JSON Schema published as
//! `docs/chaos-runner/experiment.schema.json`; their doc comments are its
//! descriptions.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;
use shared_types::Threshold;

use crate::error::ConfigError;

/// A duration written as text: `500ms`, `30s`, `5m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        shared_types::parse_duration(&text).map(Dur).map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for Dur {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A number and a unit: ms, s, m, h, d.",
            "examples": ["500ms", "30s", "5m"]
        })
    }
}

/// A chaos-runner experiment file: what may be touched, and the experiments (rows).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema), schemars(rename = "ExperimentFile"))]
pub struct ExperimentFile {
    /// Prometheus base URL for `promql` probes and `expect.alert` when they name none.
    #[serde(default)]
    pub prometheus: Option<String>,
    /// What faults may act on; loopback hosts are always allowed.
    #[serde(default)]
    pub allow: AllowList,
    /// How often probes run while a fault is applied and during recovery.
    #[serde(default)]
    pub probe_interval: Option<Dur>,
    /// The experiments, each a row of the verdict table.
    #[cfg_attr(feature = "schema", schemars(with = "Vec<Experiment>", length(min = 1)))]
    pub experiments: Vec<Spanned<Experiment>>,
}

/// What faults may change. Nothing outside it is touched; a fault whose
/// target is outside is refused before anything is applied (exit 2).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AllowList {
    /// Hosts (names or IPs) of proxies, HTTP fault endpoints and brokers, besides loopback.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Kubernetes namespaces pods and Deployments may be changed in.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Process names (the executable's file name) that may be signalled.
    #[serde(default)]
    pub processes: Vec<String>,
    /// Network namespaces the runner may create and degrade (`netem`).
    #[serde(default)]
    pub netns: Vec<String>,
}

/// One experiment: a row of the matrix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Experiment {
    /// Short id, used in check ids (`auth-down/recovered`) and `--experiment`.
    pub id: String,
    /// What the row is about, in a few words.
    #[serde(default)]
    pub title: Option<String>,
    /// Probes that all hold on a healthy system: checked before the faults,
    /// during them (the first breach is the time to detect) and after (the
    /// time they hold again is the time to recover).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Vec<Probe>"))]
    pub steady_state: Vec<Spanned<Probe>>,
    /// User traffic sent from before the first fault until recovery.
    #[serde(default)]
    pub workload: Option<Workload>,
    /// The faults, applied in order at the start of the fault phase; each is
    /// undone when its duration has passed.
    #[cfg_attr(feature = "schema", schemars(with = "Vec<Step>", length(min = 1)))]
    pub method: Vec<Spanned<Step>>,
    /// What the system must do, with budgets.
    #[serde(default)]
    pub expect: Expect,
    /// A condition that, once breached during the experiment, aborts it and
    /// undoes every fault within one probe interval.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Option<Probe>"))]
    pub guard: Option<Spanned<Probe>>,
    /// Actions run at the end, whatever happened (after the faults' own undo).
    #[serde(default)]
    pub rollbacks: Vec<Action>,
    /// Longest wait for the steady state to hold again after the undo
    /// (default: twice `expect.recover_within`, else `--recovery-timeout`).
    #[serde(default)]
    pub recovery_timeout: Option<Dur>,
}

/// A probe: exactly one of `http`, `tcp`, `promql`, `sql`, `process`, `pods`, `command`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Probe {
    /// Name in the report and the timeline.
    pub name: String,
    /// An HTTP request whose status, latency and body are checked.
    #[serde(default)]
    pub http: Option<HttpProbe>,
    /// A TCP connect.
    #[serde(default)]
    pub tcp: Option<TcpProbe>,
    /// A PromQL instant query whose value is compared with a tolerance.
    #[serde(default)]
    pub promql: Option<PromqlProbe>,
    /// A SQL query returning one number, compared with a tolerance.
    #[serde(default)]
    pub sql: Option<SqlProbe>,
    /// A process that must be alive (and not stopped).
    #[serde(default)]
    pub process: Option<ProcessProbe>,
    /// Kubernetes pods of a selector that must be ready.
    #[serde(default)]
    pub pods: Option<PodsProbe>,
    /// A command whose exit code is checked (Chaos Toolkit's process probes).
    #[serde(default)]
    pub command: Option<CommandProbe>,
}

/// A command probe.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CommandProbe {
    /// Run with `sh -c`.
    pub run: String,
    /// Exit codes that pass (default 0).
    #[serde(default = "zero")]
    pub exit_code: Vec<i32>,
    /// Longest run (default 10s).
    #[serde(default)]
    pub timeout: Option<Dur>,
}

/// An HTTP probe.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct HttpProbe {
    /// The URL.
    pub url: String,
    /// The method.
    #[serde(default = "get")]
    pub method: String,
    /// Request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Request body.
    #[serde(default)]
    pub body: Option<String>,
    /// Statuses that pass (default 200).
    #[serde(default = "ok_status")]
    pub status: Vec<u16>,
    /// Slowest answer that passes.
    #[serde(default)]
    pub max_latency: Option<Dur>,
    /// Text the body must contain.
    #[serde(default)]
    pub body_contains: Option<String>,
    /// Longest wait for an answer (default 2s).
    #[serde(default)]
    pub timeout: Option<Dur>,
}

/// A TCP connect probe.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TcpProbe {
    /// `host:port`.
    pub address: String,
    /// Longest wait for the connection (default 2s).
    #[serde(default)]
    pub timeout: Option<Dur>,
}

/// A PromQL probe.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PromqlProbe {
    /// Prometheus base URL; the file's `prometheus` when left out.
    #[serde(default)]
    pub prometheus: Option<String>,
    /// The query; its first sample is compared (an empty result does not pass).
    pub query: String,
    /// `value op limit`, e.g. `value < 0.01`.
    pub tolerance: Threshold,
}

/// A SQL probe.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SqlProbe {
    /// PostgreSQL URL (sslmode honoured).
    pub url: String,
    /// A query returning one row with one number.
    pub query: String,
    /// `value op limit`, e.g. `value >= 1`.
    pub tolerance: Threshold,
}

/// A process probe: the process must be alive and not stopped.
pub type ProcessProbe = ProcessTarget;

/// A Kubernetes pods probe.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PodsProbe {
    /// Namespace.
    pub namespace: String,
    /// Label selector, e.g. `app=gateway`.
    pub selector: String,
    /// Ready pods needed (default 1); every pod listed must be ready too.
    #[serde(default = "one")]
    pub min_ready: u32,
}

/// Which processes: by command line (a substring), by PID, or by PID file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ProcessTarget {
    /// A substring of the command line (arguments joined by spaces).
    #[serde(default, rename = "match")]
    pub matches: Option<String>,
    /// A PID.
    #[serde(default)]
    pub pid: Option<u32>,
    /// A file holding the PID.
    #[serde(default)]
    pub pid_file: Option<String>,
}

/// User traffic during the experiment: what users see.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Workload {
    /// Requests per second, spread over the requests in turn (default 20).
    #[serde(default)]
    pub rate: Option<f64>,
    /// Longest wait for one answer (default 5s); a timeout is a user-visible error.
    #[serde(default)]
    pub timeout: Option<Dur>,
    /// The requests, sent in turn.
    pub requests: Vec<WorkloadRequest>,
}

/// One kind of user request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct WorkloadRequest {
    /// Name, used by `expect.unaffected` and `expect.no_data_loss.ledger`.
    pub name: String,
    /// Method (default GET).
    #[serde(default = "get")]
    pub method: String,
    /// URL.
    pub url: String,
    /// Headers; `{{seq}}` and `{{run}}` are replaced by the request's number and the run id.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Body, with the same replacements.
    #[serde(default)]
    pub body: Option<String>,
    /// A JSON pointer (e.g. `/order_id`) to the id of what a 2xx answer
    /// acknowledged; those ids form the ledger `expect.no_data_loss` checks.
    #[serde(default)]
    pub ledger: Option<String>,
}

/// A fault of the method: exactly one of the fault kinds, held for `duration`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Step {
    /// Name in the journal and the timeline.
    pub name: String,
    /// How long the fault stays applied before its undo (default 10s).
    #[serde(default)]
    pub duration: Option<Dur>,
    /// Signal processes: stop (SIGSTOP, undone by SIGCONT), kill (SIGKILL), term.
    #[serde(default)]
    pub process: Option<ProcessFault>,
    /// A toxic on a chaos-runner (or toxiproxy) proxy, removed on undo.
    #[serde(default)]
    pub proxy: Option<ProxyFault>,
    /// Delete Kubernetes pods of a selector (the controller recreates them).
    #[serde(default)]
    pub pods: Option<PodsFault>,
    /// Scale a Deployment (to 0 by default) and back on undo.
    #[serde(default)]
    pub scale: Option<ScaleFault>,
    /// Run a command, and its undo command.
    #[serde(default)]
    pub command: Option<CommandFault>,
    /// Send an HTTP request, and its undo request.
    #[serde(default)]
    pub http: Option<HttpFault>,
    /// Publish a flood of messages to RabbitMQ and follow the queue until drained.
    #[serde(default)]
    pub flood: Option<FloodFault>,
    /// Kernel network faults on a veth pair in a network namespace the runner creates.
    #[serde(default)]
    pub netem: Option<NetemFault>,
    /// A Chaos Mesh object (PodChaos, NetworkChaos, ...), deleted on undo;
    /// needs the Chaos Mesh CRDs installed.
    #[serde(default)]
    pub chaos_mesh: Option<ChaosMeshFault>,
}

/// A Chaos Mesh object.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ChaosMeshFault {
    /// The kind: PodChaos, NetworkChaos, StressChaos, IOChaos, TimeChaos, ...
    pub kind: String,
    /// Namespace of the object (must be allowed); its selector should stay in allowed namespaces too.
    pub namespace: String,
    /// The object's `spec`, as Chaos Mesh documents it.
    #[cfg_attr(feature = "schema", schemars(with = "BTreeMap<String, serde_json::Value>"))]
    pub spec: serde_json::Value,
}

/// A process fault.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ProcessFault {
    /// `stop` (SIGSTOP; undo SIGCONT), `kill` (SIGKILL) or `term` (SIGTERM).
    pub action: ProcessAction,
    /// A substring of the command line (arguments joined by spaces); every match is signalled.
    #[serde(default, rename = "match")]
    pub matches: Option<String>,
    /// A PID.
    #[serde(default)]
    pub pid: Option<u32>,
    /// A file holding the PID.
    #[serde(default)]
    pub pid_file: Option<String>,
    /// For kill and term: a command that starts the process again on undo
    /// (none: its supervisor is expected to).
    #[serde(default)]
    pub restart: Option<String>,
}

/// What a process fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum ProcessAction {
    /// SIGSTOP: the process hangs (connections stay open, nothing answers). Undo: SIGCONT.
    Stop,
    /// SIGKILL.
    Kill,
    /// SIGTERM.
    Term,
}

/// A proxy toxic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ProxyFault {
    /// The proxy's control API (`chaos-runner proxy --api`, or a toxiproxy server).
    pub api: String,
    /// The proxy's name.
    pub proxy: String,
    /// latency, bandwidth, slow_close, timeout, reset_peer, slicer, limit_data, or down.
    pub toxic: String,
    /// `downstream` (server to client, the default) or `upstream`.
    #[serde(default)]
    pub stream: Option<String>,
    /// Share of connections affected, 0 to 1 (default 1).
    #[serde(default)]
    pub toxicity: Option<f64>,
    /// The toxic's attributes, e.g. `{latency: 500, jitter: 50}` (milliseconds).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "BTreeMap<String, f64>"))]
    pub attributes: BTreeMap<String, serde_json::Value>,
}

/// Deleting pods.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PodsFault {
    /// Namespace (must be allowed).
    pub namespace: String,
    /// Label selector, e.g. `app=auth`.
    pub selector: String,
    /// `one` (default), `all`, `fixed` (`value` pods) or `percent` (`value` %).
    #[serde(default)]
    pub mode: Option<PodMode>,
    /// The count or percentage for `fixed` and `percent`.
    #[serde(default)]
    pub value: Option<u32>,
}

/// How many pods a pods fault deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum PodMode {
    /// One pod.
    One,
    /// Every pod of the selector.
    All,
    /// `value` pods.
    Fixed,
    /// `value` percent of the pods, rounded up.
    Percent,
}

/// Scaling a Deployment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ScaleFault {
    /// Namespace (must be allowed).
    pub namespace: String,
    /// Deployment name.
    pub deployment: String,
    /// Replicas during the fault (default 0).
    #[serde(default)]
    pub replicas: i32,
}

/// A command and its undo.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CommandFault {
    /// Run with `sh -c` to apply the fault; must exit 0.
    pub apply: String,
    /// Run with `sh -c` to undo it; must exit 0 and be safe to run twice.
    /// Leave it out only when the fault undoes itself (or a rollback does).
    #[serde(default)]
    pub undo: Option<String>,
}

/// An HTTP request and its undo.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct HttpFault {
    /// Applies the fault; a 2xx answer is success.
    pub apply: Action,
    /// Undoes it; must be safe to send twice. Leave it out only when the
    /// fault undoes itself (or a rollback does).
    #[serde(default)]
    pub undo: Option<Action>,
}

/// An action: an HTTP request or a command.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Action {
    /// URL of an HTTP request.
    #[serde(default)]
    pub url: Option<String>,
    /// Method (default POST).
    #[serde(default)]
    pub method: Option<String>,
    /// Body (sent as JSON when it parses as JSON).
    #[serde(default)]
    pub body: Option<String>,
    /// A command run with `sh -c` instead of a request.
    #[serde(default)]
    pub command: Option<String>,
}

/// A RabbitMQ flood.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FloodFault {
    /// AMQP URL of the broker (its host must be allowed).
    pub amqp_url: String,
    /// The queue to follow until drained. Its depth is read with a passive
    /// `queue.declare`, the broker's live count: the management API's counts
    /// are sampled every 5 s and would judge a drain late or early.
    pub queue: String,
    /// Exchange to publish to.
    pub exchange: String,
    /// Routing key.
    pub routing_key: String,
    /// Messages to publish (default 10000).
    #[serde(default)]
    pub messages: Option<u32>,
    /// Message body; `{{seq}}` and `{{run}}` are replaced.
    pub body: String,
    /// Longest wait for the queue to drain (default 5m).
    #[serde(default)]
    pub drain_within: Option<Dur>,
}

/// Kernel network faults in a network namespace the runner creates.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct NetemFault {
    /// The namespace (created with its veth pair if absent; must be allowed).
    pub netns: String,
    /// Added delay, e.g. 500ms.
    #[serde(default)]
    pub delay: Option<Dur>,
    /// Delay jitter.
    #[serde(default)]
    pub jitter: Option<Dur>,
    /// Packet loss in percent.
    #[serde(default)]
    pub loss: Option<f64>,
    /// TCP ports whose packets are dropped (the launch plan's "cut database connections").
    #[serde(default)]
    pub drop_ports: Vec<u16>,
}

/// The expected behaviour of a row, with its budgets.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Expect {
    /// The steady state holds again within this time after the faults were
    /// undone (`--budget ID=DURATION` overrides it).
    #[serde(default)]
    pub recover_within: Option<Dur>,
    /// The failure is detected (steady state breached, or a user saw an
    /// error) within this time after the first fault.
    #[serde(default)]
    pub detect_within: Option<Dur>,
    /// Most user-visible errors allowed (0 for "falls back at once").
    #[serde(default)]
    pub max_user_errors: Option<u64>,
    /// Every user-visible error is graceful: one of these statuses, with this content type.
    #[serde(default)]
    pub graceful: Option<Graceful>,
    /// Workload requests that must see no error at all (no cascade).
    #[serde(default)]
    pub unaffected: Vec<String>,
    /// Every acknowledged write reached its destination.
    #[serde(default)]
    pub no_data_loss: Option<DataLoss>,
    /// A Prometheus alert that fires during the fault.
    #[serde(default)]
    pub alert: Option<AlertExpect>,
}

/// What a graceful error looks like.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Graceful {
    /// Statuses a failing request may answer with (default 503).
    #[serde(default = "unavailable")]
    pub status: Vec<u16>,
    /// Content type prefix of the error body, e.g. `application/problem+json`.
    #[serde(default)]
    pub content_type: Option<String>,
}

/// The data-loss ledger check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DataLoss {
    /// The workload request whose acknowledged ids form the ledger.
    pub ledger: String,
    /// PostgreSQL URL where the ids must be found.
    pub url: String,
    /// A query with one parameter `$1` (the ids, as a text array) returning
    /// the ids found, e.g. `SELECT order_id::text FROM app.processed_events WHERE order_id::text = ANY($1)`.
    pub query: String,
    /// How long after recovery the ids may take to arrive (default 60s).
    #[serde(default)]
    pub within: Option<Dur>,
}

/// An alert that must fire.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AlertExpect {
    /// The alert's name (`alertname`).
    pub name: String,
    /// Prometheus base URL; the file's `prometheus` when left out.
    #[serde(default)]
    pub prometheus: Option<String>,
    /// It is firing within this time after the first fault (default 2m).
    #[serde(default)]
    pub fire_within: Option<Dur>,
}

fn get() -> String {
    "GET".to_owned()
}

fn ok_status() -> Vec<u16> {
    vec![200]
}

fn unavailable() -> Vec<u16> {
    vec![503]
}

fn one() -> u32 {
    1
}

fn zero() -> Vec<i32> {
    vec![0]
}

/// The fault kinds, for `list-faults` and error messages.
pub const FAULT_KINDS: [&str; 9] =
    ["process", "proxy", "pods", "scale", "command", "http", "flood", "netem", "chaos_mesh"];

/// The probe kinds.
pub const PROBE_KINDS: [&str; 7] = ["http", "tcp", "promql", "sql", "process", "pods", "command"];

/// The toxics a proxy fault may name.
pub const TOXICS: [&str; 8] =
    ["latency", "bandwidth", "slow_close", "timeout", "reset_peer", "slicer", "limit_data", "down"];

impl Probe {
    /// The names of the probe kinds that are set.
    pub fn kinds(&self) -> Vec<&'static str> {
        let set = [
            self.http.is_some(),
            self.tcp.is_some(),
            self.promql.is_some(),
            self.sql.is_some(),
            self.process.is_some(),
            self.pods.is_some(),
            self.command.is_some(),
        ];
        PROBE_KINDS.iter().zip(set).filter(|(_, s)| *s).map(|(k, _)| *k).collect()
    }
}

impl Step {
    /// The names of the fault kinds that are set.
    pub fn kinds(&self) -> Vec<&'static str> {
        let set = [
            self.process.is_some(),
            self.proxy.is_some(),
            self.pods.is_some(),
            self.scale.is_some(),
            self.command.is_some(),
            self.http.is_some(),
            self.flood.is_some(),
            self.netem.is_some(),
            self.chaos_mesh.is_some(),
        ];
        FAULT_KINDS.iter().zip(set).filter(|(_, s)| *s).map(|(k, _)| *k).collect()
    }

    /// How long the fault is held.
    pub fn duration(&self) -> Duration {
        self.duration.map_or(Duration::from_secs(10), |d| d.0)
    }
}

impl ProcessFault {
    /// The processes it acts on.
    pub fn target(&self) -> ProcessTarget {
        ProcessTarget {
            matches: self.matches.clone(),
            pid: self.pid,
            pid_file: self.pid_file.clone(),
        }
    }
}

impl ProcessTarget {
    fn count(&self) -> usize {
        [self.matches.is_some(), self.pid.is_some(), self.pid_file.is_some()]
            .iter()
            .filter(|s| **s)
            .count()
    }
}

/// Replaces `${NAME}` and `${NAME:-default}` in `text`, looking `NAME` up
/// in `vars` and then with `env`. An unset name without a default is an
/// error naming its line.
pub fn substitute(
    text: &str,
    vars: &BTreeMap<String, String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<String, (usize, String)> {
    let mut out = String::with_capacity(text.len());
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                return Err((index + 1, "`${` without a closing `}`".to_owned()));
            };
            let inner = &after[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err((index + 1, format!("`${{{inner}}}`: not a variable name")));
            }
            let value =
                vars.get(name).cloned().or_else(|| env(name)).or(default.map(str::to_owned));
            let Some(value) = value else {
                return Err((
                    index + 1,
                    format!("`${{{name}}}` is not set: pass --var {name}=VALUE or set {name}"),
                ));
            };
            if value.contains('\n') {
                return Err((index + 1, format!("`${{{name}}}`: the value holds a line break")));
            }
            out.push_str(&value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

/// Parses and validates an experiment file's text (already substituted).
/// `source` names the file in errors.
pub fn parse(text: &str, source: &str) -> Result<ExperimentFile, ConfigError> {
    let file: ExperimentFile = serde_saphyr::from_str(text).map_err(|err| {
        let (line, col) = err.location().map_or((1, 1), |l| (l.line(), l.column()));
        let message = err.without_snippet().to_string();
        let message = message.lines().next().unwrap_or_default();
        let message = message.rsplit_once(" at line ").map_or(message, |(m, _)| m);
        let key = shared_types::yaml_key_path(text, line, col, message);
        ConfigError::at(source, line, col, key.as_deref(), message)
    })?;
    validate(&file, source)?;
    Ok(file)
}

fn validate(file: &ExperimentFile, source: &str) -> Result<(), ConfigError> {
    if file.experiments.is_empty() {
        return Err(ConfigError::at(source, 1, 1, Some("experiments"), "no experiment"));
    }
    let mut ids = std::collections::BTreeSet::new();
    for (e, spanned) in file.experiments.iter().enumerate() {
        let exp = &spanned.value;
        let at = |s: &serde_saphyr::Location, key: String, message: String| {
            ConfigError::at(source, s.line(), s.column(), Some(&key), &message)
        };
        let here = &spanned.referenced;
        let valid_id = !exp.id.is_empty()
            && exp.id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid_id {
            return Err(at(
                here,
                format!("experiments[{e}].id"),
                format!("`{}`: use letters, digits, - _ .", exp.id),
            ));
        }
        if !ids.insert(exp.id.clone()) {
            return Err(at(here, format!("experiments[{e}].id"), format!("`{}` twice", exp.id)));
        }
        let probes = exp
            .steady_state
            .iter()
            .map(|p| ("steady_state", p))
            .chain(exp.guard.iter().map(|p| ("guard", p)));
        for (i, (what, probe)) in probes.enumerate() {
            let kinds = probe.value.kinds();
            if kinds.len() != 1 {
                return Err(at(
                    &probe.referenced,
                    format!("{}.{what}", exp.id),
                    format!(
                        "probe `{}` needs exactly one of {}, found {}",
                        probe.value.name,
                        PROBE_KINDS.join(", "),
                        if kinds.is_empty() { "none".to_owned() } else { kinds.join(", ") }
                    ),
                ));
            }
            check_probe(&probe.value, file)
                .map_err(|m| at(&probe.referenced, format!("{}.{what}[{i}]", exp.id), m))?;
        }
        if exp.method.is_empty() {
            return Err(at(here, format!("{}.method", exp.id), "no fault".to_owned()));
        }
        for (i, step) in exp.method.iter().enumerate() {
            let key = format!("{}.method[{i}]", exp.id);
            let kinds = step.value.kinds();
            if kinds.len() != 1 {
                return Err(at(
                    &step.referenced,
                    key,
                    format!(
                        "fault `{}` needs exactly one of {}, found {}",
                        step.value.name,
                        FAULT_KINDS.join(", "),
                        if kinds.is_empty() { "none".to_owned() } else { kinds.join(", ") }
                    ),
                ));
            }
            check_step(&step.value).map_err(|m| at(&step.referenced, key, m))?;
        }
        let names: Vec<&str> =
            exp.workload.iter().flat_map(|w| w.requests.iter().map(|r| r.name.as_str())).collect();
        if let Some(w) = &exp.workload {
            if w.requests.is_empty() {
                return Err(at(here, format!("{}.workload.requests", exp.id), "empty".to_owned()));
            }
            if w.rate.is_some_and(|r| !(r > 0.0 && r <= 10_000.0)) {
                return Err(at(
                    here,
                    format!("{}.workload.rate", exp.id),
                    "between 0 and 10000 requests per second".to_owned(),
                ));
            }
            for r in &w.requests {
                if let Some(p) = &r.ledger
                    && !p.starts_with('/')
                {
                    return Err(at(
                        here,
                        format!("{}.workload.requests.{}.ledger", exp.id, r.name),
                        format!("`{p}` is not a JSON pointer (e.g. /order_id)"),
                    ));
                }
            }
        }
        for name in &exp.expect.unaffected {
            if !names.contains(&name.as_str()) {
                return Err(at(
                    here,
                    format!("{}.expect.unaffected", exp.id),
                    format!("`{name}` names no workload request"),
                ));
            }
        }
        if let Some(loss) = &exp.expect.no_data_loss {
            let ledger =
                exp.workload.iter().flat_map(|w| &w.requests).find(|r| r.name == loss.ledger);
            if ledger.is_none_or(|r| r.ledger.is_none()) {
                return Err(at(
                    here,
                    format!("{}.expect.no_data_loss.ledger", exp.id),
                    format!("`{}` names no workload request with a `ledger` pointer", loss.ledger),
                ));
            }
        }
        if exp.expect.alert.as_ref().is_some_and(|a| a.prometheus.is_none())
            && file.prometheus.is_none()
        {
            return Err(at(
                here,
                format!("{}.expect.alert.prometheus", exp.id),
                "no Prometheus: set it here or as the file's `prometheus`".to_owned(),
            ));
        }
    }
    Ok(())
}

fn check_threshold(t: &Threshold) -> Result<(), String> {
    if t.metric != "value" {
        return Err(format!("tolerance `{t}`: write it as `value {} {}`", t.op, t.limit));
    }
    Ok(())
}

fn check_probe(probe: &Probe, file: &ExperimentFile) -> Result<(), String> {
    if let Some(p) = &probe.promql {
        check_threshold(&p.tolerance)?;
        if p.prometheus.is_none() && file.prometheus.is_none() {
            return Err(format!(
                "probe `{}`: no Prometheus: set `prometheus` here or in the file",
                probe.name
            ));
        }
    }
    if let Some(p) = &probe.sql {
        check_threshold(&p.tolerance)?;
    }
    if let Some(p) = &probe.process
        && p.count() != 1
    {
        return Err(format!("probe `{}`: exactly one of match, pid, pid_file", probe.name));
    }
    Ok(())
}

fn check_step(step: &Step) -> Result<(), String> {
    if let Some(p) = &step.process {
        if p.target().count() != 1 {
            return Err(format!("fault `{}`: exactly one of match, pid, pid_file", step.name));
        }
        if p.action == ProcessAction::Stop && p.restart.is_some() {
            return Err(format!(
                "fault `{}`: `restart` is for kill and term; stop is undone by SIGCONT",
                step.name
            ));
        }
    }
    if let Some(p) = &step.proxy {
        if !TOXICS.contains(&p.toxic.as_str()) {
            return Err(format!(
                "fault `{}`: unknown toxic `{}` (one of {})",
                step.name,
                p.toxic,
                TOXICS.join(", ")
            ));
        }
        if let Some(s) = &p.stream
            && s != "downstream"
            && s != "upstream"
        {
            return Err(format!(
                "fault `{}`: stream is downstream or upstream, not `{s}`",
                step.name
            ));
        }
        if p.toxicity.is_some_and(|t| !(0.0..=1.0).contains(&t)) {
            return Err(format!("fault `{}`: toxicity is between 0 and 1", step.name));
        }
        crate::proxy::Toxic::from_parts(&p.toxic, p.attributes.clone())
            .map_err(|e| format!("fault `{}`: {e}", step.name))?;
    }
    if let Some(p) = &step.pods
        && matches!(p.mode, Some(PodMode::Fixed | PodMode::Percent))
        && p.value.is_none()
    {
        return Err(format!("fault `{}`: mode fixed and percent need `value`", step.name));
    }
    if let Some(p) = &step.pods
        && p.mode == Some(PodMode::Percent)
        && p.value.is_some_and(|v| v == 0 || v > 100)
    {
        return Err(format!("fault `{}`: percent is between 1 and 100", step.name));
    }
    if let Some(h) = &step.http {
        for (what, a) in [("apply", Some(&h.apply)), ("undo", h.undo.as_ref())] {
            if a.is_some_and(|a| a.url.is_none()) {
                return Err(format!("fault `{}`: http.{what} needs a url", step.name));
            }
        }
    }
    if let Some(n) = &step.netem {
        if n.delay.is_none() && n.loss.is_none() && n.drop_ports.is_empty() {
            return Err(format!("fault `{}`: netem needs delay, loss or drop_ports", step.name));
        }
        if n.loss.is_some_and(|l| !(0.0..=100.0).contains(&l)) {
            return Err(format!("fault `{}`: loss is a percentage", step.name));
        }
        crate::netem::check_name(&n.netns).map_err(|e| format!("fault `{}`: {e}", step.name))?;
    }
    if let Some(c) = &step.chaos_mesh {
        let ok = !c.kind.is_empty()
            && c.kind.ends_with("Chaos")
            && c.kind.chars().all(|ch| ch.is_ascii_alphanumeric());
        if !ok {
            return Err(format!(
                "fault `{}`: `{}` is not a Chaos Mesh kind (PodChaos, NetworkChaos, ...)",
                step.name, c.kind
            ));
        }
        if !c.spec.is_object() {
            return Err(format!("fault `{}`: chaos_mesh.spec must be a mapping", step.name));
        }
    }
    if step.duration() > Duration::from_secs(3600) {
        return Err(format!("fault `{}`: longer than an hour", step.name));
    }
    Ok(())
}

impl Action {
    /// Checks an action has exactly one of url and command.
    pub fn check(&self) -> Result<(), String> {
        match (&self.url, &self.command) {
            (Some(_), None) | (None, Some(_)) => Ok(()),
            _ => Err("an action needs exactly one of url and command".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "experiments:
  - id: auth-down
    steady_state:
      - name: gateway
        http: {url: 'http://127.0.0.1:1/healthz'}
    method:
      - name: stop-auth
        process: {action: stop, match: '--role auth'}
        duration: 5s
    expect:
      recover_within: 60s
";

    #[test]
    fn a_minimal_file_parses() {
        let file = parse(MINIMAL, "x.yaml").unwrap();
        let exp = &file.experiments[0].value;
        assert_eq!(exp.id, "auth-down");
        assert_eq!(exp.method[0].value.duration(), Duration::from_secs(5));
        assert_eq!(exp.expect.recover_within, Some(Dur(Duration::from_secs(60))));
    }

    #[test]
    fn an_unknown_fault_names_file_line_and_key() {
        let text = MINIMAL.replace("process: {action: stop", "explode: {action: stop");
        let err = parse(&text, "x.yaml").unwrap_err().to_string();
        assert!(err.starts_with("x.yaml:8:"), "{err}");
        assert!(err.contains("explode"), "{err}");
        assert!(err.contains("experiments.method") || err.contains("method"), "{err}");
    }

    #[test]
    fn two_faults_in_a_step_and_a_bad_toxic_are_refused() {
        let text = MINIMAL.replace(
            "        duration: 5s",
            "        proxy: {api: 'http://127.0.0.1:8474', proxy: redis, toxic: down}\n        duration: 5s",
        );
        let err = parse(&text, "x.yaml").unwrap_err().to_string();
        assert!(err.contains("exactly one of"), "{err}");
        let text = MINIMAL.replace(
            "process: {action: stop, match: '--role auth'}",
            "proxy: {api: 'http://127.0.0.1:8474', proxy: redis, toxic: melt}",
        );
        let err = parse(&text, "x.yaml").unwrap_err().to_string();
        assert!(err.contains("unknown toxic `melt`"), "{err}");
        assert!(err.contains("auth-down.method[0]"), "{err}");
    }

    #[test]
    fn variables_are_substituted_with_defaults_and_named_when_missing() {
        let vars = BTreeMap::from([("A".to_owned(), "1".to_owned())]);
        let env = |name: &str| (name == "B").then(|| "2".to_owned());
        assert_eq!(substitute("x ${A} ${B} ${C:-3}\n", &vars, env).unwrap(), "x 1 2 3\n");
        let err = substitute("ok\nurl: ${GATEWAY}\n", &vars, env).unwrap_err();
        assert_eq!(err.0, 2);
        assert!(err.1.contains("--var GATEWAY=VALUE"), "{}", err.1);
        assert!(substitute("${1x}", &vars, env).is_err());
        assert!(substitute("${A", &vars, env).is_err());
    }

    #[test]
    fn tolerances_must_be_written_against_value() {
        let text = MINIMAL.replace(
            "http: {url: 'http://127.0.0.1:1/healthz'}",
            "sql: {url: 'postgres://x@127.0.0.1/x', query: 'select 1', tolerance: 'rows > 1'}",
        );
        let err = parse(&text, "x.yaml").unwrap_err().to_string();
        assert!(err.contains("value > 1"), "{err}");
    }
}
