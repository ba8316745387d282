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

use crate::auth::{Authenticator, SignInError};
use crate::breaker::BreakerState;
use crate::cache::Cache;
use crate::catalog::{Catalog, CatalogError};
use crate::faults::{FaultSpec, Faults};
use crate::graphql::MarketplaceSchema;
use crate::metrics::Metrics;

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
    /// Sign-in and sessions.
    pub auth: Arc<Authenticator>,
    /// Fault knobs.
    pub faults: Faults,
    /// Exported series.
    pub metrics: Metrics,
    /// GraphQL schema.
    pub schema: MarketplaceSchema,
    /// `--release`: sent back as `x-release` on every response, so a test
    /// or a blue-green check sees which version served it.
    pub release: Option<axum::http::HeaderValue>,
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
        .route("/graphql", post(graphql))
        .route("/auth/nonce", post(nonce))
        .route("/auth/verify", post(verify))
        .route_layer(middleware::from_fn_with_state(state.clone(), inject_faults));
    let operations = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/admin/faults", get(get_faults).post(set_faults).delete(clear_faults));
    marketplace
        .merge(operations)
        .route_layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state)
}

/// Counts every request in `http_requests_total` and times it.
async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
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

/// A JSON error body `{"error": "..."}` with a status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        let status = match e {
            CatalogError::Down | CatalogError::BreakerOpen | CatalogError::PoolTimeout(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            CatalogError::Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.to_string())
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
    if let Some(body) = state.cache.get(&key).await {
        return Ok(json_body(body, "hit"));
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

async fn nonce(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({
        "nonce": state.auth.issue_nonce(),
        "domain": state.auth.domain(),
        "chain_id": state.auth.chain_id(),
        "expires_in_seconds": crate::auth::NONCE_TTL.as_secs(),
    }))
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
    match state.auth.verify(&body.message, &body.signature, device) {
        Ok((token, session)) => Ok(Json(json!({
            "token": token,
            "address": session.address,
            "expires_in_seconds": crate::auth::SESSION_TTL.as_secs(),
        }))),
        Err(e @ SignInError::Malformed(_)) => {
            Err(ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))
        }
        Err(e) => Err(ApiError::new(StatusCode::UNAUTHORIZED, e.to_string())),
    }
}

async fn me(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let token = header(&headers, "authorization").strip_prefix("Bearer ").unwrap_or_default();
    let session = state.auth.session(token).ok_or_else(|| {
        ApiError::new(StatusCode::UNAUTHORIZED, "missing, unknown or expired session token")
    })?;
    if session.device != header(&headers, "x-device-fingerprint") {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "session is bound to another device"));
    }
    Ok(Json(json!({ "address": session.address })))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

/// Ready when the database answers; the cache may be degraded.
async fn ready(State(state): State<AppState>) -> Response {
    let database = state.catalog.ping().await;
    let cache_state = state.cache.breaker().state();
    let body = json!({
        "database": database.as_ref().map_or_else(|e| e.to_string(), |()| "ok".to_owned()),
        "database_breaker": state.catalog.breaker().state().as_str(),
        "cache": if cache_state == BreakerState::Closed { "ok" } else { "degraded" },
        "cache_breaker": cache_state.as_str(),
        "catalog": state.catalog.backend(),
        "cache_backend": state.cache.backend(),
    });
    let status = if database.is_ok() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([("content-type", "text/plain; version=0.0.4")], state.metrics.render())
}

async fn get_faults(State(state): State<AppState>) -> Json<FaultSpec> {
    Json(state.faults.spec())
}

async fn set_faults(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<FaultSpec>, ApiError> {
    let spec: FaultSpec = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid fault spec: {e}")))?;
    spec.validate()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid fault spec: {e}")))?;
    tracing::warn!(?spec, "faults set");
    state.faults.set(spec.clone());
    Ok(Json(spec))
}

async fn clear_faults(State(state): State<AppState>) -> Json<FaultSpec> {
    state.faults.set(FaultSpec::default());
    tracing::info!("faults cleared");
    Json(FaultSpec::default())
}
