//! The Ethereum JSON-RPC surface of the simulator: a request parser that
//! never panics on outside input, and the read methods answered from a
//! [`SimulatedChain`] as seen by one node ([`NodeView`]).
//!
//! Errors follow JSON-RPC 2.0 and the codes real nodes use: -32700 parse
//! error, -32600 invalid request, -32601 method not found, -32602 invalid
//! params, -32005 limit exceeded (range too large), -32000 unknown block.

use alloy_primitives::{Address, B256, Bloom};
use serde_json::{Value, json};

use crate::chain::{SimBlock, SimulatedChain};
use crate::workload::SimTx;

/// Largest batch answered; bigger ones get one -32600 error.
pub const MAX_BATCH: usize = 1000;

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    /// JSON-RPC error code.
    pub code: i64,
    /// What went wrong, for a person.
    pub message: String,
}

impl RpcError {
    /// -32700
    pub fn parse(detail: impl std::fmt::Display) -> Self {
        RpcError { code: -32700, message: format!("parse error: {detail}") }
    }
    /// -32600
    pub fn invalid_request(detail: impl Into<String>) -> Self {
        RpcError { code: -32600, message: format!("invalid request: {}", detail.into()) }
    }
    /// -32601
    pub fn method_not_found(method: &str) -> Self {
        RpcError {
            code: -32601,
            message: format!("the method {method} does not exist/is not available"),
        }
    }
    /// -32602
    pub fn invalid_params(detail: impl Into<String>) -> Self {
        RpcError { code: -32602, message: format!("invalid params: {}", detail.into()) }
    }
    /// -32000
    pub fn server(detail: impl Into<String>) -> Self {
        RpcError { code: -32000, message: detail.into() }
    }
    /// -32005
    pub fn limit(detail: impl Into<String>) -> Self {
        RpcError { code: -32005, message: detail.into() }
    }
}

/// A well-formed request.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcRequest {
    /// Echoed in the response (number, string or null).
    pub id: Value,
    /// Method name.
    pub method: String,
    /// Positional parameters (`[]` when absent).
    pub params: Vec<Value>,
}

/// A parsed body: one call or a batch; each item may be malformed on its own.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// One call.
    Single(Result<RpcRequest, (Value, RpcError)>),
    /// A batch of calls.
    Batch(Vec<Result<RpcRequest, (Value, RpcError)>>),
}

/// Parses an HTTP or WebSocket body. Never panics; every problem becomes a
/// JSON-RPC error carrying the request id when one could be read.
pub fn parse_request(body: &[u8]) -> Incoming {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Incoming::Single(Err((Value::Null, RpcError::parse(e)))),
    };
    match value {
        Value::Array(items) if items.is_empty() => {
            Incoming::Single(Err((Value::Null, RpcError::invalid_request("empty batch"))))
        }
        Value::Array(items) if items.len() > MAX_BATCH => Incoming::Single(Err((
            Value::Null,
            RpcError::invalid_request(format!(
                "batch of {} calls, at most {MAX_BATCH}",
                items.len()
            )),
        ))),
        Value::Array(items) => Incoming::Batch(items.into_iter().map(parse_call).collect()),
        other => Incoming::Single(parse_call(other)),
    }
}

fn parse_call(value: Value) -> Result<RpcRequest, (Value, RpcError)> {
    let Value::Object(mut map) = value else {
        return Err((Value::Null, RpcError::invalid_request("a call must be a JSON object")));
    };
    let id = match map.remove("id") {
        None => Value::Null,
        Some(id @ (Value::Null | Value::Number(_) | Value::String(_))) => id,
        Some(_) => {
            return Err((
                Value::Null,
                RpcError::invalid_request("id must be a number, string or null"),
            ));
        }
    };
    if map.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err((id, RpcError::invalid_request("\"jsonrpc\" must be \"2.0\"")));
    }
    let method = match map.remove("method") {
        Some(Value::String(m)) => m,
        _ => return Err((id, RpcError::invalid_request("\"method\" must be a string"))),
    };
    let params = match map.remove("params") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(params)) => params,
        Some(_) => {
            return Err((id, RpcError::invalid_params("params must be an array (positional)")));
        }
    };
    Ok(RpcRequest { id, method, params })
}

/// The response object for `id`.
pub fn response(id: Value, result: Result<Value, RpcError>) -> Value {
    match result {
        Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
        Err(e) => {
            json!({ "jsonrpc": "2.0", "id": id, "error": { "code": e.code, "message": e.message } })
        }
    }
}

/// What one node of the simulated network sees: a lagging node sees the
/// chain only up to `visible_head`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeView {
    /// Highest block this node serves.
    pub visible_head: u64,
}

/// Limits like real providers'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RpcLimits {
    /// Largest `eth_getLogs` block range (inclusive count).
    pub max_logs_range: u64,
}

impl Default for RpcLimits {
    fn default() -> Self {
        RpcLimits { max_logs_range: 1000 }
    }
}

/// `0x`-prefixed hex quantity.
pub fn quantity(n: u64) -> String {
    format!("{n:#x}")
}

/// Parses a hex quantity such as `0x4b0`.
pub fn parse_quantity(value: &Value) -> Result<u64, RpcError> {
    let s = value
        .as_str()
        .ok_or_else(|| RpcError::invalid_params(format!("expected a hex quantity, got {value}")))?;
    let digits = s
        .strip_prefix("0x")
        .filter(|d| !d.is_empty() && d.len() <= 16)
        .ok_or_else(|| RpcError::invalid_params(format!("invalid hex quantity {s:?}")))?;
    u64::from_str_radix(digits, 16)
        .map_err(|_| RpcError::invalid_params(format!("invalid hex quantity {s:?}")))
}

fn parse_hash(value: &Value) -> Result<B256, RpcError> {
    value.as_str().and_then(|s| s.parse::<B256>().ok()).ok_or_else(|| {
        RpcError::invalid_params(format!("expected a 32-byte hex hash, got {value}"))
    })
}

fn parse_address(value: &Value) -> Result<Address, RpcError> {
    value.as_str().and_then(|s| s.parse::<Address>().ok()).ok_or_else(|| {
        RpcError::invalid_params(format!("expected a 20-byte hex address, got {value}"))
    })
}

/// Resolves a block tag or number to a number as `view` sees the chain.
pub fn resolve_block(
    chain: &SimulatedChain,
    view: &NodeView,
    tag: &Value,
) -> Result<u64, RpcError> {
    let start = chain.config().start_block;
    let head = view.visible_head;
    let finality = chain.config().finality_depth;
    match tag.as_str() {
        Some("latest" | "pending") => Ok(head),
        Some("earliest") => Ok(start),
        Some("safe") => Ok(head.saturating_sub(finality / 2).max(start)),
        Some("finalized") => Ok(head.saturating_sub(finality).max(start)),
        _ => parse_quantity(tag),
    }
}

fn param<'a>(params: &'a [Value], index: usize, name: &str) -> Result<&'a Value, RpcError> {
    params
        .get(index)
        .ok_or_else(|| RpcError::invalid_params(format!("missing parameter {index} ({name})")))
}

fn flag(params: &[Value], index: usize) -> Result<bool, RpcError> {
    match params.get(index) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(RpcError::invalid_params(format!("expected a boolean, got {other}"))),
    }
}

/// Answers a read method. Unknown methods get -32601.
pub fn call(
    chain: &SimulatedChain,
    view: &NodeView,
    limits: &RpcLimits,
    method: &str,
    params: &[Value],
) -> Result<Value, RpcError> {
    let visible = |b: &SimBlock| b.number() <= view.visible_head;
    match method {
        "eth_chainId" => Ok(json!(quantity(chain.config().chain_id))),
        "net_version" => Ok(json!(chain.config().chain_id.to_string())),
        "web3_clientVersion" => Ok(json!(concat!("reorg-sim/v", env!("CARGO_PKG_VERSION")))),
        "eth_syncing" => Ok(json!(false)),
        "eth_blockNumber" => Ok(json!(quantity(view.visible_head))),
        "eth_getBlockByNumber" => {
            let number = resolve_block(chain, view, param(params, 0, "block")?)?;
            let full = flag(params, 1)?;
            Ok(match chain.block_by_number(number).filter(|b| visible(b)) {
                Some(block) => block_json(chain, &block, full),
                None => Value::Null,
            })
        }
        "eth_getBlockByHash" => {
            let hash = parse_hash(param(params, 0, "hash")?)?;
            let full = flag(params, 1)?;
            Ok(match chain.block_by_hash(&hash).filter(|b| visible(b)) {
                Some(block) => block_json(chain, &block, full),
                None => Value::Null,
            })
        }
        "eth_getLogs" => get_logs(chain, view, limits, param(params, 0, "filter")?),
        "eth_getTransactionReceipt" | "eth_getTransactionByHash" => {
            let hash = parse_hash(param(params, 0, "transaction hash")?)?;
            Ok(match chain.find_tx(&hash).filter(|(b, _)| visible(b)) {
                Some((block, index)) if method == "eth_getTransactionReceipt" => {
                    receipt_json(&block, index)
                }
                Some((block, index)) => tx_json(chain, &block, index),
                None => Value::Null,
            })
        }
        "eth_getBlockReceipts" => {
            let number = resolve_block(chain, view, param(params, 0, "block")?)?;
            Ok(match chain.block_by_number(number).filter(|b| visible(b)) {
                Some(block) => {
                    Value::Array((0..block.txs.len()).map(|i| receipt_json(&block, i)).collect())
                }
                None => Value::Null,
            })
        }
        _ => Err(RpcError::method_not_found(method)),
    }
}

/// A parsed `eth_getLogs` filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFilter {
    /// First block (inclusive).
    pub from: u64,
    /// Last block (inclusive).
    pub to: u64,
    /// Only this block (EIP-234).
    pub block_hash: Option<B256>,
    /// Emitting contracts (any of); empty = all.
    pub addresses: Vec<Address>,
    /// Per position: any of these topics; `None` = wildcard.
    pub topics: Vec<Option<Vec<B256>>>,
}

impl LogFilter {
    /// Does a log of `address` with `topics` match?
    pub fn matches(&self, address: &Address, topics: &[B256]) -> bool {
        (self.addresses.is_empty() || self.addresses.contains(address))
            && self.topics.iter().enumerate().all(|(i, wanted)| match wanted {
                None => true,
                Some(any) => topics.get(i).is_some_and(|t| any.contains(t)),
            })
    }
}

/// Parses an `eth_getLogs` filter object as `view` sees the chain.
pub fn parse_filter(
    chain: &SimulatedChain,
    view: &NodeView,
    value: &Value,
) -> Result<LogFilter, RpcError> {
    let Value::Object(map) = value else {
        return Err(RpcError::invalid_params("the filter must be an object"));
    };
    let block_hash = map.get("blockHash").filter(|v| !v.is_null()).map(parse_hash).transpose()?;
    if block_hash.is_some() && (map.contains_key("fromBlock") || map.contains_key("toBlock")) {
        return Err(RpcError::invalid_params(
            "cannot specify both blockHash and fromBlock/toBlock",
        ));
    }
    let latest = json!("latest");
    let from = resolve_block(chain, view, map.get("fromBlock").unwrap_or(&latest))?;
    let to = resolve_block(chain, view, map.get("toBlock").unwrap_or(&latest))?;
    let addresses = match map.get("address") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.iter().map(parse_address).collect::<Result<_, _>>()?,
        Some(one) => vec![parse_address(one)?],
    };
    let topics = match map.get("topics") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if items.len() <= 4 => items
            .iter()
            .map(|item| match item {
                Value::Null => Ok(None),
                Value::Array(any) => {
                    any.iter().map(parse_hash).collect::<Result<Vec<_>, _>>().map(Some)
                }
                one => Ok(Some(vec![parse_hash(one)?])),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(RpcError::invalid_params("topics must be an array of at most 4 entries"));
        }
    };
    Ok(LogFilter { from, to, block_hash, addresses, topics })
}

fn get_logs(
    chain: &SimulatedChain,
    view: &NodeView,
    limits: &RpcLimits,
    value: &Value,
) -> Result<Value, RpcError> {
    let filter = parse_filter(chain, view, value)?;
    let blocks: Vec<std::sync::Arc<SimBlock>> = match filter.block_hash {
        Some(hash) => {
            match chain.block_by_hash(&hash).filter(|b| b.number() <= view.visible_head) {
                Some(block) => vec![block],
                None => return Err(RpcError::server(format!("unknown block {hash}"))),
            }
        }
        None => {
            if filter.from > filter.to {
                return Err(RpcError::invalid_params(format!(
                    "invalid block range: fromBlock {} > toBlock {}",
                    filter.from, filter.to
                )));
            }
            let count = filter.to - filter.from + 1;
            if count > limits.max_logs_range {
                return Err(RpcError::limit(format!(
                    "query exceeds the maximum block range of {} blocks ({count} requested); split it",
                    limits.max_logs_range
                )));
            }
            let to = filter.to.min(view.visible_head);
            (filter.from..=to).filter_map(|n| chain.block_by_number(n)).collect()
        }
    };
    let removed = filter.block_hash.is_some_and(|h| !chain.is_canonical(&h));
    let mut out = Vec::new();
    for block in &blocks {
        for (i, tx) in block.txs.iter().enumerate() {
            let log = &tx.log;
            if filter.matches(&tx.contract, log.topics()) {
                out.push(log_json(block, i, tx, removed));
            }
        }
    }
    Ok(Value::Array(out))
}

/// The JSON of log `index` of `block` (emitted by `tx`).
pub fn log_json(block: &SimBlock, index: usize, tx: &SimTx, removed: bool) -> Value {
    let log = &tx.log;
    json!({
        "address": tx.contract,
        "topics": log.topics(),
        "data": log.data,
        "blockNumber": quantity(block.number()),
        "blockHash": block.hash,
        "blockTimestamp": quantity(block.header.timestamp),
        "transactionHash": tx.hash,
        "transactionIndex": quantity(index as u64),
        "logIndex": quantity(index as u64),
        "removed": removed,
    })
}

/// The JSON of a block (`full`: transaction objects instead of hashes).
pub fn block_json(chain: &SimulatedChain, block: &SimBlock, full: bool) -> Value {
    let h = &block.header;
    let transactions: Vec<Value> = if full {
        (0..block.txs.len()).map(|i| tx_json(chain, block, i)).collect()
    } else {
        block.txs.iter().map(|tx| json!(tx.hash)).collect()
    };
    json!({
        "number": quantity(h.number),
        "hash": block.hash,
        "parentHash": h.parent_hash,
        "sha3Uncles": h.ommers_hash,
        "miner": h.beneficiary,
        "stateRoot": h.state_root,
        "transactionsRoot": h.transactions_root,
        "receiptsRoot": h.receipts_root,
        "logsBloom": h.logs_bloom,
        "difficulty": "0x0",
        "totalDifficulty": "0x0",
        "gasLimit": quantity(h.gas_limit),
        "gasUsed": quantity(h.gas_used),
        "timestamp": quantity(h.timestamp),
        "extraData": h.extra_data,
        "mixHash": h.mix_hash,
        "nonce": h.nonce,
        "baseFeePerGas": quantity(h.base_fee_per_gas),
        "size": quantity(alloy_rlp::encode(h).len() as u64),
        "uncles": [],
        "transactions": transactions,
    })
}

fn tx_json(chain: &SimulatedChain, block: &SimBlock, index: usize) -> Value {
    let tx = &block.txs[index];
    json!({
        "hash": tx.hash,
        "blockHash": block.hash,
        "blockNumber": quantity(block.number()),
        "transactionIndex": quantity(index as u64),
        "from": tx.from,
        "to": tx.contract,
        "input": tx.log.data,
        "nonce": quantity(index as u64),
        "gas": "0xcb20",
        "gasPrice": quantity(block.header.base_fee_per_gas),
        "value": "0x0",
        "type": "0x0",
        "chainId": quantity(chain.config().chain_id),
        "v": "0x0", "r": "0x0", "s": "0x0",
    })
}

fn receipt_json(block: &SimBlock, index: usize) -> Value {
    let tx = &block.txs[index];
    let log = &tx.log;
    let mut bloom = Bloom::default();
    bloom.accrue_raw_log(tx.contract, log.topics());
    json!({
        "transactionHash": tx.hash,
        "transactionIndex": quantity(index as u64),
        "blockHash": block.hash,
        "blockNumber": quantity(block.number()),
        "from": tx.from,
        "to": tx.contract,
        "contractAddress": null,
        "cumulativeGasUsed": quantity(52_000 * (index as u64 + 1)),
        "gasUsed": "0xcb20",
        "effectiveGasPrice": quantity(block.header.base_fee_per_gas),
        "logs": [log_json(block, index, tx, false)],
        "logsBloom": bloom,
        "status": "0x1",
        "type": "0x0",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::ChainConfig;
    use crate::workload::EventCounts;
    use proptest::prelude::*;

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "(0x)?[0-9a-fA-Fxz]{0,70}".prop_map(Value::String),
            prop_oneof![
                Just("latest"),
                Just("safe"),
                Just("finalized"),
                Just("earliest"),
                Just("pending")
            ]
            .prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(3, 24, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("fromBlock"),
                        Just("toBlock"),
                        Just("blockHash"),
                        Just("address"),
                        Just("topics"),
                        Just("x")
                    ]
                    .prop_map(str::to_owned),
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    const METHODS: [&str; 10] = [
        "eth_chainId",
        "eth_blockNumber",
        "eth_getBlockByNumber",
        "eth_getBlockByHash",
        "eth_getLogs",
        "eth_getTransactionReceipt",
        "eth_getBlockReceipts",
        "net_version",
        "eth_subscribe",
        "nope",
    ];

    proptest! {
        /// Arbitrary bytes never panic the parser.
        #[test]
        fn parser_never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_request(&body);
        }

        /// Well-framed calls with arbitrary params: every answer is a
        /// result or a JSON-RPC error with the request's id.
        #[test]
        fn every_call_gets_a_result_or_an_error(method in prop::sample::select(METHODS.to_vec()), params in prop::collection::vec(any_json(), 0..3), id in any::<u32>()) {
            let mut chain = SimulatedChain::new(ChainConfig::default());
            chain.extend(1010, &EventCounts { mints: 3, ..EventCounts::default() });
            let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
            let Incoming::Single(Ok(request)) = parse_request(body.as_bytes()) else {
                return Err(TestCaseError::fail("a well-framed call must parse"));
            };
            prop_assert_eq!(request.id.clone(), json!(id));
            let view = NodeView { visible_head: chain.head_number() };
            let answer = response(request.id, call(&chain, &view, &RpcLimits::default(), &request.method, &request.params));
            prop_assert!(answer.get("result").is_some() ^ answer.get("error").is_some());
        }
    }
}
