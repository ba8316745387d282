//! A real PostgreSQL primary and streaming standby, built from the machine's
//! server binaries (initdb + `pg_basebackup -R`) on free loopback ports.
//!
//! Layout of the pair's temporary directory (owned by the `postgres` user when
//! running as root, because PostgreSQL's server tools refuse to run as root):
//!
//! ```text
//! <tmp>/primary/      data directory of the primary
//! <tmp>/standby/      data directory of the standby (pg_basebackup -R)
//! <tmp>/sockets/      unix_socket_directories of both
//! <tmp>/primary.log   server log of the primary (pg_ctl -l)
//! <tmp>/standby.log   server log of the standby
//! ```

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use tempfile::TempDir;
use tokio::process::Command;
use tokio::time::{Instant, sleep};
use tokio_postgres::{Client, NoTls};

use crate::error::{tail_of_file, tail_of_text};
use crate::ports::free_port;
use crate::{Error, Result, binaries, unix_user};

/// `application_name` the standby connects with; what `pg_stat_replication`
/// and `synchronous_standby_names` see.
pub const STANDBY_NAME: &str = "standby1";

/// The OS user PostgreSQL's server tools run as when testkit runs as root.
pub const POSTGRES_USER: &str = "postgres";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(30);
const LOG_TAIL_LINES: usize = 30;

/// Connects to `url` without TLS and drives the connection on the current
/// tokio runtime; the connection ends when the client is dropped.
pub async fn connect(url: &str) -> Result<Client> {
    let connecting = tokio_postgres::connect(url, NoTls);
    let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| Error::Timeout {
            what: format!("a PostgreSQL connection to {url}"),
            after: CONNECT_TIMEOUT,
            hint: "is the server running and accepting connections?".to_owned(),
        })?
        .map_err(|err| Error::pg(format!("cannot connect to PostgreSQL at {url}"), err))?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!("postgres connection closed: {err}");
        }
    });
    Ok(client)
}

/// How to build a [`PgPair`].
#[derive(Debug, Clone, Default)]
pub struct PgPairOptions {
    /// Make the standby synchronous: `synchronous_standby_names = 'standby1'`
    /// and `synchronous_commit = on` on the primary; `start` returns once
    /// `pg_stat_replication.sync_state = 'sync'`.
    pub synchronous: bool,
}

/// One server of the pair.
#[derive(Debug)]
struct Node {
    role: &'static str,
    port: u16,
    data_dir: PathBuf,
    log_path: PathBuf,
}

impl Node {
    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

/// A PostgreSQL primary with one streaming standby, both on 127.0.0.1.
///
/// Dropping it stops both servers (`pg_ctl stop -m immediate`) and removes
/// their data directories. When [`start`](Self::start) fails, the server logs
/// are kept (their paths are in the error) and only the data directories go.
#[derive(Debug)]
pub struct PgPair {
    dir: TempDir,
    /// Set when start-up failed: keep the logs the error points at.
    keep_logs: bool,
    pg_ctl: PathBuf,
    primary: Node,
    standby: Node,
    /// `primary_conninfo` of the standby while it is not partitioned.
    standby_conninfo: String,
}

impl PgPair {
    /// Builds and starts the pair; returns once the standby is streaming
    /// (and, with `synchronous`, once it is the synchronous standby).
    pub async fn start(options: PgPairOptions) -> Result<PgPair> {
        let initdb = binaries::postgres_tool("initdb")?;
        let pg_ctl = binaries::postgres_tool("pg_ctl")?;
        let pg_basebackup = binaries::postgres_tool("pg_basebackup")?;

        let dir = tempfile::Builder::new()
            .prefix("postlaunch-pgpair-")
            .tempdir()
            .map_err(|err| Error::io("cannot create a temporary directory for PgPair", err))?;
        let sockets = dir.path().join("sockets");
        std::fs::create_dir(&sockets)
            .map_err(|err| Error::io(format!("cannot create {}", sockets.display()), err))?;
        if unix_user::is_root() {
            unix_user::chown_to(dir.path(), POSTGRES_USER)?;
            unix_user::chown_to(&sockets, POSTGRES_USER)?;
        }

        let primary_port = free_port();
        let standby_port = free_port();
        let standby_conninfo = format!(
            "host=127.0.0.1 port={primary_port} user=postgres application_name={STANDBY_NAME}"
        );
        // From here on, dropping `pair` stops whatever was started; after a
        // failure it keeps the logs the error points at.
        let mut pair = PgPair {
            primary: Node {
                role: "primary",
                port: primary_port,
                data_dir: dir.path().join("primary"),
                log_path: dir.path().join("primary.log"),
            },
            standby: Node {
                role: "standby",
                port: standby_port,
                data_dir: dir.path().join("standby"),
                log_path: dir.path().join("standby.log"),
            },
            dir,
            pg_ctl,
            standby_conninfo,
            keep_logs: false,
        };
        match pair.bring_up(&options, &initdb, &pg_basebackup, &sockets).await {
            Ok(()) => Ok(pair),
            Err(err) => {
                pair.keep_logs = true;
                Err(err)
            }
        }
    }

    async fn bring_up(
        &self,
        options: &PgPairOptions,
        initdb: &Path,
        pg_basebackup: &Path,
        sockets: &Path,
    ) -> Result<()> {
        self.init_primary(initdb, sockets).await?;
        self.start_node(&self.primary).await?;
        self.clone_standby(pg_basebackup).await?;
        self.start_node(&self.standby).await?;
        self.wait_for_standby(false).await?;
        if options.synchronous {
            self.make_standby_synchronous().await?;
        }
        Ok(())
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres` of the primary.
    pub fn primary_url(&self) -> String {
        self.primary.url()
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres` of the standby.
    pub fn standby_url(&self) -> String {
        self.standby.url()
    }

    /// TCP port of the primary on 127.0.0.1.
    pub fn primary_port(&self) -> u16 {
        self.primary.port
    }

    /// TCP port of the standby on 127.0.0.1.
    pub fn standby_port(&self) -> u16 {
        self.standby.port
    }

    /// Data directory of the primary.
    pub fn data_dir_primary(&self) -> &Path {
        &self.primary.data_dir
    }

    /// Data directory of the standby.
    pub fn data_dir_standby(&self) -> &Path {
        &self.standby.data_dir
    }

    /// Server log of the primary.
    pub fn primary_log_path(&self) -> &Path {
        &self.primary.log_path
    }

    /// Server log of the standby.
    pub fn standby_log_path(&self) -> &Path {
        &self.standby.log_path
    }

    /// The temporary directory holding both data directories and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Crashes the primary: `pg_ctl stop -m immediate` (no shutdown
    /// checkpoint, clients see their connections drop).
    pub async fn stop_primary_immediate(&self) -> Result<()> {
        self.stop_node(&self.primary).await
    }

    /// Starts the primary again (crash recovery runs first). After
    /// [`promote_standby`](Self::promote_standby) this makes a second primary
    /// on the old timeline: a split brain, on purpose.
    pub async fn start_primary(&self) -> Result<()> {
        self.start_node(&self.primary).await
    }

    /// Promotes the standby (`pg_ctl promote -w`); returns once it accepts writes.
    pub async fn promote_standby(&self) -> Result<()> {
        let mut cmd = self.pg_command(&self.pg_ctl);
        cmd.arg("-D").arg(&self.standby.data_dir).args(["-w", "-t", "60", "promote"]);
        let output = run(cmd, "pg_ctl promote (standby)").await?;
        self.check(
            output,
            "pg_ctl promote of the standby",
            &self.standby,
            "is the standby running and still in recovery?",
        )
    }

    /// Cuts the standby off from the primary's WAL while both keep running.
    ///
    /// How: on the standby, `ALTER SYSTEM SET primary_conninfo = ''` and
    /// `pg_reload_conf()`. PostgreSQL (13+) stops the WAL receiver when
    /// `primary_conninfo` changes and does not start one while it is empty,
    /// so the standby stays up, answers read-only queries on stale data, and
    /// falls behind; the primary's `pg_stat_replication` loses the standby
    /// (with a synchronous pair, commits on the primary then wait). Returns
    /// once the standby's `pg_stat_wal_receiver` is empty and, if the
    /// primary is up, its `pg_stat_replication` no longer lists `standby1`.
    /// [`heal_standby`](Self::heal_standby) undoes it.
    pub async fn partition_standby(&self) -> Result<()> {
        let standby = self.connect_node(&self.standby).await?;
        set_primary_conninfo(&standby, "").await?;
        // The primary may be down (a failover test); then only the standby side counts.
        let primary = self.connect_node(&self.primary).await.ok();
        let deadline = Instant::now() + REPLICATION_TIMEOUT;
        loop {
            let receivers: i64 = standby
                .query_one("SELECT count(*) FROM pg_stat_wal_receiver", &[])
                .await
                .and_then(|row| row.try_get(0))
                .map_err(|err| Error::pg("reading pg_stat_wal_receiver on the standby", err))?;
            let senders: i64 = match &primary {
                Some(primary) => primary
                    .query_one(
                        "SELECT count(*) FROM pg_stat_replication WHERE application_name = $1",
                        &[&STANDBY_NAME],
                    )
                    .await
                    .and_then(|row| row.try_get(0))
                    .unwrap_or(0),
                None => 0,
            };
            if receivers == 0 && senders == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: "the standby's WAL receiver and the primary's WAL sender to stop"
                        .to_owned(),
                    after: REPLICATION_TIMEOUT,
                    hint: format!(
                        "still running: {receivers} receiver(s), {senders} sender(s)\n{}",
                        self.standby_log_hint()
                    ),
                });
            }
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// Reconnects a partitioned standby to the primary (restores its
    /// `primary_conninfo`) and waits until it streams again, and is
    /// `sync` again if it was synchronous.
    pub async fn heal_standby(&self) -> Result<()> {
        let standby = self.connect_node(&self.standby).await?;
        set_primary_conninfo(&standby, &self.standby_conninfo).await?;
        let primary = self.connect_node(&self.primary).await?;
        let names: String = primary
            .query_one("SHOW synchronous_standby_names", &[])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(|err| Error::pg("SHOW synchronous_standby_names on the primary", err))?;
        self.wait_for_standby(!names.trim().is_empty()).await
    }

    async fn init_primary(&self, initdb: &Path, sockets: &Path) -> Result<()> {
        let mut cmd = self.pg_command(initdb);
        cmd.arg("-D").arg(&self.primary.data_dir).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
            "--no-instructions",
        ]);
        let output = run(cmd, "initdb (primary)").await?;
        if !output.status.success() {
            return Err(Error::ProcessFailed {
                what: format!("initdb -D {}", self.primary.data_dir.display()),
                exit_code: output.status.code(),
                log_tail: output_tail(&output),
                log_path: None,
                hint: "check that the temporary directory is writable by the postgres user"
                    .to_owned(),
            });
        }

        let conf = format!(
            "\n# postlaunch testkit PgPair\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{sockets}'\n\
             wal_level = replica\n\
             max_wal_senders = 10\n\
             max_replication_slots = 10\n\
             wal_keep_size = '256MB'\n\
             hot_standby = on\n\
             wal_receiver_status_interval = 1s\n\
             wal_retrieve_retry_interval = 200ms\n\
             synchronous_commit = on\n\
             fsync = off\n\
             shared_buffers = 16MB\n\
             max_connections = 40\n\
             log_line_prefix = '%m [%p] %q%a '\n",
            port = self.primary.port,
            sockets = sockets.display(),
        );
        append(&self.primary.data_dir.join("postgresql.conf"), &conf)?;
        write(
            &self.primary.data_dir.join("pg_hba.conf"),
            "# postlaunch testkit PgPair: trust on loopback only\n\
             local all         all trust\n\
             local replication all trust\n\
             host  all         all 127.0.0.1/32 trust\n\
             host  replication all 127.0.0.1/32 trust\n",
        )
    }

    async fn clone_standby(&self, pg_basebackup: &Path) -> Result<()> {
        let mut cmd = self.pg_command(pg_basebackup);
        cmd.arg("-D").arg(&self.standby.data_dir).args([
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-sync",
            "-d",
            &self.standby_conninfo,
        ]);
        let output = run(cmd, "pg_basebackup (standby)").await?;
        if !output.status.success() {
            return Err(Error::ProcessFailed {
                what: format!("pg_basebackup -R from 127.0.0.1:{}", self.primary.port),
                exit_code: output.status.code(),
                log_tail: format!(
                    "{}\n--- primary log ---\n{}",
                    output_tail(&output),
                    tail_of_file(&self.primary.log_path, LOG_TAIL_LINES)
                ),
                log_path: Some(self.primary.log_path.clone()),
                hint: "does the primary allow replication connections (pg_hba.conf)?".to_owned(),
            });
        }
        // The copied postgresql.conf carries the primary's port: override it.
        append(
            &self.standby.data_dir.join("postgresql.conf"),
            &format!("port = {}\n", self.standby.port),
        )?;
        // pg_basebackup -R keeps application_name in primary_conninfo, but
        // say it ourselves so `standby1` does not depend on that detail.
        let auto_conf = self.standby.data_dir.join("postgresql.auto.conf");
        let existing = std::fs::read_to_string(&auto_conf)
            .map_err(|err| Error::io(format!("cannot read {}", auto_conf.display()), err))?;
        let mut rewritten: String = existing
            .lines()
            .filter(|line| !line.trim_start().starts_with("primary_conninfo"))
            .map(|line| format!("{line}\n"))
            .collect();
        rewritten
            .push_str(&format!("primary_conninfo = {}\n", quote_literal(&self.standby_conninfo)));
        write(&auto_conf, &rewritten)
    }

    async fn make_standby_synchronous(&self) -> Result<()> {
        let primary = self.connect_node(&self.primary).await?;
        for statement in [
            format!("ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'"),
            "ALTER SYSTEM SET synchronous_commit = 'on'".to_owned(),
            "SELECT pg_reload_conf()".to_owned(),
        ] {
            primary
                .batch_execute(&statement)
                .await
                .map_err(|err| Error::pg(format!("{statement} on the primary"), err))?;
        }
        self.wait_for_standby(true).await
    }

    /// Waits until the primary's `pg_stat_replication` shows `standby1`
    /// streaming (and `sync` if `sync`).
    async fn wait_for_standby(&self, sync: bool) -> Result<()> {
        let primary = self.connect_node(&self.primary).await?;
        let deadline = Instant::now() + REPLICATION_TIMEOUT;
        let mut last = "no row for standby1".to_owned();
        loop {
            let rows = primary
                .query(
                    "SELECT state, sync_state FROM pg_stat_replication \
                     WHERE application_name = $1",
                    &[&STANDBY_NAME],
                )
                .await
                .map_err(|err| Error::pg("reading pg_stat_replication on the primary", err))?;
            if let Some(row) = rows.first() {
                let column = |i| {
                    row.try_get::<_, Option<String>>(i)
                        .map_err(|err| Error::pg("reading pg_stat_replication on the primary", err))
                };
                let (state, sync_state) = (column(0)?, column(1)?);
                let state = state.unwrap_or_default();
                let sync_state = sync_state.unwrap_or_default();
                if state == "streaming" && (!sync || sync_state == "sync") {
                    return Ok(());
                }
                last = format!("state={state} sync_state={sync_state}");
            }
            if Instant::now() >= deadline {
                let wanted = if sync { "streaming and sync" } else { "streaming" };
                return Err(Error::Timeout {
                    what: format!("{STANDBY_NAME} to be {wanted} in pg_stat_replication"),
                    after: REPLICATION_TIMEOUT,
                    hint: format!(
                        "last seen: {last}\n--- primary log ---\n{}\n{}",
                        tail_of_file(&self.primary.log_path, LOG_TAIL_LINES),
                        self.standby_log_hint()
                    ),
                });
            }
            sleep(Duration::from_millis(100)).await;
        }
    }

    async fn start_node(&self, node: &Node) -> Result<()> {
        let mut cmd = self.pg_command(&self.pg_ctl);
        cmd.arg("-D")
            .arg(&node.data_dir)
            .arg("-l")
            .arg(&node.log_path)
            .args(["-w", "-t", "60", "start"]);
        let output = run(cmd, &format!("pg_ctl start ({})", node.role)).await?;
        self.check(
            output,
            &format!("pg_ctl start of the {} on 127.0.0.1:{}", node.role, node.port),
            node,
            "read the server log; a port taken by another process shows as \
             \"could not bind\" and a retry picks new ports",
        )
    }

    async fn stop_node(&self, node: &Node) -> Result<()> {
        let mut cmd = self.pg_command(&self.pg_ctl);
        cmd.arg("-D").arg(&node.data_dir).args(["-m", "immediate", "-w", "-t", "60", "stop"]);
        let output = run(cmd, &format!("pg_ctl stop ({})", node.role)).await?;
        self.check(
            output,
            &format!("pg_ctl stop -m immediate of the {}", node.role),
            node,
            "was it running?",
        )
    }

    async fn connect_node(&self, node: &Node) -> Result<Client> {
        connect(&node.url()).await
    }

    fn check(&self, output: Output, what: &str, node: &Node, hint: &str) -> Result<()> {
        if output.status.success() {
            return Ok(());
        }
        Err(Error::ProcessFailed {
            what: what.to_owned(),
            exit_code: output.status.code(),
            log_tail: format!(
                "{}\n--- {} log ---\n{}",
                output_tail(&output),
                node.role,
                tail_of_file(&node.log_path, LOG_TAIL_LINES)
            ),
            log_path: Some(node.log_path.clone()),
            hint: hint.to_owned(),
        })
    }

    fn standby_log_hint(&self) -> String {
        format!("--- standby log ---\n{}", tail_of_file(&self.standby.log_path, LOG_TAIL_LINES))
    }

    /// `program` run as the postgres user when we are root, in the pair's
    /// directory (the cwd must be readable by that user).
    /// A shell command running `pg_ctl <args>` on the primary's data directory
    /// as the right user: a drill step for tools that trigger failovers
    /// themselves, e.g. `pair.primary_pg_ctl("stop -m immediate")`.
    pub fn primary_pg_ctl(&self, args: &str) -> String {
        self.pg_ctl_shell(&self.primary, args)
    }

    /// A shell command running `pg_ctl <args>` on the standby's data directory,
    /// e.g. `pair.standby_pg_ctl("promote -w")`.
    pub fn standby_pg_ctl(&self, args: &str) -> String {
        self.pg_ctl_shell(&self.standby, args)
    }

    fn pg_ctl_shell(&self, node: &Node, args: &str) -> String {
        let prefix = if unix_user::is_root() {
            format!("{} -u {POSTGRES_USER} -- ", runuser().display())
        } else {
            String::new()
        };
        format!("{prefix}{} -D '{}' {args}", self.pg_ctl.display(), node.data_dir.display())
    }

    fn pg_command(&self, program: &Path) -> Command {
        Command::from(self.pg_std_command(program))
    }

    fn pg_std_command(&self, program: &Path) -> std::process::Command {
        let mut cmd = postgres_user_command(program);
        cmd.current_dir(self.dir.path())
            .stdin(Stdio::null())
            .env_remove("PGDATA")
            .env_remove("PGHOST")
            .env_remove("PGPORT");
        cmd
    }
}

impl Drop for PgPair {
    /// Stops both servers (`pg_ctl stop -m immediate`, errors ignored: either
    /// may already be down) before the directory is removed; after a failed
    /// start, keeps the directory with the logs but removes the data.
    fn drop(&mut self) {
        for node in [&self.standby, &self.primary] {
            if !node.data_dir.join("postmaster.pid").exists() {
                continue;
            }
            let mut cmd = self.pg_std_command(&self.pg_ctl);
            cmd.arg("-D")
                .arg(&node.data_dir)
                .args(["-m", "immediate", "-w", "-t", "30", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Err(err) = cmd.status() {
                tracing::warn!("cannot stop the {} of a PgPair: {err}", node.role);
            }
        }
        if self.keep_logs {
            let _ = std::fs::remove_dir_all(&self.primary.data_dir);
            let _ = std::fs::remove_dir_all(&self.standby.data_dir);
            self.dir.disable_cleanup(true);
            tracing::warn!("PgPair start failed; logs kept in {}", self.dir.path().display());
        }
    }
}

async fn set_primary_conninfo(standby: &Client, conninfo: &str) -> Result<()> {
    for statement in [
        format!("ALTER SYSTEM SET primary_conninfo = {}", quote_literal(conninfo)),
        "SELECT pg_reload_conf()".to_owned(),
    ] {
        standby
            .batch_execute(&statement)
            .await
            .map_err(|err| Error::pg(format!("{statement} on the standby"), err))?;
    }
    Ok(())
}

async fn run(mut cmd: Command, what: &str) -> Result<Output> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.output().await.map_err(|err| Error::io(format!("cannot run {what}"), err))
}

/// `program` run as the `postgres` user when this process is root
/// (PostgreSQL's server tools and pgBackRest refuse to run as root), else
/// as is.
pub fn postgres_user_command(program: &Path) -> std::process::Command {
    if unix_user::is_root() {
        let mut cmd = std::process::Command::new(runuser());
        cmd.args(["-u", POSTGRES_USER, "--"]).arg(program);
        cmd
    } else {
        std::process::Command::new(program)
    }
}

fn runuser() -> PathBuf {
    binaries::which("runuser").unwrap_or_else(|| PathBuf::from("/usr/sbin/runuser"))
}

fn output_tail(output: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    tail_of_text(&text, LOG_TAIL_LINES)
}

fn append(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .map_err(|err| Error::io(format!("cannot append to {}", path.display()), err))
}

/// Overwrites an existing file in place, so it keeps its owner.
fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text)
        .map_err(|err| Error::io(format!("cannot write {}", path.display()), err))
}

/// `'text'` with embedded quotes doubled.
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
