//! The journal: an append-only JSON-lines file holding every fault and its
//! undo. A fault's entry (with the exact undo) is written and fsynced
//! *before* the fault is applied, so whatever happens to the runner after
//! that (Ctrl-C, a panic, `kill -9`, a reboot) `chaos-runner recover` knows
//! what to undo. Undo is idempotent: undoing twice is harmless.
//!
//! ```text
//! {"seq":1,"at":"…","run":"r-…","experiment":"redis-down","fault":"redis-down/cut-redis","event":"applying","undo":{"kind":"proxy_enable",…}}
//! {"seq":2,"at":"…","run":"r-…","experiment":"redis-down","fault":"redis-down/cut-redis","event":"applied"}
//! {"seq":3,"at":"…","run":"r-…","experiment":"redis-down","fault":"redis-down/cut-redis","event":"undone","by":"run"}
//! ```

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use shared_types::Timestamp;

/// How a fault is undone, with everything needed to do it from the journal alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Undo {
    /// SIGCONT to a stopped process (if it is still the same process).
    Continue {
        /// The PID.
        pid: u32,
        /// Its start time in clock ticks (field 22 of /proc/PID/stat), so a
        /// reused PID is never signalled.
        start_time: u64,
    },
    /// Remove a toxic from a proxy.
    ProxyToxic {
        /// Control API.
        api: String,
        /// Proxy name.
        proxy: String,
        /// Toxic name.
        toxic: String,
    },
    /// Enable a disabled proxy.
    ProxyEnable {
        /// Control API.
        api: String,
        /// Proxy name.
        proxy: String,
    },
    /// Scale a Deployment back.
    Scale {
        /// Kubeconfig the fault used (none: the default).
        kubeconfig: Option<String>,
        /// Context the fault used.
        context: Option<String>,
        /// Namespace.
        namespace: String,
        /// Deployment.
        deployment: String,
        /// Replicas before the fault.
        replicas: i32,
    },
    /// Run a command.
    Command {
        /// Run with `sh -c`.
        command: String,
    },
    /// Send an HTTP request.
    Http {
        /// Method.
        method: String,
        /// URL.
        url: String,
        /// Body.
        body: Option<String>,
    },
    /// Remove netem and drop rules from a runner-made namespace's veth.
    Netem {
        /// The network namespace.
        netns: String,
        /// Host-side device.
        device: String,
    },
    /// Delete a Kubernetes object the fault created (a Chaos Mesh object).
    DeleteObject {
        /// Kubeconfig the fault used.
        kubeconfig: Option<String>,
        /// Context the fault used.
        context: Option<String>,
        /// `group/version`.
        api_version: String,
        /// Its kind (PodChaos, ...).
        object_kind: String,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// Nothing to undo (deleted pods are recreated by their controller; a
    /// flood drains); the reason is kept for the record.
    Nothing {
        /// Why.
        why: String,
    },
}

impl Undo {
    /// One line for people: what the undo does.
    pub fn describe(&self) -> String {
        match self {
            Undo::Continue { pid, .. } => format!("SIGCONT to PID {pid}"),
            Undo::ProxyToxic { api, proxy, toxic } => {
                format!("remove toxic {toxic} from proxy {proxy} ({api})")
            }
            Undo::ProxyEnable { api, proxy } => format!("enable proxy {proxy} ({api})"),
            Undo::Scale { namespace, deployment, replicas, .. } => {
                format!("scale deployment {namespace}/{deployment} back to {replicas}")
            }
            Undo::Command { command } => format!("run `{command}`"),
            Undo::Http { method, url, .. } => format!("{method} {url}"),
            Undo::Netem { netns, device } => {
                format!("remove netem and drop rules on {device} (netns {netns})")
            }
            Undo::DeleteObject { object_kind, namespace, name, .. } => {
                format!("delete {object_kind} {namespace}/{name}")
            }
            Undo::Nothing { why } => format!("nothing to undo: {why}"),
        }
    }
}

/// What happened to a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// About to be applied; the undo is in this entry.
    Applying,
    /// Applied.
    Applied,
    /// Undone.
    Undone,
    /// The undo failed (it stays outstanding for `recover`).
    UndoFailed,
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Line number, from 1.
    pub seq: u64,
    /// When.
    pub at: Timestamp,
    /// The run.
    pub run: String,
    /// The experiment.
    pub experiment: String,
    /// `experiment/step`, plus a suffix when a step has several undos (one per process).
    pub fault: String,
    /// What happened.
    pub event: Event,
    /// The undo (on `applying`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<Undo>,
    /// Who undid it: `run`, `recover`, `halt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Why an undo failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Which fault an entry is about.
#[derive(Debug, Clone, Copy)]
pub struct Key<'a> {
    /// The run.
    pub run: &'a str,
    /// The experiment.
    pub experiment: &'a str,
    /// `experiment/step`.
    pub fault: &'a str,
}

/// The journal file, open for appending.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
    next: Mutex<u64>,
}

impl Journal {
    /// Opens (or creates) the journal at `path`, creating its directory.
    pub fn open(path: &Path) -> Result<Journal, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let entries = read(path)?;
        let next = entries.last().map_or(1, |e| e.seq + 1);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open journal {}: {e}", path.display()))?;
        Ok(Journal { path: path.to_owned(), file: Mutex::new(file), next: Mutex::new(next) })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends an entry for `key` and fsyncs it before returning.
    pub fn append(
        &self,
        key: &Key<'_>,
        event: Event,
        undo: Option<Undo>,
        by: Option<&str>,
        error: Option<String>,
    ) -> Result<Entry, String> {
        let mut next = self.next.lock().map_err(|_| "journal lock poisoned".to_owned())?;
        let entry = Entry {
            seq: *next,
            at: Timestamp::now(),
            run: key.run.to_owned(),
            experiment: key.experiment.to_owned(),
            fault: key.fault.to_owned(),
            event,
            undo,
            by: by.map(str::to_owned),
            error,
        };
        let mut line = serde_json::to_string(&entry).map_err(|e| e.to_string())?;
        line.push('\n');
        let mut file = self.file.lock().map_err(|_| "journal lock poisoned".to_owned())?;
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|e| format!("cannot write journal {}: {e}", self.path.display()))?;
        *next += 1;
        Ok(entry)
    }
}

/// Every entry of the journal at `path` (none if it does not exist). A
/// torn last line (the runner died mid-write) is ignored; any other bad line
/// is an error naming it.
pub fn read(path: &Path) -> Result<Vec<Entry>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read journal {}: {e}", path.display())),
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut entries = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Entry>(line) {
            Ok(e) => entries.push(e),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
            Err(e) => {
                return Err(format!(
                    "journal {}:{}: not a journal entry: {e}",
                    path.display(),
                    i + 1
                ));
            }
        }
    }
    Ok(entries)
}

/// A fault applied (or being applied) and not yet undone.
#[derive(Debug, Clone, PartialEq)]
pub struct Outstanding {
    /// The entry that recorded it (with its undo).
    pub entry: Entry,
    /// Whether it was confirmed applied (otherwise it may or may not be).
    pub applied: bool,
}

/// The faults of `entries` that were recorded and never undone, in the
/// order they were applied.
pub fn outstanding(entries: &[Entry]) -> Vec<Outstanding> {
    let mut open: BTreeMap<(String, String), (u64, Outstanding)> = BTreeMap::new();
    for e in entries {
        let key = (e.run.clone(), e.fault.clone());
        match e.event {
            Event::Applying => {
                open.insert(key, (e.seq, Outstanding { entry: e.clone(), applied: false }));
            }
            Event::Applied => {
                if let Some((_, o)) = open.get_mut(&key) {
                    o.applied = true;
                }
            }
            Event::Undone => {
                open.remove(&key);
            }
            Event::UndoFailed => {}
        }
    }
    let mut list: Vec<(u64, Outstanding)> = open.into_values().collect();
    list.sort_by_key(|(seq, _)| *seq);
    list.into_iter().map(|(_, o)| o).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outstanding_faults_are_those_never_undone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let j = Journal::open(&path).unwrap();
        let undo = Undo::Command { command: "true".into() };
        j.append(
            &Key { run: "r1", experiment: "e", fault: "e/a" },
            Event::Applying,
            Some(undo.clone()),
            None,
            None,
        )
        .unwrap();
        j.append(
            &Key { run: "r1", experiment: "e", fault: "e/a" },
            Event::Applied,
            None,
            None,
            None,
        )
        .unwrap();
        j.append(
            &Key { run: "r1", experiment: "e", fault: "e/b" },
            Event::Applying,
            Some(undo.clone()),
            None,
            None,
        )
        .unwrap();
        j.append(
            &Key { run: "r1", experiment: "e", fault: "e/a" },
            Event::Undone,
            None,
            Some("run"),
            None,
        )
        .unwrap();
        j.append(
            &Key { run: "r1", experiment: "e", fault: "e/c" },
            Event::Applying,
            Some(undo),
            None,
            None,
        )
        .unwrap();
        j.append(
            &Key { run: "r1", experiment: "e", fault: "e/c" },
            Event::UndoFailed,
            None,
            None,
            Some("x".into()),
        )
        .unwrap();
        drop(j);
        let entries = read(&path).unwrap();
        assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);
        let open = outstanding(&entries);
        assert_eq!(open.iter().map(|o| o.entry.fault.as_str()).collect::<Vec<_>>(), ["e/b", "e/c"]);
        assert!(!open[0].applied);
        // Reopening continues the numbering.
        let j = Journal::open(&path).unwrap();
        assert_eq!(
            j.append(
                &Key { run: "r2", experiment: "e", fault: "e/a" },
                Event::Applied,
                None,
                None,
                None
            )
            .unwrap()
            .seq,
            7
        );
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_a_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let j = Journal::open(&path).unwrap();
        j.append(
            &Key { run: "r", experiment: "e", fault: "e/a" },
            Event::Applied,
            None,
            None,
            None,
        )
        .unwrap();
        drop(j);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"seq\":2,\"at\"");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(read(&path).unwrap().len(), 1);
        std::fs::write(&path, format!("garbage\n{text}\n")).unwrap();
        let err = read(&path).unwrap_err();
        assert!(err.contains(":1: not a journal entry"), "{err}");
    }
}
