//! The signals a tool stops on, one way for every binary.

/// Completes on Ctrl-C (SIGINT); never, if it cannot be listened for (so a
/// tool without a terminal keeps running instead of stopping at once).
pub async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Completes on Ctrl-C or SIGTERM (what a service manager, `kill` or a
/// Kubernetes pod deletion sends); on Ctrl-C alone if SIGTERM cannot be
/// listened for.
pub async fn shutdown() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                () = interrupted() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => interrupted().await,
    }
}

/// What a tool's `main` does once its flags are parsed: runs `work` on a
/// tokio runtime and turns its outcome into the process's exit status (the
/// error printed as `TOOL: message` with its own exit code: 2 bad input,
/// 3 could not run).
pub fn run_tool<E: std::fmt::Display>(
    tool: &str,
    work: impl Future<Output = Result<crate::ExitCode, E>>,
    code_of: impl Fn(&E) -> crate::ExitCode,
) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{tool}: cannot start the async runtime: {e}");
            return crate::ExitCode::CouldNotRun.into();
        }
    };
    match runtime.block_on(work) {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("{tool}: {e}");
            code_of(&e).into()
        }
    }
}
