//! Order events through RabbitMQ: the relay publishes the outbox with
//! publisher confirms, the consumer applies each event exactly once.
//!
//! Delivery is at least once (the relay marks an event published only after
//! RabbitMQ confirmed it, so a crash in between publishes it again; the
//! consumer acks only after its transaction committed, so a crash in between
//! gets it redelivered), and applying is idempotent (the event id is the
//! primary key of `processed_events`): every event is applied once.
//!
//! Both sides reconnect with exponential back-off (100 ms doubling to 5 s)
//! whenever RabbitMQ is down, so "RabbitMQ down" means events wait in the
//! outbox or the queue, never that orders are refused or events lost.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

use crate::faults::Faults;
use crate::metrics::Metrics;
use crate::orders::{Orders, cell};

/// The topic exchange order events are published to.
pub const EXCHANGE: &str = "marketplace.events";
/// The durable queue the consumer reads (bound to `order.*`).
pub const QUEUE: &str = "marketplace.orders";
/// Events published per transaction.
const BATCH: i64 = 200;
/// Unacknowledged deliveries the consumer holds at once.
const PREFETCH: u16 = 100;
/// First and longest wait between reconnection attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// How often the gauges (`outbox_pending`, `consumer_lag_seconds`, the queue
/// depth) are refreshed.
const GAUGE_EVERY: Duration = Duration::from_millis(500);

/// Publishes the outbox until `stop` turns true. Without `outbox` (the
/// sandbox's `--no-outbox`, broken on purpose) events are dropped whenever
/// RabbitMQ is unreachable, as direct publishing would lose them.
pub async fn relay(
    orders: Orders,
    amqp_url: String,
    metrics: Metrics,
    stop: watch::Receiver<bool>,
    outbox: bool,
) {
    tokio::spawn(pending_gauge(orders.clone(), metrics.clone(), stop.clone()));
    let connected = Arc::new(AtomicBool::new(false));
    if !outbox {
        tokio::spawn(drop_while_disconnected(orders.clone(), connected.clone(), stop.clone()));
    }
    reconnecting("relay", stop.clone(), || {
        publish_until_error(&orders, &amqp_url, &metrics, stop.clone(), connected.clone())
    })
    .await;
}

/// `--no-outbox`: while the relay is not connected, pending events are
/// marked published without being sent: lost, on purpose.
async fn drop_while_disconnected(
    orders: Orders,
    connected: Arc<AtomicBool>,
    stop: watch::Receiver<bool>,
) {
    every_interval("dropping events (--no-outbox)", stop, || {
        let orders = orders.clone();
        let connected = connected.clone();
        async move {
            if connected.load(Ordering::SeqCst) {
                return Ok(());
            }
            let s = orders.schema();
            let client = orders.pool().get().await.map_err(|e| e.to_string())?;
            let dropped = client
                .execute(
                    &format!("UPDATE {s}.outbox SET published_at = clock_timestamp() WHERE published_at IS NULL"),
                    &[],
                )
                .await
                .map_err(|e| e.to_string())?;
            if dropped > 0 {
                tracing::warn!(dropped, "RabbitMQ unreachable: events dropped (--no-outbox)");
            }
            Ok(())
        }
    })
    .await;
}

/// Consumes order events until `stop` turns true. `faults.db_latency_ms`
/// slows every apply (inside its transaction), to build a backlog on purpose.
pub async fn consume(
    orders: Orders,
    amqp_url: String,
    metrics: Metrics,
    faults: Faults,
    stop: watch::Receiver<bool>,
) {
    tokio::spawn(lag_gauge(orders.clone(), metrics.clone(), stop.clone()));
    reconnecting("consumer", stop.clone(), || {
        consume_until_error(&orders, &amqp_url, &metrics, &faults, stop.clone())
    })
    .await;
}

/// Runs `session` again after every error, with back-off, until `stop`.
async fn reconnecting<F, Fut>(who: &'static str, mut stop: watch::Receiver<bool>, mut session: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut wait = BACKOFF.0;
    loop {
        let started = std::time::Instant::now();
        let outcome = tokio::select! {
            outcome = session() => outcome,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        match outcome {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(who, error = %e, retry_in = ?wait, "RabbitMQ session ended; reconnecting")
            }
        }
        // A session that ran a while was healthy: start the back-off again.
        if started.elapsed() > BACKOFF.1 {
            wait = BACKOFF.0;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        wait = (wait * 2).min(BACKOFF.1);
    }
}

/// A channel on a new connection, with the exchange, queue and binding declared.
async fn open(amqp_url: &str, name: &str) -> Result<(Connection, Channel), String> {
    let connection = Connection::connect(
        amqp_url,
        ConnectionProperties::default().with_connection_name(name.into()),
    )
    .await
    .map_err(|e| format!("cannot connect to RabbitMQ: {e}"))?;
    let channel = connection.create_channel().await.map_err(|e| e.to_string())?;
    let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    channel
        .exchange_declare(EXCHANGE.into(), ExchangeKind::Topic, durable, FieldTable::default())
        .await
        .map_err(|e| format!("cannot declare exchange {EXCHANGE}: {e}"))?;
    channel
        .queue_declare(QUEUE.into(), QueueDeclareOptions::durable(), FieldTable::default())
        .await
        .map_err(|e| format!("cannot declare queue {QUEUE}: {e}"))?;
    channel
        .queue_bind(
            QUEUE.into(),
            EXCHANGE.into(),
            "order.*".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("cannot bind {QUEUE} to {EXCHANGE}: {e}"))?;
    Ok((connection, channel))
}

async fn publish_until_error(
    orders: &Orders,
    amqp_url: &str,
    metrics: &Metrics,
    mut stop: watch::Receiver<bool>,
    connected: Arc<AtomicBool>,
) -> Result<(), String> {
    let (_connection, channel) = open(amqp_url, "postlaunch-sandbox-relay").await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| e.to_string())?;
    tracing::info!("outbox relay connected to RabbitMQ");
    let _connected = Connected::set(connected);
    loop {
        let published = publish_batch(orders, &channel).await?;
        metrics.events_published.inc_by(published);
        if published == 0 {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = stop.wait_for(|stop| *stop) => return Ok(()),
            }
        }
    }
}

/// Marks the relay connected while alive.
struct Connected(Arc<AtomicBool>);

impl Connected {
    fn set(flag: Arc<AtomicBool>) -> Connected {
        flag.store(true, Ordering::SeqCst);
        Connected(flag)
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Publishes up to [`BATCH`] pending events and marks those RabbitMQ
/// confirmed, in one transaction that holds their rows locked.
async fn publish_batch(orders: &Orders, channel: &Channel) -> Result<u64, String> {
    let s = orders.schema();
    let mut client = orders.pool().get().await.map_err(|e| e.to_string())?;
    let tx = client.transaction().await.map_err(|e| e.to_string())?;
    let rows = tx
        .query(
            &format!(
                "SELECT event_id, routing_key, payload::text FROM {s}.outbox
                 WHERE published_at IS NULL ORDER BY id LIMIT {BATCH} FOR UPDATE SKIP LOCKED"
            ),
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut confirms = Vec::with_capacity(rows.len());
    let mut ids = Vec::with_capacity(rows.len());
    for row in &rows {
        let event_id: String = cell(row, "outbox", 0)?;
        let routing_key: String = cell(row, "outbox", 1)?;
        let payload: String = cell(row, "outbox", 2)?;
        let properties = BasicProperties::default()
            .with_message_id(event_id.as_str().into())
            .with_content_type("application/json".into())
            .with_delivery_mode(2);
        let confirm = channel
            .basic_publish(
                EXCHANGE.into(),
                routing_key.as_str().into(),
                BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() },
                payload.as_bytes(),
                properties,
            )
            .await
            .map_err(|e| format!("publish failed: {e}"))?;
        confirms.push(confirm);
        ids.push(event_id);
    }
    for (confirm, id) in confirms.into_iter().zip(&ids) {
        let confirmation = confirm.await.map_err(|e| format!("no confirm for event {id}: {e}"))?;
        if !confirmation.is_ack() || confirmation.take_message().is_some() {
            return Err(format!("RabbitMQ did not accept event {id} (nack or returned)"));
        }
    }
    tx.execute(
        &format!("UPDATE {s}.outbox SET published_at = clock_timestamp() WHERE event_id = ANY($1)"),
        &[&ids],
    )
    .await
    .map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(ids.len() as u64)
}

/// The fields of an `order.created` event the consumer applies.
#[derive(Debug, Deserialize)]
struct OrderCreated {
    event_id: String,
    order_id: i64,
    collection_id: i64,
    price_wei: String,
}

async fn consume_until_error(
    orders: &Orders,
    amqp_url: &str,
    metrics: &Metrics,
    faults: &Faults,
    stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let (_connection, channel) = open(amqp_url, "postlaunch-sandbox-consumer").await?;
    channel.basic_qos(PREFETCH, BasicQosOptions::default()).await.map_err(|e| e.to_string())?;
    let mut deliveries = channel
        .basic_consume(
            QUEUE.into(),
            "postlaunch-sandbox-consumer".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("cannot consume {QUEUE}: {e}"))?;
    tracing::info!(queue = QUEUE, "consumer connected to RabbitMQ");
    let depth = tokio::spawn(queue_depth(channel.clone(), metrics.clone(), stop));
    let outcome = async {
        while let Some(delivery) = deliveries.next().await {
            let delivery = delivery.map_err(|e| format!("delivery failed: {e}"))?;
            let Ok(event) = serde_json::from_slice::<OrderCreated>(&delivery.data) else {
                // Not an event we can apply: drop it (a retry would fail the
                // same way) and say so.
                metrics.events_rejected.inc();
                tracing::error!(
                    body = %String::from_utf8_lossy(&delivery.data),
                    "rejected a message that is not an order.created event"
                );
                delivery
                    .nack(BasicNackOptions { requeue: false, ..BasicNackOptions::default() })
                    .await
                    .map_err(|e| e.to_string())?;
                continue;
            };
            let applied = apply(orders, &event, faults).await?;
            if applied {
                metrics.events_consumed.inc();
            } else {
                metrics.events_redelivered.inc();
            }
            delivery.ack(BasicAckOptions::default()).await.map_err(|e| e.to_string())?;
        }
        Err("the delivery stream ended (connection or channel closed)".to_owned())
    }
    .await;
    depth.abort();
    outcome
}

/// Applies one event in one transaction; false when it had been applied before.
async fn apply(orders: &Orders, event: &OrderCreated, faults: &Faults) -> Result<bool, String> {
    let s = orders.schema();
    let mut client = orders.pool().get().await.map_err(|e| e.to_string())?;
    let tx = client.transaction().await.map_err(|e| e.to_string())?;
    let inserted = tx
        .query_one(
            &format!(
                "INSERT INTO {s}.processed_events (event_id, order_id, deliveries) VALUES ($1, $2, 1)
                 ON CONFLICT (event_id) DO UPDATE SET deliveries = {s}.processed_events.deliveries + 1
                 RETURNING xmax = 0"
            ),
            &[&event.event_id, &event.order_id],
        )
        .await
        .map_err(|e| e.to_string())?;
    let first: bool = cell(&inserted, "processed_events", 0)?;
    if first {
        tx.execute(
            &format!(
                "INSERT INTO {s}.collection_sales (collection_id, orders, volume_wei)
                 VALUES ($1, 1, $2::text::numeric)
                 ON CONFLICT (collection_id) DO UPDATE SET
                     orders = {s}.collection_sales.orders + 1,
                     volume_wei = {s}.collection_sales.volume_wei + excluded.volume_wei"
            ),
            &[&event.collection_id, &event.price_wei],
        )
        .await
        .map_err(|e| e.to_string())?;
    }
    let slow = faults.spec().db_latency_ms;
    if slow > 0 {
        tokio::time::sleep(Duration::from_millis(slow)).await;
    }
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(first)
}

/// Runs `refresh` now and every [`GAUGE_EVERY`] until `stop`; a failed
/// refresh leaves the gauge as it was and is logged at debug level.
async fn every_interval<F, Fut>(what: &'static str, mut stop: watch::Receiver<bool>, mut refresh: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    loop {
        if let Err(e) = refresh().await {
            tracing::debug!(error = %e, "cannot refresh {what}");
        }
        tokio::select! {
            () = tokio::time::sleep(GAUGE_EVERY) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}

/// `outbox_pending`: events not yet confirmed by RabbitMQ.
async fn pending_gauge(orders: Orders, metrics: Metrics, stop: watch::Receiver<bool>) {
    every_interval("outbox_pending", stop, || async {
        metrics.outbox_pending.set(orders.pending().await?);
        Ok(())
    })
    .await;
}

/// `consumer_lag_seconds`: the age of the oldest event not yet applied.
async fn lag_gauge(orders: Orders, metrics: Metrics, stop: watch::Receiver<bool>) {
    let s = orders.schema().to_owned();
    let sql = format!(
        "SELECT COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - min(o.created_at)), 0)::float8
         FROM {s}.outbox o
         WHERE NOT EXISTS (SELECT 1 FROM {s}.processed_events p WHERE p.event_id = o.event_id)"
    );
    every_interval("consumer_lag_seconds", stop, || async {
        let client = orders.pool().get().await.map_err(|e| e.to_string())?;
        let row = client.query_one(&sql, &[]).await.map_err(|e| e.to_string())?;
        metrics.consumer_lag.set(cell::<f64>(&row, "outbox", 0)?);
        Ok(())
    })
    .await;
}

/// `amqp_queue_messages{queue}`: messages ready in the queue.
async fn queue_depth(channel: Channel, metrics: Metrics, stop: watch::Receiver<bool>) {
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    every_interval("amqp_queue_messages", stop, || async {
        let queue = channel
            .queue_declare(QUEUE.into(), passive, FieldTable::default())
            .await
            .map_err(|e| e.to_string())?;
        metrics.queue_messages.with_label_values(&[QUEUE]).set(i64::from(queue.message_count()));
        Ok(())
    })
    .await;
}
