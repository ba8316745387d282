//! Does the indexer detect, roll back and re-index chain reorganisations of
//! 1..64 blocks, and stop safely beyond? `reorg-sim` answers it by checking
//! the indexer's database against a clean replay of the canonical chain.
//!
//! The parts, each usable alone:
//!
//! - [`simulator::ChainSimulator`]: an Ethereum JSON-RPC node on loopback
//!   (HTTP and WebSocket `eth_subscribe`) serving a [`chain::SimulatedChain`]:
//!   keccak256-of-RLP block hashes, parent links, ERC-1155
//!   `TransferSingle`/`TransferBatch`/`URI` logs from a seeded
//!   [`workload::Workload`], reorgs injected on demand, an optional lagging node.
//! - [`scenario::ReorgScenario`]: YAML or built-in experiments (launch plan,
//!   shallow, medium, deep, extreme, lagging RPC) and random reorg sequences.
//! - [`oracle::CanonicalOracle`]: balances, supply, per-collection statistics
//!   at any head by clean replay; the reorg history with the NFTs affected.
//! - [`indexer::ReferenceIndexer`]: a reorg-aware ERC-1155 indexer on
//!   PostgreSQL (also `reorg-sim index`), with a deliberately faulty
//!   `no_rollback` mode to prove the verifier catches what it should.
//! - [`verify`]: compares any indexer's database (through SQL in a
//!   [`verify::Mapping`]) with the oracle; [`runner::run_scenario`] plays a
//!   scenario end to end and returns the shared [`shared_types::Report`].
//!
//! # Criteria (checks of the report)
//!
//! | check | criterion |
//! |---|---|
//! | `indexer-head` | indexer head == canonical head (or the last consistent head when halted) |
//! | `no-duplicate-events` | no event stored twice |
//! | `no-stale-rows` | no block or event of an orphaned branch |
//! | `no-missing-events` | every canonical event stored |
//! | `balances-match` | balances per (contract, token, owner) equal the oracle's |
//! | `collection-stats-match` | holders, supply, transfers per collection equal the oracle's |
//! | `reorgs-recorded` | every reorg recorded with its common ancestor and depth, no false reorg |
//! | `affected-nfts-listed` | the NFTs with events in orphaned blocks, exactly |
//! | `detection-delay` | a reorg detected within 1 block |
//! | `halted-safely` | (reorgs beyond finality) the indexer halted with its data intact |
//!
//! # Example
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use reorg_sim::runner::{RunOptions, run_scenario};
//! use reorg_sim::scenario::ReorgScenario;
//!
//! let scenario = ReorgScenario::builtin("launch-plan").expect("built-in");
//! let report = run_scenario(&scenario, &RunOptions::new("postgres://postgres@127.0.0.1/postgres")).await?;
//! assert_eq!(report.exit_code().code(), 0);
//! # Ok(()) }
//! ```

pub mod bench;
pub mod chain;
pub mod erc1155;
pub mod indexer;
pub mod node;
pub mod oracle;
pub mod rpc;
pub mod runner;
pub mod scenario;
pub mod simulator;
pub mod verify;
pub mod workload;
