//! The gateway's side of the gRPC calls: one lazily connected channel per peer
//! (a peer that is down at start is retried on every call, never fatal), a
//! deadline on every call, and the client histogram.

use std::time::Duration;

use prometheus::HistogramVec;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::pb::{self, auth_client::AuthClient, catalog_client::CatalogClient};
use super::tls::TlsFiles;
use super::{AUTH_SERVICE, CATALOG_SERVICE, observed};
use crate::catalog::{CatalogError, Collection, Nft};
use crate::orders::{NewOrder, OrderError, PlacedOrder};

/// Why a peer's channel could not be set up (a bad URL or TLS material).
#[derive(Debug, thiserror::Error)]
#[error("{flag} {url}: {source}")]
pub struct ChannelError {
    /// The flag that named the peer.
    pub flag: &'static str,
    /// The URL given.
    pub url: String,
    /// What tonic refused.
    pub source: tonic::transport::Error,
}

/// A channel to `peer` (its role name, which its certificate must carry) at
/// `url`, connected on first use. A background attempt logs at once whether
/// the peer is reachable now.
pub fn channel(
    flag: &'static str,
    url: &str,
    peer: &'static str,
    tls: Option<&TlsFiles>,
    timeout: Duration,
) -> Result<Channel, ChannelError> {
    let error = |source| ChannelError { flag, url: url.to_owned(), source };
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(error)?
        .connect_timeout(timeout)
        .timeout(timeout)
        .tcp_nodelay(true);
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls.client(peer)).map_err(error)?;
    }
    let probe = endpoint.clone();
    let shown = url.to_owned();
    tokio::spawn(async move {
        match probe.connect().await {
            Ok(_) => tracing::info!(peer, url = %shown, "gRPC peer reachable"),
            Err(e) => tracing::warn!(
                peer,
                url = %shown,
                error = %shared_types::pg::error_chain(&e),
                "gRPC peer unreachable at start; its circuit breaker answers for it until it is up"
            ),
        }
    });
    Ok(endpoint.connect_lazy())
}

/// The catalog service, as the gateway's catalog store.
#[derive(Debug, Clone)]
pub struct RemoteCatalog {
    client: CatalogClient<Channel>,
    histogram: HistogramVec,
}

impl RemoteCatalog {
    /// Calls the catalog over `channel`, timing calls into `histogram`.
    pub fn new(channel: Channel, histogram: HistogramVec) -> Self {
        Self { client: CatalogClient::new(channel), histogram }
    }

    async fn call<R, F, Fut>(&self, method: &'static str, call: F) -> Result<R, CatalogError>
    where
        F: FnOnce(CatalogClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, Status>>,
    {
        observed(&self.histogram, CATALOG_SERVICE, method, call(self.client.clone()))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| CatalogError::Remote {
                dependency: "catalog",
                detail: describe(&status),
            })
    }

    pub(crate) async fn collections(
        &self,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<Collection>, CatalogError> {
        let reply = self
            .call("Collections", |mut c| async move {
                c.collections(pb::PageRequest { offset, limit }).await
            })
            .await?;
        Ok(reply.collections.into_iter().map(Into::into).collect())
    }

    pub(crate) async fn collection(&self, id: i64) -> Result<Option<Collection>, CatalogError> {
        let reply =
            self.call("GetCollection", |mut c| async move {
                c.get_collection(pb::IdRequest { id }).await
            })
            .await?;
        Ok(reply.collection.map(Into::into))
    }

    pub(crate) async fn collection_nfts(
        &self,
        collection_id: i64,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<Nft>, CatalogError> {
        let reply = self
            .call("CollectionNfts", |mut c| async move {
                c.collection_nfts(pb::CollectionNftsRequest { collection_id, offset, limit }).await
            })
            .await?;
        Ok(reply.nfts.into_iter().map(Into::into).collect())
    }

    pub(crate) async fn nft(&self, id: i64) -> Result<Option<Nft>, CatalogError> {
        let reply = self
            .call("GetNft", |mut c| async move { c.get_nft(pb::IdRequest { id }).await })
            .await?;
        Ok(reply.nft.map(Into::into))
    }

    pub(crate) async fn search(
        &self,
        text: &str,
        limit: i64,
    ) -> Result<Vec<Collection>, CatalogError> {
        let text = text.to_owned();
        let reply =
            self.call("Search", |mut c| async move {
                c.search(pb::SearchRequest { text, limit }).await
            })
            .await?;
        Ok(reply.collections.into_iter().map(Into::into).collect())
    }

    pub(crate) async fn owner_nfts(
        &self,
        owner: &str,
        limit: i64,
    ) -> Result<Vec<Nft>, CatalogError> {
        let owner = owner.to_owned();
        let reply = self
            .call("OwnerNfts", |mut c| async move {
                c.owner_nfts(pb::OwnerRequest { owner, limit }).await
            })
            .await?;
        Ok(reply.nfts.into_iter().map(Into::into).collect())
    }

    /// `PlaceOrder`: refusals come back as the [`OrderError`] the catalog
    /// raised; a failed call is [`OrderError::Unavailable`] naming `catalog`.
    pub(crate) async fn place_order(&self, order: &NewOrder) -> Result<PlacedOrder, OrderError> {
        let request = pb::PlaceOrderRequest {
            idempotency_key: order.idempotency_key.clone(),
            account: order.account.clone(),
            nft_id: order.nft_id,
            kind: order.kind.as_str().to_owned(),
            price_wei: order.price_wei.clone(),
        };
        let outcome = observed(
            &self.histogram,
            CATALOG_SERVICE,
            "PlaceOrder",
            self.client.clone().place_order(request),
        )
        .await;
        match outcome {
            Ok(reply) => {
                let reply = reply.into_inner();
                Ok(PlacedOrder {
                    order_id: reply.order_id,
                    event_id: reply.event_id,
                    collection_id: reply.collection_id,
                    replayed: reply.replayed,
                })
            }
            Err(s) => Err(match s.code() {
                Code::NotFound => OrderError::UnknownNft(order.nft_id),
                Code::InvalidArgument => OrderError::Invalid(s.message().to_owned()),
                Code::AlreadyExists => OrderError::KeyReused(order.idempotency_key.clone()),
                Code::FailedPrecondition => OrderError::NoDatabase,
                _ => OrderError::Unavailable {
                    dependency: "catalog",
                    retry_after: Duration::from_secs(1),
                    detail: format!("catalog service call failed: {}", describe(&s)),
                },
            }),
        }
    }

    pub(crate) async fn ping(&self) -> Result<(), CatalogError> {
        self.call("Ping", |mut c| async move { c.ping(pb::PingRequest {}).await }).await?;
        Ok(())
    }
}

/// `Unavailable: connection refused` rather than tonic's longer debug form.
pub fn describe(status: &Status) -> String {
    let message = status.message();
    let message = if message.is_empty() { "no detail" } else { message };
    format!("{}: {message}", super::code_label(status.code()))
}

/// What the auth service said, when it answered.
#[derive(Debug)]
pub enum AuthReply<T> {
    /// The call succeeded.
    Ok(T),
    /// The request does not parse (INVALID_ARGUMENT).
    Malformed(String),
    /// The sign-in was refused (UNAUTHENTICATED).
    Refused(String),
}

/// The auth service, as the gateway's authenticator.
#[derive(Debug, Clone)]
pub struct RemoteAuth {
    client: AuthClient<Channel>,
    histogram: HistogramVec,
}

impl RemoteAuth {
    /// Calls auth over `channel`, timing calls into `histogram`.
    pub fn new(channel: Channel, histogram: HistogramVec) -> Self {
        Self { client: AuthClient::new(channel), histogram }
    }

    /// One call: an answer (including a refusal, which is not the service
    /// failing) or the status of a failed call.
    async fn call<R, F, Fut>(&self, method: &'static str, call: F) -> Result<AuthReply<R>, Status>
    where
        F: FnOnce(AuthClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, Status>>,
    {
        match observed(&self.histogram, AUTH_SERVICE, method, call(self.client.clone())).await {
            Ok(reply) => Ok(AuthReply::Ok(reply.into_inner())),
            Err(s) if s.code() == Code::InvalidArgument => {
                Ok(AuthReply::Malformed(s.message().to_owned()))
            }
            Err(s) if s.code() == Code::Unauthenticated => {
                Ok(AuthReply::Refused(s.message().to_owned()))
            }
            Err(s) => Err(s),
        }
    }

    /// `IssueNonce`.
    pub async fn issue_nonce(&self) -> Result<AuthReply<pb::IssueNonceReply>, Status> {
        self.call(
            "IssueNonce",
            |mut c| async move { c.issue_nonce(pb::IssueNonceRequest {}).await },
        )
        .await
    }

    /// `Verify`.
    pub async fn verify(
        &self,
        message: &str,
        signature: &str,
        device: &str,
    ) -> Result<AuthReply<pb::VerifyReply>, Status> {
        let request = pb::VerifyRequest {
            message: message.to_owned(),
            signature: signature.to_owned(),
            device: device.to_owned(),
        };
        self.call("Verify", |mut c| async move { c.verify(request).await }).await
    }

    /// `Session`.
    pub async fn session(&self, token: &str) -> Result<AuthReply<pb::SessionReply>, Status> {
        let request = pb::SessionRequest { token: token.to_owned() };
        self.call("Session", |mut c| async move { c.session(request).await }).await
    }
}
