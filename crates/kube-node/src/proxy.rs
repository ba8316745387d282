//! A userspace Service proxy (what kube-proxy does, in the spirit of its
//! old `userspace` mode): every Service with a cluster IP gets a listener on
//! the IP's loopback twin and each TCP port (`198.18.3.10:80` is served at
//! `127.18.3.10:80`), which forwards each connection to a ready endpoint of
//! the Service, in turn, as the upstream endpoints controller lists them in
//! the Service's Endpoints object. A selector patch changes the Endpoints,
//! and so moves real traffic. Endpoint addresses outside the pod range have
//! no twin and are never dialled.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::addr::loopback_twin;

/// Backends by Service port name, for one Service.
type Backends = Arc<RwLock<HashMap<String, Vec<SocketAddr>>>>;

#[derive(Default)]
struct ServiceState {
    backends: Backends,
    /// (port name, listen address) → accept loop.
    listeners: HashMap<(String, SocketAddr), JoinHandle<()>>,
}

impl Drop for ServiceState {
    fn drop(&mut self) {
        for (_, task) in self.listeners.drain() {
            task.abort();
        }
    }
}

type Services = Arc<tokio::sync::Mutex<HashMap<(String, String), ServiceState>>>;

/// Follows Services and Endpoints until the watches end.
pub async fn run(client: Client) {
    let services: Services = Arc::default();
    let endpoints_task = tokio::spawn(follow_endpoints(client.clone(), services.clone()));
    follow_services(client, services).await;
    endpoints_task.abort();
}

fn id(meta: &kube::api::ObjectMeta) -> (String, String) {
    (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

async fn follow_services(client: Client, services: Services) {
    let api: Api<Service> = Api::all(client);
    let mut stream = watcher(api, watcher::Config::default()).boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(svc) | watcher::Event::InitApply(svc)) => {
                let mut map = services.lock().await;
                let state = map.entry(id(&svc.metadata)).or_default();
                apply_service(&svc, state).await;
            }
            Ok(watcher::Event::Delete(svc)) => {
                services.lock().await.remove(&id(&svc.metadata));
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!("service watch: {err}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Opens a listener per TCP port on the cluster IP's twin; closes those
/// the Service no longer has.
async fn apply_service(svc: &Service, state: &mut ServiceState) {
    let spec = svc.spec.clone().unwrap_or_default();
    let cluster_ip = spec.cluster_ip.as_deref().unwrap_or("");
    let twin = cluster_ip.parse::<Ipv4Addr>().ok().and_then(loopback_twin);
    let mut wanted: Vec<(String, SocketAddr)> = Vec::new();
    if let Some(twin) = twin {
        for port in spec.ports.iter().flatten() {
            if port.protocol.as_deref().unwrap_or("TCP") != "TCP" {
                continue;
            }
            let Ok(number) = u16::try_from(port.port) else { continue };
            wanted.push((port.name.clone().unwrap_or_default(), SocketAddr::from((twin, number))));
        }
    }
    state.listeners.retain(|key, task| {
        let keep = wanted.contains(key);
        if !keep {
            task.abort();
        }
        keep
    });
    for key in wanted {
        if state.listeners.contains_key(&key) {
            continue;
        }
        let (port_name, addr) = key.clone();
        match TcpListener::bind(addr).await {
            Ok(listener) => {
                tracing::info!(service = ?svc.metadata.name, %addr, "proxying");
                let backends = state.backends.clone();
                state.listeners.insert(key, tokio::spawn(accept(listener, port_name, backends)));
            }
            Err(err) => tracing::warn!(service = ?svc.metadata.name, %addr, "cannot listen: {err}"),
        }
    }
}

async fn accept(listener: TcpListener, port_name: String, backends: Backends) {
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((inbound, _)) = listener.accept().await else { continue };
        let list: Vec<SocketAddr> = backends
            .read()
            .map(|b| b.get(&port_name).cloned().unwrap_or_default())
            .unwrap_or_default();
        if list.is_empty() {
            drop(inbound); // No ready endpoint: refuse, as kube-proxy rejects.
            continue;
        }
        let backend = list[next.fetch_add(1, Ordering::Relaxed) % list.len()];
        tokio::spawn(async move {
            let Ok(mut outbound) = TcpStream::connect(backend).await else { return };
            let mut inbound = inbound;
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        });
    }
}

async fn follow_endpoints(client: Client, services: Services) {
    let api: Api<Endpoints> = Api::all(client);
    let mut stream = watcher(api, watcher::Config::default()).boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(ep) | watcher::Event::InitApply(ep)) => {
                let mut map = services.lock().await;
                let state = map.entry(id(&ep.metadata)).or_default();
                let table = backends_of(&ep);
                if let Ok(mut b) = state.backends.write() {
                    *b = table;
                }
            }
            Ok(watcher::Event::Delete(ep)) => {
                if let Some(state) = services.lock().await.get(&id(&ep.metadata))
                    && let Ok(mut b) = state.backends.write()
                {
                    b.clear();
                }
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!("endpoints watch: {err}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Ready addresses (their twins) by port name.
fn backends_of(ep: &Endpoints) -> HashMap<String, Vec<SocketAddr>> {
    let mut table: HashMap<String, Vec<SocketAddr>> = HashMap::new();
    for subset in ep.subsets.iter().flatten() {
        for port in subset.ports.iter().flatten() {
            let Ok(number) = u16::try_from(port.port) else { continue };
            let list = table.entry(port.name.clone().unwrap_or_default()).or_default();
            for address in subset.addresses.iter().flatten() {
                match address.ip.parse::<Ipv4Addr>().ok().and_then(loopback_twin) {
                    Some(twin) => list.push(SocketAddr::from((twin, number))),
                    None => {
                        tracing::warn!(ip = %address.ip, "endpoint outside the pod range: never dialled")
                    }
                }
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_twins_of_ready_addresses_are_backends() {
        let ep: Endpoints = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "web", "namespace": "default" },
            "subsets": [{
                "addresses": [{ "ip": "198.19.1.5" }, { "ip": "10.1.2.3" }],
                "notReadyAddresses": [{ "ip": "198.19.1.6" }],
                "ports": [{ "name": "http", "port": 8080 }],
            }],
        }))
        .unwrap();
        let table = backends_of(&ep);
        assert_eq!(table["http"], vec!["127.19.1.5:8080".parse::<SocketAddr>().unwrap()]);
    }
}
