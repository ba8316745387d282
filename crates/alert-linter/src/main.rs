//! `alert-linter`: parse flags, lint, render, exit 0/1/2/3.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode as ProcessExit;
use std::time::Duration;

use alert_linter::online::{self, PrometheusApi};
use alert_linter::{Config, LintOutcome, Severity, model, output};
use clap::{Parser, Subcommand, ValueEnum};
use shared_types::{ExitCode, OutputFormat, RenderOptions};

#[derive(Debug, Parser)]
#[command(
    name = "alert-linter",
    version,
    about = "Are our Prometheus alert rules valid, complete, actionable and quiet?"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Lint rule files, directories and globs (offline; online with --prometheus).
    Lint {
        #[command(flatten)]
        common: Common,
        /// Apply safe automatic fixes to the files, then report what is left.
        #[arg(long)]
        fix: bool,
        /// Skip the critical-path coverage check.
        #[arg(long)]
        no_coverage: bool,
    },
    /// Replay each alert over past data and report firing episodes and flapping.
    Backtest {
        #[command(flatten)]
        common: Common,
        /// How far back to replay, e.g. 7d, 5m.
        #[arg(long, default_value = "7d", value_parser = duration)]
        range: Duration,
        /// Resolution of the replay (default: range / 10000, at least 1s).
        #[arg(long, value_parser = duration)]
        step: Option<Duration>,
    },
    /// List every check id with its default severity.
    Checks,
}

#[derive(Debug, clap::Args)]
struct Common {
    /// Rule files, directories or globs.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// YAML config overriding the marketplace defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    output: Format,
    /// Lowest severity that fails the run (exit 1).
    #[arg(long, value_enum, default_value_t = FailOn::Error)]
    fail_on: FailOn,
    /// Also write the JSON report to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// A live Prometheus for online checks, e.g. http://127.0.0.1:9090.
    #[arg(long)]
    prometheus: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Human,
    Json,
    Sarif,
    Github,
    Junit,
    Markdown,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FailOn {
    Warning,
    Error,
}

fn duration(text: &str) -> Result<Duration, String> {
    model::parse_duration(text)
}

fn main() -> ProcessExit {
    let cli = Cli::parse();
    let code = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(run(cli)),
        Err(e) => {
            eprintln!("alert-linter: cannot start the async runtime: {e}");
            ExitCode::CouldNotRun
        }
    };
    code.into()
}

/// Runs one command and returns the exit code.
async fn run(cli: Cli) -> ExitCode {
    let (common, fix, coverage, backtest) = match cli.command {
        Command::Checks => {
            for (id, severity, criterion) in alert_linter::diag::CHECKS {
                println!("{id:32} {severity:8} {criterion}");
            }
            return ExitCode::Success;
        }
        Command::Lint { common, fix, no_coverage } => (common, fix, !no_coverage, None),
        Command::Backtest { common, range, step } => {
            let step = step.unwrap_or_else(|| (range / 10_000).max(Duration::from_secs(1)));
            (common, false, false, Some((range, step)))
        }
    };
    let mut config = match &common.config {
        Some(path) => match Config::from_file(path) {
            Ok(c) => c,
            Err(e) => return usage(&e.to_string()),
        },
        None => Config::default(),
    };
    let api = common.prometheus.as_deref().map(PrometheusApi::new);
    if backtest.is_some() && api.is_none() {
        return usage("backtest needs --prometheus URL");
    }
    let mut unreachable = None;
    if let Some(api) = &api {
        match api.scrape_interval().await {
            Ok(Some(interval)) => config.scrape_interval = interval,
            Ok(None) => {}
            Err(e) => unreachable = Some(e.to_string()),
        }
    }
    let fail_on = match common.fail_on {
        FailOn::Warning => Severity::Warning,
        FailOn::Error => Severity::Error,
    };
    let lint = |config: &Config| LintOutcome::lint_paths(&common.paths, config, coverage);
    let mut outcome = match lint(&config) {
        Ok(o) => o,
        Err(e) => return usage(&e.to_string()),
    };
    if fix {
        match outcome.apply_fixes() {
            Ok(0) => {}
            Ok(n) => {
                eprintln!("alert-linter: applied {n} fix(es)");
                outcome = match lint(&config) {
                    Ok(o) => o,
                    Err(e) => return usage(&e.to_string()),
                };
            }
            Err(e) => eprintln!("alert-linter: cannot write fixes: {e}"),
        }
    }
    if let (Some(api), None) = (&api, &unreachable) {
        let result = match backtest {
            Some((range, step)) => {
                online::backtest(&mut outcome, api, range, step).await.map(|_| ())
            }
            None => online::check(&mut outcome, api).await,
        };
        if let Err(e) = result {
            unreachable = Some(e.to_string());
        }
    }
    if let Some(message) = unreachable {
        eprintln!("alert-linter: {message}");
        let id = if backtest.is_some() { "backtest/fired" } else { "online/series-missing" };
        outcome.run_errors.push((id.to_owned(), message));
    }
    let target = common.paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" ");
    let report = outcome.report(fail_on, &target);
    let text = match common.output {
        Format::Human => {
            output::human(&outcome, fail_on, std::io::stdout().is_terminal(), report.exit_code())
        }
        Format::Sarif => output::sarif(&outcome),
        Format::Github => output::github(&outcome),
        Format::Json => report.render(OutputFormat::Json, &RenderOptions::default()),
        Format::Junit => report.render(OutputFormat::Junit, &RenderOptions::default()),
        Format::Markdown => report.render(OutputFormat::Markdown, &RenderOptions::default()),
    };
    if let Some(path) = &common.report
        && let Err(e) = std::fs::write(path, report.to_json_pretty())
    {
        eprintln!("alert-linter: cannot write report {}: {e}", path.display());
    }
    // A closed pipe (`| head`) is not an error worth reporting.
    let _ = std::io::stdout().write_all(text.as_bytes());
    // The exit code is the printed report's, never computed beside it.
    report.exit_code()
}

fn usage(message: &str) -> ExitCode {
    eprintln!("alert-linter: {message}");
    ExitCode::Usage
}
