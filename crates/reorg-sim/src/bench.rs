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

/// Depth of the reorg the benchmark rolls back and re-indexes.
pub const ROLLBACK_DEPTH: u64 = 64;

/// The fewest `--blocks` the benchmark accepts: the 64-block reorg must stay
/// above the simulator's start block.
pub const MIN_BLOCKS: u64 = ROLLBACK_DEPTH;

/// Clients `rpc_throughput` runs side by side.
const CONCURRENCY: u64 = 8;

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
    // Every request has NodeClient's 10 s timeout; this bounds the whole run
    // too, so a node that answers slowly cannot stretch it indefinitely.
    let budget = Duration::from_secs(60)
        + Duration::from_millis(50).saturating_mul(u32::try_from(requests).unwrap_or(u32::MAX));
    tokio::time::timeout(budget, rpc_rates(label, url, first, last, requests, concurrency))
        .await
        .map_err(|_| {
            format!(
                "{label}: {requests} eth_getBlockByNumber and eth_getLogs requests to {url} \
                 did not finish within {}s",
                budget.as_secs()
            )
        })?
}

async fn rpc_rates(
    label: &str,
    url: &str,
    first: u64,
    last: u64,
    requests: u64,
    concurrency: u64,
) -> Result<Vec<Measurement>, String> {
    let mut out = Vec::new();
    let concurrency = concurrency.clamp(1, requests.max(1));
    for method in ["eth_getBlockByNumber", "eth_getLogs"] {
        let client = Arc::new(NodeClient::new(url));
        let per_task = requests / concurrency;
        let started = Instant::now();
        // A JoinSet aborts the clients still running if this future is dropped (timeout).
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..concurrency {
            let client = Arc::clone(&client);
            tasks.spawn(async move {
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
                    let value = result.map_err(|e| format!("{method} block {n}: {e}"))?;
                    logs += value.as_array().map_or(0, Vec::len) as u64;
                }
                Ok::<u64, String>(logs)
            });
        }
        let mut logs = 0u64;
        while let Some(task) = tasks.join_next().await {
            logs += task.map_err(|e| e.to_string())??;
        }
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        let rate = (per_task * concurrency) as f64 / secs;
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
    check_blocks(blocks)?;
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
    let mut out = rpc_throughput(
        "simulator",
        &server.http_url(),
        start,
        start + blocks,
        requests,
        CONCURRENCY,
    )
    .await?;

    let mut admin = connect_db(database_url).await.map_err(|e| e.to_string())?;
    reset_bench_schema(&mut admin, database_url).await?;
    let indexer_config = IndexerConfig {
        schema: BENCH_SCHEMA.to_owned(),
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
        depth: ROLLBACK_DEPTH,
        drop: 0.3,
        shift: 2,
        events: EventCounts { mints: 30, transfers: 20, ..EventCounts::default() },
        ..ReorgSpec::default()
    })
    .map_err(|e| e.to_string())?;
    let started = Instant::now();
    match indexer.sync_once().await.map_err(|e| e.to_string())? {
        SyncOutcome::Reorged { depth: ROLLBACK_DEPTH, .. } => {}
        other => return Err(format!("expected a {ROLLBACK_DEPTH}-block reorg, got {other:?}")),
    }
    out.push(Measurement::new(
        "indexer_rollback_64_blocks",
        started.elapsed().as_secs_f64() * 1000.0,
        "ms",
    ));
    // Close the indexer's connections first: the server's graceful shutdown
    // waits for open connections.
    drop(indexer);
    reset_bench_schema(&mut admin, database_url).await?;
    if tokio::time::timeout(Duration::from_secs(5), server.stopped()).await.is_err() {
        tracing::warn!("the bench simulator did not stop within 5s; leaving it behind");
    }
    Ok(out)
}

/// `Err` with the minimum if `blocks` is too few for the benchmark.
pub fn check_blocks(blocks: u64) -> Result<(), String> {
    if blocks < MIN_BLOCKS {
        return Err(format!(
            "--blocks {blocks} is too few: the benchmark rolls back a {ROLLBACK_DEPTH}-block reorg, \
             use --blocks {MIN_BLOCKS} or more"
        ));
    }
    Ok(())
}

/// Starts anvil from `binary` on a free loopback port, deploys the ERC-1155
/// test contract, mints one token per block for `blocks` blocks and measures
/// the same JSON-RPC calls.
///
/// anvil runs with `--no-mining` and the benchmark mines each block itself
/// (`evm_mine`): with automining, anvil answers `eth_sendTransaction` before
/// the block is mined and may put several pending transactions in one block,
/// so the chain would end up shorter than `blocks`.
pub async fn anvil_throughput(
    binary: &std::path::Path,
    blocks: u64,
    requests: u64,
) -> Result<Vec<Measurement>, String> {
    check_blocks(blocks)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    // kill_on_drop: anvil goes away on every return path, errors and timeouts included.
    let mut child = tokio::process::Command::new(binary)
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--silent", "--no-mining"])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            format!("cannot start anvil at {}: {e} (run scripts/install-deps.sh)", binary.display())
        })?;
    let url = format!("http://127.0.0.1:{port}/");
    let client = NodeClient::new(&url);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), client.block_number()).await
        {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("anvil at {} exited at start: {status}", binary.display()));
        }
        if Instant::now() > deadline {
            return Err(format!("anvil did not answer on {url} within 20s"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every request has a 10 s timeout; this bounds the whole setup.
    let budget = Duration::from_secs(30)
        + Duration::from_millis(25).saturating_mul(u32::try_from(blocks).unwrap_or(u32::MAX));
    tokio::time::timeout(budget, build_anvil_chain(&client, blocks)).await.map_err(|_| {
        format!(
            "anvil: deploying the contract and mining {blocks} blocks took over {}s",
            budget.as_secs()
        )
    })??;
    let result = rpc_throughput("anvil", &url, 0, blocks, requests, CONCURRENCY).await;
    let _ = child.kill().await;
    result
}

/// The same kind of chain as the simulator's: the ERC-1155 contract in
/// block 1, then one mint (one log) in each block up to `blocks`.
async fn build_anvil_chain(client: &NodeClient, blocks: u64) -> Result<(), String> {
    let accounts: Vec<alloy_primitives::Address> =
        client.call_as("eth_accounts", json!([])).await.map_err(|e| format!("anvil: {e}"))?;
    let from = *accounts.first().ok_or("anvil has no accounts")?;
    let code = format!("0x{}", MARKETPLACE_ITEMS_BIN.trim());
    let receipt = transact_and_mine(
        client,
        "deploying the ERC-1155 contract",
        json!({"from": from, "data": code, "gas": "0x300000"}),
    )
    .await?;
    let contract = receipt["contractAddress"].clone();
    if contract.is_null() {
        return Err(format!("anvil: the contract deployment has no contractAddress: {receipt}"));
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
        let receipt = transact_and_mine(
            client,
            &format!("minting token {id}"),
            json!({"from": from, "to": contract, "data": data, "gas": "0x100000"}),
        )
        .await?;
        let logs = receipt["logs"].as_array().map_or(0, Vec::len);
        if logs != 1 {
            return Err(format!("anvil: minting token {id} emitted {logs} logs instead of 1"));
        }
    }
    let head = client.block_number().await.map_err(|e| format!("anvil: {e}"))?;
    if head != blocks {
        return Err(format!("anvil: expected a chain of {blocks} blocks, its head is {head}"));
    }
    Ok(())
}

/// Sends `tx`, mines it into a block of its own and returns its receipt,
/// or why it did not succeed.
async fn transact_and_mine(
    client: &NodeClient,
    what: &str,
    tx: serde_json::Value,
) -> Result<serde_json::Value, String> {
    let hash = client
        .call("eth_sendTransaction", json!([tx]))
        .await
        .map_err(|e| format!("anvil: {what}: {e}"))?;
    client.call("evm_mine", json!([])).await.map_err(|e| format!("anvil: {what}: {e}"))?;
    let mut receipt = serde_json::Value::Null;
    for _ in 0..100 {
        receipt = client
            .call("eth_getTransactionReceipt", json!([hash]))
            .await
            .map_err(|e| format!("anvil: {what}: {e}"))?;
        if !receipt.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if receipt.is_null() {
        return Err(format!("anvil: {what}: transaction {hash} was not mined"));
    }
    if receipt["status"] != "0x1" {
        return Err(format!(
            "anvil: {what}: transaction {hash} failed (status {}, gas used {})",
            receipt["status"], receipt["gasUsed"]
        ));
    }
    Ok(receipt)
}

/// The schema the benchmark indexes into, reset before and after.
pub const BENCH_SCHEMA: &str = "reorg_sim_bench";

/// Empties [`BENCH_SCHEMA`] through [`crate::reset`] (never cascades,
/// refuses a schema holding other tables).
async fn reset_bench_schema(
    admin: &mut tokio_postgres::Client,
    database_url: &str,
) -> Result<(), String> {
    let target = shared_types::redact_url(database_url);
    let plan = crate::reset::SchemaReset::plan(admin, &target, BENCH_SCHEMA)
        .await
        .map_err(|e| e.to_string())?;
    plan.apply(admin).await.map_err(|e| e.to_string())
}

/// `bench --dry-run`: what the benchmark would change (the reset of
/// [`BENCH_SCHEMA`]), changing nothing.
pub async fn dry_run(
    database_url: &str,
    blocks: u64,
    requests: u64,
) -> Result<String, crate::reset::ResetError> {
    let admin =
        connect_db(database_url).await.map_err(|e| crate::reset::ResetError::Db(e.to_string()))?;
    let target = shared_types::redact_url(database_url);
    let plan = crate::reset::SchemaReset::plan(&admin, &target, BENCH_SCHEMA).await?;
    Ok(format!(
        "dry run: nothing is changed. `bench` would reset schema {BENCH_SCHEMA} ({plan}), \
         index a {blocks}-block chain into it with {requests} requests per JSON-RPC method, \
         and reset it again at the end"
    ))
}
