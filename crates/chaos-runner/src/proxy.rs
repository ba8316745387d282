//! The TCP fault proxy: `chaos-runner proxy` sits in front of a dependency
//! (PostgreSQL, Redis, RabbitMQ, a service) and applies toxiproxy's toxics to
//! the bytes going through it, under an HTTP control API shaped like
//! toxiproxy's (`GET /proxies`, `POST /proxies/{name}/toxics`,
//! `DELETE /proxies/{name}/toxics/{toxic}`, `POST /proxies/{name}` with
//! `{"enabled": false}`, `POST /reset`), so toxiproxy's clients drive it too.
//!
//! toxiproxy's own server is not packaged anywhere this project can install
//! it from, so this one is ours. The proxy runs as its own process, started
//! before the services connect through it, so a toxic outlives a crash of
//! the runner that added it and `chaos-runner recover` removes it through
//! the same API.
//!
//! Toxics (attributes in toxiproxy's units):
//! - `latency {latency, jitter}` ms: every chunk is held back latency ± jitter,
//!   order kept;
//! - `bandwidth {rate}` KB/s;
//! - `slow_close {delay}` ms: the close is delayed;
//! - `timeout {timeout}` ms: data is dropped, the connection closed after
//!   `timeout` (never if 0);
//! - `reset_peer {timeout}` ms: the connection is reset (RST) after `timeout`;
//! - `slicer {average_size, size_variation, delay}` bytes, µs: chunks are cut
//!   into small writes;
//! - `limit_data {bytes}`: the connection is closed after that many bytes;
//! - and `down` (the proxy disabled): the listener is closed, so new
//!   connections are refused, and every open connection is closed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// A toxic as the control API shows and takes it (toxiproxy's shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToxicSpec {
    /// Unique per proxy.
    pub name: String,
    /// The toxic type: latency, bandwidth, slow_close, timeout, reset_peer, slicer, limit_data.
    #[serde(rename = "type")]
    pub kind: String,
    /// `downstream` (server to client) or `upstream`.
    #[serde(default = "downstream")]
    pub stream: String,
    /// Share of connections affected, 0 to 1.
    #[serde(default = "full")]
    pub toxicity: f64,
    /// The type's attributes.
    #[serde(default)]
    pub attributes: BTreeMap<String, Value>,
}

fn downstream() -> String {
    "downstream".to_owned()
}

fn full() -> f64 {
    1.0
}

/// A toxic's behaviour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Toxic {
    /// Hold each chunk back.
    Latency {
        /// Base delay.
        latency: Duration,
        /// Uniform ± spread.
        jitter: Duration,
    },
    /// Cap the throughput, in bytes per second.
    Bandwidth {
        /// Bytes per second.
        bytes_per_second: u64,
    },
    /// Delay the close.
    SlowClose {
        /// How long.
        delay: Duration,
    },
    /// Drop data; close after `timeout` (never if zero).
    Timeout {
        /// How long.
        timeout: Duration,
    },
    /// Reset the connection after `timeout`.
    ResetPeer {
        /// How long.
        timeout: Duration,
    },
    /// Cut chunks into small writes.
    Slicer {
        /// Average slice.
        average_size: usize,
        /// ± spread.
        size_variation: usize,
        /// Pause between slices.
        delay: Duration,
    },
    /// Close after this many bytes.
    LimitData {
        /// Bytes.
        bytes: u64,
    },
    /// The proxy is disabled.
    Down,
}

impl Toxic {
    /// A toxic from its type and attributes, with every attribute checked.
    pub fn from_parts(kind: &str, attributes: BTreeMap<String, Value>) -> Result<Toxic, String> {
        let known: &[&str] = match kind {
            "latency" => &["latency", "jitter"],
            "bandwidth" => &["rate"],
            "slow_close" => &["delay"],
            "timeout" | "reset_peer" => &["timeout"],
            "slicer" => &["average_size", "size_variation", "delay"],
            "limit_data" => &["bytes"],
            "down" => &[],
            other => return Err(format!("unknown toxic type `{other}`")),
        };
        if let Some(extra) = attributes.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(format!(
                "toxic `{kind}` has no attribute `{extra}` (it takes: {})",
                if known.is_empty() { "none".to_owned() } else { known.join(", ") }
            ));
        }
        let number = |name: &str| -> Result<u64, String> {
            match attributes.get(name) {
                None => Ok(0),
                Some(v) => v
                    .as_u64()
                    .or_else(|| {
                        v.as_f64().filter(|f| *f >= 0.0 && f.fract() == 0.0).map(|f| f as u64)
                    })
                    .ok_or_else(|| {
                        format!("toxic `{kind}`: `{name}` must be a whole number ≥ 0, got {v}")
                    }),
            }
        };
        let ms = |name: &str| number(name).map(Duration::from_millis);
        Ok(match kind {
            "latency" => Toxic::Latency { latency: ms("latency")?, jitter: ms("jitter")? },
            "bandwidth" => {
                let rate = number("rate")?;
                if rate == 0 {
                    return Err("toxic `bandwidth`: `rate` (KB/s) must be above 0".to_owned());
                }
                Toxic::Bandwidth { bytes_per_second: rate.saturating_mul(1000) }
            }
            "slow_close" => Toxic::SlowClose { delay: ms("delay")? },
            "timeout" => Toxic::Timeout { timeout: ms("timeout")? },
            "reset_peer" => Toxic::ResetPeer { timeout: ms("timeout")? },
            "slicer" => {
                let average_size = usize::try_from(number("average_size")?).unwrap_or(usize::MAX);
                if average_size == 0 {
                    return Err("toxic `slicer`: `average_size` must be above 0".to_owned());
                }
                Toxic::Slicer {
                    average_size,
                    size_variation: usize::try_from(number("size_variation")?).unwrap_or(0),
                    delay: Duration::from_micros(number("delay")?),
                }
            }
            "limit_data" => Toxic::LimitData { bytes: number("bytes")? },
            _ => Toxic::Down,
        })
    }
}

/// A toxic in force on one proxy.
#[derive(Debug, Clone)]
struct Active {
    spec: ToxicSpec,
    toxic: Toxic,
    upstream: bool,
}

/// One proxy: where it listens and where it forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySpec {
    /// Name in the API.
    pub name: String,
    /// Where clients connect.
    pub listen: SocketAddr,
    /// Where it forwards (`host:port`).
    pub upstream: String,
}

impl std::str::FromStr for ProxySpec {
    type Err = String;

    /// `NAME=LISTEN,UPSTREAM`, e.g. `redis=127.0.0.1:16379,127.0.0.1:6379`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "`{text}`: expected NAME=LISTEN,UPSTREAM (e.g. redis=127.0.0.1:16379,127.0.0.1:6379)"
            )
        };
        let (name, rest) = text.split_once('=').ok_or_else(bad)?;
        let (listen, upstream) = rest.split_once(',').ok_or_else(bad)?;
        let listen =
            listen.parse().map_err(|_| format!("`{listen}` is not an IP:port to listen on"))?;
        let ok_name = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !ok_name || upstream.rsplit_once(':').is_none() {
            return Err(bad());
        }
        Ok(ProxySpec { name: name.to_owned(), listen, upstream: upstream.to_owned() })
    }
}

struct ProxyState {
    spec: ProxySpec,
    enabled: watch::Sender<bool>,
    toxics: RwLock<Arc<Vec<Active>>>,
    /// Bumped when toxics change, so open connections re-read them.
    generation: watch::Sender<u64>,
    connections: AtomicU64,
}

impl std::fmt::Debug for ProxyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyState").field("spec", &self.spec).finish_non_exhaustive()
    }
}

impl ProxyState {
    fn toxics(&self) -> Arc<Vec<Active>> {
        match self.toxics.read() {
            Ok(t) => Arc::clone(&t),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    fn is_enabled(&self) -> bool {
        *self.enabled.borrow()
    }

    fn set_toxics(&self, toxics: Vec<Active>) {
        match self.toxics.write() {
            Ok(mut t) => *t = Arc::new(toxics),
            Err(p) => *p.into_inner() = Arc::new(toxics),
        }
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
    }

    fn view(&self) -> Value {
        let toxics: Vec<Value> = self.toxics().iter().map(|a| json!(a.spec)).collect();
        json!({
            "name": self.spec.name,
            "listen": self.spec.listen.to_string(),
            "upstream": self.spec.upstream,
            "enabled": self.is_enabled(),
            "toxics": toxics,
        })
    }
}

type Proxies = Arc<BTreeMap<String, Arc<ProxyState>>>;

/// Serves the proxies and their control API on `api` until `stop` completes.
/// Prints `chaos-runner proxy listening on http://API` once every listener is bound.
pub async fn serve(
    api: SocketAddr,
    specs: Vec<ProxySpec>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let mut proxies = BTreeMap::new();
    for spec in specs {
        let listener = TcpListener::bind(spec.listen)
            .await
            .map_err(|e| format!("proxy {}: cannot listen on {}: {e}", spec.name, spec.listen))?;
        let state = Arc::new(ProxyState {
            spec: spec.clone(),
            enabled: watch::Sender::new(true),
            toxics: RwLock::new(Arc::new(Vec::new())),
            generation: watch::Sender::new(0),
            connections: AtomicU64::new(0),
        });
        if proxies.insert(spec.name.clone(), state.clone()).is_some() {
            return Err(format!("proxy name `{}` given twice", spec.name));
        }
        tokio::spawn(listen(state, Some(listener)));
    }
    let proxies: Proxies = Arc::new(proxies);
    let app = axum::Router::new()
        .route("/version", get(|| async { env!("CARGO_PKG_VERSION") }))
        .route("/proxies", get(list))
        .route("/proxies/{name}", get(show).post(update))
        .route("/proxies/{name}/toxics", get(toxics).post(add_toxic))
        .route("/proxies/{name}/toxics/{toxic}", delete(remove_toxic).get(show_toxic))
        .route("/reset", post(reset))
        .with_state(proxies);
    let listener =
        TcpListener::bind(api).await.map_err(|e| format!("cannot listen on {api}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    println!("chaos-runner proxy listening on http://{bound}");
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
        .map_err(|e| format!("control API: {e}"))
}

async fn list(State(proxies): State<Proxies>) -> Json<Value> {
    Json(Value::Object(proxies.iter().map(|(n, p)| (n.clone(), p.view())).collect()))
}

fn find(proxies: &Proxies, name: &str) -> Result<Arc<ProxyState>, Box<Response>> {
    proxies.get(name).cloned().ok_or_else(|| {
        Box::new(
            (StatusCode::NOT_FOUND, Json(json!({"error": "proxy not found", "status": 404})))
                .into_response(),
        )
    })
}

async fn show(State(proxies): State<Proxies>, Path(name): Path<String>) -> Response {
    match find(&proxies, &name) {
        Ok(p) => Json(p.view()).into_response(),
        Err(r) => *r,
    }
}

#[derive(Debug, Deserialize)]
struct Update {
    enabled: bool,
}

async fn update(
    State(proxies): State<Proxies>,
    Path(name): Path<String>,
    Json(update): Json<Update>,
) -> Response {
    match find(&proxies, &name) {
        Ok(p) => {
            p.enabled.send_replace(update.enabled);
            tracing::info!(proxy = %name, enabled = update.enabled, "proxy switched");
            Json(p.view()).into_response()
        }
        Err(r) => *r,
    }
}

async fn toxics(State(proxies): State<Proxies>, Path(name): Path<String>) -> Response {
    match find(&proxies, &name) {
        Ok(p) => Json(p.view()["toxics"].clone()).into_response(),
        Err(r) => *r,
    }
}

async fn show_toxic(
    State(proxies): State<Proxies>,
    Path((name, toxic)): Path<(String, String)>,
) -> Response {
    let p = match find(&proxies, &name) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    match p.toxics().iter().find(|a| a.spec.name == toxic) {
        Some(a) => Json(json!(a.spec)).into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!({"error": "toxic not found", "status": 404})))
            .into_response(),
    }
}

async fn add_toxic(
    State(proxies): State<Proxies>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let bad = |status: StatusCode, message: String| {
        (status, Json(json!({"error": message, "status": status.as_u16()}))).into_response()
    };
    let p = match find(&proxies, &name) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let spec: ToxicSpec = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return bad(StatusCode::BAD_REQUEST, format!("invalid toxic: {e}")),
    };
    if spec.kind == "down" {
        return bad(
            StatusCode::BAD_REQUEST,
            "disable the proxy instead: POST /proxies/NAME {\"enabled\": false}".to_owned(),
        );
    }
    let toxic = match Toxic::from_parts(&spec.kind, spec.attributes.clone()) {
        Ok(t) => t,
        Err(e) => return bad(StatusCode::BAD_REQUEST, e),
    };
    let upstream = match spec.stream.as_str() {
        "upstream" => true,
        "downstream" => false,
        other => {
            return bad(
                StatusCode::BAD_REQUEST,
                format!("stream `{other}`: upstream or downstream"),
            );
        }
    };
    if !(0.0..=1.0).contains(&spec.toxicity) {
        return bad(StatusCode::BAD_REQUEST, "toxicity is between 0 and 1".to_owned());
    }
    let mut list: Vec<Active> = p.toxics().as_ref().clone();
    if list.iter().any(|a| a.spec.name == spec.name) {
        return bad(StatusCode::CONFLICT, format!("toxic `{}` already exists", spec.name));
    }
    tracing::info!(proxy = %name, toxic = %spec.name, kind = %spec.kind, "toxic added");
    list.push(Active { spec: spec.clone(), toxic, upstream });
    p.set_toxics(list);
    Json(json!(spec)).into_response()
}

async fn remove_toxic(
    State(proxies): State<Proxies>,
    Path((name, toxic)): Path<(String, String)>,
) -> Response {
    let p = match find(&proxies, &name) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let mut list: Vec<Active> = p.toxics().as_ref().clone();
    let before = list.len();
    list.retain(|a| a.spec.name != toxic);
    if list.len() == before {
        return (StatusCode::NOT_FOUND, Json(json!({"error": "toxic not found", "status": 404})))
            .into_response();
    }
    tracing::info!(proxy = %name, toxic = %toxic, "toxic removed");
    p.set_toxics(list);
    StatusCode::NO_CONTENT.into_response()
}

async fn reset(State(proxies): State<Proxies>) -> StatusCode {
    for p in proxies.values() {
        p.set_toxics(Vec::new());
        p.enabled.send_replace(true);
    }
    StatusCode::NO_CONTENT
}

/// Accepts while enabled; closes the listener while disabled (new
/// connections are refused) and binds it again when enabled.
async fn listen(state: Arc<ProxyState>, mut listener: Option<TcpListener>) {
    let mut enabled = state.enabled.subscribe();
    loop {
        let closed = enabled.wait_for(|e| *e).await.map(|_| ()).is_err();
        if closed {
            return;
        }
        let current = match listener.take() {
            Some(l) => l,
            None => match bind_again(state.spec.listen).await {
                Some(l) => l,
                None => continue,
            },
        };
        loop {
            tokio::select! {
                accepted = current.accept() => match accepted {
                    Ok((client, _)) => {
                        let id = state.connections.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(connection(state.clone(), client, id));
                    }
                    Err(e) => {
                        tracing::warn!(proxy = %state.spec.name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                closed = async { enabled.wait_for(|e| !*e).await.map(|_| ()).is_err() } => {
                    if closed {
                        return;
                    }
                    break;
                }
            }
        }
        drop(current);
    }
}

async fn bind_again(addr: SocketAddr) -> Option<TcpListener> {
    for _ in 0..100 {
        match TcpListener::bind(addr).await {
            Ok(l) => return Some(l),
            Err(e) => {
                tracing::warn!(%addr, error = %e, "cannot listen again yet");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    None
}

/// Whether a toxic of `toxicity` applies to connection `id`: spread evenly,
/// so 0.5 affects every other connection.
fn applies(toxicity: f64, id: u64) -> bool {
    if toxicity >= 1.0 {
        return true;
    }
    let a = (id as f64 * toxicity).floor();
    let b = ((id + 1) as f64 * toxicity).floor();
    b > a
}

async fn connection(state: Arc<ProxyState>, client: TcpStream, id: u64) {
    let upstream = match tokio::time::timeout(
        Duration::from_secs(5),
        TcpStream::connect(&state.spec.upstream),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(proxy = %state.spec.name, error = %e, "upstream refused");
            return;
        }
        Err(_) => return,
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let (cut_tx, cut) = watch::channel(Cut::None);
    let up = tokio::spawn(pump(
        state.clone(),
        id,
        true,
        client_read,
        upstream_write,
        cut_tx.clone(),
        cut.clone(),
    ));
    let down = tokio::spawn(pump(
        state.clone(),
        id,
        false,
        upstream_read,
        client_write,
        cut_tx.clone(),
        cut.clone(),
    ));
    // The proxy being disabled closes every open connection.
    let mut enabled = state.enabled.subscribe();
    tokio::select! {
        _ = async { enabled.wait_for(|e| !*e).await.map(|_| ()) } => { cut_tx.send_replace(Cut::Close); }
        _ = async { let _ = up.await; let _ = down.await; } => {}
    }
}

fn cut_now(cut: &watch::Receiver<Cut>) -> Cut {
    *cut.borrow()
}

/// How a connection is being ended by a toxic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    None,
    Close,
    Reset,
}

/// One direction: a reader stamping each chunk with its release time, a
/// writer sending it then (so pipelined chunks are each delayed once).
async fn pump(
    state: Arc<ProxyState>,
    id: u64,
    upstream: bool,
    mut from: OwnedReadHalf,
    to: OwnedWriteHalf,
    cut_tx: watch::Sender<Cut>,
    mut cut: watch::Receiver<Cut>,
) {
    let (tx, rx) = mpsc::channel::<(Vec<u8>, Instant)>(64);
    let writer =
        tokio::spawn(write_out(state.clone(), id, upstream, rx, to, cut.clone(), cut_tx.clone()));
    let mut generation = state.generation.subscribe();
    let mut buf = vec![0u8; 32 * 1024];
    let mut last_release = Instant::now();
    let mut sent: u64 = 0;
    let mut seq: u64 = 0;
    // Deadline of a timeout or reset_peer toxic in force.
    let mut deadline: Option<(Instant, Cut)> = None;
    let mut eof = false;
    loop {
        let toxics = state.toxics();
        let mine = toxics.iter().filter(|a| a.upstream == upstream && applies(a.spec.toxicity, id));
        let mut latency = Duration::ZERO;
        let mut drop_data = false;
        let mut limit = None;
        let mut want_deadline = None;
        for a in mine {
            match a.toxic {
                Toxic::Latency { latency: l, jitter } => {
                    latency = l.saturating_sub(jitter) + jittered(jitter, id, seq);
                }
                Toxic::Timeout { timeout } => {
                    drop_data = true;
                    if !timeout.is_zero() {
                        want_deadline = Some((timeout, Cut::Close));
                    }
                }
                Toxic::ResetPeer { timeout } => want_deadline = Some((timeout, Cut::Reset)),
                Toxic::LimitData { bytes } => limit = Some(bytes),
                _ => {}
            }
        }
        match want_deadline {
            Some((after, how)) if deadline.is_none() => {
                deadline = Some((Instant::now() + after, how))
            }
            None => deadline = None,
            _ => {}
        }
        if limit.is_some_and(|l| sent >= l) {
            cut_tx.send_replace(Cut::Close);
            break;
        }
        if eof {
            // Wait for a deadline or a cut only; no more data comes.
            break;
        }
        let sleep_until = deadline.map(|(at, _)| at);
        tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => { eof = true; }
                Ok(n) => {
                    seq += 1;
                    if drop_data {
                        continue;
                    }
                    let mut chunk = buf[..n].to_vec();
                    if let Some(l) = limit {
                        let room = usize::try_from(l.saturating_sub(sent)).unwrap_or(usize::MAX);
                        chunk.truncate(room);
                    }
                    sent += chunk.len() as u64;
                    let release = (Instant::now() + latency).max(last_release);
                    last_release = release;
                    if tx.send((chunk, release)).await.is_err() {
                        break;
                    }
                }
            },
            _ = generation.changed() => {}
            _ = cut.changed() => { if cut_now(&cut) != Cut::None { break; } }
            () = async { match sleep_until { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                if let Some((_, how)) = deadline {
                    cut_tx.send_replace(how);
                }
                break;
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// The writer of one direction: bandwidth and slicer apply here, and the
/// close (slow, reset or plain) when the reader is done.
async fn write_out(
    state: Arc<ProxyState>,
    id: u64,
    upstream: bool,
    mut rx: mpsc::Receiver<(Vec<u8>, Instant)>,
    mut to: OwnedWriteHalf,
    mut cut: watch::Receiver<Cut>,
    cut_tx: watch::Sender<Cut>,
) {
    let mut slice_seq: u64 = 0;
    loop {
        let next = tokio::select! {
            next = rx.recv() => next,
            _ = async { cut.wait_for(|c| *c != Cut::None).await.map(|_| ()) } => None,
        };
        let Some((chunk, release)) = next else { break };
        // A timer, even one already due, waits for the next tick of tokio's
        // 1 ms wheel: only a chunk held back by a toxic waits on one.
        if release > Instant::now() {
            tokio::select! {
                () = tokio::time::sleep_until(release) => {}
                _ = async { cut.wait_for(|c| *c != Cut::None).await.map(|_| ()) } => break,
            }
        }
        let toxics = state.toxics();
        let mine: Vec<Toxic> = toxics
            .iter()
            .filter(|a| a.upstream == upstream && applies(a.spec.toxicity, id))
            .map(|a| a.toxic)
            .collect();
        let mut pieces: Vec<&[u8]> = vec![&chunk];
        let mut pause = Duration::ZERO;
        for t in &mine {
            if let Toxic::Slicer { average_size, size_variation, delay } = *t {
                pieces = slices(&chunk, average_size, size_variation, id, &mut slice_seq);
                pause = delay;
            }
        }
        for piece in pieces {
            if to.write_all(piece).await.is_err() {
                cut_tx.send_replace(Cut::Close);
                return;
            }
            for t in &mine {
                if let Toxic::Bandwidth { bytes_per_second } = *t {
                    let secs = piece.len() as f64 / bytes_per_second as f64;
                    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                }
            }
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
    }
    let how = cut_now(&cut);
    if how == Cut::Reset {
        let _ = to.as_ref().set_zero_linger();
        tracing::debug!(proxy = %state.spec.name, "connection reset by toxic");
        cut_tx.send_replace(Cut::Reset);
        return;
    }
    let slow_close = state
        .toxics()
        .iter()
        .filter(|a| a.upstream == upstream && applies(a.spec.toxicity, id))
        .find_map(|a| match a.toxic {
            Toxic::SlowClose { delay } => Some(delay),
            _ => None,
        });
    if let Some(delay) = slow_close {
        tokio::time::sleep(delay).await;
    }
    let _ = to.shutdown().await;
    if how == Cut::Close {
        cut_tx.send_replace(Cut::Close);
    }
}

/// A deterministic offset in `[0, 2 × jitter)` for chunk `seq` of connection
/// `id`; the caller subtracts `jitter` from the base delay first, so the
/// delay spreads over latency ± jitter.
fn jittered(jitter: Duration, id: u64, seq: u64) -> Duration {
    if jitter.is_zero() {
        return Duration::ZERO;
    }
    // A splitmix step: spread without a random source, repeatable in tests.
    let mut z = id.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(seq);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let unit = (z >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
    jitter.mul_f64(2.0 * unit)
}

fn slices<'a>(
    chunk: &'a [u8],
    average: usize,
    variation: usize,
    id: u64,
    seq: &mut u64,
) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = chunk;
    while !rest.is_empty() {
        *seq += 1;
        let spread = if variation == 0 {
            0
        } else {
            (jittered(Duration::from_nanos(variation as u64), id, *seq).as_nanos() as usize)
                .min(2 * variation)
        };
        let size = (average + spread).saturating_sub(variation).max(1).min(rest.len());
        let (head, tail) = rest.split_at(size);
        out.push(head);
        rest = tail;
    }
    out
}

// ------------------------------------------------------------------ client

/// Adds `spec` to proxy `proxy` of the API at `api`. An existing toxic of
/// the same name (a retry after a crash) counts as added.
pub async fn add(
    client: &reqwest::Client,
    api: &str,
    proxy: &str,
    spec: &ToxicSpec,
) -> Result<(), String> {
    let url = format!("{}/proxies/{proxy}/toxics", api.trim_end_matches('/'));
    let response = client.post(&url).json(spec).send().await.map_err(|e| format!("{url}: {e}"))?;
    match response.status().as_u16() {
        200..=299 | 409 => Ok(()),
        status => Err(format!("{url}: {status} {}", response.text().await.unwrap_or_default())),
    }
}

/// Removes toxic `name`; one already gone counts as removed.
pub async fn remove(
    client: &reqwest::Client,
    api: &str,
    proxy: &str,
    name: &str,
) -> Result<(), String> {
    let url = format!("{}/proxies/{proxy}/toxics/{name}", api.trim_end_matches('/'));
    let response = client.delete(&url).send().await.map_err(|e| format!("{url}: {e}"))?;
    match response.status().as_u16() {
        200..=299 | 404 => Ok(()),
        status => Err(format!("{url}: {status} {}", response.text().await.unwrap_or_default())),
    }
}

/// Enables or disables proxy `proxy`.
pub async fn set_enabled(
    client: &reqwest::Client,
    api: &str,
    proxy: &str,
    enabled: bool,
) -> Result<(), String> {
    let url = format!("{}/proxies/{proxy}", api.trim_end_matches('/'));
    let response = client
        .post(&url)
        .json(&json!({ "enabled": enabled }))
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("{url}: {} {}", response.status(), response.text().await.unwrap_or_default()))
    }
}

/// The proxy's state as the API shows it (`enabled`, `toxics`).
pub async fn state(client: &reqwest::Client, api: &str, proxy: &str) -> Result<Value, String> {
    let url = format!("{}/proxies/{proxy}", api.trim_end_matches('/'));
    let response = client.get(&url).send().await.map_err(|e| format!("{url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{url}: {}", response.status()));
    }
    response.json().await.map_err(|e| format!("{url}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toxics_are_built_from_toxiproxy_attributes() {
        let attrs = |v: Value| -> BTreeMap<String, Value> { serde_json::from_value(v).unwrap() };
        assert_eq!(
            Toxic::from_parts("latency", attrs(json!({"latency": 500, "jitter": 10}))).unwrap(),
            Toxic::Latency {
                latency: Duration::from_millis(500),
                jitter: Duration::from_millis(10)
            }
        );
        assert_eq!(
            Toxic::from_parts("bandwidth", attrs(json!({"rate": 100}))).unwrap(),
            Toxic::Bandwidth { bytes_per_second: 100_000 }
        );
        let err = Toxic::from_parts("latency", attrs(json!({"delay": 5}))).unwrap_err();
        assert!(err.contains("no attribute `delay`"), "{err}");
        let err = Toxic::from_parts("latency", attrs(json!({"latency": -5}))).unwrap_err();
        assert!(err.contains("whole number"), "{err}");
        assert!(Toxic::from_parts("melt", BTreeMap::new()).is_err());
        assert!(Toxic::from_parts("bandwidth", BTreeMap::new()).is_err());
    }

    #[test]
    fn proxy_specs_parse_and_name_what_is_wrong() {
        let spec: ProxySpec = "redis=127.0.0.1:16379,127.0.0.1:6379".parse().unwrap();
        assert_eq!(spec.name, "redis");
        assert_eq!(spec.upstream, "127.0.0.1:6379");
        assert!("redis".parse::<ProxySpec>().is_err());
        assert!("redis=localhost:1,x:2".parse::<ProxySpec>().unwrap_err().contains("localhost:1"));
    }

    #[test]
    fn toxicity_spreads_evenly_over_connections() {
        let hit = |t: f64| (0..1000).filter(|id| applies(t, *id)).count();
        assert_eq!(hit(1.0), 1000);
        assert_eq!(hit(0.0), 0);
        assert_eq!(hit(0.5), 500);
        assert_eq!(hit(0.25), 250);
    }

    #[test]
    fn slices_cover_the_chunk_in_order() {
        let data: Vec<u8> = (0..=255).collect();
        let mut seq = 0;
        let parts = slices(&data, 10, 4, 7, &mut seq);
        assert!(parts.iter().all(|p| (1..=14).contains(&p.len())), "{parts:?}");
        assert_eq!(parts.concat(), data);
    }
}
