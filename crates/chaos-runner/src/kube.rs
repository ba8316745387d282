//! The Kubernetes side, on the `kube` crate: pods deleted by selector, a
//! Deployment scaled and scaled back, pods-ready probes, and the kill
//! switch's ConfigMap. Only APIs that 1.20 and current clusters both serve.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::discovery::ApiGroup;

/// A cluster connection and how it was chosen (kept in the journal, so
/// `recover` talks to the same cluster).
#[derive(Clone)]
pub struct Kube {
    /// The client.
    pub client: kube::Client,
    /// `--kubeconfig` (none: `KUBECONFIG` or `~/.kube/config`).
    pub kubeconfig: Option<String>,
    /// `--context`.
    pub context: Option<String>,
}

impl std::fmt::Debug for Kube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kube")
            .field("kubeconfig", &self.kubeconfig)
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

/// Chaos Mesh's API group.
pub const CHAOS_MESH_GROUP: &str = "chaos-mesh.org";

/// The ConfigMap whose presence in a namespace halts experiments there.
pub const HALT_CONFIGMAP: &str = "chaos-runner-halt";

impl Kube {
    /// Connects with `kubeconfig` (or the default one) and `context`.
    pub async fn connect(kubeconfig: Option<&str>, context: Option<&str>) -> Result<Kube, String> {
        // Where a build links two rustls providers (a workspace with
        // aws-lc-rs beside ring), rustls picks none by itself: choose ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let options = kube::config::KubeConfigOptions {
            context: context.map(str::to_owned),
            ..Default::default()
        };
        let config = match kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| format!("kubeconfig {path}: {e}"))?;
                kube::Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .map_err(|e| format!("kubeconfig {path}: {e}"))?
            }
            None => kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|e| format!("no kubeconfig (pass --kubeconfig or set KUBECONFIG): {e}"))?,
        };
        let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
        Ok(Kube {
            client,
            kubeconfig: kubeconfig.map(str::to_owned),
            context: context.map(str::to_owned),
        })
    }

    /// Names of the pods of `selector` in `namespace` that are not being
    /// deleted, sorted.
    pub async fn live_pods(&self, namespace: &str, selector: &str) -> Result<Vec<Pod>, String> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let list = api
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| format!("list pods {namespace}/{selector}: {e}"))?;
        let mut pods: Vec<Pod> =
            list.items.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
        pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        Ok(pods)
    }

    /// (ready, listed) pods of `selector`.
    pub async fn ready_pods(&self, namespace: &str, selector: &str) -> Result<(u32, u32), String> {
        let pods = self.live_pods(namespace, selector).await?;
        let ready = pods.iter().filter(|p| is_ready(p)).count();
        Ok((
            u32::try_from(ready).unwrap_or(u32::MAX),
            u32::try_from(pods.len()).unwrap_or(u32::MAX),
        ))
    }

    /// Deletes the named pods (one already gone counts as deleted).
    pub async fn delete_pods(&self, namespace: &str, names: &[String]) -> Result<(), String> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        for name in names {
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(format!("delete pod {namespace}/{name}: {e}")),
            }
        }
        Ok(())
    }

    /// The Deployment's desired replicas.
    pub async fn replicas(&self, namespace: &str, deployment: &str) -> Result<i32, String> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        let d = api
            .get(deployment)
            .await
            .map_err(|e| format!("deployment {namespace}/{deployment}: {e}"))?;
        Ok(d.spec.and_then(|s| s.replicas).unwrap_or(1))
    }

    /// Sets the Deployment's replicas.
    pub async fn scale(
        &self,
        namespace: &str,
        deployment: &str,
        replicas: i32,
    ) -> Result<(), String> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        let patch = serde_json::json!({ "spec": { "replicas": replicas } });
        api.patch(deployment, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| format!("scale deployment {namespace}/{deployment}: {e}"))
    }

    /// The resource of a Chaos Mesh `kind`, if its CRD is installed.
    pub async fn chaos_mesh_resource(&self, kind: &str) -> Result<ApiResource, String> {
        let group: ApiGroup = kube::discovery::group(&self.client, CHAOS_MESH_GROUP).await.map_err(|e| {
            format!("the Chaos Mesh CRDs are not installed ({CHAOS_MESH_GROUP}: {e}): install Chaos Mesh, or use chaos-runner's own faults")
        })?;
        group
            .recommended_kind(kind)
            .map(|(r, _)| r)
            .ok_or_else(|| format!("{CHAOS_MESH_GROUP} has no kind {kind}"))
    }

    /// Creates a namespaced object of `resource` (an existing one of the same name counts).
    pub async fn create_object(
        &self,
        resource: &ApiResource,
        namespace: &str,
        name: &str,
        spec: &serde_json::Value,
    ) -> Result<(), String> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, resource);
        let mut object = DynamicObject::new(name, resource).within(namespace);
        object.metadata.labels =
            Some([("app.kubernetes.io/managed-by".to_owned(), "chaos-runner".to_owned())].into());
        object.data = serde_json::json!({ "spec": spec });
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(format!("create {} {namespace}/{name}: {e}", resource.kind)),
        }
    }

    /// Deletes a namespaced object (absent is fine).
    pub async fn delete_object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<(), String> {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let resource = ApiResource {
            group: group.to_owned(),
            version: version.to_owned(),
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            plural: kind.to_ascii_lowercase(),
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &resource);
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(format!("delete {kind} {namespace}/{name}: {e}")),
        }
    }

    /// Whether the halt ConfigMap exists in `namespace`.
    pub async fn halted(&self, namespace: &str) -> Result<bool, String> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        match api.get_opt(HALT_CONFIGMAP).await {
            Ok(found) => Ok(found.is_some()),
            Err(e) => Err(format!("configmap {namespace}/{HALT_CONFIGMAP}: {e}")),
        }
    }

    /// Creates the halt ConfigMap (an existing one is kept).
    pub async fn halt(&self, namespace: &str, reason: &str) -> Result<(), String> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": { "name": HALT_CONFIGMAP, "labels": { "app.kubernetes.io/managed-by": "chaos-runner" } },
            "data": { "reason": reason, "at": shared_types::Timestamp::now().as_str() },
        }))
        .map_err(|e| e.to_string())?;
        match api.create(&PostParams::default(), &cm).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(format!("create configmap {namespace}/{HALT_CONFIGMAP}: {e}")),
        }
    }

    /// Deletes the halt ConfigMap (an absent one is fine).
    pub async fn resume(&self, namespace: &str) -> Result<(), String> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        match api.delete(HALT_CONFIGMAP, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(format!("delete configmap {namespace}/{HALT_CONFIGMAP}: {e}")),
        }
    }
}

/// Whether the pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
