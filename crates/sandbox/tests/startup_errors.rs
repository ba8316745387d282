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
