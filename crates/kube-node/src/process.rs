//! A container's process: its own process group, killed with its parent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use rustix::process::{Pid, Signal};

/// util-linux's setpriv (Debian's `util-linux`, on every machine).
const SETPRIV: &str = "/usr/bin/setpriv";

/// What to run.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The program (a path, or a name looked up on PATH).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its whole environment (nothing is inherited from the node).
    pub env: BTreeMap<String, String>,
    /// Where stdout and stderr go (appended, across restarts).
    pub log: PathBuf,
    /// Working directory.
    pub dir: PathBuf,
}

/// A running container process. Its whole process group is killed on drop.
#[derive(Debug)]
pub struct Running {
    child: tokio::process::Child,
    pid: i32,
}

impl Running {
    /// Starts `launch` as the leader of a new process group. The kernel
    /// kills it if the node dies: it is started through util-linux's
    /// `setpriv --pdeathsig KILL` (PR_SET_PDEATHSIG survives the exec, and
    /// needs no unsafe pre-exec hook here), so no pod outlives its node.
    pub fn start(launch: &Launch) -> std::io::Result<Running> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&launch.log)?;
        let err = log.try_clone()?;
        let mut cmd = tokio::process::Command::new(SETPRIV);
        cmd.args(["--pdeathsig", "KILL", "--"])
            .arg(&launch.program)
            .args(&launch.args)
            .env_clear()
            .envs(&launch.env)
            .current_dir(&launch.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0);
        let child = cmd.spawn()?;
        let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        Ok(Running { child, pid })
    }

    /// The leader's PID, which is also the process group id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The exit code if the leader has exited (128 + signal when killed).
    pub fn exited(&mut self) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        let status = self.child.try_wait().ok()??;
        Some(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
    }

    /// Sends `signal` to the whole group.
    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = Pid::from_raw(self.pid) {
            let _ = rustix::process::kill_process_group(pid, signal);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.signal(Signal::KILL);
        let _ = self.child.start_kill();
    }
}

/// Whether a process with this PID exists (for tests: a killed pod's PID is gone).
pub fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')))
}
