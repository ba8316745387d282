//! PostgreSQL connection settings that honour libpq's `sslmode` and
//! `sslrootcert`, with rustls (feature `postgres`).
//!
//! tokio-postgres understands `sslmode=disable|prefer|require` only and
//! rejects `verify-ca`, `verify-full` and `sslrootcert`, while production
//! URLs carry exactly those. [`PgConnectOptions::parse`] takes the URL (or a
//! `key=value` string) as libpq does, removes the TLS keys tokio-postgres
//! does not know, and returns its [`tokio_postgres::Config`] together with
//! one TLS connector for every mode, so deadpool pools and single
//! connections are built the same way:
//!
//! | `sslmode` | encrypted | certificate checked | host name checked |
//! |---|---|---|---|
//! | `disable` | no | - | - |
//! | `allow`, `prefer` (the default) | if the server offers TLS | no | no |
//! | `require` | yes | only if `sslrootcert` is given (as libpq does) | no |
//! | `verify-ca` | yes | against `sslrootcert` | no |
//! | `verify-full` | yes | against `sslrootcert` | yes |
//!
//! `sslrootcert` defaults to `~/.postgresql/root.crt` as in libpq; `system`
//! uses the machine's trusted roots. The crypto provider is chosen here
//! (ring), so the process needs no global rustls default.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode as WireSslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS if the server offers it, no certificate check (`allow` is read as this).
    Prefer,
    /// TLS always; the certificate is checked only when `sslrootcert` is given.
    Require,
    /// TLS, certificate chain checked against `sslrootcert`, host name not.
    VerifyCa,
    /// TLS, chain and host name checked.
    VerifyFull,
}

impl SslMode {
    /// The value as written in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Why a PostgreSQL URL's TLS settings cannot be used.
#[derive(Debug)]
pub enum PgUrlError {
    /// `sslmode` has a value libpq does not define.
    SslMode(String),
    /// The URL (without its TLS keys) is not one tokio-postgres accepts.
    Url(String),
    /// `sslrootcert` could not be read or holds no certificate.
    RootCert { path: PathBuf, reason: String },
    /// A key libpq has that we do not support (client certificates).
    Unsupported(String),
}

impl fmt::Display for PgUrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PgUrlError::SslMode(v) => write!(
                f,
                "sslmode={v} is not one of disable, allow, prefer, require, verify-ca, verify-full"
            ),
            PgUrlError::Url(e) => write!(f, "invalid PostgreSQL URL: {e}"),
            PgUrlError::RootCert { path, reason } => {
                write!(f, "sslrootcert {}: {reason}", path.display())
            }
            PgUrlError::Unsupported(key) => write!(
                f,
                "{key} (TLS client certificates) is not supported; authenticate with a password"
            ),
        }
    }
}

impl std::error::Error for PgUrlError {}

/// A PostgreSQL target ready to connect: tokio-postgres' config (TLS keys
/// removed) and the TLS connector its `sslmode` calls for.
#[derive(Clone)]
pub struct PgConnectOptions {
    /// The connection settings, with `ssl_mode` set from `sslmode`.
    pub config: tokio_postgres::Config,
    /// The connector to pass to `connect` or to a deadpool `Manager`.
    pub tls: MakeRustlsConnect,
    /// The `sslmode` the URL asked for.
    pub mode: SslMode,
}

impl fmt::Debug for PgConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Config's Debug already redacts the password.
        f.debug_struct("PgConnectOptions")
            .field("config", &self.config)
            .field("mode", &self.mode)
            .finish()
    }
}

impl PgConnectOptions {
    /// Reads a `postgres://` URL or a `key=value` connection string.
    pub fn parse(url: &str) -> Result<PgConnectOptions, PgUrlError> {
        let (rest, tls) = split_tls_keys(url)?;
        let mut config = tokio_postgres::Config::from_str(&rest)
            .map_err(|e| PgUrlError::Url(crate::redact_url(&e.to_string())))?;
        let mode = tls.mode.unwrap_or(SslMode::Prefer);
        config.ssl_mode(match mode {
            SslMode::Disable => WireSslMode::Disable,
            SslMode::Prefer => WireSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => WireSslMode::Require,
        });
        let client = client_config(mode, tls.root_cert.as_deref())?;
        Ok(PgConnectOptions { config, tls: MakeRustlsConnect::new(client), mode })
    }

    /// Connects once (with `timeout`) and drives the connection on the
    /// current tokio runtime; the connection ends when the client is dropped.
    /// Errors name the host and, for TLS, the handshake's reason.
    pub async fn connect(
        &self,
        timeout: Duration,
    ) -> Result<tokio_postgres::Client, PgConnectError> {
        let target = describe(&self.config);
        let connecting = self.config.connect(self.tls.clone());
        let (client, connection) = match tokio::time::timeout(timeout, connecting).await {
            Err(_) => {
                return Err(PgConnectError {
                    target,
                    reason: format!("no answer within {timeout:?}"),
                });
            }
            Ok(Err(e)) => return Err(PgConnectError { target, reason: error_chain(&e) }),
            Ok(Ok(pair)) => pair,
        };
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }
}

/// A connection attempt that failed: the server (host:port/dbname, never a
/// password) and the reason, TLS handshake errors included.
#[derive(Debug)]
pub struct PgConnectError {
    /// `host:port/dbname`.
    pub target: String,
    /// What went wrong, with every cause.
    pub reason: String,
}

impl fmt::Display for PgConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot connect to PostgreSQL at {}: {}", self.target, self.reason)
    }
}

impl std::error::Error for PgConnectError {}

/// A tokio-postgres error with its causes (the TLS reason lives in a source).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `host:port/dbname` of a config, never its password.
pub fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or(""))
}

#[derive(Debug, Default)]
struct TlsKeys {
    mode: Option<SslMode>,
    root_cert: Option<String>,
}

fn parse_mode(value: &str) -> Result<SslMode, PgUrlError> {
    Ok(match value {
        "disable" => SslMode::Disable,
        "allow" | "prefer" => SslMode::Prefer,
        "require" => SslMode::Require,
        "verify-ca" => SslMode::VerifyCa,
        "verify-full" => SslMode::VerifyFull,
        other => return Err(PgUrlError::SslMode(other.to_owned())),
    })
}

/// Takes `sslmode` and `sslrootcert` out of a URL's query (or a key=value
/// string) and returns the rest unchanged.
fn split_tls_keys(url: &str) -> Result<(String, TlsKeys), PgUrlError> {
    let mut keys = TlsKeys::default();
    let mut take = |key: &str, value: String| -> Result<bool, PgUrlError> {
        match key {
            "sslmode" => keys.mode = Some(parse_mode(&value)?),
            "sslrootcert" => keys.root_cert = Some(value),
            "sslcert" | "sslkey" | "sslpassword" => {
                return Err(PgUrlError::Unsupported(key.to_owned()));
            }
            _ => return Ok(false),
        }
        Ok(true)
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_owned(), keys));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !take(key, percent_decode(value))? {
                kept.push(pair);
            }
        }
        let rest =
            if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
        Ok((rest, keys))
    } else {
        // key=value form; values in single quotes are not split.
        let mut kept = Vec::new();
        for word in url.split_whitespace() {
            let (key, value) = word.split_once('=').unwrap_or((word, ""));
            if !take(key, value.trim_matches('\'').to_owned())? {
                kept.push(word);
            }
        }
        Ok((kept.join(" "), keys))
    }
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(mode: SslMode, root_cert: Option<&str>) -> Result<ClientConfig, PgUrlError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| PgUrlError::Url(format!("TLS set-up: {e}")))?;
    let verify = match mode {
        SslMode::Disable | SslMode::Prefer => None,
        // libpq: require with a root certificate behaves like verify-ca.
        SslMode::Require => root_cert.map(|_| false),
        SslMode::VerifyCa => Some(false),
        SslMode::VerifyFull => Some(true),
    };
    let config = match verify {
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate))
            .with_no_client_auth(),
        Some(check_name) => {
            let roots = Arc::new(load_roots(root_cert)?);
            let webpki =
                rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(|e| PgUrlError::Url(format!("TLS set-up: {e}")))?;
            if check_name {
                builder.with_webpki_verifier(webpki).with_no_client_auth()
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
                    .with_no_client_auth()
            }
        }
    };
    Ok(config)
}

fn load_roots(root_cert: Option<&str>) -> Result<RootCertStore, PgUrlError> {
    let mut roots = RootCertStore::empty();
    if root_cert == Some("system") {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        return Ok(roots);
    }
    let path = match root_cert {
        Some(p) => PathBuf::from(p),
        None => std::env::var_os("HOME")
            .map(|h| Path::new(&h).join(".postgresql/root.crt"))
            .unwrap_or_else(|| PathBuf::from(".postgresql/root.crt")),
    };
    let error = |reason: String| PgUrlError::RootCert { path: path.clone(), reason };
    let certs = CertificateDer::pem_file_iter(&path)
        .map_err(|e| error(format!("cannot read it ({e}); pass sslrootcert=FILE with the CA")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(format!("not a PEM certificate file ({e})")))?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(error("holds no usable CA certificate".to_owned()));
    }
    Ok(roots)
}

/// `prefer` and `require` without a root certificate: encrypted, unchecked,
/// exactly libpq's behaviour (it protects against passive sniffing only).
#[derive(Debug)]
struct AcceptAnyCertificate;

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the name may differ.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_keys_leave_the_url_and_set_the_mode() {
        let (rest, keys) =
            split_tls_keys("postgres://u:p@db:5432/app?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem&application_name=x")
                .expect("valid");
        assert_eq!(rest, "postgres://u:p@db:5432/app?application_name=x");
        assert_eq!(keys.mode, Some(SslMode::VerifyFull));
        assert_eq!(keys.root_cert.as_deref(), Some("/tmp/ca.pem"));
        let (rest, keys) = split_tls_keys("host=db sslmode=disable dbname=app").expect("valid");
        assert_eq!((rest.as_str(), keys.mode), ("host=db dbname=app", Some(SslMode::Disable)));
    }

    #[test]
    fn bad_tls_settings_are_named() {
        let err = PgConnectOptions::parse("postgres://db/app?sslmode=verify").map(|_| ()).err();
        assert!(err.is_some_and(|e| e.to_string().contains("sslmode=verify is not one of")));
        let err = PgConnectOptions::parse(
            "postgres://db/app?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        )
        .map(|_| ())
        .err();
        assert!(err.is_some_and(|e| e.to_string().contains("/nonexistent/ca.pem")));
        let err = PgConnectOptions::parse("postgres://db/app?sslcert=x").map(|_| ()).err();
        assert!(err.is_some_and(|e| e.to_string().contains("sslcert")));
        assert!(
            PgConnectOptions::parse("postgres://db/app?sslmode=require")
                .is_ok_and(|o| o.mode == SslMode::Require)
        );
        assert!(
            PgConnectOptions::parse("postgres://db/app").is_ok_and(|o| o.mode == SslMode::Prefer)
        );
    }
}
