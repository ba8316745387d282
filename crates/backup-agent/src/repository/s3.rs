//! A repository in an S3 bucket through `aws-sdk-s3`: credentials from the
//! standard AWS chain, path-style addressing for S3-compatible endpoints,
//! multipart uploads with a few parts in flight.
//!
//! An upload survives an outage of the store: a part that fails for a
//! transient reason (connection refused or reset, timeout, 5xx, throttling)
//! is kept in memory and sent again with exponential backoff until it is
//! accepted or the outage budget runs out ([`S3Options::outage_budget`],
//! default 5 minutes). The parts already accepted stay in the multipart
//! upload, so the upload resumes where it stopped; the source stream just
//! waits meanwhile (backpressure), and nothing is restarted.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, ServerSideEncryption, StorageClass,
};
use tokio::task::JoinSet;

use super::{IncompleteUpload, ObjectInfo, ObjectReader};
use crate::error::{AgentError, Result};

/// Parts uploaded concurrently by one [`S3Upload`].
const PARTS_IN_FLIGHT: usize = 3;

/// S3 settings besides the bucket and prefix.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// Endpoint of an S3-compatible store, e.g. `http://127.0.0.1:9000`; AWS when `None`.
    pub endpoint: Option<String>,
    /// Region; from the AWS chain when `None`, else `us-east-1`.
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`); forced on with a custom endpoint.
    pub path_style: bool,
    /// Storage class of new objects, e.g. `STANDARD_IA`.
    pub storage_class: Option<String>,
    /// Server-side encryption of new objects: `AES256` or `aws:kms`.
    pub server_side_encryption: Option<String>,
    /// Explicit credentials (for programs embedding the agent); `None` = the
    /// standard AWS chain. Their `Debug` output hides the secret.
    pub credentials: Option<aws_sdk_s3::config::Credentials>,
    /// How long a part upload keeps retrying through an outage of the store;
    /// `None` = [`DEFAULT_OUTAGE_BUDGET`].
    pub outage_budget: Option<Duration>,
}

/// Default of [`S3Options::outage_budget`].
pub const DEFAULT_OUTAGE_BUDGET: Duration = Duration::from_secs(300);

/// A bucket and prefix holding backups.
#[derive(Debug, Clone)]
pub struct S3Repository {
    client: Client,
    bucket: String,
    prefix: String,
    endpoint: String,
    options: S3Options,
    pub(super) key: Option<crate::crypt::EncryptionKey>,
}

impl S3Repository {
    pub(super) async fn connect(
        bucket: &str,
        prefix: &str,
        options: &S3Options,
    ) -> Result<S3Repository> {
        let region = match &options.region {
            Some(region) => RegionProviderChain::first_try(Region::new(region.clone())),
            None => RegionProviderChain::default_provider().or_else(Region::new("us-east-1")),
        };
        let shared = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(600))
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .load()
            .await;
        let mut config = aws_sdk_s3::config::Builder::from(&shared)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired);
        if let Some(credentials) = &options.credentials {
            config = config.credentials_provider(credentials.clone());
        }
        if let Some(endpoint) = &options.endpoint {
            config = config.endpoint_url(endpoint).force_path_style(true);
        } else if options.path_style {
            config = config.force_path_style(true);
        }
        Ok(S3Repository {
            client: Client::from_conf(config.build()),
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            endpoint: options.endpoint.clone().unwrap_or_else(|| "AWS S3".to_owned()),
            options: options.clone(),
            key: None,
        })
    }

    pub(super) fn describe(&self) -> String {
        let base = if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        };
        match &self.options.endpoint {
            Some(endpoint) => format!("{base} at {endpoint}"),
            None => base,
        }
    }

    fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() { key.to_owned() } else { format!("{}/{key}", self.prefix) }
    }

    fn relative_key(&self, full: &str) -> String {
        if self.prefix.is_empty() {
            full.to_owned()
        } else {
            full.strip_prefix(&format!("{}/", self.prefix)).unwrap_or(full).to_owned()
        }
    }

    /// Turns an SDK error into one that says what to do.
    fn classify<E>(
        &self,
        what: &str,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> AgentError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().map(str::to_owned);
        let location = self.describe();
        let message = match (&err, code.as_deref(), status) {
            (SdkError::DispatchFailure(_) | SdkError::TimeoutError(_), _, _) => format!(
                "{what}: cannot reach the S3 endpoint {} ({}): is the server up and --s3-endpoint right?",
                self.endpoint,
                DisplayErrorContext(&err)
            ),
            (_, Some("NoSuchBucket"), _) | (_, _, Some(404)) if what.starts_with("checking") => {
                format!(
                    "{what}: bucket {:?} does not exist: create it (aws s3 mb s3://{}) or fix --repo",
                    self.bucket, self.bucket
                )
            }
            (_, Some("NoSuchBucket"), _) => format!(
                "{what}: bucket {:?} does not exist: create it (aws s3 mb s3://{}) or fix --repo",
                self.bucket, self.bucket
            ),
            (_, Some("NoSuchKey"), _) => {
                return AgentError::NotFound(format!("{what} in {location}"));
            }
            (_, Some("InvalidObjectState"), _) => format!(
                "{what}: InvalidObjectState: the object is in an archive storage class (a lifecycle rule?) and must be restored before it can be read"
            ),
            (
                _,
                Some(
                    "InvalidAccessKeyId"
                    | "SignatureDoesNotMatch"
                    | "AccessDenied"
                    | "ExpiredToken"
                    | "InvalidToken",
                ),
                _,
            )
            | (_, _, Some(401 | 403)) => format!(
                "{what}: the S3 credentials were rejected ({}): check AWS_ACCESS_KEY_ID / AWS_PROFILE / the instance role and the bucket policy (keys are never printed)",
                code.as_deref().unwrap_or("HTTP 403")
            ),
            (_, Some(code), _) => {
                format!("{what}: {code}: {}", err.message().unwrap_or("no message"))
            }
            _ if matches!(err, SdkError::ConstructionFailure(_)) => format!(
                "{what}: cannot build the request ({}): are AWS credentials configured (env, ~/.aws/credentials, instance role)?",
                DisplayErrorContext(&err)
            ),
            _ => format!("{what}: {}", DisplayErrorContext(&err)),
        };
        AgentError::Repository { location, message }
    }

    pub(super) async fn check_reachable(&self) -> Result<()> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.classify("checking the bucket", e))
    }

    pub(super) async fn put_bytes(&self, key: &str, data: Vec<u8>) -> Result<()> {
        let full = self.full_key(key);
        let mut request =
            self.client.put_object().bucket(&self.bucket).key(&full).body(ByteStream::from(data));
        if let Some(class) = &self.options.storage_class {
            request = request.storage_class(StorageClass::from(class.as_str()));
        }
        if let Some(sse) = &self.options.server_side_encryption {
            request = request.server_side_encryption(ServerSideEncryption::from(sse.as_str()));
        }
        request.send().await.map(|_| ()).map_err(|e| self.classify(&format!("writing {key}"), e))
    }

    pub(super) fn begin_upload(&self, key: &str) -> S3Upload {
        S3Upload {
            repo: self.clone(),
            key: key.to_owned(),
            upload_id: None,
            pending: None,
            next_part: 1,
            in_flight: JoinSet::new(),
            parts: Vec::new(),
        }
    }

    pub(super) async fn get_reader(&self, key: &str) -> Result<ObjectReader> {
        let response = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.classify(&format!("reading {key}"), e))?;
        Ok(Box::pin(response.body.into_async_read()))
    }

    pub(super) async fn exists(&self, key: &str) -> Result<bool> {
        match self.client.head_object().bucket(&self.bucket).key(self.full_key(key)).send().await {
            Ok(_) => Ok(true),
            Err(err) if err.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(false),
            Err(err) => Err(self.classify(&format!("checking {key}"), err)),
        }
    }

    pub(super) async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let response = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(self.full_key(prefix))
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.classify(&format!("listing {prefix}"), e))?;
            for object in response.contents() {
                let Some(key) = object.key() else { continue };
                out.push(ObjectInfo {
                    key: self.relative_key(key),
                    size: object.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                    modified_ms: object
                        .last_modified()
                        .and_then(|t| t.to_millis().ok())
                        .unwrap_or(0),
                });
            }
            match response.next_continuation_token() {
                Some(next) if response.is_truncated() == Some(true) => {
                    token = Some(next.to_owned())
                }
                _ => return Ok(out),
            }
        }
    }

    pub(super) async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.classify(&format!("deleting {key}"), e))
    }

    pub(super) async fn incomplete_uploads(&self, prefix: &str) -> Result<Vec<IncompleteUpload>> {
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let response = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(self.full_key(prefix))
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| self.classify("listing incomplete multipart uploads", e))?;
            for upload in response.uploads() {
                if let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) {
                    out.push(IncompleteUpload {
                        key: self.relative_key(key),
                        upload_id: id.to_owned(),
                    });
                }
            }
            if response.is_truncated() != Some(true) {
                return Ok(out);
            }
            key_marker = response.next_key_marker().map(str::to_owned);
            id_marker = response.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() {
                return Ok(out);
            }
        }
    }

    pub(super) async fn abort_incomplete(&self, upload: &IncompleteUpload) -> Result<()> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full_key(&upload.key))
            .upload_id(&upload.upload_id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.classify(&format!("aborting the upload of {}", upload.key), e))
    }
}

/// A multipart upload; small objects (one part) become a single PutObject.
#[derive(Debug)]
pub struct S3Upload {
    repo: S3Repository,
    key: String,
    upload_id: Option<String>,
    /// The first part, held back until a second one shows the object is large.
    pending: Option<Vec<u8>>,
    next_part: i32,
    in_flight: JoinSet<Result<CompletedPart>>,
    parts: Vec<CompletedPart>,
}

impl S3Upload {
    pub(super) async fn put_part(&mut self, part: Vec<u8>) -> Result<()> {
        if self.upload_id.is_none() {
            let Some(first) = self.pending.take() else {
                self.pending = Some(part);
                return Ok(());
            };
            let mut request = self
                .repo
                .client
                .create_multipart_upload()
                .bucket(&self.repo.bucket)
                .key(self.repo.full_key(&self.key));
            if let Some(class) = &self.repo.options.storage_class {
                request = request.storage_class(StorageClass::from(class.as_str()));
            }
            if let Some(sse) = &self.repo.options.server_side_encryption {
                request = request.server_side_encryption(ServerSideEncryption::from(sse.as_str()));
            }
            let created = request.send().await.map_err(|e| {
                self.repo.classify(&format!("starting the upload of {}", self.key), e)
            })?;
            let id = created.upload_id().ok_or_else(|| {
                self.repo.classify_text(format!(
                    "starting the upload of {}: no upload id returned",
                    self.key
                ))
            })?;
            self.upload_id = Some(id.to_owned());
            self.spawn_part(first).await?;
        }
        self.spawn_part(part).await
    }

    async fn spawn_part(&mut self, body: Vec<u8>) -> Result<()> {
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            self.join_one().await?;
        }
        let number = self.next_part;
        self.next_part += 1;
        let repo = self.repo.clone();
        let key = self.key.clone();
        let upload_id = self.upload_id.clone().unwrap_or_default();
        self.in_flight.spawn(async move {
            let budget = repo.options.outage_budget.unwrap_or(DEFAULT_OUTAGE_BUDGET);
            let started = std::time::Instant::now();
            let mut wait = Duration::from_millis(500);
            loop {
                let sent = repo
                    .client
                    .upload_part()
                    .bucket(&repo.bucket)
                    .key(repo.full_key(&key))
                    .upload_id(&upload_id)
                    .part_number(number)
                    .body(ByteStream::from(body.clone()))
                    .send()
                    .await;
                match sent {
                    Ok(response) => {
                        return Ok(CompletedPart::builder()
                            .part_number(number)
                            .set_e_tag(response.e_tag().map(str::to_owned))
                            .build());
                    }
                    Err(e) if transient(&e) && started.elapsed() + wait < budget => {
                        tracing::warn!(
                            part = number,
                            key,
                            error = %DisplayErrorContext(&e),
                            retry_in = ?wait,
                            "part upload failed; the upload resumes when the store answers again"
                        );
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(15));
                    }
                    Err(e) => {
                        return Err(repo.classify(&format!("uploading part {number} of {key}"), e));
                    }
                }
            }
        });
        Ok(())
    }

    async fn join_one(&mut self) -> Result<()> {
        match self.in_flight.join_next().await {
            Some(Ok(Ok(part))) => {
                self.parts.push(part);
                Ok(())
            }
            Some(Ok(Err(err))) => Err(err),
            Some(Err(join)) => {
                Err(self.repo.classify_text(format!("a part upload task failed: {join}")))
            }
            None => Ok(()),
        }
    }

    pub(super) async fn complete(mut self) -> Result<()> {
        let Some(upload_id) = self.upload_id.clone() else {
            return self.repo.put_bytes(&self.key, self.pending.take().unwrap_or_default()).await;
        };
        while !self.in_flight.is_empty() {
            self.join_one().await?;
        }
        let mut parts = std::mem::take(&mut self.parts);
        parts.sort_by_key(|p| p.part_number());
        let count = parts.len();
        let completed = self
            .repo
            .client
            .complete_multipart_upload()
            .bucket(&self.repo.bucket)
            .key(self.repo.full_key(&self.key))
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await;
        match completed {
            Ok(_) => Ok(()),
            // Some S3-compatible servers (moto 5.2) answer 200 with a body the
            // SDK cannot parse: the object exists if HEAD shows a multipart
            // ETag with our part count.
            Err(err) if err.raw_response().is_some_and(|r| r.status().as_u16() == 200) => {
                let head = self
                    .repo
                    .client
                    .head_object()
                    .bucket(&self.repo.bucket)
                    .key(self.repo.full_key(&self.key))
                    .send()
                    .await
                    .map_err(|e| {
                        self.repo
                            .classify(&format!("checking the completed upload of {}", self.key), e)
                    })?;
                if head.e_tag().is_some_and(|t| t.trim_matches('"').ends_with(&format!("-{count}")))
                {
                    tracing::debug!(
                        "completed {} despite an unparseable CompleteMultipartUpload answer",
                        self.key
                    );
                    Ok(())
                } else {
                    Err(self.repo.classify(&format!("completing the upload of {}", self.key), err))
                }
            }
            Err(err) => {
                Err(self.repo.classify(&format!("completing the upload of {}", self.key), err))
            }
        }
    }

    pub(super) async fn abort(mut self) -> Result<()> {
        self.in_flight.abort_all();
        if let Some(upload_id) = self.upload_id.take() {
            let upload = IncompleteUpload { key: self.key.clone(), upload_id };
            self.repo.abort_incomplete(&upload).await?;
        }
        Ok(())
    }
}

impl S3Repository {
    fn classify_text(&self, message: String) -> AgentError {
        AgentError::Repository { location: self.describe(), message }
    }
}

/// Whether an S3 failure may pass: the store unreachable or overloaded, not
/// a refusal (credentials, missing bucket, bad request).
fn transient<E: ProvideErrorMetadata>(
    err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> bool {
    match err {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            status >= 500
                || status == 429
                || matches!(
                    service.err().code(),
                    Some("SlowDown" | "RequestTimeout" | "InternalError" | "ServiceUnavailable")
                )
        }
        _ => false,
    }
}
