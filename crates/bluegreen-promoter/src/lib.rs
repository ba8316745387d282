//! Blue-green releases on Kubernetes with measured evidence.
//!
//! An app is its active Service (whose selector names a colour, `blue` or
//! `green`), an optional preview Service and one Deployment per colour. A
//! release ([`release::deploy`]) creates or updates the idle colour beside
//! the active one, which it never touches before the switch; gates it
//! ([`gates`]: rollout ready, health and smoke tests through the preview,
//! PromQL analysis of green against blue, a pre-switch command); switches
//! with one merge patch of the active Service's selector; watches the new
//! colour and switches back on a failure; and scales the old colour down
//! after a delay. A [`prober`] sends steady traffic through the active
//! Service the whole time and reports failed requests, the longest gap and
//! the instant traffic moved. Every change is written to a [`journal`]
//! first, so [`release::recover`] leaves a crashed release consistent.

pub mod app;
pub mod argo;
pub mod cluster;
pub mod gates;
pub mod journal;
pub mod prober;
pub mod release;

/// What went wrong, by exit code: bad input (flags, files, an app that does
/// not exist: exit 2) or could not run (the API server unreachable: exit 3).
pub use shared_types::ToolError as Error;

/// Annotation and label keys the promoter owns.
pub mod keys {
    /// On the active Service: the releases, newest last (JSON array).
    pub const HISTORY: &str = "bluegreen.postlaunch.dev/history";
    /// On the active Service: the colour that served before the last switch.
    pub const PREVIOUS: &str = "bluegreen.postlaunch.dev/previous-colour";
    /// On the active Service: the pending scale-down (`{"colour":..,"at":..}`).
    pub const SCALE_DOWN: &str = "bluegreen.postlaunch.dev/scale-down";
    /// On the active Service: set by `abort`, read by a running `deploy`.
    pub const ABORT: &str = "bluegreen.postlaunch.dev/abort";
    /// On a Deployment: its release number.
    pub const REVISION: &str = "bluegreen.postlaunch.dev/revision";
    /// On a Deployment scaled to 0: the replicas it had.
    pub const REPLICAS: &str = "bluegreen.postlaunch.dev/replicas";
}
