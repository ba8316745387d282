//! The Node objects: registration with capacity and labels, removal of the
//! `not-ready` taint the API server's admission adds to a new Node, and a
//! Ready condition whose heartbeat stays fresh.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

/// How often the Ready condition's heartbeat is renewed (the kubelet's
/// default node status update frequency).
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// One node to register.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    /// `metadata.name`.
    pub name: String,
    /// CPU capacity (`4`).
    pub cpu: String,
    /// Memory capacity (`8Gi`).
    pub memory: String,
    /// Pod capacity (`110`).
    pub pods: String,
    /// Labels besides the well-known ones.
    pub labels: BTreeMap<String, String>,
}

impl NodeSpec {
    /// Parses `NAME[,cpu=4][,memory=8Gi][,pods=110][,zone=Z][,instance-type=T][,label.K=V]`.
    pub fn parse(text: &str) -> Result<NodeSpec, String> {
        let mut parts = text.split(',');
        let name = parts.next().unwrap_or("").trim().to_owned();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        {
            return Err(format!(
                "--node {text:?}: the name must be a DNS subdomain (lowercase letters, digits, '-', '.')"
            ));
        }
        let mut spec = NodeSpec {
            name: name.clone(),
            cpu: "4".to_owned(),
            memory: "8Gi".to_owned(),
            pods: "110".to_owned(),
            labels: BTreeMap::from([
                ("node.kubernetes.io/instance-type".to_owned(), "postlaunch.local".to_owned()),
                ("topology.kubernetes.io/zone".to_owned(), "local-a".to_owned()),
                ("topology.kubernetes.io/region".to_owned(), "local".to_owned()),
            ]),
        };
        for part in parts {
            let Some((k, v)) = part.split_once('=') else {
                return Err(format!("--node {text:?}: {part:?} is not KEY=VALUE"));
            };
            match k {
                "cpu" if crate::procfs::parse_cores(v).is_some() => spec.cpu = v.to_owned(),
                "memory" if crate::procfs::parse_bytes(v).is_some() => spec.memory = v.to_owned(),
                "pods" if v.parse::<u32>().is_ok() => spec.pods = v.to_owned(),
                "zone" => {
                    spec.labels.insert("topology.kubernetes.io/zone".to_owned(), v.to_owned());
                }
                "instance-type" => {
                    spec.labels.insert("node.kubernetes.io/instance-type".to_owned(), v.to_owned());
                }
                _ if k.starts_with("label.") => {
                    spec.labels.insert(k["label.".len()..].to_owned(), v.to_owned());
                }
                _ => {
                    return Err(format!(
                        "--node {text:?}: {k}={v} is not cpu, memory, pods, zone, instance-type or label.KEY with a valid value"
                    ));
                }
            }
        }
        Ok(spec)
    }
}

fn now() -> serde_json::Value {
    serde_json::to_value(k8s_openapi::jiff::Timestamp::now()).unwrap_or_default()
}

/// Creates the Node (or takes over an existing one of that name), removes
/// the not-ready taint and writes a Ready status.
pub async fn register(
    client: &Client,
    spec: &NodeSpec,
    pod_cidr: &str,
    kubelet_port: u16,
) -> kube::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut labels = spec.labels.clone();
    labels.insert("kubernetes.io/hostname".to_owned(), spec.name.clone());
    labels.insert("kubernetes.io/os".to_owned(), "linux".to_owned());
    labels.insert(
        "kubernetes.io/arch".to_owned(),
        std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
    );
    labels.insert("postlaunch.dev/node".to_owned(), "processes".to_owned());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": spec.name, "labels": labels },
        "spec": { "podCIDR": pod_cidr, "podCIDRs": [pod_cidr] },
    }))
    .map_err(kube::Error::SerdeError)?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {
            nodes
                .patch(
                    &spec.name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "metadata": { "labels": labels } })),
                )
                .await?;
        }
        Err(err) => return Err(err),
    }
    remove_not_ready_taints(&nodes, &spec.name).await?;
    let capacity = json!({ "cpu": spec.cpu, "memory": spec.memory, "pods": spec.pods });
    let status = json!({ "status": {
        "capacity": capacity,
        "allocatable": capacity,
        "addresses": [
            { "type": "InternalIP", "address": "127.0.0.1" },
            { "type": "Hostname", "address": spec.name },
        ],
        "daemonEndpoints": { "kubeletEndpoint": { "Port": kubelet_port } },
        "nodeInfo": {
            "machineID": "postlaunch", "systemUUID": "postlaunch", "bootID": "postlaunch",
            "kernelVersion": kernel_version(), "osImage": "postlaunch process node",
            "containerRuntimeVersion": "process://postlaunch-node",
            "kubeletVersion": "v1.20.2", "kubeProxyVersion": "v1.20.2",
            "operatingSystem": "linux", "architecture": labels.get("kubernetes.io/arch"),
        },
        "conditions": conditions(),
    }});
    nodes.patch_status(&spec.name, &PatchParams::default(), &Patch::Merge(status)).await?;
    Ok(())
}

/// The taints the API server and node lifecycle put on a node that is not
/// (yet) ready; chaos tools' own taints are kept.
async fn remove_not_ready_taints(nodes: &Api<Node>, name: &str) -> kube::Result<()> {
    let node = nodes.get(name).await?;
    let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
    let kept: Vec<_> = taints
        .iter()
        .filter(|t| {
            t.key != "node.kubernetes.io/not-ready" && t.key != "node.kubernetes.io/unreachable"
        })
        .cloned()
        .collect();
    if kept.len() != taints.len() {
        nodes
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "taints": kept } })),
            )
            .await?;
    }
    Ok(())
}

fn conditions() -> serde_json::Value {
    let t = now();
    let c = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({ "type": kind, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": t, "lastTransitionTime": t })
    };
    json!([
        c("Ready", "True", "KubeletReady", "postlaunch-node is posting ready status"),
        c(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "postlaunch-node has sufficient memory available"
        ),
        c(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "postlaunch-node has no disk pressure"
        ),
        c(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "postlaunch-node has sufficient PID available"
        ),
    ])
}

/// Renews the Ready heartbeat every [`HEARTBEAT`], and removes a not-ready
/// taint if one comes back.
pub async fn heartbeat(client: Client, name: String) {
    let nodes: Api<Node> = Api::all(client);
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        let patch = Patch::Merge(json!({ "status": { "conditions": conditions() } }));
        if let Err(err) = nodes.patch_status(&name, &PatchParams::default(), &patch).await {
            tracing::warn!(node = %name, "heartbeat: {err}");
        }
        if let Err(err) = remove_not_ready_taints(&nodes, &name).await {
            tracing::debug!(node = %name, "taints: {err}");
        }
    }
}

fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_specs_parse_capacity_and_labels() {
        let s = NodeSpec::parse(
            "node-b,cpu=2,memory=4Gi,zone=local-b,instance-type=m5.large,label.team=x",
        )
        .unwrap();
        assert_eq!((s.name.as_str(), s.cpu.as_str(), s.memory.as_str()), ("node-b", "2", "4Gi"));
        assert_eq!(s.labels["topology.kubernetes.io/zone"], "local-b");
        assert_eq!(s.labels["node.kubernetes.io/instance-type"], "m5.large");
        assert_eq!(s.labels["team"], "x");
        assert!(NodeSpec::parse("Node_B").is_err());
        assert!(NodeSpec::parse("a,cpu=lots").unwrap_err().contains("cpu=lots"));
        assert!(NodeSpec::parse("a,color").is_err());
    }
}
