//! Prometheus from the machine's `prometheus` binary.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

use std::time::Duration;

use testkit::{Error, Prometheus, PrometheusOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_itself_and_answers_queries() {
    let prometheus = Prometheus::start(PrometheusOptions {
        scrape_self: true,
        scrape_interval: Duration::from_millis(500),
        ..PrometheusOptions::default()
    })
    .await
    .unwrap();
    let instance = prometheus.addr().to_string();
    assert_eq!(prometheus.url(), format!("http://{instance}"));

    let promql = format!("up{{instance=\"{instance}\"}} == 1");
    let result = prometheus.wait_for_query(&promql, Duration::from_secs(15)).await.unwrap();
    assert_eq!(result[0]["metric"]["job"], "prometheus");
    assert_eq!(result[0]["value"][1], "1");

    // A scalar query is answered too.
    let scalar = prometheus.query("1 + 1").await.unwrap();
    assert_eq!(scalar[1], "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_rejects_bad_promql_with_its_message() {
    let prometheus = Prometheus::start(PrometheusOptions::default()).await.unwrap();
    let err = prometheus.query("sum(").await.unwrap_err();
    assert!(matches!(err, Error::Unexpected { .. }), "{err}");
    assert!(err.to_string().contains("bad_data"), "{err}");
}
