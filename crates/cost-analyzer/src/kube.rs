//! What the cluster holds, on the `kube` crate: nodes with capacity and
//! instance type, workloads with replicas, requests and limits per
//! container, HPAs, pods (owners, OOM kills) and volume claims. Only APIs
//! that 1.20 and current clusters both serve (autoscaling/v1, batch/v1).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node as K8sNode, PersistentVolumeClaim, Pod, PodSpec};
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::{Error, quantity};

/// A node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    /// Name.
    pub name: String,
    /// Allocatable vCPUs.
    pub cpu: f64,
    /// Allocatable memory in bytes.
    pub memory: f64,
    /// `node.kubernetes.io/instance-type`.
    pub instance_type: Option<String>,
    /// `topology.kubernetes.io/zone`.
    pub zone: Option<String>,
    /// `karpenter.sh/capacity-type` or `eks.amazonaws.com/capacityType` (spot, on-demand).
    pub capacity_type: Option<String>,
}

/// A container's resources.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Container {
    /// Name.
    pub name: String,
    /// CPU request (cores).
    pub cpu_request: Option<f64>,
    /// Memory request (bytes).
    pub memory_request: Option<f64>,
    /// CPU limit (cores).
    pub cpu_limit: Option<f64>,
    /// Memory limit (bytes).
    pub memory_limit: Option<f64>,
}

/// An HPA on a workload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hpa {
    /// Name.
    pub name: String,
    /// minReplicas.
    pub min: i32,
    /// maxReplicas.
    pub max: i32,
    /// targetCPUUtilizationPercentage.
    pub cpu_target_percent: Option<i32>,
}

/// A workload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Workload {
    /// Deployment, StatefulSet, DaemonSet or Job.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Replicas (DaemonSet: nodes scheduled; Job: parallelism while active).
    pub replicas: f64,
    /// Its containers.
    pub containers: Vec<Container>,
    /// Its labels (for chargeback by label).
    pub labels: BTreeMap<String, String>,
    /// The HPA scaling it, if any.
    pub hpa: Option<Hpa>,
}

impl Workload {
    /// `namespace/kind/name`.
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.namespace, self.kind.to_ascii_lowercase(), self.name)
    }
}

/// An OOM kill seen in a pod's container status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OomKill {
    /// The container.
    pub container: String,
    /// Its memory limit when killed (bytes), the level it needed more than.
    pub limit: Option<f64>,
    /// When (RFC 3339), if known.
    pub at: Option<String>,
    /// Restarts so far.
    pub restarts: i32,
}

/// A pod.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PodInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The workload owning it (`namespace/kind/name`).
    pub workload: Option<String>,
    /// OOM kills.
    pub oom: Vec<OomKill>,
    /// Claims it mounts.
    pub claims: Vec<String>,
}

/// A volume claim.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Claim {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Pending, Bound or Lost.
    pub phase: String,
    /// StorageClass.
    pub storage_class: Option<String>,
    /// Requested (or, bound, the capacity) bytes.
    pub bytes: f64,
}

/// Everything read from the cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Inventory {
    /// Nodes.
    pub nodes: Vec<Node>,
    /// Workloads.
    pub workloads: Vec<Workload>,
    /// Pods.
    pub pods: Vec<PodInfo>,
    /// Claims.
    pub claims: Vec<Claim>,
}

fn q(
    map: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    key: &str,
) -> Option<f64> {
    map.and_then(|m| m.get(key)).and_then(|v| quantity::parse(&v.0).ok())
}

fn containers(spec: Option<&PodSpec>) -> Vec<Container> {
    spec.map(|s| {
        s.containers
            .iter()
            .map(|c| {
                let r = c.resources.as_ref();
                Container {
                    name: c.name.clone(),
                    cpu_request: q(r.and_then(|r| r.requests.as_ref()), "cpu"),
                    memory_request: q(r.and_then(|r| r.requests.as_ref()), "memory"),
                    cpu_limit: q(r.and_then(|r| r.limits.as_ref()), "cpu"),
                    memory_limit: q(r.and_then(|r| r.limits.as_ref()), "memory"),
                }
            })
            .collect()
    })
    .unwrap_or_default()
}

fn err(what: &str, e: kube::Error) -> Error {
    match &e {
        kube::Error::Api(s) if (400..500).contains(&s.code) && s.code != 404 => Error::Usage(
            format!("{what}: the API server refused it ({} {}): {}", s.code, s.reason, s.message),
        ),
        _ => Error::CouldNotRun(format!("{what}: {e}")),
    }
}

/// Connects with `kubeconfig` (or the default one) and `context`.
pub async fn connect(
    kubeconfig: Option<&str>,
    context: Option<&str>,
) -> Result<kube::Client, Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = kube::config::KubeConfigOptions {
        context: context.map(str::to_owned),
        ..Default::default()
    };
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| Error::Usage(format!("kubeconfig {path}: {e}")))?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| Error::Usage(format!("kubeconfig {path}: {e}")))?
        }
        None => kube::Config::from_kubeconfig(&options).await.map_err(|e| {
            Error::Usage(format!("no kubeconfig (pass --kubeconfig or set KUBECONFIG): {e}"))
        })?,
    };
    kube::Client::try_from(config)
        .map_err(|e| Error::CouldNotRun(format!("cannot build the Kubernetes client: {e}")))
}

async fn list<K>(client: &kube::Client, namespaces: &[String], what: &str) -> Result<Vec<K>, Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    if namespaces.is_empty() {
        return Ok(Api::<K>::all(client.clone())
            .list(&ListParams::default())
            .await
            .map_err(|e| err(&format!("list {what}"), e))?
            .items);
    }
    let mut all = Vec::new();
    for ns in namespaces {
        let api = Api::<K>::namespaced(client.clone(), ns);
        all.extend(
            api.list(&ListParams::default())
                .await
                .map_err(|e| err(&format!("list {what} in {ns}"), e))?
                .items,
        );
    }
    Ok(all)
}

/// Reads the inventory of `namespaces` (all when empty).
pub async fn inventory(client: &kube::Client, namespaces: &[String]) -> Result<Inventory, Error> {
    let mut inv = Inventory::default();
    let nodes = Api::<K8sNode>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| err("list nodes", e))?;
    for n in nodes.items {
        let labels = n.metadata.labels.clone().unwrap_or_default();
        let status = n.status.unwrap_or_default();
        let alloc = status.allocatable.as_ref().or(status.capacity.as_ref());
        inv.nodes.push(Node {
            name: n.metadata.name.unwrap_or_default(),
            cpu: q(alloc, "cpu").unwrap_or(0.0),
            memory: q(alloc, "memory").unwrap_or(0.0),
            instance_type: labels
                .get("node.kubernetes.io/instance-type")
                .or(labels.get("beta.kubernetes.io/instance-type"))
                .cloned(),
            zone: labels.get("topology.kubernetes.io/zone").cloned(),
            capacity_type: labels
                .get("karpenter.sh/capacity-type")
                .or(labels.get("eks.amazonaws.com/capacityType"))
                .cloned(),
        });
    }
    let hpas: Vec<HorizontalPodAutoscaler> =
        list(client, namespaces, "horizontalpodautoscalers").await?;
    let hpa_for = |ns: &str, kind: &str, name: &str| {
        hpas.iter()
            .find(|h| {
                h.metadata.namespace.as_deref() == Some(ns)
                    && h.spec.as_ref().is_some_and(|s| {
                        s.scale_target_ref.kind == kind && s.scale_target_ref.name == name
                    })
            })
            .map(|h| {
                let s = h.spec.clone().unwrap_or_default();
                Hpa {
                    name: h.metadata.name.clone().unwrap_or_default(),
                    min: s.min_replicas.unwrap_or(1),
                    max: s.max_replicas,
                    cpu_target_percent: s.target_cpu_utilization_percentage,
                }
            })
    };
    let mut push = |kind: &str,
                    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
                    replicas: f64,
                    spec: Option<&PodSpec>| {
        let ns = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        let hpa = hpa_for(&ns, kind, &name);
        inv.workloads.push(Workload {
            kind: kind.to_owned(),
            namespace: ns,
            name,
            replicas,
            containers: containers(spec),
            labels: meta.labels.clone().unwrap_or_default(),
            hpa,
        });
    };
    for d in list::<Deployment>(client, namespaces, "deployments").await? {
        let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1) as f64;
        push(
            "Deployment",
            &d.metadata,
            replicas,
            d.spec.as_ref().and_then(|s| s.template.spec.as_ref()),
        );
    }
    for s in list::<StatefulSet>(client, namespaces, "statefulsets").await? {
        let replicas = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1) as f64;
        push(
            "StatefulSet",
            &s.metadata,
            replicas,
            s.spec.as_ref().and_then(|s| s.template.spec.as_ref()),
        );
    }
    for d in list::<DaemonSet>(client, namespaces, "daemonsets").await? {
        let replicas = d.status.as_ref().map_or(0, |s| s.desired_number_scheduled) as f64;
        push(
            "DaemonSet",
            &d.metadata,
            replicas,
            d.spec.as_ref().and_then(|s| s.template.spec.as_ref()),
        );
    }
    for j in list::<Job>(client, namespaces, "jobs").await? {
        let active = j.status.as_ref().and_then(|s| s.active).unwrap_or(0) as f64;
        push("Job", &j.metadata, active, j.spec.as_ref().and_then(|s| s.template.spec.as_ref()));
    }
    // Pods to workloads: through their ReplicaSet for Deployments.
    let replica_sets: Vec<ReplicaSet> = list(client, namespaces, "replicasets").await?;
    let rs_owner: BTreeMap<(String, String), String> = replica_sets
        .iter()
        .filter_map(|rs| {
            let owner =
                rs.metadata.owner_references.as_ref()?.iter().find(|o| o.kind == "Deployment")?;
            Some(((rs.metadata.namespace.clone()?, rs.metadata.name.clone()?), owner.name.clone()))
        })
        .collect();
    for p in list::<Pod>(client, namespaces, "pods").await? {
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let owner = p.metadata.owner_references.as_ref().and_then(|o| o.first()).cloned();
        let workload = owner.and_then(|o| match o.kind.as_str() {
            "ReplicaSet" => {
                rs_owner.get(&(ns.clone(), o.name.clone())).map(|d| format!("{ns}/deployment/{d}"))
            }
            "StatefulSet" | "DaemonSet" | "Job" => {
                Some(format!("{ns}/{}/{}", o.kind.to_ascii_lowercase(), o.name))
            }
            _ => None,
        });
        let limits: BTreeMap<String, Option<f64>> =
            containers(p.spec.as_ref()).into_iter().map(|c| (c.name, c.memory_limit)).collect();
        let oom = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.clone())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| {
                let t = c.last_state.as_ref()?.terminated.as_ref()?;
                (t.reason.as_deref() == Some("OOMKilled")).then(|| OomKill {
                    container: c.name.clone(),
                    limit: limits.get(&c.name).copied().flatten(),
                    at: t
                        .finished_at
                        .as_ref()
                        .and_then(|t| serde_json::to_value(t).ok())
                        .and_then(|v| v.as_str().map(str::to_owned)),
                    restarts: c.restart_count,
                })
            })
            .collect();
        let claims = p
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| v.persistent_volume_claim.map(|c| c.claim_name))
            .collect();
        inv.pods.push(PodInfo {
            namespace: ns,
            name: p.metadata.name.unwrap_or_default(),
            workload,
            oom,
            claims,
        });
    }
    for c in list::<PersistentVolumeClaim>(client, namespaces, "persistentvolumeclaims").await? {
        let status = c.status.clone().unwrap_or_default();
        let spec = c.spec.clone().unwrap_or_default();
        let requested = q(spec.resources.as_ref().and_then(|r| r.requests.as_ref()), "storage");
        let capacity = q(status.capacity.as_ref(), "storage");
        inv.claims.push(Claim {
            namespace: c.metadata.namespace.unwrap_or_default(),
            name: c.metadata.name.unwrap_or_default(),
            phase: status.phase.unwrap_or_else(|| "Pending".to_owned()),
            storage_class: spec.storage_class_name,
            bytes: capacity.or(requested).unwrap_or(0.0),
        });
    }
    inv.workloads.sort_by_key(Workload::id);
    Ok(inv)
}

/// The workload a pod name belongs to, for pods that no longer exist (a
/// Deployment's `NAME-HASH-XXXXX`, a StatefulSet's `NAME-N`, a
/// DaemonSet's or Job's `NAME-XXXXX`): the longest workload name that fits.
pub fn workload_of_pod_name<'a>(
    workloads: &'a [Workload],
    namespace: &str,
    pod: &str,
) -> Option<&'a Workload> {
    let is_suffix = |s: &str| {
        !s.is_empty()
            && s.len() <= 10
            && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    };
    workloads
        .iter()
        .filter(|w| w.namespace == namespace)
        .filter(|w| {
            let Some(rest) = pod.strip_prefix(&w.name).and_then(|r| r.strip_prefix('-')) else {
                return false;
            };
            let parts: Vec<&str> = rest.split('-').collect();
            match w.kind.as_str() {
                "Deployment" => parts.len() == 2 && parts.iter().all(|p| is_suffix(p)),
                "StatefulSet" => parts.len() == 1 && parts[0].chars().all(|c| c.is_ascii_digit()),
                _ => parts.len() == 1 && is_suffix(parts[0]),
            }
        })
        .max_by_key(|w| w.name.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(kind: &str, name: &str) -> Workload {
        Workload {
            kind: kind.into(),
            namespace: "ns".into(),
            name: name.into(),
            replicas: 1.0,
            containers: vec![],
            labels: BTreeMap::new(),
            hpa: None,
        }
    }

    #[test]
    fn historical_pod_names_map_to_their_workload() {
        let all = vec![
            w("Deployment", "shop"),
            w("Deployment", "shop-api"),
            w("StatefulSet", "db"),
            w("DaemonSet", "agent"),
        ];
        let find = |pod: &str| workload_of_pod_name(&all, "ns", pod).map(|w| w.name.clone());
        assert_eq!(find("shop-7d9f8b6c5d-x2x9z").as_deref(), Some("shop"));
        assert_eq!(find("shop-api-5f6d7c8b9-abcde").as_deref(), Some("shop-api"));
        assert_eq!(find("db-0").as_deref(), Some("db"));
        assert_eq!(find("agent-q7x2k").as_deref(), Some("agent"));
        assert_eq!(find("other-7d9f8b6c5d-x2x9z"), None);
        assert_eq!(workload_of_pod_name(&all, "elsewhere", "db-0"), None);
    }
}
