//! A container's environment, as the kubelet builds it: `envFrom`, then
//! `env` (values, ConfigMap and Secret keys, `fieldRef`), with `$(VAR)`
//! references expanded in values, command and args.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};
use kube::{Api, Client};

/// What the node adds to every container besides the manifest's env.
#[derive(Debug, Clone)]
pub struct NodeEnv {
    /// The pod's IP (what the API shows; nothing listens there).
    pub pod_ip: String,
    /// Its loopback twin, where the container must listen: `POD_LOOPBACK_IP`.
    pub loopback_ip: String,
    /// The node's IP.
    pub host_ip: String,
    /// The node's name.
    pub node_name: String,
    /// The image tag: `POSTLAUNCH_IMAGE_TAG`.
    pub image_tag: String,
    /// `PATH` for the container (the node's own).
    pub path: String,
}

/// The variables the kubelet gives a pod for each Service of its namespace
/// (`enableServiceLinks`, on by default): `NAME_SERVICE_HOST`,
/// `NAME_SERVICE_PORT` (the first port) and `NAME_SERVICE_PORT_PORTNAME`.
/// The host is the cluster IP's loopback twin, where this node's proxy
/// serves the Service: the cluster IP itself carries no traffic here.
pub fn service_links(service: &Service) -> Vec<(String, String)> {
    let Some(name) = &service.metadata.name else { return Vec::new() };
    let Some(spec) = &service.spec else { return Vec::new() };
    let Some(ip) = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok()) else {
        return Vec::new(); // headless or not yet allocated
    };
    let Some(twin) = crate::addr::loopback_twin(ip) else { return Vec::new() };
    let prefix = name.to_uppercase().replace('-', "_");
    let ports = spec.ports.as_deref().unwrap_or_default();
    let Some(first) = ports.first() else { return Vec::new() };
    let mut vars = vec![
        (format!("{prefix}_SERVICE_HOST"), twin.to_string()),
        (format!("{prefix}_SERVICE_PORT"), first.port.to_string()),
    ];
    for port in ports {
        if let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            let port_name = port_name.to_uppercase().replace('-', "_");
            vars.push((format!("{prefix}_SERVICE_PORT_{port_name}"), port.port.to_string()));
        }
    }
    vars
}

/// Builds the environment; an unknown ConfigMap or key is an error naming
/// it, as the kubelet's `CreateContainerConfigError` does.
pub async fn build(
    client: &Client,
    pod: &Pod,
    container: &Container,
    node: &NodeEnv,
) -> Result<BTreeMap<String, String>, String> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned());
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("PATH".to_owned(), node.path.clone());
    env.insert("HOSTNAME".to_owned(), pod.metadata.name.clone().unwrap_or_default());
    env.insert("POD_LOOPBACK_IP".to_owned(), node.loopback_ip.clone());
    env.insert("POSTLAUNCH_IMAGE_TAG".to_owned(), node.image_tag.clone());
    env.insert("KUBERNETES_SERVICE_HOST".to_owned(), "127.0.0.1".to_owned());
    if pod.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true) {
        let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
        let list = services.list(&Default::default()).await.map_err(|e| e.to_string())?;
        for service in &list.items {
            env.extend(service_links(service));
        }
    }
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        if let Some(cm) = &source.config_map_ref {
            let optional = cm.optional.unwrap_or(false);
            match configmaps.get_opt(&cm.name).await.map_err(|e| e.to_string())? {
                Some(found) => {
                    for (k, v) in found.data.unwrap_or_default() {
                        env.insert(format!("{prefix}{k}"), v);
                    }
                }
                None if optional => {}
                None => return Err(format!("configmap {namespace}/{} not found", cm.name)),
            }
        }
        if let Some(s) = &source.secret_ref {
            let optional = s.optional.unwrap_or(false);
            match secrets.get_opt(&s.name).await.map_err(|e| e.to_string())? {
                Some(found) => {
                    for (k, v) in secret_data(&found) {
                        env.insert(format!("{prefix}{k}"), v);
                    }
                }
                None if optional => {}
                None => return Err(format!("secret {namespace}/{} not found", s.name)),
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = if let Some(value) = &var.value {
            expand(value, &env)
        } else if let Some(from) = &var.value_from {
            if let Some(key) = &from.config_map_key_ref {
                let found = configmaps.get_opt(&key.name).await.map_err(|e| e.to_string())?;
                match found.and_then(|c| c.data.and_then(|d| d.get(&key.key).cloned())) {
                    Some(v) => v,
                    None if key.optional.unwrap_or(false) => continue,
                    None => {
                        return Err(format!(
                            "{}: key {} of configmap {namespace}/{} not found",
                            var.name, key.key, key.name
                        ));
                    }
                }
            } else if let Some(key) = &from.secret_key_ref {
                let found = secrets.get_opt(&key.name).await.map_err(|e| e.to_string())?;
                match found.and_then(|s| secret_data(&s).remove(&key.key)) {
                    Some(v) => v,
                    None if key.optional.unwrap_or(false) => continue,
                    None => {
                        return Err(format!(
                            "{}: key {} of secret {namespace}/{} not found",
                            var.name, key.key, key.name
                        ));
                    }
                }
            } else if let Some(field) = &from.field_ref {
                field_value(pod, &field.field_path, node).ok_or_else(|| {
                    format!("{}: fieldRef {} is not supported", var.name, field.field_path)
                })?
            } else if let Some(resource) = &from.resource_field_ref {
                resource_value(container, &resource.resource).ok_or_else(|| {
                    format!("{}: resourceFieldRef {} has no value", var.name, resource.resource)
                })?
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        env.insert(var.name.clone(), value);
    }
    Ok(env)
}

fn secret_data(secret: &Secret) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = secret.string_data.clone().unwrap_or_default();
    for (k, v) in secret.data.clone().unwrap_or_default() {
        out.insert(k, String::from_utf8_lossy(&v.0).into_owned());
    }
    out
}

fn field_value(pod: &Pod, path: &str, node: &NodeEnv) -> Option<String> {
    let meta = &pod.metadata;
    let label = |map: &Option<BTreeMap<String, String>>, prefix: &str| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.as_ref().and_then(|m| m.get(key).cloned()).unwrap_or_default())
    };
    Some(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => node.node_name.clone(),
        "spec.serviceAccountName" => {
            pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_default()
        }
        "status.podIP" | "status.podIPs" => node.pod_ip.clone(),
        "status.hostIP" | "status.hostIPs" => node.host_ip.clone(),
        _ => {
            return label(&meta.labels, "metadata.labels['")
                .or_else(|| label(&meta.annotations, "metadata.annotations['"));
        }
    })
}

fn resource_value(container: &Container, resource: &str) -> Option<String> {
    let resources = container.resources.as_ref()?;
    let (map, key) = match resource.split_once('.')? {
        ("limits", key) => (resources.limits.as_ref()?, key),
        ("requests", key) => (resources.requests.as_ref()?, key),
        _ => return None,
    };
    let q = &map.get(key)?.0;
    Some(match key {
        "cpu" => crate::procfs::parse_cores(q)?.ceil().to_string(),
        _ => crate::procfs::parse_bytes(q)?.to_string(),
    })
}

/// Expands `$(VAR)` from `env`; `$$(VAR)` is a literal `$(VAR)`; an
/// unknown reference stays as written, as in Kubernetes.
pub fn expand(text: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix("$(") {
            out.push_str("$(");
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) if env.contains_key(&inner[..end]) => {
                    out.push_str(&env[&inner[..end]]);
                    rest = &inner[end + 1..];
                }
                Some(end) => {
                    out.push_str(&rest[i..i + 2 + end + 1]);
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str(&rest[i..]);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_expand_like_the_kubelet() {
        let env: BTreeMap<String, String> =
            [("POD_LOOPBACK_IP".to_owned(), "127.19.1.4".to_owned())].into_iter().collect();
        assert_eq!(expand("$(POD_LOOPBACK_IP):8080", &env), "127.19.1.4:8080");
        assert_eq!(expand("$$(POD_LOOPBACK_IP)", &env), "$(POD_LOOPBACK_IP)");
        assert_eq!(expand("$(NOPE) $ $(", &env), "$(NOPE) $ $(");
    }

    #[test]
    fn service_links_name_the_twin_and_every_port() {
        let service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "auth-grpc"},
            "spec": {"clusterIP": "198.18.3.9", "ports": [
                {"name": "grpc", "port": 50051}, {"name": "http-metrics", "port": 8080}]}
        }))
        .unwrap();
        let vars: BTreeMap<_, _> = service_links(&service).into_iter().collect();
        assert_eq!(vars["AUTH_GRPC_SERVICE_HOST"], "127.18.3.9");
        assert_eq!(vars["AUTH_GRPC_SERVICE_PORT"], "50051");
        assert_eq!(vars["AUTH_GRPC_SERVICE_PORT_HTTP_METRICS"], "8080");
        let headless: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db"}, "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}
        }))
        .unwrap();
        assert!(service_links(&headless).is_empty());
    }

    proptest::proptest! {
        #[test]
        fn expansion_never_panics_and_is_identity_without_references(text in "\\PC{0,24}") {
            let env = BTreeMap::new();
            let out = expand(&text, &env);
            if !text.contains("$$(") {
                proptest::prop_assert_eq!(out, text);
            }
        }
    }
}
