//! `sandbox`: parse flags, start the service (or run `sandbox certs`), map the
//! outcome to an exit code.

use std::io::Write;

use clap::Parser;
use sandbox::Listening;
use sandbox::config::{Command, Config};
use shared_types::ExitCode;

fn main() {
    let config = Config::parse();
    shared_types::init_logs(&config.log_format, "info");
    if let Some(Command::Certs { dir, dns_names }) = &config.command {
        match sandbox::certs::write(dir, dns_names) {
            Ok(files) => {
                for file in files {
                    println!("{}", file.display());
                }
                return;
            }
            Err(e) => {
                eprintln!("error: {e}");
                let code = match e {
                    sandbox::certs::CertsError::Generate { .. } => ExitCode::Usage,
                    sandbox::certs::CertsError::Write { .. } => ExitCode::CouldNotRun,
                };
                std::process::exit(code.code());
            }
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(ExitCode::CouldNotRun.code());
        }
    };
    let outcome =
        runtime.block_on(sandbox::serve(config, announce, shared_types::signals::shutdown()));
    if let Err(e) = outcome {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code().code());
    }
}

/// Prints the bound addresses on stdout, HTTP first, then gRPC for the auth
/// and catalog roles: scripts and testkit read them.
fn announce(at: &Listening) {
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (e.g. piped into `head`) must not stop the service.
    let _ = writeln!(stdout, "sandbox listening on http://{}", at.http);
    if let Some(grpc) = at.grpc {
        let scheme = if at.tls { "https" } else { "http" };
        let _ = writeln!(stdout, "sandbox grpc listening on {scheme}://{grpc}");
    }
    let _ = stdout.flush();
    tracing::info!(http = %at.http, grpc = ?at.grpc, tls = at.tls, "sandbox listening");
}
