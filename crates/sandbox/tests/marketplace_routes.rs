//! The marketplace surface served from the embedded catalog: REST, GraphQL,
//! operations endpoints and the metrics the runbooks read.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod common;

use common::{SMALL, get, get_json, post_json, start};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn rest_routes_serve_the_generated_catalog() {
    let sandbox = start(&SMALL).await;

    let page = get_json(&sandbox, "/api/collections?page=2&per_page=10").await;
    let ids: Vec<i64> =
        page.as_array().unwrap().iter().map(|c| c["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, (11..=20).collect::<Vec<_>>());

    let collection = get_json(&sandbox, "/api/collections/7").await;
    assert_eq!(collection["id"], 7);
    assert_eq!(collection["nft_count"], 10, "500 NFTs over 50 collections");

    let nfts = get_json(&sandbox, "/api/collections/7/nfts?page=1").await;
    let nfts = nfts.as_array().unwrap();
    assert_eq!(nfts.len(), 10);
    assert!(nfts.iter().all(|n| n["collection_id"] == 7));
    let first = nfts[0]["id"].as_i64().unwrap();
    let nft = get_json(&sandbox, &format!("/api/nfts/{first}")).await;
    assert_eq!(nft["token_id"], 1);
    assert_eq!(nft["owner"].as_str().unwrap().len(), 42);

    let word = collection["name"].as_str().unwrap().split(' ').next().unwrap().to_lowercase();
    let hits = get_json(&sandbox, &format!("/api/search?q={word}")).await;
    let hits = hits.as_array().unwrap();
    assert!(hits.iter().any(|c| c["id"] == 7), "search for {word} finds collection 7");
    assert!(hits.iter().all(|c| c["name"].as_str().unwrap().to_lowercase().contains(&word)));

    assert_eq!(get(&sandbox, "/api/collections/51").await.status(), 404);
    assert_eq!(get(&sandbox, "/api/nfts/0").await.status(), 404);
    assert_eq!(get(&sandbox, "/api/collections/abc").await.status(), 400);
    assert_eq!(get(&sandbox, "/api/collections?per_page=1000").await.status(), 400);
    assert_eq!(get(&sandbox, "/api/search").await.status(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn graphql_resolves_nested_fields_one_lookup_per_parent() {
    let sandbox = start(&SMALL).await;
    let before = common::metric(&sandbox, "db_queries_total", &[("operation", "collection")]).await;
    let query = json!({
        "query": "query($n: Int!) { collections(first: $n) { id name nfts(first: 3) { tokenId owner { address } collection { id } } } }",
        "variables": { "n": 4 }
    });
    let response = post_json(&sandbox, "/graphql", &query).await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body.get("errors").is_none(), "{body}");
    let collections = body["data"]["collections"].as_array().unwrap();
    assert_eq!(collections.len(), 4);
    for c in collections {
        let nfts = c["nfts"].as_array().unwrap();
        assert_eq!(nfts.len(), 3);
        assert!(nfts.iter().all(|n| n["collection"]["id"] == c["id"]));
    }
    // 4 collections x 3 NFTs, each NFT looking up its collection again: N+1.
    let after = common::metric(&sandbox, "db_queries_total", &[("operation", "collection")]).await;
    assert_eq!(after - before, 12.0);

    let bad =
        post_json(&sandbox, "/graphql", &json!({ "query": "{ collections { nope } }" })).await;
    let body: serde_json::Value = bad.json().await.unwrap();
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("nope"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_readiness_and_metrics_expose_the_runbook_series() {
    let sandbox = start(&SMALL).await;
    assert_eq!(get(&sandbox, "/healthz").await.status(), 200);
    let ready = get_json(&sandbox, "/readyz").await;
    assert_eq!(ready["catalog"], "memory");
    assert_eq!(ready["database_breaker"], "closed");
    get_json(&sandbox, "/api/collections/1").await;

    let text = get(&sandbox, "/metrics").await.text().await.unwrap();
    for series in [
        "http_requests_total{route=\"/api/collections/{id}\",status=\"200\"}",
        "http_request_duration_seconds_bucket{route=\"/api/collections/{id}\",le=\"0.5\"}",
        "db_connections_in_use",
        "db_connections_max 20",
        "cache_hits_total",
        "cache_misses_total",
        "circuit_breaker_state{dependency=\"database\",state=\"closed\"} 1",
        "circuit_breaker_state{dependency=\"cache\",state=\"open\"} 0",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "process_cpu_seconds_total",
    ] {
        assert!(text.contains(series), "/metrics lacks {series}\n{text}");
    }
}
