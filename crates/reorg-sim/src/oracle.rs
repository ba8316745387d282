//! The oracle: the canonical state at any head, computed by a clean replay of
//! the canonical chain's logs, independent of any indexer.
//!
//! [`CanonicalOracle::replay`] takes the canonical blocks (from the simulator
//! or fetched from any node over JSON-RPC) and returns a [`CanonicalState`]:
//! balances per (contract, token id, owner), supply per token, per-collection
//! statistics and the set of events. The reorg history with the NFTs each
//! reorg affected comes from the simulator ([`ReorgHistoryEntry`]).

use std::collections::{BTreeMap, BTreeSet};

use alloy_primitives::{Address, B256, Bytes, U256};
use serde::{Deserialize, Serialize};

use crate::erc1155::Erc1155Event;

/// One log of a canonical block, as a node returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalLog {
    /// Position of the log in its block.
    pub log_index: u64,
    /// Transaction that emitted it.
    pub tx_hash: B256,
    /// The emitting contract (the collection).
    pub address: Address,
    /// Topics.
    pub topics: Vec<B256>,
    /// ABI data.
    pub data: Bytes,
}

/// A block of the canonical chain with its logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalBlock {
    /// Block number.
    pub number: u64,
    /// Block hash.
    pub hash: B256,
    /// Parent hash.
    pub parent_hash: B256,
    /// Logs in log-index order.
    pub logs: Vec<CanonicalLog>,
}

/// A token of a collection: (contract, token id).
pub type TokenKey = (Address, U256);

/// Balances per (contract, token id, owner); only positive balances of
/// non-zero owners are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenBalances {
    balances: BTreeMap<(Address, U256, Address), U256>,
}

/// A transfer that would take more than an owner holds (the contract would
/// have reverted it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{owner} holds {held} of token {id} of {contract}, cannot move {wanted}")]
pub struct InsufficientBalance {
    /// Collection.
    pub contract: Address,
    /// Token id.
    pub id: U256,
    /// Owner.
    pub owner: Address,
    /// What the owner holds.
    pub held: U256,
    /// What the transfer moves.
    pub wanted: U256,
}

impl TokenBalances {
    /// The balance of `owner` (zero when absent).
    pub fn balance(&self, contract: Address, id: U256, owner: Address) -> U256 {
        self.balances.get(&(contract, id, owner)).copied().unwrap_or(U256::ZERO)
    }

    /// Applies a transfer atomically: either every (id, value) moves or none.
    pub fn apply_transfer(
        &mut self,
        contract: Address,
        from: Address,
        to: Address,
        ids: &[U256],
        values: &[U256],
    ) -> Result<(), Box<InsufficientBalance>> {
        if from != Address::ZERO {
            let mut needed: BTreeMap<U256, U256> = BTreeMap::new();
            for (id, value) in ids.iter().zip(values) {
                let slot = needed.entry(*id).or_default();
                *slot = slot.saturating_add(*value);
            }
            for (id, wanted) in needed {
                let held = self.balance(contract, id, from);
                if held < wanted {
                    return Err(Box::new(InsufficientBalance {
                        contract,
                        id,
                        owner: from,
                        held,
                        wanted,
                    }));
                }
            }
        }
        for (id, value) in ids.iter().zip(values) {
            if from != Address::ZERO {
                let held = self.balance(contract, *id, from);
                self.set(contract, *id, from, held - *value);
            }
            if to != Address::ZERO {
                let held = self.balance(contract, *id, to);
                self.set(contract, *id, to, held.saturating_add(*value));
            }
        }
        Ok(())
    }

    fn set(&mut self, contract: Address, id: U256, owner: Address, amount: U256) {
        if amount.is_zero() {
            self.balances.remove(&(contract, id, owner));
        } else {
            self.balances.insert((contract, id, owner), amount);
        }
    }

    /// Every positive balance: ((contract, id, owner), amount), in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&(Address, U256, Address), &U256)> {
        self.balances.iter()
    }

    /// Number of positive balances.
    pub fn len(&self) -> usize {
        self.balances.len()
    }

    /// No positive balance at all.
    pub fn is_empty(&self) -> bool {
        self.balances.is_empty()
    }
}

/// Statistics of one collection (contract).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CollectionStats {
    /// Distinct owners holding a positive balance of any of its tokens.
    pub holders: u64,
    /// Sum of all balances (minted minus burned).
    pub supply: U256,
    /// `TransferSingle` + `TransferBatch` events (mints and burns included).
    pub transfers: u64,
}

/// The canonical state at one head, by clean replay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CanonicalState {
    /// The head replayed up to: (number, hash).
    pub head: Option<(u64, B256)>,
    /// Canonical block hash per number.
    pub blocks: BTreeMap<u64, B256>,
    /// Every ERC-1155 event as (block hash, log index).
    pub events: BTreeSet<(B256, u64)>,
    /// Balances.
    pub balances: TokenBalances,
    /// Supply per token (minted minus burned).
    pub supply: BTreeMap<TokenKey, U256>,
    /// Statistics per collection.
    pub collections: BTreeMap<Address, CollectionStats>,
    /// Last metadata URI per token.
    pub uris: BTreeMap<TokenKey, String>,
    /// Logs the replay could not apply (a transfer beyond a balance): a node
    /// bug or a non-standard contract. Always empty for the simulator.
    pub anomalies: Vec<String>,
}

/// Computes canonical state by replaying canonical blocks from the start.
#[derive(Debug, Clone, Copy, Default)]
pub struct CanonicalOracle;

impl CanonicalOracle {
    /// Replays `blocks` (in chain order, start block first) and returns the
    /// state at the last one. Logs that are not ERC-1155 events are ignored.
    pub fn replay<'a>(blocks: impl IntoIterator<Item = &'a CanonicalBlock>) -> CanonicalState {
        let mut state = CanonicalState::default();
        let mut transfers: BTreeMap<Address, u64> = BTreeMap::new();
        for block in blocks {
            state.head = Some((block.number, block.hash));
            state.blocks.insert(block.number, block.hash);
            for log in &block.logs {
                let Some(event) = Erc1155Event::decode(&log.topics, &log.data) else {
                    continue;
                };
                state.events.insert((block.hash, log.log_index));
                match event {
                    Erc1155Event::Transfer { from, to, ids, values, .. } => {
                        *transfers.entry(log.address).or_default() += 1;
                        if let Err(e) =
                            state.balances.apply_transfer(log.address, from, to, &ids, &values)
                        {
                            state
                                .anomalies
                                .push(format!("block {} log {}: {e}", block.number, log.log_index));
                            continue;
                        }
                        for (id, value) in ids.iter().zip(&values) {
                            let supply = state.supply.entry((log.address, *id)).or_default();
                            if from == Address::ZERO {
                                *supply = supply.saturating_add(*value);
                            }
                            if to == Address::ZERO {
                                *supply = supply.saturating_sub(*value);
                            }
                        }
                    }
                    Erc1155Event::Uri { id, value } => {
                        state.uris.insert((log.address, id), value);
                    }
                }
            }
        }
        state.supply.retain(|_, s| !s.is_zero());
        let mut holders: BTreeMap<Address, BTreeSet<Address>> = BTreeMap::new();
        let mut supply: BTreeMap<Address, U256> = BTreeMap::new();
        for ((contract, _, owner), amount) in state.balances.iter() {
            holders.entry(*contract).or_default().insert(*owner);
            let s = supply.entry(*contract).or_default();
            *s = s.saturating_add(*amount);
        }
        for (contract, count) in transfers {
            state.collections.insert(
                contract,
                CollectionStats {
                    holders: holders.get(&contract).map_or(0, |h| h.len() as u64),
                    supply: supply.get(&contract).copied().unwrap_or_default(),
                    transfers: count,
                },
            );
        }
        state
    }
}

/// One reorganisation of the simulated chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReorgHistoryEntry {
    /// Last block both branches share.
    pub common_ancestor: u64,
    /// Blocks of the old branch that were replaced.
    pub depth: u64,
    /// Head before the reorg.
    pub old_head: B256,
    /// Head right after the reorg.
    pub new_head: B256,
    /// Hashes of the orphaned blocks, lowest first.
    pub orphaned: Vec<B256>,
    /// NFTs (contract, token id) with events in the orphaned blocks: what an
    /// indexer must tell its consumers to refresh.
    pub affected: BTreeSet<TokenKey>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfers_beyond_a_balance_are_refused_whole() {
        let (c, a, b) = (Address::repeat_byte(1), Address::repeat_byte(2), Address::repeat_byte(3));
        let mut balances = TokenBalances::default();
        let one = U256::from(1);
        let two = U256::from(2);
        balances.apply_transfer(c, Address::ZERO, a, &[one], &[two]).unwrap();
        let err = balances.apply_transfer(c, a, b, &[one, one], &[two, one]);
        assert!(err.is_err(), "3 of token 1 asked, 2 held");
        assert_eq!(balances.balance(c, one, a), two, "nothing moved");
        balances.apply_transfer(c, a, Address::ZERO, &[one], &[two]).unwrap();
        assert!(balances.is_empty(), "zero balances are dropped");
    }
}
