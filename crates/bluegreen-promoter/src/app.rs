//! The app as the cluster holds it: the active Service, whose selector names
//! the serving colour, the preview Service, and one Deployment per colour.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::cluster::Cluster;
use crate::{Error, keys};

/// Which app, and the names the promoter derives from it.
#[derive(Debug, Clone)]
pub struct AppRef {
    /// Namespace.
    pub namespace: String,
    /// The active Service's name.
    pub name: String,
    /// The preview Service's name (`APP-preview` by default).
    pub preview: String,
    /// The label whose value is the colour (`colour` by default).
    pub colour_label: String,
}

/// One release, as kept in the active Service's history annotation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    /// Release number, from 1.
    pub revision: u64,
    /// Journal id of the run that made it.
    pub id: String,
    /// The colour released.
    pub colour: String,
    /// The images of its containers.
    pub images: Vec<String>,
    /// When it started (RFC 3339).
    pub started: String,
    /// `promoted`, `rolled-back`, `aborted`, `failed: <gate>` or `recovered: ...`.
    pub outcome: String,
    /// Seconds from start to the switch, when it switched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_seconds: Option<f64>,
}

/// The app read from the cluster.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The active Service.
    pub service: Service,
    /// The preview Service, if it exists.
    pub preview: Option<Service>,
    /// The colour the active Service selects.
    pub active: String,
    /// The active selector without its colour key.
    pub base_selector: BTreeMap<String, String>,
    /// Deployments by colour.
    pub deployments: BTreeMap<String, Deployment>,
    /// Releases, oldest first.
    pub history: Vec<Release>,
}

/// The other colour.
pub fn other(colour: &str) -> Result<&'static str, Error> {
    match colour {
        "blue" => Ok("green"),
        "green" => Ok("blue"),
        other => Err(Error::Usage(format!(
            "the active Service selects colour `{other}`: bluegreen-promoter releases between `blue` and `green`"
        ))),
    }
}

/// `k=v,k=v` for a label map.
pub fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Whether a pod is Ready and not being deleted.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// One line about a pod that is not ready: its phase and each container's state.
pub fn pod_summary(pod: &Pod) -> String {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.clone()).unwrap_or_else(|| "Pending".into());
    let containers: Vec<String> = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .map(|c| {
            let state = c.state.as_ref().map_or("unknown".to_owned(), |s| {
                if let Some(w) = &s.waiting {
                    format!("waiting ({})", w.reason.clone().unwrap_or_default())
                } else if let Some(t) = &s.terminated {
                    format!(
                        "terminated ({}, exit {})",
                        t.reason.clone().unwrap_or_default(),
                        t.exit_code
                    )
                } else {
                    "running".to_owned()
                }
            });
            format!("{} {state}, ready={}, restarts={}", c.name, c.ready, c.restart_count)
        })
        .collect();
    format!("{name}: {phase}; {}", containers.join("; "))
}

/// The images of a pod template's containers.
pub fn images(template: &PodTemplateSpec) -> Vec<String> {
    template
        .spec
        .as_ref()
        .map(|s| s.containers.iter().filter_map(|c| c.image.clone()).collect())
        .unwrap_or_default()
}

impl AppState {
    /// Reads the app; a missing Service, a selector without a colour, or no
    /// Deployment for the active colour is the user's input (exit 2).
    pub async fn read(cluster: &Cluster, app: &AppRef) -> Result<AppState, Error> {
        let ns = &app.namespace;
        let service = cluster.service(ns, &app.name).await?.ok_or_else(|| {
            Error::Usage(format!(
                "no Service {ns}/{}: an app is its active Service (kubectl -n {ns} get services)",
                app.name
            ))
        })?;
        let selector = service.spec.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
        let active = selector.get(&app.colour_label).cloned().ok_or_else(|| {
            Error::Usage(format!(
                "Service {ns}/{} selects {{{}}}, with no `{}` key: its selector must name the colour \
                 it serves (e.g. {{app: {}, {}: blue}}); --colour-label names another key",
                app.name,
                selector_string(&selector),
                app.colour_label,
                app.name,
                app.colour_label
            ))
        })?;
        other(&active)?;
        let mut base_selector = selector;
        base_selector.remove(&app.colour_label);
        let mut deployments = BTreeMap::new();
        for d in cluster.deployments(ns).await? {
            let labels = d
                .spec
                .as_ref()
                .and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            let matches = base_selector.iter().all(|(k, v)| labels.get(k) == Some(v));
            let Some(colour) = labels.get(&app.colour_label).filter(|_| matches) else { continue };
            if !matches!(colour.as_str(), "blue" | "green") {
                continue;
            }
            let name = d.metadata.name.clone().unwrap_or_default();
            if let Some(first) = deployments.insert(colour.clone(), d) {
                return Err(Error::Usage(format!(
                    "two Deployments in {ns} make {colour} pods of {}: {} and {name}",
                    app.name,
                    first.metadata.name.unwrap_or_default()
                )));
            }
        }
        if !deployments.contains_key(&active) {
            return Err(Error::Usage(format!(
                "Service {ns}/{} selects {} but no Deployment in {ns} makes such pods",
                app.name,
                selector_string(
                    service
                        .spec
                        .as_ref()
                        .and_then(|s| s.selector.as_ref())
                        .unwrap_or(&BTreeMap::new())
                )
            )));
        }
        let preview = cluster.service(ns, &app.preview).await?;
        let history = service
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(keys::HISTORY))
            .and_then(|h| serde_json::from_str(h).ok())
            .unwrap_or_default();
        Ok(AppState { service, preview, active, base_selector, deployments, history })
    }

    /// The selector of one colour's pods.
    pub fn colour_selector(&self, app: &AppRef, colour: &str) -> String {
        let mut labels = self.base_selector.clone();
        labels.insert(app.colour_label.clone(), colour.to_owned());
        selector_string(&labels)
    }

    /// An annotation of the active Service.
    pub fn annotation(&self, key: &str) -> Option<&String> {
        self.service.metadata.annotations.as_ref().and_then(|a| a.get(key))
    }

    /// The colour that served before the last switch.
    pub fn previous(&self) -> Option<String> {
        self.annotation(keys::PREVIOUS).cloned()
    }

    /// The Deployment of a colour.
    pub fn deployment(&self, colour: &str) -> Option<&Deployment> {
        self.deployments.get(colour)
    }
}

/// Replaces the colour in a name (`shop-blue` → `shop-green`), or appends it.
pub fn colour_name(name: &str, from: &str, to: &str) -> String {
    if name.contains(from) { name.replace(from, to) } else { format!("{name}-{to}") }
}

/// What `deploy` changes in the pod template.
#[derive(Debug, Clone, Default)]
pub struct TemplateChange {
    /// `--pod-template FILE`: the whole template (its labels are kept and the colour forced).
    pub template: Option<PodTemplateSpec>,
    /// `--image [CONTAINER=]IMAGE`: a container's image (the first container's without a name).
    pub images: Vec<(Option<String>, String)>,
}

impl TemplateChange {
    /// The new template from `base`, with the colour label set.
    pub fn apply(
        &self,
        base: &PodTemplateSpec,
        colour_label: &str,
        colour: &str,
    ) -> Result<PodTemplateSpec, Error> {
        let mut template = self.template.clone().unwrap_or_else(|| base.clone());
        let mut labels = base.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
        if let Some(own) = template.metadata.as_ref().and_then(|m| m.labels.clone()) {
            labels.extend(own);
        }
        labels.insert(colour_label.to_owned(), colour.to_owned());
        template.metadata.get_or_insert_with(ObjectMeta::default).labels = Some(labels);
        let spec = template
            .spec
            .as_mut()
            .ok_or_else(|| Error::Usage("--pod-template: the template has no `spec`".to_owned()))?;
        for (container, image) in &self.images {
            let target = match container {
                Some(name) => {
                    let names: Vec<String> =
                        spec.containers.iter().map(|c| c.name.clone()).collect();
                    spec.containers.iter_mut().find(|c| &c.name == name).ok_or_else(|| {
                    Error::Usage(format!(
                        "--image {name}={image}: the pod template has no container `{name}` (it has {})",
                        names.join(", ")
                    ))
                })?
                }
                None => spec.containers.first_mut().ok_or_else(|| {
                    Error::Usage("--image: the pod template has no container".to_owned())
                })?,
            };
            target.image = Some(image.clone());
        }
        Ok(template)
    }
}

/// The idle colour's Deployment for a release: the existing one with the
/// new template and replicas, or a new one made from the active one's spec
/// (name and selector recoloured). The active Deployment is only read.
pub fn green_deployment(
    state: &AppState,
    app: &AppRef,
    change: &TemplateChange,
    replicas: Option<i32>,
    revision: u64,
) -> Result<(Deployment, bool), Error> {
    let idle = other(&state.active)?;
    let blue = &state.deployments[&state.active];
    let blue_name = blue.metadata.name.clone().unwrap_or_default();
    let blue_spec = blue.spec.clone().unwrap_or_default();
    let has_colour_key =
        blue_spec.selector.match_labels.as_ref().is_some_and(|m| m.contains_key(&app.colour_label));
    if !has_colour_key {
        return Err(Error::Usage(format!(
            "Deployment {}/{blue_name}'s selector has no `{}` key: the two colours' Deployments \
             would adopt each other's pods; add `{}: {}` to its spec.selector.matchLabels",
            app.namespace, app.colour_label, app.colour_label, state.active
        )));
    }
    let replicas = replicas.unwrap_or(blue_spec.replicas.unwrap_or(1));
    let existing = state.deployments.get(idle).cloned();
    let created = existing.is_none();
    let mut d = existing.unwrap_or_else(|| {
        let mut meta = ObjectMeta {
            name: Some(colour_name(&blue_name, &state.active, idle)),
            namespace: Some(app.namespace.clone()),
            labels: blue.metadata.labels.clone(),
            ..ObjectMeta::default()
        };
        if let Some(labels) = meta.labels.as_mut()
            && labels.contains_key(&app.colour_label)
        {
            labels.insert(app.colour_label.clone(), idle.to_owned());
        }
        let mut spec = blue_spec.clone();
        if let Some(m) = spec.selector.match_labels.as_mut() {
            m.insert(app.colour_label.clone(), idle.to_owned());
        }
        Deployment { metadata: meta, spec: Some(spec), status: None }
    });
    let base = blue_spec.template.clone();
    let spec = d.spec.get_or_insert_with(Default::default);
    spec.template = change.apply(&base, &app.colour_label, idle)?;
    spec.replicas = Some(replicas);
    let annotations = d.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(keys::REVISION.to_owned(), revision.to_string());
    annotations.remove(keys::REPLICAS);
    d.metadata.managed_fields = None;
    Ok((d, created))
}

/// The preview Service to create: the active one's ports, selecting `colour`.
pub fn preview_service(state: &AppState, app: &AppRef, colour: &str) -> Service {
    let spec = state.service.spec.clone().unwrap_or_default();
    let mut selector = state.base_selector.clone();
    selector.insert(app.colour_label.clone(), colour.to_owned());
    let ports = spec.ports.map(|ports| {
        ports
            .into_iter()
            .map(|p| ServicePort {
                name: p.name,
                port: p.port,
                target_port: p.target_port,
                // 1.20's server-side handling wants the protocol named.
                protocol: Some(p.protocol.unwrap_or_else(|| "TCP".to_owned())),
                ..ServicePort::default()
            })
            .collect()
    });
    Service {
        metadata: ObjectMeta {
            name: Some(app.preview.clone()),
            namespace: Some(app.namespace.clone()),
            labels: state.service.metadata.labels.clone(),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec { selector: Some(selector), ports, ..ServiceSpec::default() }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_recoloured_or_suffixed() {
        assert_eq!(colour_name("shop-blue", "blue", "green"), "shop-green");
        assert_eq!(colour_name("shop", "blue", "green"), "shop-green");
        assert!(other("red").is_err());
        assert_eq!(other("green").unwrap_or_default(), "blue");
    }

    #[test]
    fn a_template_change_forces_the_colour_and_names_a_missing_container() {
        let base: PodTemplateSpec = serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"app": "shop", "colour": "blue"}},
            "spec": {"containers": [{"name": "web", "image": "shop:v1"}]}
        }))
        .unwrap_or_default();
        let change = TemplateChange { template: None, images: vec![(None, "shop:v2".into())] };
        let t = change.apply(&base, "colour", "green").unwrap_or_default();
        let labels = t.metadata.and_then(|m| m.labels).unwrap_or_default();
        assert_eq!(labels.get("colour").map(String::as_str), Some("green"));
        assert_eq!(labels.get("app").map(String::as_str), Some("shop"));
        assert_eq!(t.spec.map(|s| s.containers[0].image.clone()), Some(Some("shop:v2".into())));
        let bad = TemplateChange { template: None, images: vec![(Some("db".into()), "x".into())] };
        let err =
            bad.apply(&base, "colour", "green").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("no container `db`") && err.contains("web"), "{err}");
    }
}
