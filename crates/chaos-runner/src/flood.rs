//! The RabbitMQ flood: publish N messages with publisher confirms, then
//! follow the queue through the management API until it drains.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};

/// Publishes `messages` copies of `body` (`{{seq}}`, `{{run}}` replaced) to
/// `exchange` with `routing_key`, waiting for every confirm.
pub async fn publish(
    amqp_url: &str,
    exchange: &str,
    routing_key: &str,
    messages: u32,
    body: &str,
    run: &str,
) -> Result<(), String> {
    let redacted = shared_types::redact_url(amqp_url);
    let connection = Connection::connect(amqp_url, ConnectionProperties::default())
        .await
        .map_err(|e| format!("cannot connect to {redacted}: {e}"))?;
    let channel = connection.create_channel().await.map_err(|e| e.to_string())?;
    channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| e.to_string())?;
    let mut confirms = Vec::with_capacity(1000);
    for seq in 0..messages {
        let payload = body.replace("{{seq}}", &seq.to_string()).replace("{{run}}", run);
        let confirm = channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                payload.as_bytes(),
                BasicProperties::default()
                    .with_message_id(format!("chaos-{run}-{seq}").into())
                    .with_content_type("application/json".into())
                    .with_delivery_mode(2),
            )
            .await
            .map_err(|e| format!("publish to {exchange}: {e}"))?;
        confirms.push(confirm);
        if confirms.len() == 1000 {
            for c in confirms.drain(..) {
                c.await.map_err(|e| format!("no confirm from {redacted}: {e}"))?;
            }
        }
    }
    for c in confirms {
        c.await.map_err(|e| format!("no confirm from {redacted}: {e}"))?;
    }
    let _ = connection.close(200, "flood published".into()).await;
    Ok(())
}

/// Messages in `queue` (ready + unacknowledged) by the management API at
/// `management_url` (credentials from the URL, guest/guest otherwise).
pub async fn depth(
    client: &reqwest::Client,
    management_url: &str,
    queue: &str,
) -> Result<u64, String> {
    let (base, user, password) = split_credentials(management_url);
    let url = format!("{}/api/queues/%2F/{queue}", base.trim_end_matches('/'));
    let response = client
        .get(&url)
        .basic_auth(user, Some(password))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{url}: {}", response.status()));
    }
    let body: serde_json::Value = response.json().await.map_err(|e| format!("{url}: {e}"))?;
    body["messages"].as_u64().ok_or_else(|| format!("{url}: no `messages` in the answer"))
}

fn split_credentials(url: &str) -> (String, String, String) {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((userinfo, host)) = rest.split_once('@')
    {
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        return (format!("{scheme}://{host}"), user.to_owned(), password.to_owned());
    }
    (url.to_owned(), "guest".to_owned(), "guest".to_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_come_out_of_the_management_url() {
        let (base, user, password) = super::split_credentials("http://ops:pw@127.0.0.1:15672");
        assert_eq!(
            (base.as_str(), user.as_str(), password.as_str()),
            ("http://127.0.0.1:15672", "ops", "pw")
        );
        assert_eq!(super::split_credentials("http://127.0.0.1:1").1, "guest");
    }
}
