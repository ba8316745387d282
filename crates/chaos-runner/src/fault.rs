//! Faults: each step of a method is first *planned* (targets resolved,
//! allow-list checked, the exact undo computed; nothing touched), then
//! journaled, then applied; its undo is journaled when done.

use std::time::Duration;

use rustix::process::Signal;
use serde::Serialize;

use crate::experiment::{AllowList, ProcessAction, Step};
use crate::journal::Undo;
use crate::kube::Kube;
use crate::{netem, process, proxy};

/// What applying a planned fault does.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Apply {
    /// Send a signal to a process.
    Signal {
        /// PID.
        pid: u32,
        /// Its start time, so a reused PID is never signalled.
        start_time: u64,
        /// `STOP`, `KILL`, `TERM`.
        signal: String,
    },
    /// Add a toxic.
    Toxic {
        /// Control API.
        api: String,
        /// Proxy.
        proxy: String,
        /// The toxic.
        spec: proxy::ToxicSpec,
    },
    /// Disable a proxy.
    Disable {
        /// Control API.
        api: String,
        /// Proxy.
        proxy: String,
    },
    /// Delete pods.
    DeletePods {
        /// Namespace.
        namespace: String,
        /// Pod names.
        pods: Vec<String>,
    },
    /// Scale a Deployment.
    Scale {
        /// Namespace.
        namespace: String,
        /// Deployment.
        deployment: String,
        /// Replicas during the fault.
        replicas: i32,
    },
    /// Run a command.
    Command {
        /// With `sh -c`.
        command: String,
    },
    /// Send a request.
    Http {
        /// Method.
        method: String,
        /// URL.
        url: String,
        /// Body.
        body: Option<String>,
    },
    /// Publish a flood.
    Flood {
        /// AMQP URL (password redacted in reports).
        amqp_url: String,
        /// Exchange.
        exchange: String,
        /// Routing key.
        routing_key: String,
        /// Messages.
        messages: u32,
        /// Body template.
        body: String,
    },
    /// Create a Chaos Mesh object.
    ChaosMesh {
        /// Kind (PodChaos, ...).
        object_kind: String,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Its spec.
        spec: serde_json::Value,
    },
    /// netem and drops in a namespace.
    Netem {
        /// Namespace.
        netns: String,
        /// Delay.
        delay_ms: Option<f64>,
        /// Jitter.
        jitter_ms: Option<f64>,
        /// Loss %.
        loss: Option<f64>,
        /// Dropped ports.
        drop_ports: Vec<u16>,
    },
}

/// One fault, ready to journal and apply.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Planned {
    /// `experiment/step` (plus `#PID` for one of several processes).
    pub key: String,
    /// The step's name.
    pub step: String,
    /// One line for people.
    pub describe: String,
    /// What applying does.
    pub apply: Apply,
    /// The exact undo.
    pub undo: Undo,
    /// How long it is held.
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// What planning and applying need.
#[derive(Debug)]
pub struct Env<'a> {
    /// The allow-list.
    pub allow: &'a AllowList,
    /// The cluster, when one is configured.
    pub kube: Option<&'a Kube>,
    /// HTTP client.
    pub http: &'a reqwest::Client,
    /// The run id (names toxics, seeds choices).
    pub run: &'a str,
}

/// Whether `host` may be acted on: loopback, or listed.
pub fn host_allowed(allow: &AllowList, url_or_addr: &str) -> Result<(), String> {
    let host = host_of(url_or_addr);
    if shared_types::is_loopback_host(&host) || allow.hosts.contains(&host) {
        Ok(())
    } else {
        Err(format!("host `{host}` ({url_or_addr}) is not allowed: add it to allow.hosts"))
    }
}

/// The host of a URL or `host:port`, without brackets or credentials.
pub fn host_of(text: &str) -> String {
    let rest = text.split_once("://").map_or(text, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6).to_owned();
    }
    authority.split(':').next().unwrap_or(authority).to_owned()
}

fn namespace_allowed(allow: &AllowList, namespace: &str) -> Result<(), String> {
    if allow.namespaces.iter().any(|n| n == namespace) {
        Ok(())
    } else {
        Err(format!("namespace `{namespace}` is not allowed: add it to allow.namespaces"))
    }
}

fn need_kube<'a>(env: &'a Env<'_>, what: &str) -> Result<&'a Kube, String> {
    env.kube.ok_or_else(|| {
        format!("{what} needs a Kubernetes cluster: pass --kubeconfig (or set KUBECONFIG)")
    })
}

/// Plans `step` of `experiment`: resolves its targets and computes the
/// undo, touching nothing. Errors name what is refused or missing.
pub async fn plan(env: &Env<'_>, experiment: &str, step: &Step) -> Result<Vec<Planned>, String> {
    let key = format!("{experiment}/{}", step.name);
    let duration = step.duration();
    let one = |describe: String, apply: Apply, undo: Undo| {
        vec![Planned { key: key.clone(), step: step.name.clone(), describe, apply, undo, duration }]
    };
    if let Some(p) = &step.process {
        let procs = process::resolve(&p.target(), &env.allow.processes)?;
        let (signal, verb) = match p.action {
            ProcessAction::Stop => ("STOP", "stop (SIGSTOP)"),
            ProcessAction::Kill => ("KILL", "kill (SIGKILL)"),
            ProcessAction::Term => ("TERM", "terminate (SIGTERM)"),
        };
        let many = procs.len() > 1;
        return Ok(procs
            .into_iter()
            .enumerate()
            .map(|(i, proc_)| {
                let undo = match (p.action, &p.restart) {
                    (ProcessAction::Stop, _) => {
                        Undo::Continue { pid: proc_.pid, start_time: proc_.start_time }
                    }
                    // One restart command per step, however many processes matched.
                    (_, Some(cmd)) if i == 0 => Undo::Command { command: cmd.clone() },
                    _ => Undo::Nothing {
                        why: "a killed process is restarted by its supervisor".to_owned(),
                    },
                };
                Planned {
                    key: if many { format!("{key}#{}", proc_.pid) } else { key.clone() },
                    step: step.name.clone(),
                    describe: format!("{verb} PID {} `{}`", proc_.pid, proc_.cmdline),
                    apply: Apply::Signal {
                        pid: proc_.pid,
                        start_time: proc_.start_time,
                        signal: signal.to_owned(),
                    },
                    undo,
                    duration,
                }
            })
            .collect());
    }
    if let Some(p) = &step.proxy {
        host_allowed(env.allow, &p.api)?;
        if p.toxic == "down" {
            return Ok(one(
                format!("proxy {} down (new connections refused, open ones closed)", p.proxy),
                Apply::Disable { api: p.api.clone(), proxy: p.proxy.clone() },
                Undo::ProxyEnable { api: p.api.clone(), proxy: p.proxy.clone() },
            ));
        }
        let name = format!("chaos-{}-{}", env.run, step.name);
        let spec = proxy::ToxicSpec {
            name: name.clone(),
            kind: p.toxic.clone(),
            stream: p.stream.clone().unwrap_or_else(|| "downstream".to_owned()),
            toxicity: p.toxicity.unwrap_or(1.0),
            attributes: p.attributes.clone(),
        };
        let attrs = serde_json::to_string(&p.attributes).unwrap_or_default();
        return Ok(one(
            format!("toxic {} {attrs} on proxy {} ({})", p.toxic, p.proxy, spec.stream),
            Apply::Toxic { api: p.api.clone(), proxy: p.proxy.clone(), spec },
            Undo::ProxyToxic { api: p.api.clone(), proxy: p.proxy.clone(), toxic: name },
        ));
    }
    if let Some(p) = &step.pods {
        namespace_allowed(env.allow, &p.namespace)?;
        let kube = need_kube(env, "a pods fault")?;
        let pods = kube.live_pods(&p.namespace, &p.selector).await?;
        let names: Vec<String> = pods.into_iter().filter_map(|p| p.metadata.name).collect();
        if names.is_empty() {
            return Err(format!("no pod matches {} in namespace {}", p.selector, p.namespace));
        }
        let n = names.len();
        let count = match p.mode.unwrap_or(crate::experiment::PodMode::One) {
            crate::experiment::PodMode::One => 1,
            crate::experiment::PodMode::All => n,
            crate::experiment::PodMode::Fixed => p.value.unwrap_or(1) as usize,
            crate::experiment::PodMode::Percent => {
                (n * p.value.unwrap_or(100) as usize).div_ceil(100)
            }
        }
        .min(n);
        // A different but repeatable choice per run.
        let start =
            env.run.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b.into())) % n;
        let chosen: Vec<String> = (0..count).map(|i| names[(start + i) % n].clone()).collect();
        return Ok(one(
            format!(
                "delete {} of {n} pods {} in {}: {}",
                count,
                p.selector,
                p.namespace,
                chosen.join(", ")
            ),
            Apply::DeletePods { namespace: p.namespace.clone(), pods: chosen },
            Undo::Nothing { why: "deleted pods are recreated by their controller".to_owned() },
        ));
    }
    if let Some(s) = &step.scale {
        namespace_allowed(env.allow, &s.namespace)?;
        let kube = need_kube(env, "a scale fault")?;
        let before = kube.replicas(&s.namespace, &s.deployment).await?;
        return Ok(one(
            format!(
                "scale deployment {}/{} from {before} to {}",
                s.namespace, s.deployment, s.replicas
            ),
            Apply::Scale {
                namespace: s.namespace.clone(),
                deployment: s.deployment.clone(),
                replicas: s.replicas,
            },
            Undo::Scale {
                kubeconfig: kube.kubeconfig.clone(),
                context: kube.context.clone(),
                namespace: s.namespace.clone(),
                deployment: s.deployment.clone(),
                replicas: before,
            },
        ));
    }
    let no_undo =
        || Undo::Nothing { why: "no undo given (the rollbacks run at the end)".to_owned() };
    if let Some(c) = &step.command {
        return Ok(one(
            format!("run `{}`", c.apply),
            Apply::Command { command: c.apply.clone() },
            c.undo.as_ref().map_or_else(no_undo, |u| Undo::Command { command: u.clone() }),
        ));
    }
    if let Some(h) = &step.http {
        let Some(apply_url) = &h.apply.url else {
            return Err("http fault without a url".to_owned());
        };
        host_allowed(env.allow, apply_url)?;
        let method =
            |a: &crate::experiment::Action| a.method.clone().unwrap_or_else(|| "POST".to_owned());
        let undo = match &h.undo {
            Some(u) => {
                let url = u.url.clone().ok_or("http undo without a url")?;
                host_allowed(env.allow, &url)?;
                Undo::Http { method: method(u), url, body: u.body.clone() }
            }
            None => no_undo(),
        };
        return Ok(one(
            format!("{} {apply_url}", method(&h.apply)),
            Apply::Http {
                method: method(&h.apply),
                url: apply_url.clone(),
                body: h.apply.body.clone(),
            },
            undo,
        ));
    }
    if let Some(f) = &step.flood {
        host_allowed(env.allow, &f.amqp_url)?;
        let messages = f.messages.unwrap_or(10_000);
        return Ok(one(
            format!(
                "publish {messages} messages to {}/{} and follow queue {}",
                f.exchange, f.routing_key, f.queue
            ),
            Apply::Flood {
                amqp_url: f.amqp_url.clone(),
                exchange: f.exchange.clone(),
                routing_key: f.routing_key.clone(),
                messages,
                body: f.body.clone(),
            },
            Undo::Nothing { why: "a flood is not taken back: it drains".to_owned() },
        ));
    }
    if let Some(c) = &step.chaos_mesh {
        namespace_allowed(env.allow, &c.namespace)?;
        let kube = need_kube(env, "a chaos_mesh fault")?;
        let resource = kube.chaos_mesh_resource(&c.kind).await?;
        let name = format!("chaos-runner-{}-{}", env.run, step.name)
            .to_ascii_lowercase()
            .replace('_', "-");
        return Ok(one(
            format!("create {} {}/{name}", c.kind, c.namespace),
            Apply::ChaosMesh {
                object_kind: c.kind.clone(),
                namespace: c.namespace.clone(),
                name: name.clone(),
                spec: c.spec.clone(),
            },
            Undo::DeleteObject {
                kubeconfig: kube.kubeconfig.clone(),
                context: kube.context.clone(),
                api_version: resource.api_version,
                object_kind: c.kind.clone(),
                namespace: c.namespace.clone(),
                name,
            },
        ));
    }
    if let Some(n) = &step.netem {
        if !env.allow.netns.contains(&n.netns) {
            return Err(format!("netns `{}` is not allowed: add it to allow.netns", n.netns));
        }
        let link = netem::link(&n.netns);
        let mut what = Vec::new();
        if let Some(d) = n.delay {
            what.push(format!("delay {:?}", d.0));
        }
        if let Some(j) = n.jitter {
            what.push(format!("jitter {:?}", j.0));
        }
        if let Some(l) = n.loss {
            what.push(format!("loss {l}%"));
        }
        if !n.drop_ports.is_empty() {
            what.push(format!("drop TCP ports {:?}", n.drop_ports));
        }
        return Ok(one(
            format!("netem {} on {} (netns {})", what.join(", "), link.host_device, n.netns),
            Apply::Netem {
                netns: n.netns.clone(),
                delay_ms: n.delay.map(|d| d.0.as_secs_f64() * 1000.0),
                jitter_ms: n.jitter.map(|d| d.0.as_secs_f64() * 1000.0),
                loss: n.loss,
                drop_ports: n.drop_ports.clone(),
            },
            Undo::Netem { netns: n.netns.clone(), device: link.host_device },
        ));
    }
    Err(format!("step `{}` has no fault", step.name))
}

fn signal_of(name: &str) -> Signal {
    match name {
        "STOP" => Signal::STOP,
        "KILL" => Signal::KILL,
        "CONT" => Signal::CONT,
        _ => Signal::TERM,
    }
}

/// Runs `command` with `sh -c`; fails on a non-zero exit, naming its stderr.
pub async fn shell(command: &str) -> Result<(), String> {
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run `{command}`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{command}` exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Sends an action's request: a 2xx answer is success. A JSON body is sent as JSON.
pub async fn request(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    body: Option<&str>,
) -> Result<(), String> {
    let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("`{method}` is not an HTTP method"))?;
    let mut req = client.request(method.clone(), url).timeout(Duration::from_secs(30));
    if let Some(b) = body {
        let ct = if serde_json::from_str::<serde_json::Value>(b).is_ok() {
            "application/json"
        } else {
            "text/plain"
        };
        req = req.header("content-type", ct).body(b.to_owned());
    }
    let response = req.send().await.map_err(|e| format!("{method} {url}: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("{method} {url}: {}", response.status()))
    }
}

/// Applies a planned fault.
pub async fn apply(env: &Env<'_>, planned: &Planned) -> Result<(), String> {
    match &planned.apply {
        Apply::Signal { pid, start_time, signal } => {
            if process::signal(*pid, *start_time, signal_of(signal))? {
                Ok(())
            } else {
                Err(format!("PID {pid} is gone"))
            }
        }
        Apply::Toxic { api, proxy, spec } => proxy::add(env.http, api, proxy, spec).await,
        Apply::Disable { api, proxy } => proxy::set_enabled(env.http, api, proxy, false).await,
        Apply::DeletePods { namespace, pods } => {
            need_kube(env, "a pods fault")?.delete_pods(namespace, pods).await
        }
        Apply::Scale { namespace, deployment, replicas } => {
            need_kube(env, "a scale fault")?.scale(namespace, deployment, *replicas).await
        }
        Apply::Command { command } => shell(command).await,
        Apply::Http { method, url, body } => request(env.http, method, url, body.as_deref()).await,
        Apply::Flood { amqp_url, exchange, routing_key, messages, body } => {
            crate::flood::publish(amqp_url, exchange, routing_key, *messages, body, env.run).await
        }
        Apply::ChaosMesh { object_kind, namespace, name, spec } => {
            let kube = need_kube(env, "a chaos_mesh fault")?;
            let resource = kube.chaos_mesh_resource(object_kind).await?;
            kube.create_object(&resource, namespace, name, spec).await
        }
        Apply::Netem { netns, delay_ms, jitter_ms, loss, drop_ports } => {
            let ms = |v: &Option<f64>| v.map(|m| Duration::from_secs_f64(m / 1000.0));
            let (netns, delay, jitter, loss, ports) =
                (netns.clone(), ms(delay_ms), ms(jitter_ms), *loss, drop_ports.clone());
            tokio::task::spawn_blocking(move || netem::apply(&netns, delay, jitter, loss, &ports))
                .await
                .map_err(|e| e.to_string())?
        }
    }
}

/// Runs an undo. Idempotent: undoing what is already undone succeeds.
/// `kube` is used when the undo's cluster is the one already connected;
/// otherwise the cluster recorded in the undo is connected to.
pub async fn undo(http: &reqwest::Client, kube: Option<&Kube>, undo: &Undo) -> Result<(), String> {
    match undo {
        Undo::Continue { pid, start_time } => {
            process::signal(*pid, *start_time, Signal::CONT).map(|_| ())
        }
        Undo::ProxyToxic { api, proxy, toxic } => proxy::remove(http, api, proxy, toxic).await,
        Undo::ProxyEnable { api, proxy } => proxy::set_enabled(http, api, proxy, true).await,
        Undo::Scale { kubeconfig, context, namespace, deployment, replicas } => {
            cluster(kube, kubeconfig, context).await?.scale(namespace, deployment, *replicas).await
        }
        Undo::DeleteObject { kubeconfig, context, api_version, object_kind, namespace, name } => {
            let k = cluster(kube, kubeconfig, context).await?;
            k.delete_object(api_version, object_kind, namespace, name).await
        }
        Undo::Command { command } => shell(command).await,
        Undo::Http { method, url, body } => request(http, method, url, body.as_deref()).await,
        Undo::Netem { device, .. } => {
            let device = device.clone();
            tokio::task::spawn_blocking(move || netem::clear(&device))
                .await
                .map_err(|e| e.to_string())?
        }
        Undo::Nothing { .. } => Ok(()),
    }
}

/// The cluster an undo recorded: the one already connected if it is the
/// same kubeconfig and context, else a new connection (`recover` after a crash).
async fn cluster(
    kube: Option<&Kube>,
    kubeconfig: &Option<String>,
    context: &Option<String>,
) -> Result<Kube, String> {
    match kube.filter(|k| k.kubeconfig == *kubeconfig && k.context == *context) {
        Some(k) => Ok(k.clone()),
        None => Kube::connect(kubeconfig.as_deref(), context.as_deref()).await,
    }
}

/// Every fault kind with what it does and its undo, for `list-faults`.
pub const CATALOGUE: [(&str, &str, &str); 16] = [
    (
        "process stop",
        "SIGSTOP the matching processes: they hang, connections stay open",
        "SIGCONT (same PID and start time only)",
    ),
    (
        "process kill",
        "SIGKILL the matching processes",
        "`restart` command, or none: the supervisor restarts it",
    ),
    ("process term", "SIGTERM the matching processes", "`restart` command, or none"),
    ("proxy latency", "hold each chunk back latency ± jitter ms", "remove the toxic"),
    ("proxy bandwidth", "cap throughput at rate KB/s", "remove the toxic"),
    ("proxy slow_close", "delay the close by delay ms", "remove the toxic"),
    ("proxy timeout", "drop all data; close after timeout ms (0: never)", "remove the toxic"),
    ("proxy reset_peer", "reset (RST) connections after timeout ms", "remove the toxic"),
    (
        "proxy slicer / limit_data",
        "cut writes into small slices / close after N bytes",
        "remove the toxic",
    ),
    (
        "proxy down",
        "close the listener (connections refused) and every open connection",
        "enable the proxy",
    ),
    (
        "pods",
        "delete pods of a selector: one, all, fixed N or percent",
        "none: the controller recreates them; recovery is measured",
    ),
    ("scale", "scale a Deployment (to 0 by default)", "scale back to the replicas it had"),
    (
        "command / http",
        "run a command or send a request (service stop, failover via Patroni's REST API)",
        "the given undo command or request",
    ),
    (
        "flood",
        "publish N messages (10000) to RabbitMQ; follow the queue until drained",
        "none: the queue drains; the drain time is measured",
    ),
    (
        "chaos_mesh",
        "create a Chaos Mesh object (PodChaos, NetworkChaos, ...) where its CRDs are installed",
        "delete the object",
    ),
    (
        "netem",
        "delay, jitter, loss and dropped TCP ports on a veth into a runner-made netns",
        "tc qdisc del (root and ingress)",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_taken_from_urls_and_addresses() {
        assert_eq!(host_of("http://127.0.0.1:8474"), "127.0.0.1");
        assert_eq!(host_of("amqp://guest:guest@rabbit.prod:5672/%2f"), "rabbit.prod");
        assert_eq!(host_of("[::1]:5432"), "::1");
        let allow = AllowList { hosts: vec!["rabbit.prod".into()], ..AllowList::default() };
        assert!(host_allowed(&allow, "amqp://u:p@rabbit.prod/").is_ok());
        assert!(host_allowed(&allow, "http://localhost:1").is_ok());
        let err = host_allowed(&allow, "http://db.prod:8008/failover").unwrap_err();
        assert!(err.contains("add it to allow.hosts"), "{err}");
    }
}
