//! The release journal: one JSON line per step, written and fsynced before
//! the change it announces, so `recover` knows what a crashed run was doing
//! and which cluster it was doing it to.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;

/// One step of a release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Release (run) id.
    pub release: String,
    /// `begin`, `green-applied`, `switch`, `switched`, `switch-back`, `scale-down` or `end`.
    pub step: String,
    /// When it was written (RFC 3339).
    pub at: String,
    /// Namespace of the app.
    pub namespace: String,
    /// The app (its active Service).
    pub app: String,
    /// The colour label.
    pub colour_label: String,
    /// The preview Service.
    #[serde(default)]
    pub preview: Option<String>,
    /// The colour serving before the release (the stable one).
    pub stable: String,
    /// The colour being released.
    pub candidate: String,
    /// `--kubeconfig`.
    #[serde(default)]
    pub kubeconfig: Option<String>,
    /// `--context`.
    #[serde(default)]
    pub context: Option<String>,
    /// For `end`: the outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// The journal file.
#[derive(Debug, Clone)]
pub struct Journal {
    path: PathBuf,
}

impl Journal {
    /// The journal at `path` (created on first write).
    pub fn new(path: PathBuf) -> Journal {
        Journal { path }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `entry` and fsyncs it before returning.
    pub fn write(&self, entry: &Entry) -> Result<(), Error> {
        let fail = |e: std::io::Error| {
            Error::CouldNotRun(format!("cannot write the journal {}: {e}", self.path.display()))
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let mut file =
            std::fs::OpenOptions::new().create(true).append(true).open(&self.path).map_err(fail)?;
        let mut line =
            serde_json::to_string(entry).map_err(|e| Error::CouldNotRun(e.to_string()))?;
        line.push('\n');
        file.write_all(line.as_bytes()).map_err(fail)?;
        file.sync_all().map_err(fail)
    }

    /// Every entry; a torn last line (a crash mid-write) is ignored, any
    /// other unreadable line is an error naming it.
    pub fn entries(&self) -> Result<Vec<Entry>, Error> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(Error::CouldNotRun(format!(
                    "cannot read {}: {e}",
                    self.path.display()
                )));
            }
        };
        let lines: Vec<&str> = text.lines().collect();
        let mut entries = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(line) {
                Ok(e) => entries.push(e),
                Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
                Err(e) => {
                    return Err(Error::Usage(format!(
                        "{}:{}: not a journal entry: {e}",
                        self.path.display(),
                        i + 1
                    )));
                }
            }
        }
        Ok(entries)
    }

    /// Releases with no `end`, each with its entries in order.
    pub fn outstanding(&self) -> Result<Vec<Vec<Entry>>, Error> {
        let mut by_release: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        let mut order = Vec::new();
        for e in self.entries()? {
            if !by_release.contains_key(&e.release) {
                order.push(e.release.clone());
            }
            by_release.entry(e.release.clone()).or_default().push(e);
        }
        Ok(order
            .into_iter()
            .filter_map(|r| by_release.remove(&r))
            .filter(|entries| !entries.iter().any(|e| e.step == "end"))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(release: &str, step: &str) -> Entry {
        Entry {
            release: release.into(),
            step: step.into(),
            at: "2026-12-04T00:00:00Z".into(),
            namespace: "default".into(),
            app: "shop".into(),
            colour_label: "colour".into(),
            preview: None,
            stable: "blue".into(),
            candidate: "green".into(),
            kubeconfig: None,
            context: None,
            outcome: None,
        }
    }

    #[test]
    fn ended_releases_are_not_outstanding_and_a_torn_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let journal = Journal::new(dir.path().join("j.jsonl"));
        for (r, s) in [("a", "begin"), ("a", "end"), ("b", "begin"), ("b", "switch")] {
            journal.write(&entry(r, s)).unwrap_or_else(|e| panic!("{e}"));
        }
        let mut text = std::fs::read_to_string(journal.path()).unwrap_or_default();
        text.push_str("{\"release\":\"b\",\"st");
        std::fs::write(journal.path(), text).unwrap_or_else(|e| panic!("{e}"));
        let out = journal.outstanding().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].last().map(|e| e.step.as_str()), Some("switch"));
    }
}
