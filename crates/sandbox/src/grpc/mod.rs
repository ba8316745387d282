//! gRPC between the roles (`proto/marketplace.proto`): the gateway is a client
//! of the `auth` and `catalog` services. Every call is timed on both sides in
//! `grpc_client_handling_seconds` / `grpc_server_handling_seconds`
//! `{grpc_type, grpc_service, grpc_method, grpc_code}`, the series and labels
//! go-grpc-prometheus exports, so dashboards written for Go services read them.

pub mod client;
pub mod server;
pub mod tls;

use std::future::Future;
use std::time::Instant;

use prometheus::HistogramVec;
use tonic::{Code, Status};

use crate::catalog::{Collection, Nft};

/// The code generated from `proto/marketplace.proto`.
#[allow(missing_docs, unused_qualifications, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("postlaunch.marketplace.v1");
}

/// `grpc_service` of the auth service.
pub const AUTH_SERVICE: &str = "postlaunch.marketplace.v1.Auth";
/// `grpc_service` of the catalog service.
pub const CATALOG_SERVICE: &str = "postlaunch.marketplace.v1.Catalog";

/// The `grpc_code` label: the code's name as gRPC's Go and C++ libraries spell it.
pub fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// Runs one unary call and records its duration and outcome in `histogram`.
pub async fn observed<T>(
    histogram: &HistogramVec,
    service: &'static str,
    method: &'static str,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    let start = Instant::now();
    let outcome = call.await;
    let code = outcome.as_ref().map_or_else(Status::code, |_| Code::Ok);
    histogram
        .with_label_values(&["unary", service, method, code_label(code)])
        .observe(start.elapsed().as_secs_f64());
    outcome
}

impl From<Collection> for pb::Collection {
    fn from(c: Collection) -> Self {
        Self {
            id: c.id,
            name: c.name,
            slug: c.slug,
            contract: c.contract,
            creator: c.creator,
            nft_count: c.nft_count,
            floor_price_wei: c.floor_price_wei,
        }
    }
}

impl From<pb::Collection> for Collection {
    fn from(c: pb::Collection) -> Self {
        Self {
            id: c.id,
            name: c.name,
            slug: c.slug,
            contract: c.contract,
            creator: c.creator,
            nft_count: c.nft_count,
            floor_price_wei: c.floor_price_wei,
        }
    }
}

impl From<Nft> for pb::Nft {
    fn from(n: Nft) -> Self {
        Self {
            id: n.id,
            collection_id: n.collection_id,
            token_id: n.token_id,
            name: n.name,
            owner: n.owner,
            image_url: n.image_url,
        }
    }
}

impl From<pb::Nft> for Nft {
    fn from(n: pb::Nft) -> Self {
        Self {
            id: n.id,
            collection_id: n.collection_id,
            token_id: n.token_id,
            name: n.name,
            owner: n.owner,
            image_url: n.image_url,
        }
    }
}
