//! Helpers shared by the sandbox's integration tests: start the real binary
//! through testkit, read its metrics, set its faults.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise
#![allow(dead_code)]

#[allow(unused_imports)] // not every test binary signs in
pub use testkit::wallet;

use std::path::Path;

use serde_json::Value;
use testkit::Sandbox;

/// Starts this crate's freshly built binary with `args`.
pub async fn start(args: &[&str]) -> Sandbox {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    Sandbox::start_with_binary(Path::new(env!("CARGO_BIN_EXE_sandbox")), &args)
        .await
        .expect("sandbox starts")
}

/// A small in-memory catalog: quick to generate.
pub const SMALL: [&str; 4] = ["--collections", "50", "--nfts", "500"];

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

pub async fn get(sandbox: &Sandbox, path: &str) -> reqwest::Response {
    client().get(format!("{}{path}", sandbox.url())).send().await.expect("request sent")
}

pub async fn get_json(sandbox: &Sandbox, path: &str) -> Value {
    let response = get(sandbox, path).await;
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().await.expect("json body")
}

pub async fn post_json(sandbox: &Sandbox, path: &str, body: &Value) -> reqwest::Response {
    client().post(format!("{}{path}", sandbox.url())).json(body).send().await.expect("request sent")
}

pub async fn set_faults(sandbox: &Sandbox, spec: Value) {
    let response = post_json(sandbox, "/admin/faults", &spec).await;
    assert_eq!(
        response.status(),
        200,
        "faults accepted: {}",
        response.text().await.unwrap_or_default()
    );
}

/// The sum of every sample of `name` whose labels include all of `labels`,
/// read from `/metrics`.
pub async fn metric(sandbox: &Sandbox, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = get(sandbox, "/metrics").await.text().await.expect("metrics body");
    testkit::metrics::parse_samples(&text).sum(name, labels)
}
