//! The API server, on the `kube` crate: every request the promoter makes
//! goes through here, so each is counted (the bench reports API calls per
//! release) and every change is refused outside the allow-list and only
//! described, never sent, under `--dry-run`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::api::{GroupVersionKind, PostParams};
use serde_json::Value;

use crate::Error;

/// A change the promoter makes (or, under `--dry-run`, would make).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Change {
    /// `create`, `replace`, `merge-patch`, `merge-patch status` or `delete`.
    pub verb: String,
    /// `namespace/kind/name`.
    pub object: String,
    /// The body sent (for a replace: the whole object).
    pub body: Value,
}

/// A connection to one cluster.
#[derive(Clone)]
pub struct Cluster {
    client: kube::Client,
    calls: Arc<AtomicU64>,
    dry_run: bool,
    allowed: Vec<String>,
    changes: Arc<Mutex<Vec<Change>>>,
    /// `--kubeconfig`, kept in the journal so `recover` reaches the same cluster.
    pub kubeconfig: Option<String>,
    /// `--context`.
    pub context: Option<String>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("kubeconfig", &self.kubeconfig)
            .field("context", &self.context)
            .field("dry_run", &self.dry_run)
            .finish_non_exhaustive()
    }
}

/// A 404 from the API server.
fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// An API error as the promoter reports it: a refusal by the server (4xx)
/// is the user's input, anything else means it could not run.
fn api_error(what: &str, e: kube::Error) -> Error {
    match &e {
        kube::Error::Api(s) if (400..500).contains(&s.code) => Error::Usage(format!(
            "{what}: the API server refused it ({} {}): {}",
            s.code, s.reason, s.message
        )),
        _ => Error::CouldNotRun(format!("{what}: {e}")),
    }
}

impl Cluster {
    /// Connects with `kubeconfig` (or the default one) and `context`;
    /// changes go only to `allowed` namespaces, and none at all when `dry_run`.
    pub async fn connect(
        kubeconfig: Option<&str>,
        context: Option<&str>,
        allowed: Vec<String>,
        dry_run: bool,
    ) -> Result<Cluster, Error> {
        // A build that links two rustls providers (a workspace with aws-lc-rs
        // beside ring) leaves rustls without a default: choose ring.
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
        let client = kube::Client::try_from(config)
            .map_err(|e| Error::CouldNotRun(format!("cannot build the Kubernetes client: {e}")))?;
        Ok(Cluster {
            client,
            calls: Arc::new(AtomicU64::new(0)),
            dry_run,
            allowed,
            changes: Arc::new(Mutex::new(Vec::new())),
            kubeconfig: kubeconfig.map(str::to_owned),
            context: context.map(str::to_owned),
        })
    }

    /// Requests sent to the API server so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Whether changes are only described.
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// The changes made (or planned, under `--dry-run`), in order.
    pub fn changes(&self) -> Vec<Change> {
        self.changes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn count(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Refuses a change outside the allow-list; records it; says whether to send it.
    fn change(
        &self,
        namespace: &str,
        verb: &str,
        object: String,
        body: Value,
    ) -> Result<bool, Error> {
        if !self.dry_run && !self.allowed.iter().any(|a| a == namespace || a == "*") {
            return Err(Error::Usage(format!(
                "namespace `{namespace}` is not in the allow-list: pass --allow-namespace {namespace} \
                 (or BLUEGREEN_ALLOW_NAMESPACES={namespace}) to let bluegreen-promoter change it"
            )));
        }
        self.changes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(Change {
            verb: verb.to_owned(),
            object,
            body,
        });
        Ok(!self.dry_run)
    }

    /// A Service, or none.
    pub async fn service(&self, ns: &str, name: &str) -> Result<Option<Service>, Error> {
        self.count();
        Api::<Service>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(|e| api_error(&format!("get service {ns}/{name}"), e))
    }

    /// A Deployment, or none.
    pub async fn deployment(&self, ns: &str, name: &str) -> Result<Option<Deployment>, Error> {
        self.count();
        Api::<Deployment>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(|e| api_error(&format!("get deployment {ns}/{name}"), e))
    }

    /// Every Deployment of `ns`.
    pub async fn deployments(&self, ns: &str) -> Result<Vec<Deployment>, Error> {
        self.count();
        Ok(Api::<Deployment>::namespaced(self.client.clone(), ns)
            .list(&ListParams::default())
            .await
            .map_err(|e| api_error(&format!("list deployments in {ns}"), e))?
            .items)
    }

    /// The pods of `selector` (`k=v,k=v`) in `ns`, not being deleted.
    pub async fn pods(&self, ns: &str, selector: &str) -> Result<Vec<Pod>, Error> {
        self.count();
        let list = Api::<Pod>::namespaced(self.client.clone(), ns)
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| api_error(&format!("list pods {selector} in {ns}"), e))?;
        Ok(list.items.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect())
    }

    /// The Endpoints of a Service, or none.
    pub async fn endpoints(&self, ns: &str, name: &str) -> Result<Option<Endpoints>, Error> {
        self.count();
        Api::<Endpoints>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(|e| api_error(&format!("get endpoints {ns}/{name}"), e))
    }

    /// Creates a Deployment.
    pub async fn create_deployment(&self, ns: &str, d: &Deployment) -> Result<(), Error> {
        let name = d.metadata.name.clone().unwrap_or_default();
        let body = serde_json::to_value(d).unwrap_or(Value::Null);
        if self.change(ns, "create", format!("{ns}/deployment/{name}"), body)? {
            self.count();
            Api::<Deployment>::namespaced(self.client.clone(), ns)
                .create(&PostParams::default(), d)
                .await
                .map_err(|e| api_error(&format!("create deployment {ns}/{name}"), e))?;
        }
        Ok(())
    }

    /// Replaces a Deployment (its resourceVersion guards against a concurrent change).
    pub async fn replace_deployment(&self, ns: &str, d: &Deployment) -> Result<(), Error> {
        let name = d.metadata.name.clone().unwrap_or_default();
        let body = serde_json::to_value(d).unwrap_or(Value::Null);
        if self.change(ns, "replace", format!("{ns}/deployment/{name}"), body)? {
            self.count();
            Api::<Deployment>::namespaced(self.client.clone(), ns)
                .replace(&name, &PostParams::default(), d)
                .await
                .map_err(|e| api_error(&format!("replace deployment {ns}/{name}"), e))?;
        }
        Ok(())
    }

    /// A JSON merge patch of a Deployment.
    pub async fn patch_deployment(&self, ns: &str, name: &str, patch: Value) -> Result<(), Error> {
        if self.change(ns, "merge-patch", format!("{ns}/deployment/{name}"), patch.clone())? {
            self.count();
            Api::<Deployment>::namespaced(self.client.clone(), ns)
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| api_error(&format!("patch deployment {ns}/{name}"), e))?;
        }
        Ok(())
    }

    /// Creates a Service.
    pub async fn create_service(&self, ns: &str, s: &Service) -> Result<(), Error> {
        let name = s.metadata.name.clone().unwrap_or_default();
        let body = serde_json::to_value(s).unwrap_or(Value::Null);
        if self.change(ns, "create", format!("{ns}/service/{name}"), body)? {
            self.count();
            Api::<Service>::namespaced(self.client.clone(), ns)
                .create(&PostParams::default(), s)
                .await
                .map_err(|e| api_error(&format!("create service {ns}/{name}"), e))?;
        }
        Ok(())
    }

    /// A JSON merge patch of a Service.
    pub async fn patch_service(&self, ns: &str, name: &str, patch: Value) -> Result<(), Error> {
        if self.change(ns, "merge-patch", format!("{ns}/service/{name}"), patch.clone())? {
            self.count();
            Api::<Service>::namespaced(self.client.clone(), ns)
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| api_error(&format!("patch service {ns}/{name}"), e))?;
        }
        Ok(())
    }

    /// Creates a Job.
    pub async fn create_job(&self, ns: &str, job: &Job) -> Result<(), Error> {
        let name = job.metadata.name.clone().unwrap_or_default();
        let body = serde_json::to_value(job).unwrap_or(Value::Null);
        if self.change(ns, "create", format!("{ns}/job/{name}"), body)? {
            self.count();
            Api::<Job>::namespaced(self.client.clone(), ns)
                .create(&PostParams::default(), job)
                .await
                .map_err(|e| api_error(&format!("create job {ns}/{name}"), e))?;
        }
        Ok(())
    }

    /// A Job, or none.
    pub async fn job(&self, ns: &str, name: &str) -> Result<Option<Job>, Error> {
        self.count();
        Api::<Job>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(|e| api_error(&format!("get job {ns}/{name}"), e))
    }

    /// Deletes a Job and its pods (background propagation).
    pub async fn delete_job(&self, ns: &str, name: &str) -> Result<(), Error> {
        if self.change(ns, "delete", format!("{ns}/job/{name}"), Value::Null)? {
            self.count();
            match Api::<Job>::namespaced(self.client.clone(), ns)
                .delete(name, &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(api_error(&format!("delete job {ns}/{name}"), e)),
            }
        }
        Ok(())
    }

    fn rollouts(&self, ns: &str) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Rollout");
        let resource = ApiResource::from_gvk_with_plural(&gvk, "rollouts");
        Api::namespaced_with(self.client.clone(), ns, &resource)
    }

    /// An Argo Rollouts `Rollout`, or none.
    pub async fn rollout(&self, ns: &str, name: &str) -> Result<Option<DynamicObject>, Error> {
        self.count();
        match self.rollouts(ns).get_opt(name).await {
            Ok(r) => Ok(r),
            // No CRD: the resource itself is unknown.
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(api_error(&format!("get rollout {ns}/{name}"), e)),
        }
    }

    /// A JSON merge patch of a Rollout, or of its `status` subresource.
    pub async fn patch_rollout(
        &self,
        ns: &str,
        name: &str,
        status: bool,
        patch: Value,
    ) -> Result<(), Error> {
        let verb = if status { "merge-patch status" } else { "merge-patch" };
        if self.change(ns, verb, format!("{ns}/rollout/{name}"), patch.clone())? {
            self.count();
            let api = self.rollouts(ns);
            let params = PatchParams::default();
            let sent = if status {
                api.patch_status(name, &params, &Patch::Merge(&patch)).await
            } else {
                api.patch(name, &params, &Patch::Merge(&patch)).await
            };
            sent.map_err(|e| api_error(&format!("patch rollout {ns}/{name}"), e))?;
        }
        Ok(())
    }
}
