//! A real PostgreSQL that requires TLS (`ssl = on`, `hostnossl ... reject`),
//! with a throw-away CA made by openssl at start, for testing that every tool
//! honours `sslmode` and `sslrootcert`.
//!
//! ```text
//! <tmp>/ca.crt, ca.key          the CA that signed the server certificate
//! <tmp>/other-ca.crt            a second CA that signed nothing here (the "wrong CA")
//! <tmp>/server.crt, server.key  CN=localhost, SAN DNS:localhost, IP:127.0.0.1
//! <tmp>/data/                   the cluster; <tmp>/server.log its log
//! ```

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tempfile::TempDir;

use crate::error::tail_of_file;
use crate::pki::{self, Key};
use crate::ports::free_port;
use crate::postgres::{POSTGRES_USER, postgres_user_command};
use crate::{Error, Result, binaries, unix_user};

/// A PostgreSQL 15 server on 127.0.0.1 that refuses connections without TLS.
/// Dropping it stops the server and removes its directory.
#[derive(Debug)]
pub struct TlsPostgres {
    dir: TempDir,
    port: u16,
    pg_ctl: PathBuf,
}

impl TlsPostgres {
    /// Makes the certificates, initialises and starts the server.
    pub async fn start() -> Result<TlsPostgres> {
        let dir = tempfile::Builder::new()
            .prefix("postlaunch-pgtls-")
            .tempdir()
            .map_err(|err| Error::io("cannot create a temporary directory for TlsPostgres", err))?;
        let pg_ctl = binaries::postgres_tool("pg_ctl")?;
        let initdb = binaries::postgres_tool("initdb")?;
        let path = dir.path().to_owned();
        let port = free_port();
        let server = TlsPostgres { dir, port, pg_ctl };
        tokio::task::spawn_blocking(move || -> Result<()> {
            make_certificates(&path)?;
            if unix_user::is_root() {
                unix_user::chown_to(&path, POSTGRES_USER)?;
                for file in ["server.key", "server.crt"] {
                    unix_user::chown_to(&path.join(file), POSTGRES_USER)?;
                }
            }
            let conf = format!(
                "ssl = on\nssl_cert_file = '{dir}/server.crt'\nssl_key_file = '{dir}/server.key'\n",
                dir = path.display()
            );
            init_cluster(&initdb, &path, port, &conf, TLS_HBA)
        })
        .await
        .map_err(|err| {
            Error::io("the TlsPostgres set-up task failed", std::io::Error::other(err))
        })??;
        server.pg_ctl_run(&["-w", "-t", "30", "-l"], true)?;
        Ok(server)
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA that signed the server's certificate.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A CA that did not sign it.
    pub fn other_ca_path(&self) -> PathBuf {
        self.dir.path().join("other-ca.crt")
    }

    /// `postgres://postgres@{host}:{port}/postgres` with `query` appended
    /// (e.g. `sslmode=verify-full&sslrootcert=/…/ca.crt`). `host` is
    /// `localhost` or `127.0.0.1`: both are in the certificate.
    pub fn url(&self, host: &str, query: &str) -> String {
        let base = format!("postgres://postgres@{host}:{}/postgres", self.port);
        if query.is_empty() { base } else { format!("{base}?{query}") }
    }

    /// The verify-full URL with the right CA: what a production URL looks like.
    pub fn verify_full_url(&self) -> String {
        self.url(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={}", self.ca_path().display()),
        )
    }

    /// The server log, for error messages.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn pg_ctl_run(&self, args: &[&str], start: bool) -> Result<()> {
        let what = format!("pg_ctl start of the TLS server on 127.0.0.1:{}", self.port);
        let hint = "is the key readable by the postgres user only (0600)?";
        pg_ctl(&self.pg_ctl, self.dir.path(), args, start.then_some((what.as_str(), hint)))
    }
}

/// Runs `pg_ctl -D DIR/data ARGS` as the postgres user; with `start` =
/// (what, hint), appends `DIR/server.log start` and turns a failure into an
/// error quoting the log. Shared by the TLS and scratch servers.
pub(crate) fn pg_ctl(
    pg_ctl: &Path,
    dir: &Path,
    args: &[&str],
    start: Option<(&str, &str)>,
) -> Result<()> {
    let log = dir.join("server.log");
    let mut cmd = postgres_user_command(pg_ctl);
    cmd.arg("-D").arg(dir.join("data")).args(args);
    if start.is_some() {
        cmd.arg(&log).arg("start");
    }
    cmd.current_dir(dir).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let status = cmd.status().map_err(|err| Error::io("cannot run pg_ctl", err))?;
    match start {
        Some((what, hint)) if !status.success() => Err(Error::ProcessFailed {
            what: what.to_owned(),
            exit_code: status.code(),
            log_tail: tail_of_file(&log, 30),
            log_path: Some(log),
            hint: hint.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Stops the server in `dir` if it runs (`-m immediate`): for `Drop`.
pub(crate) fn stop_if_running(pg_ctl_path: &Path, dir: &Path) {
    if dir.join("data/postmaster.pid").exists() {
        let _ = pg_ctl(pg_ctl_path, dir, &["-m", "immediate", "-w", "-t", "30", "stop"], None);
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        stop_if_running(&self.pg_ctl, self.dir.path());
    }
}

fn make_certificates(dir: &Path) -> Result<()> {
    pki::ca(dir, "ca", "postlaunch test CA", Key::EcP256)?;
    pki::ca(dir, "other-ca", "another CA", Key::EcP256)?;
    pki::signed(
        dir,
        "ca",
        "server",
        "/CN=localhost",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        Key::EcP256,
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("server.key"), std::fs::Permissions::from_mode(0o600))
        .map_err(|err| Error::io("cannot chmod server.key", err))
}

/// pg_hba.conf of the TLS server: TLS required on TCP.
const TLS_HBA: &str = "# postlaunch testkit TlsPostgres: TLS required on TCP\n\
     local     all all              trust\n\
     hostssl   all all 127.0.0.1/32 trust\n\
     hostnossl all all 127.0.0.1/32 reject\n";

/// pg_hba.conf of a plain scratch server: trust on loopback.
pub(crate) const TRUST_HBA: &str = "# postlaunch testkit scratch PostgreSQL\n\
     local all all              trust\n\
     host  all all 127.0.0.1/32 trust\n";

/// initdb into `dir/data` as the postgres user, listening on 127.0.0.1:`port`
/// with `extra_conf` appended to postgresql.conf and `hba` as pg_hba.conf.
pub(crate) fn init_cluster(
    initdb: &Path,
    dir: &Path,
    port: u16,
    extra_conf: &str,
    hba: &str,
) -> Result<()> {
    let data = dir.join("data");
    let output = postgres_user_command(initdb)
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| Error::io("cannot run initdb", err))?;
    if !output.status.success() {
        return Err(Error::ProcessFailed {
            what: format!("initdb -D {}", data.display()),
            exit_code: output.status.code(),
            log_tail: String::from_utf8_lossy(&output.stderr).into_owned(),
            log_path: None,
            hint: "is the temporary directory writable by the postgres user?".to_owned(),
        });
    }
    let conf = format!(
        "\n# postlaunch testkit\n\
         listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{dir}'\n\
         fsync = off\nshared_buffers = 16MB\nmax_connections = 40\n{extra_conf}",
        dir = dir.display()
    );
    let append = |file: &str, text: &str, replace: bool| -> Result<()> {
        use std::io::Write;
        let path = data.join(file);
        std::fs::OpenOptions::new()
            .append(!replace)
            .write(true)
            .truncate(replace)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|err| Error::io(format!("cannot write {}", path.display()), err))
    };
    append("postgresql.conf", &conf, false)?;
    append("pg_hba.conf", hba, true)
}
