//! Argo Rollouts interop: promote or abort a blue-green `Rollout` with the
//! same merge patches the `kubectl argo rollouts` plugin sends, so a team
//! that runs the Argo controller gets the one-command promote and our report.

use serde_json::{Value, json};
use shared_types::{Check, Report};

use crate::Error;
use crate::cluster::Cluster;

/// What the Rollout's status says about it.
fn describe(rollout: &Value) -> String {
    let status = &rollout["status"];
    let pause: Vec<&str> = status["pauseConditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["reason"].as_str())
        .collect();
    format!(
        "phase {}, paused {}, pause conditions [{}], active {}, preview {}, stable {}, current {}",
        status["phase"].as_str().unwrap_or("unknown"),
        rollout["spec"]["paused"].as_bool().unwrap_or(false),
        pause.join(", "),
        status["blueGreen"]["activeSelector"].as_str().unwrap_or("-"),
        status["blueGreen"]["previewSelector"].as_str().unwrap_or("-"),
        status["stableRS"].as_str().unwrap_or("-"),
        status["currentPodHash"].as_str().unwrap_or("-"),
    )
}

async fn read(cluster: &Cluster, ns: &str, name: &str) -> Result<Value, Error> {
    let rollout = cluster.rollout(ns, name).await?.ok_or_else(|| {
        Error::Usage(format!(
            "no Rollout {ns}/{name} (is the argoproj.io Rollout CRD installed? kubectl get crd rollouts.argoproj.io)"
        ))
    })?;
    let value = serde_json::to_value(&rollout).unwrap_or(Value::Null);
    if value["spec"]["strategy"]["blueGreen"].is_null() {
        return Err(Error::Usage(format!("Rollout {ns}/{name} has no spec.strategy.blueGreen")));
    }
    Ok(value)
}

/// `promote --rollout NAME [--full]`: unpause (spec) and clear the pause
/// conditions (status), or with `full` ask for a full promotion.
pub async fn promote(cluster: &Cluster, ns: &str, name: &str, full: bool) -> Result<Report, Error> {
    let mut report = Report::new(
        "bluegreen-promoter",
        env!("CARGO_PKG_VERSION"),
        format!("rollout {ns}/{name}"),
    );
    let rollout = read(cluster, ns, name).await?;
    let before = describe(&rollout);
    let paused = rollout["spec"]["paused"].as_bool().unwrap_or(false);
    let conditions = rollout["status"]["pauseConditions"].as_array().is_some_and(|c| !c.is_empty());
    let mut sent = Vec::new();
    if full {
        if rollout["status"]["currentPodHash"] != rollout["status"]["stableRS"] {
            cluster.patch_rollout(ns, name, true, json!({"status": {"promoteFull": true}})).await?;
            sent.push("status.promoteFull=true");
        }
    } else if conditions {
        cluster.patch_rollout(ns, name, true, json!({"status": {"pauseConditions": null}})).await?;
        sent.push("status.pauseConditions=null");
    }
    if paused {
        cluster.patch_rollout(ns, name, false, json!({"spec": {"paused": false}})).await?;
        sent.push("spec.paused=false");
    }
    let after =
        if cluster.dry_run() { before.clone() } else { describe(&read(cluster, ns, name).await?) };
    let criterion = "the Rollout is released from its pause";
    let check = if sent.is_empty() {
        Check::fail("promote", criterion, format!("nothing to promote: {before}"))
    } else {
        Check::pass("promote", criterion, sent.join(", "))
            .with_detail(format!("before: {before}; after: {after}"))
    };
    report.push_check(check);
    report.finish();
    Ok(report)
}

/// `abort --rollout NAME`: `status.abort=true`, as the plugin sends; the
/// Argo controller then points the active Service back at the stable ReplicaSet.
pub async fn abort(cluster: &Cluster, ns: &str, name: &str) -> Result<Report, Error> {
    let mut report = Report::new(
        "bluegreen-promoter",
        env!("CARGO_PKG_VERSION"),
        format!("rollout {ns}/{name}"),
    );
    let rollout = read(cluster, ns, name).await?;
    cluster.patch_rollout(ns, name, true, json!({"status": {"abort": true}})).await?;
    let after = if cluster.dry_run() { rollout.clone() } else { read(cluster, ns, name).await? };
    let done = cluster.dry_run() || after["status"]["abort"].as_bool() == Some(true);
    report.push_check(Check::from_bool(
        "abort",
        "the Rollout is marked aborted (status.abort)",
        describe(&after),
        done,
    ));
    report.finish();
    Ok(report)
}
