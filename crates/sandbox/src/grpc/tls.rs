//! Mutual TLS between the roles: every service presents a certificate signed
//! by one CA and accepts only peers whose certificate that CA signed.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::config::{Config, ConfigError};

/// The PEM files of `--tls-cert`, `--tls-key` and `--tls-ca`, read and checked.
#[derive(Clone)]
pub struct TlsFiles {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles").finish_non_exhaustive()
    }
}

impl TlsFiles {
    /// Reads the files named by the TLS flags; `None` without them.
    pub fn load(config: &Config) -> Result<Option<Self>, ConfigError> {
        let (Some(cert), Some(key), Some(ca)) = (&config.tls_cert, &config.tls_key, &config.tls_ca)
        else {
            return Ok(None);
        };
        Ok(Some(Self {
            cert: check_pem("--tls-cert", cert)?,
            key: check_pem("--tls-key", key)?,
            ca: check_pem("--tls-ca", ca)?,
        }))
    }

    /// A server that requires a client certificate signed by the CA.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert, &self.key))
            .client_ca_root(Certificate::from_pem(&self.ca))
    }

    /// A client that presents this service's certificate and expects the peer's
    /// certificate to carry the DNS name `peer` (its role), whatever address it
    /// is reached at.
    pub fn client(&self, peer: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .identity(Identity::from_pem(&self.cert, &self.key))
            .ca_certificate(Certificate::from_pem(&self.ca))
            .domain_name(peer)
    }
}

/// Reads `path` and checks it holds what `flag` takes (certificates, or one
/// private key for `--tls-key`); returns its bytes.
pub fn check_pem(flag: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let fail = |reason: String| ConfigError { flag, reason };
    let bytes =
        std::fs::read(path).map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    if flag == "--tls-key" {
        PrivateKeyDer::from_pem_slice(&bytes)
            .map_err(|e| fail(format!("{} holds no PEM private key: {e}", path.display())))?;
    } else {
        parse_certificates(&bytes).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    }
    Ok(bytes)
}

/// The certificates in a PEM file; an error if there are none or one is broken.
pub fn parse_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("a PEM certificate does not parse: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".to_owned());
    }
    Ok(certs)
}
