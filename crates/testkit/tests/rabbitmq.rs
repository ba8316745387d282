//! testkit's own RabbitMQ node (Debian's rabbitmq-server): it starts beside
//! the machine's, answers AMQP and the management API, keeps durable messages
//! across a restart, and leaves nothing running when killed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on the first surprise

use testkit::RabbitMq;

async fn queue(node: &RabbitMq, name: &str) -> serde_json::Value {
    let url = format!("{}/api/queues/%2f/{name}", node.management_url());
    let client = reqwest::Client::new();
    let response = client.get(url).basic_auth("guest", Some("guest")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_of_our_own_restarts_with_its_durable_queues_and_dies_when_killed() {
    let mut node = RabbitMq::start().await.unwrap();
    assert_ne!(node.amqp_port(), 5672, "not the machine's node");
    let client = reqwest::Client::new();
    let put = client
        .put(format!("{}/api/queues/%2f/durable-test", node.management_url()))
        .basic_auth("guest", Some("guest"))
        .json(&serde_json::json!({"durable": true}))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.text().await.unwrap());
    assert_eq!(queue(&node, "durable-test").await["durable"], true);

    node.restart().await.unwrap();
    assert_eq!(queue(&node, "durable-test").await["name"], "durable-test");

    node.kill().await.unwrap();
    assert!(!node.is_running());
    let refused = tokio::net::TcpStream::connect(("127.0.0.1", node.amqp_port())).await;
    assert!(refused.is_err(), "the killed node still accepts AMQP");
}
