//! A RabbitMQ node of a test's own (Debian's `rabbitmq-server`), beside the
//! machine's: its own node name, AMQP, distribution and management ports on
//! 127.0.0.1, Erlang cookie and data directory, so a test may stop, kill or
//! restart it without touching anything else.
//!
//! The node runs as the `rabbitmq` user (through `setpriv`, which execs, so
//! the child is the `rabbitmq-server` script itself; `runuser` would reset
//! `HOME`, and with it the cookie). The script runs `beam.smp` as its child
//! and forwards SIGTERM to it; a SIGKILL must go to beam itself, whose pid is
//! in `mnesia/NODE.pid`. The Debian wrappers in /usr/sbin are not used: they
//! change directory, redirect output and use the system node's cookie.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use tempfile::TempDir;

use crate::ports::{free_port, wait_for_tcp};
use crate::service_dir::ServiceDir;
use crate::{Error, Result, unix_user};

const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const USER: &str = "rabbitmq";
/// Seen here: 9 to 20 s on 2 busy cores; the management plugin's start is most of it.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// A graceful stop takes about 6 s (5 of them the management plugin's).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running node, killed (beam included) when dropped.
#[derive(Debug)]
pub struct RabbitMq {
    dir: TempDir,
    log_path: PathBuf,
    node: String,
    amqp_port: u16,
    dist_port: u16,
    management_port: u16,
    child: Option<Child>,
}

impl RabbitMq {
    /// Starts a node on free ports and waits until AMQP and the management
    /// API answer.
    pub async fn start() -> Result<RabbitMq> {
        if !Path::new(SERVER).exists() {
            return Err(Error::BinaryNotFound {
                name: "rabbitmq-server".to_owned(),
                searched: SERVER.to_owned(),
                hint: "scripts/install-deps.sh installs Debian's rabbitmq-server".to_owned(),
            });
        }
        let ServiceDir { dir, log_path } = ServiceDir::create("rabbitmq")?;
        let suffix = free_port();
        let mut node = RabbitMq {
            node: format!("postlaunch-{suffix}@localhost"),
            amqp_port: free_port(),
            dist_port: free_port(),
            management_port: free_port(),
            log_path,
            dir,
            child: None,
        };
        node.write_files()?;
        node.launch().await?;
        Ok(node)
    }

    fn write_files(&self) -> Result<()> {
        let d = self.dir.path();
        let write = |name: &str, text: &str| {
            let path = d.join(name);
            std::fs::write(&path, text)
                .map_err(|err| Error::io(format!("cannot write {}", path.display()), err))
        };
        for sub in ["mnesia", "log"] {
            std::fs::create_dir_all(d.join(sub)).map_err(|err| {
                Error::io(format!("cannot create {}", d.join(sub).display()), err)
            })?;
        }
        let cookie: String = format!("postlaunch{}{}", self.amqp_port, std::process::id());
        write(".erlang.cookie", &cookie)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join(".erlang.cookie"), std::fs::Permissions::from_mode(0o400))
            .map_err(|err| Error::io("cannot restrict the Erlang cookie", err))?;
        write("enabled_plugins", "[rabbitmq_management].\n")?;
        write(
            "rabbitmq.conf",
            &format!(
                "listeners.tcp.1 = 127.0.0.1:{}\nmanagement.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {}\n",
                self.amqp_port, self.management_port
            ),
        )?;
        // Our own env file: the system's sets NODENAME=rabbit@localhost.
        write(
            "rabbitmq-env.conf",
            "SERVER_ADDITIONAL_ERL_ARGS=\"-kernel inet_dist_use_interface {127,0,0,1}\"\n",
        )?;
        if unix_user::is_root() {
            for path in [
                d.to_path_buf(),
                d.join("mnesia"),
                d.join("log"),
                d.join(".erlang.cookie"),
                d.join("enabled_plugins"),
                d.join("rabbitmq.conf"),
                d.join("rabbitmq-env.conf"),
                self.log_path.clone(),
            ] {
                unix_user::chown_to(&path, USER)?;
            }
        }
        Ok(())
    }

    async fn launch(&mut self) -> Result<()> {
        let d = self.dir.path();
        let mut cmd = if unix_user::is_root() {
            let mut cmd = Command::new("setpriv");
            cmd.args(["--reuid", USER, "--regid", USER, "--init-groups", SERVER]);
            cmd
        } else {
            Command::new(SERVER)
        };
        let (stdout, stderr) = ServiceDir::log_stdio_of(&self.log_path)?;
        // A group of its own, so a kill reaches beam and its helpers too.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.current_dir(d)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C.UTF-8")
            .env("HOME", d)
            .env("RABBITMQ_CONF_ENV_FILE", d.join("rabbitmq-env.conf"))
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", d.join("advanced.config"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .stdin(std::process::Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let mut child =
            cmd.spawn().map_err(|err| Error::io(format!("cannot start {SERVER}"), err))?;
        let ready = async {
            wait_for_tcp(format!("127.0.0.1:{}", self.amqp_port), START_TIMEOUT).await?;
            self.wait_for_management().await
        };
        let outcome = tokio::select! {
            ready = ready => ready,
            exited = wait_for_exit(&mut child) => Err(self.failed(format!("rabbitmq-server exited while starting ({exited})"))),
        };
        match outcome {
            Ok(()) => {
                self.child = Some(child);
                Ok(())
            }
            Err(err) => {
                self.child = Some(child);
                self.kill_now();
                Err(err)
            }
        }
    }

    async fn wait_for_management(&self) -> Result<()> {
        let client = reqwest::Client::new();
        let url = format!("{}/api/overview", self.management_url());
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            let answered = client.get(&url).basic_auth("guest", Some("guest")).send().await;
            if answered.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(
                    self.failed(format!("{url} did not answer 200 within {START_TIMEOUT:?}"))
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn failed(&self, what: String) -> Error {
        Error::ProcessFailed {
            what,
            exit_code: None,
            log_tail: crate::error::tail_of_file(&self.log_path, 30),
            log_path: Some(self.log_path.clone()),
            hint: format!("the node's own log is under {}", self.dir.path().join("log").display()),
        }
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }

    /// The AMQP port.
    pub fn amqp_port(&self) -> u16 {
        self.amqp_port
    }

    /// `http://127.0.0.1:PORT` of the management API (guest/guest).
    pub fn management_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.management_port)
    }

    /// The Erlang node name.
    pub fn node_name(&self) -> &str {
        &self.node
    }

    /// Where the script's output goes (the node's own log is under `log/`).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Whether the node's process is running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Stops the node gracefully (SIGTERM, which the script forwards to
    /// beam), waiting for it to exit; kills it after 30 s.
    pub async fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        signal(child.id(), rustix::process::Signal::TERM);
        let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
        loop {
            if child.try_wait().ok().flatten().is_some() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                self.child = Some(child);
                self.kill_now();
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the node (SIGKILL to beam and the script), like a crash.
    pub async fn kill(&mut self) -> Result<()> {
        self.kill_now();
        Ok(())
    }

    /// Starts the node again on the same ports and data directory (durable
    /// queues and persistent messages survive).
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.launch().await
    }

    /// SIGKILL to the node's process group: the script, beam and beam's
    /// helpers (`erl_child_setup` inherits the listening sockets, so the port
    /// would still accept connections while it lives); then waits for the
    /// group to be gone.
    fn kill_now(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let group = i32::try_from(child.id()).ok().and_then(rustix::process::Pid::from_raw);
        if let Some(group) = group {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = child.kill();
        let _ = child.wait();
        if let Some(group) = group {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while rustix::process::test_kill_process_group(group).is_ok()
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        self.kill_now();
    }
}

fn signal(pid: u32, signal: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

async fn wait_for_exit(child: &mut Child) -> String {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.to_string(),
            Ok(None) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(err) => return err.to_string(),
        }
    }
}
