//! The pods bound to a node: one task per pod runs its containers as
//! processes, probes them, restarts them by `restartPolicy` with back-off,
//! enforces memory limits, writes the pod's status as a kubelet does, and
//! deletes gracefully (SIGTERM, the grace period, SIGKILL).

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Pod, PodCondition, PodIP,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher;
use kube::{Api, Client};
use rustix::process::Signal;
use tokio::sync::mpsc;

use crate::addr::{PodIps, loopback_twin};
use crate::env::{NodeEnv, build, expand};
use crate::images::ImageTable;
use crate::metrics::{ContainerEntry, Registry};
use crate::probe::ProbeState;
use crate::process::{Launch, Running};
use crate::procfs::{parse_bytes, usage_by_group};

/// How often a pod's task looks at its processes.
const TICK: Duration = Duration::from_millis(200);
/// The kubelet's back-off cap.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A container that ran this long starts its back-off afresh.
const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// What every pod task of one node shares.
pub struct NodeContext {
    /// The API client.
    pub client: Client,
    /// This node's name.
    pub node_name: String,
    /// Image → executable.
    pub images: ImageTable,
    /// Pod IPs (shared by the nodes of one process).
    pub ips: Arc<Mutex<PodIps>>,
    /// Where pod logs go: `DIR/pods/NAMESPACE_NAME_UID/CONTAINER.log`.
    pub state_dir: PathBuf,
    /// First back-off step after the first immediate restart (the kubelet's is 10 s).
    pub restart_backoff: Duration,
    /// Containers for the cAdvisor endpoint.
    pub registry: Registry,
    /// The node's address (`status.hostIP`).
    pub host_ip: String,
}

impl std::fmt::Debug for NodeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeContext").field("node_name", &self.node_name).finish_non_exhaustive()
    }
}

enum Message {
    Update(Box<Pod>),
    Kill,
}

/// Watches the pods bound to `ctx.node_name` and runs them until the
/// watch ends (never, unless the API server goes away for good).
pub async fn run(ctx: Arc<NodeContext>) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.node_name));
    let mut stream = watcher(api, config).boxed();
    let mut workers: HashMap<String, mpsc::UnboundedSender<Message>> = HashMap::new();
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(event) => event,
            Err(err) => {
                tracing::warn!(node = %ctx.node_name, "pod watch: {err}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        workers.retain(|_, tx| !tx.is_closed());
        match event {
            watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                let Some(uid) = pod.metadata.uid.clone() else { continue };
                if let Some(tx) = workers.get(&uid) {
                    let _ = tx.send(Message::Update(Box::new(pod)));
                    continue;
                }
                let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
                if pod.metadata.deletion_timestamp.is_some() {
                    // Terminating and not ours to run (a node restart): finish the deletion.
                    finish_deletion(&ctx.client, &pod).await;
                    continue;
                }
                if phase == "Succeeded" || phase == "Failed" {
                    continue;
                }
                let (tx, rx) = mpsc::unbounded_channel();
                workers.insert(uid, tx);
                tokio::spawn(run_pod(ctx.clone(), pod, rx));
            }
            watcher::Event::Delete(pod) => {
                if let Some(tx) = pod.metadata.uid.as_ref().and_then(|uid| workers.remove(uid)) {
                    let _ = tx.send(Message::Kill);
                }
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }
}

/// Deletes a pod whose processes are gone (grace 0, for this uid only).
async fn finish_deletion(client: &Client, pod: &Pod) {
    let (Some(name), Some(namespace)) = (&pod.metadata.name, &pod.metadata.namespace) else {
        return;
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    if let Err(err) = api.delete(name, &params).await {
        tracing::debug!(pod = %name, "final delete: {err}");
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// One container of a pod task.
struct Slot {
    spec: Container,
    process: Option<Running>,
    started: Instant,
    started_at: Option<Time>,
    restart_count: i32,
    backoff_steps: u32,
    next_start: Instant,
    state: ContainerState,
    last_state: Option<ContainerState>,
    oom_killed: bool,
    liveness_kill: bool,
    stopping_since: Option<Instant>,
    limit: Option<u64>,
    liveness: Option<ProbeState>,
    readiness: Option<ProbeState>,
    ready: bool,
    done: bool,
    env: Vec<(String, String)>,
    image_id: String,
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting { reason: Some(reason.to_owned()), message }),
        ..ContainerState::default()
    }
}

impl Slot {
    fn new(spec: Container) -> Slot {
        let limit = spec
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("memory"))
            .and_then(|q| parse_bytes(&q.0));
        Slot {
            spec,
            process: None,
            started: Instant::now(),
            started_at: None,
            restart_count: 0,
            backoff_steps: 0,
            next_start: Instant::now(),
            state: waiting("ContainerCreating", None),
            last_state: None,
            oom_killed: false,
            liveness_kill: false,
            stopping_since: None,
            limit,
            liveness: None,
            readiness: None,
            ready: false,
            done: false,
            env: Vec::new(),
            image_id: String::new(),
        }
    }

    fn pid(&self) -> Option<i32> {
        self.process.as_ref().map(Running::pid)
    }
}

struct PodTask {
    ctx: Arc<NodeContext>,
    pod: Pod,
    api: Api<Pod>,
    ip: Ipv4Addr,
    loopback: Ipv4Addr,
    dir: PathBuf,
    slots: Vec<Slot>,
    restart_policy: String,
    grace: Duration,
    started_at: Time,
    last_status: Option<serde_json::Value>,
    transition_times: HashMap<String, Time>,
}

fn key(pod: &Pod, container: &str) -> String {
    format!(
        "{}/{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or(""),
        container
    )
}

async fn run_pod(ctx: Arc<NodeContext>, pod: Pod, mut rx: mpsc::UnboundedReceiver<Message>) {
    let ip = ctx.ips.lock().map(|mut ips| ips.allocate()).ok().flatten();
    let Some(ip) = ip else {
        tracing::error!(pod = ?pod.metadata.name, "no pod IP left in this node's range");
        return;
    };
    let loopback = loopback_twin(ip).unwrap_or(Ipv4Addr::LOCALHOST);
    let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned());
    let dir = ctx.state_dir.join("pods").join(format!(
        "{namespace}_{}_{}",
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.uid.as_deref().unwrap_or("")
    ));
    let _ = std::fs::create_dir_all(&dir);
    let spec = pod.spec.clone().unwrap_or_default();
    let mut task = PodTask {
        api: Api::namespaced(ctx.client.clone(), &namespace),
        ip,
        loopback,
        dir,
        slots: spec.containers.iter().cloned().map(Slot::new).collect(),
        restart_policy: spec.restart_policy.clone().unwrap_or_else(|| "Always".to_owned()),
        grace: Duration::from_secs(
            u64::try_from(spec.termination_grace_period_seconds.unwrap_or(30)).unwrap_or(30),
        ),
        started_at: now(),
        last_status: None,
        transition_times: HashMap::new(),
        ctx,
        pod,
    };
    tracing::info!(pod = ?task.pod.metadata.name, %ip, %loopback, "running pod");
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = rx.recv() => match message {
                Some(Message::Update(pod)) => task.pod = *pod,
                Some(Message::Kill) | None => {
                    task.kill_all();
                    break;
                }
            },
            _ = ticker.tick() => {}
        }
        if task.pod.metadata.deletion_timestamp.is_some() {
            let grace = task
                .pod
                .metadata
                .deletion_grace_period_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(task.grace, Duration::from_secs);
            task.terminate(grace, &mut rx).await;
            finish_deletion(&task.ctx.client, &task.pod).await;
            break;
        }
        task.step().await;
        task.push_status().await;
    }
    for slot in &task.slots {
        task.ctx.registry.remove(&key(&task.pod, &slot.spec.name));
    }
    if let Ok(mut ips) = task.ctx.ips.lock() {
        ips.release(ip);
    }
}

impl PodTask {
    fn kill_all(&mut self) {
        for slot in &mut self.slots {
            slot.process = None; // Drop kills the group.
        }
    }

    /// SIGTERM to every container, up to `grace` for them to exit, then SIGKILL.
    async fn terminate(&mut self, grace: Duration, rx: &mut mpsc::UnboundedReceiver<Message>) {
        for slot in &self.slots {
            if let Some(p) = &slot.process {
                p.signal(Signal::TERM);
            }
        }
        let deadline = Instant::now() + grace;
        loop {
            let mut running = false;
            for slot in &mut self.slots {
                if let Some(p) = &mut slot.process {
                    if p.exited().is_some() {
                        slot.process = None;
                    } else {
                        running = true;
                    }
                }
            }
            if !running || Instant::now() >= deadline {
                break;
            }
            tokio::select! {
                message = rx.recv() => if matches!(message, Some(Message::Kill) | None) { break },
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        self.kill_all();
    }

    async fn step(&mut self) {
        let usage = if self.slots.iter().any(|s| s.limit.is_some() && s.process.is_some()) {
            usage_by_group()
        } else {
            BTreeMap::new()
        };
        for i in 0..self.slots.len() {
            self.step_slot(i, &usage).await;
        }
    }

    async fn step_slot(&mut self, i: usize, usage: &BTreeMap<i32, crate::procfs::Usage>) {
        let restart_policy = self.restart_policy.clone();
        let grace = self.grace;
        let backoff = self.ctx.restart_backoff;
        let loopback = self.loopback;
        let slot = &mut self.slots[i];
        if let Some(process) = &mut slot.process {
            if let Some(code) = process.exited() {
                let reason = if slot.oom_killed {
                    "OOMKilled"
                } else if code == 0 {
                    "Completed"
                } else {
                    "Error"
                };
                let finished = now();
                let terminated = ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: if slot.oom_killed { 137 } else { code },
                        reason: Some(reason.to_owned()),
                        started_at: slot.started_at.clone(),
                        finished_at: Some(finished),
                        container_id: Some(format!("process://{}", process.pid())),
                        message: slot
                            .liveness_kill
                            .then(|| "liveness probe failed; the container was killed and will be restarted".to_owned()),
                        signal: None,
                    }),
                    ..ContainerState::default()
                };
                tracing::info!(container = %slot.spec.name, code, reason, "container exited");
                slot.process = None;
                slot.ready = false;
                slot.readiness = None;
                slot.liveness = None;
                slot.stopping_since = None;
                let restart = match restart_policy.as_str() {
                    "Never" => false,
                    "OnFailure" => code != 0 || slot.oom_killed,
                    _ => true,
                };
                slot.oom_killed = false;
                slot.liveness_kill = false;
                if restart {
                    if slot.started.elapsed() >= BACKOFF_RESET {
                        slot.backoff_steps = 0;
                    }
                    let delay = if slot.backoff_steps == 0 {
                        Duration::ZERO
                    } else {
                        (backoff * 2u32.saturating_pow(slot.backoff_steps - 1)).min(MAX_BACKOFF)
                    };
                    slot.backoff_steps += 1;
                    slot.restart_count += 1;
                    slot.next_start = Instant::now() + delay;
                    slot.last_state = Some(terminated);
                    slot.state = waiting(
                        if delay.is_zero() { "ContainerCreating" } else { "CrashLoopBackOff" },
                        (!delay.is_zero()).then(|| {
                            format!("back-off {} s restarting failed container", delay.as_secs())
                        }),
                    );
                } else {
                    slot.state = terminated;
                    slot.done = true;
                }
                return;
            }
            // Still running: memory limit, then stop in progress, then probes.
            if let (Some(limit), Some(used)) = (slot.limit, usage.get(&process.pid()))
                && used.rss_bytes > limit
                && !slot.oom_killed
            {
                tracing::warn!(container = %slot.spec.name, used = used.rss_bytes, limit, "over its memory limit: OOMKilled");
                slot.oom_killed = true;
                process.signal(Signal::KILL);
                return;
            }
            if let Some(since) = slot.stopping_since {
                if since.elapsed() >= grace {
                    process.signal(Signal::KILL);
                }
                return;
            }
            let env = slot.env.clone();
            if let Some(probe) = &mut slot.liveness
                && probe.tick(&slot.spec, loopback, &env).await == Some(false)
            {
                tracing::info!(container = %slot.spec.name, why = ?probe.last_error, "liveness probe failed: restarting");
                slot.liveness_kill = true;
                slot.stopping_since = Some(Instant::now());
                slot.ready = false;
                process.signal(Signal::TERM);
                return;
            }
            match &mut slot.readiness {
                Some(probe) => {
                    if let Some(ready) = probe.tick(&slot.spec, loopback, &env).await {
                        tracing::info!(container = %slot.spec.name, ready, why = ?probe.last_error, "readiness changed");
                        slot.ready = ready;
                    }
                }
                None => slot.ready = true,
            }
            return;
        }
        if slot.done || Instant::now() < slot.next_start {
            return;
        }
        self.start_slot(i).await;
    }

    async fn start_slot(&mut self, i: usize) {
        let spec = self.slots[i].spec.clone();
        let image = spec.image.clone().unwrap_or_default();
        let Some(resolved) = self.ctx.images.resolve(&image) else {
            let known = self.ctx.images.repositories().join(", ");
            let slot = &mut self.slots[i];
            slot.state = waiting(
                "ErrImagePull",
                Some(format!(
                    "image {image:?} is not in this node's image table (known: {known}); start the node with --image REPOSITORY=PATH"
                )),
            );
            slot.next_start = Instant::now() + Duration::from_secs(5);
            return;
        };
        let node_env = NodeEnv {
            pod_ip: self.ip.to_string(),
            loopback_ip: self.loopback.to_string(),
            host_ip: self.ctx.host_ip.clone(),
            node_name: self.ctx.node_name.clone(),
            image_tag: resolved.tag.clone(),
            path: std::env::var("PATH")
                .unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_owned()),
        };
        let env = match build(&self.ctx.client, &self.pod, &spec, &node_env).await {
            Ok(env) => env,
            Err(why) => {
                let slot = &mut self.slots[i];
                slot.state = waiting("CreateContainerConfigError", Some(why));
                slot.next_start = Instant::now() + Duration::from_secs(2);
                return;
            }
        };
        let command: Vec<String> = spec.command.iter().flatten().map(|c| expand(c, &env)).collect();
        let args: Vec<String> = spec.args.iter().flatten().map(|a| expand(a, &env)).collect();
        let (program, args) = match command.split_first() {
            Some((program, rest)) => {
                (PathBuf::from(program), rest.iter().cloned().chain(args).collect())
            }
            None => (resolved.executable.clone(), args),
        };
        let launch = Launch {
            program: program.clone(),
            args,
            env: env.clone(),
            log: self.dir.join(format!("{}.log", spec.name)),
            dir: spec.working_dir.clone().map_or_else(|| self.dir.clone(), PathBuf::from),
        };
        let pod_key = key(&self.pod, &spec.name);
        let namespace = self.pod.metadata.namespace.clone().unwrap_or_default();
        let pod_name = self.pod.metadata.name.clone().unwrap_or_default();
        let slot = &mut self.slots[i];
        match Running::start(&launch) {
            Ok(running) => {
                tracing::info!(container = %spec.name, pid = running.pid(), program = %program.display(), "container started");
                slot.started = Instant::now();
                slot.started_at = Some(now());
                slot.state = ContainerState {
                    running: Some(ContainerStateRunning { started_at: slot.started_at.clone() }),
                    ..ContainerState::default()
                };
                slot.liveness =
                    spec.liveness_probe.clone().map(|p| ProbeState::new(p, slot.started));
                slot.readiness =
                    spec.readiness_probe.clone().map(|p| ProbeState::new(p, slot.started));
                slot.ready = false;
                slot.env = env.into_iter().collect();
                slot.image_id = format!("process://{}", resolved.executable.display());
                self.ctx.registry.insert(
                    pod_key,
                    ContainerEntry {
                        namespace,
                        pod: pod_name,
                        container: spec.name.clone(),
                        image,
                        pgid: running.pid(),
                        limit_bytes: slot.limit,
                    },
                );
                slot.process = Some(running);
            }
            Err(err) => {
                slot.state = waiting(
                    "RunContainerError",
                    Some(format!("cannot start {}: {err}", program.display())),
                );
                slot.next_start = Instant::now() + self.ctx.restart_backoff;
            }
        }
    }

    /// Writes the status when it changed (a merge patch of `status`).
    async fn push_status(&mut self) {
        let statuses: Vec<ContainerStatus> = self
            .slots
            .iter()
            .map(|s| ContainerStatus {
                name: s.spec.name.clone(),
                image: s.spec.image.clone().unwrap_or_default(),
                image_id: s.image_id.clone(),
                container_id: s.pid().map(|p| format!("process://{p}")),
                ready: s.ready && s.process.is_some(),
                started: Some(s.process.is_some()),
                restart_count: s.restart_count,
                state: Some(s.state.clone()),
                last_state: s.last_state.clone(),
                ..ContainerStatus::default()
            })
            .collect();
        let all_ready = statuses.iter().all(|s| s.ready);
        let any_running = self.slots.iter().any(|s| s.process.is_some());
        let all_done = self.slots.iter().all(|s| s.done);
        let phase = if all_done {
            let failed = self
                .slots
                .iter()
                .any(|s| s.state.terminated.as_ref().is_some_and(|t| t.exit_code != 0));
            if failed { "Failed" } else { "Succeeded" }
        } else if any_running || self.slots.iter().any(|s| s.restart_count > 0) {
            "Running"
        } else {
            "Pending"
        };
        let condition = |kind: &str, ok: bool| PodCondition {
            type_: kind.to_owned(),
            status: if ok { "True" } else { "False" }.to_owned(),
            ..PodCondition::default()
        };
        let conditions = vec![
            condition("PodScheduled", true),
            condition("Initialized", true),
            condition("ContainersReady", all_ready),
            condition("Ready", all_ready),
        ];
        let status = serde_json::json!({
            "phase": phase,
            "hostIP": self.ctx.host_ip,
            "podIP": self.ip.to_string(),
            "podIPs": [PodIP { ip: self.ip.to_string() }],
            "startTime": self.started_at,
            "qosClass": qos_class(&self.slots),
            "containerStatuses": statuses,
            "conditions": conditions,
        });
        if self.last_status.as_ref() == Some(&status) {
            return;
        }
        // Transition times only change with the condition's status.
        let mut patch = status.clone();
        let stamp = now();
        if let Some(list) = patch["conditions"].as_array_mut() {
            for c in list {
                let kind = c["type"].as_str().unwrap_or("").to_owned();
                let same = self.last_status.as_ref().and_then(|old| {
                    old["conditions"]
                        .as_array()?
                        .iter()
                        .find(|o| o["type"] == kind.as_str())
                        .cloned()
                });
                let time = match same {
                    Some(old) if old["status"] == c["status"] => {
                        self.transition_times.get(&kind).cloned().unwrap_or_else(|| stamp.clone())
                    }
                    _ => stamp.clone(),
                };
                self.transition_times.insert(kind, time.clone());
                c["lastTransitionTime"] = serde_json::to_value(&time).unwrap_or_default();
                c["lastProbeTime"] = serde_json::Value::Null;
            }
        }
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        match self
            .api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "status": patch })),
            )
            .await
        {
            Ok(_) => self.last_status = Some(status),
            Err(err) => tracing::debug!(pod = %name, "status update: {err}"),
        }
    }
}

fn qos_class(slots: &[Slot]) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    for s in slots {
        let r = s.spec.resources.as_ref();
        let limits = r.and_then(|r| r.limits.as_ref());
        let requests = r.and_then(|r| r.requests.as_ref());
        if limits.is_some_and(|l| !l.is_empty()) || requests.is_some_and(|q| !q.is_empty()) {
            any = true;
        }
        let full = ["cpu", "memory"].iter().all(|k| {
            let l = limits.and_then(|l| l.get(*k));
            l.is_some() && requests.and_then(|q| q.get(*k)).is_none_or(|q| Some(q) == l)
        });
        guaranteed &= full;
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}
