//! Prometheus HTTP service discovery (`http_sd_configs`) of the cluster's
//! pods and nodes, read from the API server on every request, with the
//! target addresses and `__meta_kubernetes_*` labels that
//! `kubernetes_sd_configs` roles `pod` and `node` give. Debian's Prometheus
//! 2.42 is built without the Kubernetes discovery ("field
//! kubernetes_sd_configs not found"), so this stands in for it; relabelling
//! rules written for `kubernetes_sd_configs` work unchanged on it.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::StatusCode;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

/// Label-name form of a Kubernetes key, as Prometheus writes it.
fn sanitize(key: &str) -> String {
    key.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
}

fn with_map(
    labels: &mut BTreeMap<String, String>,
    prefix: &str,
    map: Option<&BTreeMap<String, String>>,
) {
    for (k, v) in map.into_iter().flatten() {
        labels.insert(format!("{prefix}_{}", sanitize(k)), v.clone());
        labels.insert(format!("{prefix}present_{}", sanitize(k)), "true".to_owned());
    }
}

/// Target groups of role `pod`: one per container port (or one per
/// container without ports) of every pod with an IP.
pub async fn pods(client: kube::Client) -> Result<Json<Value>, (StatusCode, String)> {
    let list = Api::<Pod>::all(client)
        .list(&ListParams::default())
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, e.to_string()))?;
    let mut groups = Vec::new();
    for pod in list.items {
        let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()) else { continue };
        let meta = &pod.metadata;
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True");
        let mut base: BTreeMap<String, String> = BTreeMap::new();
        base.insert(
            "__meta_kubernetes_namespace".into(),
            meta.namespace.clone().unwrap_or_default(),
        );
        base.insert("__meta_kubernetes_pod_name".into(), meta.name.clone().unwrap_or_default());
        base.insert("__meta_kubernetes_pod_ip".into(), ip.clone());
        base.insert("__meta_kubernetes_pod_uid".into(), meta.uid.clone().unwrap_or_default());
        base.insert("__meta_kubernetes_pod_ready".into(), ready.to_string());
        base.insert(
            "__meta_kubernetes_pod_phase".into(),
            pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default(),
        );
        base.insert(
            "__meta_kubernetes_pod_node_name".into(),
            pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default(),
        );
        with_map(&mut base, "__meta_kubernetes_pod_label", meta.labels.as_ref());
        with_map(&mut base, "__meta_kubernetes_pod_annotation", meta.annotations.as_ref());
        for container in pod.spec.iter().flat_map(|s| s.containers.iter()) {
            let mut labels = base.clone();
            labels.insert("__meta_kubernetes_pod_container_name".into(), container.name.clone());
            labels.insert(
                "__meta_kubernetes_pod_container_image".into(),
                container.image.clone().unwrap_or_default(),
            );
            let ports = container.ports.clone().unwrap_or_default();
            if ports.is_empty() {
                groups.push(json!({ "targets": [ip], "labels": labels }));
            }
            for port in ports {
                let mut labels = labels.clone();
                labels.insert(
                    "__meta_kubernetes_pod_container_port_number".into(),
                    port.container_port.to_string(),
                );
                labels.insert(
                    "__meta_kubernetes_pod_container_port_name".into(),
                    port.name.clone().unwrap_or_default(),
                );
                labels.insert(
                    "__meta_kubernetes_pod_container_port_protocol".into(),
                    port.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
                );
                groups.push(json!({ "targets": [format!("{ip}:{}", port.container_port)], "labels": labels }));
            }
        }
    }
    Ok(Json(Value::Array(groups)))
}

/// Target groups of role `node`: `InternalIP:kubelet port` per node.
pub async fn nodes(client: kube::Client) -> Result<Json<Value>, (StatusCode, String)> {
    let list = Api::<Node>::all(client)
        .list(&ListParams::default())
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, e.to_string()))?;
    let mut groups = Vec::new();
    for node in list.items {
        let status = node.status.clone().unwrap_or_default();
        let Some(ip) = status
            .addresses
            .iter()
            .flatten()
            .find(|a| a.type_ == "InternalIP")
            .map(|a| a.address.clone())
        else {
            continue;
        };
        let port =
            status.daemon_endpoints.and_then(|d| d.kubelet_endpoint).map_or(10250, |k| k.port);
        let mut labels: BTreeMap<String, String> = BTreeMap::new();
        labels.insert(
            "__meta_kubernetes_node_name".into(),
            node.metadata.name.clone().unwrap_or_default(),
        );
        labels.insert("__meta_kubernetes_node_address_InternalIP".into(), ip.clone());
        with_map(&mut labels, "__meta_kubernetes_node_label", node.metadata.labels.as_ref());
        groups.push(json!({ "targets": [format!("{ip}:{port}")], "labels": labels }));
    }
    Ok(Json(Value::Array(groups)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_sanitize_like_prometheus() {
        assert_eq!(super::sanitize("prometheus.io/scrape"), "prometheus_io_scrape");
        assert_eq!(super::sanitize("app.kubernetes.io/name"), "app_kubernetes_io_name");
    }
}
