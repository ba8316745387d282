//! The database under test: a (multi-host) PostgreSQL URL, shown without its
//! password, and split into one connection config per host for observation.

use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::{Host, TargetSessionAttrs};

/// A parsed target: its config and the TLS connector its `sslmode` and
/// `sslrootcert` call for (libpq's rules, shared-types' `pg`).
#[derive(Debug, Clone)]
pub struct Target {
    config: tokio_postgres::Config,
    tls: shared_types::pg::PgConnectOptions,
}

/// The URL does not parse or names no host.
#[derive(Debug, thiserror::Error)]
#[error("invalid --url: {0} (expected postgres://user@host1:port1,host2:port2/dbname)")]
pub struct InvalidTarget(String);

impl FromStr for Target {
    type Err = InvalidTarget;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let tls = shared_types::pg::PgConnectOptions::parse(url)
            .map_err(|e| InvalidTarget(e.to_string()))?;
        let config = tls.config.clone();
        if config.get_hosts().is_empty() {
            return Err(InvalidTarget("no host given".to_owned()));
        }
        Ok(Self { config, tls })
    }
}

impl Target {
    /// The TLS connector for every connection to this target (unused when
    /// `sslmode=disable`).
    pub fn tls(&self) -> tokio_postgres_rustls::MakeRustlsConnect {
        self.tls.tls.clone()
    }

    /// `host:port,host:port/dbname`: printable, never the password.
    pub fn display(&self) -> String {
        let hosts: Vec<String> = self.hosts().iter().map(|(h, p)| format!("{h}:{p}")).collect();
        format!("{}/{}", hosts.join(","), self.config.get_dbname().unwrap_or("postgres"))
    }

    /// Every host with its port (the last port repeats when fewer are given).
    pub fn hosts(&self) -> Vec<(String, u16)> {
        let ports = self.config.get_ports();
        self.config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let port = ports.get(i).or(ports.last()).copied().unwrap_or(5432);
                let host = match host {
                    Host::Tcp(h) => h.clone(),
                    Host::Unix(p) => p.display().to_string(),
                };
                (host, port)
            })
            .collect()
    }

    /// Whether every host is a loopback address (or a Unix socket).
    pub fn is_loopback(&self) -> bool {
        self.config.get_hosts().iter().all(|h| match h {
            Host::Tcp(h) => shared_types::is_loopback_host(h),
            Host::Unix(_) => true,
        })
    }

    /// The config writers use: any host that accepts writes, with service-like timeouts.
    pub fn writer_config(&self, connect_timeout: Duration) -> tokio_postgres::Config {
        let mut config = self.config.clone();
        config.target_session_attrs(TargetSessionAttrs::ReadWrite);
        config.connect_timeout(connect_timeout);
        config.application_name("pg-failover-probe");
        config
    }

    /// The config readers use: any host that answers.
    pub fn reader_config(&self, connect_timeout: Duration) -> tokio_postgres::Config {
        let mut config = self.config.clone();
        config.target_session_attrs(TargetSessionAttrs::Any);
        config.connect_timeout(connect_timeout);
        config.application_name("pg-failover-probe-reader");
        config
    }

    /// One config per host, for sampling each server's role.
    pub fn per_host_configs(
        &self,
        connect_timeout: Duration,
    ) -> Vec<(String, tokio_postgres::Config)> {
        self.hosts()
            .into_iter()
            .map(|(host, port)| {
                let mut config = tokio_postgres::Config::new();
                config.host(&host).port(port);
                if let Some(user) = self.config.get_user() {
                    config.user(user);
                }
                if let Some(password) = self.config.get_password() {
                    config.password(password);
                }
                if let Some(db) = self.config.get_dbname() {
                    config.dbname(db);
                }
                config.ssl_mode(self.config.get_ssl_mode());
                config
                    .connect_timeout(connect_timeout)
                    .application_name("pg-failover-probe-observer");
                (format!("{host}:{port}"), config)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_host_urls_are_split_and_shown_without_password() {
        let target: Target =
            "postgres://app:s3cret@10.0.0.1:5433,10.0.0.2:5434/market".parse().unwrap();
        assert_eq!(target.display(), "10.0.0.1:5433,10.0.0.2:5434/market");
        assert_eq!(target.hosts(), [("10.0.0.1".to_owned(), 5433), ("10.0.0.2".to_owned(), 5434)]);
        assert!(!target.is_loopback());
        assert!(!format!("{:?}", target.display()).contains("s3cret"));
    }

    #[test]
    fn loopback_targets_are_recognised() {
        let target: Target =
            "postgres://postgres@127.0.0.1:5433,localhost:5434/postgres".parse().unwrap();
        assert!(target.is_loopback());
    }

    #[test]
    fn garbage_urls_are_usage_errors() {
        for url in ["", "postgres://[::1", "postgres://host:notaport/db", "mysql://x"] {
            let err = url.parse::<Target>().unwrap_err().to_string();
            assert!(err.starts_with("invalid --url"), "{url}: {err}");
        }
    }
}
