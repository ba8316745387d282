//! `sandbox`: parse flags, start the service, map the outcome to an exit code.

use std::io::Write;

use clap::Parser;
use sandbox::config::Config;

fn main() {
    let config = Config::parse();
    shared_types::init_logs(&config.log_format, "info");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(shared_types::ExitCode::CouldNotRun.code());
        }
    };
    let outcome =
        runtime.block_on(sandbox::serve(config, announce, shared_types::signals::shutdown()));
    if let Err(e) = outcome {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code().code());
    }
}

/// Prints the bound address on the first line of stdout: scripts and testkit read it.
fn announce(addr: std::net::SocketAddr) {
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (e.g. piped into `head`) must not stop the service.
    let _ = writeln!(stdout, "sandbox listening on http://{addr}");
    let _ = stdout.flush();
    tracing::info!(%addr, "sandbox listening");
}
