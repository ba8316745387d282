//! The probe workload: writer tasks inserting `(writer, seq, payload, client
//! time)` through a pool configured like a service's, reader tasks measuring
//! read availability, and the timeline of every attempt.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use tokio::sync::watch;

use crate::ledger::AckLedger;
use crate::target::Target;

/// How hard and how the probe writes and reads.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Concurrent writer tasks.
    pub writers: u32,
    /// Concurrent reader tasks.
    pub readers: u32,
    /// Pause between a writer's successful writes (0 = as fast as possible).
    pub write_interval: Duration,
    /// Pause between a reader's reads.
    pub read_interval: Duration,
    /// Pause after a failed attempt.
    pub retry_backoff: Duration,
    /// Bytes of payload per row.
    pub payload_bytes: usize,
    /// Connection timeout, and the pool's wait/create/recycle timeouts.
    pub connect_timeout: Duration,
    /// Longest wait for a statement's answer; beyond it the write is indeterminate.
    pub statement_timeout: Duration,
    /// Schema of the probe table.
    pub schema: String,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            writers: 4,
            readers: 2,
            write_interval: Duration::from_millis(10),
            read_interval: Duration::from_millis(50),
            retry_backoff: Duration::from_millis(20),
            payload_bytes: 64,
            connect_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(5),
            schema: "postlaunch_probe".to_owned(),
        }
    }
}

/// Which kind of attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptKind {
    /// An insert.
    Write,
    /// A read.
    Read,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged.
    Ok,
    /// Refused or never sent: certainly not committed.
    Failed,
    /// Sent, but the answer never came: may or may not be committed.
    Indeterminate,
}

/// One attempt, timed from the start of the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Attempt {
    /// Write or read.
    pub kind: AttemptKind,
    /// When it was started.
    pub started: Duration,
    /// When its outcome was known.
    pub finished: Duration,
    /// Its outcome.
    pub outcome: Outcome,
}

/// Every attempt of a run, in completion order.
#[derive(Debug, Default)]
pub struct Timeline {
    attempts: Mutex<Vec<Attempt>>,
}

impl Timeline {
    fn push(&self, attempt: Attempt) {
        self.attempts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(attempt);
    }

    /// A copy of the attempts so far.
    pub fn snapshot(&self) -> Vec<Attempt> {
        self.attempts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Counts of (ok, failed, indeterminate) attempts of `kind`.
    pub fn counts(&self, kind: AttemptKind) -> (usize, usize, usize) {
        let attempts = self.attempts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        attempts.iter().filter(|a| a.kind == kind).fold((0, 0, 0), |(ok, failed, unknown), a| {
            match a.outcome {
                Outcome::Ok => (ok + 1, failed, unknown),
                Outcome::Failed => (ok, failed + 1, unknown),
                Outcome::Indeterminate => (ok, failed, unknown + 1),
            }
        })
    }
}

/// A pool configured the way a service would configure it.
pub fn pool(
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    size: usize,
    timeout: Duration,
) -> Result<Pool, String> {
    let manager = Manager::from_config(
        config,
        tls,
        ManagerConfig { recycling_method: RecyclingMethod::Fast },
    );
    Pool::builder(manager)
        .max_size(size.max(1))
        .timeouts(Timeouts { wait: Some(timeout), create: Some(timeout), recycle: Some(timeout) })
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| e.to_string())
}

/// Creates the probe schema and table if needed, on whichever host accepts writes.
pub async fn prepare(
    target: &Target,
    config: &WorkloadConfig,
) -> Result<(), tokio_postgres::Error> {
    let (client, connection) =
        target.writer_config(config.connect_timeout).connect(target.tls()).await?;
    tokio::spawn(connection);
    let s = &config.schema;
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {s};
             CREATE TABLE IF NOT EXISTS {s}.probe_writes (
                 run_id text NOT NULL, incarnation int NOT NULL, writer int NOT NULL, seq bigint NOT NULL,
                 payload text NOT NULL, client_time_ms bigint NOT NULL,
                 server_time timestamptz NOT NULL DEFAULT clock_timestamp());
             CREATE INDEX IF NOT EXISTS probe_writes_key ON {s}.probe_writes (run_id, incarnation, writer, seq);"
        ))
        .await
}

/// The running workload; stop it with [`Workload::stop`].
#[derive(Debug)]
pub struct Workload {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Every attempt.
    pub timeline: Arc<Timeline>,
    /// When the workload started; attempt times are relative to it.
    pub started: Instant,
}

impl Workload {
    /// Starts writers and readers against `target`, journaling into `ledger`.
    pub fn start(
        target: &Target,
        config: &WorkloadConfig,
        ledger: Arc<AckLedger>,
    ) -> Result<Self, String> {
        let writer_pool = pool(
            target.writer_config(config.connect_timeout),
            target.tls(),
            config.writers as usize,
            config.connect_timeout,
        )?;
        let reader_pool = pool(
            target.reader_config(config.connect_timeout),
            target.tls(),
            config.readers.max(1) as usize,
            config.connect_timeout,
        )?;
        let (stop, stopped) = watch::channel(false);
        let timeline = Arc::new(Timeline::default());
        let started = Instant::now();
        let insert = format!(
            "INSERT INTO {}.probe_writes (run_id, incarnation, writer, seq, payload, client_time_ms) VALUES ($1, $2, $3, $4, $5, $6)",
            config.schema
        );
        let mut tasks = Vec::new();
        for writer in 0..config.writers {
            let task = Writer {
                writer,
                pool: writer_pool.clone(),
                ledger: ledger.clone(),
                timeline: timeline.clone(),
                config: config.clone(),
                insert: insert.clone(),
                started,
            };
            tasks.push(tokio::spawn(task.run(stopped.clone())));
        }
        for _ in 0..config.readers {
            let pool = reader_pool.clone();
            let timeline = timeline.clone();
            let config = config.clone();
            let mut stopped = stopped.clone();
            tasks.push(tokio::spawn(async move {
                while !*stopped.borrow() {
                    let begun = started.elapsed();
                    let read = tokio::time::timeout(config.statement_timeout, async {
                        let client = pool.get().await.map_err(|e| e.to_string())?;
                        client.query_one("SELECT 1", &[]).await.map_err(|e| e.to_string())
                    })
                    .await;
                    let ok = matches!(read, Ok(Ok(_)));
                    let outcome = if ok { Outcome::Ok } else { Outcome::Failed };
                    timeline.push(Attempt {
                        kind: AttemptKind::Read,
                        started: begun,
                        finished: started.elapsed(),
                        outcome,
                    });
                    let pause = if ok { config.read_interval } else { config.retry_backoff };
                    let _ = tokio::time::timeout(pause, stopped.changed()).await;
                }
            }));
        }
        Ok(Self { stop, tasks, timeline, started })
    }

    /// Stops every task and waits for in-flight attempts to finish.
    pub async fn stop(self) -> Arc<Timeline> {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.timeline
    }
}

struct Writer {
    writer: u32,
    pool: Pool,
    ledger: Arc<AckLedger>,
    timeline: Arc<Timeline>,
    config: WorkloadConfig,
    insert: String,
    started: Instant,
}

impl Writer {
    async fn run(self, mut stopped: watch::Receiver<bool>) {
        let payload = "x".repeat(self.config.payload_bytes);
        let run_id = self.ledger.run_id().to_owned();
        let incarnation = self.ledger.incarnation() as i32;
        let writer = self.writer as i32;
        let mut seq: u64 = 0;
        while !*stopped.borrow() {
            seq += 1;
            let begun = self.started.elapsed();
            let outcome = self.attempt(&run_id, incarnation, writer, seq as i64, &payload).await;
            let finished = self.started.elapsed();
            let recorded = match &outcome {
                Ok(()) => self.ledger.record_ack(self.writer, seq),
                Err((Outcome::Indeterminate, error)) => {
                    self.ledger.record_indeterminate(self.writer, seq, error)
                }
                Err(_) => Ok(()),
            };
            if let Err(e) = recorded {
                // Without a journal the run proves nothing: stop writing.
                tracing::error!(error = %e, "cannot journal; writer {} stops", self.writer);
                return;
            }
            let kind = outcome.as_ref().map_or_else(|(o, _)| *o, |()| Outcome::Ok);
            self.timeline.push(Attempt {
                kind: AttemptKind::Write,
                started: begun,
                finished,
                outcome: kind,
            });
            let pause = if kind == Outcome::Ok {
                self.config.write_interval
            } else {
                self.config.retry_backoff
            };
            if !pause.is_zero() {
                let _ = tokio::time::timeout(pause, stopped.changed()).await;
            }
        }
    }

    /// One insert. A failure before the statement left (no connection) or an
    /// error the server answered with is certain; anything else is not.
    async fn attempt(
        &self,
        run_id: &str,
        incarnation: i32,
        writer: i32,
        seq: i64,
        payload: &str,
    ) -> Result<(), (Outcome, String)> {
        let client = self.pool.get().await.map_err(|e| (Outcome::Failed, e.to_string()))?;
        let sent = async {
            let statement = client.prepare_cached(&self.insert).await?;
            let now = crate::ledger::unix_millis();
            client
                .execute(&statement, &[&run_id, &incarnation, &writer, &seq, &payload, &now])
                .await
        };
        let outcome = match tokio::time::timeout(self.config.statement_timeout, sent).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) if e.as_db_error().is_some() => {
                return Err((Outcome::Failed, e.to_string()));
            }
            Ok(Err(e)) => Err((Outcome::Indeterminate, e.to_string())),
            Err(_) => {
                Err((Outcome::Indeterminate, "no answer within the statement timeout".to_owned()))
            }
        };
        // A connection that failed mid-statement is never handed out again.
        drop(deadpool_postgres::Object::take(client));
        outcome
    }
}
