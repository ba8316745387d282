//! The command line: every subcommand and flag, with the help text users read.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use shared_types::{OutputFormat, Threshold, parse_duration};

/// Back up PostgreSQL and MongoDB, keep 7/4/12 GFS retention, verify, and measure RTO/RPO with drills.
///
/// Examples:
///   backup-agent backup postgres --repo s3://backups/prod --pg-url postgres://postgres@db:5432/app
///   archive_command = 'backup-agent wal-push %p --repo s3://backups/prod'
///   backup-agent verify --repo /srv/backups --restore
///   backup-agent prune --repo /srv/backups --dry-run
///   backup-agent drill --scenario full-loss --repo /tmp/drill --self-contained --output json
///   backup-agent keygen > key && backup-agent backup tables --repo s3://b/p --pg-url URL --encryption-key-file key
///   backup-agent daemon --config daemon.yaml      # cron schedules + /metrics for freshness alerts
#[derive(Debug, Parser)]
#[command(name = "backup-agent", version, verbatim_doc_comment)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
    /// Log format on stderr (any subcommand).
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    pub(crate) log_format: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Take a backup.
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Archive one WAL file: archive_command = 'backup-agent wal-push %p --repo ...'.
    WalPush {
        #[command(flatten)]
        repo: RepoArgs,
        /// Path of the WAL file (%p).
        path: PathBuf,
    },
    /// Restore one WAL file: restore_command = 'backup-agent wal-fetch %f %p --repo ...'.
    /// Exit 0 restored, 3 not in the archive (recovery ends normally); a
    /// repository error is retried 4 times, then exits 200 so PostgreSQL
    /// aborts recovery rather than promote without the WAL.
    WalFetch {
        #[command(flatten)]
        repo: RepoArgs,
        /// WAL file name (%f).
        name: String,
        /// Where to write it (%p).
        dest: PathBuf,
    },
    /// List backups (complete, incomplete, being deleted).
    List {
        #[command(flatten)]
        repo: RepoArgs,
        /// Print a JSON array (id, state, kind, stored bytes, verified) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup.
    #[command(subcommand)]
    Restore(RestoreCommand),
    /// Re-read every object against its manifest; --restore also restores into a scratch cluster.
    Verify {
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        output: OutputArgs,
        /// Backup ids (repeatable); default every complete backup.
        #[arg(long = "backup")]
        backups: Vec<String>,
        /// Restore into a scratch cluster and compare row counts with those at backup time.
        #[arg(long)]
        restore: bool,
        /// MongoDB server for --restore of MongoDB backups: each is restored into
        /// a scratch database there (verify_<backup>), compared, then dropped.
        #[arg(long, env = "BACKUP_AGENT_MONGO_URL")]
        mongo_url: Option<String>,
        /// Longest wait for a scratch restore.
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        timeout: Duration,
        /// Check `freshness`: the newest complete backup must be younger than this.
        #[arg(long, default_value = "24h", value_parser = parse_duration, value_name = "DURATION")]
        max_backup_age: Duration,
        /// Check `rpo` (repositories with base backups): the newest point a
        /// restore can reach (archived WAL, else the newest base backup's
        /// end) must be younger than this recovery point objective.
        #[arg(long, default_value = "1h", value_parser = parse_duration, value_name = "DURATION")]
        rpo: Duration,
    },
    /// Apply GFS retention (7 daily, 4 weekly, 12 monthly); --dry-run prints what stays and why.
    Prune {
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        output: OutputArgs,
        #[arg(long, default_value_t = 7)]
        daily: usize,
        #[arg(long, default_value_t = 4)]
        weekly: usize,
        #[arg(long, default_value_t = 12)]
        monthly: usize,
        /// Keep every point of this window restorable (e.g. 7d).
        #[arg(long, value_parser = parse_duration)]
        pitr_window: Option<Duration>,
        /// Print the plan and delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Repositories prune may delete from (repeatable); must include --repo.
        #[arg(long = "allow-repo", env = "BACKUP_AGENT_ALLOW_REPO", value_delimiter = ',')]
        allow: Vec<String>,
    },
    /// Restore into a scratch target and measure RTO and RPO against the launch plan.
    Drill {
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        output: OutputArgs,
        /// full-loss, pitr or table.
        #[arg(long)]
        scenario: String,
        /// RTO criterion; default rto < 4h (full-loss), 1h (pitr), 30m (table).
        #[arg(long)]
        rto: Option<Threshold>,
        /// RPO criterion.
        #[arg(long, default_value = "rpo < 1h")]
        rpo: Threshold,
        /// PITR target time (RFC 3339).
        #[arg(long)]
        target_time: Option<String>,
        /// The simulated failure time (RFC 3339); default now, on the clock of
        /// --source-url when given, else this machine's.
        #[arg(long)]
        failure_point: Option<String>,
        /// The source database: its clock gives the default failure point, so
        /// the RPO compares one clock (its commit timestamps) with itself.
        #[arg(long, conflicts_with = "failure_point")]
        source_url: Option<String>,
        /// Table to restore (scenario table).
        #[arg(long)]
        table: Option<String>,
        /// Build a source cluster, back it up into --repo, crash it, then drill: needs only PostgreSQL's binaries.
        #[arg(long)]
        self_contained: bool,
        /// Ledger rows before and after the backup (with --self-contained).
        #[arg(long, default_value_t = 200)]
        rows: usize,
        /// Leave the restored scratch cluster running.
        #[arg(long)]
        keep: bool,
        /// Longest wait for the restored server.
        #[arg(long, default_value = "30m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Clean up after killed runs: finish interrupted prunes, drop stale incomplete backups and uploads.
    Recover {
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        output: OutputArgs,
        /// Incomplete backups younger than this may still be running and are left alone.
        #[arg(long, default_value = "6h", value_parser = parse_duration)]
        grace: Duration,
        /// Print what would be removed and delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Repositories recover may delete from (repeatable); must include --repo.
        #[arg(long = "allow-repo", env = "BACKUP_AGENT_ALLOW_REPO", value_delimiter = ',')]
        allow: Vec<String>,
    },
    /// Print a new client-side encryption key (64 hex digits) for
    /// --encryption-key-file: `backup-agent keygen > key && chmod 600 key`.
    /// Keep a copy apart from the repository: without it the backups are lost.
    Keygen,
    /// Run commands on cron schedules and serve Prometheus metrics (last
    /// success, duration, size, verified) for the backup-freshness alerts.
    ///
    /// The config file (YAML):
    ///   metrics_listen: 0.0.0.0:9187
    ///   jobs:
    ///     - name: pg-nightly
    ///       schedule: "0 2 * * *"        # UTC; 6 fields add seconds first
    ///       args: [backup, postgres, --repo, "s3://backups/prod/pg", --pg-url, "postgres://..."]
    ///     - name: pg-verify-weekly
    ///       schedule: "0 4 * * SUN"
    ///       args: [verify, --repo, "s3://backups/prod/pg", --restore]
    #[command(verbatim_doc_comment)]
    Daemon {
        /// The jobs file.
        #[arg(long, env = "BACKUP_AGENT_DAEMON_CONFIG")]
        config: PathBuf,
        /// Serve /metrics here instead of the file's metrics_listen.
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<std::net::SocketAddr>,
        /// Check the file, print each job's next run, and exit.
        #[arg(long)]
        check: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum BackupCommand {
    /// Physical base backup streamed from pg_basebackup.
    Postgres {
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        output: OutputArgs,
        #[arg(long, env = "BACKUP_AGENT_PG_URL")]
        pg_url: String,
        /// Tables whose row counts are recorded (repeatable); default every user table (a drill compares them all).
        #[arg(long = "key-table")]
        key_tables: Vec<String>,
    },
    /// Per-table logical backups (pg_dump -Fc), one snapshot.
    Tables {
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        output: OutputArgs,
        #[arg(long, env = "BACKUP_AGENT_PG_URL")]
        pg_url: String,
        /// Tables (repeatable); default every user table.
        #[arg(long = "table")]
        tables: Vec<String>,
    },
    /// MongoDB logical dump in mongodump's layout.
    Mongo {
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        output: OutputArgs,
        #[arg(long, env = "BACKUP_AGENT_MONGO_URL")]
        mongo_url: String,
        /// Database to dump.
        #[arg(long)]
        db: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum RestoreCommand {
    /// Restore a base backup (and WAL) into a scratch cluster left running.
    Postgres {
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        output: OutputArgs,
        /// Backup id or `latest`.
        #[arg(long, default_value = "latest")]
        backup: String,
        /// Point in time (RFC 3339); default: replay every archived WAL file.
        #[arg(long)]
        target_time: Option<String>,
        #[arg(long, default_value = "30m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Restore one table from a per-table backup into a database.
    Table {
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        output: OutputArgs,
        #[arg(long, default_value = "latest")]
        backup: String,
        #[arg(long)]
        table: String,
        /// Database to restore into.
        #[arg(long)]
        pg_url: String,
        #[command(flatten)]
        guard: GuardArgs,
    },
    /// Restore a MongoDB dump.
    Mongo {
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        output: OutputArgs,
        #[arg(long, default_value = "latest")]
        backup: String,
        #[arg(long, env = "BACKUP_AGENT_MONGO_URL")]
        mongo_url: String,
        /// Restore into this database instead of the original one.
        #[arg(long)]
        to_db: Option<String>,
        #[command(flatten)]
        guard: GuardArgs,
    },
}

/// Safety of restores into a live database.
#[derive(Debug, Args, Clone)]
pub(crate) struct GuardArgs {
    /// Show what would be restored and replaced; change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Drop and replace a table or collection that already holds data.
    #[arg(long)]
    pub(crate) replace: bool,
    /// A host that is not this machine but may be restored into (repeatable).
    #[arg(
        long = "allow-target",
        env = "BACKUP_AGENT_ALLOW_TARGET",
        value_delimiter = ',',
        value_name = "HOST"
    )]
    pub(crate) allow_target: Vec<String>,
}

#[derive(Debug, Args, Clone)]
pub(crate) struct RepoArgs {
    /// Repository: a directory or s3://bucket/prefix.
    #[arg(long, env = "BACKUP_AGENT_REPO")]
    pub(crate) repo: String,
    /// S3-compatible endpoint (path-style), e.g. http://127.0.0.1:9000.
    #[arg(long, env = "BACKUP_AGENT_S3_ENDPOINT")]
    pub(crate) s3_endpoint: Option<String>,
    #[arg(long, env = "BACKUP_AGENT_S3_REGION")]
    pub(crate) s3_region: Option<String>,
    /// Storage class of new objects (STANDARD_IA, GLACIER_IR, ...).
    #[arg(long)]
    pub(crate) storage_class: Option<String>,
    /// Server-side encryption: AES256 or aws:kms.
    #[arg(long)]
    pub(crate) sse: Option<String>,
    /// zstd or none.
    #[arg(long, default_value = "zstd")]
    pub(crate) compression: String,
    /// Upload part size in MiB (5..=512).
    #[arg(long, default_value_t = 8)]
    pub(crate) part_size_mib: usize,
    /// How long an upload waits out an outage of the S3 store, resending the
    /// failed part with backoff, before the backup fails.
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) s3_outage_budget: Duration,
    /// Client-side encryption key (64 hex digits, from `backup-agent keygen`):
    /// new objects are sealed with AES-256-GCM, sealed ones need it to be read.
    #[arg(long, env = "BACKUP_AGENT_ENCRYPTION_KEY_FILE", value_name = "FILE")]
    pub(crate) encryption_key_file: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub(crate) struct OutputArgs {
    /// Report format on stdout: human, json, junit or markdown.
    #[arg(long, default_value = "human")]
    pub(crate) output: OutputFormat,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    pub(crate) report: Option<PathBuf>,
}
