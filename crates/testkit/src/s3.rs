//! A real S3-compatible server: moto (PyPI `moto[server]`, the most faithful
//! local S3: multipart uploads, pagination, versioning) on a free loopback
//! port, killed on drop.
//!
//! Two modes:
//! - [`S3Server::start`] accepts any credentials, like most local S3 servers;
//! - [`S3Server::start_with_auth`] enforces signatures through moto's IAM: only
//!   the generated [`S3Server::credentials`] are accepted, so a test can show
//!   what a tool does with wrong keys (`InvalidAccessKeyId`,
//!   `SignatureDoesNotMatch`).
//!
//! Set-up requests (bucket creation, IAM users) are sent before enforcement
//! starts, with a placeholder SigV4 `Authorization` header: moto routes a
//! request to a service by the header's credential scope and, while
//! enforcement is off, does not check the signature.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::error::tail_of_file;
use crate::ports::{free_port, http_client, percent_encode, wait_for_tcp};
use crate::service_dir::ServiceDir;
use crate::{Error, Result, binaries};

/// The access key of a server started with [`S3Server::start`]: any key works
/// there, this one is only a placeholder that is never a real key.
pub const OPEN_ACCESS_KEY: &str = "testing";
/// The secret of a server started with [`S3Server::start`].
pub const OPEN_SECRET_KEY: &str = "testing";
/// The region every request is signed for.
pub const REGION: &str = "us-east-1";

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// An access key pair for the server.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Credentials {
    /// Never prints the secret, even in a failing test's output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"***")
            .finish()
    }
}

impl S3Credentials {
    /// The environment a child process reads them from (AWS's standard chain).
    pub fn env(&self) -> [(&'static str, String); 3] {
        [
            ("AWS_ACCESS_KEY_ID", self.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key.clone()),
            ("AWS_REGION", REGION.to_owned()),
        ]
    }
}

/// A running moto server, killed when dropped.
#[derive(Debug)]
pub struct S3Server {
    child: Child,
    port: u16,
    credentials: S3Credentials,
    log_path: PathBuf,
    http: reqwest::Client,
    // Last field: removed after the process is killed.
    _dir: TempDir,
}

impl S3Server {
    /// Starts `moto_server` on 127.0.0.1 accepting any credentials.
    pub async fn start() -> Result<S3Server> {
        Self::spawn().await
    }

    /// Starts `moto_server`, creates `buckets`, an IAM user allowed `s3:*` and
    /// its access key, then turns signature checking on: from then on only
    /// [`credentials`](Self::credentials) are accepted.
    pub async fn start_with_auth(buckets: &[&str]) -> Result<S3Server> {
        let mut server = Self::spawn().await?;
        for bucket in buckets {
            server.create_bucket(bucket).await?;
        }
        let user = "postlaunch-test";
        server.iam(&[("Action", "CreateUser"), ("UserName", user)]).await?;
        let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;
        server
            .iam(&[
                ("Action", "PutUserPolicy"),
                ("UserName", user),
                ("PolicyName", "s3-all"),
                ("PolicyDocument", policy),
            ])
            .await?;
        let body = server.iam(&[("Action", "CreateAccessKey"), ("UserName", user)]).await?;
        let field = |name: &str| {
            xml_field(&body, name).ok_or_else(|| Error::Unexpected {
                what: "moto CreateAccessKey".to_owned(),
                detail: format!("no <{name}> in the answer: {body}"),
            })
        };
        server.credentials = S3Credentials {
            access_key_id: field("AccessKeyId")?,
            secret_access_key: field("SecretAccessKey")?,
        };
        // Enforce from the next request on (moto's /moto-api/reset-auth takes
        // the number of requests still let through unchecked).
        let url = format!("{}/moto-api/reset-auth", server.endpoint());
        let response = server
            .http
            .post(&url)
            .header("content-type", "text/plain")
            .body("0")
            .send()
            .await
            .map_err(|source| Error::Http { what: format!("POST {url}"), source })?;
        if !response.status().is_success() {
            return Err(Error::Unexpected {
                what: format!("POST {url}"),
                detail: format!("HTTP {}: is moto_server older than 5.0?", response.status()),
            });
        }
        Ok(server)
    }

    /// Runs moto through [`PATCHED_LAUNCHER`] (its fixes are harmless
    /// without auth), once `moto_server` is known to be installed.
    async fn spawn() -> Result<S3Server> {
        binaries::find("moto_server").map_err(|_| Error::BinaryNotFound {
            name: "moto_server".to_owned(),
            searched: "on PATH".to_owned(),
            hint: "pip install 'moto[server]' (scripts/install-deps.sh does)".to_owned(),
        })?;
        let mut command = Command::new("python3");
        command.args(["-c", PATCHED_LAUNCHER]);
        let service = ServiceDir::create("moto")?;
        let (stdout, stderr) = service.log_stdio()?;
        let port = free_port();
        let child = command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(service.dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| {
                Error::io("cannot start moto (python3 -c PATCHED_LAUNCHER)".to_owned(), err)
            })?;
        let mut server = S3Server {
            child,
            port,
            credentials: S3Credentials {
                access_key_id: OPEN_ACCESS_KEY.to_owned(),
                secret_access_key: OPEN_SECRET_KEY.to_owned(),
            },
            log_path: service.log_path,
            http: http_client()?,
            _dir: service.dir,
        };
        if let Err(err) = wait_for_tcp(format!("127.0.0.1:{port}"), READY_TIMEOUT).await {
            let exit_code = server.child.try_wait().ok().flatten().and_then(|s| s.code());
            return Err(Error::ProcessFailed {
                what: format!("moto_server on 127.0.0.1:{port}"),
                exit_code,
                log_tail: tail_of_file(&server.log_path, 20),
                log_path: None,
                hint: format!("it did not listen ({err})"),
            });
        }
        Ok(server)
    }

    /// `http://127.0.0.1:PORT`, for `--s3-endpoint` / `endpoint_url`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port moto listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Keys the server accepts (for [`start`](Self::start), placeholders).
    pub fn credentials(&self) -> &S3Credentials {
        &self.credentials
    }

    /// moto's log (its request lines and tracebacks).
    pub fn log_path(&self) -> &std::path::Path {
        &self.log_path
    }

    /// Creates `bucket` (`PUT /bucket`). Only before signatures are enforced,
    /// so on a server from [`start_with_auth`](Self::start_with_auth) pass the
    /// buckets there instead.
    pub async fn create_bucket(&self, bucket: &str) -> Result<()> {
        let url = format!("{}/{bucket}", self.endpoint());
        let response = self
            .http
            .put(&url)
            .header("authorization", placeholder_authorization("s3"))
            .send()
            .await
            .map_err(|source| Error::Http { what: format!("PUT {url}"), source })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        Err(Error::Unexpected {
            what: format!("creating bucket {bucket:?} on moto"),
            detail: format!(
                "HTTP {status}: {}; on an authenticated server, pass the bucket to start_with_auth",
                response.text().await.unwrap_or_default()
            ),
        })
    }

    /// Total size in bytes and number of the objects under `prefix` in
    /// `bucket` (ListObjectsV2, every page). Only while signatures are not
    /// enforced.
    pub async fn usage(&self, bucket: &str, prefix: &str) -> Result<(u64, usize)> {
        let (mut bytes, mut objects) = (0u64, 0usize);
        let mut token: Option<String> = None;
        loop {
            let mut url = format!(
                "{}/{bucket}?list-type=2&prefix={}",
                self.endpoint(),
                percent_encode(prefix)
            );
            if let Some(token) = &token {
                url.push_str(&format!("&continuation-token={}", percent_encode(token)));
            }
            let body = self
                .http
                .get(&url)
                .header("authorization", placeholder_authorization("s3"))
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map_err(|source| Error::Http { what: format!("listing {url}"), source })?
                .text()
                .await
                .map_err(|source| Error::Http { what: format!("listing {url}"), source })?;
            for size in xml_fields(&body, "Size") {
                bytes += size.parse::<u64>().unwrap_or(0);
                objects += 1;
            }
            token = xml_field(&body, "NextContinuationToken");
            if xml_field(&body, "IsTruncated").as_deref() != Some("true") || token.is_none() {
                return Ok((bytes, objects));
            }
        }
    }

    /// One IAM query-API call; returns the XML answer.
    async fn iam(&self, params: &[(&str, &str)]) -> Result<String> {
        let form: String = params
            .iter()
            .chain(&[("Version", "2010-05-08")])
            .map(|(k, v)| format!("{k}={}", percent_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let what = format!("moto IAM {}", params.first().map(|p| p.1).unwrap_or("call"));
        let response = self
            .http
            .post(format!("{}/", self.endpoint()))
            .header("authorization", placeholder_authorization("iam"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .map_err(|source| Error::Http { what: what.clone(), source })?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(Error::Unexpected { what, detail: format!("HTTP {status}: {body}") });
        }
        Ok(body)
    }
}

/// Starts moto's server with two fixes (moto 5.2.1). ListParts answers
/// with a `ListPartsResponse` root instead of S3's `ListPartsResult`, which
/// the Rust SDK refuses; it is renamed. And its signature check (with auth on):
/// moto rebuilds the canonical query string from the URL as Flask decoded it,
/// so `prefix=prod%2Fbackups%2F` becomes `prod/backups/` and every signed
/// request with a `/` in a query value fails with SignatureDoesNotMatch, for
/// boto3 as for the Rust SDK. The fix re-encodes each key and value the way
/// SigV4 specifies (RFC 3986, `-_.~` unreserved), which is what clients sign.
const PATCHED_LAUNCHER: &str = r#"
import sys
from urllib.parse import quote, unquote
import botocore.auth

def canonical_query_string_url(self, parts):
    if not parts.query:
        return ""
    pairs = []
    for pair in parts.query.split("&"):
        key, _, value = pair.partition("=")
        pairs.append((quote(unquote(key), safe="-_.~"), quote(unquote(value), safe="-_.~")))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))

botocore.auth.SigV4Auth._canonical_query_string_url = canonical_query_string_url

# moto 5.2.1 answers ListParts with a <ListPartsResponse> root; S3 and every
# SDK use <ListPartsResult> (the Rust SDK refuses the answer).
from moto.s3.responses import S3Response
_list_parts = S3Response.list_parts
def list_parts(self):
    status, headers, body = _list_parts(self)
    if isinstance(body, bytes):
        body = body.replace(b"ListPartsResponse", b"ListPartsResult")
    elif isinstance(body, str):
        body = body.replace("ListPartsResponse", "ListPartsResult")
    return status, headers, body
S3Response.list_parts = list_parts

from moto.server import main
main(sys.argv[1:])
"#;

/// A SigV4-shaped header naming `service`, with no valid signature.
fn placeholder_authorization(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential={OPEN_ACCESS_KEY}/20260101/{REGION}/{service}/aws4_request, SignedHeaders=host, Signature=0"
    )
}

/// The text of the first `<name>` element.
fn xml_field(xml: &str, name: &str) -> Option<String> {
    xml_fields(xml, name).into_iter().next()
}

/// The texts of every `<name>` element (flat elements only, as S3 and IAM send).
fn xml_fields(xml: &str, name: &str) -> Vec<String> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(after[..end].to_owned());
        rest = &after[end + close.len()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_fields_are_read_in_order() {
        let xml = "<R><Contents><Size>3</Size></Contents><Contents><Size>40</Size></Contents><IsTruncated>false</IsTruncated></R>";
        assert_eq!(xml_fields(xml, "Size"), ["3", "40"]);
        assert_eq!(xml_field(xml, "IsTruncated").as_deref(), Some("false"));
        assert_eq!(xml_field(xml, "Missing"), None);
        assert_eq!(xml_fields("<Size>1", "Size"), Vec::<String>::new());
    }

    #[test]
    fn credentials_never_print_the_secret() {
        let c = S3Credentials { access_key_id: "AKIA1".into(), secret_access_key: "s3cr3t".into() };
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }
}
