//! The simulator as a real HTTP JSON-RPC server on loopback: the methods an
//! indexer uses, filters and limits like real providers', reorg control, and
//! malformed requests answered with JSON-RPC errors (never a crash).

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

use alloy_primitives::B256;
use reorg_sim::chain::ChainConfig;
use reorg_sim::erc1155::event_signatures;
use reorg_sim::simulator::{ChainSimulator, SimulatorServer};
use reorg_sim::workload::EventCounts;
use serde_json::{Value, json};

async fn simulator() -> (ChainSimulator, SimulatorServer) {
    let sim = ChainSimulator::new(ChainConfig::default());
    sim.extend(1100, &EventCounts { mints: 30, transfers: 20, burns: 5, batches: 5, uris: 5 });
    let server = sim.serve(([127, 0, 0, 1], 0).into()).await.unwrap();
    (sim, server)
}

async fn post(url: &str, body: &str) -> Value {
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn call(url: &str, method: &str, params: Value) -> Value {
    post(url, &json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string())
        .await
}

#[tokio::test]
async fn chain_identity_and_block_tags_answer_like_a_polygon_node() {
    let (_sim, server) = simulator().await;
    let url = server.http_url();
    assert_eq!(call(&url, "eth_chainId", json!([])).await["result"], "0x89");
    assert_eq!(call(&url, "net_version", json!([])).await["result"], "137");
    assert_eq!(call(&url, "eth_blockNumber", json!([])).await["result"], "0x44c");
    for (tag, number) in [("latest", 1100), ("safe", 1068), ("finalized", 1036), ("earliest", 1000)]
    {
        let block = call(&url, "eth_getBlockByNumber", json!([tag, false])).await;
        assert_eq!(block["result"]["number"], format!("{number:#x}"), "{tag}");
    }
    let missing = call(&url, "eth_getBlockByNumber", json!(["0x44d", false])).await;
    assert_eq!(missing["result"], Value::Null);
}

#[tokio::test]
async fn blocks_by_hash_link_to_their_parents_and_receipts_match_logs() {
    let (_sim, server) = simulator().await;
    let url = server.http_url();
    let head = call(&url, "eth_getBlockByNumber", json!(["latest", true])).await["result"].clone();
    let parent =
        call(&url, "eth_getBlockByHash", json!([head["parentHash"], false])).await["result"]
            .clone();
    assert_eq!(parent["number"], "0x44b");
    let logs = call(&url, "eth_getLogs", json!([{"fromBlock": "0x3e8", "toBlock": "0x44c"}])).await
        ["result"]
        .clone();
    let logs = logs.as_array().unwrap();
    assert_eq!(logs.len(), 65, "every scheduled event is a log");
    let first = &logs[0];
    let receipt = call(&url, "eth_getTransactionReceipt", json!([first["transactionHash"]])).await
        ["result"]
        .clone();
    assert_eq!(receipt["status"], "0x1");
    assert_eq!(receipt["blockHash"], first["blockHash"]);
    assert_eq!(receipt["logs"][0]["topics"], first["topics"]);
    let block_receipts =
        call(&url, "eth_getBlockReceipts", json!([first["blockNumber"]])).await["result"].clone();
    assert!(
        block_receipts
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["transactionHash"] == first["transactionHash"])
    );
}

#[tokio::test]
async fn get_logs_filters_by_block_hash_address_and_topics_and_limits_the_range() {
    let (sim, server) = simulator().await;
    let url = server.http_url();
    let all = call(&url, "eth_getLogs", json!([{"fromBlock": "earliest", "toBlock": "latest"}]))
        .await["result"]
        .as_array()
        .unwrap()
        .clone();
    let contract = all[0]["address"].clone();
    let by_address = call(
        &url,
        "eth_getLogs",
        json!([{"fromBlock": "earliest", "address": contract}]),
    )
    .await["result"]
        .as_array()
        .unwrap()
        .clone();
    assert!(!by_address.is_empty() && by_address.len() < all.len());
    assert!(by_address.iter().all(|l| l["address"] == contract));
    let [single, _, uri] = event_signatures();
    let singles =
        call(&url, "eth_getLogs", json!([{"fromBlock": "earliest", "topics": [[single, uri]]}]))
            .await["result"]
            .as_array()
            .unwrap()
            .clone();
    let batches = all.len() - singles.len();
    assert_eq!(batches, 5, "the 5 TransferBatch logs are the only ones filtered out");
    let block_hash = all[0]["blockHash"].clone();
    let in_block = call(&url, "eth_getLogs", json!([{"blockHash": block_hash}])).await["result"]
        .as_array()
        .unwrap()
        .clone();
    assert!(in_block.iter().all(|l| l["blockHash"] == block_hash) && !in_block.is_empty());
    let unknown = call(&url, "eth_getLogs", json!([{"blockHash": B256::repeat_byte(7)}])).await;
    assert_eq!(unknown["error"]["code"], -32000);
    sim.extend(2200, &EventCounts::default());
    let too_wide =
        call(&url, "eth_getLogs", json!([{"fromBlock": "0x3e8", "toBlock": "0x7d0"}])).await;
    assert_eq!(too_wide["error"]["code"], -32005, "{too_wide}");
    let both =
        call(&url, "eth_getLogs", json!([{"blockHash": block_hash, "fromBlock": "0x1"}])).await;
    assert_eq!(both["error"]["code"], -32602);
}

#[tokio::test]
async fn orphaned_blocks_stay_addressable_after_a_reorg() {
    let (_sim, server) = simulator().await;
    let url = server.http_url();
    let old = call(&url, "eth_getBlockByNumber", json!(["0x44c", false])).await["result"].clone();
    let entry =
        call(&url, "reorgsim_reorg", json!([{"depth": 10, "new_head": 1105}])).await["result"]
            .clone();
    assert_eq!(entry["common_ancestor"], 1090);
    let new = call(&url, "eth_getBlockByNumber", json!(["0x44c", false])).await["result"].clone();
    assert_ne!(old["hash"], new["hash"]);
    let still =
        call(&url, "eth_getBlockByHash", json!([old["hash"], false])).await["result"].clone();
    assert_eq!(still["hash"], old["hash"]);
    let history = call(&url, "reorgsim_reorgHistory", json!([])).await["result"].clone();
    assert_eq!(history.as_array().unwrap().len(), 1);
    assert_eq!(call(&url, "eth_blockNumber", json!([])).await["result"], "0x451");
}

#[tokio::test]
async fn malformed_requests_get_json_rpc_errors_and_the_server_keeps_serving() {
    let (_sim, server) = simulator().await;
    let url = server.http_url();
    let cases: [(&str, i64); 9] = [
        ("{not json", -32700),
        ("[]", -32600),
        ("42", -32600),
        (r#"{"jsonrpc":"1.0","id":1,"method":"eth_chainId"}"#, -32600),
        (r#"{"jsonrpc":"2.0","id":1,"method":7}"#, -32600),
        (r#"{"jsonrpc":"2.0","id":1,"method":"eth_mineGold","params":[]}"#, -32601),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"eth_getBlockByNumber","params":["0xzz", false]}"#,
            -32602,
        ),
        (r#"{"jsonrpc":"2.0","id":1,"method":"eth_getBlockByNumber","params":{"n":1}}"#, -32602),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"eth_getLogs","params":[{"fromBlock":"0x44c","toBlock":"0x3e8"}]}"#,
            -32602,
        ),
    ];
    for (body, code) in cases {
        let answer = post(&url, body).await;
        assert_eq!(answer["error"]["code"], code, "{body} -> {answer}");
    }
    let batch = post(&url, r#"[{"jsonrpc":"2.0","id":"a","method":"eth_chainId"}, 5, {"jsonrpc":"2.0","id":"c","method":"nope"}]"#).await;
    assert_eq!(batch[0]["result"], "0x89");
    assert_eq!(batch[1]["error"]["code"], -32600);
    assert_eq!(
        (batch[2]["id"].clone(), batch[2]["error"]["code"].clone()),
        (json!("c"), json!(-32601))
    );
    assert_eq!(call(&url, "eth_chainId", json!([])).await["result"], "0x89");
}
