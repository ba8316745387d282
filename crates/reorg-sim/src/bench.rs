//! Throughput figures for `reorg-sim bench` (and `cargo xtask bench
//! reorg-sim`): the simulator's `eth_getBlockByNumber` and `eth_getLogs`
//! requests per second, the same calls against another node (anvil), the
//! reference indexer's catch-up in blocks/s and events/s, and the time to
//! roll back and re-index a 64-block reorg. Figures, not verdicts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy_sol_types::{SolCall, sol};
use serde_json::json;
use shared_types::Measurement;

use crate::chain::{ChainConfig, ReorgSpec};
use crate::indexer::{IndexerConfig, IndexerError, ReferenceIndexer, SyncOutcome, connect_db};
use crate::node::NodeClient;
use crate::simulator::ChainSimulator;
use crate::workload::EventCounts;

sol! {
    function mint(address to, uint256 id, uint256 value);
}

/// The ERC-1155 test contract (tests/contracts/MarketplaceItems.sol), deployed on anvil for the benchmark.
const MARKETPLACE_ITEMS_BIN: &str = include_str!("../tests/contracts/MarketplaceItems.bin");

/// Requests per second of `eth_getBlockByNumber` (full headers, random
/// blocks in `first..=last`) and `eth_getLogs` (100-block ranges) against
/// `url`, with `concurrency` clients sending `requests` each in all.
pub async fn rpc_throughput(
    label: &str,
    url: &str,
    first: u64,
    last: u64,
    requests: u64,
    concurrency: u64,
) -> Result<Vec<Measurement>, String> {
    let mut out = Vec::new();
    for method in ["eth_getBlockByNumber", "eth_getLogs"] {
        let client = Arc::new(NodeClient::new(url));
        let per_task = requests / concurrency.max(1);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..concurrency.max(1) {
            let client = Arc::clone(&client);
            tasks.push(tokio::spawn(async move {
                let mut logs = 0u64;
                for i in 0..per_task {
                    let span = last.saturating_sub(first).max(1);
                    let n = first + (t * 7919 + i * 104_729) % span;
                    let result = if method == "eth_getBlockByNumber" {
                        client.call(method, json!([format!("{n:#x}"), false])).await
                    } else {
                        let to = (n + 99).min(last);
                        client.call(method, json!([{"fromBlock": format!("{n:#x}"), "toBlock": format!("{to:#x}")}])).await
                    };
                    let value = result.map_err(|e| e.to_string())?;
                    logs += value.as_array().map_or(0, Vec::len) as u64;
                }
                Ok::<u64, String>(logs)
            }));
        }
        let mut logs = 0u64;
        for task in tasks {
            logs += task.await.map_err(|e| e.to_string())??;
        }
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        let rate = (per_task * concurrency.max(1)) as f64 / secs;
        out.push(Measurement::new(format!("{label}_{method}_rate"), rate, "req/s"));
        if method == "eth_getLogs" {
            out.push(Measurement::new(
                format!("{label}_eth_getLogs_logs_rate"),
                logs as f64 / secs,
                "logs/s",
            ));
        }
    }
    Ok(out)
}

/// The simulator with `blocks` busy blocks, its RPC throughput, then the
/// reference indexer's catch-up and a 64-block rollback on `database_url`.
pub async fn simulator_and_indexer(
    database_url: &str,
    blocks: u64,
    requests: u64,
) -> Result<Vec<Measurement>, String> {
    let config = ChainConfig::default();
    let start = config.start_block;
    let sim = ChainSimulator::new(config);
    let per_block = 2;
    let total = u32::try_from(blocks * per_block).unwrap_or(u32::MAX);
    sim.extend(
        start + blocks,
        &EventCounts {
            mints: total / 2,
            transfers: total / 3,
            burns: total / 24,
            batches: total / 12,
            uris: total / 24,
        },
    );
    let server = sim.serve(([127, 0, 0, 1], 0).into()).await.map_err(|e| e.to_string())?;
    let mut out =
        rpc_throughput("simulator", &server.http_url(), start, start + blocks, requests, 8).await?;

    let admin = connect_db(database_url).await.map_err(|e| e.to_string())?;
    admin
        .batch_execute("DROP SCHEMA IF EXISTS reorg_sim_bench CASCADE")
        .await
        .map_err(|e| e.to_string())?;
    let indexer_config = IndexerConfig {
        schema: "reorg_sim_bench".to_owned(),
        start_block: start,
        batch_blocks: 100,
        poll_interval: Duration::from_millis(10),
        ..IndexerConfig::default()
    };
    let mut indexer = ReferenceIndexer::connect(&server.http_url(), database_url, indexer_config)
        .await
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let (mut indexed_blocks, mut events) = (0u64, 0u64);
    loop {
        match indexer.sync_once().await.map_err(|e: IndexerError| e.to_string())? {
            SyncOutcome::Progress { blocks, events: e, .. } => {
                indexed_blocks += blocks;
                events += e;
            }
            SyncOutcome::Idle { .. } => break,
            SyncOutcome::Reorged { .. } => {
                return Err("unexpected reorg during catch-up".to_owned());
            }
        }
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    out.push(Measurement::new(
        "indexer_catch_up_blocks_rate",
        indexed_blocks as f64 / secs,
        "blocks/s",
    ));
    out.push(Measurement::new("indexer_catch_up_events_rate", events as f64 / secs, "events/s"));
    sim.reorg(&ReorgSpec {
        depth: 64,
        drop: 0.3,
        shift: 2,
        events: EventCounts { mints: 30, transfers: 20, ..EventCounts::default() },
        ..ReorgSpec::default()
    })
    .map_err(|e| e.to_string())?;
    let started = Instant::now();
    match indexer.sync_once().await.map_err(|e| e.to_string())? {
        SyncOutcome::Reorged { depth: 64, .. } => {}
        other => return Err(format!("expected a 64-block reorg, got {other:?}")),
    }
    out.push(Measurement::new(
        "indexer_rollback_64_blocks",
        started.elapsed().as_secs_f64() * 1000.0,
        "ms",
    ));
    admin
        .batch_execute("DROP SCHEMA IF EXISTS reorg_sim_bench CASCADE")
        .await
        .map_err(|e| e.to_string())?;
    server.stopped().await;
    Ok(out)
}

/// Starts anvil from `binary` on a free loopback port, deploys the ERC-1155
/// test contract, mints one token per block for `blocks` blocks and measures
/// the same JSON-RPC calls.
pub async fn anvil_throughput(
    binary: &std::path::Path,
    blocks: u64,
    requests: u64,
) -> Result<Vec<Measurement>, String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let mut child = tokio::process::Command::new(binary)
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--silent"])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            format!("cannot start anvil at {}: {e} (run scripts/install-deps.sh)", binary.display())
        })?;
    let url = format!("http://127.0.0.1:{port}/");
    let client = NodeClient::new(&url);
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.block_number().await.is_err() {
        if Instant::now() > deadline {
            let _ = child.kill().await;
            return Err("anvil did not answer within 20s".to_owned());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The same kind of chain: one ERC-1155 mint (one log) per block.
    let accounts: Vec<alloy_primitives::Address> =
        client.call_as("eth_accounts", json!([])).await.map_err(|e| e.to_string())?;
    let from = *accounts.first().ok_or("anvil has no accounts")?;
    let code = format!("0x{}", MARKETPLACE_ITEMS_BIN.trim());
    let deploy = client
        .call("eth_sendTransaction", json!([{"from": from, "data": code, "gas": "0x300000"}]))
        .await
        .map_err(|e| e.to_string())?;
    let mut contract = serde_json::Value::Null;
    for _ in 0..200 {
        let receipt = client
            .call("eth_getTransactionReceipt", json!([deploy]))
            .await
            .map_err(|e| e.to_string())?;
        if !receipt.is_null() {
            contract = receipt["contractAddress"].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for id in 1..blocks {
        let data = alloy_primitives::Bytes::from(
            mintCall {
                to: from,
                id: alloy_primitives::U256::from(id),
                value: alloy_primitives::U256::from(1),
            }
            .abi_encode(),
        );
        client
            .call(
                "eth_sendTransaction",
                json!([{"from": from, "to": contract, "data": data, "gas": "0x100000"}]),
            )
            .await
            .map_err(|e| e.to_string())?;
    }
    while client.block_number().await.map_err(|e| e.to_string())? < blocks {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let result = rpc_throughput("anvil", &url, 0, blocks, requests, 8).await;
    let _ = child.kill().await;
    result
}
