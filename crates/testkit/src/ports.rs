//! Free loopback ports, and waiting for something to listen on one.

use std::collections::BTreeSet;
use std::fmt::Display;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;
use std::time::Duration;

use tokio::net::ToSocketAddrs;
use tokio::time::{Instant, sleep};

use crate::{Error, Result};

/// Ports already handed out by this process: binding port 0 twice in a row can
/// return the same port once the first listener is closed, and a test that
/// starts two servers (a primary and a standby) asks twice before either binds.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A TCP port on 127.0.0.1 that was free a moment ago, never the same one
/// twice in this process.
///
/// The port is released before returning, so another process may take it
/// before the caller binds it; servers started on it report that clearly.
///
/// # Panics
///
/// If the loopback interface cannot bind at all, which no test can survive.
pub fn free_port() -> u16 {
    for _ in 0..64 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("cannot bind 127.0.0.1:0: is the loopback interface up?");
        let port = listener.local_addr().expect("a bound listener has a local address").port();
        let mut seen = HANDED_OUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.insert(port) {
            return port;
        }
    }
    panic!("the kernel kept returning ports this process already handed out")
}

/// Waits until `addr` accepts a TCP connection.
pub async fn wait_for_tcp<A>(addr: A, timeout: Duration) -> Result<()>
where
    A: ToSocketAddrs + Display + Clone,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last_error = match tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(addr.clone()),
        )
        .await
        {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(err)) => err.to_string(),
            Err(_) => "connect attempt timed out".to_owned(),
        };
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: format!("a TCP listener on {addr}"),
                after: timeout,
                hint: format!("last attempt: {last_error}; is the server running?"),
            });
        }
        sleep(Duration::from_millis(50)).await;
    }
}

/// Calls `check` every 100 ms until it returns `Ok(value)`, for at most
/// `timeout`. `Err(seen)` means "not yet", with what it saw; the timeout
/// error names `what` and the last thing seen. For tests that wait for a
/// condition instead of sleeping a fixed time.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let seen = match check().await {
            Ok(value) => return Ok(value),
            Err(seen) => seen,
        };
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: what.to_owned(),
                after: timeout,
                hint: format!("last seen: {seen}"),
            });
        }
        sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until a GET of `url` answers with a 2xx status.
pub async fn wait_for_http_ok(url: &str, timeout: Duration) -> Result<()> {
    let client = http_client()?;
    let deadline = Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let attempt = remaining.clamp(Duration::from_millis(100), Duration::from_secs(2));
        let last = match client.get(url).timeout(attempt).send().await {
            Ok(resp) if resp.status().is_success() => return Ok(()),
            Ok(resp) => format!("HTTP {}", resp.status()),
            Err(err) => err.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: format!("HTTP 2xx from {url}"),
                after: timeout,
                hint: format!("last answer: {last}; is the server up and serving that path?"),
            });
        }
        sleep(Duration::from_millis(100)).await;
    }
}

/// The HTTP client testkit uses: plain HTTP, no proxy from the environment
/// (every target is on loopback).
/// Percent-encodes everything but RFC 3986 unreserved characters (query
/// values and form fields of the HTTP APIs testkit talks to).
pub(crate) fn percent_encode(text: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

pub(crate) fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|source| Error::Http { what: "cannot build an HTTP client".to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promql_is_percent_encoded() {
        assert_eq!(percent_encode("up{job=\"a b\"}"), "up%7Bjob%3D%22a%20b%22%7D");
    }
}
