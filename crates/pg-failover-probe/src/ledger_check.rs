//! Checking a ledger against the database: every acknowledged commit must be
//! there, indeterminate ones are classified, duplicates are counted.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::ledger::{LedgerContents, WriteKey};
use crate::target::Target;

/// The database's answer to a ledger.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LedgerCheck {
    /// The server that answered (host:port).
    pub server: String,
    /// Probe rows of the run found.
    pub rows: usize,
    /// Acknowledged writes that are not in the database.
    pub lost: Vec<WriteKey>,
    /// Writes found more than once, with their count.
    pub duplicates: Vec<(WriteKey, i64)>,
    /// Indeterminate writes that did commit.
    pub indeterminate_present: usize,
    /// Indeterminate writes that did not.
    pub indeterminate_absent: usize,
}

/// Why the ledger could not be checked.
#[derive(Debug, thiserror::Error)]
#[error("cannot check the ledger against {target}: {reason}")]
pub struct CheckError {
    /// host:port list of the target.
    pub target: String,
    /// The last error, with a hint.
    pub reason: String,
}

/// Connects to the host that accepts writes (retrying for up to `wait`, since a
/// failover may still be settling) and compares its probe rows with `ledger`.
pub async fn check_ledger(
    target: &Target,
    ledger: &LedgerContents,
    connect_timeout: Duration,
    wait: Duration,
) -> Result<LedgerCheck, CheckError> {
    let deadline = Instant::now() + wait;
    let config = target.writer_config(connect_timeout);
    let error = |reason: String| CheckError { target: target.display(), reason };
    let client = loop {
        match config.connect(target.tls()).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                break client;
            }
            Err(e) if Instant::now() >= deadline => {
                return Err(error(format!("{e}; is a primary up? (waited {wait:?})")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let server: String = client
        .query_one(
            "SELECT coalesce(host(inet_server_addr()), 'socket') || ':' || current_setting('port')",
            &[],
        )
        .await
        .map_err(|e| error(e.to_string()))
        .and_then(|row| {
            crate::observe::column(&row, "the server-address query", 0, "server").map_err(error)
        })?;
    let rows = client
        .query(
            &format!(
                "SELECT incarnation, writer, seq, count(*) FROM {}.probe_writes WHERE run_id = $1 GROUP BY 1, 2, 3",
                ledger.schema
            ),
            &[&ledger.run_id],
        )
        .await
        .map_err(|e| error(format!("{e}; was the probe table created on this cluster?")))?;
    let table = format!("{}.probe_writes", ledger.schema);
    let found: BTreeMap<WriteKey, i64> = rows
        .iter()
        .map(|r| {
            let col = |i, name| crate::observe::column::<i64>(r, &table, i, name);
            let int = |i, name| crate::observe::column::<i32>(r, &table, i, name);
            Ok((
                (int(0, "incarnation")? as u32, int(1, "writer")? as u32, col(2, "seq")? as u64),
                col(3, "count")?,
            ))
        })
        .collect::<Result<_, String>>()
        .map_err(error)?;
    Ok(compare(server, ledger, &found))
}

/// Compares a ledger with the rows found, keyed by write.
pub fn compare(
    server: String,
    ledger: &LedgerContents,
    found: &BTreeMap<WriteKey, i64>,
) -> LedgerCheck {
    let lost = ledger.acked.iter().filter(|key| !found.contains_key(key)).copied().collect();
    let duplicates =
        found.iter().filter(|(_, count)| **count > 1).map(|(key, count)| (*key, *count)).collect();
    let present = ledger.indeterminate.keys().filter(|key| found.contains_key(key)).count();
    LedgerCheck {
        server,
        rows: found.values().map(|c| *c as usize).sum(),
        lost,
        duplicates,
        indeterminate_present: present,
        indeterminate_absent: ledger.indeterminate.len() - present,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn lost_duplicates_and_indeterminate_are_told_apart() {
        let ledger = LedgerContents {
            run_id: "r".into(),
            schema: "s".into(),
            acked: BTreeSet::from([(1, 0, 1), (1, 0, 2), (1, 1, 1)]),
            indeterminate: BTreeMap::from([((1, 0, 3), "cut".into()), ((1, 1, 2), "cut".into())]),
            ..LedgerContents::default()
        };
        let found = BTreeMap::from([((1, 0, 1), 1), ((1, 1, 1), 2), ((1, 0, 3), 1)]);
        let check = compare("db".into(), &ledger, &found);
        assert_eq!(check.lost, [(1, 0, 2)]);
        assert_eq!(check.duplicates, [((1, 1, 1), 2)]);
        assert_eq!((check.indeterminate_present, check.indeterminate_absent), (1, 1));
        assert_eq!(check.rows, 4);
    }
}
