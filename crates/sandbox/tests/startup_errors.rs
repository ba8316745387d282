//! Bad parameters and unreachable dependencies: a clear message on stderr and
//! the documented exit code (2 usage, 3 could not run), never a panic.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sandbox"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn out_of_range_parameters_exit_2_naming_the_flag() {
    let output = run(&["--collections", "0"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("invalid parameter --collections: must be at least 1"),
        "{}",
        stderr(&output)
    );

    let output = run(&["--cache-ttl", "5 parsecs"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--cache-ttl"), "{}", stderr(&output));
    assert!(!stderr(&output).contains("panicked"));
}

#[test]
fn malformed_database_url_exits_2() {
    let output = run(&["--database-url", "postgres://[::1"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("invalid --database-url"), "{}", stderr(&output));
}

#[test]
fn unreachable_database_exits_3_naming_the_address_without_the_password() {
    let port = testkit::free_port();
    let url = format!("postgres://postgres:hunter2@127.0.0.1:{port}/marketplace");
    let output = run(&["--database-url", &url, "--collections", "5", "--nfts", "5"]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{message}");
    assert!(
        message.contains(&format!("cannot use PostgreSQL at 127.0.0.1:{port}/marketplace")),
        "{message}"
    );
    assert!(message.contains("is PostgreSQL running"), "{message}");
    assert!(!message.contains("hunter2"), "password leaked: {message}");
}

#[test]
fn unreachable_redis_exits_3() {
    let port = testkit::free_port();
    let output = run(&[
        "--redis-url",
        &format!("redis://127.0.0.1:{port}"),
        "--collections",
        "5",
        "--nfts",
        "5",
    ]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{message}");
    assert!(message.contains(&format!("cannot connect to Redis at 127.0.0.1:{port}")), "{message}");
}

#[test]
fn a_taken_listen_address_exits_3() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_sandbox"))
        .args(["--listen", &addr, "--collections", "5", "--nfts", "5"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    assert!(stderr(&output).contains(&format!("cannot listen on {addr}")), "{}", stderr(&output));
}

#[test]
fn role_flags_are_checked_before_anything_starts() {
    let output = run(&["--role", "billing"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--role"), "{}", stderr(&output));

    let output = run(&["--role", "gateway", "--auth-url", "http://127.0.0.1:1"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("invalid parameter --catalog-url"), "{}", stderr(&output));

    let output = run(&["--role", "consumer", "--database-url", "postgres://127.0.0.1/x"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("invalid parameter --amqp-url"), "{}", stderr(&output));

    let output = run(&[
        "--role",
        "auth",
        "--tls-cert",
        "/nonexistent/auth.pem",
        "--tls-key",
        "/nonexistent/k.pem",
        "--tls-ca",
        "/nonexistent/ca.pem",
    ]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(
        message.contains("invalid parameter --tls-cert: cannot read /nonexistent/auth.pem"),
        "{message}"
    );
    assert!(!message.contains("panicked"));
}

#[test]
fn a_file_that_is_not_a_certificate_exits_2_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let output =
        Command::new(env!("CARGO_BIN_EXE_sandbox")).arg("certs").arg(dir.path()).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let file = |name: &str| dir.path().join(name).display().to_string();
    // A key where the CA should be.
    let output = run(&[
        "--role",
        "catalog",
        "--tls-cert",
        &file("catalog.pem"),
        "--tls-key",
        &file("catalog-key.pem"),
        "--tls-ca",
        &file("catalog-key.pem"),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("invalid parameter --tls-ca"), "{}", stderr(&output));
}
