//! `backup-agent`: parse flags, call the library, render the report, exit
//! with the contract's code (0 met, 1 not met, 2 usage, 3 could not run).

use std::io::IsTerminal;
use std::time::Instant;

use backup_agent::drill::{DrillOptions, DrillScenario, FailureClock};
use backup_agent::error::{AgentError, Result};
use backup_agent::manifest::{BackupCatalog, BackupState};
use backup_agent::object::{Compression, UploadSettings};
use backup_agent::postgres::{base, display_target, logical, wal};
use backup_agent::repository::{Repository, RepositoryLocation, S3Options};
use backup_agent::retention::RetentionPolicy;
use backup_agent::{guard, restore};
use clap::Parser;
use shared_types::{ExitCode, OutputFormat, Report, Timestamp};

mod cli;

use cli::{BackupCommand, Cli, Command, OutputArgs, RepoArgs, RestoreCommand};

fn main() {
    let cli = Cli::parse();
    // The daemon logs each run; one-shot commands speak only when asked.
    let daemon = matches!(cli.command, Command::Daemon { .. });
    shared_types::init_logs(&cli.log_format, if daemon { "info" } else { "warn" });
    tracing::debug!(command = ?std::env::args().nth(1), "starting");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => fail(&AgentError::CouldNotRun(format!("cannot start the async runtime: {e}"))),
    };
    match runtime.block_on(execute(cli.command)) {
        Ok(code) => std::process::exit(code.code()),
        Err(e) => fail(&e),
    }
}

fn fail(e: &AgentError) -> ! {
    eprintln!("error: {e}");
    std::process::exit(e.exit_code().code())
}

impl RepoArgs {
    fn settings(&self) -> Result<UploadSettings> {
        if !(5..=512).contains(&self.part_size_mib) {
            return Err(AgentError::Usage("--part-size-mib must be between 5 and 512".into()));
        }
        Ok(UploadSettings {
            compression: self.compression.parse::<Compression>()?,
            part_size: self.part_size_mib * 1024 * 1024,
            ..UploadSettings::default()
        })
    }

    async fn open(&self) -> Result<Repository> {
        let location: RepositoryLocation = self.repo.parse()?;
        let options = S3Options {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            path_style: self.s3_endpoint.is_some(),
            storage_class: self.storage_class.clone(),
            server_side_encryption: self.sse.clone(),
            credentials: None,
            outage_budget: Some(self.s3_outage_budget),
        };
        let key = self
            .encryption_key_file
            .as_deref()
            .map(backup_agent::crypt::EncryptionKey::from_file)
            .transpose()?;
        Ok(Repository::open(&location, &options).await?.with_encryption(key))
    }

    /// Deleting from the repository needs it in `allow` (`--allow-repo`), unless nothing is deleted.
    fn check_allowed(&self, allow: &[String], dry_run: bool, plan: &str) -> Result<()> {
        let same = |a: &String| a.trim_end_matches('/') == self.repo.trim_end_matches('/');
        if dry_run || allow.iter().any(same) {
            return Ok(());
        }
        Err(AgentError::Usage(format!(
            "refusing to delete from {}: it is not in --allow-repo (or BACKUP_AGENT_ALLOW_REPO); run with --dry-run to see {plan}",
            self.repo
        )))
    }

    /// `'<this exe>' <command> --repo '...' ...`: the command PostgreSQL runs.
    fn self_command(&self, command: &str) -> Result<String> {
        let exe = std::env::current_exe()
            .map_err(|e| AgentError::io("cannot find the backup-agent executable", e))?;
        let q = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
        let mut out = format!("{} {command} --repo {}", q(&exe.to_string_lossy()), q(&self.repo));
        for (flag, value) in
            [("--s3-endpoint", &self.s3_endpoint), ("--s3-region", &self.s3_region)]
        {
            if let Some(v) = value {
                out.push_str(&format!(" {flag} {}", q(v)));
            }
        }
        out.push_str(&format!(" --compression {}", q(&self.compression)));
        if let Some(key) = &self.encryption_key_file {
            let key = std::path::absolute(key).unwrap_or_else(|_| key.clone());
            out.push_str(&format!(" --encryption-key-file {}", q(&key.to_string_lossy())));
        }
        Ok(out)
    }
}

fn progress(enabled: bool) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} {msg} {bytes} read, {bytes_per_sec}")
    {
        bar.set_style(style);
    }
    bar
}

async fn execute(command: Command) -> Result<ExitCode> {
    match command {
        Command::Keygen => {
            println!("{}", backup_agent::crypt::EncryptionKey::generate_hex());
            Ok(ExitCode::Success)
        }
        Command::Daemon { config, metrics_listen, check } => {
            let mut daemon = backup_agent::daemon::DaemonConfig::from_file(&config)?;
            if metrics_listen.is_some() {
                daemon.metrics_listen = metrics_listen;
            }
            if check {
                for job in &daemon.jobs {
                    let next = backup_agent::daemon::parse_schedule(&job.schedule)
                        .ok()
                        .and_then(|c| backup_agent::daemon::next_run(&c, chrono::Utc::now()))
                        .map_or_else(|| "never".to_owned(), |t| t.to_rfc3339());
                    println!("{}  next {next}  backup-agent {}", job.name, job.args.join(" "));
                }
                return Ok(ExitCode::Success);
            }
            let exe = std::env::current_exe()
                .map_err(|e| AgentError::CouldNotRun(format!("cannot find my own binary: {e}")))?;
            backup_agent::daemon::run(daemon, exe).await?;
            Ok(ExitCode::Success)
        }
        Command::Backup(backup) => run_backup(backup).await,
        Command::WalPush { repo, path } => {
            let settings = repo.settings()?;
            wal::push(&repo.open().await?, &path, &settings).await?;
            Ok(ExitCode::Success)
        }
        Command::WalFetch { repo, name, dest } => {
            let settings = repo.settings()?;
            match wal::fetch_with_retries(|| repo.open(), &name, &dest, &settings).await {
                Ok(()) => Ok(ExitCode::Success),
                Err(wal::FetchFailure::Final(e)) => Err(e),
                Err(wal::FetchFailure::RepositoryFailed { error, attempts }) => {
                    eprintln!(
                        "error: wal-fetch {name}: {error} ({attempts} attempts); exiting {} so PostgreSQL stops recovery instead of taking this for the end of the archive",
                        wal::FETCH_ABORT_STATUS
                    );
                    std::process::exit(wal::FETCH_ABORT_STATUS);
                }
            }
        }
        Command::List { repo, json } => {
            let repository = repo.open().await?;
            repository.check_reachable().await?;
            let catalog = BackupCatalog::load(&repository).await?;
            if json {
                let entries: Vec<serde_json::Value> =
                    catalog.backups.iter().map(list_entry_json).collect();
                println!("{}", serde_json::Value::Array(entries));
                return Ok(ExitCode::Success);
            }
            for b in &catalog.backups {
                let state = match &b.state {
                    BackupState::Complete(m) => {
                        format!("complete   {} B, {}", m.stored_bytes(), m.source)
                    }
                    BackupState::Incomplete { .. } => {
                        "INCOMPLETE (no manifest: running or interrupted)".to_owned()
                    }
                    BackupState::Deleting => "DELETING (interrupted prune: run recover)".to_owned(),
                };
                let verified = b
                    .verification
                    .as_ref()
                    .map_or("", |v| if v.passed() { "  verified" } else { "  VERIFY FAILED" });
                println!("{}  {state}{verified}", b.id);
            }
            Ok(ExitCode::Success)
        }
        Command::Restore(restore) => run_restore(restore).await,
        Command::Verify {
            repo,
            output,
            backups,
            restore,
            mongo_url,
            timeout,
            max_backup_age,
            rpo,
        } => {
            let repository = repo.open().await?;
            let options = backup_agent::verify::VerifyOptions {
                backups,
                restore,
                mongo_url,
                wal_fetch: repo.self_command("wal-fetch")?,
                restore_timeout: timeout,
                max_backup_age,
                rpo,
            };
            emit(&backup_agent::verify::verify(&repository, &options).await?, &output)
        }
        Command::Prune { repo, output, daily, weekly, monthly, pitr_window, dry_run, allow } => {
            repo.check_allowed(&allow, dry_run, "the plan")?;
            let policy = RetentionPolicy {
                daily,
                weekly,
                monthly,
                pitr_window_ms: pitr_window
                    .map_or(0, |w| i64::try_from(w.as_millis()).unwrap_or(i64::MAX)),
            };
            let repository = repo.open().await?;
            let (report, outcome) =
                backup_agent::prune::prune(&repository, &policy, dry_run).await?;
            if output.output == OutputFormat::Human {
                println!(
                    "{}:",
                    if dry_run { "plan (dry run, nothing deleted)" } else { "applied" }
                );
                print!("{}", backup_agent::prune::describe_plan(&outcome.plan));
            }
            emit(&report, &output)
        }
        Command::Drill {
            repo,
            output,
            scenario,
            rto,
            rpo,
            target_time,
            failure_point,
            source_url,
            table,
            self_contained,
            rows,
            keep,
            timeout,
        } => {
            let scenario: DrillScenario = scenario.parse()?;
            let (failure_point, failure_clock) = match (&failure_point, &source_url) {
                (Some(_), _) => {
                    (parse_time(failure_point.as_deref(), "--failure-point")?, FailureClock::Given)
                }
                (None, Some(url)) => {
                    let client = backup_agent::postgres::connect(url).await?;
                    (Some(backup_agent::postgres::server_now(&client).await?), FailureClock::Server)
                }
                (None, None) => (None, FailureClock::ThisMachine),
            };
            // A PITR drill measures against its target, which the user gave.
            let failure_clock = if scenario == DrillScenario::Pitr && target_time.is_some() {
                FailureClock::Given
            } else {
                failure_clock
            };
            let options = DrillOptions {
                scenario,
                rto: rto.unwrap_or_else(|| scenario.default_rto()),
                rpo,
                failure_point,
                failure_clock,
                target_time: parse_time(target_time.as_deref(), "--target-time")?,
                table,
                wal_fetch: repo.self_command("wal-fetch")?,
                timeout,
                keep,
            };
            let repository = repo.open().await?;
            let report = if self_contained {
                repository.check_reachable().await?;
                let wal_push = repo.self_command("wal-push")?;
                backup_agent::rehearsal::self_contained(&repository, &wal_push, &options, rows)
                    .await?
            } else {
                backup_agent::drill::drill(&repository, &options).await?
            };
            emit(&report, &output)
        }
        Command::Recover { repo, output, grace, dry_run, allow } => {
            repo.check_allowed(&allow, dry_run, "what would be removed")?;
            let repository = repo.open().await?;
            emit(&backup_agent::prune::recover(&repository, grace, dry_run).await?, &output)
        }
    }
}

async fn run_backup(command: BackupCommand) -> Result<ExitCode> {
    let started = Instant::now();
    let (report, output) = match command {
        BackupCommand::Postgres { repo, output, pg_url, key_tables } => {
            let repository = repo.open().await?;
            repository.check_reachable().await?;
            let options = base::BaseBackupOptions { key_tables, upload: repo.settings()? };
            let bar =
                progress(std::io::stderr().is_terminal() && output.output == OutputFormat::Human);
            bar.set_message(format!("pg_basebackup {}", display_target(&pg_url)));
            let manifest =
                base::backup(&repository, &pg_url, &options, |n| bar.set_position(n)).await?;
            bar.finish_and_clear();
            (
                backup_agent::backup_report(
                    &display_target(&pg_url),
                    &manifest,
                    started.elapsed().as_secs_f64(),
                ),
                output,
            )
        }
        BackupCommand::Tables { repo, output, pg_url, tables } => {
            let repository = repo.open().await?;
            repository.check_reachable().await?;
            let manifest =
                logical::backup(&repository, &pg_url, &tables, &repo.settings()?).await?;
            (
                backup_agent::backup_report(
                    &display_target(&pg_url),
                    &manifest,
                    started.elapsed().as_secs_f64(),
                ),
                output,
            )
        }
        BackupCommand::Mongo { repo, output, mongo_url, db } => {
            let repository = repo.open().await?;
            repository.check_reachable().await?;
            let manifest =
                backup_agent::mongo::backup(&repository, &mongo_url, &db, &repo.settings()?)
                    .await?;
            let target = shared_types::redact_url(&mongo_url);
            (
                backup_agent::backup_report(&target, &manifest, started.elapsed().as_secs_f64()),
                output,
            )
        }
    };
    emit(&report, &output)
}

async fn run_restore(command: RestoreCommand) -> Result<ExitCode> {
    let guard = |g: cli::GuardArgs| restore::Guard {
        allow_target: g.allow_target,
        dry_run: g.dry_run,
        replace: g.replace,
    };
    let (report, output) = match command {
        RestoreCommand::Postgres { repo, output, backup, target_time, timeout } => {
            let target_time = parse_time(target_time.as_deref(), "--target-time")?;
            let repository = repo.open().await?;
            let wal_fetch = repo.self_command("wal-fetch")?;
            (
                restore::postgres(&repository, &backup, target_time, &wal_fetch, timeout).await?,
                output,
            )
        }
        RestoreCommand::Table { repo, output, backup, table, pg_url, guard: g } => {
            // The allow-list is checked before the repository is opened.
            let g = guard(g);
            guard::check_target(&pg_url, &g.allow_target, "restore a table")?;
            let repository = repo.open().await?;
            (restore::table(&repository, &backup, &table, &pg_url, &g).await?, output)
        }
        RestoreCommand::Mongo { repo, output, backup, mongo_url, to_db, guard: g } => {
            let g = guard(g);
            guard::check_target(&mongo_url, &g.allow_target, "restore MongoDB collections")?;
            let repository = repo.open().await?;
            (restore::mongo(&repository, &backup, &mongo_url, to_db.as_deref(), &g).await?, output)
        }
    };
    emit(&report, &output)
}

fn parse_time(text: Option<&str>, flag: &str) -> Result<Option<Timestamp>> {
    text.map(|t| {
        Timestamp::parse(t).ok_or_else(|| {
            AgentError::Usage(format!(
                "{flag} {t:?} is not an RFC 3339 time (e.g. 2026-11-30T13:08:25Z)"
            ))
        })
    })
    .transpose()
}

fn emit(report: &Report, output: &OutputArgs) -> Result<ExitCode> {
    report
        .emit(output.output, output.report.as_deref())
        .map_err(|e| AgentError::io(format!("cannot write {}", e.path.display()), e.source))
}

/// One backup of `list --json`.
fn list_entry_json(b: &backup_agent::manifest::BackupEntry) -> serde_json::Value {
    let (state, kind, stored) = match &b.state {
        BackupState::Complete(m) => ("complete", Some(m.kind.short()), Some(m.stored_bytes())),
        BackupState::Incomplete { .. } => ("incomplete", None, None),
        BackupState::Deleting => ("deleting", None, None),
    };
    serde_json::json!({
        "id": b.id,
        "state": state,
        "kind": kind,
        "stored_bytes": stored,
        "objects": b.keys.len(),
        "verified": b.verification.as_ref().map(|v| v.passed()),
    })
}
