//! Helpers for backup-agent's tests over testkit's real servers (moto for S3,
//! nx-27017 for MongoDB, the machine's PostgreSQL): repositories on them and
//! the agent binary run with their credentials.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use backup_agent::repository::{Repository, RepositoryLocation, S3Options};

pub use testkit::s3::{OPEN_ACCESS_KEY as ACCESS_KEY, OPEN_SECRET_KEY as SECRET_KEY};
pub use testkit::{MongoServer, S3Server};

/// A moto server from testkit (any credentials accepted).
pub async fn s3_server() -> S3Server {
    S3Server::start().await.unwrap_or_else(|e| panic!("{e}"))
}

/// Creates `bucket` on `s3` and opens a repository on `s3://bucket/prefix`.
pub async fn s3_repository(s3: &S3Server, bucket: &str, prefix: &str) -> Repository {
    s3.create_bucket(bucket).await.unwrap_or_else(|e| panic!("{e}"));
    let location: RepositoryLocation = format!("s3://{bucket}/{prefix}").parse().unwrap();
    Repository::open(&location, &s3_options(s3)).await.unwrap()
}

/// Repository options for `s3` with its credentials.
pub fn s3_options(s3: &S3Server) -> S3Options {
    let keys = s3.credentials();
    S3Options {
        endpoint: Some(s3.endpoint()),
        path_style: true,
        credentials: Some(aws_sdk_s3::config::Credentials::new(
            &keys.access_key_id,
            &keys.secret_access_key,
            None,
            None,
            "test",
        )),
        ..S3Options::default()
    }
}

/// An nx-27017 server from testkit.
pub async fn mongo_server() -> MongoServer {
    MongoServer::start().await.unwrap_or_else(|e| panic!("{e}"))
}

/// A local repository directory the postgres user can write (archive_command runs as postgres).
pub fn local_repo_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let _ = Command::new("chown").arg("postgres").arg(dir.path()).status();
    dir
}

pub async fn local_repository(dir: &Path) -> Repository {
    let location = RepositoryLocation::Local(dir.to_path_buf());
    Repository::open(&location, &S3Options::default()).await.unwrap()
}

/// The backup-agent binary with fake S3 credentials in its environment.
pub fn agent(args: &[&str]) -> Output {
    agent_with_keys(args, ACCESS_KEY, SECRET_KEY)
}

/// The backup-agent binary with these S3 keys in its environment.
pub fn agent_with_keys(args: &[&str], access_key: &str, secret_key: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_backup-agent"))
        .args(args)
        .env("AWS_ACCESS_KEY_ID", access_key)
        .env("AWS_SECRET_ACCESS_KEY", secret_key)
        .env("AWS_REGION", testkit::s3::REGION)
        .output()
        .unwrap()
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `'<exe>' wal-push --repo ...` as PostgreSQL runs it (with fake S3 credentials).
pub fn agent_command(sub: &str, repo: &str, endpoint: Option<&str>) -> String {
    let mut cmd = format!(
        "AWS_ACCESS_KEY_ID={ACCESS_KEY} AWS_SECRET_ACCESS_KEY={SECRET_KEY} AWS_REGION=us-east-1 '{}' {sub} --repo '{repo}'",
        env!("CARGO_BIN_EXE_backup-agent")
    );
    if let Some(ep) = endpoint {
        cmd.push_str(&format!(" --s3-endpoint '{ep}'"));
    }
    cmd
}
