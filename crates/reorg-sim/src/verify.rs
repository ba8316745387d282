//! The verifier: reads any indexer's database through the SQL queries of a
//! [`Mapping`] (defaults fit the reference indexer) and compares it with the
//! oracle's canonical state, producing the report's checks: duplicates,
//! missing or stale rows, wrong balances and statistics, whether each reorg
//! was recorded with the NFTs it affected, the detection delay, and for a
//! reorg beyond finality whether the indexer halted with its data intact.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use alloy_primitives::{Address, B256, U256};
use serde::{Deserialize, Serialize};
use shared_types::Check;
use tokio_postgres::Client;

use crate::oracle::{CanonicalState, CollectionStats, ReorgHistoryEntry, TokenKey};

/// SQL queries that read an indexer's state. Every column must be text
/// (cast with `::text`; hashes and addresses as hex, `encode(x, 'hex')`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Mapping {
    /// `number, hash[, halted, halt_reason]` of the last indexed block (one row).
    pub checkpoint: String,
    /// `number, hash` of every stored block.
    pub blocks: String,
    /// `block_hash, log_index` of every stored event.
    pub events: String,
    /// `contract, token_id, owner, amount`.
    pub balances: String,
    /// `contract, holders, supply, transfers`.
    pub collections: String,
    /// `detected_at_block, common_ancestor, depth` per recorded reorg (optional).
    #[serde(default)]
    pub reorgs: Option<String>,
    /// `contract, token_id` per affected NFT (optional).
    #[serde(default)]
    pub affected_nfts: Option<String>,
}

impl Mapping {
    /// The reference indexer's tables in `schema`.
    pub fn reference(schema: &str) -> Mapping {
        let s = schema;
        Mapping {
            checkpoint: format!(
                "SELECT number::text, encode(hash, 'hex'), halted::text, coalesce(halt_reason, '') FROM {s}.checkpoint"
            ),
            blocks: format!("SELECT number::text, encode(hash, 'hex') FROM {s}.blocks"),
            events: format!("SELECT encode(block_hash, 'hex'), log_index::text FROM {s}.events"),
            balances: format!(
                "SELECT encode(contract, 'hex'), token_id::text, encode(owner, 'hex'), amount::text FROM {s}.balances WHERE amount <> 0"
            ),
            collections: format!(
                "SELECT encode(contract, 'hex'), holders::text, supply::text, transfers::text FROM {s}.collections"
            ),
            reorgs: Some(format!(
                "SELECT detected_at_block::text, common_ancestor::text, depth::text FROM {s}.reorgs ORDER BY id"
            )),
            affected_nfts: Some(format!(
                "SELECT encode(contract, 'hex'), token_id::text FROM {s}.affected_nfts"
            )),
        }
    }

    /// Reads a mapping file (YAML).
    pub fn load(path: &Path) -> Result<Mapping, VerifyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| VerifyError::Mapping(format!("cannot read {}: {e}", path.display())))?;
        serde_saphyr::from_str(&text)
            .map_err(|e| VerifyError::Mapping(format!("{}: {e}", path.display())))
    }
}

/// Why the indexer's state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Bad mapping file.
    #[error("mapping: {0}")]
    Mapping(String),
    /// A query failed or returned something else than text.
    #[error("mapping query {query}: {detail}")]
    Query {
        /// Which query.
        query: &'static str,
        /// What went wrong.
        detail: String,
    },
}

/// One reorg as the indexer recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RecordedReorg {
    /// Block whose parent did not match.
    pub detected_at: u64,
    /// Common ancestor.
    pub ancestor: u64,
    /// Blocks rolled back.
    pub depth: u64,
}

/// The indexer's state as read through a mapping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexerSnapshot {
    /// Last indexed block.
    pub head: Option<(u64, B256)>,
    /// Halt reason, if the indexer says it halted.
    pub halted: Option<String>,
    /// The checkpoint query returns a `halted` column (its 3rd), so a
    /// missing halt is evidence, not a gap in the mapping.
    pub reports_halt: bool,
    /// Stored blocks.
    pub blocks: Vec<(u64, B256)>,
    /// Stored events.
    pub events: Vec<(B256, u64)>,
    /// Stored balances.
    pub balances: BTreeMap<(Address, U256, Address), U256>,
    /// Stored collection statistics.
    pub collections: BTreeMap<Address, CollectionStats>,
    /// Recorded reorgs (`None`: the mapping has no query).
    pub reorgs: Option<Vec<RecordedReorg>>,
    /// Affected NFTs (`None`: the mapping has no query).
    pub affected: Option<BTreeSet<TokenKey>>,
}

async fn rows(
    client: &Client,
    query: &'static str,
    sql: &str,
) -> Result<Vec<Vec<String>>, VerifyError> {
    Ok(rows_and_width(client, query, sql).await?.1)
}

/// The rows of `sql` as text, with the number of columns the query
/// returns (known even when it returns no row).
async fn rows_and_width(
    client: &Client,
    query: &'static str,
    sql: &str,
) -> Result<(usize, Vec<Vec<String>>), VerifyError> {
    let err = |detail: String| VerifyError::Query { query, detail };
    let statement = client.prepare(sql).await.map_err(|e| err(format!("{e} (SQL: {sql})")))?;
    let width = statement.columns().len();
    let result =
        client.query(&statement, &[]).await.map_err(|e| err(format!("{e} (SQL: {sql})")))?;
    let rows = result
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| {
                    row.try_get::<_, Option<String>>(i).map(Option::unwrap_or_default).map_err(
                        |e| {
                            err(format!("column {} must be text: cast it with ::text ({e})", i + 1))
                        },
                    )
                })
                .collect()
        })
        .collect::<Result<Vec<Vec<String>>, VerifyError>>()?;
    Ok((width, rows))
}

fn col<'a>(row: &'a [String], i: usize, query: &'static str) -> Result<&'a str, VerifyError> {
    row.get(i).map(String::as_str).ok_or_else(|| VerifyError::Query {
        query,
        detail: format!("needs at least {} columns", i + 1),
    })
}

fn hex_bytes(s: &str) -> String {
    let s = s.trim();
    let s = s.strip_prefix("\\x").or_else(|| s.strip_prefix("0x")).unwrap_or(s);
    format!("0x{}", s.to_ascii_lowercase())
}

fn parse<T: std::str::FromStr>(s: &str, what: &str, query: &'static str) -> Result<T, VerifyError> {
    s.trim()
        .parse()
        .map_err(|_| VerifyError::Query { query, detail: format!("cannot read {what} from {s:?}") })
}

fn hash(s: &str, q: &'static str) -> Result<B256, VerifyError> {
    parse(&hex_bytes(s), "a 32-byte hash", q)
}

fn address(s: &str, q: &'static str) -> Result<Address, VerifyError> {
    parse(&hex_bytes(s), "a 20-byte address", q)
}

/// Reads the indexer's state.
pub async fn snapshot(client: &Client, mapping: &Mapping) -> Result<IndexerSnapshot, VerifyError> {
    let mut snap = IndexerSnapshot::default();
    let (width, checkpoint) = rows_and_width(client, "checkpoint", &mapping.checkpoint).await?;
    snap.reports_halt = width >= 3;
    if let Some(row) = checkpoint.first() {
        let q = "checkpoint";
        snap.head = Some((parse(col(row, 0, q)?, "a block number", q)?, hash(col(row, 1, q)?, q)?));
        if row.get(2).is_some_and(|h| h == "true" || h == "t") {
            snap.halted = Some(row.get(3).cloned().unwrap_or_default());
        }
    }
    for row in rows(client, "blocks", &mapping.blocks).await? {
        let q = "blocks";
        snap.blocks
            .push((parse(col(&row, 0, q)?, "a block number", q)?, hash(col(&row, 1, q)?, q)?));
    }
    for row in rows(client, "events", &mapping.events).await? {
        let q = "events";
        snap.events.push((hash(col(&row, 0, q)?, q)?, parse(col(&row, 1, q)?, "a log index", q)?));
    }
    for row in rows(client, "balances", &mapping.balances).await? {
        let q = "balances";
        let key = (
            address(col(&row, 0, q)?, q)?,
            parse(col(&row, 1, q)?, "a token id", q)?,
            address(col(&row, 2, q)?, q)?,
        );
        let amount: U256 = parse(col(&row, 3, q)?.trim_start_matches('-'), "an amount", q)?;
        if col(&row, 3, q)?.starts_with('-') {
            // A negative balance can never be right; keep it visible as a mismatch.
            snap.balances.insert(key, U256::MAX - amount);
        } else {
            let slot = snap.balances.entry(key).or_default();
            *slot = slot.saturating_add(amount);
        }
    }
    for row in rows(client, "collections", &mapping.collections).await? {
        let q = "collections";
        let stats = CollectionStats {
            holders: parse(col(&row, 1, q)?, "holders", q)?,
            supply: parse(col(&row, 2, q)?, "supply", q)?,
            transfers: parse(col(&row, 3, q)?, "transfers", q)?,
        };
        snap.collections.insert(address(col(&row, 0, q)?, q)?, stats);
    }
    if let Some(sql) = &mapping.reorgs {
        let q = "reorgs";
        let mut list = Vec::new();
        for row in rows(client, q, sql).await? {
            list.push(RecordedReorg {
                detected_at: parse(col(&row, 0, q)?, "a block number", q)?,
                ancestor: parse(col(&row, 1, q)?, "a block number", q)?,
                depth: parse(col(&row, 2, q)?, "a depth", q)?,
            });
        }
        snap.reorgs = Some(list);
    }
    if let Some(sql) = &mapping.affected_nfts {
        let q = "affected_nfts";
        let mut set = BTreeSet::new();
        for row in rows(client, q, sql).await? {
            set.insert((address(col(&row, 0, q)?, q)?, parse(col(&row, 1, q)?, "a token id", q)?));
        }
        snap.affected = Some(set);
    }
    Ok(snap)
}

/// The exit code of `reorg-sim index` when a reorg beyond finality halts
/// it, and the default an `--indexer-cmd` must end with in an `expect: halt`
/// scenario (`reorg-sim run --halt-exit-code` changes it).
pub const HALT_EXIT_CODE: i32 = 3;

/// How the indexer under test ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexerExit {
    /// The in-process reference indexer stopped on purpose to protect its
    /// data (its halt error, as text).
    Halted(String),
    /// The indexer process exited with this code.
    Code(i32),
    /// The indexer process was killed by this signal.
    Signal(i32),
    /// It ended with an error that is not a halt, or panicked.
    Crashed(String),
    /// It stopped without an error.
    Stopped,
}

impl std::fmt::Display for IndexerExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IndexerExit::Halted(reason) => write!(f, "{reason}"),
            IndexerExit::Code(code) => write!(f, "exited with code {code}"),
            IndexerExit::Signal(signal) => write!(f, "killed by signal {signal}"),
            IndexerExit::Crashed(how) => write!(f, "crashed: {how}"),
            IndexerExit::Stopped => write!(f, "stopped without an error"),
        }
    }
}

/// What the indexer should hold.
#[derive(Debug, Clone)]
pub struct Expected {
    /// Oracle state at the head the indexer must be at.
    pub state: CanonicalState,
    /// Reorgs the indexer had to follow (`None`: unknown, those checks are
    /// not evaluated).
    pub reorgs: Option<Vec<ReorgHistoryEntry>>,
    /// The indexer's head right before each reorg (for detection delay).
    pub heads_before_reorg: Vec<u64>,
    /// Milliseconds from each followed reorg to the moment its record was
    /// seen in the indexer's database (`None`: not seen while waiting).
    pub detection_ms: Vec<Option<f64>>,
    /// The indexer must have halted (reorg beyond finality).
    pub halt: bool,
    /// How the indexer ended (`None`: still running at the end).
    pub exit: Option<IndexerExit>,
    /// The exit code a halting indexer process must end with.
    pub halt_exit_code: i32,
}

impl Default for Expected {
    fn default() -> Self {
        Expected {
            state: CanonicalState::default(),
            reorgs: None,
            heads_before_reorg: Vec::new(),
            detection_ms: Vec::new(),
            halt: false,
            exit: None,
            halt_exit_code: HALT_EXIT_CODE,
        }
    }
}

fn list<T: std::fmt::Debug>(items: &[T]) -> String {
    let shown: Vec<String> = items.iter().take(3).map(|i| format!("{i:?}")).collect();
    if items.len() > 3 {
        format!("{} ... ({} in all)", shown.join(", "), items.len())
    } else {
        shown.join(", ")
    }
}

/// Compares the indexer's state with the oracle: one check per criterion.
pub fn compare(snap: &IndexerSnapshot, expected: &Expected) -> Vec<Check> {
    let state = &expected.state;
    let mut checks = Vec::new();
    let head = state.head;
    let head_text = |h: Option<(u64, B256)>| {
        h.map_or("nothing indexed".to_owned(), |(n, hash)| format!("block {n} ({hash})"))
    };
    checks.push(
        Check::from_bool(
            "indexer-head",
            "indexer head == canonical head",
            head_text(snap.head),
            snap.head == head && head.is_some(),
        )
        .with_detail(format!("oracle head: {}", head_text(head))),
    );
    // Duplicates: the same event stored twice.
    let mut seen = BTreeSet::new();
    let duplicates: Vec<&(B256, u64)> = snap.events.iter().filter(|e| !seen.insert(**e)).collect();
    checks.push(
        Check::from_bool(
            "no-duplicate-events",
            "duplicate events == 0",
            duplicates.len().to_string(),
            duplicates.is_empty(),
        )
        .with_detail(list(&duplicates)),
    );
    // Stale rows: blocks or events not on the canonical chain.
    let canonical: BTreeSet<B256> = state.blocks.values().copied().collect();
    let stale_blocks: Vec<u64> = snap
        .blocks
        .iter()
        .filter(|(n, h)| state.blocks.get(n) != Some(h))
        .map(|(n, _)| *n)
        .collect();
    let stale_events: Vec<&(B256, u64)> =
        snap.events.iter().filter(|(h, _)| !canonical.contains(h)).collect();
    checks.push(
        Check::from_bool(
            "no-stale-rows",
            "orphaned blocks + events == 0",
            format!("{} blocks, {} events", stale_blocks.len(), stale_events.len()),
            stale_blocks.is_empty() && stale_events.is_empty(),
        )
        .with_detail(format!(
            "blocks: [{}]; events: [{}]",
            list(&stale_blocks),
            list(&stale_events)
        )),
    );
    let stored: BTreeSet<(B256, u64)> = snap.events.iter().copied().collect();
    let missing: Vec<&(B256, u64)> = state.events.iter().filter(|e| !stored.contains(e)).collect();
    checks.push(
        Check::from_bool(
            "no-missing-events",
            "canonical events missing == 0",
            missing.len().to_string(),
            missing.is_empty(),
        )
        .with_detail(format!(
            "{} canonical events; missing: [{}]",
            state.events.len(),
            list(&missing)
        )),
    );
    // Balances.
    let want: BTreeMap<(Address, U256, Address), U256> =
        state.balances.iter().map(|(k, v)| (*k, *v)).collect();
    let keys: BTreeSet<_> = want.keys().chain(snap.balances.keys()).copied().collect();
    let wrong: Vec<String> = keys
        .iter()
        .filter(|k| want.get(k) != snap.balances.get(k))
        .map(|(c, id, o)| {
            format!(
                "{c}/{id}/{o}: indexer {} oracle {}",
                snap.balances.get(&(*c, *id, *o)).map_or("-".to_owned(), U256::to_string),
                want.get(&(*c, *id, *o)).map_or("-".to_owned(), U256::to_string)
            )
        })
        .collect();
    checks.push(
        Check::from_bool(
            "balances-match",
            "wrong balances == 0",
            wrong.len().to_string(),
            wrong.is_empty(),
        )
        .with_detail(format!("{} canonical balances; {}", want.len(), list(&wrong))),
    );
    let contracts: BTreeSet<Address> =
        state.collections.keys().chain(snap.collections.keys()).copied().collect();
    let wrong_stats: Vec<String> = contracts
        .iter()
        .filter(|c| state.collections.get(*c) != snap.collections.get(*c))
        .map(|c| {
            format!(
                "{c}: indexer {:?} oracle {:?}",
                snap.collections.get(c),
                state.collections.get(c)
            )
        })
        .collect();
    checks.push(
        Check::from_bool(
            "collection-stats-match",
            "wrong collection statistics == 0",
            wrong_stats.len().to_string(),
            wrong_stats.is_empty(),
        )
        .with_detail(list(&wrong_stats)),
    );
    checks.extend(reorg_checks(snap, expected));
    checks
}

/// The reorg criteria's ids and wording.
const REORGS_RECORDED: (&str, &str) =
    ("reorgs-recorded", "recorded reorgs (ancestor, depth) == injected reorgs");
const AFFECTED_LISTED: (&str, &str) =
    ("affected-nfts-listed", "affected NFTs listed == NFTs with events in orphaned blocks");
const DETECTION_DELAY: (&str, &str) = ("detection-delay", "reorg detected within 1 block");
const HALTED_SAFELY: (&str, &str) = (
    "halted-safely",
    "a reorg beyond finality halts the indexer (halted checkpoint, halt exit) with its last consistent state",
);

/// Why the injected reorgs are unknown (not the simulator).
const NO_HISTORY: &str = "the node has no reorg history (reorgsim_reorgHistory): verify against \
    the reorg-sim simulator (`reorg-sim simulate` or `run`)";
/// Why the recorded reorgs are unknown.
const NO_REORGS_QUERY: &str = "the mapping has no `reorgs` query: add `reorgs: SELECT \
    detected_at_block::text, common_ancestor::text, depth::text FROM ...` to --mapping";

fn reorg_checks(snap: &IndexerSnapshot, expected: &Expected) -> Vec<Check> {
    let mut checks = Vec::new();
    let history = expected.reorgs.as_ref();
    let (id, criterion) = REORGS_RECORDED;
    checks.push(match (history, &snap.reorgs) {
        (None, _) => Check::not_evaluated(id, criterion, NO_HISTORY),
        (Some(_), None) => Check::not_evaluated(id, criterion, NO_REORGS_QUERY),
        (Some(history), Some(recorded)) => {
            let want: Vec<(u64, u64)> =
                history.iter().map(|r| (r.common_ancestor, r.depth)).collect();
            let got: Vec<(u64, u64)> = recorded.iter().map(|r| (r.ancestor, r.depth)).collect();
            Check::from_bool(
                id,
                criterion,
                format!("{} recorded, {} injected", got.len(), want.len()),
                want == got,
            )
            .with_detail(format!("injected {want:?}; recorded {got:?}"))
        }
    });
    let (id, criterion) = AFFECTED_LISTED;
    checks.push(match (history, &snap.affected) {
        (None, _) => Check::not_evaluated(id, criterion, NO_HISTORY),
        (Some(_), None) => Check::not_evaluated(
            id,
            criterion,
            "the mapping has no `affected_nfts` query: add `affected_nfts: SELECT \
             contract_hex, token_id::text FROM ...` to --mapping",
        ),
        (Some(history), Some(affected)) => {
            let want: BTreeSet<TokenKey> =
                history.iter().flat_map(|r| r.affected.iter().copied()).collect();
            let missing = want.difference(affected).count();
            let extra = affected.difference(&want).count();
            Check::from_bool(
                id,
                criterion,
                format!("{} listed, {} expected", affected.len(), want.len()),
                missing == 0 && extra == 0,
            )
            .with_detail(format!("{missing} missing, {extra} not affected"))
        }
    });
    checks.push(detection_delay(snap, expected));
    if expected.halt {
        checks.push(halted_safely(snap, expected));
    }
    checks
}

/// `detection-delay`: blocks between the indexer's head when a reorg was
/// injected and the block at which it recorded the mismatch.
fn detection_delay(snap: &IndexerSnapshot, expected: &Expected) -> Check {
    let (id, criterion) = DETECTION_DELAY;
    let Some(history) = &expected.reorgs else {
        return Check::not_evaluated(id, criterion, NO_HISTORY);
    };
    if history.is_empty() {
        return Check::skipped(id, criterion, "no reorg was injected");
    }
    let Some(recorded) = &snap.reorgs else {
        return Check::not_evaluated(id, criterion, NO_REORGS_QUERY);
    };
    if expected.heads_before_reorg.len() != history.len() {
        return Check::not_evaluated(
            id,
            criterion,
            "the indexer's head before each reorg is unknown (`verify` reads the state \
             after the fact): measure it with `reorg-sim run`",
        );
    }
    if recorded.len() != history.len() {
        return Check::not_evaluated(
            id,
            criterion,
            format!(
                "needs one recorded reorg per injected reorg: {} recorded, {} injected \
                 (see reorgs-recorded)",
                recorded.len(),
                history.len()
            ),
        );
    }
    let delays: Vec<i128> = recorded
        .iter()
        .zip(&expected.heads_before_reorg)
        .map(|(r, h)| (i128::from(r.detected_at) - i128::from(*h)).max(0))
        .collect();
    let worst = delays.iter().copied().max().unwrap_or(0);
    let times: Vec<String> = expected
        .detection_ms
        .iter()
        .map(|ms| ms.map_or("-".to_owned(), |ms| format!("{ms:.0} ms")))
        .collect();
    let worst_ms = expected.detection_ms.iter().flatten().copied().reduce(f64::max);
    let observed = match worst_ms {
        Some(ms) => format!("{worst} block(s), {ms:.0} ms"),
        None => format!("{worst} block(s)"),
    };
    Check::from_bool(id, criterion, observed, (0..=1).contains(&worst)).with_detail(format!(
        "per reorg: blocks {delays:?}; time from the reorg to its record [{}]",
        times.join(", ")
    ))
}

/// `halted-safely`: the checkpoint says halted and the indexer ended the
/// documented way: the in-process reference indexer with its halt error, a
/// process with the halt exit code. A crash, a panic, a signal or another
/// exit code is a failure, whatever the checkpoint says.
fn halted_safely(snap: &IndexerSnapshot, expected: &Expected) -> Check {
    let (id, criterion) = HALTED_SAFELY;
    let code = expected.halt_exit_code;
    let exit_text = expected.exit.as_ref().map_or("still running".to_owned(), |e| e.to_string());
    let documented_exit = match &expected.exit {
        Some(IndexerExit::Halted(_)) => true,
        Some(IndexerExit::Code(c)) => *c == code,
        _ => false,
    };
    let reason = snap.halted.as_deref().filter(|r| !r.is_empty()).unwrap_or("no reason given");
    if expected.exit.is_some() && !documented_exit {
        return Check::fail(id, criterion, format!("indexer {exit_text}")).with_detail(format!(
            "a halt ends with exit code {code} and a halted checkpoint; the indexer {exit_text} \
             (checkpoint halted: {})",
            if snap.halted.is_some() { reason } else { "no" }
        ));
    }
    if !snap.reports_halt {
        return Check::not_evaluated(
            id,
            criterion,
            format!(
                "the mapping's checkpoint query has no `halted` column (its 3rd; 4th: the reason): \
                 add `halted::text, halt_reason` to `checkpoint` in --mapping (indexer {exit_text})"
            ),
        );
    }
    match (&snap.halted, &expected.exit) {
        (None, _) => Check::fail(id, criterion, "checkpoint not halted").with_detail(format!(
            "a reorg beyond finality must mark the checkpoint halted; the indexer {exit_text}"
        )),
        (Some(_), None) => Check::fail(id, criterion, "halted checkpoint, still running")
            .with_detail(format!(
                "{reason}; but the indexer did not exit (a halt ends with exit code {code})"
            )),
        (Some(_), Some(exit)) => Check::pass(id, criterion, "halted").with_detail(format!(
            "{reason}; {}",
            match exit {
                IndexerExit::Halted(_) =>
                    "the reference indexer stopped with its halt error".to_owned(),
                other => format!("the indexer {other}"),
            }
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_columns_accept_bytea_and_0x_forms() {
        assert_eq!(hex_bytes("\\xAB"), "0xab");
        assert_eq!(hex_bytes("0xab"), "0xab");
        assert_eq!(hex_bytes("ab"), "0xab");
    }
}
