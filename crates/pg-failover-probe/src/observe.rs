//! Watching the servers while the probe runs: which one is primary (recovery
//! state, system identifier, timeline), their WAL positions, the primary's
//! `pg_stat_replication` and its durability settings, sampled on an interval.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;
use tokio_postgres::Client;

use crate::target::Target;

/// One standby as the primary sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replica {
    /// `application_name` of the standby.
    pub name: String,
    /// `state`, e.g. `streaming`.
    pub state: String,
    /// `sync_state`: `sync`, `async`, `potential`, `quorum`.
    pub sync_state: String,
    /// Bytes between the primary's current WAL position and the standby's replay position.
    pub replay_gap_bytes: Option<i64>,
    /// `replay_lag` in milliseconds.
    pub replay_lag_ms: Option<f64>,
}

/// What one server looked like at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerSample {
    /// Milliseconds since the run started.
    pub at_ms: u64,
    /// host:port.
    pub server: String,
    /// Whether it answered.
    pub reachable: bool,
    /// `pg_is_in_recovery()`.
    pub in_recovery: Option<bool>,
    /// `pg_control_system().system_identifier`.
    pub system_identifier: Option<String>,
    /// Timeline of the WAL it writes (primary) or receives (standby).
    pub timeline: Option<i64>,
    /// Current (primary) or last received (standby) WAL position, in bytes.
    pub wal_lsn: Option<i64>,
    /// `synchronous_commit`.
    pub synchronous_commit: Option<String>,
    /// `synchronous_standby_names`.
    pub synchronous_standby_names: Option<String>,
    /// The primary's standbys.
    pub replicas: Vec<Replica>,
    /// Why it did not answer.
    pub error: Option<String>,
}

impl ServerSample {
    /// Whether this sample shows a primary.
    pub fn is_primary(&self) -> bool {
        self.reachable && self.in_recovery == Some(false)
    }
}

/// Samples every host of the target until stopped.
#[derive(Debug)]
pub struct Observer {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    samples: Arc<Mutex<Vec<ServerSample>>>,
}

impl Observer {
    /// Starts sampling each host every `interval`.
    pub fn start(
        target: &Target,
        interval: Duration,
        connect_timeout: Duration,
        started: Instant,
    ) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let samples = Arc::new(Mutex::new(Vec::new()));
        let hosts = target.per_host_configs(connect_timeout);
        let tls = target.tls();
        let sink = samples.clone();
        let task = tokio::spawn(async move {
            let mut clients: Vec<Option<Client>> = hosts.iter().map(|_| None).collect();
            loop {
                for ((server, config), client) in hosts.iter().zip(clients.iter_mut()) {
                    let at_ms = started.elapsed().as_millis() as u64;
                    let sample = sample(server, config, &tls, client, at_ms).await;
                    sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(sample);
                }
                if *stopped.borrow()
                    || tokio::time::timeout(interval, stopped.changed()).await.is_ok()
                {
                    break;
                }
            }
        });
        Self { stop, task, samples }
    }

    /// Stops sampling (after one last round) and returns every sample.
    pub async fn stop(self) -> Vec<ServerSample> {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.samples.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

async fn sample(
    server: &str,
    config: &tokio_postgres::Config,
    tls: &tokio_postgres_rustls::MakeRustlsConnect,
    client: &mut Option<Client>,
    at_ms: u64,
) -> ServerSample {
    let mut sample = ServerSample {
        at_ms,
        server: server.to_owned(),
        reachable: false,
        in_recovery: None,
        system_identifier: None,
        timeline: None,
        wal_lsn: None,
        synchronous_commit: None,
        synchronous_standby_names: None,
        replicas: Vec::new(),
        error: None,
    };
    if client.as_ref().is_none_or(Client::is_closed) {
        match config.connect(tls.clone()).await {
            Ok((c, connection)) => {
                tokio::spawn(connection);
                *client = Some(c);
            }
            Err(e) => {
                sample.error = Some(e.to_string());
                *client = None;
                return sample;
            }
        }
    }
    let Some(c) = client.as_ref() else { return sample };
    let row = c
        .query_one(
            "SELECT pg_is_in_recovery(),
                    (SELECT system_identifier::text FROM pg_control_system()),
                    CASE WHEN pg_is_in_recovery()
                         THEN (SELECT received_tli::bigint FROM pg_stat_wal_receiver)
                         ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint END,
                    CASE WHEN pg_is_in_recovery()
                         THEN pg_wal_lsn_diff(coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), '0/0')::bigint
                         ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint END,
                    current_setting('synchronous_commit'),
                    current_setting('synchronous_standby_names')",
            &[],
        )
        .await;
    let read = |row: &tokio_postgres::Row, sample: &mut ServerSample| -> Result<(), String> {
        const Q: &str = "the server-state query";
        sample.in_recovery = column(row, Q, 0, "pg_is_in_recovery")?;
        sample.system_identifier = column(row, Q, 1, "system_identifier")?;
        sample.timeline = column(row, Q, 2, "timeline")?;
        sample.wal_lsn = column(row, Q, 3, "wal_lsn")?;
        sample.synchronous_commit = column(row, Q, 4, "synchronous_commit")?;
        sample.synchronous_standby_names = column(row, Q, 5, "synchronous_standby_names")?;
        Ok(())
    };
    match row {
        Ok(row) => {
            sample.reachable = true;
            if let Err(e) = read(&row, &mut sample) {
                sample.error = Some(e);
                return sample;
            }
        }
        Err(e) => {
            sample.error = Some(e.to_string());
            *client = None;
            return sample;
        }
    }
    if sample.in_recovery == Some(false)
        && let Ok(rows) = c
            .query(
                "SELECT application_name, coalesce(state, ''), coalesce(sync_state, ''),
                        pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint,
                        (extract(epoch FROM replay_lag) * 1000)::float8
                   FROM pg_stat_replication",
                &[],
            )
            .await
    {
        const Q: &str = "pg_stat_replication";
        let replicas: Result<Vec<Replica>, String> = rows
            .iter()
            .map(|r| {
                Ok(Replica {
                    name: column(r, Q, 0, "application_name")?,
                    state: column(r, Q, 1, "state")?,
                    sync_state: column(r, Q, 2, "sync_state")?,
                    replay_gap_bytes: column(r, Q, 3, "replay_gap_bytes")?,
                    replay_lag_ms: column(r, Q, 4, "replay_lag")?,
                })
            })
            .collect();
        match replicas {
            Ok(replicas) => sample.replicas = replicas,
            Err(e) => sample.error = Some(e),
        }
    }
    sample
}

/// Column `index` (`name`) of a row `query` returned, or an error naming both:
/// a server that answers with an unexpected type never panics the probe.
pub(crate) fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a tokio_postgres::Row,
    query: &str,
    index: usize,
    name: &str,
) -> Result<T, String> {
    row.try_get(index).map_err(|e| format!("{query}: cannot read column {name} (#{index}): {e}"))
}
