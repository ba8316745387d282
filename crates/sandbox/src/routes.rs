//! HTTP routes: the marketplace API, auth, GraphQL, operations and admin.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::{Auth, AuthError};
use crate::breaker::BreakerState;
use crate::cache::Cache;
use crate::catalog::{Catalog, CatalogError};
use crate::faults::{FaultSpec, Faults};
use crate::graphql::MarketplaceSchema;
use crate::metrics::Metrics;
use crate::orders::{NewOrder, OrderError, OrderKind};

/// Largest page size of the REST routes.
const MAX_PER_PAGE: u32 = 100;
/// Default page size of the REST routes.
const PER_PAGE: u32 = 20;

/// Everything a handler needs.
#[derive(Clone)]
pub struct AppState {
    /// The catalog.
    pub catalog: Arc<Catalog>,
    /// The response cache.
    pub cache: Arc<Cache>,
    /// Sign-in and sessions (here, or the auth service).
    pub auth: Arc<Auth>,
    /// Fault knobs.
    pub faults: Faults,
    /// Exported series.
    pub metrics: Metrics,
    /// GraphQL schema.
    pub schema: MarketplaceSchema,
    /// `--release`: sent back as `x-release` on every response, so a test
    /// or a blue-green check sees which version served it.
    pub release: Option<axum::http::HeaderValue>,
    /// Whether a cache error falls back to the database (`--no-cache-fallback`
    /// turns it off, to show a chaos experiment failing).
    pub cache_fallback: bool,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("catalog", &self.catalog)
            .field("cache", &self.cache)
            .field("faults", &self.faults.spec())
            .finish_non_exhaustive()
    }
}

/// The whole router.
pub fn router(state: AppState) -> Router {
    let marketplace = Router::new()
        .route("/api/collections", get(collections))
        .route("/api/collections/{id}", get(collection))
        .route("/api/collections/{id}/nfts", get(collection_nfts))
        .route("/api/nfts/{id}", get(nft))
        .route("/api/search", get(search))
        .route("/api/me", get(me))
        .route("/api/orders", post(place_order))
        .route("/graphql", post(graphql))
        .route("/auth/nonce", post(nonce))
        .route("/auth/verify", post(verify))
        .route_layer(middleware::from_fn_with_state(state.clone(), inject_faults));
    let operations = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/admin/faults", get(get_faults).post(set_faults).delete(clear_faults));
    let recorder = Recorder { metrics: state.metrics.clone(), release: state.release.clone() };
    marketplace
        .merge(operations)
        .route_layer(middleware::from_fn_with_state(recorder, record))
        .with_state(state)
}

/// What the HTTP port of the auth and catalog roles serves: health, metrics,
/// and (catalog) the database fault knobs.
#[derive(Debug, Clone)]
pub struct OpsState {
    /// Exported series (the gRPC server histogram among them).
    pub metrics: Metrics,
    /// The fault knobs, where they have an effect (the catalog's database).
    pub faults: Option<Faults>,
    /// What `/readyz` checks.
    pub readiness: Readiness,
    /// `--release`, sent back as `x-release`.
    pub release: Option<axum::http::HeaderValue>,
}

/// What makes an auth or catalog process ready.
#[derive(Debug, Clone)]
pub enum Readiness {
    /// Auth needs nothing but itself.
    Auth,
    /// The catalog needs its database.
    Catalog(Arc<Catalog>),
    /// The consumer needs its database (RabbitMQ it waits for).
    Consumer(crate::orders::Orders),
}

/// The HTTP router of the auth and catalog roles.
pub fn operations(state: OpsState) -> Router {
    let recorder = Recorder { metrics: state.metrics.clone(), release: state.release.clone() };
    let mut router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ops_ready))
        .route("/metrics", get(metrics));
    if let Some(faults) = state.faults.clone() {
        let faults_router = Router::new()
            .route("/admin/faults", get(get_faults).post(set_faults).delete(clear_faults))
            .with_state(faults);
        router = router.merge(faults_router.with_state(()));
    }
    router.route_layer(middleware::from_fn_with_state(recorder, record)).with_state(state)
}

async fn ops_ready(State(state): State<OpsState>) -> Response {
    match &state.readiness {
        Readiness::Auth => Json(json!({ "auth": "ok" })).into_response(),
        Readiness::Catalog(catalog) => {
            let database = catalog.ping().await;
            let body = json!({
                "database": database.as_ref().map_or_else(|e| e.to_string(), |()| "ok".to_owned()),
                "database_breaker": catalog.breaker().state().as_str(),
                "catalog": catalog.backend(),
            });
            let status =
                if database.is_ok() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            (status, Json(body)).into_response()
        }
        Readiness::Consumer(orders) => match orders.pending().await {
            Ok(_) => Json(json!({ "database": "ok" })).into_response(),
            Err(e) => {
                (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "database": e }))).into_response()
            }
        },
    }
}

/// The state of the request-recording middleware.
#[derive(Debug, Clone)]
struct Recorder {
    metrics: Metrics,
    release: Option<axum::http::HeaderValue>,
}

/// Counts every request in `http_requests_total` and times it.
async fn record(State(state): State<Recorder>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let start = Instant::now();
    let mut response = next.run(request).await;
    if let Some(release) = &state.release {
        response.headers_mut().insert("x-release", release.clone());
    }
    state.metrics.http_duration.with_label_values(&[&route]).observe(start.elapsed().as_secs_f64());
    state.metrics.http_requests.with_label_values(&[&route, response.status().as_str()]).inc();
    response
}

/// Applies the active latency, stall and error-rate faults.
async fn inject_faults(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let injection = state.faults.next_request();
    if !injection.delay.is_zero() {
        state.metrics.faults_injected.with_label_values(&["latency"]).inc();
        tokio::time::sleep(injection.delay).await;
    }
    if injection.fail {
        state.metrics.faults_injected.with_label_values(&["error"]).inc();
        return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "injected fault").into_response();
    }
    next.run(request).await
}

/// An error response: a JSON body `{"error": "..."}` with a status, or, when
/// a dependency is unavailable, HTTP 503 with an RFC 9457
/// `application/problem+json` body naming it and a `Retry-After` header.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    unavailable: Option<Unavailable>,
}

/// A dependency the request needed and could not use.
#[derive(Debug)]
struct Unavailable {
    dependency: &'static str,
    retry_after: std::time::Duration,
}

/// The problem type of a 503 caused by a dependency.
pub const DEPENDENCY_UNAVAILABLE: &str = "urn:postlaunch:problem:dependency-unavailable";

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), unavailable: None }
    }

    fn unavailable(
        dependency: &'static str,
        retry_after: std::time::Duration,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
            unavailable: Some(Unavailable { dependency, retry_after }),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let Some(Unavailable { dependency, retry_after }) = self.unavailable else {
            return (self.status, Json(json!({ "error": self.message }))).into_response();
        };
        // Whole seconds, rounded up: a client that waits that long finds the
        // breaker ready for a trial call.
        let seconds = retry_after.as_millis().div_ceil(1000).max(1);
        let body = json!({
            "type": DEPENDENCY_UNAVAILABLE,
            "title": format!("{dependency} is unavailable"),
            "status": self.status.as_u16(),
            "detail": self.message,
            "dependency": dependency,
            "retry_after_seconds": seconds,
            "error": self.message,
        });
        (
            self.status,
            [("content-type", "application/problem+json"), ("retry-after", &seconds.to_string())],
            body.to_string(),
        )
            .into_response()
    }
}

/// The retry hint when nothing better is known: a pool wait or a fault.
const RETRY_SOON: std::time::Duration = std::time::Duration::from_secs(1);

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Down | CatalogError::PoolTimeout(_) => {
                Self::unavailable("database", RETRY_SOON, e.to_string())
            }
            CatalogError::BreakerOpen { dependency, retry_after } => {
                Self::unavailable(dependency, retry_after, e.to_string())
            }
            CatalogError::Remote { dependency, .. } => {
                Self::unavailable(dependency, RETRY_SOON, e.to_string())
            }
            CatalogError::Database(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Malformed(message) => Self::new(StatusCode::BAD_REQUEST, message),
            AuthError::Refused(message) => Self::new(StatusCode::UNAUTHORIZED, message),
            AuthError::Unavailable { retry_after, detail } => {
                Self::unavailable("auth", retry_after, detail)
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct Paging {
    page: Option<u32>,
    per_page: Option<u32>,
}

impl Paging {
    fn resolve(&self) -> Result<(u32, u32), ApiError> {
        let page = self.page.unwrap_or(1).max(1);
        let per_page = self.per_page.unwrap_or(PER_PAGE);
        if !(1..=MAX_PER_PAGE).contains(&per_page) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("per_page must be between 1 and {MAX_PER_PAGE}, got {per_page}"),
            ));
        }
        Ok((page, per_page))
    }
}

/// Serves `key` from the cache, or computes it from the catalog and caches it.
async fn cached<T, F>(state: &AppState, key: String, load: F) -> Result<Response, ApiError>
where
    T: Serialize,
    F: Future<Output = Result<Option<T>, ApiError>>,
{
    match state.cache.lookup(&key).await {
        Ok(Some(body)) => return Ok(json_body(body, "hit")),
        Ok(None) => {}
        Err(e) if !state.cache_fallback => {
            let retry = std::time::Duration::from_secs(1);
            return Err(ApiError::unavailable("cache", retry, format!("cache: {e}")));
        }
        Err(_) => {}
    }
    let value = load.await?.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not found"))?;
    let body = serde_json::to_string(&value)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    state.cache.put(&key, &body).await;
    Ok(json_body(body, "miss"))
}

fn json_body(body: String, cache: &'static str) -> Response {
    ([("content-type", "application/json"), ("x-cache", cache)], body).into_response()
}

async fn collections(
    State(state): State<AppState>,
    Query(paging): Query<Paging>,
) -> Result<Response, ApiError> {
    let (page, per_page) = paging.resolve()?;
    cached(&state, format!("collections:{page}:{per_page}"), async {
        Ok(Some(state.catalog.collections(page, per_page).await?))
    })
    .await
}

async fn collection(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    cached(&state, format!("collection:{id}"), async { Ok(state.catalog.collection(id).await?) })
        .await
}

async fn collection_nfts(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(paging): Query<Paging>,
) -> Result<Response, ApiError> {
    let (page, per_page) = paging.resolve()?;
    cached(&state, format!("collection_nfts:{id}:{page}:{per_page}"), async {
        if state.catalog.collection(id).await?.is_none() {
            return Ok(None);
        }
        Ok(Some(state.catalog.collection_nfts(id, page, per_page).await?))
    })
    .await
}

async fn nft(State(state): State<AppState>, Path(id): Path<i64>) -> Result<Response, ApiError> {
    cached(&state, format!("nft:{id}"), async { Ok(state.catalog.nft(id).await?) }).await
}

#[derive(Debug, Deserialize)]
struct SearchQuery {
    q: Option<String>,
}

async fn search(
    State(state): State<AppState>,
    Query(query): Query<SearchQuery>,
) -> Result<Response, ApiError> {
    let text = query.q.unwrap_or_default();
    let text = text.trim();
    if text.is_empty() || text.chars().count() > 100 {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "q must be 1 to 100 characters"));
    }
    cached(&state, format!("search:{}", text.to_lowercase()), async {
        Ok(Some(state.catalog.search(text, PER_PAGE).await?))
    })
    .await
}

async fn graphql(
    State(state): State<AppState>,
    Json(request): Json<async_graphql::Request>,
) -> Response {
    Json(state.schema.execute(request).await).into_response()
}

async fn nonce(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let grant = state.auth.issue_nonce().await?;
    Ok(Json(json!({
        "nonce": grant.nonce,
        "domain": grant.domain,
        "chain_id": grant.chain_id,
        "expires_in_seconds": grant.expires_in_seconds,
    })))
}

#[derive(Debug, Deserialize)]
struct VerifyRequest {
    message: String,
    signature: String,
}

async fn verify(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<VerifyRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let device = header(&headers, "x-device-fingerprint");
    let signed_in = state.auth.verify(&body.message, &body.signature, device).await?;
    Ok(Json(json!({
        "token": signed_in.token,
        "address": signed_in.address,
        "expires_in_seconds": signed_in.expires_in_seconds,
    })))
}

/// The signed-in account of a request: its bearer session, on the device
/// the session is bound to.
async fn signed_in(state: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    let token = header(headers, "authorization").strip_prefix("Bearer ").unwrap_or_default();
    let (address, device) = state.auth.session(token).await?.ok_or_else(|| {
        ApiError::new(StatusCode::UNAUTHORIZED, "missing, unknown or expired session token")
    })?;
    if device != header(headers, "x-device-fingerprint") {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "session is bound to another device"));
    }
    Ok(address)
}

async fn me(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(json!({ "address": signed_in(&state, &headers).await? })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderRequest {
    nft_id: i64,
    kind: OrderKind,
    price_wei: String,
}

impl From<OrderError> for ApiError {
    fn from(e: OrderError) -> Self {
        let status = match &e {
            OrderError::Invalid(_) => StatusCode::BAD_REQUEST,
            OrderError::UnknownNft(_) => StatusCode::NOT_FOUND,
            OrderError::KeyReused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            OrderError::NoDatabase => StatusCode::NOT_IMPLEMENTED,
            OrderError::Database(_) => {
                return Self::unavailable("database", RETRY_SOON, e.to_string());
            }
            OrderError::Unavailable { dependency, retry_after, .. } => {
                return Self::unavailable(dependency, *retry_after, e.to_string());
            }
        };
        Self::new(status, e.to_string())
    }
}

/// `POST /api/orders` with `Idempotency-Key`: 201 with the new order, 200 with
/// the one the key placed before.
async fn place_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let idempotency_key = header(&headers, "idempotency-key").to_owned();
    if idempotency_key.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "an Idempotency-Key header is required (any unique string per order, reused on retry)",
        ));
    }
    let request: OrderRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "invalid order: {e} (expected {{\"nft_id\": 1, \"kind\": \"buy\"|\"list\", \"price_wei\": \"1000\"}})"
            ),
        )
    })?;
    let account = signed_in(&state, &headers).await?;
    let order = NewOrder {
        idempotency_key,
        account,
        nft_id: request.nft_id,
        kind: request.kind,
        price_wei: request.price_wei,
    };
    let placed = state.catalog.place_order(&order).await?;
    let status = if placed.replayed { StatusCode::OK } else { StatusCode::CREATED };
    let body = json!({
        "order_id": placed.order_id,
        "event_id": placed.event_id,
        "collection_id": placed.collection_id,
        "replayed": placed.replayed,
    });
    Ok((status, Json(body)).into_response())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

/// Ready when the database answers; the cache may be degraded.
async fn ready(State(state): State<AppState>) -> Response {
    let database = state.catalog.ping().await;
    let cache_state = state.cache.breaker().state();
    let mut body = json!({
        "database": database.as_ref().map_or_else(|e| e.to_string(), |()| "ok".to_owned()),
        "database_breaker": state.catalog.breaker().state().as_str(),
        "cache": if cache_state == BreakerState::Closed { "ok" } else { "degraded" },
        "cache_breaker": cache_state.as_str(),
        "catalog": state.catalog.backend(),
        "cache_backend": state.cache.backend(),
    });
    // A gateway: the catalog answer above came through the catalog service;
    // auth being down degrades sign-in only, so it does not make us unready.
    if let Some(auth) = state.auth.breaker() {
        body["catalog_breaker"] = json!(state.catalog.breaker().state().as_str());
        body["auth_breaker"] = json!(auth.state().as_str());
    }
    let status = if database.is_ok() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// `/metrics` of every role: the Prometheus text exposition.
async fn metrics(State(metrics): State<Metrics>) -> impl IntoResponse {
    ([("content-type", "text/plain; version=0.0.4")], metrics.render())
}

impl axum::extract::FromRef<AppState> for Metrics {
    fn from_ref(state: &AppState) -> Metrics {
        state.metrics.clone()
    }
}

impl axum::extract::FromRef<OpsState> for Metrics {
    fn from_ref(state: &OpsState) -> Metrics {
        state.metrics.clone()
    }
}

impl axum::extract::FromRef<AppState> for Faults {
    fn from_ref(state: &AppState) -> Faults {
        state.faults.clone()
    }
}

async fn get_faults(State(faults): State<Faults>) -> Json<FaultSpec> {
    Json(faults.spec())
}

async fn set_faults(
    State(faults): State<Faults>,
    body: axum::body::Bytes,
) -> Result<Json<FaultSpec>, ApiError> {
    let spec: FaultSpec = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid fault spec: {e}")))?;
    spec.validate()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid fault spec: {e}")))?;
    tracing::warn!(?spec, "faults set");
    faults.set(spec.clone());
    Ok(Json(spec))
}

async fn clear_faults(State(faults): State<Faults>) -> Json<FaultSpec> {
    faults.set(FaultSpec::default());
    tracing::info!("faults cleared");
    Json(FaultSpec::default())
}
