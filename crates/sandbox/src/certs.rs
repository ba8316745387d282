//! `sandbox certs DIR`: a throw-away CA and one certificate per service, so
//! the roles can talk mutual TLS in tests and on the local cluster.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The services that get a certificate: every role that serves or calls gRPC.
pub const SERVICES: [&str; 3] = ["gateway", "auth", "catalog"];

/// Why the certificates could not be written.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// A name is not a valid DNS name.
    #[error("cannot make a certificate for {name:?}: {source}")]
    Generate {
        /// The name or service at fault.
        name: String,
        /// What rcgen refused.
        source: rcgen::Error,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Writes `ca.pem`, `ca-key.pem` and `SERVICE.pem` / `SERVICE-key.pem` for
/// every service into `dir`; returns the files written.
pub fn write(dir: &Path, extra_dns_names: &[String]) -> Result<Vec<PathBuf>, CertsError> {
    std::fs::create_dir_all(dir)
        .map_err(|source| CertsError::Write { path: dir.to_path_buf(), source })?;
    let mut written = Vec::new();

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(generate("ca"))?;
    ca_params.distinguished_name.push(DnType::CommonName, "postlaunch sandbox throw-away CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().map_err(generate("ca"))?;
    let ca_key_pem = ca_key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(generate("ca"))?;
    written.push(save(dir, "ca.pem", &ca.pem())?);
    written.push(save(dir, "ca-key.pem", &ca_key_pem)?);

    for service in SERVICES {
        let mut names = vec![service.to_owned(), "localhost".to_owned(), "127.0.0.1".to_owned()];
        names.extend(extra_dns_names.iter().map(|n| n.replace("{service}", service)));
        let mut params = CertificateParams::new(names).map_err(generate(service))?;
        params.distinguished_name.push(DnType::CommonName, service);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().map_err(generate(service))?;
        let cert = params.signed_by(&key, &ca).map_err(generate(service))?;
        written.push(save(dir, &format!("{service}.pem"), &cert.pem())?);
        written.push(save(dir, &format!("{service}-key.pem"), &key.serialize_pem())?);
    }
    Ok(written)
}

fn generate(name: &str) -> impl FnOnce(rcgen::Error) -> CertsError + use<> {
    let name = name.to_owned();
    move |source| CertsError::Generate { name, source }
}

fn save(dir: &Path, name: &str, contents: &str) -> Result<PathBuf, CertsError> {
    let path = dir.join(name);
    std::fs::write(&path, contents)
        .map_err(|source| CertsError::Write { path: path.clone(), source })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_ca_and_a_pair_per_service_that_parse() {
        let dir = tempfile::tempdir().unwrap();
        let files = write(dir.path(), &["{service}.marketplace.svc".to_owned()]).unwrap();
        assert_eq!(files.len(), 2 + 2 * SERVICES.len());
        for service in SERVICES {
            let pem = std::fs::read(dir.path().join(format!("{service}.pem"))).unwrap();
            crate::grpc::tls::parse_certificates(&pem).unwrap();
        }
    }

    #[test]
    fn a_bad_dns_name_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = write(dir.path(), &["bäd.example".to_owned()]).unwrap_err();
        assert!(err.to_string().contains("gateway"), "{err}");
    }
}
