//! A Kubernetes node for tests and the sandbox, run against the upstream
//! control plane (`testkit::KubeCluster`). Upstream has no such node: the
//! kubelet needs a container runtime, which these machines cannot run. So
//! this is ours, and does what the tests need of a kubelet and kube-proxy:
//!
//! - [`node`]: registers Nodes with capacity and labels, removes the
//!   `not-ready` taint, keeps the Ready heartbeat fresh;
//! - [`pods`]: runs each bound pod's containers as local processes (image →
//!   executable from [`images`]; env from values, ConfigMaps, Secrets and
//!   fieldRefs), probes them, restarts them by `restartPolicy` with
//!   back-off, kills a container over its memory limit (`OOMKilled`), and
//!   deletes gracefully;
//! - [`metrics`]: cAdvisor-style series per container from /proc;
//! - [`sd`]: Prometheus HTTP service discovery of pods and nodes from the
//!   API server, with `kubernetes_sd_configs`' labels (Debian's Prometheus
//!   is built without the Kubernetes discovery);
//! - [`proxy`]: a userspace Service proxy following Endpoints;
//! - [`addr`]: pod and Service IPs in 198.18.0.0/15 and their loopback twins.
//!
//! Not done: volumes (the service-account token is not mounted; nothing
//! reads it), init containers, startup probes, `kubectl logs`/`exec` (no
//! kubelet API; logs are files under the state directory), CPU limits.

pub mod addr;
pub mod env;
pub mod images;
pub mod metrics;
pub mod node;
pub mod pods;
pub mod probe;
pub mod process;
pub mod procfs;
pub mod proxy;
pub mod sd;
