//! The `auth` and `catalog` roles' gRPC services, over the same
//! [`Authenticator`] and [`Catalog`] that `--role all` uses in-process.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb::{self, auth_server, catalog_server};
use super::{AUTH_SERVICE, CATALOG_SERVICE, observed};
use crate::auth::{Authenticator, SESSION_TTL, SignInError};
use crate::catalog::{Catalog, CatalogError};
use crate::metrics::Metrics;
use crate::orders::{NewOrder, OrderError, OrderKind};

/// Sign-in and sessions over gRPC.
#[derive(Debug)]
pub struct AuthService {
    auth: Arc<Authenticator>,
    metrics: Metrics,
}

impl AuthService {
    /// Serves `auth`, timing every call in `grpc_server_handling_seconds`.
    pub fn new(auth: Arc<Authenticator>, metrics: Metrics) -> Self {
        Self { auth, metrics }
    }
}

#[tonic::async_trait]
impl auth_server::Auth for AuthService {
    async fn issue_nonce(
        &self,
        _: Request<pb::IssueNonceRequest>,
    ) -> Result<Response<pb::IssueNonceReply>, Status> {
        observed(&self.metrics.grpc_server, AUTH_SERVICE, "IssueNonce", async {
            Ok(Response::new(pb::IssueNonceReply {
                nonce: self.auth.issue_nonce().await.map_err(refusal)?,
                domain: self.auth.domain().to_owned(),
                chain_id: self.auth.chain_id(),
                expires_in_seconds: crate::auth::NONCE_TTL.as_secs(),
            }))
        })
        .await
    }

    async fn verify(
        &self,
        request: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyReply>, Status> {
        observed(&self.metrics.grpc_server, AUTH_SERVICE, "Verify", async {
            let request = request.into_inner();
            let (token, session) = self
                .auth
                .verify(&request.message, &request.signature, &request.device)
                .await
                .map_err(refusal)?;
            Ok(Response::new(pb::VerifyReply {
                token,
                address: session.address,
                expires_in_seconds: SESSION_TTL.as_secs(),
            }))
        })
        .await
    }

    async fn session(
        &self,
        request: Request<pb::SessionRequest>,
    ) -> Result<Response<pb::SessionReply>, Status> {
        observed(&self.metrics.grpc_server, AUTH_SERVICE, "Session", async {
            let reply =
                match self.auth.session(&request.into_inner().token).await.map_err(refusal)? {
                    Some(session) => pb::SessionReply {
                        found: true,
                        address: session.address,
                        device: session.device,
                    },
                    None => pb::SessionReply::default(),
                };
            Ok(Response::new(reply))
        })
        .await
    }
}

/// A sign-in failure as a status: INVALID_ARGUMENT for what does not parse,
/// UNAVAILABLE when the session store is down, UNAUTHENTICATED otherwise.
fn refusal(e: SignInError) -> Status {
    match e {
        SignInError::Malformed(_) => Status::invalid_argument(e.to_string()),
        SignInError::StoreUnavailable(_) => Status::unavailable(e.to_string()),
        _ => Status::unauthenticated(e.to_string()),
    }
}

/// The catalog over gRPC.
#[derive(Debug)]
pub struct CatalogService {
    catalog: Arc<Catalog>,
    metrics: Metrics,
}

impl CatalogService {
    /// Serves `catalog`, timing every call in `grpc_server_handling_seconds`.
    pub fn new(catalog: Arc<Catalog>, metrics: Metrics) -> Self {
        Self { catalog, metrics }
    }

    /// Times `call`; boxed, as the catalog's futures are large.
    async fn served<T>(
        &self,
        method: &'static str,
        call: impl Future<Output = Result<T, CatalogError>>,
    ) -> Result<Response<T>, Status> {
        let call = Box::pin(call);
        observed(&self.metrics.grpc_server, CATALOG_SERVICE, method, async {
            call.await.map(Response::new).map_err(status)
        })
        .await
    }
}

/// A catalog failure as the gateway will see it: UNAVAILABLE when the catalog
/// cannot serve right now (its database is down, its pool exhausted, its
/// breaker open), INTERNAL for a database error.
fn status(e: CatalogError) -> Status {
    match e {
        CatalogError::Database(_) => Status::internal(e.to_string()),
        _ => Status::unavailable(e.to_string()),
    }
}

/// Largest page a peer may ask for, as on the REST routes.
const MAX_LIMIT: i64 = 100;

/// Checks a page window from the wire; returns the limit.
fn window(offset: i64, limit: i64) -> Result<u32, Status> {
    if offset < 0 || offset > i64::from(i32::MAX) {
        return Err(Status::invalid_argument(format!(
            "offset must be 0 to {}, got {offset}",
            i32::MAX
        )));
    }
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Status::invalid_argument(format!(
            "limit must be 1 to {MAX_LIMIT}, got {limit}"
        )));
    }
    Ok(limit as u32)
}

fn collections(list: Vec<crate::catalog::Collection>) -> pb::CollectionList {
    pb::CollectionList { collections: list.into_iter().map(Into::into).collect() }
}

fn nfts(list: Vec<crate::catalog::Nft>) -> pb::NftList {
    pb::NftList { nfts: list.into_iter().map(Into::into).collect() }
}

#[tonic::async_trait]
impl catalog_server::Catalog for CatalogService {
    async fn collections(
        &self,
        request: Request<pb::PageRequest>,
    ) -> Result<Response<pb::CollectionList>, Status> {
        let r = request.into_inner();
        let limit = window(r.offset, r.limit)?;
        self.served("Collections", async {
            Ok(collections(self.catalog.collections_at(r.offset, limit).await?))
        })
        .await
    }

    async fn get_collection(
        &self,
        request: Request<pb::IdRequest>,
    ) -> Result<Response<pb::CollectionReply>, Status> {
        let id = request.into_inner().id;
        self.served("GetCollection", async {
            Ok(pb::CollectionReply {
                collection: self.catalog.collection(id).await?.map(Into::into),
            })
        })
        .await
    }

    async fn collection_nfts(
        &self,
        request: Request<pb::CollectionNftsRequest>,
    ) -> Result<Response<pb::NftList>, Status> {
        let r = request.into_inner();
        let limit = window(r.offset, r.limit)?;
        self.served("CollectionNfts", async {
            Ok(nfts(self.catalog.collection_nfts_at(r.collection_id, r.offset, limit).await?))
        })
        .await
    }

    async fn get_nft(
        &self,
        request: Request<pb::IdRequest>,
    ) -> Result<Response<pb::NftReply>, Status> {
        let id = request.into_inner().id;
        self.served("GetNft", async {
            Ok(pb::NftReply { nft: self.catalog.nft(id).await?.map(Into::into) })
        })
        .await
    }

    async fn search(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::CollectionList>, Status> {
        let r = request.into_inner();
        let limit = window(0, r.limit)?;
        if r.text.trim().is_empty() || r.text.chars().count() > 100 {
            return Err(Status::invalid_argument("text must be 1 to 100 characters"));
        }
        self.served("Search", async { Ok(collections(self.catalog.search(&r.text, limit).await?)) })
            .await
    }

    async fn owner_nfts(
        &self,
        request: Request<pb::OwnerRequest>,
    ) -> Result<Response<pb::NftList>, Status> {
        let r = request.into_inner();
        let limit = window(0, r.limit)?;
        self.served("OwnerNfts", async {
            Ok(nfts(self.catalog.owner_nfts(&r.owner, limit).await?))
        })
        .await
    }

    async fn place_order(
        &self,
        request: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::PlaceOrderReply>, Status> {
        let r = request.into_inner();
        observed(&self.metrics.grpc_server, CATALOG_SERVICE, "PlaceOrder", async {
            let kind = OrderKind::parse(&r.kind).ok_or_else(|| {
                Status::invalid_argument(format!("kind must be buy or list, got {:?}", r.kind))
            })?;
            let order = NewOrder {
                idempotency_key: r.idempotency_key,
                account: r.account,
                nft_id: r.nft_id,
                kind,
                price_wei: r.price_wei,
            };
            let placed = self.catalog.place_order(&order).await.map_err(|e| match e {
                OrderError::Invalid(_) => Status::invalid_argument(e.to_string()),
                OrderError::UnknownNft(_) => Status::not_found(e.to_string()),
                OrderError::KeyReused(_) => Status::already_exists(e.to_string()),
                OrderError::NoDatabase => Status::failed_precondition(e.to_string()),
                OrderError::Database(_) => Status::internal(e.to_string()),
                OrderError::Unavailable { .. } => Status::unavailable(e.to_string()),
            })?;
            Ok(Response::new(pb::PlaceOrderReply {
                order_id: placed.order_id,
                event_id: placed.event_id,
                collection_id: placed.collection_id,
                replayed: placed.replayed,
            }))
        })
        .await
    }

    async fn ping(&self, _: Request<pb::PingRequest>) -> Result<Response<pb::PingReply>, Status> {
        self.served("Ping", async {
            self.catalog.ping().await?;
            Ok(pb::PingReply { backend: self.catalog.backend().to_owned() })
        })
        .await
    }
}
