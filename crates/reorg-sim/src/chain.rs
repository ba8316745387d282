//! The simulated chain: blocks whose hashes are keccak256 of the RLP-encoded
//! header, parent links, timestamps advancing by the block time, ERC-1155
//! logs from the seeded [`Workload`], and reorganisations that replace the
//! last `depth` blocks with a different branch (events dropped, moved to
//! other blocks, new ones). Every branch stays addressable by hash, as on a
//! real node that saw the fork.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use alloy_primitives::{Address, B64, B256, Bloom, Bytes, U256, b256, keccak256};
use alloy_rlp::RlpEncodable;
use serde::{Deserialize, Serialize};

use crate::erc1155::Erc1155Event;
use crate::oracle::{CanonicalBlock, CanonicalLog, ReorgHistoryEntry, TokenBalances};
use crate::workload::{EventCounts, OpKind, SimTx, Workload, WorkloadShape};

/// keccak256(rlp([])): the ommers hash of a block without uncles.
pub const EMPTY_OMMERS_HASH: B256 =
    b256!("1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347");

/// An Ethereum (London) block header; its hash is keccak256 of its RLP.
#[derive(Debug, Clone, PartialEq, Eq, RlpEncodable)]
pub struct Header {
    /// Parent block hash.
    pub parent_hash: B256,
    /// Ommers (uncles) hash.
    pub ommers_hash: B256,
    /// Block producer.
    pub beneficiary: Address,
    /// State root (a digest of the branch here: there is no state trie).
    pub state_root: B256,
    /// Digest of the transaction hashes (not a trie root).
    pub transactions_root: B256,
    /// Digest of the logs (not a trie root).
    pub receipts_root: B256,
    /// Bloom filter of the logs: real, clients may rely on it.
    pub logs_bloom: Bloom,
    /// Zero (proof of stake).
    pub difficulty: U256,
    /// Block number.
    pub number: u64,
    /// Gas limit.
    pub gas_limit: u64,
    /// Gas used.
    pub gas_used: u64,
    /// Seconds since the epoch.
    pub timestamp: u64,
    /// `reorg-sim:<branch>`: two branches never produce the same hash.
    pub extra_data: Bytes,
    /// Mix hash.
    pub mix_hash: B256,
    /// Nonce.
    pub nonce: B64,
    /// EIP-1559 base fee.
    pub base_fee_per_gas: u64,
}

impl Header {
    /// keccak256 of the RLP encoding.
    pub fn hash_slow(&self) -> B256 {
        keccak256(alloy_rlp::encode(self))
    }
}

/// A block with its transactions (one ERC-1155 log each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimBlock {
    /// The header.
    pub header: Header,
    /// keccak256(rlp(header)).
    pub hash: B256,
    /// Transactions in order; transaction `i` emits log `i`.
    pub txs: Vec<SimTx>,
}

impl SimBlock {
    /// Block number.
    pub fn number(&self) -> u64 {
        self.header.number
    }

    /// This block as the oracle sees it.
    pub fn to_canonical(&self) -> CanonicalBlock {
        CanonicalBlock {
            number: self.number(),
            hash: self.hash,
            parent_hash: self.header.parent_hash,
            logs: self
                .txs
                .iter()
                .enumerate()
                .map(|(i, tx)| {
                    let log = &tx.log;
                    CanonicalLog {
                        log_index: i as u64,
                        tx_hash: tx.hash,
                        address: tx.contract,
                        topics: log.topics().to_vec(),
                        data: log.data.clone(),
                    }
                })
                .collect(),
        }
    }
}

/// Chain parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ChainConfig {
    /// `eth_chainId` (137: Polygon PoS).
    pub chain_id: u64,
    /// Number of the first block served (an empty block).
    pub start_block: u64,
    /// Seconds between block timestamps.
    pub block_time_secs: u64,
    /// `finalized` lags the head by this many blocks (`safe` by half).
    pub finality_depth: u64,
    /// Seed of the workload and of reorg branches.
    pub seed: u64,
    /// Collections, holders, token ids.
    pub shape: WorkloadShape,
    /// Timestamp of the start block.
    pub genesis_timestamp: u64,
}

impl Default for ChainConfig {
    fn default() -> Self {
        ChainConfig {
            chain_id: 137,
            start_block: 1000,
            block_time_secs: 2,
            finality_depth: 64,
            seed: 7,
            shape: WorkloadShape::default(),
            genesis_timestamp: 1_750_000_000,
        }
    }
}

/// What replaces the last `depth` blocks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ReorgSpec {
    /// Blocks of the current branch replaced (the common ancestor is `head - depth`).
    pub depth: u64,
    /// Head of the new branch; default `head + longer_by`.
    pub new_head: Option<u64>,
    /// When `new_head` is not given: how much longer the new branch is (default 1).
    pub longer_by: Option<u64>,
    /// Fraction of the orphaned transactions that do not make it into the new branch (0..=1).
    #[cfg_attr(feature = "schema", schemars(range(min = 0.0, max = 1.0)))]
    pub drop: f64,
    /// A kept transaction lands up to this many blocks later than before.
    pub shift: u64,
    /// New events in the new branch.
    pub events: EventCounts,
}

/// Why the chain refused a change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The reorg would replace the start block or more.
    #[error("a reorg of depth {depth} at head {head} reaches below the start block {start}")]
    TooDeep {
        /// Requested depth.
        depth: u64,
        /// Current head.
        head: u64,
        /// First block.
        start: u64,
    },
    /// A depth of zero replaces nothing.
    #[error("a reorg needs a depth of at least 1")]
    ZeroDepth,
    /// The new head must not be at or below the common ancestor.
    #[error("new head {new_head} is not above the common ancestor {ancestor}")]
    NewHeadTooLow {
        /// Requested new head.
        new_head: u64,
        /// Common ancestor.
        ancestor: u64,
    },
}

/// The simulated chain with every branch it ever had.
#[derive(Debug, Clone)]
pub struct SimulatedChain {
    config: ChainConfig,
    blocks: HashMap<B256, Arc<SimBlock>>,
    canonical: Vec<B256>,
    tx_blocks: HashMap<B256, Vec<B256>>,
    workload: Workload,
    branch: u64,
    tip_balances: TokenBalances,
    reorgs: Vec<ReorgHistoryEntry>,
}

impl SimulatedChain {
    /// A chain holding only its (empty) start block.
    pub fn new(config: ChainConfig) -> Self {
        let workload = Workload::new(config.seed, config.shape);
        let mut chain = SimulatedChain {
            blocks: HashMap::new(),
            canonical: Vec::new(),
            tx_blocks: HashMap::new(),
            workload,
            branch: 0,
            tip_balances: TokenBalances::default(),
            reorgs: Vec::new(),
            config,
        };
        let pre_history = keccak256(format!("reorg-sim/pre-history/{}", chain.config.seed));
        let start = chain.build_block(pre_history, chain.config.start_block, Vec::new());
        chain.insert_canonical(start);
        chain
    }

    /// Chain parameters.
    pub fn config(&self) -> &ChainConfig {
        &self.config
    }

    /// The canonical head.
    pub fn head(&self) -> Arc<SimBlock> {
        let hash = self.canonical[self.canonical.len() - 1];
        Arc::clone(&self.blocks[&hash])
    }

    /// Number of the canonical head.
    pub fn head_number(&self) -> u64 {
        self.config.start_block + self.canonical.len() as u64 - 1
    }

    /// The canonical block at `number`.
    pub fn block_by_number(&self, number: u64) -> Option<Arc<SimBlock>> {
        let index = number.checked_sub(self.config.start_block)?;
        let hash = self.canonical.get(usize::try_from(index).ok()?)?;
        self.blocks.get(hash).cloned()
    }

    /// Any block ever produced (canonical or orphaned) by hash.
    pub fn block_by_hash(&self, hash: &B256) -> Option<Arc<SimBlock>> {
        self.blocks.get(hash).cloned()
    }

    /// Is `hash` on the canonical chain?
    pub fn is_canonical(&self, hash: &B256) -> bool {
        self.blocks
            .get(hash)
            .is_some_and(|b| self.block_by_number(b.number()).is_some_and(|c| c.hash == *hash))
    }

    /// The canonical block containing transaction `hash` and its index.
    pub fn find_tx(&self, hash: &B256) -> Option<(Arc<SimBlock>, usize)> {
        let candidates = self.tx_blocks.get(hash)?;
        candidates.iter().filter(|b| self.is_canonical(b)).find_map(|b| {
            let block = self.blocks.get(b)?;
            let index = block.txs.iter().position(|tx| tx.hash == *hash)?;
            Some((Arc::clone(block), index))
        })
    }

    /// The reorgs so far, oldest first.
    pub fn reorg_history(&self) -> &[ReorgHistoryEntry] {
        &self.reorgs
    }

    /// The chain from the start block to `head` (any branch), following
    /// parent links; `None` if `head` is unknown.
    pub fn chain_to(&self, head: &B256) -> Option<Vec<Arc<SimBlock>>> {
        let mut out = Vec::new();
        let mut cursor = self.blocks.get(head)?;
        loop {
            out.push(Arc::clone(cursor));
            if cursor.number() == self.config.start_block {
                break;
            }
            cursor = self.blocks.get(&cursor.header.parent_hash)?;
        }
        out.reverse();
        Some(out)
    }

    /// The canonical chain to `head` as the oracle replays it.
    pub fn canonical_blocks_to(&self, head: &B256) -> Vec<CanonicalBlock> {
        self.chain_to(head).unwrap_or_default().iter().map(|b| b.to_canonical()).collect()
    }

    /// Appends blocks up to `to` carrying `events`; returns the new blocks.
    pub fn extend(&mut self, to: u64, events: &EventCounts) -> Vec<Arc<SimBlock>> {
        let first = self.head_number() + 1;
        let plan = self.workload.schedule(first, to, events);
        let mut added = Vec::new();
        for number in first..=to {
            let mut txs = Vec::new();
            for kind in plan.get(&number).map(Vec::as_slice).unwrap_or(&[]) {
                txs.push(self.next_tx(*kind));
            }
            let block = self.build_block(self.head().hash, number, txs);
            added.push(self.insert_canonical(block));
        }
        added
    }

    fn next_tx(&mut self, kind: OpKind) -> SimTx {
        let tx = self.workload.make_tx(kind, &self.tip_balances);
        apply(&mut self.tip_balances, &tx);
        tx
    }

    /// Replaces the last `spec.depth` blocks with a new branch up to
    /// `spec.new_head`; returns the history entry.
    pub fn reorg(&mut self, spec: &ReorgSpec) -> Result<ReorgHistoryEntry, ChainError> {
        let head = self.head_number();
        let start = self.config.start_block;
        if spec.depth == 0 {
            return Err(ChainError::ZeroDepth);
        }
        if spec.depth > head - start {
            return Err(ChainError::TooDeep { depth: spec.depth, head, start });
        }
        let ancestor = head - spec.depth;
        let new_head = spec.new_head.unwrap_or(head + spec.longer_by.unwrap_or(1));
        if new_head <= ancestor {
            return Err(ChainError::NewHeadTooLow { new_head, ancestor });
        }
        self.branch += 1;
        let old_head = self.head().hash;
        let keep = (ancestor - start + 1) as usize;
        let orphaned: Vec<B256> = self.canonical.split_off(keep);
        let mut affected = std::collections::BTreeSet::new();
        let mut moved: BTreeMap<u64, Vec<SimTx>> = BTreeMap::new();
        for hash in &orphaned {
            let block = Arc::clone(&self.blocks[hash]);
            for tx in &block.txs {
                for id in tx.event.token_ids() {
                    affected.insert((tx.contract, id));
                }
                if self.workload.rng().chance(spec.drop) {
                    continue;
                }
                let shift = self.workload.rng().below(spec.shift.saturating_add(1));
                let target = (block.number() + shift).min(new_head);
                moved.entry(target).or_default().push(tx.clone());
            }
        }
        // Balances at the common ancestor decide which moved transactions are still valid.
        let mut balances = TokenBalances::default();
        for block in self.chain_to(&self.head().hash).unwrap_or_default() {
            for tx in &block.txs {
                apply(&mut balances, tx);
            }
        }
        self.tip_balances = balances;
        let plan = self.workload.schedule(ancestor + 1, new_head, &spec.events);
        for number in ancestor + 1..=new_head {
            let mut txs = Vec::new();
            for tx in moved.remove(&number).unwrap_or_default() {
                if apply(&mut self.tip_balances, &tx) {
                    txs.push(tx);
                }
            }
            for kind in plan.get(&number).map(Vec::as_slice).unwrap_or(&[]) {
                txs.push(self.next_tx(*kind));
            }
            let block = self.build_block(self.head().hash, number, txs);
            self.insert_canonical(block);
        }
        let entry = ReorgHistoryEntry {
            common_ancestor: ancestor,
            depth: spec.depth,
            old_head,
            new_head: self.head().hash,
            orphaned,
            affected,
        };
        self.reorgs.push(entry.clone());
        Ok(entry)
    }

    fn build_block(&self, parent_hash: B256, number: u64, txs: Vec<SimTx>) -> SimBlock {
        let mut bloom = Bloom::default();
        let mut logs_rlp = Vec::new();
        for tx in &txs {
            let log = &tx.log;
            bloom.accrue_raw_log(tx.contract, log.topics());
            logs_rlp.extend_from_slice(tx.contract.as_slice());
            for topic in log.topics() {
                logs_rlp.extend_from_slice(topic.as_slice());
            }
            logs_rlp.extend_from_slice(&log.data);
        }
        let tx_hashes: Vec<B256> = txs.iter().map(|tx| tx.hash).collect();
        let transactions_root = keccak256(alloy_rlp::encode(&tx_hashes));
        let receipts_root = keccak256(&logs_rlp);
        let offset = number.saturating_sub(self.config.start_block);
        let header = Header {
            parent_hash,
            ommers_hash: EMPTY_OMMERS_HASH,
            beneficiary: Address::repeat_byte(0x0b),
            state_root: keccak256([parent_hash.as_slice(), transactions_root.as_slice()].concat()),
            transactions_root,
            receipts_root,
            logs_bloom: bloom,
            difficulty: U256::ZERO,
            number,
            gas_limit: 30_000_000,
            gas_used: 52_000 * txs.len() as u64,
            timestamp: self.config.genesis_timestamp + offset * self.config.block_time_secs,
            extra_data: Bytes::from(format!("reorg-sim:{}", self.branch).into_bytes()),
            mix_hash: B256::ZERO,
            nonce: B64::ZERO,
            base_fee_per_gas: 30_000_000_000,
        };
        SimBlock { hash: header.hash_slow(), header, txs }
    }

    fn insert_canonical(&mut self, block: SimBlock) -> Arc<SimBlock> {
        let block = Arc::new(block);
        for tx in &block.txs {
            self.tx_blocks.entry(tx.hash).or_default().push(block.hash);
        }
        self.canonical.push(block.hash);
        self.blocks.insert(block.hash, Arc::clone(&block));
        block
    }
}

/// Applies `tx` to `balances`; false if the contract would have reverted it.
fn apply(balances: &mut TokenBalances, tx: &SimTx) -> bool {
    match &tx.event {
        Erc1155Event::Transfer { from, to, ids, values, .. } => {
            balances.apply_transfer(tx.contract, *from, *to, ids, values).is_ok()
        }
        Erc1155Event::Uri { .. } => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain() -> SimulatedChain {
        let mut chain = SimulatedChain::new(ChainConfig::default());
        chain.extend(1100, &EventCounts { mints: 10, transfers: 5, ..EventCounts::default() });
        chain
    }

    #[test]
    fn hashes_are_keccak_of_rlp_and_parents_link() {
        let chain = chain();
        for n in 1001..=1100 {
            let block = chain.block_by_number(n).unwrap();
            assert_eq!(block.hash, block.header.hash_slow());
            assert_eq!(block.header.parent_hash, chain.block_by_number(n - 1).unwrap().hash);
            assert_eq!(block.header.timestamp, 1_750_000_000 + (n - 1000) * 2);
        }
    }

    #[test]
    fn a_reorg_replaces_depth_blocks_and_keeps_the_old_branch_addressable() {
        let mut chain = chain();
        let old = chain.block_by_number(1060).unwrap();
        let spec = ReorgSpec {
            depth: 50,
            new_head: Some(1150),
            drop: 0.5,
            shift: 3,
            ..ReorgSpec::default()
        };
        let entry = chain.reorg(&spec).unwrap();
        assert_eq!((entry.common_ancestor, entry.orphaned.len()), (1050, 50));
        assert_eq!(chain.head_number(), 1150);
        assert_ne!(chain.block_by_number(1060).unwrap().hash, old.hash);
        assert!(chain.block_by_hash(&old.hash).is_some() && !chain.is_canonical(&old.hash));
        assert_eq!(chain.chain_to(&old.hash).unwrap().len(), 61);
        assert_eq!(
            chain.block_by_number(1051).unwrap().header.parent_hash,
            chain.block_by_number(1050).unwrap().hash
        );
    }

    #[test]
    fn reorgs_below_the_start_block_are_refused() {
        let mut chain = chain();
        let spec = ReorgSpec { depth: 101, ..ReorgSpec::default() };
        assert!(matches!(chain.reorg(&spec), Err(ChainError::TooDeep { .. })));
        assert_eq!(chain.reorg(&ReorgSpec::default()), Err(ChainError::ZeroDepth));
    }
}
