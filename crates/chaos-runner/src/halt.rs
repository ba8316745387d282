//! The kill switch: `chaos-runner halt` writes a file (and, with a cluster,
//! a ConfigMap in each allowed namespace). Running experiments see it
//! within 200 ms (the ConfigMap within a second), undo their faults and
//! stop; new runs refuse to start until `chaos-runner resume`.

use std::path::Path;

use crate::kube::Kube;

/// The halt file's reason, if the file exists.
pub fn file_reason(path: &Path) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Some(format!("{}: {}", path.display(), text.trim())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        // Unreadable but present: halted all the same.
        Err(e) => Some(format!("{}: {e}", path.display())),
    }
}

/// Why experiments are halted, if they are.
pub async fn active(path: &Path, kube: Option<&Kube>, namespaces: &[String]) -> Option<String> {
    if let Some(why) = file_reason(path) {
        return Some(why);
    }
    let kube = kube?;
    for ns in namespaces {
        if kube.halted(ns).await.unwrap_or(false) {
            return Some(format!("ConfigMap {ns}/{}", crate::kube::HALT_CONFIGMAP));
        }
    }
    None
}

/// Sets the kill switch.
pub async fn halt(
    path: &Path,
    reason: &str,
    kube: Option<&Kube>,
    namespaces: &[String],
) -> Result<Vec<String>, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let text = format!("{reason} (at {})\n", shared_types::Timestamp::now().as_str());
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let mut set = vec![path.display().to_string()];
    if let Some(k) = kube {
        for ns in namespaces {
            k.halt(ns, reason).await?;
            set.push(format!("ConfigMap {ns}/{}", crate::kube::HALT_CONFIGMAP));
        }
    }
    Ok(set)
}

/// Clears the kill switch.
pub async fn resume(path: &Path, kube: Option<&Kube>, namespaces: &[String]) -> Result<(), String> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot remove {}: {e}", path.display())),
    }
    if let Some(k) = kube {
        for ns in namespaces {
            k.resume(ns).await?;
        }
    }
    Ok(())
}
