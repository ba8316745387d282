//! The sandbox as separate services: a gateway calling auth and catalog over
//! gRPC, compared with `--role all`, with breakers per dependency, graceful
//! errors and mutual TLS checked by an outside client (curl).

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::wallet::{Wallet, sign_in};
use serde_json::{Value, json};
use testkit::marketplace::Role;
use testkit::{Marketplace, MarketplaceOptions, Sandbox, TempDatabase};

fn binary() -> Option<std::path::PathBuf> {
    Some(Path::new(env!("CARGO_BIN_EXE_sandbox")).to_path_buf())
}

fn small() -> Vec<String> {
    ["--collections", "40", "--nfts", "400"].map(str::to_owned).to_vec()
}

async fn fetch(base: &str, path: &str) -> (u16, Value) {
    let response = reqwest::get(format!("{base}{path}")).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn metric(base: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    testkit::metrics::parse_samples(&text).sum(name, labels)
}

const GRAPHQL: &str = "{ collection(id: 7) { name nftCount nfts(first: 3) { tokenId owner { address } } } search(text: \"7\", first: 5) { id slug } }";

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_over_grpc_serves_what_role_all_serves_on_the_same_catalog() {
    let db = TempDatabase::create().await.unwrap();
    let mut args = vec!["--database-url".to_owned(), db.url().to_owned()];
    args.extend(small());
    let all = Sandbox::start_with_binary(binary().unwrap(), &args).await.unwrap();
    let marketplace = Marketplace::start(MarketplaceOptions {
        binary: binary(),
        database_url: Some(db.url().to_owned()),
        common_args: small(),
        ..MarketplaceOptions::default()
    })
    .await
    .unwrap();
    let gateway = marketplace.gateway_url();

    let paths = [
        "/api/collections",
        "/api/collections?page=3&per_page=7",
        "/api/collections/7",
        "/api/collections/7/nfts?per_page=4&page=2",
        "/api/nfts/42",
        "/api/search?q=7",
        "/api/collections/99999",
        "/api/nfts/0",
        "/api/collections?per_page=1000",
    ];
    for path in paths {
        let expected = fetch(all.url(), path).await;
        let served = fetch(&gateway, path).await;
        assert_eq!(served, expected, "GET {path}");
    }
    let graphql = |base: String| async move {
        let response = reqwest::Client::new()
            .post(format!("{base}/graphql"))
            .json(&json!({ "query": GRAPHQL }))
            .send()
            .await
            .unwrap();
        response.json::<Value>().await.unwrap()
    };
    let expected = graphql(all.url().to_owned()).await;
    assert!(expected["data"]["collection"]["nfts"].as_array().is_some_and(|n| n.len() == 3));
    assert_eq!(graphql(gateway.clone()).await, expected);

    // Sign-in goes through the auth service and gives a session the gateway honours.
    let wallet = Wallet::new(7);
    let token = sign_in(&gateway, &wallet, "device-a").await.unwrap();
    let me = reqwest::Client::new()
        .get(format!("{gateway}/api/me"))
        .bearer_auth(&token)
        .header("x-device-fingerprint", "device-a")
        .send()
        .await
        .unwrap();
    assert_eq!(me.json::<Value>().await.unwrap()["address"], wallet.address.as_str());

    // Each side timed its calls, with the go-grpc-prometheus labels.
    let catalog = ("grpc_service", "postlaunch.marketplace.v1.Catalog");
    let ok = ("grpc_code", "OK");
    let method = ("grpc_method", "GetCollection");
    assert!(
        metric(&gateway, "grpc_client_handling_seconds_count", &[catalog, method, ok]).await >= 1.0
    );
    let catalog_url = marketplace.url(Role::Catalog);
    assert!(
        metric(&catalog_url, "grpc_server_handling_seconds_count", &[catalog, method, ok]).await
            >= 1.0
    );
    let verify =
        [("grpc_service", "postlaunch.marketplace.v1.Auth"), ("grpc_method", "Verify"), ok];
    assert_eq!(
        metric(&marketplace.url(Role::Auth), "grpc_server_handling_seconds_count", &verify).await,
        1.0
    );
    assert_eq!(fetch(&catalog_url, "/readyz").await.1["catalog"], "postgres");
}

/// POST /auth/nonce: the status, the content type and the body.
async fn nonce(gateway: &str) -> (u16, String, Value) {
    let response =
        reqwest::Client::new().post(format!("{gateway}/auth/nonce")).send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_down_fails_sign_in_with_a_problem_naming_auth_while_browsing_goes_on() {
    let mut marketplace = Marketplace::start(MarketplaceOptions {
        binary: binary(),
        common_args: small(),
        gateway_args: ["--breaker-failures", "3", "--breaker-open-for", "1s"]
            .map(str::to_owned)
            .to_vec(),
        ..MarketplaceOptions::default()
    })
    .await
    .unwrap();
    let gateway = marketplace.gateway_url();
    let wallet = Wallet::new(3);
    sign_in(&gateway, &wallet, "d").await.unwrap();

    let auth_calls = |gateway: String| async move {
        let auth = [("grpc_service", "postlaunch.marketplace.v1.Auth")];
        metric(&gateway, "grpc_client_handling_seconds_count", &auth).await
    };
    let calls_before = auth_calls(gateway.clone()).await;
    assert_eq!(calls_before, 2.0, "a sign-in is two auth calls (nonce, verify)");
    marketplace.kill(Role::Auth).await.unwrap();
    // Below the threshold each sign-in tries auth and fails; then the breaker
    // answers at once without calling it.
    for attempt in 1..=6 {
        let (status, content_type, problem) = nonce(&gateway).await;
        assert_eq!(status, 503, "attempt {attempt}: {problem}");
        assert_eq!(content_type, "application/problem+json");
        assert_eq!(problem["dependency"], "auth", "{problem}");
        assert_eq!(problem["type"], "urn:postlaunch:problem:dependency-unavailable");
        assert!(problem["retry_after_seconds"].as_u64().unwrap() >= 1);
        if attempt > 3 {
            assert_eq!(problem["detail"], "auth circuit breaker is open", "{problem}");
        }
    }
    let calls_while_open = auth_calls(gateway.clone()).await;
    assert_eq!(
        calls_while_open - calls_before,
        3.0,
        "only the calls below the threshold reached auth"
    );

    // Browsing never waits on auth: it stays 200 and makes no auth call.
    for id in 1..=20 {
        let started = Instant::now();
        assert_eq!(fetch(&gateway, &format!("/api/collections/{id}")).await.0, 200);
        assert!(started.elapsed() < Duration::from_secs(1), "browsing slowed down by auth");
    }
    assert_eq!(auth_calls(gateway.clone()).await, calls_while_open);
    assert_eq!(fetch(&gateway, "/readyz").await.1["auth_breaker"], "open");

    // Auth comes back; the gateway, not restarted, lets a trial through once
    // the breaker's second is over and sign-in works again.
    let gateway_pid = marketplace.pid(Role::Gateway);
    marketplace.restart(Role::Auth).await.unwrap();
    let (base, signer) = (&gateway, &wallet);
    testkit::wait_until("sign-in to recover", Duration::from_secs(15), || async move {
        sign_in(base, signer, "d").await.map_err(|(status, body)| {
            assert_eq!(status, 503, "{body}");
            body
        })
    })
    .await
    .unwrap();
    assert_eq!(marketplace.pid(Role::Gateway), gateway_pid);
    let transition = |from, to| [("dependency", "auth"), ("from", from), ("to", to)];
    let transitions = "circuit_breaker_transitions_total";
    assert!(metric(&gateway, transitions, &transition("closed", "open")).await >= 1.0);
    assert!(metric(&gateway, transitions, &transition("open", "half_open")).await >= 1.0);
    assert!(metric(&gateway, transitions, &transition("half_open", "closed")).await >= 1.0);
    assert_eq!(
        metric(&gateway, "circuit_breaker_state", &[("dependency", "auth"), ("state", "closed")])
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_in_redis_survive_an_auth_restart() {
    let namespace = testkit::unique_name("roles");
    let mut common = small();
    common.extend(["--cache-namespace".to_owned(), namespace]);
    let mut marketplace = Marketplace::start(MarketplaceOptions {
        binary: binary(),
        redis_url: Some(testkit::local_redis_url()),
        common_args: common,
        ..MarketplaceOptions::default()
    })
    .await
    .unwrap();
    let gateway = marketplace.gateway_url();
    let wallet = Wallet::new(8);
    let token = sign_in(&gateway, &wallet, "d").await.unwrap();
    marketplace.kill(Role::Auth).await.unwrap();
    marketplace.restart(Role::Auth).await.unwrap();
    let (base, token) = (&gateway, &token);
    let body = testkit::wait_until("auth to come back", Duration::from_secs(15), || async move {
        let me = reqwest::Client::new()
            .get(format!("{base}/api/me"))
            .bearer_auth(token)
            .header("x-device-fingerprint", "d")
            .send()
            .await
            .unwrap();
        let status = me.status().as_u16();
        let body: Value = me.json().await.unwrap();
        if status == 200 {
            return Ok(body);
        }
        // The gateway's breaker may still be open from the kill: a 503, never a 401.
        assert_eq!(status, 503, "the session was lost with the auth process: {body}");
        Err(body.to_string())
    })
    .await
    .unwrap();
    assert_eq!(body["address"], wallet.address.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn catalog_down_is_a_problem_naming_catalog_and_sign_in_goes_on() {
    let mut marketplace = Marketplace::start(MarketplaceOptions {
        binary: binary(),
        common_args: small(),
        gateway_args: ["--breaker-failures", "2"].map(str::to_owned).to_vec(),
        ..MarketplaceOptions::default()
    })
    .await
    .unwrap();
    let gateway = marketplace.gateway_url();
    marketplace.kill(Role::Catalog).await.unwrap();
    for id in 1..=4 {
        let response = reqwest::get(format!("{gateway}/api/collections/{id}")).await.unwrap();
        assert_eq!(response.status(), 503);
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["dependency"], "catalog", "{problem}");
    }
    assert_eq!(fetch(&gateway, "/readyz").await.0, 503, "no catalog: not ready");
    sign_in(&gateway, &Wallet::new(5), "d").await.unwrap();
}

/// `curl` (an HTTP/2 client we did not write) calling the catalog's `Ping`
/// over TLS: its exit code and what it printed.
fn curl_ping(url: &str, ca: &Path, client: Option<(&Path, &Path)>) -> (Option<i32>, String) {
    let mut command = std::process::Command::new("curl");
    command.args(["-sS", "--max-time", "10", "-o", "/dev/null", "-D", "-"]);
    command.args(["-H", "content-type: application/grpc", "-H", "te: trailers"]);
    command.args(["--data-binary", "@-"]);
    if url.starts_with("https") {
        command.arg("--http2").arg("--cacert").arg(ca);
    } else {
        command.arg("--http2-prior-knowledge");
    }
    if let Some((cert, key)) = client {
        command.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    command.arg(format!("{url}/postlaunch.marketplace.v1.Catalog/Ping"));
    command.stdin(std::process::Stdio::piped());
    command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("curl runs");
    {
        use std::io::Write;
        // An empty PingRequest: an uncompressed gRPC frame of length 0.
        child.stdin.take().unwrap().write_all(&[0, 0, 0, 0, 0]).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_refuses_foreign_certificates_and_plaintext() {
    let marketplace = Marketplace::start(MarketplaceOptions {
        binary: binary(),
        tls: true,
        common_args: small(),
        ..MarketplaceOptions::default()
    })
    .await
    .unwrap();
    let gateway = marketplace.gateway_url();
    assert_eq!(fetch(&gateway, "/api/collections/3").await.0, 200);
    sign_in(&gateway, &Wallet::new(4), "d").await.unwrap();

    let pki = marketplace.pki_dir().unwrap();
    let ca = pki.join("ca.pem");
    let grpc = marketplace.grpc_addr(Role::Catalog).unwrap();
    let https = format!("https://{grpc}");

    // A certificate of this marketplace's CA: answered.
    let ours = (pki.join("gateway.pem"), pki.join("gateway-key.pem"));
    let (code, text) = curl_ping(&https, &ca, Some((&ours.0, &ours.1)));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("grpc-status: 0"), "{text}");

    // A certificate from another CA (a second `sandbox certs`): refused.
    let other = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_sandbox"))
        .arg("certs")
        .arg(other.path())
        .output()
        .unwrap()
        .status;
    assert!(status.success());
    let foreign = (other.path().join("gateway.pem"), other.path().join("gateway-key.pem"));
    let (code, text) = curl_ping(&https, &ca, Some((&foreign.0, &foreign.1)));
    assert_ne!(code, Some(0), "a foreign client certificate was accepted: {text}");
    assert!(!text.contains("grpc-status"), "{text}");

    // No client certificate, and plaintext: refused.
    let (code, text) = curl_ping(&https, &ca, None);
    assert_ne!(code, Some(0), "a client without a certificate was accepted: {text}");
    let (code, text) = curl_ping(&format!("http://{grpc}"), &ca, None);
    assert_ne!(code, Some(0), "plaintext was accepted: {text}");
    assert!(!text.contains("grpc-status"), "{text}");

    // The gateway still works after all that.
    assert_eq!(fetch(&gateway, "/api/collections/4").await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_refuse_bad_input_with_the_reason() {
    let all = Sandbox::start_with_binary(binary().unwrap(), &small()).await.unwrap();
    let post = |key: Option<&'static str>, body: &'static str, token: Option<String>| {
        let mut request = reqwest::Client::new()
            .post(format!("{}/api/orders", all.url()))
            .header("content-type", "application/json")
            .header("x-device-fingerprint", "d")
            .body(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let order = r#"{"nft_id": 1, "kind": "buy", "price_wei": "100"}"#;
    let (status, body) = post(None, order, None).await;
    assert_eq!(status, 400);
    assert!(body.contains("Idempotency-Key"), "{body}");
    for bad in [
        "{",
        r#"{"nft_id": 1, "kind": "steal", "price_wei": "1"}"#,
        r#"{"nft_id": 1, "kind": "buy", "price_wei": "1", "extra": 1}"#,
    ] {
        let (status, body) = post(Some("k"), bad, None).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("invalid order"), "{body}");
    }
    assert_eq!(post(Some("k"), order, None).await.0, 401, "orders need a session");
    let token = sign_in(all.url(), &Wallet::new(6), "d").await.unwrap();
    let (status, body) =
        post(Some("k"), r#"{"nft_id": 1, "kind": "buy", "price_wei": "-5"}"#, Some(token.clone()))
            .await;
    assert_eq!(status, 400, "{body}");
    // The in-memory catalog stores no orders, and says so.
    let (status, body) = post(Some("k"), order, Some(token)).await;
    assert_eq!(status, 501, "{body}");
    assert!(body.contains("--database-url"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_down_at_start_is_logged_not_fatal() {
    let closed = format!("http://127.0.0.1:{}", testkit::free_port());
    let args: Vec<String> = ["--role", "gateway", "--auth-url", &closed, "--catalog-url", &closed]
        .map(str::to_owned)
        .to_vec();
    let gateway = Sandbox::start_with_binary(binary().unwrap(), &args).await.unwrap();
    let (status, problem) = fetch(gateway.url(), "/api/collections/1").await;
    assert_eq!((status, problem["dependency"].as_str()), (503, Some("catalog")));
    let log_path = gateway.log_path();
    testkit::wait_until(
        "the unreachable peer to be logged",
        Duration::from_secs(10),
        || async move {
            let log = std::fs::read_to_string(log_path).unwrap();
            if log.contains("gRPC peer unreachable at start") { Ok(()) } else { Err(log) }
        },
    )
    .await
    .unwrap();
}
