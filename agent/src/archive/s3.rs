//! The S3 backend (aws-sdk-s3 over the ring rustls client; no aws-lc, no OpenSSL). Works with
//! AWS and with S3 clones (MinIO, Ceph, moto) through a custom endpoint, path-style addressing
//! and, for clones that reject the SDK's default integrity checksums, `checksum: when_required`.
//!
//! Credentials are static (configuration) or the standard AWS chain (environment, shared
//! files, web identity for EKS IRSA, instance metadata). Must not interpret object contents.

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use futures::FutureExt;
use futures::future::BoxFuture;

use super::store::{Download, Entry, Put, Store, StoreError, Upload};

/// How to reach the bucket.
#[derive(Clone, Default)]
pub struct S3Settings {
    /// Bucket name.
    pub bucket: String,
    /// Region the requests are signed for.
    pub region: String,
    /// Custom endpoint URL (MinIO, Ceph, moto); empty for AWS.
    pub endpoint: String,
    /// `http://host/bucket/key` instead of `http://bucket.host/key`.
    pub path_style: bool,
    /// Static access key; `None` for the standard credential chain.
    pub access_key_id: Option<String>,
    /// Static secret key (from the file or environment only).
    pub secret_access_key: Option<String>,
    /// Send checksums only where S3 requires them (for clones that reject the SDK's defaults).
    pub checksum_when_required: bool,
    /// Server-side encryption (`AES256`, `aws:kms`); empty for none.
    pub sse: String,
    /// How long one operation may take, retries included (zero: 60 s).
    pub timeout: Duration,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<redacted>"))
            .field("checksum_when_required", &self.checksum_when_required)
            .field("sse", &self.sse)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A store in an S3 bucket, under an optional prefix.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    /// Prepended to every key (empty or ending in `/`).
    root: String,
    sse: String,
}

fn classify<E>(what: &str, key: &str, e: SdkError<E, HttpResponse>) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
{
    // A 4xx answer (bad credentials, no such bucket) is final, except timeouts and throttling.
    let status = e.raw_response().map(|r| r.status().as_u16());
    let permanent = status.is_some_and(|s| (400..500).contains(&s) && s != 408 && s != 429);
    let msg = format!("S3 {what} {key}: {}", DisplayErrorContext(&e));
    if permanent { StoreError::Permanent(msg) } else { StoreError::Unavailable(msg) }
}

impl S3Store {
    /// Builds the client. Does not contact S3.
    pub async fn new(s: &S3Settings, prefix: &str) -> S3Store {
        use aws_smithy_http_client::tls;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
            .build_https();
        let total = if s.timeout.is_zero() { Duration::from_secs(60) } else { s.timeout };
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(3).min(total))
            .operation_attempt_timeout(total / 2)
            .operation_timeout(total)
            .build();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(timeouts)
            .region(aws_config::Region::new(s.region.clone()));
        if let (Some(id), Some(secret)) = (&s.access_key_id, &s.secret_access_key) {
            loader = loader.credentials_provider(aws_credential_types::Credentials::new(
                id.clone(),
                secret.clone(),
                None,
                None,
                "pgquorum-configuration",
            ));
        }
        if !s.endpoint.is_empty() {
            loader = loader.endpoint_url(&s.endpoint);
        }
        let sdk = loader.load().await;
        let mut conf = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(s.path_style);
        if s.checksum_when_required {
            use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
            conf = conf
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        let prefix = prefix.trim_matches('/');
        S3Store {
            client: Client::from_conf(conf.build()),
            bucket: s.bucket.clone(),
            root: if prefix.is_empty() { String::new() } else { format!("{prefix}/") },
            sse: s.sse.clone(),
        }
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.root)
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        let full = self.full(key);
        match self.client.head_object().bucket(&self.bucket).key(&full).send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|se| se.is_not_found()) => Ok(false),
            Err(e) => Err(classify("HEAD", &full, e)),
        }
    }

    async fn put_inner(&self, key: &str, bytes: Vec<u8>, if_absent: bool) -> Result<Put, StoreError> {
        let full = self.full(key);
        let mut req = self.client.put_object().bucket(&self.bucket).key(&full).body(ByteStream::from(bytes));
        if if_absent {
            req = req.if_none_match("*");
        }
        if !self.sse.is_empty() {
            req = req.server_side_encryption(self.sse.as_str().into());
        }
        match req.send().await {
            Ok(_) => Ok(Put::Stored),
            Err(SdkError::ServiceError(se)) if if_absent && se.raw().status().as_u16() == 412 => {
                Ok(Put::Exists)
            }
            Err(e) => Err(classify("PUT", &full, e)),
        }
    }
}

impl Store for S3Store {
    fn put_new<'a>(&'a self, key: &'a str, bytes: Vec<u8>) -> BoxFuture<'a, Result<Put, StoreError>> {
        async move {
            // The conditional PUT is the guard where S3 supports it; the HEAD where it does not.
            if self.exists(key).await? {
                return Ok(Put::Exists);
            }
            self.put_inner(key, bytes, true).await
        }
        .boxed()
    }

    fn put<'a>(&'a self, key: &'a str, bytes: Vec<u8>) -> BoxFuture<'a, Result<(), StoreError>> {
        async move { self.put_inner(key, bytes, false).await.map(|_| ()) }.boxed()
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        async move {
            let full = self.full(key);
            let out = match self.client.get_object().bucket(&self.bucket).key(&full).send().await {
                Ok(o) => o,
                Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_key()) => return Ok(None),
                Err(e) => return Err(classify("GET", &full, e)),
            };
            let body = out
                .body
                .collect()
                .await
                .map_err(|e| StoreError::Unavailable(format!("S3 GET {full}: reading the body: {e}")))?;
            Ok(Some(body.into_bytes().to_vec()))
        }
        .boxed()
    }

    fn get_head<'a>(&'a self, key: &'a str, n: usize) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        async move {
            use aws_sdk_s3::config::ResponseChecksumValidation;
            let full = self.full(key);
            // A ranged GET: S3 sends at most these bytes (all of a shorter object). Checksums
            // are not validated on it: some S3-compatible servers send the whole object's
            // checksum with a part of it, which would fail every read.
            let range = format!("bytes=0-{}", n.max(1) - 1);
            let no_validation = aws_sdk_s3::config::Builder::default()
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
            let req = self.client.get_object().bucket(&self.bucket).key(&full).range(range);
            let mut out = match req.customize().config_override(no_validation).send().await {
                Ok(o) => o,
                Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_key()) => return Ok(None),
                // An empty object has no first byte to send: S3 answers 416.
                Err(SdkError::ServiceError(se)) if se.raw().status().as_u16() == 416 => {
                    return Ok(Some(Vec::new()));
                }
                Err(e) => return Err(classify("GET (range)", &full, e)),
            };
            // A server that ignores the range sends the whole object: stop reading after n bytes.
            let mut head = Vec::with_capacity(n);
            while head.len() < n {
                let Some(chunk) = out.body.next().await else { break };
                let chunk = chunk
                    .map_err(|e| StoreError::Unavailable(format!("S3 GET {full}: reading the body: {e}")))?;
                head.extend_from_slice(&chunk[..chunk.len().min(n - head.len())]);
            }
            Ok(Some(head))
        }
        .boxed()
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<Entry>, StoreError>> {
        async move {
            let full = self.full(prefix);
            let mut out = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let mut req = self.client.list_objects_v2().bucket(&self.bucket).prefix(&full);
                if let Some(t) = token.take() {
                    req = req.continuation_token(t);
                }
                let page = req.send().await.map_err(|e| classify("LIST", &full, e))?;
                for o in page.contents() {
                    let Some(k) = o.key().and_then(|k| k.strip_prefix(&self.root)) else { continue };
                    out.push(Entry { key: k.to_string(), size: o.size().unwrap_or(0).max(0) as u64 });
                }
                match page.next_continuation_token() {
                    Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                    _ => break,
                }
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        }
        .boxed()
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let full = self.full(key);
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(&full)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify("DELETE", &full, e))
        }
        .boxed()
    }

    fn upload<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Box<dyn Upload>, StoreError>> {
        async move {
            let full = self.full(key);
            let mut req = self.client.create_multipart_upload().bucket(&self.bucket).key(&full);
            if !self.sse.is_empty() {
                req = req.server_side_encryption(self.sse.as_str().into());
            }
            let out = req.send().await.map_err(|e| classify("CreateMultipartUpload", &full, e))?;
            let id = out.upload_id().ok_or_else(|| {
                StoreError::Unavailable(format!("S3 CreateMultipartUpload {full}: no upload id"))
            })?;
            Ok(Box::new(S3Upload {
                client: self.client.clone(),
                bucket: self.bucket.clone(),
                key: full,
                id: id.to_string(),
                parts: Vec::new(),
            }) as Box<dyn Upload>)
        }
        .boxed()
    }

    fn download<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Box<dyn Download>>, StoreError>> {
        async move {
            let full = self.full(key);
            match self.client.get_object().bucket(&self.bucket).key(&full).send().await {
                Ok(o) => Ok(Some(Box::new(S3Download { body: o.body, key: full }) as Box<dyn Download>)),
                Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_key()) => Ok(None),
                Err(e) => Err(classify("GET", &full, e)),
            }
        }
        .boxed()
    }

    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.root)
    }
}

/// A multipart upload in progress.
struct S3Upload {
    client: Client,
    bucket: String,
    key: String,
    id: String,
    parts: Vec<aws_sdk_s3::types::CompletedPart>,
}

impl Upload for S3Upload {
    fn part(&mut self, bytes: Vec<u8>) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            let n = self.parts.len() as i32 + 1;
            let out = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(&self.id)
                .part_number(n)
                .body(ByteStream::from(bytes))
                .send()
                .await
                .map_err(|e| classify("UploadPart", &self.key, e))?;
            self.parts.push(
                aws_sdk_s3::types::CompletedPart::builder()
                    .part_number(n)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .build(),
            );
            Ok(())
        }
        .boxed()
    }

    fn finish(mut self: Box<Self>) -> BoxFuture<'static, Result<(), StoreError>> {
        async move {
            if self.parts.is_empty() {
                self.part(Vec::new()).await?;
            }
            let done = aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .set_parts(Some(std::mem::take(&mut self.parts)))
                .build();
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(&self.id)
                .multipart_upload(done)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify("CompleteMultipartUpload", &self.key, e))
        }
        .boxed()
    }

    fn abort(self: Box<Self>) -> BoxFuture<'static, ()> {
        async move {
            let res = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(&self.id)
                .send()
                .await;
            if let Err(e) = res {
                tracing::warn!("S3 AbortMultipartUpload {}: {}", self.key, DisplayErrorContext(&e));
            }
        }
        .boxed()
    }
}

/// An object body being read.
struct S3Download {
    body: ByteStream,
    key: String,
}

impl Download for S3Download {
    fn next(&mut self) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>> {
        async move {
            match self.body.next().await {
                None => Ok(None),
                Some(Ok(b)) => Ok(Some(b.to_vec())),
                Some(Err(e)) => {
                    Err(StoreError::Unavailable(format!("S3 GET {}: reading the body: {e}", self.key)))
                }
            }
        }
        .boxed()
    }
}
