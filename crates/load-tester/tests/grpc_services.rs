//! The marketplace as services (testkit's Marketplace: a gateway calling
//! auth and catalog over gRPC): the run reports gRPC latency per method, from
//! both sides' histograms, next to its HTTP latency.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod common;

use common::{load_tester, report, text};
use testkit::marketplace::Role;
use testkit::{Marketplace, MarketplaceOptions};

#[tokio::test(flavor = "multi_thread")]
async fn grpc_latency_per_method_is_reported_next_to_http_latency() {
    let marketplace = Marketplace::start(MarketplaceOptions {
        common_args: ["--collections", "100", "--nfts", "2000"].map(str::to_owned).to_vec(),
        ..MarketplaceOptions::default()
    })
    .await
    .unwrap();
    let gateway = marketplace.gateway_url();
    let catalog = marketplace.url(Role::Catalog);
    let out = load_tester(&[
        "run",
        "--target",
        &gateway,
        "--metrics-url",
        &format!("{gateway}/metrics"),
        "--metrics-url",
        &format!("{catalog}/metrics"),
        "--users",
        "5",
        "--duration",
        "3s",
        "--think-time",
        "0ms..20ms",
        "--output",
        "json",
    ])
    .await;
    let r = report(&out);
    let find = |prefix: &str| {
        r.measurements
            .iter()
            .find(|m| m.name.starts_with(prefix))
            .unwrap_or_else(|| panic!("no measurement {prefix}*: {}", text(&out)))
    };
    assert!(r.measurements.iter().any(|m| m.name == "latency_p95"), "{:?}", r.measurements);
    // The gateway's client side and the catalog's server side of one method.
    let client = find(&format!("grpc_p95 client Catalog/GetCollection {gateway}"));
    let server = find(&format!("grpc_p95 server Catalog/GetCollection {catalog}"));
    assert_eq!(client.unit, "ms");
    assert!(client.value > 0.0 && client.value < 5_000.0, "{client:?}");
    assert!(server.value > 0.0 && server.value <= client.value * 10.0, "{server:?}");
    let calls = find(&format!("grpc_calls client Auth/Verify {gateway}"));
    assert!(calls.value >= 1.0, "sign-ins went through auth: {calls:?}");
}
