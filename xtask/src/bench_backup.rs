//! `cargo xtask bench backup-agent`: backup-agent and pgBackRest back up and
//! restore the same pgbench database to the same S3-compatible server in one
//! run.
//!
//! - One PostgreSQL 15 cluster, `pgbench -i -s SCALE`, WAL archived by
//!   pgBackRest (`archive_command = 'pgbackrest archive-push %p'`, which its
//!   backups require; backup-agent's base backups carry their own WAL).
//! - One moto server. backup-agent talks to it over HTTP; pgBackRest only
//!   speaks HTTPS, so it goes through an nginx TLS proxy in front of the same
//!   server (a throw-away certificate whose DNS SAN is `localhost`, the
//!   endpoint pgBackRest is given, trusted through `repo1-storage-ca-file`).
//! - pgBackRest is tuned as its documentation recommends for speed:
//!   `compress-type=zst`, `process-max=2` (the machine's cores),
//!   `start-fast=y`. backup-agent runs with its defaults (zstd, multi-threaded).
//! - Backup: wall time of a full backup. Restore: wall time from an empty
//!   directory to a promoted server answering queries (what RTO measures),
//!   checked by counting pgbench_accounts. MB/s is the database size (the
//!   same number for both) over that time. Repository size is the bytes under
//!   each tool's backup prefix in the bucket.
//!
//! Figures, not assertions. Needs `scripts/install-deps.sh backup-bench`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shared_types::Report;
use testkit::S3Server;

use crate::tools;

const BUCKET: &str = "bench";
const OURS_PREFIX: &str = "backup-agent";
const THEIRS_PREFIX: &str = "pgbackrest";
const STANZA: &str = "bench";
const HINT: &str = "run `scripts/install-deps.sh backup-bench`";

/// Runs the benchmark at pgbench scale `scale` and prints the table.
pub(crate) async fn backup_agent(scale: u32) -> anyhow::Result<()> {
    crate::bench::build_release("backup-agent")?;
    let ours = tools::binary("release", "backup-agent");
    let pgbackrest = which("pgbackrest")?;
    let work = testkit::postgres_writable_dir("postlaunch-bench-backup-")?;
    let dir = work.path();

    eprintln!("bench: starting moto and an nginx TLS proxy in front of it");
    let s3 = S3Server::start().await?;
    s3.create_bucket(BUCKET).await?;
    let proxy = TlsProxy::start(dir, s3.port()).await?;

    let source = Cluster::init(
        dir.join("source"),
        &[
            "archive_mode = on",
            "archive_command = '/bin/true'",
            "wal_level = replica",
            "max_wal_senders = 4",
        ],
    )
    .await?;
    eprintln!("bench: pgbench -i -s {scale} on 127.0.0.1:{} (takes a while)", source.port);
    let pgbench = testkit::binaries::postgres_tool("pgbench")?;
    as_postgres(
        &pgbench,
        &[
            "-i",
            "-q",
            "-s",
            &scale.to_string(),
            "-h",
            "127.0.0.1",
            "-p",
            &source.port.to_string(),
            "postgres",
        ],
    )
    .await
    .context("pgbench -i")?;
    let size = source.sql("SELECT sum(pg_database_size(datname)) FROM pg_database").await?;
    let size: f64 = size.trim().parse().context("database size")?;
    let accounts = u64::from(scale) * 100_000;

    let conf = dir.join("pgbackrest.conf");
    std::fs::write(&conf, pgbackrest_conf(dir, &source, &proxy, s3.credentials()))?;
    chown_postgres(&conf).await?;
    let conf_arg = format!("--config={}", conf.display());
    let push = format!("{} {conf_arg} --stanza={STANZA} archive-push %p", pgbackrest.display());
    source.sql(&format!("ALTER SYSTEM SET archive_command = '{push}'")).await?;
    source.sql("SELECT pg_reload_conf()").await?;
    as_postgres(&pgbackrest, &[&conf_arg, &format!("--stanza={STANZA}"), "stanza-create"])
        .await
        .context("pgbackrest stanza-create")?;

    let repo = format!("s3://{BUCKET}/{OURS_PREFIX}");
    let endpoint = s3.endpoint();
    let keys = s3.credentials().env();
    let pg_url = format!("postgres://postgres@127.0.0.1:{}/postgres", source.port);

    eprintln!("bench: backup-agent backup postgres");
    let started = Instant::now();
    let report = run_ours(
        &ours,
        &["backup", "postgres", "--repo", &repo, "--s3-endpoint", &endpoint, "--pg-url", &pg_url],
        &keys,
    )
    .await?;
    let ours_backup = started.elapsed().as_secs_f64();
    if report.verdict() != shared_types::Verdict::Pass {
        bail!("backup-agent backup did not pass: {}", report.to_json_pretty());
    }

    eprintln!("bench: pgbackrest backup --type=full");
    let started = Instant::now();
    as_postgres(&pgbackrest, &[&conf_arg, &format!("--stanza={STANZA}"), "--type=full", "backup"])
        .await
        .context("pgbackrest backup")?;
    let theirs_backup = started.elapsed().as_secs_f64();

    let (ours_bytes, ours_objects) = s3.usage(BUCKET, &format!("{OURS_PREFIX}/backups/")).await?;
    let (theirs_bytes, theirs_objects) =
        s3.usage(BUCKET, &format!("{THEIRS_PREFIX}/backup/{STANZA}/")).await?;
    let (archive_bytes, _) = s3.usage(BUCKET, &format!("{THEIRS_PREFIX}/archive/")).await?;
    source.stop().await;

    eprintln!("bench: backup-agent restore postgres");
    let started = Instant::now();
    let report = run_ours(
        &ours,
        &["restore", "postgres", "--repo", &repo, "--s3-endpoint", &endpoint],
        &keys,
    )
    .await?;
    let ours_restore = started.elapsed().as_secs_f64();
    let url = report.data.get("url").and_then(|u| u.as_str()).context("restore gave no url")?;
    let restored_dir = report.data.get("dir").and_then(|u| u.as_str()).map(PathBuf::from);
    let counted = count_accounts(url).await;
    if let Some(dir) = &restored_dir {
        stop_dir(&dir.join("data")).await;
    }
    check_count("backup-agent", counted?, accounts)?;

    eprintln!("bench: pgbackrest restore --type=immediate, then start and wait for promotion");
    let target = Cluster::empty(dir.join("restored"))?;
    chown_postgres(&dir.join("restored")).await?;
    let started = Instant::now();
    as_postgres(
        &pgbackrest,
        &[
            &conf_arg,
            &format!("--stanza={STANZA}"),
            &format!("--pg1-path={}", target.data.display()),
            "--type=immediate",
            "--target-action=promote",
            "restore",
        ],
    )
    .await
    .context("pgbackrest restore")?;
    target.start(&["-c", "archive_mode=off"]).await?;
    target.wait_promoted(Duration::from_secs(600)).await?;
    let theirs_restore = started.elapsed().as_secs_f64();
    let counted = count_accounts(&target.url()).await;
    target.stop().await;
    check_count("pgBackRest", counted?, accounts)?;
    drop(proxy);

    let mb = size / 1e6;
    println!(
        "\nbackup-agent vs pgBackRest {}: pgbench scale {scale}, database {mb:.0} MB, one moto S3 server (pgBackRest through an nginx TLS proxy)\n",
        pgbackrest_version(&pgbackrest).await
    );
    println!("| tool | backup | backup MB/s | restore to queryable | restore MB/s | repository |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (tool, backup, restore, bytes, objects) in [
        ("backup-agent", ours_backup, ours_restore, ours_bytes, ours_objects),
        (
            "pgBackRest (zst, process-max=2)",
            theirs_backup,
            theirs_restore,
            theirs_bytes,
            theirs_objects,
        ),
    ] {
        println!(
            "| {tool} | {backup:.1} s | {:.1} | {restore:.1} s | {:.1} | {:.1} MB in {objects} objects |",
            mb / backup,
            mb / restore,
            bytes as f64 / 1e6
        );
    }
    println!(
        "\nbackup-agent / pgBackRest: backup MB/s {:.2}x, restore MB/s {:.2}x, repository size {:.2}x",
        theirs_backup / ours_backup,
        theirs_restore / ours_restore,
        ours_bytes as f64 / theirs_bytes.max(1) as f64
    );
    println!(
        "(pgBackRest also archived {:.1} MB of WAL under {THEIRS_PREFIX}/archive; backup-agent's base backup carries the WAL it needs inside its tar)",
        archive_bytes as f64 / 1e6
    );
    Ok(())
}

fn check_count(tool: &str, counted: u64, expected: u64) -> anyhow::Result<()> {
    if counted != expected {
        bail!("{tool}'s restore has {counted} pgbench_accounts rows, expected {expected}");
    }
    Ok(())
}

fn which(name: &str) -> anyhow::Result<PathBuf> {
    testkit::binaries::which(name)
        .or_else(|| Some(PathBuf::from("/usr/sbin").join(name)).filter(|p| p.exists()))
        .with_context(|| format!("{name} not found: {HINT}"))
}

async fn pgbackrest_version(binary: &Path) -> String {
    match tokio::process::Command::new(binary).arg("version").output().await {
        Ok(out) => String::from_utf8_lossy(&out.stdout).trim().replace("pgBackRest ", ""),
        Err(_) => "?".to_owned(),
    }
}

/// backup-agent with the S3 keys in its environment; its JSON report.
async fn run_ours(
    binary: &Path,
    args: &[&str],
    env: &[(&'static str, String)],
) -> anyhow::Result<Report> {
    let output = tokio::process::Command::new(binary)
        .args(args)
        .args(["--output", "json"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run {}", binary.display()))?;
    if !output.status.success() {
        bail!(
            "backup-agent {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Report::from_json(&String::from_utf8_lossy(&output.stdout))
        .context("backup-agent printed no JSON report")
}

/// Runs `program args` as the `postgres` user when root (PostgreSQL and
/// pgBackRest refuse to run as root), else as is; fails with its output.
async fn as_postgres(program: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = tokio::process::Command::from(testkit::postgres_user_command(program))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run {}", program.display()))?;
    if !output.status.success() {
        bail!(
            "{} {} failed ({}): {}{}",
            program.display(),
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

async fn chown_postgres(path: &Path) -> anyhow::Result<()> {
    if testkit::is_root() {
        let status = tokio::process::Command::new("chown")
            .args(["-R", "postgres"])
            .arg(path)
            .status()
            .await?;
        if !status.success() {
            bail!("chown postgres {} failed", path.display());
        }
    }
    Ok(())
}

async fn count_accounts(url: &str) -> anyhow::Result<u64> {
    let client = testkit::postgres::connect(url).await?;
    let row = client.query_one("SELECT count(*) FROM pgbench_accounts", &[]).await?;
    Ok(u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0))
}

async fn stop_dir(data: &Path) {
    if let Ok(pg_ctl) = testkit::binaries::postgres_tool("pg_ctl") {
        let data = data.display().to_string();
        let _ = as_postgres(&pg_ctl, &["-D", &data, "-m", "immediate", "-w", "stop"]).await;
    }
}

/// A PostgreSQL cluster of the bench, run as `postgres` on a free port.
struct Cluster {
    data: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    port: u16,
}

impl Cluster {
    /// A directory for a cluster pgBackRest restores into.
    fn empty(root: PathBuf) -> anyhow::Result<Cluster> {
        let data = root.join("data");
        std::fs::create_dir_all(&data)?;
        std::fs::create_dir_all(root.join("socket"))?;
        std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        let cluster = Cluster {
            socket_dir: root.join("socket"),
            log: root.join("server.log"),
            data,
            port: testkit::free_port(),
        };
        Ok(cluster)
    }

    /// initdb (trust), `settings` appended to postgresql.conf, started.
    async fn init(root: PathBuf, settings: &[&str]) -> anyhow::Result<Cluster> {
        let cluster = Cluster::empty(root.clone())?;
        chown_postgres(&root).await?;
        let initdb = testkit::binaries::postgres_tool("initdb")?;
        as_postgres(
            &initdb,
            &["-D", &cluster.data.display().to_string(), "-A", "trust", "-U", "postgres"],
        )
        .await
        .context("initdb")?;
        let mut conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n",
            cluster.port,
            cluster.socket_dir.display()
        );
        for line in settings {
            conf.push_str(line);
            conf.push('\n');
        }
        let path = cluster.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&path)?;
        text.push_str(&conf);
        std::fs::write(&path, text)?;
        cluster.start(&[]).await?;
        Ok(cluster)
    }

    /// Starts the server; the directory is already the `postgres` user's
    /// (chowned before initdb or before pgBackRest restores into it).
    async fn start(&self, options: &[&str]) -> anyhow::Result<()> {
        let pg_ctl = testkit::binaries::postgres_tool("pg_ctl")?;
        let mut opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.socket_dir.display()
        );
        for option in options {
            opts.push(' ');
            opts.push_str(option);
        }
        let data = self.data.display().to_string();
        let log = self.log.display().to_string();
        as_postgres(&pg_ctl, &["-D", &data, "-l", &log, "-o", &opts, "-w", "-t", "600", "start"])
            .await
            .with_context(|| format!("pg_ctl start (log: {log})"))?;
        Ok(())
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// One statement; the first column of the first row as text.
    async fn sql(&self, statement: &str) -> anyhow::Result<String> {
        let client = testkit::postgres::connect(&self.url()).await?;
        let rows = client.simple_query(statement).await.with_context(|| statement.to_owned())?;
        Ok(rows
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                _ => None,
            })
            .unwrap_or_default())
    }

    async fn wait_promoted(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(state) = self.sql("SELECT pg_is_in_recovery()").await
                && state == "f"
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the restored cluster was not promoted within {timeout:?}; log: {}",
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(&self) {
        stop_dir(&self.data).await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Ok(pg_ctl) = testkit::binaries::postgres_tool("pg_ctl") {
            let _ = testkit::postgres_user_command(&pg_ctl)
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn pgbackrest_conf(
    dir: &Path,
    source: &Cluster,
    proxy: &TlsProxy,
    keys: &testkit::S3Credentials,
) -> String {
    format!(
        "[global]\n\
         repo1-type=s3\n\
         repo1-s3-endpoint=localhost\n\
         repo1-storage-port={port}\n\
         repo1-storage-ca-file={ca}\n\
         repo1-s3-bucket={BUCKET}\n\
         repo1-s3-region={region}\n\
         repo1-s3-key={key}\n\
         repo1-s3-key-secret={secret}\n\
         repo1-s3-uri-style=path\n\
         repo1-path=/{THEIRS_PREFIX}\n\
         repo1-retention-full=2\n\
         compress-type=zst\n\
         process-max=2\n\
         start-fast=y\n\
         log-path={d}/pgbackrest-log\n\
         lock-path={d}/pgbackrest-lock\n\
         log-level-console=warn\n\
         \n\
         [{STANZA}]\n\
         pg1-path={data}\n\
         pg1-port={pg_port}\n\
         pg1-socket-path={socket}\n",
        port = proxy.port,
        ca = proxy.cert.display(),
        region = testkit::s3::REGION,
        key = keys.access_key_id,
        secret = keys.secret_access_key,
        d = dir.display(),
        data = source.data.display(),
        pg_port = source.port,
        socket = source.socket_dir.display(),
    )
}

/// nginx terminating TLS on a free loopback port and passing requests to the
/// S3 server unbuffered, with a certificate for `localhost` made on the spot.
struct TlsProxy {
    child: tokio::process::Child,
    port: u16,
    cert: PathBuf,
}

impl TlsProxy {
    async fn start(dir: &Path, upstream_port: u16) -> anyhow::Result<TlsProxy> {
        let nginx = which("nginx")?;
        let openssl = which("openssl")?;
        let tls = dir.join("tls");
        std::fs::create_dir_all(&tls)?;
        let (cert, key) = (tls.join("cert.pem"), tls.join("key.pem"));
        let status = tokio::process::Command::new(&openssl)
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"])
            .args([
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await?;
        if !status.success() {
            bail!("openssl req failed making the proxy's certificate");
        }
        let port = testkit::free_port();
        let d = tls.display();
        let conf = tls.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;\n\
                 events {{ worker_connections 1024; }}\n\
                 http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d};\n\
                   fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
                   server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {cert}; ssl_certificate_key {key};\n\
                     client_max_body_size 0; proxy_request_buffering off; proxy_buffering off;\n\
                     location / {{ proxy_pass http://127.0.0.1:{upstream_port}; proxy_set_header Host $http_host;\n\
                       proxy_http_version 1.1; proxy_read_timeout 600s; proxy_send_timeout 600s; }} }} }}\n",
                cert = cert.display(),
                key = key.display(),
            ),
        )?;
        let child = tokio::process::Command::new(nginx)
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(&tls)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        testkit::wait_for_tcp(format!("127.0.0.1:{port}"), Duration::from_secs(10)).await?;
        // pgBackRest runs as postgres and reads the CA file.
        chown_postgres(&tls).await?;
        Ok(TlsProxy { child, port, cert })
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        crate::bench_load::stop_nginx(&mut self.child);
    }
}
