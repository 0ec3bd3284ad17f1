//! S3 and S3-compatible servers (MinIO, s3s) as a store, one bucket per [`S3Storage`].
//!
//! The [`Storage`] trait is blocking and its callers are plain threads, while the AWS SDK is
//! async. Every method therefore `block_on`s a future on one multi-thread tokio runtime owned by
//! [`Stores`](super::Stores) and shared by all buckets. The runtime's worker threads drive the
//! connections; the calling thread drives its own request, so many threads can call at once.
//! Calling from inside an async runtime panics (tokio forbids nested `block_on`), as with
//! `reqwest::blocking`.
//!
//! Retries: the SDK's *standard* retry mode retries throttling (`SlowDown`, 503), 5xx, timeouts
//! and connection errors with exponential backoff and full jitter, up to `max_attempts` tries
//! per request. The SDK does not retry an error that happens while a response body streams in,
//! nor the 409 `ConditionalRequestConflict` of a conditional write; this module retries those
//! itself, with the same attempt budget. Conditional writes (`put_if_absent`) are retried here
//! rather than by the SDK, to tell our own earlier write from someone else's.
//!
//! Stalls: every attempt has its own limits, so a server (or a proxy) that takes a request and
//! answers nothing costs seconds, not the whole-request timeout: `connect_timeout` to connect,
//! `first_byte_timeout` from the request to the response headers (an upload's body gets time to
//! go out on top, see [`upload_read_timeout`]), and `inactivity_timeout` for a body that stops
//! moving, in either direction (the SDK's stalled-stream protection, and [`read_body`] for the
//! downloads this module streams). A stalled attempt is abandoned and retried like any other
//! transient failure; a slow body that still moves is never cut.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::io::{self, Write};
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use aws_config::meta::region::RegionProviderChain;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Region, StalledStreamProtectionConfig};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt, TryStreamExt};
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;
use tracing::{debug, warn, Instrument};

use super::local::TEMP_PREFIX;
use super::{ErrorKind, ObjectMeta, ObjectSink, Storage, StorageError, Uri};

/// The `[s3]` table of the settings file: how to reach S3. Every `None` is the default
/// below (or the SDK's, for the endpoint and region).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct S3Settings {
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    pub force_path_style: Option<bool>,
    pub timeout_secs: Option<u64>,
    pub max_attempts: Option<u32>,
    /// `connect_timeout`: how long one attempt may take to connect (default 3 s).
    pub connect_timeout: Option<std::time::Duration>,
    /// `first_byte_timeout`: how long one attempt may wait for the response headers once its
    /// request is sent (default 10 s); an upload's body gets time to go out on top.
    pub first_byte_timeout: Option<std::time::Duration>,
    /// `inactivity_timeout`: how long a body (uploaded or downloaded) may go without a byte
    /// before the attempt is abandoned (default 10 s). A slow body that still moves is never cut.
    pub inactivity_timeout: Option<std::time::Duration>,
}

/// Used when neither the settings nor the AWS chain (env, profile, IMDS) name a region; S3
/// compatible servers usually ignore it, but SigV4 needs one.
pub const DEFAULT_REGION: &str = "us-east-1";
/// Tries per request, first one included, when neither the settings nor `AWS_MAX_ATTEMPTS` say.
/// The SDK's own default (3) is short for a nightly batch that would rather wait than fail.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Whole-request limit, retries included, when the settings do not say. For a download it
/// covers the request up to the response headers; a body that stops flowing is caught by the
/// inactivity timeout instead.
pub const DEFAULT_TIMEOUT_SECS: u64 = 300;
/// Per attempt: connecting, when the settings do not say (the SDK's own default is 3.1 s).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Per attempt: from the request sent to the response headers, when the settings do not say.
/// S3 answers in milliseconds; a request that waits this long is taken as lost and sent again.
pub const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);
/// Per attempt: the longest a request or response body may go without a byte.
pub const DEFAULT_INACTIVITY_TIMEOUT: Duration = Duration::from_secs(10);
/// The time to the response headers of an upload includes sending its body, which is allowed
/// on top of `first_byte_timeout` at this rate: 32 s for an 8 MiB part. An upload slower than
/// this is cut and retried (one that stops altogether is cut sooner, by `inactivity_timeout`).
/// The SDK offers no hook at the end of a request body, so the wait for the answer cannot be
/// counted from there.
pub const UPLOAD_FLOOR_BYTES_PER_SEC: u64 = 256 << 10;
/// Part size of streamed uploads. Larger parts mean fewer requests but more memory: a sink
/// holds up to `MAX_PARTS_IN_FLIGHT + 1` parts.
pub const DEFAULT_PART_SIZE: usize = 8 << 20;
/// S3's floor for every part but the last.
pub const MIN_PART_SIZE: usize = 5 << 20;
/// S3's ceiling on parts per upload.
const MAX_PARTS: i32 = 10_000;
/// Parts uploading while the writer fills the next one: overlaps encoding with the network
/// without letting memory grow.
const MAX_PARTS_IN_FLIGHT: usize = 2;
/// Ranged GETs in flight for one `get_ranges` call.
const MAX_RANGES_IN_FLIGHT: usize = 8;
/// Adjacent ranges asked for in one `get_ranges` call are fetched in GETs of up to this many
/// bytes: fewer requests than one per column chunk (about 1 MiB each in a typical row group),
/// while a row group still comes in several GETs at once. Measured on the S3 test server:
/// faster than a GET per column chunk, and than GETs of 8 MiB or of a whole row group.
const MAX_MERGED_RANGE: u64 = 4 << 20;

/// What one failed request means to this module, before it becomes an error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    NoSuchKey,
    NoSuchBucket,
    AccessDenied,
    /// 412: a conditional write found an object.
    PreconditionFailed,
    /// 409 on a conditional write: another conditional write raced with ours; try again.
    ConditionalConflict,
    Transient,
    Other,
}

fn outcome<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Outcome {
    let status = err.raw_response().map(|r| r.status().as_u16());
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            return Outcome::Transient
        }
        SdkError::ConstructionFailure(_) => return Outcome::Other,
        _ => {}
    }
    // HEAD responses have no body, so only the status tells.
    match (err.code(), status) {
        (Some("NoSuchBucket"), _) => Outcome::NoSuchBucket,
        (Some("NoSuchKey" | "NotFound"), _) | (None, Some(404)) => Outcome::NoSuchKey,
        (
            Some(
                "AccessDenied"
                | "Forbidden"
                | "InvalidAccessKeyId"
                | "NotSignedUp"
                | "SignatureDoesNotMatch",
            ),
            _,
        )
        | (None, Some(403)) => Outcome::AccessDenied,
        (Some("PreconditionFailed"), _) | (_, Some(412)) => Outcome::PreconditionFailed,
        (Some("ConditionalRequestConflict"), _) => Outcome::ConditionalConflict,
        (Some("SlowDown" | "Throttling" | "ThrottlingException" | "RequestTimeout"), _) => {
            Outcome::Transient
        }
        (_, Some(s)) if s >= 500 => Outcome::Transient,
        _ => Outcome::Other,
    }
}

/// A one-line description of a failed request: the server's code and message, or the
/// transport failure. Neither carries credentials (the secret key is never sent; signatures
/// live in the request, which errors do not print).
fn describe<E>(err: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    match (err, err.code()) {
        (SdkError::ServiceError(_), Some(code)) => {
            let message = err.message().map(|m| format!(": {m}")).unwrap_or_default();
            let status = status.map(|s| format!(" (HTTP {s})")).unwrap_or_default();
            format!("{code}{message}{status}")
        }
        (SdkError::ServiceError(_), None) => match status {
            Some(s) => format!("HTTP {s} without an error code"),
            None => "service error without an error code".to_string(),
        },
        _ => source_chain(err),
    }
}

/// An error and its sources in one line, `a: b: c`, without the Debug dump that
/// `DisplayErrorContext` appends.
fn source_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let message = e.to_string();
        // Wrappers often repeat their source's message.
        if !out.contains(&message) {
            out = format!("{out}: {message}");
        }
        source = e.source();
    }
    out
}

/// Turns a failed request on `key` into the [`StorageError`] callers see, of the kind its
/// outcome says.
fn request_error<E>(bucket: &str, key: &str, err: SdkError<E, HttpResponse>) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (kind, message) = match outcome(&err) {
        Outcome::NoSuchKey => {
            return anyhow::Error::new(StorageError::not_found(format!("s3://{bucket}/{key}")))
        }
        Outcome::NoSuchBucket => (
            ErrorKind::NoSuchBucket,
            format!("bucket '{bucket}' does not exist"),
        ),
        Outcome::AccessDenied => (
            ErrorKind::AccessDenied,
            format!(
                "access denied to '{key}' in bucket '{bucket}' ({}); \
                 check the credentials and the bucket policy",
                describe(&err)
            ),
        ),
        Outcome::Transient => (ErrorKind::Transient, describe(&err)),
        Outcome::PreconditionFailed | Outcome::ConditionalConflict | Outcome::Other => {
            (ErrorKind::Other, describe(&err))
        }
    };
    anyhow::Error::new(StorageError::new(kind, message))
}

/// What this module decides itself, beside the client's configuration.
#[derive(Debug, Clone, Copy)]
struct Tuning {
    part_size: usize,
    max_attempts: u32,
    /// The longest a downloaded body may go without a byte: the client's stalled-stream
    /// grace period, so both directions agree.
    inactivity: Duration,
}

/// One bucket on S3 or an S3-compatible server.
#[derive(Clone)]
pub struct S3Storage {
    bucket: String,
    client: Client,
    runtime: Arc<Runtime>,
    tuning: Tuning,
    /// Set once the bucket is seen to exist, so a later 404 means a missing object.
    bucket_seen: Arc<OnceLock<()>>,
}

impl fmt::Debug for S3Storage {
    // By hand: the client's Debug would print its whole configuration.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Storage")
            .field("bucket", &self.bucket)
            .field("part_size", &self.tuning.part_size)
            .finish()
    }
}

impl S3Storage {
    /// A store for `bucket`. `runtime` must be a multi-thread runtime: the blocking methods
    /// `block_on` it from the caller's thread while its workers drive the connections.
    pub fn new(bucket: impl Into<String>, client: Client, runtime: Arc<Runtime>) -> Self {
        Self {
            bucket: bucket.into(),
            runtime,
            tuning: Tuning {
                part_size: DEFAULT_PART_SIZE,
                max_attempts: DEFAULT_MAX_ATTEMPTS,
                inactivity: inactivity_timeout(&client),
            },
            client,
            bucket_seen: Arc::default(),
        }
    }

    /// Part size for streamed uploads ([`Storage::create`]); at least [`MIN_PART_SIZE`].
    pub fn with_part_size(mut self, part_size: usize) -> Self {
        self.tuning.part_size = part_size.max(MIN_PART_SIZE);
        self
    }

    /// How often this module itself retries what the SDK does not (a response body cut off,
    /// a conditional-write conflict); the SDK's count is set on the client.
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.tuning.max_attempts = max_attempts.max(1);
        self
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn part_size(&self) -> usize {
        self.tuning.part_size
    }

    /// The underlying client, for operations the [`Storage`] trait does not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    fn s3_uri(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    fn error<E>(&self, key: &str, err: SdkError<E, HttpResponse>) -> anyhow::Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        request_error(&self.bucket, key, err)
    }

    /// Fails with a clear error if the bucket is missing, so a typo in a bucket name is not
    /// taken for a missing object: a HEAD on a missing bucket answers a bare 404 like a missing
    /// key. Asked on a 404 until the bucket is once seen to exist.
    async fn check_bucket(&self) -> Result<()> {
        if self.bucket_seen.get().is_some() {
            return Ok(());
        }
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => {
                let _ = self.bucket_seen.set(());
                Ok(())
            }
            Err(e) if matches!(outcome(&e), Outcome::NoSuchKey | Outcome::NoSuchBucket) => {
                Err(anyhow::Error::new(StorageError::new(
                    ErrorKind::NoSuchBucket,
                    format!("bucket '{}' does not exist", self.bucket),
                )))
            }
            // Without s3:ListBucket the bucket cannot be checked; trust the object's 404.
            Err(_) => Ok(()),
        }
    }

    /// Whether the object under `key` is the one the multipart upload with `token` made.
    async fn holds_upload(&self, key: &str, token: &str) -> bool {
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        head.ok()
            .and_then(|h| h.metadata().and_then(|m| m.get(UPLOAD_TOKEN).cloned()))
            .is_some_and(|t| t == token)
    }

    /// One GET of a range, checked to be as long as asked.
    async fn fetch_range(&self, key: &str, r: &Range<u64>) -> Result<Bytes> {
        if r.start > r.end {
            bail!("invalid byte range {}..{}", r.start, r.end);
        }
        // An empty range has no HTTP form (`bytes=5-4` is invalid).
        if r.start == r.end {
            return Ok(Bytes::new());
        }
        let bytes = self.fetch(key, Some(r)).await?;
        if bytes.len() as u64 != r.end - r.start {
            bail!(
                "asked for bytes {}..{}, got {} bytes",
                r.start,
                r.end,
                bytes.len()
            );
        }
        Ok(bytes)
    }

    /// One GET (whole object or a range) with its body read to the end. A body cut off mid
    /// way is not retried by the SDK, so it is here.
    async fn fetch(&self, key: &str, range: Option<&Range<u64>>) -> Result<Bytes> {
        let mut attempt = 1;
        loop {
            let mut request = self.client.get_object().bucket(&self.bucket).key(key);
            if let Some(r) = range {
                request = request.range(range_header(r));
            }
            // Not the SDK's: `read_body` watches the body, with a clearer error and a retry.
            let own_watch = aws_sdk_s3::config::Builder::default()
                .stalled_stream_protection(StalledStreamProtectionConfig::disabled());
            let output = match request.customize().config_override(own_watch).send().await {
                Ok(output) => output,
                // Some servers (s3s-fs) answer NoSuchKey for a missing bucket too.
                Err(e) if outcome(&e) == Outcome::NoSuchKey => {
                    self.check_bucket().await?;
                    return Err(self.error(key, e));
                }
                Err(e) => return Err(self.error(key, e)),
            };
            let size = output.content_length().unwrap_or(0).max(0) as usize;
            match read_body(output.body, size, self.tuning.inactivity).await {
                Ok(body) => return Ok(body),
                Err(error) if attempt < self.tuning.max_attempts => {
                    let uri = self.s3_uri(key);
                    debug!(%uri, attempt, error, "Response body failed; retrying.");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(error) => {
                    return Err(anyhow::Error::new(StorageError::new(
                        ErrorKind::Transient,
                        format!("reading the response body: {error}"),
                    )))
                }
            }
        }
    }
}

/// Reads a response body to its end (`size` bytes expected, if known), giving up when no byte
/// comes for `inactivity`: a body that stalls is an attempt to retry, while a slow one that
/// still moves is read to its end however long it takes. The error is one line.
async fn read_body(
    mut body: ByteStream,
    size: usize,
    inactivity: Duration,
) -> std::result::Result<Bytes, String> {
    // A body of one chunk is kept as it came; one of more is copied into place chunk by chunk
    // as they come (into a buffer of the announced size), so a large body is never held twice,
    // as its chunks and their concatenation, at its end.
    let mut first: Option<Bytes> = None;
    let mut whole: Vec<u8> = Vec::new();
    loop {
        match tokio::time::timeout(inactivity, body.next()).await {
            Err(_) => {
                let got = whole.len() + first.as_ref().map_or(0, Bytes::len);
                let of = if size > 0 {
                    format!(" of {size}")
                } else {
                    String::new()
                };
                return Err(format!(
                    "no data for {} (inactivity_timeout) after {got}{of} bytes",
                    format_duration(inactivity)
                ));
            }
            Ok(None) => break,
            Ok(Some(Ok(chunk))) => match first.take() {
                None if whole.is_empty() => first = Some(chunk),
                None => whole.extend_from_slice(&chunk),
                Some(earlier) => {
                    whole.reserve_exact(size.max(earlier.len() + chunk.len()));
                    whole.extend_from_slice(&earlier);
                    whole.extend_from_slice(&chunk);
                }
            },
            Ok(Some(Err(e))) => return Err(source_chain(&e)),
        }
    }
    Ok(match first {
        Some(only) => only,
        None => Bytes::from(whole),
    })
}

/// "10s", "1500ms": as durations are written in the settings.
fn format_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The client's stalled-stream grace period, which is `inactivity_timeout` for clients made by
/// [`s3_client`].
fn inactivity_timeout(client: &Client) -> Duration {
    client
        .config()
        .stalled_stream_protection()
        .filter(|c| c.is_enabled())
        .map_or(DEFAULT_INACTIVITY_TIMEOUT, |c| c.grace_period())
}

/// The first-byte limit for an attempt that uploads `len` bytes: the time to the response
/// headers includes sending the body, which gets `len` at [`UPLOAD_FLOOR_BYTES_PER_SEC`] on top
/// of the client's `first_byte_timeout`. `None` if the client has no such limit.
fn upload_read_timeout(client: &Client, len: usize) -> Option<Duration> {
    let first_byte = client.config().timeout_config()?.read_timeout()?;
    let sending = Duration::from_millis(len as u64 * 1000 / UPLOAD_FLOOR_BYTES_PER_SEC);
    Some(first_byte + sending)
}

/// Per-request configuration for an upload of `len` bytes: the client's timeouts with
/// [`upload_read_timeout`] as the first-byte limit. An override replaces the client's timeout
/// configuration as a whole, so the other limits are copied.
fn upload_config(client: &Client, len: usize) -> aws_sdk_s3::config::Builder {
    let mut builder = aws_sdk_s3::config::Builder::default();
    if let (Some(timeouts), Some(read)) = (
        client.config().timeout_config(),
        upload_read_timeout(client, len),
    ) {
        builder = builder.timeout_config(timeouts.to_builder().read_timeout(read).build());
    }
    builder
}

/// `Range` header for a half-open byte range (HTTP ranges are inclusive).
fn range_header(r: &Range<u64>) -> String {
    format!("bytes={}-{}", r.start, r.end - 1)
}

/// A listing prefix taken as a folder, so `out/a` does not also match `out/ab/`.
fn folder_prefix(prefix: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('/') {
        prefix.to_string()
    } else {
        format!("{prefix}/")
    }
}

fn is_temp(key: &str) -> bool {
    key.rsplit('/')
        .next()
        .is_some_and(|name| name.starts_with(TEMP_PREFIX))
}

/// Exponential backoff with full jitter, like the SDK's standard mode: a random wait up to
/// 100 ms × 2^(attempt-1), capped at 20 s, so racing writers do not retry in step.
fn backoff(attempt: u32) -> Duration {
    let cap_ms = (100u64 << attempt.saturating_sub(1).min(8)).min(20_000);
    Duration::from_millis(rand::random::<u64>() % (cap_ms + 1))
}

fn to_chrono(t: &aws_sdk_s3::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

impl S3Storage {
    /// Every object under `prefix` (a folder), sorted by key, all pages; temporary objects
    /// only if `with_temps`.
    fn list_objects(&self, prefix: &str, with_temps: bool) -> Result<Vec<ObjectMeta>> {
        let prefix = folder_prefix(prefix);
        let listed: Result<Vec<ObjectMeta>> = self.block_on(async {
            let mut out = Vec::new();
            let mut token = None;
            loop {
                let page = self
                    .client
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .prefix(&prefix)
                    .set_continuation_token(token.take())
                    .send()
                    .await
                    .map_err(|e| self.error(&prefix, e))?;
                for obj in page.contents() {
                    let Some(key) = obj.key() else { continue };
                    if is_temp(key) && !with_temps {
                        continue;
                    }
                    out.push(ObjectMeta {
                        key: key.to_string(),
                        size: obj.size().unwrap_or(0).max(0) as u64,
                        last_modified: obj.last_modified().and_then(to_chrono),
                        etag: obj.e_tag().unwrap_or_default().to_string(),
                    });
                }
                if page.is_truncated() != Some(true) {
                    break;
                }
                // A truncated page without a token would silently end the listing early.
                match page.next_continuation_token() {
                    Some(t) => token = Some(t.to_string()),
                    None => bail!(
                        "the server said the listing is truncated but gave no continuation token"
                    ),
                }
            }
            Ok(out)
        });
        let mut out = listed.with_context(|| format!("listing {}", self.s3_uri(&prefix)))?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Aborts the multipart uploads under `prefix` (a folder) initiated before `older_than`;
    /// how many. A server that cannot list uploads (s3s-fs answers 501) has none to abort, as
    /// far as anyone can tell: that is logged, not an error.
    fn abort_stale_uploads(&self, prefix: &str, older_than: DateTime<Utc>) -> Result<usize> {
        let aborted: Result<usize> = self.block_on(async {
            let mut aborted = 0;
            let (mut key_marker, mut id_marker) = (None, None);
            loop {
                let page = match self
                    .client
                    .list_multipart_uploads()
                    .bucket(&self.bucket)
                    .prefix(prefix)
                    .set_key_marker(key_marker.take())
                    .set_upload_id_marker(id_marker.take())
                    .send()
                    .await
                {
                    Ok(page) => page,
                    Err(e) if is_not_implemented(&e) => {
                        let uri = self.s3_uri(prefix);
                        warn!(
                            %uri,
                            "The server cannot list multipart uploads; uploads left open by an \
                             interrupted run are not cleaned up (a lifecycle rule can abort them)."
                        );
                        return Ok(aborted);
                    }
                    Err(e) => return Err(self.error(prefix, e)),
                };
                for upload in page.uploads() {
                    let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else {
                        continue;
                    };
                    // An upload of unknown age may be in progress: leave it.
                    let Some(initiated) = upload.initiated().and_then(to_chrono) else {
                        continue;
                    };
                    if initiated >= older_than {
                        continue;
                    }
                    match self
                        .client
                        .abort_multipart_upload()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(id)
                        .send()
                        .await
                    {
                        Ok(_) => {
                            let uri = self.s3_uri(key);
                            debug!(%uri, upload_id = id, %initiated, "Stale multipart upload aborted.");
                            aborted += 1;
                        }
                        // Completed or aborted meanwhile.
                        Err(e) if matches!(e.code(), Some("NoSuchUpload"))
                            || outcome(&e) == Outcome::NoSuchKey => {}
                        Err(e) => {
                            return Err(self.error(key, e))
                                .context(format!("aborting the multipart upload {id}"))
                        }
                    }
                }
                if page.is_truncated() != Some(true) {
                    return Ok(aborted);
                }
                key_marker = page.next_key_marker().map(str::to_string);
                id_marker = page.next_upload_id_marker().map(str::to_string);
                if key_marker.is_none() && id_marker.is_none() {
                    bail!("the server said the upload listing is truncated but gave no marker");
                }
            }
        });
        aborted.with_context(|| {
            format!(
                "aborting stale multipart uploads under {}",
                self.s3_uri(prefix)
            )
        })
    }
}

/// Groups ranges into requests: runs of adjacent, non-empty ranges, each run at most `limit`
/// bytes (a longer range is a request of its own). Each request is its byte range and the
/// indices of the ranges it covers, in order; invalid and empty ranges are requests of their
/// own.
fn coalesce(ranges: &[Range<u64>], limit: u64) -> Vec<(Range<u64>, Vec<usize>)> {
    let mut out: Vec<(Range<u64>, Vec<usize>)> = Vec::new();
    for (i, r) in ranges.iter().enumerate() {
        let mergeable = r.start < r.end;
        if let Some((last, members)) = out.last_mut() {
            let last_ok = last.start < last.end;
            if mergeable && last_ok && last.end == r.start && r.end - last.start <= limit {
                last.end = r.end;
                members.push(i);
                continue;
            }
        }
        out.push((r.clone(), vec![i]));
    }
    out
}

/// A 501: the server does not implement the operation.
fn is_not_implemented<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    err.code() == Some("NotImplemented")
        || err.raw_response().map(|r| r.status().as_u16()) == Some(501)
}

impl Storage for S3Storage {
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.list_objects(prefix, false)
    }

    fn get(&self, key: &str) -> Result<Bytes> {
        self.block_on(self.fetch(key, None))
            .with_context(|| format!("reading {}", self.s3_uri(key)))
    }

    /// Adjacent ranges (the column chunks of a row group usually are) are fetched together,
    /// in GETs of up to [`MAX_MERGED_RANGE`] bytes.
    fn get_ranges(&self, key: &str, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let requests = coalesce(ranges, MAX_MERGED_RANGE);
        // The GETs run as one task on the runtime, beside the connections that feed them: a
        // body's chunks then pass between tasks of one worker, not each a wake-up of this
        // thread (a context switch per chunk: with the two workers' hand-offs, about 290 ms
        // of the 1.7 s of CPU of the bench's S3 run, seen in perf).
        let gets: Vec<_> = requests
            .iter()
            .map(|(r, _)| {
                let (this, key, r) = (self.clone(), key.to_string(), r.clone());
                async move { this.fetch_range(&key, &r).await }
            })
            .collect();
        let task = stream::iter(gets)
            .buffered(MAX_RANGES_IN_FLIGHT)
            .try_collect::<Vec<Bytes>>()
            .in_current_span();
        // Spawned from within `block_on`, so that a caller already inside a runtime fails
        // there (as every other method does) before any GET is sent.
        let fetched: Result<Vec<Bytes>> = self
            .block_on(async { tokio::spawn(task).await })
            .unwrap_or_else(|e| Err(anyhow!("the task fetching ranges failed: {e}")));
        let fetched = fetched.with_context(|| format!("reading {}", self.s3_uri(key)))?;
        // Each range, cut out of its request's bytes (no copy).
        let mut out = Vec::with_capacity(ranges.len());
        for ((request, members), bytes) in requests.iter().zip(fetched) {
            for &i in members {
                let r = &ranges[i];
                let at = (r.start - request.start) as usize;
                out.push(bytes.slice(at..at + (r.end - r.start) as usize));
            }
        }
        Ok(out)
    }

    fn fetch_ahead(&self) -> bool {
        true
    }

    fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let headed: Result<Option<ObjectMeta>> = self.block_on(async {
            match self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
            {
                Ok(o) => {
                    let _ = self.bucket_seen.set(());
                    Ok(Some(ObjectMeta {
                        key: key.to_string(),
                        size: o.content_length().unwrap_or(0).max(0) as u64,
                        last_modified: o.last_modified().and_then(to_chrono),
                        etag: o.e_tag().unwrap_or_default().to_string(),
                    }))
                }
                Err(e) if outcome(&e) == Outcome::NoSuchKey => {
                    self.check_bucket().await?;
                    Ok(None)
                }
                Err(e) => Err(self.error(key, e)),
            }
        });
        headed.with_context(|| format!("reading {}", self.s3_uri(key)))
    }

    fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let config = upload_config(&self.client, data.len());
        self.block_on(
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .body(ByteStream::from(data))
                .customize()
                .config_override(config)
                .send(),
        )
        .map(drop)
        .map_err(|e| self.error(key, e))
        .with_context(|| format!("writing {}", self.s3_uri(key)))
    }

    fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        let put: Result<bool> = self.block_on(async {
            // Retried here rather than by the SDK: after an attempt whose fate is unknown (a
            // timeout, a reset, a 5xx), a 412 may be our own earlier write, which must count as
            // written, not as someone else's.
            let no_sdk_retries =
                upload_config(&self.client, data.len()).retry_config(RetryConfig::disabled());
            let mut maybe_written = false;
            let mut attempt = 1;
            loop {
                let sent = self
                    .client
                    .put_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .if_none_match("*")
                    .body(ByteStream::from(data.clone()))
                    .customize()
                    .config_override(no_sdk_retries.clone())
                    .send()
                    .await;
                let err = match sent {
                    Ok(_) => return Ok(true),
                    Err(e) => e,
                };
                let retry = attempt < self.tuning.max_attempts;
                match outcome(&err) {
                    // Identical bytes from another writer count as ours: they are the same value.
                    Outcome::PreconditionFailed if maybe_written => {
                        return Ok(self.fetch(key, None).await? == data)
                    }
                    Outcome::PreconditionFailed => return Ok(false),
                    // The racing write may still fail, so a 409 does not mean the key is
                    // taken; asking again gets a 412 or a success.
                    Outcome::ConditionalConflict if retry => {}
                    Outcome::Transient if retry => maybe_written = true,
                    _ => return Err(self.error(key, err)),
                }
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
        });
        put.with_context(|| format!("writing {} if absent", self.s3_uri(key)))
    }

    fn create(&self, key: &str) -> Result<Box<dyn ObjectSink>> {
        Ok(Box::new(S3Sink {
            store: self.clone(),
            key: key.to_string(),
            buf: Vec::new(),
            upload: None,
            failed: false,
            finished: false,
        }))
    }

    fn delete(&self, key: &str) -> Result<()> {
        // S3 answers 204 for a missing key too.
        match self.block_on(
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .send(),
        ) {
            Ok(_) => Ok(()),
            Err(e) if outcome(&e) == Outcome::NoSuchKey => Ok(()),
            Err(e) => {
                Err(self.error(key, e)).with_context(|| format!("deleting {}", self.s3_uri(key)))
            }
        }
    }

    fn uri(&self, key: &str) -> Uri {
        Uri::S3 {
            bucket: self.bucket.clone(),
            key: key.to_string(),
        }
    }

    fn remove_stale_temps(&self, prefix: &str, older_than: DateTime<Utc>) -> Result<usize> {
        let prefix = folder_prefix(prefix);
        let mut removed = self.abort_stale_uploads(&prefix, older_than)?;
        // nightshift's S3 writes make no temporary objects, but a `_tmp.*` object left there
        // (by another writer, or a copy of a local folder) is hidden from listings all the same.
        for object in self.list_objects(&prefix, true)? {
            let stale = object.last_modified.is_some_and(|t| t < older_than);
            if is_temp(&object.key) && stale {
                self.delete(&object.key)?;
                debug!(uri = %self.s3_uri(&object.key), "Stale temporary object removed.");
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// User metadata on every object written by multipart upload: a random token per upload, by
/// which a completion whose answer was lost is recognised (`x-amz-meta-nightshift-upload`).
const UPLOAD_TOKEN: &str = "nightshift-upload";

/// A multipart upload in progress.
struct Upload {
    id: String,
    /// This upload's [`UPLOAD_TOKEN`].
    token: String,
    /// Parts uploaded, in order.
    done: Vec<CompletedPart>,
    /// Parts uploading, oldest first.
    in_flight: VecDeque<JoinHandle<Result<CompletedPart>>>,
    next_part: i32,
}

/// A streamed write: parts go up as they fill, the object appears on `commit`. Small objects
/// (less than one part) skip multipart and go up in one PUT on `commit`.
struct S3Sink {
    store: S3Storage,
    key: String,
    buf: Vec<u8>,
    upload: Option<Upload>,
    /// A part failed; `write` refuses more, `commit` fails, the upload is aborted.
    failed: bool,
    /// Committed or aborted: nothing for `Drop` to clean up.
    finished: bool,
}

impl S3Sink {
    fn uri(&self) -> String {
        self.store.s3_uri(&self.key)
    }

    /// Starts the upload if needed and sends the buffered part, waiting first if too many
    /// parts are in flight.
    fn send_part(&mut self) -> Result<()> {
        let store = &self.store;
        if self.upload.is_none() {
            let token = uuid::Uuid::now_v7().simple().to_string();
            let created = store.block_on(
                store
                    .client
                    .create_multipart_upload()
                    .bucket(&store.bucket)
                    .key(&self.key)
                    .checksum_algorithm(ChecksumAlgorithm::Crc32)
                    .metadata(UPLOAD_TOKEN, &token)
                    .send(),
            );
            let created = created.map_err(|e| store.error(&self.key, e))?;
            let id = created
                .upload_id()
                .context("the server started a multipart upload without an upload id")?;
            debug!(uri = %self.uri(), upload_id = id, "Multipart upload started.");
            self.upload = Some(Upload {
                id: id.to_string(),
                token,
                done: Vec::new(),
                in_flight: VecDeque::new(),
                next_part: 1,
            });
        }
        let upload = self.upload.as_mut().expect("upload was just started");
        while upload.in_flight.len() >= MAX_PARTS_IN_FLIGHT {
            let oldest = upload
                .in_flight
                .pop_front()
                .expect("in flight is not empty");
            upload.done.push(join_part(store, oldest)?);
        }
        if upload.next_part > MAX_PARTS {
            bail!(
                "object exceeds {MAX_PARTS} parts of {} bytes; raise the part size",
                store.tuning.part_size
            );
        }
        let number = upload.next_part;
        upload.next_part += 1;
        let part = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(store.tuning.part_size),
        ));
        let config = upload_config(&store.client, part.len());
        let request = store
            .client
            .upload_part()
            .bucket(&store.bucket)
            .key(&self.key)
            .upload_id(&upload.id)
            .part_number(number)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(ByteStream::from(part))
            .customize()
            .config_override(config);
        let (key, bucket) = (self.key.clone(), store.bucket.clone());
        upload.in_flight.push_back(
            store.runtime.spawn(
                async move {
                    let sent = request.send().await;
                    let out = sent.map_err(|e| {
                        request_error(&bucket, &key, e).context(format!("uploading part {number}"))
                    })?;
                    // With a checksum algorithm on the upload, completing it needs every part's.
                    Ok(CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.e_tag().map(str::to_string))
                        .set_checksum_crc32(out.checksum_crc32().map(str::to_string))
                        .build())
                }
                .in_current_span(),
            ),
        );
        Ok(())
    }

    fn finish_upload(&mut self) -> Result<()> {
        if self.upload.is_none() {
            // Less than one part: a plain PUT is one request instead of three.
            let data = Bytes::from(std::mem::take(&mut self.buf));
            let store = &self.store;
            let config = upload_config(&store.client, data.len());
            let put = store.block_on(
                store
                    .client
                    .put_object()
                    .bucket(&store.bucket)
                    .key(&self.key)
                    .body(ByteStream::from(data))
                    .customize()
                    .config_override(config)
                    .send(),
            );
            return put.map(drop).map_err(|e| store.error(&self.key, e));
        }
        if !self.buf.is_empty() {
            self.send_part()?;
        }
        let store = &self.store;
        let upload = self.upload.as_mut().expect("upload exists");
        while let Some(part) = upload.in_flight.pop_front() {
            upload.done.push(join_part(store, part)?);
        }
        let parts = upload.done.len();
        store
            .block_on(complete_upload(store, &self.key, upload))
            .context("completing the multipart upload")?;
        debug!(uri = %self.uri(), parts, "Multipart upload completed.");
        Ok(())
    }

    /// The abort of this sink's upload, if it started one.
    fn abort_upload(&mut self) -> Option<impl Future<Output = Result<()>> + Send + 'static> {
        let mut upload = self.upload.take()?;
        let (client, bucket, key) = (
            self.store.client.clone(),
            self.store.bucket.clone(),
            self.key.clone(),
        );
        Some(async move {
            // A part that lands after the abort would linger, so wait for those in flight.
            while let Some(part) = upload.in_flight.pop_front() {
                let _ = part.await;
            }
            match client
                .abort_multipart_upload()
                .bucket(&bucket)
                .key(&key)
                .upload_id(&upload.id)
                .send()
                .await
            {
                Ok(_) => Ok(()),
                // Gone already: an earlier attempt whose answer was lost did it.
                Err(e) if outcome(&e) == Outcome::NoSuchKey || e.code() == Some("NoSuchUpload") => {
                    Ok(())
                }
                Err(e) => {
                    Err(request_error(&bucket, &key, e)).context("aborting the multipart upload")
                }
            }
        })
    }
}

/// Completes a multipart upload. Retried here rather than by the SDK: when the answer to a
/// completion is lost (a reset, a timeout, a 5xx after the fact), the upload may be complete
/// already, and a second completion is refused (`NoSuchUpload` on AWS, `AccessDenied` on
/// s3s-fs). The object under the key is then ours if it carries this upload's token.
async fn complete_upload(store: &S3Storage, key: &str, upload: &Upload) -> Result<()> {
    let no_sdk_retries =
        aws_sdk_s3::config::Builder::default().retry_config(RetryConfig::disabled());
    let mut maybe_completed = false;
    let mut attempt = 1;
    loop {
        let sent = store
            .client
            .complete_multipart_upload()
            .bucket(&store.bucket)
            .key(key)
            .upload_id(&upload.id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(upload.done.clone()))
                    .build(),
            )
            .customize()
            .config_override(no_sdk_retries.clone())
            .send()
            .await;
        let err = match sent {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let transient = outcome(&err) == Outcome::Transient;
        if transient && attempt < store.tuning.max_attempts {
            maybe_completed = true;
            let (uri, error) = (store.s3_uri(key), describe(&err));
            debug!(%uri, attempt, error, "Completing the upload failed; retrying.");
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
            continue;
        }
        if (maybe_completed || transient) && store.holds_upload(key, &upload.token).await {
            let uri = store.s3_uri(key);
            let upload_id = &upload.id;
            debug!(%uri, upload_id, "A completion whose answer was lost had landed.");
            return Ok(());
        }
        return Err(store.error(key, err));
    }
}

fn join_part(store: &S3Storage, part: JoinHandle<Result<CompletedPart>>) -> Result<CompletedPart> {
    store
        .block_on(part)
        .map_err(|e| anyhow!("part upload task failed: {e}"))?
}

impl Write for S3Sink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.failed || self.finished {
            return Err(io::Error::other(format!(
                "{}: the upload already failed or ended",
                self.uri()
            )));
        }
        let room = self.store.tuning.part_size - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.store.tuning.part_size {
            if let Err(e) = self.send_part() {
                self.failed = true;
                // An encoder sees only the io::Error; the kind inside it still tells a run
                // whether to try again ([`ErrorKind::of`] looks there).
                let kind = ErrorKind::of(&e).unwrap_or(ErrorKind::Other);
                let message = format!("{:#}", e.context(format!("writing {}", self.uri())));
                return Err(io::Error::other(StorageError::new(kind, message)));
            }
        }
        Ok(n)
    }

    /// Nothing to do: a part goes up only when full, as S3 requires.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectSink for S3Sink {
    fn commit(mut self: Box<Self>) -> Result<()> {
        let uri = self.uri();
        if self.failed {
            if let Err(e) = self.abort() {
                let error = format!("{e:#}");
                warn!(%uri, error, "Could not abort a failed multipart upload.");
            }
            bail!("writing {uri}: an earlier write failed");
        }
        match self.finish_upload() {
            Ok(()) => {
                self.finished = true;
                Ok(())
            }
            // Dropping the sink aborts the upload.
            Err(e) => Err(e.context(format!("writing {uri}"))),
        }
    }

    fn abort(mut self: Box<Self>) -> Result<()> {
        self.finished = true;
        let Some(abort) = self.abort_upload() else {
            return Ok(());
        };
        self.store
            .block_on(abort)
            .with_context(|| format!("writing {}", self.uri()))?;
        debug!(uri = %self.uri(), "Multipart upload aborted.");
        Ok(())
    }
}

impl Drop for S3Sink {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let Some(abort) = self.abort_upload() else {
            return;
        };
        let aborted = if Handle::try_current().is_ok() {
            // block_on would panic on a thread inside an async runtime; a helper thread may
            // block. Spawning the abort instead could leave it unfinished at shutdown.
            thread::scope(|scope| scope.spawn(|| self.store.block_on(abort)).join())
                .unwrap_or_else(|_| Err(anyhow!("the abort panicked")))
        } else {
            self.store.block_on(abort)
        };
        if let Err(e) = aborted {
            let (uri, error) = (self.uri(), format!("{e:#}"));
            warn!(%uri, error, "Could not abort a dropped multipart upload.");
        }
    }
}

/// The S3 side of [`Stores`](super::Stores): one runtime and one client, built on first use and
/// shared by the stores of every bucket.
pub(crate) struct S3Stores {
    settings: S3Settings,
    state: Mutex<S3State>,
}

#[derive(Default)]
struct S3State {
    shared: Option<(Arc<Runtime>, Client)>,
    buckets: HashMap<String, Arc<S3Storage>>,
}

impl fmt::Debug for S3Stores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Stores")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl S3Stores {
    pub(crate) fn new(settings: S3Settings) -> Self {
        Self {
            settings,
            state: Mutex::default(),
        }
    }

    /// The store for `bucket`, built on first use.
    pub(crate) fn bucket(&self, bucket: &str) -> Result<Arc<S3Storage>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(store) = state.buckets.get(bucket) {
            return Ok(store.clone());
        }
        let (runtime, client) = match &state.shared {
            Some(shared) => shared.clone(),
            None => {
                // One worker per two cores, up to four (one on two cores): receiving (and on
                // S3, decrypting) is a fraction of the work the scoring threads do with the
                // bytes, and with two workers on two cores half the chunks of a body crossed
                // between them, a wake-up each (CPU of an S3 run 1.58 s -> 1.40 s with one,
                // measured on plain HTTP on loopback, 2 cores; not measured on more cores).
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads((cores / 2).clamp(1, 4))
                    .thread_name("nightshift-s3")
                    .enable_all()
                    .build()
                    .context("starting the S3 client runtime")?;
                let client = runtime.block_on(s3_client(&self.settings));
                let shared = (Arc::new(runtime), client);
                state.shared = Some(shared.clone());
                shared
            }
        };
        let max_attempts = self.settings.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
        let store =
            Arc::new(S3Storage::new(bucket, client, runtime).with_max_attempts(max_attempts));
        state.buckets.insert(bucket.to_string(), Arc::clone(&store));
        Ok(store)
    }
}

/// A client from the AWS default chain (env, profile, web identity, container and instance
/// credentials; `AWS_ENDPOINT_URL`, `AWS_REGION`, ...), so it behaves like the AWS CLI, with
/// the `[s3]` settings taking precedence.
pub async fn s3_client(settings: &S3Settings) -> Client {
    let region = RegionProviderChain::first_try(settings.region.clone().map(Region::new))
        .or_default_provider()
        .or_else(Region::from_static(DEFAULT_REGION));
    let timeout = Duration::from_secs(settings.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS).max(1));
    let timeouts = TimeoutConfig::builder()
        .operation_timeout(timeout)
        .connect_timeout(settings.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT))
        // Hyper's "read timeout": from the request to the response headers, per attempt.
        .read_timeout(
            settings
                .first_byte_timeout
                .unwrap_or(DEFAULT_FIRST_BYTE_TIMEOUT),
        )
        .build();
    // Bodies (both ways) that move less than a byte a second for this long fail the attempt.
    let inactivity = settings
        .inactivity_timeout
        .unwrap_or(DEFAULT_INACTIVITY_TIMEOUT);
    let stalls = StalledStreamProtectionConfig::enabled()
        .grace_period(inactivity)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .timeout_config(timeouts)
        .stalled_stream_protection(stalls);
    // Without a setting, AWS_MAX_ATTEMPTS / AWS_RETRY_MODE (read by the loader) still win
    // over nightshift's default.
    let attempts = settings.max_attempts.or_else(|| {
        std::env::var_os("AWS_MAX_ATTEMPTS")
            .is_none()
            .then_some(DEFAULT_MAX_ATTEMPTS)
    });
    if let Some(n) = attempts {
        loader = loader.retry_config(RetryConfig::standard().with_max_attempts(n.max(1)));
    }
    if let Some(url) = &settings.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let sdk = loader.load().await;
    // A custom endpoint (MinIO, s3s, Ceph) usually serves buckets as paths, not host names.
    // The service-specific AWS_ENDPOINT_URL_S3 is applied by the SDK but not reported by
    // `endpoint_url()`, so it is looked at too.
    let custom_endpoint =
        sdk.endpoint_url().is_some() || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
    let path_style = settings.force_path_style.unwrap_or(custom_endpoint);
    let config = aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(path_style)
        .build();
    Client::from_conf(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_ranges_are_inclusive() {
        assert_eq!(range_header(&(0..10)), "bytes=0-9");
        assert_eq!(range_header(&(5..6)), "bytes=5-5");
    }

    #[test]
    #[allow(clippy::reversed_empty_ranges)] // an invalid range stays a request of its own
    fn adjacent_ranges_are_fetched_together_up_to_the_limit() {
        let ranges = [0..3, 3..5, 5..9, 9..9, 9..12, 20..22, 22..40, 40..41, 7..2];
        let got = coalesce(&ranges, 10);
        assert_eq!(
            got,
            vec![
                (0..9, vec![0, 1, 2]),
                (9..9, vec![3]),
                (9..12, vec![4]),
                (20..22, vec![5]),
                (22..40, vec![6]),
                (40..41, vec![7]),
                (7..2, vec![8]),
            ]
        );
        // Without a limit to speak of, every run of adjacent ranges is one request.
        assert_eq!(
            coalesce(&[0..1, 1..2, 2..3], 1 << 30),
            vec![(0..3, vec![0, 1, 2])]
        );
        assert_eq!(coalesce(&[], 10), Vec::new());
    }

    #[test]
    fn prefixes_are_folders() {
        assert_eq!(folder_prefix(""), "");
        assert_eq!(folder_prefix("a/b"), "a/b/");
        assert_eq!(folder_prefix("a/b/"), "a/b/");
    }

    #[test]
    fn temp_objects_are_hidden() {
        assert!(is_temp("out/_tmp.x.parquet.0192"));
        assert!(is_temp("_tmp.x"));
        assert!(!is_temp("_tmp.dir/x.parquet"));
        assert!(!is_temp("out/x.parquet"));
    }

    #[test]
    fn uploads_get_time_to_send_their_body() {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .timeout_config(
                TimeoutConfig::builder()
                    .read_timeout(Duration::from_secs(10))
                    .operation_timeout(Duration::from_secs(300))
                    .build(),
            )
            .build();
        let client = Client::from_conf(config);
        let part = upload_read_timeout(&client, DEFAULT_PART_SIZE);
        assert_eq!(part, Some(Duration::from_secs(10 + 32)));
        assert_eq!(
            upload_read_timeout(&client, 100),
            Some(Duration::from_millis(10_000))
        );
        assert_eq!(format_duration(Duration::from_secs(10)), "10s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn backoff_is_capped() {
        for attempt in 1..40 {
            assert!(backoff(attempt) <= Duration::from_secs(20));
        }
    }
}
