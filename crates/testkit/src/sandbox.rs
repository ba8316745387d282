//! The sandbox marketplace service (crate `sandbox`), started as a child
//! process on a port it picks itself.
//!
//! Contract with the binary: it is started as
//! `<bin> --listen 127.0.0.1:0 <extra args>`, prints exactly one first line
//! `sandbox listening on http://127.0.0.1:PORT` on stdout, then serves
//! `GET /healthz` with 200. Its stderr goes to [`Sandbox::log_path`]; later
//! stdout lines are drained in the background and logged at `debug` level.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::Instant;

use crate::error::tail_of_file;
use crate::ports::wait_for_http_ok;
use crate::{Error, Result, binaries};

/// Env var naming the sandbox binary, overriding the target-dir default.
pub const SANDBOX_BIN_ENV: &str = "POSTLAUNCH_SANDBOX_BIN";
/// What the first stdout line starts with; the URL follows.
pub const LISTENING_PREFIX: &str = "sandbox listening on ";

const START_TIMEOUT: Duration = Duration::from_secs(30);
const LOG_TAIL_LINES: usize = 30;
const BUILD_HINT: &str = "run `cargo build -p sandbox` (cargo xtask test does this)";
/// Linux's "Text file busy": exec of a file another thread still has open
/// for writing (a test that just wrote a script while others fork).
const ETXTBSY: i32 = 26;

/// A running sandbox, killed when dropped.
#[derive(Debug)]
pub struct Sandbox {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    url: String,
    log_path: PathBuf,
    _dir: TempDir,
}

/// Where [`Sandbox::start`] looks for the binary: env `POSTLAUNCH_SANDBOX_BIN`,
/// else `<target dir>/debug/sandbox`, the target dir being env
/// `CARGO_TARGET_DIR` (relative paths taken from the workspace root) or
/// `<workspace root>/target`.
pub fn default_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os(SANDBOX_BIN_ENV) {
        return PathBuf::from(bin);
    }
    workspace_binary("debug", "sandbox")
}

/// The cargo target dir: env `CARGO_TARGET_DIR` (relative paths taken from the
/// workspace root) or `<workspace root>/target`.
pub fn target_dir() -> PathBuf {
    let root = workspace_root();
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir), // join keeps absolute paths as they are
        None => root.join("target"),
    }
}

/// A binary of the workspace built with `profile` (`debug` or `release`).
pub fn workspace_binary(profile: &str, name: &str) -> PathBuf {
    target_dir().join(profile).join(name)
}

/// The workspace root: two levels above this crate's manifest.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().and_then(Path::parent).unwrap_or(manifest).to_path_buf()
}

impl Sandbox {
    /// Starts the binary from [`default_binary`] with `extra_args`.
    pub async fn start(extra_args: &[String]) -> Result<Sandbox> {
        Sandbox::start_with_binary(default_binary(), extra_args).await
    }

    /// Starts `binary --listen 127.0.0.1:0 <extra_args>`, reads its
    /// listening line and waits (30 s at most) for `GET /healthz` = 200.
    pub async fn start_with_binary(
        binary: impl AsRef<Path>,
        extra_args: &[String],
    ) -> Result<Sandbox> {
        Sandbox::start_at(binary, "127.0.0.1:0".parse().expect("a socket address"), extra_args)
            .await
    }

    /// Starts `binary --listen LISTEN <extra_args>`: a fixed port, so a
    /// process started again answers where its peers expect it.
    pub async fn start_at(
        binary: impl AsRef<Path>,
        listen: SocketAddr,
        extra_args: &[String],
    ) -> Result<Sandbox> {
        let binary = binary.as_ref();
        if !binaries::is_executable(binary) {
            return Err(Error::BinaryNotFound {
                name: "sandbox binary".to_owned(),
                searched: format!("at {}", binary.display()),
                hint: BUILD_HINT.to_owned(),
            });
        }
        let dir = tempfile::Builder::new()
            .prefix("postlaunch-sandbox-")
            .tempdir()
            .map_err(|err| Error::io("cannot create a temporary directory for the sandbox", err))?;
        let log_path = dir.path().join("sandbox.stderr.log");
        match start_child(binary, listen, extra_args, &log_path).await {
            Ok((child, pid, addr)) => {
                Ok(Sandbox { child, pid, url: format!("http://{addr}"), addr, log_path, _dir: dir })
            }
            Err(err) => {
                // The error points at the stderr log: keep it.
                let mut dir = dir;
                dir.disable_cleanup(true);
                Err(err)
            }
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Process id of the sandbox.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The file its stderr goes to.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Stops it with SIGTERM (a graceful shutdown) and waits up to 10 s for
    /// it to exit, then kills it.
    pub async fn stop(&mut self) -> Result<()> {
        if self.child.try_wait().ok().flatten().is_some() {
            return Ok(());
        }
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(_) => Ok(()),
            Err(_) => self.kill().await,
        }
    }

    /// Kills it (SIGKILL, like a crash) and reaps it. Killing one that has
    /// already exited is not an error.
    pub async fn kill(&mut self) -> Result<()> {
        if self.child.try_wait().ok().flatten().is_some() {
            return Ok(());
        }
        self.child
            .kill()
            .await
            .map_err(|err| Error::io(format!("cannot kill the sandbox (pid {})", self.pid), err))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Spawns the binary, reads its listening line and waits for `/healthz`;
/// on failure the child is killed (kill-on-drop) and the error carries the
/// exit code and the tail of its stderr.
async fn start_child(
    binary: &Path,
    listen: SocketAddr,
    extra_args: &[String],
    log_path: &Path,
) -> Result<(Child, u32, SocketAddr)> {
    let mut child = spawn(binary, listen, extra_args, log_path).await?;
    let pid = child.id().unwrap_or_default();
    let deadline = Instant::now() + START_TIMEOUT;
    let failed = |what: String, exit_code: Option<i32>, hint: &str| Error::ProcessFailed {
        what,
        exit_code,
        log_tail: tail_of_file(log_path, LOG_TAIL_LINES),
        log_path: Some(log_path.to_path_buf()),
        hint: hint.to_owned(),
    };

    let Some(stdout) = child.stdout.take() else {
        return Err(Error::Unexpected {
            what: format!("starting {}", binary.display()),
            detail: "its stdout was not captured (a testkit bug)".to_owned(),
        });
    };
    let mut lines = BufReader::new(stdout).lines();
    let first = match tokio::time::timeout(START_TIMEOUT, lines.next_line()).await {
        Ok(Ok(Some(line))) => line,
        Ok(Ok(None)) => {
            // stdout closed: it exited (or closed stdout, which breaks the contract).
            let status = wait_briefly(&mut child).await;
            return Err(failed(
                format!(
                    "sandbox {} exited before printing `{LISTENING_PREFIX}http://127.0.0.1:PORT`",
                    binary.display()
                ),
                status.and_then(|s| s.code()),
                "read its stderr below; a wrong extra argument or an unreachable \
                 dependency is the usual cause",
            ));
        }
        Ok(Err(err)) => {
            return Err(Error::io(format!("cannot read the stdout of {}", binary.display()), err));
        }
        Err(_) => {
            return Err(failed(
                format!(
                    "sandbox {} printed nothing on stdout within {START_TIMEOUT:?}",
                    binary.display()
                ),
                None,
                "it must print its listening line first; is it stuck starting up?",
            ));
        }
    };

    let Some(addr) = parse_listening_line(&first) else {
        return Err(failed(
            format!("sandbox {} printed `{first}` as its first line", binary.display()),
            None,
            "expected `sandbox listening on http://127.0.0.1:PORT`; \
             is this binary the sandbox, built from this checkout?",
        ));
    };
    tokio::spawn(drain(lines, pid));

    let url = format!("http://{addr}");
    let healthz = format!("{url}/healthz");
    let remaining = deadline.saturating_duration_since(Instant::now());
    tokio::select! {
        ready = wait_for_http_ok(&healthz, remaining) => {
            if let Err(err) = ready {
                return Err(failed(
                    format!("sandbox at {url} never answered GET /healthz with 200 ({err})"),
                    None,
                    "read its stderr below",
                ));
            }
        }
        status = child.wait() => {
            let code = status.ok().and_then(|s| s.code());
            return Err(failed(
                format!("sandbox {} exited while waiting for {healthz}", binary.display()),
                code,
                "read its stderr below",
            ));
        }
    }

    Ok((child, pid, addr))
}

async fn spawn(
    binary: &Path,
    listen: SocketAddr,
    extra_args: &[String],
    log_path: &Path,
) -> Result<Child> {
    let mut attempt = 0;
    loop {
        let log = std::fs::File::create(log_path)
            .map_err(|err| Error::io(format!("cannot create {}", log_path.display()), err))?;
        let spawned = Command::new(binary)
            .arg("--listen")
            .arg(listen.to_string())
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn();
        match spawned {
            Ok(child) => return Ok(child),
            Err(err) if err.raw_os_error() == Some(ETXTBSY) && attempt < 20 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => {
                return Err(Error::io(
                    format!("cannot start the sandbox {}", binary.display()),
                    err,
                ));
            }
        }
    }
}

/// Keeps reading stdout so the child never blocks on a full pipe.
async fn drain(mut lines: tokio::io::Lines<BufReader<ChildStdout>>, pid: u32) {
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(target: "testkit::sandbox", pid, "{line}");
    }
}

async fn wait_briefly(child: &mut Child) -> Option<ExitStatus> {
    match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
        Ok(Ok(status)) => Some(status),
        _ => {
            let _ = child.start_kill();
            None
        }
    }
}

/// `sandbox listening on http://127.0.0.1:PORT` -> `127.0.0.1:PORT`.
fn parse_listening_line(line: &str) -> Option<SocketAddr> {
    let rest = line.trim_end().strip_prefix(LISTENING_PREFIX)?;
    let authority = rest.strip_prefix("http://")?.trim_end_matches('/');
    authority.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_line_is_parsed() {
        assert_eq!(
            parse_listening_line("sandbox listening on http://127.0.0.1:4321\n"),
            Some(SocketAddr::from(([127, 0, 0, 1], 4321)))
        );
        assert_eq!(parse_listening_line("listening on 127.0.0.1:1"), None);
    }

    #[test]
    fn default_binary_is_under_the_workspace_target_dir() {
        if std::env::var_os(SANDBOX_BIN_ENV).is_none()
            && std::env::var_os("CARGO_TARGET_DIR").is_none()
        {
            assert!(default_binary().ends_with("target/debug/sandbox"));
            assert!(workspace_root().join("Cargo.toml").exists());
        }
    }
}
