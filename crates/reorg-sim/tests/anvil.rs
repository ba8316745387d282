//! The reference indexer follows a real node: anvil (npm
//! `@foundry-rs/anvil`) with an ERC-1155 contract deployed and minting,
//! reorganised with `anvil_reorg` at several depths; after each reorg the
//! indexer's database must equal a replay of anvil's canonical chain.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

use std::time::{Duration, Instant};

use alloy_primitives::{Address, Bytes, U256};
use alloy_sol_types::{SolCall, sol};
use reorg_sim::indexer::{IndexerConfig, ReferenceIndexer};
use reorg_sim::node::NodeClient;
use reorg_sim::runner::verify_against_node;
use reorg_sim::verify::Mapping;
use serde_json::{Value, json};
use shared_types::Verdict;
use testkit::{Anvil, TempDatabase};

sol! {
    function mint(address to, uint256 id, uint256 value);
    function mintBatch(address to, uint256[] ids, uint256[] values);
    function safeTransferFrom(address from, address to, uint256 id, uint256 value, bytes data);
    function burn(address from, uint256 id, uint256 value);
    function setURI(uint256 id, string value);
}

const BYTECODE: &str = include_str!("contracts/MarketplaceItems.bin");

struct Market {
    node: NodeClient,
    accounts: Vec<Address>,
    contract: Address,
}

/// Waits for the receipt of `hash` (anvil mines right after accepting it).
async fn receipt(node: &NodeClient, hash: &Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let receipt = node.call("eth_getTransactionReceipt", json!([hash])).await.unwrap();
        if !receipt.is_null() {
            return receipt;
        }
        assert!(Instant::now() < deadline, "no receipt for {hash}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

impl Market {
    async fn send(&self, from: Address, data: Vec<u8>) {
        let tx = json!({"from": from, "to": self.contract, "data": Bytes::from(data), "gas": "0x100000"});
        let hash = self.node.call("eth_sendTransaction", json!([tx])).await.unwrap();
        let receipt = receipt(&self.node, &hash).await;
        assert_eq!(receipt["status"], "0x1", "{receipt}");
    }

    fn tx(&self, from: Address, data: Vec<u8>) -> Value {
        json!({"from": from, "to": self.contract, "data": Bytes::from(data), "gas": "0x100000"})
    }
}

async fn deploy(node: NodeClient) -> Market {
    let accounts: Vec<Address> = node.call_as("eth_accounts", json!([])).await.unwrap();
    let data = format!("0x{}", BYTECODE.trim());
    let hash = node
        .call(
            "eth_sendTransaction",
            json!([{"from": accounts[0], "data": data, "gas": "0x300000"}]),
        )
        .await
        .unwrap();
    let receipt = receipt(&node, &hash).await;
    let contract: Address = serde_json::from_value(receipt["contractAddress"].clone()).unwrap();
    Market { node, accounts, contract }
}

async fn wait_for_head(indexer: &mut ReferenceIndexer, node: &NodeClient) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        indexer.sync_once().await.unwrap();
        let head = node.block_number().await.unwrap();
        let hash = node.header(head).await.unwrap().unwrap().hash;
        if indexer.checkpoint().await.unwrap().is_some_and(|c| c.number == head && c.hash == hash) {
            return;
        }
        assert!(Instant::now() < deadline, "the indexer did not reach anvil's head {head}");
    }
}

async fn assert_equal_to_replay(anvil: &Anvil, db: &TempDatabase) {
    let report = verify_against_node(anvil.url(), db.url(), &Mapping::reference("reorg_sim"), 0)
        .await
        .unwrap();
    let failed: Vec<_> = report
        .checks
        .iter()
        .filter(|c| matches!(c.verdict, Verdict::Fail | Verdict::Error))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reference_indexer_follows_anvil_through_real_reorgs() {
    let anvil = Anvil::start().await.unwrap_or_else(|e| panic!("{e}"));
    let db = TempDatabase::create().await.unwrap();
    let market = deploy(NodeClient::new(anvil.url())).await;
    let [a, b, c] = [market.accounts[0], market.accounts[1], market.accounts[2]];
    let one = U256::from(1);
    for id in 1..=6u64 {
        market
            .send(a, mintCall { to: b, id: U256::from(id), value: U256::from(3) }.abi_encode())
            .await;
    }
    market
        .send(
            a,
            mintBatchCall {
                to: c,
                ids: vec![U256::from(7), U256::from(8)],
                values: vec![one, one],
            }
            .abi_encode(),
        )
        .await;
    market
        .send(
            b,
            safeTransferFromCall {
                from: b,
                to: c,
                id: U256::from(2),
                value: one,
                data: Bytes::new(),
            }
            .abi_encode(),
        )
        .await;
    market.send(b, burnCall { from: b, id: U256::from(3), value: one }.abi_encode()).await;
    market
        .send(
            a,
            setURICall { id: U256::from(1), value: "ipfs://items/1.json".to_owned() }.abi_encode(),
        )
        .await;
    for id in 9..=20u64 {
        market.send(a, mintCall { to: a, id: U256::from(id), value: one }.abi_encode()).await;
    }

    let config = IndexerConfig { start_block: 0, batch_blocks: 10, ..IndexerConfig::default() };
    let mut indexer = ReferenceIndexer::connect(anvil.url(), db.url(), config).await.unwrap();
    wait_for_head(&mut indexer, &market.node).await;
    assert_equal_to_replay(&anvil, &db).await;

    for depth in [1u64, 4, 12] {
        // The replaced blocks carry different mints and a transfer; then the chain grows by one.
        let txs = json!([
            [
                market.tx(
                    a,
                    mintCall { to: c, id: U256::from(100 + depth), value: U256::from(depth) }
                        .abi_encode()
                ),
                0
            ],
            [
                market.tx(
                    b,
                    safeTransferFromCall {
                        from: b,
                        to: a,
                        id: U256::from(4),
                        value: one,
                        data: Bytes::new()
                    }
                    .abi_encode()
                ),
                depth - 1
            ],
        ]);
        market.node.call("anvil_reorg", json!([depth, txs])).await.unwrap();
        market.node.call("evm_mine", json!([])).await.unwrap();
        wait_for_head(&mut indexer, &market.node).await;
        assert_equal_to_replay(&anvil, &db).await;
    }
    let client = testkit::postgres::connect(db.url()).await.unwrap();
    let depths: Vec<i64> = client
        .query("SELECT depth FROM reorg_sim.reorgs ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get(0).unwrap())
        .collect();
    assert_eq!(depths, vec![1, 4, 12], "each anvil_reorg recorded with its depth");
    let affected: i64 = client
        .query_one("SELECT count(*) FROM reorg_sim.affected_nfts", &[])
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert!(affected > 0, "the rolled-back mints are listed as affected");
}
