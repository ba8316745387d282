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
    let err = |detail: String| VerifyError::Query { query, detail };
    let result = client.query(sql, &[]).await.map_err(|e| err(format!("{e} (SQL: {sql})")))?;
    result
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
        .collect()
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
    if let Some(row) = rows(client, "checkpoint", &mapping.checkpoint).await?.first() {
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

/// What the indexer should hold.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// Oracle state at the head the indexer must be at.
    pub state: CanonicalState,
    /// Reorgs the indexer had to follow (`None`: unknown, checks skipped).
    pub reorgs: Option<Vec<ReorgHistoryEntry>>,
    /// The indexer's head right before each reorg (for detection delay).
    pub heads_before_reorg: Vec<u64>,
    /// The indexer must have halted (reorg beyond finality).
    pub halt: bool,
    /// Whether the indexer process ended, and how (for `halt`).
    pub exit: Option<String>,
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

fn reorg_checks(snap: &IndexerSnapshot, expected: &Expected) -> Vec<Check> {
    let mut checks = Vec::new();
    let (Some(history), Some(recorded)) = (&expected.reorgs, &snap.reorgs) else {
        let why = if expected.reorgs.is_none() {
            "the node has no reorg history (not the simulator)"
        } else {
            "the mapping has no reorgs query"
        };
        checks.push(Check::skipped(
            "reorgs-recorded",
            "every reorg recorded with its common ancestor",
            why,
        ));
        return checks;
    };
    let want: Vec<(u64, u64)> = history.iter().map(|r| (r.common_ancestor, r.depth)).collect();
    let got: Vec<(u64, u64)> = recorded.iter().map(|r| (r.ancestor, r.depth)).collect();
    checks.push(
        Check::from_bool(
            "reorgs-recorded",
            "recorded reorgs (ancestor, depth) == injected reorgs",
            format!("{} recorded, {} injected", got.len(), want.len()),
            want == got,
        )
        .with_detail(format!("injected {want:?}; recorded {got:?}")),
    );
    if let Some(affected) = &snap.affected {
        let want: BTreeSet<TokenKey> =
            history.iter().flat_map(|r| r.affected.iter().copied()).collect();
        let missing = want.difference(affected).count();
        let extra = affected.difference(&want).count();
        checks.push(
            Check::from_bool(
                "affected-nfts-listed",
                "affected NFTs listed == NFTs with events in orphaned blocks",
                format!("{} listed, {} expected", affected.len(), want.len()),
                missing == 0 && extra == 0,
            )
            .with_detail(format!("{missing} missing, {extra} not affected")),
        );
    }
    if expected.heads_before_reorg.len() == recorded.len() && !recorded.is_empty() {
        let delays: Vec<i128> = recorded
            .iter()
            .zip(&expected.heads_before_reorg)
            .map(|(r, h)| (i128::from(r.detected_at) - i128::from(*h)).max(0))
            .collect();
        let worst = delays.iter().copied().max().unwrap_or(0);
        checks.push(
            Check::from_bool(
                "detection-delay",
                "reorg detected within 1 block",
                format!("{worst} block(s)"),
                (0..=1).contains(&worst),
            )
            .with_detail(format!("per reorg: {delays:?}")),
        );
    } else {
        checks.push(Check::skipped(
            "detection-delay",
            "reorg detected within 1 block",
            "needs one recorded reorg per injected reorg and the indexer head before each",
        ));
    }
    if expected.halt {
        let halted = snap.halted.is_some() || expected.exit.is_some();
        let how = snap
            .halted
            .clone()
            .or_else(|| expected.exit.clone())
            .unwrap_or_else(|| "still running".to_owned());
        checks.push(
            Check::from_bool(
                "halted-safely",
                "a reorg beyond finality halts the indexer with its last consistent state",
                if halted { "halted" } else { "did not halt" },
                halted,
            )
            .with_detail(how),
        );
    }
    checks
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
