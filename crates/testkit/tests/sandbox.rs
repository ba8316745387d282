//! Sandbox start-up, against fake sandbox binaries (shell scripts) that keep
//! or break the contract.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use testkit::{Error, Sandbox};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Writes an executable `/bin/sh` script and returns its directory and path.
fn fake_sandbox(body: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let path = dir.path().join("sandbox");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write the fake sandbox");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .expect("make the fake sandbox executable");
    (dir, path)
}

/// Starts `bin`, which must fail; checks that the stderr log the error names
/// was kept for reading, then removes it so test runs leave nothing behind.
async fn start_failure(bin: &std::path::Path) -> Error {
    let err = Sandbox::start_with_binary(bin, &[]).await.expect_err("the start must fail");
    if let Error::ProcessFailed { log_path: Some(log), .. } = &err {
        assert!(log.exists(), "the error names {} but it is gone", log.display());
        let dir = log.parent().expect("the log is in a directory");
        std::fs::remove_dir_all(dir).expect("remove the kept log directory");
    }
    err
}

/// A stand-in HTTP server answering 200 to everything, for the happy path.
async fn serve_ok() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("local address").port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_exiting_before_its_listening_line_reports_exit_code_and_stderr() {
    let (_dir, bin) = fake_sandbox("echo 'cannot reach postgres at 127.0.0.1:1' >&2\nexit 3");
    let err = start_failure(&bin).await;
    assert_eq!(err.exit_code(), Some(3), "{err}");
    let message = err.to_string();
    assert!(message.contains("exit code 3"), "{message}");
    assert!(message.contains("cannot reach postgres at 127.0.0.1:1"), "{message}");
    assert!(message.contains("exited before printing"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_exiting_after_its_listening_line_reports_exit_code() {
    let (_dir, bin) =
        fake_sandbox("echo 'sandbox listening on http://127.0.0.1:9'\necho 'bad flag' >&2\nexit 2");
    let err = start_failure(&bin).await;
    assert!(matches!(err, Error::ProcessFailed { exit_code: Some(2), .. }), "{err}");
    assert!(err.to_string().contains("bad flag"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_with_a_wrong_first_line_is_rejected() {
    let (_dir, bin) = fake_sandbox("echo 'hello'\nexec sleep 30");
    let err = start_failure(&bin).await;
    assert!(err.to_string().contains("printed `hello`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_sandbox_binary_says_how_to_build_it() {
    let err = Sandbox::start_with_binary("/nonexistent/sandbox", &[]).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "sandbox binary not found at /nonexistent/sandbox: \
         run `cargo build -p sandbox` (cargo xtask test does this)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_sandbox_exposes_its_address_and_dies_on_kill() {
    let port = serve_ok().await;
    let (_dir, bin) = fake_sandbox(&format!(
        "echo \"args: $*\" >&2\n\
         echo 'sandbox listening on http://127.0.0.1:{port}'\n\
         i=0; while [ $i -lt 10000 ]; do echo \"stdout noise line $i\"; i=$((i+1)); done\n\
         echo 'all stdout written' >&2\n\
         exec sleep 60"
    ));
    let extra = vec!["--seed".to_owned(), "7".to_owned()];
    let mut sandbox = Sandbox::start_with_binary(&bin, &extra).await.unwrap();
    assert_eq!(sandbox.url(), format!("http://127.0.0.1:{port}"));
    assert_eq!(sandbox.addr().port(), port);
    let log = std::fs::read_to_string(sandbox.log_path()).unwrap();
    assert!(log.contains("args: --listen 127.0.0.1:0 --seed 7"), "{log}");

    // ~250 KB of stdout after the first line: more than a pipe holds, so
    // the script only gets here if testkit keeps draining stdout.
    let mut drained = false;
    for _ in 0..100 {
        let log = std::fs::read_to_string(sandbox.log_path()).unwrap();
        if log.contains("all stdout written") {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(drained, "the sandbox blocked writing stdout");

    let proc_dir = PathBuf::from(format!("/proc/{}", sandbox.pid()));
    assert!(proc_dir.exists());
    sandbox.kill().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!proc_dir.exists(), "pid {} still exists", sandbox.pid());
    sandbox.kill().await.unwrap(); // killing twice is fine
}
