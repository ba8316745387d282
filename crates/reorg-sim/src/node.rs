//! [`NodeClient`]: a small JSON-RPC client for any Ethereum node (the
//! simulator, anvil, a provider), used by the reference indexer and by the
//! oracle when it replays a chain fetched over the wire.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use alloy_primitives::{Address, B256, Bloom, Bytes, U64};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::erc1155::event_signatures;
use crate::oracle::{CanonicalBlock, CanonicalLog};

/// Why a node call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// No answer (connection refused, timeout, HTTP error).
    #[error("cannot reach the node at {url}: {detail} (is it running? check --rpc-url)")]
    Transport {
        /// Node URL.
        url: String,
        /// What happened.
        detail: String,
    },
    /// A JSON-RPC error object.
    #[error("{method} failed with JSON-RPC error {code}: {message}")]
    Rpc {
        /// Method called.
        method: String,
        /// Error code.
        code: i64,
        /// Error message.
        message: String,
    },
    /// An answer that is not what the method returns.
    #[error("{method} returned an unexpected answer: {detail}")]
    Decode {
        /// Method called.
        method: String,
        /// What did not fit.
        detail: String,
    },
}

/// The parts of a block header an indexer needs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderInfo {
    /// Number.
    #[serde(deserialize_with = "u64_quantity")]
    pub number: u64,
    /// Hash.
    pub hash: B256,
    /// Parent hash.
    pub parent_hash: B256,
    /// Timestamp.
    #[serde(deserialize_with = "u64_quantity")]
    pub timestamp: u64,
    /// Logs bloom.
    pub logs_bloom: Bloom,
}

/// A log as `eth_getLogs` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeLog {
    /// Emitting contract.
    pub address: Address,
    /// Topics.
    pub topics: Vec<B256>,
    /// ABI data.
    pub data: Bytes,
    /// Block number.
    #[serde(deserialize_with = "u64_quantity")]
    pub block_number: u64,
    /// Block hash.
    pub block_hash: B256,
    /// Index in the block.
    #[serde(deserialize_with = "u64_quantity")]
    pub log_index: u64,
    /// Transaction.
    pub transaction_hash: B256,
    /// True in subscription notifications for logs a reorg removed.
    #[serde(default)]
    pub removed: bool,
}

fn u64_quantity<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(U64::deserialize(d)?.to::<u64>())
}

/// A JSON-RPC client over HTTP.
#[derive(Debug)]
pub struct NodeClient {
    http: reqwest::Client,
    url: String,
    next_id: AtomicU64,
}

impl NodeClient {
    /// A client for `url` with a 10 s request timeout.
    pub fn new(url: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        NodeClient { http, url: url.to_owned(), next_id: AtomicU64::new(1) }
    }

    /// The node URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    async fn post(&self, body: &Value) -> Result<Value, NodeError> {
        let transport = |detail: String| NodeError::Transport { url: self.url.clone(), detail };
        let response = self
            .http
            .post(&self.url)
            .json(body)
            .send()
            .await
            .map_err(|e| transport(e.to_string()))?;
        if !response.status().is_success() {
            return Err(transport(format!("HTTP {}", response.status())));
        }
        response.json::<Value>().await.map_err(|e| transport(format!("invalid JSON: {e}")))
    }

    fn result(method: &str, mut answer: Value) -> Result<Value, NodeError> {
        if let Some(error) = answer.get("error") {
            return Err(NodeError::Rpc {
                method: method.to_owned(),
                code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: error.get("message").and_then(Value::as_str).unwrap_or("").to_owned(),
            });
        }
        match answer.get_mut("result") {
            Some(result) => Ok(result.take()),
            None => {
                Err(NodeError::Decode { method: method.to_owned(), detail: "no result".to_owned() })
            }
        }
    }

    /// Calls `method` with positional `params`.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, NodeError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let answer = self
            .post(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await?;
        Self::result(method, answer)
    }

    /// Calls `method` and decodes the result.
    pub async fn call_as<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
    ) -> Result<T, NodeError> {
        let value = self.call(method, params).await?;
        serde_json::from_value(value)
            .map_err(|e| NodeError::Decode { method: method.to_owned(), detail: e.to_string() })
    }

    /// `eth_blockNumber`.
    pub async fn block_number(&self) -> Result<u64, NodeError> {
        Ok(self.call_as::<U64>("eth_blockNumber", json!([])).await?.to::<u64>())
    }

    /// `eth_chainId`.
    pub async fn chain_id(&self) -> Result<u64, NodeError> {
        Ok(self.call_as::<U64>("eth_chainId", json!([])).await?.to::<u64>())
    }

    /// The header at `number`, `None` if the node does not have it.
    pub async fn header(&self, number: u64) -> Result<Option<HeaderInfo>, NodeError> {
        self.call_as("eth_getBlockByNumber", json!([format!("{number:#x}"), false])).await
    }

    /// The headers `first..=last` in one JSON-RPC batch; stops at the first
    /// block the node does not have.
    pub async fn headers(&self, first: u64, last: u64) -> Result<Vec<HeaderInfo>, NodeError> {
        if last < first {
            return Ok(Vec::new());
        }
        let base = self.next_id.fetch_add(last - first + 1, Ordering::Relaxed);
        let calls: Vec<Value> = (first..=last)
            .enumerate()
            .map(|(i, n)| json!({"jsonrpc": "2.0", "id": base + i as u64, "method": "eth_getBlockByNumber", "params": [format!("{n:#x}"), false]}))
            .collect();
        let answer = self.post(&Value::Array(calls)).await?;
        let Value::Array(mut items) = answer else {
            return Err(NodeError::Decode {
                method: "eth_getBlockByNumber (batch)".to_owned(),
                detail: "not an array".to_owned(),
            });
        };
        items.sort_by_key(|item| item.get("id").and_then(Value::as_u64).unwrap_or(u64::MAX));
        let mut out = Vec::new();
        for item in items {
            let value = Self::result("eth_getBlockByNumber", item)?;
            let header: Option<HeaderInfo> =
                serde_json::from_value(value).map_err(|e| NodeError::Decode {
                    method: "eth_getBlockByNumber".to_owned(),
                    detail: e.to_string(),
                })?;
            match header {
                Some(h) => out.push(h),
                None => break,
            }
        }
        Ok(out)
    }

    /// ERC-1155 logs (`TransferSingle`, `TransferBatch`, `URI`) of `first..=last`.
    pub async fn erc1155_logs(&self, first: u64, last: u64) -> Result<Vec<NodeLog>, NodeError> {
        let filter = json!({"fromBlock": format!("{first:#x}"), "toBlock": format!("{last:#x}"), "topics": [event_signatures()]});
        self.call_as("eth_getLogs", json!([filter])).await
    }

    /// ERC-1155 logs of the block with `hash` (EIP-234; errors if the node does not know it).
    pub async fn erc1155_logs_at(&self, hash: B256) -> Result<Vec<NodeLog>, NodeError> {
        let filter = json!({"blockHash": hash, "topics": [event_signatures()]});
        self.call_as("eth_getLogs", json!([filter])).await
    }

    /// The canonical chain `first..=head` with its ERC-1155 logs, for the
    /// oracle. Fails if the node reorganises while it is read.
    pub async fn canonical_blocks(
        &self,
        first: u64,
        head: u64,
    ) -> Result<Vec<CanonicalBlock>, NodeError> {
        let mut blocks: Vec<CanonicalBlock> = Vec::new();
        let mut from = first;
        while from <= head {
            let to = (from + 199).min(head);
            let headers = self.headers(from, to).await?;
            if headers.len() as u64 != to - from + 1 {
                return Err(NodeError::Decode {
                    method: "eth_getBlockByNumber".to_owned(),
                    detail: format!(
                        "the node has no block {} although its head is {head}",
                        from + headers.len() as u64
                    ),
                });
            }
            let logs = self.erc1155_logs(from, to).await?;
            for h in headers {
                if let Some(prev) = blocks.last()
                    && prev.hash != h.parent_hash
                {
                    return Err(NodeError::Decode {
                        method: "eth_getBlockByNumber".to_owned(),
                        detail: format!(
                            "block {} does not link to block {}: the chain changed while it was read, retry",
                            h.number, prev.number
                        ),
                    });
                }
                let mut own: Vec<CanonicalLog> = logs
                    .iter()
                    .filter(|l| l.block_hash == h.hash)
                    .map(|l| CanonicalLog {
                        log_index: l.log_index,
                        tx_hash: l.transaction_hash,
                        address: l.address,
                        topics: l.topics.clone(),
                        data: l.data.clone(),
                    })
                    .collect();
                own.sort_by_key(|l| l.log_index);
                blocks.push(CanonicalBlock {
                    number: h.number,
                    hash: h.hash,
                    parent_hash: h.parent_hash,
                    logs: own,
                });
            }
            from = to + 1;
        }
        Ok(blocks)
    }
}
