//! The RabbitMQ flood: publish N messages with publisher confirms, then
//! follow the queue's depth until it drains.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
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

/// Messages ready in `queue`, from a passive `queue.declare` (the broker's
/// live count; delivered but unacknowledged messages are not counted).
pub async fn depth(amqp_url: &str, queue: &str) -> Result<u64, String> {
    let redacted = shared_types::redact_url(amqp_url);
    let connection = tokio::time::timeout(
        Duration::from_secs(5),
        Connection::connect(amqp_url, ConnectionProperties::default()),
    )
    .await
    .map_err(|_| format!("{redacted}: no answer within 5s"))?
    .map_err(|e| format!("cannot connect to {redacted}: {e}"))?;
    let channel = connection.create_channel().await.map_err(|e| e.to_string())?;
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() },
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("queue {queue} on {redacted}: {e}"))?;
    let _ = connection.close(200, "depth read".into()).await;
    Ok(u64::from(declared.message_count()))
}
