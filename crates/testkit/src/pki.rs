//! Throw-away certificates made with Debian's openssl 3 for the services
//! tests start with TLS (`TlsPostgres`, `KubeCluster`): a CA, and
//! certificates it signs with the extensions each server or client needs.

use std::path::Path;
use std::process::Stdio;

use crate::{Error, Result, binaries};

/// The key of a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// RSA 2048 (what the Kubernetes components expect).
    Rsa2048,
    /// ECDSA P-256.
    EcP256,
}

impl Key {
    fn args(self) -> &'static [&'static str] {
        match self {
            Key::Rsa2048 => &["-newkey", "rsa:2048"],
            Key::EcP256 => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
        }
    }
}

/// Runs `openssl ARGS` in `dir`; a failure names the command and carries
/// openssl's stderr.
pub fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let openssl = binaries::which("openssl").ok_or_else(|| Error::BinaryNotFound {
        name: "openssl".to_owned(),
        searched: "on PATH".to_owned(),
        hint: "apt-get install openssl".to_owned(),
    })?;
    let output = std::process::Command::new(openssl)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| Error::io("cannot run openssl", err))?;
    if output.status.success() {
        return Ok(());
    }
    Err(Error::ProcessFailed {
        what: format!("openssl {}", args.join(" ")),
        exit_code: output.status.code(),
        log_tail: String::from_utf8_lossy(&output.stderr).into_owned(),
        log_path: None,
        hint: "openssl 3 is expected (Debian's)".to_owned(),
    })
}

/// A self-signed CA valid two days: `dir/STEM.key` and `dir/STEM.crt`.
pub fn ca(dir: &Path, stem: &str, common_name: &str, key: Key) -> Result<()> {
    let (key_file, crt_file, subject) =
        (format!("{stem}.key"), format!("{stem}.crt"), format!("/CN={common_name}"));
    let mut args: Vec<&str> = vec!["req", "-x509"];
    args.extend_from_slice(key.args());
    args.extend_from_slice(&[
        "-nodes",
        "-keyout",
        &key_file,
        "-out",
        &crt_file,
        "-days",
        "2",
        "-subj",
        &subject,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &args)
}

/// A certificate signed by the CA `ca_stem`, valid two days:
/// `dir/NAME.key` and `dir/NAME.crt`, with `subject` (`/CN=...`) and the
/// x509v3 `extensions` (one per line: subjectAltName, extendedKeyUsage...).
pub fn signed(
    dir: &Path,
    ca_stem: &str,
    name: &str,
    subject: &str,
    extensions: &str,
    key: Key,
) -> Result<()> {
    let (key_file, csr_file, ext_file, crt_file) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.ext"),
        format!("{name}.crt"),
    );
    let mut args: Vec<&str> = vec!["req"];
    args.extend_from_slice(key.args());
    args.extend_from_slice(&["-nodes", "-keyout", &key_file, "-out", &csr_file, "-subj", subject]);
    openssl(dir, &args)?;
    std::fs::write(dir.join(&ext_file), extensions)
        .map_err(|err| Error::io(format!("cannot write {ext_file}"), err))?;
    let (ca_crt, ca_key) = (format!("{ca_stem}.crt"), format!("{ca_stem}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr_file,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &crt_file,
            "-days",
            "2",
            "-extfile",
            &ext_file,
        ],
    )
}
