//! Real services for backup-agent's tests: a moto S3 server and the nx-27017
//! MongoDB wire-protocol server, each on a free loopback port, killed on drop.
//! (To move into testkit: `S3Server` and `MongoServer`.)

#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use backup_agent::repository::{Repository, RepositoryLocation, S3Options};

/// Fake credentials moto accepts; never real keys.
pub const ACCESS_KEY: &str = "testing";
pub const SECRET_KEY: &str = "testing";

/// `moto_server` (PyPI `moto[server]`) on 127.0.0.1.
pub struct S3Server {
    child: Child,
    pub port: u16,
}

impl S3Server {
    pub async fn start() -> S3Server {
        let port = testkit::free_port();
        let bin = testkit::binaries::find("moto_server")
            .expect("moto_server: pip install 'moto[server]' (scripts/install-deps.sh)");
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        testkit::wait_for_tcp(format!("127.0.0.1:{port}"), Duration::from_secs(30))
            .await
            .expect("moto listening");
        S3Server { child, port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates `bucket` and returns a repository on `s3://bucket/prefix`.
    pub async fn repository(&self, bucket: &str, prefix: &str) -> Repository {
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                ACCESS_KEY, SECRET_KEY, None, None, "test",
            ))
            .build();
        aws_sdk_s3::Client::from_conf(conf).create_bucket().bucket(bucket).send().await.unwrap();
        let location: RepositoryLocation = format!("s3://{bucket}/{prefix}").parse().unwrap();
        Repository::open(&location, &self.options()).await.unwrap()
    }

    pub fn options(&self) -> S3Options {
        S3Options {
            endpoint: Some(self.endpoint()),
            path_style: true,
            credentials: Some(aws_sdk_s3::config::Credentials::new(
                ACCESS_KEY, SECRET_KEY, None, None, "test",
            )),
            ..S3Options::default()
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `nx-27017` (PyPI) on 127.0.0.1 with its SQLite files in a temp dir.
pub struct MongoServer {
    child: Child,
    _dir: tempfile::TempDir,
    pub port: u16,
}

impl MongoServer {
    pub async fn start() -> MongoServer {
        let port = testkit::free_port();
        let dir = tempfile::tempdir().unwrap();
        let bin = testkit::binaries::find("nx-27017")
            .expect("nx-27017: pip install nx-27017 (scripts/install-deps.sh)");
        let child = Command::new(bin)
            .args(["--host", "127.0.0.1", "-p", &port.to_string(), "--data-dir"])
            .arg(dir.path())
            .arg("--log-file")
            .arg(dir.path().join("nx.log"))
            .arg("--pid-file")
            .arg(dir.path().join("nx.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nx-27017");
        testkit::wait_for_tcp(format!("127.0.0.1:{port}"), Duration::from_secs(30))
            .await
            .expect("nx-27017 listening");
        MongoServer { child, _dir: dir, port }
    }

    pub fn url(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    Command::new(env!("CARGO_BIN_EXE_backup-agent"))
        .args(args)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
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
