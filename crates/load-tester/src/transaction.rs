//! Executing one transaction for one user through goose, timing it and
//! classifying the outcome: HTTP requests, GraphQL operations (an `errors`
//! array is a failure), Sign-In with Ethereum, and transactions written in Rust.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use goose::goose::{GooseMethod, GooseRequest, GooseUser};
use serde_json::{Value, json};

use crate::scenario::{Action, Body, HttpRequest, ScenarioPlan, Transaction};
use crate::siwe::Wallet;
use crate::stats::{Outcome, Recorder, Sample, TransactionId};
use crate::template::{Bindings, Template, UserRng, UserState};

/// A transaction written in Rust: it gets the goose user (its HTTP client
/// and base URL) and answers the HTTP status on success or the kind of
/// failure. load-tester times it and keeps its statistics like any other.
///
/// ```
/// use std::sync::Arc;
/// use load_tester::transaction::CustomTransaction;
/// let health: CustomTransaction = Arc::new(|user| Box::pin(async move {
///     let url = user.build_url("/healthz").map_err(|e| e.to_string())?;
///     let answer = user.client.get(url).send().await.map_err(|e| e.to_string())?;
///     Ok(answer.status().as_u16())
/// }));
/// ```
pub type CustomTransaction = Arc<
    dyn for<'a> Fn(
            &'a mut GooseUser,
        ) -> Pin<Box<dyn Future<Output = Result<u16, String>> + Send + 'a>>
        + Send
        + Sync,
>;

/// What every user's transactions share.
pub(crate) struct Shared {
    pub plan: ScenarioPlan,
    pub transactions: Vec<Transaction>,
    pub recorder: Arc<Recorder>,
    pub custom: BTreeMap<String, CustomTransaction>,
    pub next_user: std::sync::atomic::AtomicUsize,
    pub seed: u64,
}

/// A user's state kept in goose's session data.
#[derive(Debug, Clone, Default)]
pub(crate) struct VirtualUser {
    pub state: UserState,
    pub wallet: Option<Wallet>,
    /// Counts the user as running until goose drops its session data.
    pub _presence: Option<Arc<crate::stats::Presence>>,
}

impl Shared {
    /// Takes the user's state out of goose (creating it on first use).
    pub fn take_user(&self, user: &mut GooseUser) -> VirtualUser {
        match user.get_session_data_mut::<VirtualUser>() {
            Some(v) => std::mem::take(v),
            None => {
                let index = self.next_user.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let rng =
                    UserRng::new(self.seed ^ (index as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
                VirtualUser {
                    state: UserState { index, rng, vars: Default::default() },
                    wallet: None,
                    _presence: Some(Arc::new(crate::stats::Presence::new(&self.recorder))),
                }
            }
        }
    }

    /// Runs transaction `id` for `user` and records it. In the open model
    /// `intended` is the scheduled start the latency is measured from.
    pub async fn perform(
        &self,
        id: TransactionId,
        user: &mut GooseUser,
        intended: Option<Instant>,
    ) {
        let Some(tx) = self.transactions.get(id) else { return };
        let mut vu = self.take_user(user);
        let started = Instant::now();
        let outcome = match &tx.action {
            Action::Http(request) => self.http(user, &mut vu, tx, request).await,
            Action::Graphql(op) => {
                let mut b = Bindings::new(&self.plan.feeds, &mut vu.state);
                let mut body = json!({ "query": op.query });
                if let Some(vars) = &op.variables {
                    body["variables"] = vars.render(&mut b);
                }
                if let Some(name) = &op.operation_name {
                    body["operationName"] = Value::String(name.clone());
                }
                let headers = self.headers(&op.headers, &mut b);
                drop(b);
                let answer =
                    send(user, tx, &reqwest::Method::POST, &op.path, headers, Some(body), None)
                        .await;
                self.judge(tx, answer, &mut vu.state, true)
            }
            Action::Siwe { nonce_path, verify_path } => {
                self.sign_in(user, &mut vu, tx, nonce_path, verify_path).await
            }
            Action::Custom(name) => match self.custom.get(name) {
                Some(f) => match f(user).await {
                    Ok(status) if status_expected(tx, status) => Outcome::Ok(status),
                    Ok(status) => {
                        Outcome::Failed { status: Some(status), kind: format!("status {status}") }
                    }
                    Err(kind) => Outcome::Failed { status: None, kind: short(&kind) },
                },
                None => Outcome::Failed {
                    status: None,
                    kind: format!("no custom transaction `{name}` registered"),
                },
            },
        };
        let end = Instant::now();
        let service_time = end - started;
        let latency = intended.map_or(service_time, |i| end.saturating_duration_since(i));
        self.recorder.record(
            user.weighted_users_index,
            &Sample { transaction: id, latency, service_time, outcome },
        );
        user.set_session_data(vu);
    }

    fn headers(&self, extra: &[(String, Template)], b: &mut Bindings<'_>) -> Vec<(String, String)> {
        self.plan.headers.iter().chain(extra).map(|(k, t)| (k.clone(), t.render(b))).collect()
    }

    async fn http(
        &self,
        user: &mut GooseUser,
        vu: &mut VirtualUser,
        tx: &Transaction,
        r: &HttpRequest,
    ) -> Outcome {
        let mut b = Bindings::new(&self.plan.feeds, &mut vu.state);
        let path = r.path.render(&mut b);
        let headers = self.headers(&r.headers, &mut b);
        let (json, text) = match &r.body {
            Some(Body::Json(j)) => (Some(j.render(&mut b)), None),
            Some(Body::Text(t)) => (None, Some(t.render(&mut b))),
            None => (None, None),
        };
        drop(b);
        let answer = send(user, tx, &r.method, &path, headers, json, text).await;
        self.judge(tx, answer, &mut vu.state, false)
    }

    /// Status, GraphQL errors and extraction decide the outcome.
    fn judge(
        &self,
        tx: &Transaction,
        answer: Answer,
        state: &mut UserState,
        graphql: bool,
    ) -> Outcome {
        let (status, body) = match answer {
            Answer::Response { status, body } => (status, body),
            Answer::Failed(kind) => return Outcome::Failed { status: None, kind },
        };
        if !status_expected(tx, status) {
            return Outcome::Failed { status: Some(status), kind: format!("status {status}") };
        }
        if !graphql && tx.extract.is_empty() {
            return Outcome::Ok(status);
        }
        let Ok(doc) = serde_json::from_slice::<Value>(&body) else {
            return Outcome::Failed { status: Some(status), kind: "answer is not JSON".to_owned() };
        };
        if graphql
            && let Some(errors) =
                doc.get("errors").and_then(Value::as_array).filter(|e| !e.is_empty())
        {
            let message = errors
                .first()
                .and_then(|e| e.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("error");
            return Outcome::Failed {
                status: Some(status),
                kind: short(&format!("graphql: {message}")),
            };
        }
        for (name, pointer) in &tx.extract {
            match doc.pointer(pointer) {
                Some(v) => {
                    state.vars.insert(name.clone(), v.clone());
                }
                None => {
                    return Outcome::Failed {
                        status: Some(status),
                        kind: format!("extract {name}: {pointer} not in the answer"),
                    };
                }
            }
        }
        Outcome::Ok(status)
    }

    async fn sign_in(
        &self,
        user: &mut GooseUser,
        vu: &mut VirtualUser,
        tx: &Transaction,
        nonce_path: &str,
        verify_path: &str,
    ) -> Outcome {
        let mut b = Bindings::new(&self.plan.feeds, &mut vu.state);
        let headers = self.headers(&[], &mut b);
        drop(b);
        let nonce = send(
            user,
            tx,
            &reqwest::Method::POST,
            nonce_path,
            headers.clone(),
            Some(json!({})),
            None,
        )
        .await;
        let doc = match nonce {
            Answer::Response { status, body } if (200..300).contains(&status) => {
                serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null)
            }
            Answer::Response { status, .. } => {
                return Outcome::Failed {
                    status: Some(status),
                    kind: format!("nonce: status {status}"),
                };
            }
            Answer::Failed(kind) => {
                return Outcome::Failed { status: None, kind: format!("nonce: {kind}") };
            }
        };
        let (Some(nonce), Some(domain)) = (doc["nonce"].as_str(), doc["domain"].as_str()) else {
            return Outcome::Failed {
                status: None,
                kind: "nonce: answer lacks nonce or domain".to_owned(),
            };
        };
        let chain_id = doc["chain_id"].as_u64().unwrap_or(1);
        let wallet = vu.wallet.get_or_insert_with(|| Wallet::generate(&mut vu.state.rng));
        let message =
            wallet.message(domain, chain_id, nonce, shared_types::Timestamp::now().as_str());
        let signature = match wallet.sign(&message) {
            Ok(s) => s,
            Err(e) => return Outcome::Failed { status: None, kind: e },
        };
        let body = json!({ "message": message, "signature": signature });
        let answer =
            send(user, tx, &reqwest::Method::POST, verify_path, headers, Some(body), None).await;
        self.judge(tx, answer, &mut vu.state, false)
    }
}

fn status_expected(tx: &Transaction, status: u16) -> bool {
    if tx.expect_status.is_empty() {
        (200..300).contains(&status)
    } else {
        tx.expect_status.contains(&status)
    }
}

fn short(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() > 80 {
        format!("{}...", line.chars().take(80).collect::<String>())
    } else {
        line.to_owned()
    }
}

enum Answer {
    Response { status: u16, body: Vec<u8> },
    Failed(String),
}

/// Sends one request through goose (so goose's own metrics see it too) and
/// reads the whole answer: the latency runs to the last byte.
async fn send(
    user: &mut GooseUser,
    tx: &Transaction,
    method: &reqwest::Method,
    path: &str,
    headers: Vec<(String, String)>,
    json: Option<Value>,
    text: Option<String>,
) -> Answer {
    let goose_method = match *method {
        reqwest::Method::GET => GooseMethod::Get,
        reqwest::Method::POST => GooseMethod::Post,
        reqwest::Method::PUT => GooseMethod::Put,
        reqwest::Method::PATCH => GooseMethod::Patch,
        reqwest::Method::DELETE => GooseMethod::Delete,
        reqwest::Method::HEAD => GooseMethod::Head,
        _ => return Answer::Failed(format!("method {method} is not supported")),
    };
    let mut builder = match user.get_request_builder(&goose_method, path) {
        Ok(b) => b,
        Err(e) => return Answer::Failed(short(&format!("bad URL for {path}: {e}"))),
    };
    for (k, v) in headers {
        builder = builder.header(k, v);
    }
    if let Some(json) = json {
        builder = builder.json(&json);
    } else if let Some(text) = text {
        builder = builder.body(text);
    }
    let request = GooseRequest::builder()
        .method(goose_method)
        .path(path)
        .name(tx.name.as_str())
        .set_request_builder(builder)
        .build();
    let response = match user.request(request).await {
        Ok(goose) => goose.response,
        Err(e) => return Answer::Failed(short(&format!("goose: {e}"))),
    };
    match response {
        Ok(r) => {
            let status = r.status().as_u16();
            match r.bytes().await {
                Ok(body) => Answer::Response { status, body: body.to_vec() },
                Err(e) => Answer::Failed(transport_kind(&e)),
            }
        }
        Err(e) => Answer::Failed(transport_kind(&e)),
    }
}

fn transport_kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".to_owned()
    } else if e.is_connect() {
        "connect".to_owned()
    } else if e.is_body() || e.is_decode() {
        "reading the answer".to_owned()
    } else {
        "transport".to_owned()
    }
}
