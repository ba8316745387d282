//! Starts and stops **real** services for postlaunch's tests and `xtask`: a
//! PostgreSQL primary with a streaming standby, Prometheus, the sandbox
//! marketplace service, an S3-compatible server (moto), a MongoDB
//! wire-protocol server (nx-27017), an Ethereum node (anvil), and throw-away
//! databases on the machine's own PostgreSQL. One place for start-up code, so
//! tests never copy it.
//!
//! Every start-up waits until the service really answers, and every failure
//! is an [`Error`] that says what failed and what to try ("prometheus not
//! found on PATH: run scripts/install-deps.sh"), with the tail of the
//! service's log when it died. Nothing is ever skipped silently: a test whose
//! service is missing fails. Install the binaries with
//! `scripts/install-deps.sh`.
//!
//! Everything is stopped and its temporary directory removed on drop.
//!
//! ```no_run
//! use std::time::Duration;
//! use testkit::{PgPair, PgPairOptions, Prometheus, PrometheusOptions};
//!
//! # async fn example() -> testkit::Result<()> {
//! // A primary + synchronous standby on free loopback ports.
//! let pair = PgPair::start(PgPairOptions { synchronous: true }).await?;
//! let primary = testkit::postgres::connect(&pair.primary_url()).await?;
//! primary.batch_execute("CREATE TABLE t (id int)").await.ok();
//! pair.stop_primary_immediate().await?;
//! pair.promote_standby().await?;
//!
//! // A Prometheus scraping itself, queried with PromQL.
//! let prometheus = Prometheus::start(PrometheusOptions {
//!     scrape_self: true,
//!     ..PrometheusOptions::default()
//! })
//! .await?;
//! let up = prometheus.wait_for_query("up == 1", Duration::from_secs(10)).await?;
//! println!("{up}");
//! # Ok(())
//! # }
//! ```
//!
//! Modules:
//! - [`ports`] has free loopback ports and waits for TCP and HTTP.
//! - [`binaries`] finds programs (PATH, `/usr/lib/postgresql/<newest>/bin`).
//! - [`local`] points at the machine's pre-started PostgreSQL and Redis and
//!   makes a [`TempDatabase`].
//! - [`postgres`] builds a [`PgPair`], a primary and a streaming standby.
//! - [`pg_tls`] starts a [`TlsPostgres`] that requires TLS, with a throw-away CA.
//! - [`prometheus`] starts a [`Prometheus`].
//! - [`sandbox`] starts the [`Sandbox`], the marketplace service under test.
//! - [`s3`] starts an [`S3Server`] (moto), open or with signatures enforced.
//! - [`kube_cluster`] starts a [`KubeCluster`]: the upstream Kubernetes control plane on loopback.
//! - [`mongo`] starts a [`MongoServer`] (nx-27017).
//! - [`nginx`] starts an [`Nginx`] serving a static file (no `/metrics`).
//! - [`anvil`] starts an [`Anvil`], a real Ethereum node (npm `@foundry-rs/anvil`).

pub mod anvil;
pub mod binaries;
pub mod chaos_stage;
mod error;
pub mod kube_cluster;
pub mod local;
pub mod marketplace;
pub mod metrics;
pub mod mongo;
pub mod nginx;
pub mod pg_scratch;
pub mod pg_tls;
pub mod pki;
pub mod ports;
pub mod postgres;
pub mod prometheus;
pub mod rabbitmq;
pub mod s3;
pub mod sandbox;
mod service_dir;
mod unix_user;
pub mod wallet;

pub use anvil::Anvil;
pub use error::{Error, Result};
pub use kube_cluster::{KubeCluster, KubeOptions};
pub use local::{
    TempDatabase, ensure_database, local_postgres_url, local_redis_url, postgres_writable_dir,
    unique_name,
};
pub use marketplace::{Marketplace, MarketplaceOptions};
pub use mongo::MongoServer;
pub use nginx::Nginx;
pub use pg_scratch::ScratchPostgres;
pub use pg_tls::TlsPostgres;
pub use ports::{free_port, wait_for_http_ok, wait_for_tcp, wait_until};
pub use postgres::{PgPair, PgPairOptions, postgres_user_command};
pub use prometheus::{Prometheus, PrometheusOptions};
pub use rabbitmq::RabbitMq;
pub use s3::{S3Credentials, S3Server};
pub use sandbox::{Sandbox, target_dir, workspace_binary};
pub use unix_user::is_root;
