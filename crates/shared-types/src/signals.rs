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
