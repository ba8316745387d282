//! The ack ledger: every commit whose acknowledgement reached the probe, kept
//! in memory and appended to a journal file before anything else happens, so a
//! crashed probe loses no entry.
//!
//! The journal is JSON lines. A restarted probe reopens it, keeps the run id
//! and starts a new *incarnation*, so its `(writer, seq)` keys never collide
//! with rows an earlier incarnation wrote but could not journal.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// A probe write: incarnation, writer, sequence number.
pub type WriteKey = (u32, u32, u64);

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JournalEntry {
    /// Written when an incarnation starts.
    Start {
        /// Identifies the probe rows of this run in the database.
        run_id: String,
        /// 1 for the first start, +1 for each resume.
        incarnation: u32,
        /// host:port/dbname of the target.
        target: String,
        /// Schema of the probe table.
        schema: String,
        /// Unix milliseconds.
        at_ms: i64,
    },
    /// The commit of this write was acknowledged.
    Ack {
        /// Incarnation of the writer.
        i: u32,
        /// Writer number.
        w: u32,
        /// Sequence number within the writer.
        s: u64,
        /// Unix milliseconds of the acknowledgement.
        t: i64,
    },
    /// The outcome of this write is unknown (the connection failed after the
    /// statement was sent).
    Indeterminate {
        /// Incarnation of the writer.
        i: u32,
        /// Writer number.
        w: u32,
        /// Sequence number within the writer.
        s: u64,
        /// Unix milliseconds.
        t: i64,
        /// What went wrong.
        error: String,
    },
    /// A drill step is about to start (written before the command runs, so
    /// a crash mid-step still leaves a record of what was started).
    DrillStepStarted {
        /// The shell command.
        command: String,
        /// Unix milliseconds when it started.
        started_ms: i64,
    },
    /// A drill step ran (or was interrupted: no exit code).
    DrillStep {
        /// The shell command.
        command: String,
        /// Unix milliseconds when it started.
        started_ms: i64,
        /// Unix milliseconds when it ended.
        finished_ms: i64,
        /// Its exit code, if it exited.
        exit_code: Option<i32>,
    },
}

/// Why a journal cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The file cannot be read or written.
    #[error("ledger {path}: {source}")]
    Io {
        /// The journal file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line other than the last does not parse: the journal was edited or corrupted.
    #[error("ledger {path}:{line}: not a journal entry ({reason}); refusing to guess")]
    Corrupt {
        /// The journal file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The parse error.
        reason: String,
    },
    /// The file holds no start entry.
    #[error("ledger {path}: no start entry; is this a pg-failover-probe ledger?")]
    NoStart {
        /// The journal file.
        path: PathBuf,
    },
}

/// What a journal holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LedgerContents {
    /// Run id from the first start entry.
    pub run_id: String,
    /// Probe schema from the first start entry.
    pub schema: String,
    /// Highest incarnation seen.
    pub incarnation: u32,
    /// Acknowledged writes.
    pub acked: BTreeSet<WriteKey>,
    /// Writes of unknown outcome, with the error.
    pub indeterminate: BTreeMap<WriteKey, String>,
    /// Drill steps recorded.
    pub drill_steps: Vec<JournalEntry>,
    /// Whether the last line was cut short (a crash mid-write) and skipped.
    pub truncated_tail: bool,
}

impl LedgerContents {
    /// Reads a journal. A cut-short line (a crash in the middle of a write) is
    /// skipped when it is the last line or a resumed run's start entry follows
    /// it; any other unreadable line is an error.
    pub fn load(path: &Path) -> Result<Self, LedgerError> {
        let io = |source| LedgerError::Io { path: path.to_owned(), source };
        let file = File::open(path).map_err(io)?;
        let lines: Vec<String> =
            BufReader::new(file).lines().collect::<Result<_, _>>().map_err(io)?;
        let mut contents = LedgerContents::default();
        let entries: Vec<(usize, Result<JournalEntry, serde_json::Error>)> = lines
            .iter()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(index, line)| (index, serde_json::from_str(line)))
            .collect();
        for (position, (index, entry)) in entries.iter().enumerate() {
            let entry = match entry {
                Ok(entry) => entry.clone(),
                Err(_) if position + 1 == entries.len() => {
                    contents.truncated_tail = true;
                    continue;
                }
                Err(_)
                    if matches!(
                        entries.get(position + 1),
                        Some((_, Ok(JournalEntry::Start { .. })))
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    return Err(LedgerError::Corrupt {
                        path: path.to_owned(),
                        line: index + 1,
                        reason: e.to_string(),
                    });
                }
            };
            contents.apply(entry);
        }
        if contents.run_id.is_empty() {
            return Err(LedgerError::NoStart { path: path.to_owned() });
        }
        Ok(contents)
    }

    fn apply(&mut self, entry: JournalEntry) {
        match entry {
            JournalEntry::Start { run_id, incarnation, schema, .. } => {
                if self.run_id.is_empty() {
                    self.run_id = run_id;
                    self.schema = schema;
                }
                self.incarnation = self.incarnation.max(incarnation);
            }
            JournalEntry::Ack { i, w, s, .. } => {
                self.indeterminate.remove(&(i, w, s));
                self.acked.insert((i, w, s));
            }
            JournalEntry::Indeterminate { i, w, s, error, .. } => {
                self.indeterminate.insert((i, w, s), error);
            }
            step @ (JournalEntry::DrillStep { .. } | JournalEntry::DrillStepStarted { .. }) => {
                self.drill_steps.push(step)
            }
        }
    }
}

/// The live ledger of a running probe.
#[derive(Debug)]
pub struct AckLedger {
    path: PathBuf,
    run_id: String,
    incarnation: u32,
    state: Mutex<(File, LedgerContents)>,
}

impl AckLedger {
    /// Opens `path` for a new incarnation: resumes the run recorded there, or
    /// starts `run_id` if the file does not exist yet.
    pub fn open(
        path: &Path,
        run_id: &str,
        target: &str,
        schema: &str,
    ) -> Result<Self, LedgerError> {
        let io = |source| LedgerError::Io { path: path.to_owned(), source };
        let mut contents = if path.exists() {
            LedgerContents::load(path)?
        } else {
            LedgerContents {
                run_id: run_id.to_owned(),
                schema: schema.to_owned(),
                ..LedgerContents::default()
            }
        };
        let mut file = OpenOptions::new().create(true).append(true).open(path).map_err(io)?;
        if contents.truncated_tail {
            // Terminate the cut-short line so the next entry starts on its own line.
            file.write_all(b"\n").map_err(io)?;
        }
        contents.incarnation += 1;
        let ledger = Self {
            path: path.to_owned(),
            run_id: contents.run_id.clone(),
            incarnation: contents.incarnation,
            state: Mutex::new((file, contents)),
        };
        ledger.append(JournalEntry::Start {
            run_id: ledger.run_id.clone(),
            incarnation: ledger.incarnation,
            target: target.to_owned(),
            schema: schema.to_owned(),
            at_ms: unix_millis(),
        })?;
        Ok(ledger)
    }

    /// The run id (kept across resumes).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// This incarnation's number.
    pub fn incarnation(&self) -> u32 {
        self.incarnation
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records an acknowledged commit: journal first, then memory.
    pub fn record_ack(&self, writer: u32, seq: u64) -> Result<(), LedgerError> {
        self.append(JournalEntry::Ack { i: self.incarnation, w: writer, s: seq, t: unix_millis() })
    }

    /// Records a write whose outcome is unknown.
    pub fn record_indeterminate(
        &self,
        writer: u32,
        seq: u64,
        error: &str,
    ) -> Result<(), LedgerError> {
        self.append(JournalEntry::Indeterminate {
            i: self.incarnation,
            w: writer,
            s: seq,
            t: unix_millis(),
            error: error.to_owned(),
        })
    }

    /// Records a drill step.
    pub fn record_step(&self, step: JournalEntry) -> Result<(), LedgerError> {
        self.append(step)
    }

    /// A copy of everything recorded so far (all incarnations).
    pub fn contents(&self) -> LedgerContents {
        self.lock().1.clone()
    }

    /// Number of acknowledged writes so far (all incarnations).
    pub fn acked_count(&self) -> usize {
        self.lock().1.acked.len()
    }

    fn append(&self, entry: JournalEntry) -> Result<(), LedgerError> {
        let mut line = serde_json::to_string(&entry).unwrap_or_default();
        line.push('\n');
        let mut state = self.lock();
        // One write(2) per entry, unbuffered: once it returns, a crash of the
        // probe cannot lose the entry (it sits in the kernel's page cache).
        state
            .0
            .write_all(line.as_bytes())
            .map_err(|source| LedgerError::Io { path: self.path.clone(), source })?;
        state.1.apply(entry);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (File, LedgerContents)> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_resumed_ledger_keeps_the_run_and_starts_a_new_incarnation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let first = AckLedger::open(&path, "run-a", "db", "probe").unwrap();
        first.record_ack(0, 1).unwrap();
        first.record_indeterminate(1, 1, "connection closed").unwrap();
        drop(first);
        let second = AckLedger::open(&path, "ignored", "db", "probe").unwrap();
        assert_eq!((second.run_id(), second.incarnation()), ("run-a", 2));
        second.record_ack(0, 1).unwrap();
        let contents = LedgerContents::load(&path).unwrap();
        assert_eq!(contents.acked, BTreeSet::from([(1, 0, 1), (2, 0, 1)]));
        assert_eq!(contents.indeterminate.len(), 1);
    }

    #[test]
    fn a_cut_short_last_line_is_skipped_and_a_corrupt_middle_line_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let ledger = AckLedger::open(&path, "run", "db", "probe").unwrap();
        ledger.record_ack(0, 1).unwrap();
        drop(ledger);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(br#"{"kind":"ack","i":1,"w":0,"#).unwrap();
        let contents = LedgerContents::load(&path).unwrap();
        assert!(contents.truncated_tail);
        assert_eq!(contents.acked.len(), 1);
        // Resuming after a torn write keeps the journal readable.
        let resumed = AckLedger::open(&path, "run", "db", "probe").unwrap();
        resumed.record_ack(0, 1).unwrap();
        assert_eq!(LedgerContents::load(&path).unwrap().acked.len(), 2);

        std::fs::write(&path, "{\"kind\":\"start\",\"run_id\":\"r\",\"incarnation\":1,\"target\":\"t\",\"schema\":\"s\",\"at_ms\":0}\ngarbage\n{}\n").unwrap();
        let err = LedgerContents::load(&path).unwrap_err().to_string();
        assert!(err.contains(":2: not a journal entry"), "{err}");
    }

    proptest! {
        #[test]
        fn loading_arbitrary_files_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("ledger.jsonl");
            std::fs::write(&path, &bytes).unwrap();
            let _ = LedgerContents::load(&path);
        }
    }
}
