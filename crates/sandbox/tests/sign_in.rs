//! Sign-in with Ethereum end to end: a wallet key signs a real EIP-4361 message,
//! the sandbox recovers the signer from the secp256k1 signature.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod common;

use common::wallet::Wallet;
use common::{SMALL, post_json, start};
use serde_json::{Value, json};

async fn nonce(sandbox: &testkit::Sandbox) -> String {
    let body: Value = post_json(sandbox, "/auth/nonce", &json!({})).await.json().await.unwrap();
    assert_eq!(body["chain_id"], 137);
    body["nonce"].as_str().unwrap().to_owned()
}

async fn verify(
    sandbox: &testkit::Sandbox,
    message: &str,
    signature: &str,
    device: &str,
) -> reqwest::Response {
    common::client()
        .post(format!("{}/auth/verify", sandbox.url()))
        .header("x-device-fingerprint", device)
        .json(&json!({ "message": message, "signature": signature }))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_message_yields_a_device_bound_session() {
    let sandbox = start(&SMALL).await;
    let wallet = Wallet::new(7);
    let message = wallet.message("localhost", 137, &nonce(&sandbox).await);
    let response = verify(&sandbox, &message, &wallet.sign(&message), "device-a").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["address"], wallet.address.as_str());
    let token = body["token"].as_str().unwrap();

    let me = |device: &'static str| {
        common::client()
            .get(format!("{}/api/me", sandbox.url()))
            .bearer_auth(token)
            .header("x-device-fingerprint", device)
            .send()
    };
    let response = me("device-a").await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["address"], wallet.address.as_str());
    let hijacked = me("device-b").await.unwrap();
    assert_eq!(hijacked.status(), 401, "a stolen token on another device is refused");

    // The nonce was single-use.
    let replay = verify(&sandbox, &message, &wallet.sign(&message), "device-a").await;
    assert_eq!(replay.status(), 401);
    assert!(replay.text().await.unwrap().contains("nonce"));
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_or_misdirected_messages_are_refused() {
    let sandbox = start(&SMALL).await;
    let wallet = Wallet::new(7);
    let mallory = Wallet::new(9);

    // Signed by another key than the message's address.
    let message = wallet.message("localhost", 137, &nonce(&sandbox).await);
    let response = verify(&sandbox, &message, &mallory.sign(&message), "d").await;
    assert_eq!(response.status(), 401);
    assert!(response.text().await.unwrap().contains("signature does not match"));

    // Another domain and another chain.
    let message = wallet.message("evil.example", 137, &nonce(&sandbox).await);
    let response = verify(&sandbox, &message, &wallet.sign(&message), "d").await;
    assert_eq!(response.status(), 401);
    let message = wallet.message("localhost", 1, &nonce(&sandbox).await);
    let response = verify(&sandbox, &message, &wallet.sign(&message), "d").await;
    assert!(response.text().await.unwrap().contains("chain 1"));

    // A nonce the server never issued.
    let message = wallet.message("localhost", 137, "neverissued123");
    assert_eq!(verify(&sandbox, &message, &wallet.sign(&message), "d").await.status(), 401);

    // Garbage is a 400 with the reason, not a crash.
    let response = verify(&sandbox, "not a siwe message", "0x1234", "d").await;
    assert_eq!(response.status(), 400);
    let response = post_json(&sandbox, "/auth/verify", &json!({ "message": 5 })).await;
    assert!(response.status().is_client_error());
    assert_eq!(common::get(&sandbox, "/healthz").await.status(), 200);
}
