//! The Prometheus series the marketplace's runbooks and postlaunch's tools read.

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// Every series the sandbox exports, registered in one registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// `http_requests_total{route,status}`
    pub http_requests: IntCounterVec,
    /// `http_request_duration_seconds{route}` histogram
    pub http_duration: HistogramVec,
    /// `db_connections_in_use`
    pub db_in_use: IntGauge,
    /// `db_connections_max`
    pub db_max: IntGauge,
    /// `db_queries_total{operation}`: one per catalog query, so N+1 patterns show.
    pub db_queries: IntCounterVec,
    /// `cache_hits_total`
    pub cache_hits: IntCounter,
    /// `cache_misses_total`
    pub cache_misses: IntCounter,
    /// `cache_errors_total`: cache calls that failed and fell back to the database.
    pub cache_errors: IntCounter,
    /// `circuit_breaker_state{dependency,state}`: 1 for the current state, 0 otherwise.
    pub breaker_state: IntGaugeVec,
    /// `circuit_breaker_transitions_total{dependency,from,to}`
    pub breaker_transitions: IntCounterVec,
    /// `sandbox_faults_injected_total{kind}`
    pub faults_injected: IntCounterVec,
    /// `sandbox_catalog_info{catalog,cache}` = 1: which backends this instance uses.
    pub catalog_info: IntGaugeVec,
    /// `grpc_server_handling_seconds{grpc_type,grpc_service,grpc_method,grpc_code}`
    pub grpc_server: HistogramVec,
    /// `grpc_client_handling_seconds{grpc_type,grpc_service,grpc_method,grpc_code}`
    pub grpc_client: HistogramVec,
    /// `events_published_total`: outbox events RabbitMQ confirmed.
    pub events_published: IntCounter,
    /// `outbox_pending`: events stored with their order, not yet confirmed by RabbitMQ.
    pub outbox_pending: IntGauge,
    /// `events_consumed_total`: events the consumer applied (once each).
    pub events_consumed: IntCounter,
    /// `events_redelivered_total`: deliveries of events already applied (ignored).
    pub events_redelivered: IntCounter,
    /// `events_rejected_total`: messages that were not order events (dropped).
    pub events_rejected: IntCounter,
    /// `consumer_lag_seconds`: age of the oldest event not yet applied.
    pub consumer_lag: Gauge,
    /// `amqp_queue_messages{queue}`: messages ready in the queue.
    pub queue_messages: IntGaugeVec,
}

/// The labels of the gRPC histograms, as go-grpc-prometheus names them.
const GRPC_LABELS: [&str; 4] = ["grpc_type", "grpc_service", "grpc_method", "grpc_code"];
/// Latency buckets of every histogram, 1 ms to 10 s.
const BUCKETS: [f64; 13] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

impl Metrics {
    /// Creates and registers every series, including the `process_*` collector.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route template and status code."),
            &["route", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency by route.")
                .buckets(BUCKETS.to_vec()),
            &["route"],
        )?;
        let db_in_use =
            IntGauge::new("db_connections_in_use", "Database connections currently checked out.")?;
        let db_max = IntGauge::new("db_connections_max", "Size of the database connection pool.")?;
        let db_queries = IntCounterVec::new(
            Opts::new("db_queries_total", "Catalog queries by operation."),
            &["operation"],
        )?;
        let cache_hits = IntCounter::new("cache_hits_total", "Responses served from the cache.")?;
        let cache_misses =
            IntCounter::new("cache_misses_total", "Cache lookups that found nothing.")?;
        let cache_errors = IntCounter::new(
            "cache_errors_total",
            "Cache calls that failed (served from the database).",
        )?;
        let breaker_state = IntGaugeVec::new(
            Opts::new(
                "circuit_breaker_state",
                "Circuit breaker state per dependency (1 = current).",
            ),
            &["dependency", "state"],
        )?;
        let breaker_transitions = IntCounterVec::new(
            Opts::new("circuit_breaker_transitions_total", "Circuit breaker state changes."),
            &["dependency", "from", "to"],
        )?;
        let faults_injected = IntCounterVec::new(
            Opts::new("sandbox_faults_injected_total", "Faults injected through /admin/faults."),
            &["kind"],
        )?;
        let catalog_info = IntGaugeVec::new(
            Opts::new("sandbox_catalog_info", "Backends of this sandbox instance."),
            &["catalog", "cache"],
        )?;
        let grpc_server = HistogramVec::new(
            HistogramOpts::new(
                "grpc_server_handling_seconds",
                "Time to handle a gRPC call, by service, method and status code.",
            )
            .buckets(BUCKETS.to_vec()),
            &GRPC_LABELS,
        )?;
        let grpc_client = HistogramVec::new(
            HistogramOpts::new(
                "grpc_client_handling_seconds",
                "Time until a gRPC call made by this service completed, by service, method and code.",
            )
            .buckets(BUCKETS.to_vec()),
            &GRPC_LABELS,
        )?;
        let events_published = IntCounter::new(
            "events_published_total",
            "Outbox events published to RabbitMQ and confirmed by it.",
        )?;
        let outbox_pending = IntGauge::new(
            "outbox_pending",
            "Events stored with their order and not yet confirmed by RabbitMQ.",
        )?;
        let events_consumed =
            IntCounter::new("events_consumed_total", "Order events applied by the consumer.")?;
        let events_redelivered = IntCounter::new(
            "events_redelivered_total",
            "Deliveries of events that had already been applied (acknowledged, not applied again).",
        )?;
        let events_rejected = IntCounter::new(
            "events_rejected_total",
            "Messages that were not order events (dropped without requeue).",
        )?;
        let consumer_lag = Gauge::new(
            "consumer_lag_seconds",
            "Age of the oldest order event not yet applied by the consumer.",
        )?;
        let queue_messages = IntGaugeVec::new(
            Opts::new("amqp_queue_messages", "Messages ready in a RabbitMQ queue."),
            &["queue"],
        )?;
        registry.register(Box::new(events_published.clone()))?;
        registry.register(Box::new(outbox_pending.clone()))?;
        registry.register(Box::new(events_consumed.clone()))?;
        registry.register(Box::new(events_redelivered.clone()))?;
        registry.register(Box::new(events_rejected.clone()))?;
        registry.register(Box::new(consumer_lag.clone()))?;
        registry.register(Box::new(queue_messages.clone()))?;
        registry.register(Box::new(grpc_server.clone()))?;
        registry.register(Box::new(grpc_client.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(db_in_use.clone()))?;
        registry.register(Box::new(db_max.clone()))?;
        registry.register(Box::new(db_queries.clone()))?;
        registry.register(Box::new(cache_hits.clone()))?;
        registry.register(Box::new(cache_misses.clone()))?;
        registry.register(Box::new(cache_errors.clone()))?;
        registry.register(Box::new(breaker_state.clone()))?;
        registry.register(Box::new(breaker_transitions.clone()))?;
        registry.register(Box::new(faults_injected.clone()))?;
        registry.register(Box::new(catalog_info.clone()))?;
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        Ok(Self {
            registry,
            http_requests,
            http_duration,
            db_in_use,
            db_max,
            db_queries,
            cache_hits,
            cache_misses,
            cache_errors,
            breaker_state,
            breaker_transitions,
            faults_injected,
            catalog_info,
            grpc_server,
            grpc_client,
            events_published,
            outbox_pending,
            events_consumed,
            events_redelivered,
            events_rejected,
            consumer_lag,
            queue_messages,
        })
    }

    /// Renders every series in the Prometheus text exposition format (0.0.4).
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

/// Holds one `db_connections_in_use` slot for as long as it lives.
#[derive(Debug)]
pub struct InUseGuard(IntGauge);

impl InUseGuard {
    /// Counts one more connection in use until the guard drops.
    pub fn new(gauge: &IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InUseGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
