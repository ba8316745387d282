//! A plain nginx serving a static `index.html` from a temp directory on a
//! free loopback port: a real HTTP server with no `/metrics`, the kind of
//! target a tool must not claim to have measured services on. Also the
//! load-tester bench's target.

use std::path::PathBuf;
use std::time::Duration;

use crate::{Error, Result, binaries};

/// nginx, one worker, access log off. Stops (SIGTERM, then SIGKILL) on drop.
#[derive(Debug)]
pub struct Nginx {
    child: tokio::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx; returns once `/index.html` answers 200.
    pub async fn start() -> Result<Nginx> {
        let nginx = binaries::which("nginx")
            .or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.exists()))
            .ok_or_else(|| Error::BinaryNotFound {
                name: "nginx".to_owned(),
                searched: "on PATH or at /usr/sbin/nginx".to_owned(),
                hint: "run scripts/install-deps.sh (Debian's nginx-light)".to_owned(),
            })?;
        let dir = tempfile::Builder::new()
            .prefix("postlaunch-nginx-")
            .tempdir()
            .map_err(|err| Error::io("cannot create a temporary directory for nginx", err))?;
        let port = crate::free_port();
        let d = dir.path().display();
        std::fs::write(dir.path().join("index.html"), "<html><body>postlaunch</body></html>\n".repeat(10))
            .and_then(|()| {
                std::fs::write(
                    dir.path().join("nginx.conf"),
                    format!(
                        "daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;\n\
                         events {{ worker_connections 4096; }}\n\
                         http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};\n\
                           uwsgi_temp_path {d}; scgi_temp_path {d};\n\
                           server {{ listen 127.0.0.1:{port}; root {d}; }} }}\n"
                    ),
                )
            })
            .map_err(|err| Error::io(format!("cannot write nginx files in {d}"), err))?;
        let child = tokio::process::Command::new(nginx)
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-p")
            .arg(dir.path())
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| Error::io("cannot start nginx", err))?;
        let url = format!("http://127.0.0.1:{port}");
        crate::wait_for_http_ok(&format!("{url}/index.html"), Duration::from_secs(10)).await?;
        Ok(Nginx { child, url, _dir: dir })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Stops an nginx master and its workers: SIGTERM lets the master take its
/// workers down (SIGKILL would orphan them, still holding the port), then
/// SIGKILL if it has not exited within 2 s.
pub fn stop(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        for _ in 0..100 {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = child.start_kill();
}
