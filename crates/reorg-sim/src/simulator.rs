//! [`ChainSimulator`]: the simulated chain served as an Ethereum JSON-RPC node
//! on loopback, over HTTP (`POST /`) and WebSocket (`GET /`, with
//! `eth_subscribe` for `newHeads` and `logs`). Any indexer can be pointed at it.
//!
//! Besides the standard read methods ([`crate::rpc`]) it answers a few
//! control methods in its own namespace, like anvil's `anvil_*`:
//! `reorgsim_mine` (`[to, {mints, transfers, ...}]`), `reorgsim_reorg`
//! (`[{depth, new_head, drop, shift, events}]`), `reorgsim_reorgHistory` and
//! `reorgsim_setLag` (`[{every, blocks}]`: one request in `every` is answered
//! by a node `blocks` behind).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{broadcast, oneshot};

use crate::chain::{ChainConfig, ChainError, ReorgSpec, SimBlock, SimulatedChain};
use crate::oracle::ReorgHistoryEntry;
use crate::rpc::{self, Incoming, LogFilter, NodeView, RpcError, RpcLimits, RpcRequest};
use crate::workload::{EventCounts, SeededRng};

/// A node behind the load balancer that lags: on average one request in
/// `every` is answered by a node that is `blocks` behind the head (0 = off).
/// Which ones is drawn from a seeded stream, like a load balancer's choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LagConfig {
    /// One request in `every` (on average) goes to the lagging node; 0 disables lag.
    pub every: u64,
    /// How many blocks that node is behind.
    pub blocks: u64,
}

/// What changed on the canonical chain, for subscribers.
#[derive(Debug, Clone)]
pub struct ChainEvent {
    /// Blocks that left the canonical chain (a reorg), lowest first.
    pub removed: Vec<Arc<SimBlock>>,
    /// Blocks that joined it, lowest first.
    pub added: Vec<Arc<SimBlock>>,
}

/// The simulator: a chain, its subscribers and its serving behaviour.
/// Cheap to clone; clones share the chain.
#[derive(Debug, Clone)]
pub struct ChainSimulator {
    chain: Arc<RwLock<SimulatedChain>>,
    events: broadcast::Sender<ChainEvent>,
    lag: Arc<Mutex<LagConfig>>,
    lag_draws: Arc<Mutex<SeededRng>>,
    lagged: Arc<std::sync::atomic::AtomicU64>,
    limits: RpcLimits,
}

impl ChainSimulator {
    /// A simulator holding only the start block.
    pub fn new(config: ChainConfig) -> Self {
        let (events, _) = broadcast::channel(1024);
        let seed = config.seed;
        ChainSimulator {
            chain: Arc::new(RwLock::new(SimulatedChain::new(config))),
            events,
            lag: Arc::new(Mutex::new(LagConfig::default())),
            lag_draws: Arc::new(Mutex::new(SeededRng::new(seed))),
            lagged: Arc::default(),
            limits: RpcLimits::default(),
        }
    }

    /// Sets the `eth_getLogs` range limit.
    pub fn with_limits(mut self, limits: RpcLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Reads the chain.
    pub fn with_chain<R>(&self, f: impl FnOnce(&SimulatedChain) -> R) -> R {
        f(&self.chain.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Number of the canonical head.
    pub fn head_number(&self) -> u64 {
        self.with_chain(SimulatedChain::head_number)
    }

    /// Appends blocks up to `to` with `events` spread over them.
    pub fn extend(&self, to: u64, events: &EventCounts) -> Vec<Arc<SimBlock>> {
        let added = self.chain.write().unwrap_or_else(PoisonError::into_inner).extend(to, events);
        let _ = self.events.send(ChainEvent { removed: Vec::new(), added: added.clone() });
        added
    }

    /// Reorganises the chain.
    pub fn reorg(&self, spec: &ReorgSpec) -> Result<ReorgHistoryEntry, ChainError> {
        let (entry, removed, added) = {
            let mut chain = self.chain.write().unwrap_or_else(PoisonError::into_inner);
            let entry = chain.reorg(spec)?;
            let removed = entry.orphaned.iter().filter_map(|h| chain.block_by_hash(h)).collect();
            let added = (entry.common_ancestor + 1..=chain.head_number())
                .filter_map(|n| chain.block_by_number(n))
                .collect();
            (entry, removed, added)
        };
        let _ = self.events.send(ChainEvent { removed, added });
        Ok(entry)
    }

    /// Makes every `lag.every`-th request see a head `lag.blocks` behind.
    pub fn set_lag(&self, lag: LagConfig) {
        *self.lag.lock().unwrap_or_else(PoisonError::into_inner) = lag;
    }

    /// How many requests the lagging node has answered so far.
    pub fn lagged_responses(&self) -> u64 {
        self.lagged.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn view(&self, head: u64) -> NodeView {
        let lag = *self.lag.lock().unwrap_or_else(PoisonError::into_inner);
        let lagging = lag.every > 0
            && self.lag_draws.lock().unwrap_or_else(PoisonError::into_inner).below(lag.every) == 0;
        if lagging {
            self.lagged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            NodeView { visible_head: head.saturating_sub(lag.blocks) }
        } else {
            NodeView { visible_head: head }
        }
    }

    /// Answers one request (read or control method).
    pub fn dispatch(&self, request: &RpcRequest) -> Result<Value, RpcError> {
        let params = &request.params;
        match request.method.as_str() {
            "reorgsim_mine" => {
                let count = params.first().map(rpc::parse_quantity).transpose()?.unwrap_or(1);
                let events: EventCounts = match params.get(1) {
                    Some(v) => serde_json::from_value(v.clone())
                        .map_err(|e| RpcError::invalid_params(e.to_string()))?,
                    None => EventCounts::default(),
                };
                let to = self.head_number().saturating_add(count.min(100_000));
                let added = self.extend(to, &events);
                Ok(json!(rpc::quantity(added.last().map_or(to, |b| b.number()))))
            }
            "reorgsim_reorg" => {
                let spec: ReorgSpec =
                    serde_json::from_value(params.first().cloned().unwrap_or(Value::Null))
                        .map_err(|e| {
                            RpcError::invalid_params(format!(
                                "expected {{depth, new_head, drop, shift, events}}: {e}"
                            ))
                        })?;
                let entry =
                    self.reorg(&spec).map_err(|e| RpcError::invalid_params(e.to_string()))?;
                Ok(json!(entry))
            }
            "reorgsim_reorgHistory" => Ok(self.with_chain(|c| json!(c.reorg_history()))),
            "reorgsim_setLag" => {
                let lag: LagConfig =
                    serde_json::from_value(params.first().cloned().unwrap_or(Value::Null))
                        .map_err(|e| {
                            RpcError::invalid_params(format!("expected {{every, blocks}}: {e}"))
                        })?;
                self.set_lag(lag);
                Ok(Value::Bool(true))
            }
            method => {
                let chain = self.chain.read().unwrap_or_else(PoisonError::into_inner);
                let view = self.view(chain.head_number());
                rpc::call(&chain, &view, &self.limits, method, params)
            }
        }
    }

    /// Answers a request body; `None` only for an all-notification batch (never here).
    pub fn handle_body(&self, body: &[u8]) -> Value {
        let one = |item: Result<RpcRequest, (Value, RpcError)>| match item {
            Ok(request) => {
                let result = self.dispatch(&request);
                rpc::response(request.id, result)
            }
            Err((id, e)) => rpc::response(id, Err(e)),
        };
        match rpc::parse_request(body) {
            Incoming::Single(item) => one(item),
            Incoming::Batch(items) => Value::Array(items.into_iter().map(one).collect()),
        }
    }

    /// Serves HTTP and WebSocket JSON-RPC on `addr` (use port 0 for a free one).
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<SimulatorServer> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = Router::new().route("/", post(http_rpc).get(ws_upgrade)).with_state(self.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                tracing::error!("chain simulator on {addr} stopped: {e}");
            }
        });
        Ok(SimulatorServer { addr, stop: Some(stop), task })
    }
}

/// A running server; stops when dropped.
#[derive(Debug)]
pub struct SimulatorServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl SimulatorServer {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// `http://addr/`
    pub fn http_url(&self) -> String {
        format!("http://{}/", self.addr)
    }
    /// `ws://addr/`
    pub fn ws_url(&self) -> String {
        format!("ws://{}/", self.addr)
    }
    /// Waits until the server task ends (after a stop).
    pub async fn stopped(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for SimulatorServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn http_rpc(State(sim): State<ChainSimulator>, body: Bytes) -> Response {
    let value = sim.handle_body(&body);
    ([(header::CONTENT_TYPE, "application/json")], value.to_string()).into_response()
}

async fn ws_upgrade(State(sim): State<ChainSimulator>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| ws_session(sim, socket))
}

enum Subscription {
    NewHeads,
    Logs(LogFilter),
}

async fn ws_session(sim: ChainSimulator, mut socket: WebSocket) {
    let mut events = sim.events.subscribe();
    let mut subscriptions: Vec<(String, Subscription)> = Vec::new();
    let mut next_id: u64 = 0;
    loop {
        tokio::select! {
            message = socket.recv() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text.to_string(),
                    Some(Ok(Message::Binary(bytes))) => String::from_utf8_lossy(&bytes).into_owned(),
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return,
                };
                let reply = match rpc::parse_request(text.as_bytes()) {
                    Incoming::Single(Ok(request)) if request.method == "eth_subscribe" => {
                        next_id += 1;
                        let id = format!("{:#x}", 0x50b_0000u64 + next_id);
                        let result = subscribe(&sim, &request.params).map(|s| {
                            subscriptions.push((id.clone(), s));
                            json!(id)
                        });
                        rpc::response(request.id, result)
                    }
                    Incoming::Single(Ok(request)) if request.method == "eth_unsubscribe" => {
                        let wanted = request.params.first().and_then(Value::as_str).unwrap_or_default().to_owned();
                        let before = subscriptions.len();
                        subscriptions.retain(|(id, _)| *id != wanted);
                        rpc::response(request.id, Ok(json!(subscriptions.len() < before)))
                    }
                    _ => sim.handle_body(text.as_bytes()),
                };
                if socket.send(Message::Text(reply.to_string().into())).await.is_err() {
                    return;
                }
            }
            event = events.recv() => {
                let event = match event {
                    Ok(event) => event,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                for (id, subscription) in &subscriptions {
                    for payload in notifications(&sim, subscription, &event) {
                        let note = json!({"jsonrpc": "2.0", "method": "eth_subscription", "params": {"subscription": id, "result": payload}});
                        if socket.send(Message::Text(note.to_string().into())).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
}

fn subscribe(sim: &ChainSimulator, params: &[Value]) -> Result<Subscription, RpcError> {
    match params.first().and_then(Value::as_str) {
        Some("newHeads") => Ok(Subscription::NewHeads),
        Some("logs") => {
            let filter = params.get(1).cloned().unwrap_or_else(|| json!({}));
            let Value::Object(mut map) = filter else {
                return Err(RpcError::invalid_params("the logs filter must be an object"));
            };
            map.remove("fromBlock");
            map.remove("toBlock");
            map.remove("blockHash");
            sim.with_chain(|chain| {
                let view = NodeView { visible_head: chain.head_number() };
                rpc::parse_filter(chain, &view, &Value::Object(map))
            })
            .map(Subscription::Logs)
        }
        other => Err(RpcError::invalid_params(format!(
            "unsupported subscription {other:?}: use newHeads or logs"
        ))),
    }
}

fn notifications(
    sim: &ChainSimulator,
    subscription: &Subscription,
    event: &ChainEvent,
) -> Vec<Value> {
    sim.with_chain(|chain| match subscription {
        Subscription::NewHeads => event
            .added
            .iter()
            .map(|block| {
                let mut head = rpc::block_json(chain, block, false);
                if let Value::Object(map) = &mut head {
                    map.remove("transactions");
                    map.remove("uncles");
                }
                head
            })
            .collect(),
        Subscription::Logs(filter) => {
            let mut out = Vec::new();
            for (blocks, removed) in [(&event.removed, true), (&event.added, false)] {
                for block in blocks.iter() {
                    for (i, tx) in block.txs.iter().enumerate() {
                        let log = &tx.log;
                        if filter.matches(&tx.contract, log.topics()) {
                            out.push(rpc::log_json(block, i, tx, removed));
                        }
                    }
                }
            }
            out
        }
    })
}
