//! Orders and their events through a RabbitMQ node of the test's own: the
//! outbox keeps events while RabbitMQ is down, and the consumer applies each
//! event exactly once, even when killed mid-stream. Counted in PostgreSQL.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod common;

use std::path::Path;
use std::time::Duration;

use common::wallet::{Wallet, sign_in};
use serde_json::{Value, json};
use testkit::marketplace::Role;
use testkit::{Marketplace, MarketplaceOptions, RabbitMq, TempDatabase};

async fn marketplace(db: &TempDatabase, rabbit: &RabbitMq) -> Marketplace {
    Marketplace::start(MarketplaceOptions {
        binary: Some(Path::new(env!("CARGO_BIN_EXE_sandbox")).to_path_buf()),
        database_url: Some(db.url().to_owned()),
        amqp_url: Some(rabbit.amqp_url()),
        common_args: ["--collections", "20", "--nfts", "200"].map(str::to_owned).to_vec(),
        ..MarketplaceOptions::default()
    })
    .await
    .unwrap()
}

/// Places orders `from..to` (key `order-N`, NFT `N % 200 + 1`, price `N`
/// wei), 20 at a time; every one must be accepted (201).
async fn place_orders(gateway: &str, token: &str, from: u32, to: u32) {
    let client = reqwest::Client::new();
    let ids: Vec<u32> = (from..to).collect();
    for chunk in ids.chunks(20) {
        let requests = chunk.iter().map(|n| {
            client
                .post(format!("{gateway}/api/orders"))
                .bearer_auth(token)
                .header("x-device-fingerprint", "d")
                .header("idempotency-key", format!("order-{n}"))
                .json(&json!({"nft_id": n % 200 + 1, "kind": "buy", "price_wei": n.to_string()}))
                .send()
        });
        for response in futures::future::join_all(requests).await {
            let response = response.unwrap();
            let status = response.status();
            assert_eq!(status, 201, "{}", response.text().await.unwrap());
        }
    }
}

async fn count(db: &TempDatabase, sql: &str) -> i64 {
    let client = testkit::postgres::connect(db.url()).await.unwrap();
    client.query_one(sql, &[]).await.unwrap().try_get(0).unwrap()
}

async fn wait_for(db: &TempDatabase, sql: &str, want: i64, timeout: Duration) {
    testkit::wait_until(sql, timeout, || async move {
        let got = count(db, sql).await;
        if got == want { Ok(()) } else { Err(format!("{got}, want {want}")) }
    })
    .await
    .unwrap();
}

async fn metric(base: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    testkit::metrics::parse_samples(&text).sum(name, &[])
}

async fn wait_for_metric(base: &str, name: &str, want: f64, timeout: Duration) {
    testkit::wait_until(&format!("{name} at {base}"), timeout, || async move {
        let got = metric(base, name).await;
        if got == want { Ok(()) } else { Err(format!("{got}, want {want}")) }
    })
    .await
    .unwrap();
}

const APPLIED: &str = "SELECT count(*) FROM sandbox.processed_events";

/// Every order has one event, applied once: the ids match one to one, and
/// the per-collection sales add up to the orders.
async fn assert_each_order_applied_once(db: &TempDatabase, orders: i64) {
    assert_eq!(count(db, "SELECT count(*) FROM sandbox.orders").await, orders);
    let matched = "SELECT count(*) FROM sandbox.orders o
        JOIN sandbox.outbox e ON e.order_id = o.id
        JOIN sandbox.processed_events p ON p.event_id = e.event_id AND p.order_id = o.id";
    assert_eq!(count(db, matched).await, orders, "an order's event was not applied");
    assert_eq!(
        count(db, "SELECT COALESCE(sum(orders), 0)::bigint FROM sandbox.collection_sales").await,
        orders
    );
    let volume = "SELECT ((SELECT sum(volume_wei) FROM sandbox.collection_sales)
        - (SELECT sum(price_wei) FROM sandbox.orders))::bigint";
    assert_eq!(count(db, volume).await, 0, "sales volume differs from the orders' prices");
}

#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_down_orders_are_accepted_and_every_event_arrives_once_after_it_returns() {
    let db = TempDatabase::create().await.unwrap();
    let mut rabbit = RabbitMq::start().await.unwrap();
    let marketplace = marketplace(&db, &rabbit).await;
    let gateway = marketplace.gateway_url();
    let token = sign_in(&gateway, &Wallet::new(11), "d").await.unwrap();

    place_orders(&gateway, &token, 0, 10).await;
    wait_for(&db, APPLIED, 10, Duration::from_secs(30)).await;

    rabbit.stop().await.unwrap();
    place_orders(&gateway, &token, 10, 510).await;
    // Nothing can be published: all 500 wait in the outbox, visible in metrics.
    let catalog = marketplace.url(Role::Catalog);
    wait_for_metric(&catalog, "outbox_pending", 500.0, Duration::from_secs(10)).await;
    assert_eq!(count(&db, APPLIED).await, 10);

    // A retried request with the same key places nothing new.
    let replay = reqwest::Client::new()
        .post(format!("{gateway}/api/orders"))
        .bearer_auth(&token)
        .header("x-device-fingerprint", "d")
        .header("idempotency-key", "order-42")
        .json(&json!({"nft_id": 43, "kind": "buy", "price_wei": "42"}))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 200);
    assert_eq!(replay.json::<Value>().await.unwrap()["replayed"], true);

    rabbit.restart().await.unwrap();
    wait_for(&db, APPLIED, 510, Duration::from_secs(120)).await;
    wait_for_metric(&catalog, "outbox_pending", 0.0, Duration::from_secs(10)).await;
    assert_each_order_applied_once(&db, 510).await;
    let consumer = marketplace.url(Role::Consumer);
    assert_eq!(metric(&consumer, "events_consumed_total").await, 510.0);
    assert!(metric(&catalog, "events_published_total").await >= 510.0);
    wait_for_metric(&consumer, "consumer_lag_seconds", 0.0, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_killed_mid_stream_loses_nothing_and_applies_nothing_twice() {
    let db = TempDatabase::create().await.unwrap();
    let rabbit = RabbitMq::start().await.unwrap();
    let mut marketplace = marketplace(&db, &rabbit).await;
    let gateway = marketplace.gateway_url();
    let token = sign_in(&gateway, &Wallet::new(12), "d").await.unwrap();

    // The consumer is slowed (20 ms per event, inside its transaction) so
    // the kill lands mid-stream whatever the machine's speed.
    let consumer = marketplace.url(Role::Consumer);
    let slow = reqwest::Client::new()
        .post(format!("{consumer}/admin/faults"))
        .json(&json!({"db_latency_ms": 20}))
        .send()
        .await
        .unwrap();
    assert_eq!(slow.status(), 200);
    place_orders(&gateway, &token, 0, 500).await;
    wait_for(
        &db,
        "SELECT count(*) FROM sandbox.outbox WHERE published_at IS NULL",
        0,
        Duration::from_secs(30),
    )
    .await;
    let db_ref = &db;
    testkit::wait_until(
        "the consumer to apply 100 events",
        Duration::from_secs(60),
        || async move {
            let applied = count(db_ref, APPLIED).await;
            if applied >= 100 { Ok(()) } else { Err(format!("{applied} applied")) }
        },
    )
    .await
    .unwrap();
    marketplace.kill(Role::Consumer).await.unwrap();
    let at_kill = count(&db, APPLIED).await;
    assert!(at_kill < 500, "the kill was not mid-stream ({at_kill} applied)");

    marketplace.restart(Role::Consumer).await.unwrap();
    wait_for(&db, APPLIED, 500, Duration::from_secs(60)).await;
    assert_each_order_applied_once(&db, 500).await;
    // Whatever was delivered again after the kill was acknowledged, not re-applied.
    let redelivered = metric(&marketplace.url(Role::Consumer), "events_redelivered_total").await;
    let deliveries =
        count(&db, "SELECT sum(deliveries)::bigint FROM sandbox.processed_events").await;
    assert!(deliveries >= 500);
    assert!(redelivered <= (deliveries - 500) as f64);
}
