//! What the marketplace over-pays for, measured.
//!
//! Inputs, each optional and named in the report when absent: the cluster
//! ([`kube`]), Prometheus ([`prom`]), S3 ([`s3`]), PostgreSQL, a price
//! model ([`price`]) and a bill ([`bill`]). [`analyze`] turns them into
//! recommendations (right-sizing with KRR's rules that never go below an
//! OOM-kill level, idle workloads, volumes, node packing, S3 lifecycle,
//! monitoring volume, pools), each with its monthly saving and risk, an
//! allocation with idle cost as its own line, a reconciliation with the
//! bill, and the plan's savings verdict.

pub mod analyze;
pub mod bill;
pub mod kube;
pub mod price;
pub mod prom;
pub mod quantity;
pub mod s3;

/// What went wrong, by exit code: bad input (a malformed price model or
/// bill: exit 2) or could not run (Prometheus, the API server or S3
/// unreachable: exit 3).
pub use shared_types::ToolError as Error;

/// The price model's JSON Schema (docs/cost-analyzer/price-model.schema.json).
#[cfg(feature = "schema")]
pub fn price_model_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(price::PriceModel)).unwrap_or_default()
}
