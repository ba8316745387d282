//! The seeded ERC-1155 workload: mints from the zero address, transfers,
//! burns, batch transfers and URI changes across several collections. The
//! same seed always gives the same transactions, so a scenario is a replayable
//! experiment.

use std::collections::BTreeMap;

use alloy_primitives::{Address, B256, LogData, U256, keccak256};
use serde::{Deserialize, Serialize};

use crate::erc1155::Erc1155Event;
use crate::oracle::TokenBalances;

/// A small deterministic generator (SplitMix64): no dependency, same stream
/// on every platform.
#[derive(Debug, Clone)]
pub struct SeededRng(u64);

impl SeededRng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        SeededRng(seed ^ 0x5eed_0fc0_ffee)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo).saturating_add(1))
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }
}

/// How many events of each kind to spread over a range of blocks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EventCounts {
    /// `TransferSingle` from the zero address.
    pub mints: u32,
    /// `TransferSingle` between holders.
    pub transfers: u32,
    /// `TransferSingle` to the zero address.
    pub burns: u32,
    /// `TransferBatch` (a batch mint, or a batch transfer when possible).
    pub batches: u32,
    /// `URI` changes.
    pub uris: u32,
}

impl EventCounts {
    /// Total number of events.
    pub fn total(&self) -> u64 {
        [self.mints, self.transfers, self.burns, self.batches, self.uris]
            .iter()
            .map(|&n| u64::from(n))
            .sum()
    }
}

/// The shape of the marketplace the workload trades in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct WorkloadShape {
    /// Number of ERC-1155 contracts.
    pub collections: u32,
    /// Number of accounts that hold and trade.
    pub holders: u32,
    /// Token ids per collection (1..=n).
    pub tokens_per_collection: u32,
}

impl Default for WorkloadShape {
    fn default() -> Self {
        WorkloadShape { collections: 3, holders: 8, tokens_per_collection: 20 }
    }
}

/// A kind of operation scheduled into a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// Mint.
    Mint,
    /// Transfer.
    Transfer,
    /// Burn.
    Burn,
    /// Batch.
    Batch,
    /// URI change.
    Uri,
}

/// A transaction of the workload: one ERC-1155 event of one collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimTx {
    /// Stable across reorgs: a transaction moved to another block keeps it.
    pub hash: B256,
    /// Sender.
    pub from: Address,
    /// The collection called.
    pub contract: Address,
    /// What it emits.
    pub event: Erc1155Event,
    /// `event` ABI-encoded (kept: the simulator serves it many times).
    pub log: LogData,
}

/// The workload generator.
#[derive(Debug, Clone)]
pub struct Workload {
    rng: SeededRng,
    seed: u64,
    shape: WorkloadShape,
    next_tx: u64,
    collections: Vec<Address>,
    holders: Vec<Address>,
}

fn derived_address(label: &str, seed: u64, i: u32) -> Address {
    let digest = keccak256(format!("reorg-sim/{label}/{seed}/{i}"));
    Address::from_slice(&digest[12..])
}

impl Workload {
    /// A workload for `shape` from `seed`.
    pub fn new(seed: u64, shape: WorkloadShape) -> Self {
        let shape = WorkloadShape {
            collections: shape.collections.max(1),
            holders: shape.holders.max(2),
            tokens_per_collection: shape.tokens_per_collection.max(1),
        };
        Workload {
            rng: SeededRng::new(seed),
            seed,
            shape,
            next_tx: 0,
            collections: (0..shape.collections)
                .map(|i| derived_address("collection", seed, i))
                .collect(),
            holders: (0..shape.holders).map(|i| derived_address("holder", seed, i)).collect(),
        }
    }

    /// The collection contracts.
    pub fn collections(&self) -> &[Address] {
        &self.collections
    }

    /// The random stream (shared with reorg planning so one seed drives all).
    pub fn rng(&mut self) -> &mut SeededRng {
        &mut self.rng
    }

    /// Spreads `counts` over the blocks `first..=last`: block number -> kinds.
    pub fn schedule(
        &mut self,
        first: u64,
        last: u64,
        counts: &EventCounts,
    ) -> BTreeMap<u64, Vec<OpKind>> {
        let mut plan: BTreeMap<u64, Vec<OpKind>> = BTreeMap::new();
        if last < first {
            return plan;
        }
        let kinds = [
            (OpKind::Mint, counts.mints),
            (OpKind::Transfer, counts.transfers),
            (OpKind::Burn, counts.burns),
            (OpKind::Batch, counts.batches),
            (OpKind::Uri, counts.uris),
        ];
        for (kind, n) in kinds {
            for _ in 0..n {
                let block = self.rng.between(first, last);
                plan.entry(block).or_default().push(kind);
            }
        }
        // Mints first within a block so that transfers find something to move.
        for kinds in plan.values_mut() {
            kinds.sort_by_key(|k| !matches!(k, OpKind::Mint));
        }
        plan
    }

    fn tx_hash(&mut self) -> B256 {
        self.next_tx += 1;
        keccak256(format!("reorg-sim/tx/{}/{}", self.seed, self.next_tx))
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.rng.below(items.len() as u64) as usize]
    }

    /// A transaction of `kind` valid against `balances` (transfers and burns
    /// move only what is held; without holdings they become mints).
    pub fn make_tx(&mut self, kind: OpKind, balances: &TokenBalances) -> SimTx {
        let held: Vec<((Address, U256, Address), U256)> =
            balances.iter().map(|(k, v)| (*k, *v)).collect();
        let kind = match kind {
            OpKind::Transfer | OpKind::Burn if held.is_empty() => OpKind::Mint,
            other => other,
        };
        let (contract, from, event) = match kind {
            OpKind::Mint => {
                let contract = self.pick(&self.collections.clone());
                let to = self.pick(&self.holders.clone());
                let id =
                    U256::from(self.rng.between(1, u64::from(self.shape.tokens_per_collection)));
                let value = U256::from(self.rng.between(1, 3));
                let ids = vec![id];
                (
                    contract,
                    to,
                    Erc1155Event::Transfer {
                        operator: to,
                        from: Address::ZERO,
                        to,
                        ids,
                        values: vec![value],
                        batch: false,
                    },
                )
            }
            OpKind::Transfer | OpKind::Burn => {
                let ((contract, id, owner), amount) =
                    held[self.rng.below(held.len() as u64) as usize];
                let value = U256::from(self.rng.between(1, amount.saturating_to::<u64>().max(1)));
                let to = if kind == OpKind::Burn {
                    Address::ZERO
                } else {
                    let others: Vec<Address> =
                        self.holders.iter().copied().filter(|h| *h != owner).collect();
                    self.pick(&others)
                };
                (
                    contract,
                    owner,
                    Erc1155Event::Transfer {
                        operator: owner,
                        from: owner,
                        to,
                        ids: vec![id],
                        values: vec![value],
                        batch: false,
                    },
                )
            }
            OpKind::Batch => {
                let contract = self.pick(&self.collections.clone());
                let to = self.pick(&self.holders.clone());
                let n = self.rng.between(2, 3);
                let mut ids: Vec<U256> = Vec::new();
                while (ids.len() as u64) < n.min(u64::from(self.shape.tokens_per_collection)) {
                    let id = U256::from(
                        self.rng.between(1, u64::from(self.shape.tokens_per_collection)),
                    );
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
                let values = ids.iter().map(|_| U256::from(1)).collect();
                (
                    contract,
                    to,
                    Erc1155Event::Transfer {
                        operator: to,
                        from: Address::ZERO,
                        to,
                        ids,
                        values,
                        batch: true,
                    },
                )
            }
            OpKind::Uri => {
                let contract = self.pick(&self.collections.clone());
                let id =
                    U256::from(self.rng.between(1, u64::from(self.shape.tokens_per_collection)));
                let version = self.rng.below(1000);
                let value = format!("ipfs://bafyreorgsim{}/{id}.json?v={version}", self.seed);
                (contract, contract, Erc1155Event::Uri { id, value })
            }
        };
        let log = event.encode();
        SimTx { hash: self.tx_hash(), from, contract, event, log }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_transactions() {
        let make = || {
            let mut w = Workload::new(42, WorkloadShape::default());
            let mut balances = TokenBalances::default();
            let mut out = Vec::new();
            for kind in [OpKind::Mint, OpKind::Transfer, OpKind::Burn, OpKind::Batch, OpKind::Uri] {
                let tx = w.make_tx(kind, &balances);
                if let Erc1155Event::Transfer { from, to, ids, values, .. } = &tx.event {
                    balances.apply_transfer(tx.contract, *from, *to, ids, values).unwrap();
                }
                out.push(tx);
            }
            out
        };
        assert_eq!(make(), make());
    }

    #[test]
    fn schedule_places_every_event_in_range() {
        let mut w = Workload::new(1, WorkloadShape::default());
        let counts = EventCounts { mints: 10, transfers: 4, ..EventCounts::default() };
        let plan = w.schedule(1000, 1100, &counts);
        assert_eq!(plan.values().map(Vec::len).sum::<usize>(), 14);
        assert!(plan.keys().all(|b| (1000..=1100).contains(b)));
    }
}
