//! A bucket of its own for each S3 test, on the server named by `NIGHTSHIFT_TEST_S3_ENDPOINT`
//! (s3s-fs from `make s3-server`, MinIO, or AWS itself).
//!
//! The bucket is created and checked with a separate admin client, so tests verify what the
//! server holds rather than what `S3Storage` believes.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use aws_config::BehaviorVersion;
use aws_sdk_s3::config::interceptors::FinalizerInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::{BoxError, DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_s3::operation::create_multipart_upload::CreateMultipartUploadOutput;
use aws_sdk_s3::operation::upload_part::UploadPartOutput;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use aws_sdk_s3::Client;
use nightshift::config::Settings;
use nightshift::storage::S3Settings;
use nightshift::storage::{self, Location, S3Storage, Storage, Stores, Uri};
use tokio::runtime::Runtime;

pub const ENDPOINT_VAR: &str = "NIGHTSHIFT_TEST_S3_ENDPOINT";

/// The endpoint, or a failure that says how to get one: S3 tests never pass by skipping.
pub fn endpoint() -> String {
    match std::env::var(ENDPOINT_VAR) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "{ENDPOINT_VAR} is not set, so the S3 tests cannot run. Start a local server with \
             `make s3-server` and export the variables it prints (the endpoint, \
             AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), or point them at MinIO or AWS."
        ),
    }
}

fn region() -> String {
    std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".to_string())
}

/// What a user would put under `[s3]` to reach the test server.
pub fn settings() -> Settings {
    Settings {
        s3: S3Settings {
            endpoint_url: Some(endpoint()),
            region: Some(region()),
            force_path_style: Some(true),
            timeout_secs: Some(60),
            max_attempts: Some(3),
            ..S3Settings::default()
        },
        ..Settings::default()
    }
}

/// A unique, valid bucket name: `nstest-<name>-<random>`.
pub fn unique_bucket_name(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    format!(
        "nstest-{}-{:08x}",
        name.trim_matches('-'),
        rand::random::<u32>()
    )
}

/// A client of its own, on a runtime of its own, for setting up and checking buckets.
pub struct Admin {
    pub runtime: Runtime,
    pub client: Client,
}

impl Admin {
    pub fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let endpoint = endpoint();
        let client = runtime.block_on(async {
            let sdk = aws_config::defaults(BehaviorVersion::latest())
                .endpoint_url(endpoint)
                .region(aws_sdk_s3::config::Region::new(region()))
                .load()
                .await;
            Client::from_conf(
                aws_sdk_s3::config::Builder::from(&sdk)
                    .force_path_style(true)
                    .build(),
            )
        });
        Self { runtime, client }
    }

    pub fn create_bucket(&self, bucket: &str) {
        let mut request = self.client.create_bucket().bucket(bucket);
        // us-east-1 is the one region that refuses an explicit location constraint.
        if region() != "us-east-1" {
            request = request.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(region().as_str()))
                    .build(),
            );
        }
        self.runtime
            .block_on(request.send())
            .unwrap_or_else(|e| panic!("creating bucket {bucket}: {}", DisplayErrorContext(e)));
    }

    /// Keys of multipart uploads started and neither completed nor aborted, or `None` if the
    /// server cannot list them (s3s-fs answers 501).
    pub fn open_uploads(&self, bucket: &str) -> Option<Vec<String>> {
        match self
            .runtime
            .block_on(self.client.list_multipart_uploads().bucket(bucket).send())
        {
            Ok(out) => Some(
                out.uploads()
                    .iter()
                    .map(|u| u.key().unwrap_or_default().to_string())
                    .collect(),
            ),
            Err(e) if e.code() == Some("NotImplemented") => None,
            Err(e) => panic!("listing uploads of {bucket}: {}", DisplayErrorContext(e)),
        }
    }

    /// Fails if the bucket holds any part of an unfinished upload: every upload `log` saw
    /// started must be gone or empty, and, where the server can list uploads, none is open.
    pub fn assert_no_parts_left(&self, bucket: &str, log: &UploadLog) {
        if let Some(open) = self.open_uploads(bucket) {
            assert!(open.is_empty(), "uploads left open in {bucket}: {open:?}");
        }
        for (key, id) in log.started() {
            let listed = self.runtime.block_on(
                self.client
                    .list_parts()
                    .bucket(bucket)
                    .key(&key)
                    .upload_id(&id)
                    .send(),
            );
            match listed {
                Ok(out) => assert!(
                    out.parts().is_empty(),
                    "upload {id} of {key} still has parts: {:?}",
                    out.parts()
                ),
                Err(e) if e.code() == Some("NoSuchUpload") => {}
                Err(e) => panic!(
                    "listing parts of upload {id} of {key}: {}",
                    DisplayErrorContext(e)
                ),
            }
        }
    }

    /// The ETag the server gives an object; multipart objects end in `-<parts>`.
    pub fn etag(&self, bucket: &str, key: &str) -> String {
        let out = self
            .runtime
            .block_on(self.client.head_object().bucket(bucket).key(key).send())
            .unwrap();
        out.e_tag()
            .unwrap_or_default()
            .trim_matches('"')
            .to_string()
    }

    /// Best effort: empties and removes a bucket so a shared server (AWS, MinIO) stays tidy.
    fn remove_bucket(&self, bucket: &str) {
        self.runtime.block_on(async {
            let c = &self.client;
            if let Ok(out) = c.list_multipart_uploads().bucket(bucket).send().await {
                for u in out.uploads() {
                    let (Some(key), Some(id)) = (u.key(), u.upload_id()) else {
                        continue;
                    };
                    let _ = c
                        .abort_multipart_upload()
                        .bucket(bucket)
                        .key(key)
                        .upload_id(id)
                        .send()
                        .await;
                }
            }
            let mut token = None;
            loop {
                let Ok(page) = c
                    .list_objects_v2()
                    .bucket(bucket)
                    .set_continuation_token(token.take())
                    .send()
                    .await
                else {
                    break;
                };
                for key in page.contents().iter().filter_map(|o| o.key()) {
                    let _ = c.delete_object().bucket(bucket).key(key).send().await;
                }
                match page.next_continuation_token() {
                    Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                    _ => break,
                }
            }
            let _ = c.delete_bucket().bucket(bucket).send().await;
        });
    }
}

/// A fresh bucket, the `Stores` a job would use to reach it, and an admin client. Removed,
/// with its objects, when dropped.
pub struct TestBucket {
    pub name: String,
    pub stores: Stores,
    pub admin: Admin,
}

impl TestBucket {
    pub fn new(test: &str) -> Self {
        let admin = Admin::new();
        let name = unique_bucket_name(test);
        admin.create_bucket(&name);
        let stores = Stores::new(settings().s3);
        Self {
            name,
            stores,
            admin,
        }
    }

    /// The store, as jobs get it: through `Stores::locate`.
    pub fn store(&self) -> Arc<dyn Storage> {
        self.location("").store
    }

    /// A store for this bucket that reaches the server through `endpoint` (a [`FlakyProxy`]).
    pub fn s3_via(&self, endpoint: &str) -> S3Storage {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut settings = settings().s3;
        settings.endpoint_url = Some(endpoint.to_string());
        let client = runtime.block_on(storage::s3_client(&settings));
        S3Storage::new(self.name.clone(), client, Arc::new(runtime))
    }

    /// A store configured as `Stores` would, whose client also records the multipart uploads
    /// it starts, so a test can check on them whatever the server.
    pub fn s3_logged(&self) -> (S3Storage, UploadLog) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let base = runtime.block_on(storage::s3_client(&settings().s3));
        let log = UploadLog::default();
        let client = Client::from_conf(base.config().to_builder().interceptor(log.clone()).build());
        (
            S3Storage::new(self.name.clone(), client, Arc::new(runtime)),
            log,
        )
    }

    pub fn location(&self, key: &str) -> Location {
        self.stores
            .locate(&Uri::S3 {
                bucket: self.name.clone(),
                key: key.to_string(),
            })
            .unwrap()
    }

    pub fn uri(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.name)
    }

    /// Writes an object directly, as another tool would.
    pub fn put(&self, key: &str, bytes: impl Into<bytes::Bytes>) {
        let a = &self.admin;
        a.runtime
            .block_on(
                a.client
                    .put_object()
                    .bucket(&self.name)
                    .key(key)
                    .body(aws_sdk_s3::primitives::ByteStream::from(bytes.into()))
                    .send(),
            )
            .unwrap();
    }

    /// Reads an object directly; `None` if it is not there.
    pub fn get(&self, key: &str) -> Option<bytes::Bytes> {
        let a = &self.admin;
        // s3s-fs replaces an object in place: a read racing a runner's put can see the new
        // bytes under the old checksum. MinIO and AWS never do; read again.
        // A GET racing that replacement can also fail outright (s3s-fs answers from a file
        // being rewritten): only NoSuchKey means the object is not there.
        let mut last = String::new();
        for attempt in 0..60 {
            // A mismatch that persists once nothing writes is s3s-fs keeping an older
            // checksum beside replaced bytes (seen under the full suite's load): the bytes are
            // read without the response checksum then, and the callers' checks (Parquet
            // footers, row counts, `_SUCCESS` against the files) judge them.
            let stale_checksum = attempt >= 20 && last.contains("checksum mismatch");
            let body = a.runtime.block_on(async {
                let mut get = a
                    .client
                    .get_object()
                    .bucket(&self.name)
                    .key(key)
                    .customize();
                if stale_checksum {
                    get = get.config_override(
                        aws_sdk_s3::config::Builder::default().response_checksum_validation(
                            aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
                        ),
                    );
                }
                let out = match get.send().await {
                    Ok(out) => out,
                    Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                        return None
                    }
                    Err(e) => return Some(Err(format!("{}", DisplayErrorContext(e)))),
                };
                Some(
                    out.body
                        .collect()
                        .await
                        .map(|b| b.into_bytes())
                        .map_err(|e| format!("reading the body: {}", DisplayErrorContext(e))),
                )
            })?;
            match body {
                Ok(bytes) => return Some(bytes),
                Err(e) => {
                    last = e;
                    std::thread::sleep(std::time::Duration::from_millis(50))
                }
            }
        }
        panic!(
            "s3://{}/{key} kept changing while it was read (last: {last})",
            self.name
        )
    }
}

impl Drop for TestBucket {
    fn drop(&mut self) {
        self.admin.remove_bucket(&self.name);
    }
}

/// The multipart uploads a client started (key, upload id) and the parts it sent.
#[derive(Debug, Default, Clone)]
pub struct UploadLog(Arc<Mutex<UploadEvents>>);

#[derive(Debug, Default)]
struct UploadEvents {
    started: Vec<(String, String)>,
    parts: usize,
}

impl UploadLog {
    pub fn started(&self) -> Vec<(String, String)> {
        self.0.lock().unwrap().started.clone()
    }

    pub fn parts(&self) -> usize {
        self.0.lock().unwrap().parts
    }
}

impl Intercept for UploadLog {
    fn name(&self) -> &'static str {
        "UploadLog"
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(Ok(output)) = context.output_or_error() else {
            return Ok(());
        };
        let mut events = self.0.lock().unwrap();
        if let Some(o) = output.downcast_ref::<CreateMultipartUploadOutput>() {
            let key = o.key().unwrap_or_default().to_string();
            events
                .started
                .push((key, o.upload_id().unwrap_or_default().to_string()));
        } else if output.downcast_ref::<UploadPartOutput>().is_some() {
            events.parts += 1;
        }
        Ok(())
    }
}

/// A TCP proxy to the test server that cuts the first `cuts` connections after passing on
/// `keep` bytes of response: the server has done the request, the client never hears all of it.
pub struct FlakyProxy {
    pub endpoint: String,
    cuts_left: Arc<AtomicUsize>,
}

impl FlakyProxy {
    /// `None` for an HTTPS endpoint, whose certificate would not match the proxy's address.
    pub fn start(cuts: usize, keep: usize) -> Option<Self> {
        let upstream = endpoint()
            .strip_prefix("http://")?
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let cuts_left = Arc::new(AtomicUsize::new(cuts));
        let left = Arc::clone(&cuts_left);
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    return;
                };
                let cut = left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let (mut from_client, mut to_server) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                thread::spawn(move || {
                    let _ = std::io::copy(&mut from_client, &mut to_server);
                    let _ = to_server.shutdown(Shutdown::Write);
                });
                thread::spawn(move || relay_response(server, client, cut.then_some(keep)));
            }
        });
        Some(Self {
            endpoint,
            cuts_left,
        })
    }

    pub fn cuts_left(&self) -> usize {
        self.cuts_left.load(Ordering::SeqCst)
    }
}

fn relay_response(mut server: TcpStream, mut client: TcpStream, keep: Option<usize>) {
    let mut passed = 0;
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = keep.map_or(n, |keep| n.min(keep - passed));
        if client.write_all(&buf[..n]).is_err() {
            break;
        }
        passed += n;
        if keep == Some(passed) {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
}

/// Deterministic bytes that differ at every offset modulo a prime, so a misplaced range or
/// part shows up.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i / 251 % 256) as u8)
        .collect()
}

/// The share of requests a [`FaultProxy`] spoils, by kind of fault (each 0.0 to 1.0).
#[derive(Debug, Clone, Copy, Default)]
pub struct FaultMix {
    /// Answered `500 InternalError`, `503 ServiceUnavailable` or `503 SlowDown`, with S3's XML
    /// error body; half of them after the server did the request.
    pub server_errors: f64,
    /// The connection reset before the response (half of them after the server did the
    /// request), reset in the middle of the response body, or the body cut short: fewer bytes
    /// than its `Content-Length`, then a clean close.
    pub resets: f64,
    /// The request read and nothing answered (half of them after the server did it), or the
    /// response body stopping half way; the connection held open either way.
    pub stalls: f64,
    /// Every response body with at least 1 KiB sent in six pieces with this pause between
    /// them: a slow transfer that never stops.
    pub trickle: Option<std::time::Duration>,
}

/// What the proxy did to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    Pass,
    InternalError,
    ServiceUnavailable,
    SlowDown,
    ResetBeforeResponse,
    ResetMidBody,
    CutShort,
    Stall,
    StallMidBody,
    Trickle,
}

/// A multipart upload the server started for a request that went through the proxy.
#[derive(Debug, Clone)]
pub struct SeenUpload {
    pub key: String,
    pub upload_id: String,
    /// Whether the client received the answer (and so knows the upload id).
    pub answered: bool,
}

/// What a [`FaultProxy`] has seen and done so far.
#[derive(Debug, Clone, Default)]
pub struct FaultLog {
    pub requests: usize,
    pub faults: std::collections::BTreeMap<Fault, usize>,
    pub uploads: Vec<SeenUpload>,
}

impl FaultLog {
    /// Requests spoiled, by any fault but a trickle.
    pub fn spoiled(&self) -> usize {
        self.faults
            .iter()
            .filter(|(f, _)| !matches!(f, Fault::Pass | Fault::Trickle))
            .map(|(_, n)| n)
            .sum()
    }
}

/// An HTTP-aware proxy on 127.0.0.1 between a client and the test server, that spoils a share
/// of requests as a [`FaultMix`] says. One request per connection: every request and response
/// it forwards says `Connection: close`.
///
/// Which request gets which fault follows from the seed and the request itself (method, target,
/// `Range`, and how many identical requests came before), not from the order in which
/// concurrent requests arrive, so a seed replays the same faults on the same requests (requests
/// naming a random run id excepted).
pub struct FaultProxy {
    pub endpoint: String,
    shared: Arc<ProxyShared>,
}

struct ProxyShared {
    upstream: String,
    mix: Mutex<FaultMix>,
    seed: u64,
    seen: Mutex<std::collections::HashMap<String, u64>>,
    log: Mutex<FaultLog>,
    stop: std::sync::atomic::AtomicBool,
}

impl FaultProxy {
    /// `None` for an HTTPS endpoint: the proxy speaks plain HTTP only.
    pub fn start(mix: FaultMix, seed: u64) -> Option<Self> {
        let upstream = endpoint()
            .strip_prefix("http://")?
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(ProxyShared {
            upstream,
            mix: Mutex::new(mix),
            seed,
            seen: Mutex::default(),
            log: Mutex::default(),
            stop: Default::default(),
        });
        let accepting = Arc::clone(&shared);
        thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let shared = Arc::clone(&accepting);
                thread::spawn(move || {
                    let _ = serve(&shared, client);
                });
            }
        });
        Some(Self { endpoint, shared })
    }

    /// Changes the faults from the next request on (no faults: `FaultMix::default()`).
    pub fn set_mix(&self, mix: FaultMix) {
        *self.shared.mix.lock().unwrap() = mix;
    }

    pub fn log(&self) -> FaultLog {
        self.shared.log.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread so it sees the flag.
        let _ = TcpStream::connect(self.endpoint.trim_start_matches("http://"));
    }
}

/// A request or response head as received, and its parsed parts.
struct Head {
    /// The request line or status line.
    start: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    fn content_length(&self) -> Option<usize> {
        self.header("content-length")?.trim().parse().ok()
    }

    /// The head as sent on, with `Connection: close` and without `Expect` (answered here).
    fn encode(&self) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.start);
        for (n, v) in &self.headers {
            if ["connection", "keep-alive", "expect"]
                .iter()
                .any(|h| n.eq_ignore_ascii_case(h))
            {
                continue;
            }
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str("Connection: close\r\n\r\n");
        out.into_bytes()
    }
}

/// A stream with bytes already read from it.
struct Reader {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Reader {
    fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    fn head(&mut self) -> std::io::Result<Head> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 4);
                let mut lines = text.split("\r\n");
                let start = lines.next().unwrap_or_default().to_string();
                let headers = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                    .collect();
                return Ok(Head { start, headers });
            }
            if self.fill()? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    fn exactly(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    fn line(&mut self) -> std::io::Result<Vec<u8>> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                return Ok(self.buf.drain(..end + 2).collect());
            }
            if self.fill()? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// A chunked body as it came, chunk headers and trailers included.
    fn chunked(&mut self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let line = self.line()?;
            let text = String::from_utf8_lossy(&line);
            let size = text.trim().split(';').next().unwrap_or_default();
            let size = usize::from_str_radix(size.trim(), 16)
                .map_err(|_| std::io::Error::other("bad chunk size"))?;
            out.extend_from_slice(&line);
            if size == 0 {
                loop {
                    let trailer = self.line()?;
                    out.extend_from_slice(&trailer);
                    if trailer == b"\r\n" {
                        return Ok(out);
                    }
                }
            }
            out.extend(self.exactly(size + 2)?);
        }
    }

    fn rest(&mut self) -> std::io::Result<Vec<u8>> {
        while self.fill()? > 0 {}
        Ok(std::mem::take(&mut self.buf))
    }
}

/// Ends a connection with a TCP reset rather than a clean close.
fn reset(stream: TcpStream) {
    let socket = tokio::net::TcpSocket::from_std_stream(stream);
    let _ = socket.set_zero_linger();
}

/// Holds a connection open without a word until the client gives up on it (or a minute).
fn hold(shared: &ProxyShared, mut client: TcpStream) {
    let _ = client.set_read_timeout(Some(std::time::Duration::from_millis(200)));
    let started = std::time::Instant::now();
    let mut sink = [0; 1024];
    while started.elapsed() < std::time::Duration::from_secs(60)
        && !shared.stop.load(Ordering::SeqCst)
    {
        match client.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// An S3 error response.
fn error_response(status: u16, code: &str, head_request: bool) -> Vec<u8> {
    let (reason, message) = match code {
        "SlowDown" => ("Service Unavailable", "Please reduce your request rate."),
        "ServiceUnavailable" => (
            "Service Unavailable",
            "Service is unable to handle request.",
        ),
        _ => (
            "Internal Server Error",
            "We encountered an internal error. Please try again.",
        ),
    };
    let body = if head_request {
        String::new()
    } else {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
             <Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>"
        )
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         x-amz-request-id: fault-proxy\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The fault for the `n`th request identical to `key`, from the seed.
fn choose(shared: &ProxyShared, key: &str) -> (Fault, bool, u64) {
    use rand::{Rng, SeedableRng};
    use std::hash::{Hash, Hasher};
    let n = {
        let mut seen = shared.seen.lock().unwrap();
        let n = seen.entry(key.to_string()).or_default();
        *n += 1;
        *n
    };
    // SipHash with fixed keys: the same value for the same request in every run.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (shared.seed, key, n).hash(&mut h);
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(h.finish());
    let mix = *shared.mix.lock().unwrap();
    let roll: f64 = rng.gen();
    let upstream_first = rng.gen_bool(0.5);
    let pick = rng.gen_range(0..3u8);
    let fault = if roll < mix.server_errors {
        [
            Fault::InternalError,
            Fault::ServiceUnavailable,
            Fault::SlowDown,
        ][pick as usize]
    } else if roll < mix.server_errors + mix.resets {
        [
            Fault::ResetBeforeResponse,
            Fault::ResetMidBody,
            Fault::CutShort,
        ][pick as usize]
    } else if roll < mix.server_errors + mix.resets + mix.stalls {
        [Fault::Stall, Fault::Stall, Fault::StallMidBody][pick as usize]
    } else if mix.trickle.is_some() {
        Fault::Trickle
    } else {
        Fault::Pass
    };
    (fault, upstream_first, rng.gen())
}

fn serve(shared: &ProxyShared, client: TcpStream) -> std::io::Result<()> {
    client.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let mut from_client = Reader {
        stream: client.try_clone()?,
        buf: Vec::new(),
    };
    let request = from_client.head()?;
    let mut to_client = client;
    if request
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        to_client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let body = if request.chunked() {
        from_client.chunked()?
    } else {
        from_client.exactly(request.content_length().unwrap_or(0))?
    };
    let mut parts = request.start.split(' ');
    let (method, target) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    );
    let key = format!(
        "{method} {target} {}",
        request.header("range").unwrap_or_default()
    );
    let (mut fault, upstream_first, cut_seed) = choose(shared, &key);
    shared.log.lock().unwrap().requests += 1;
    let record = |fault: Fault| {
        *shared.log.lock().unwrap().faults.entry(fault).or_default() += 1;
    };

    let before_upstream = matches!(
        fault,
        Fault::InternalError
            | Fault::ServiceUnavailable
            | Fault::SlowDown
            | Fault::ResetBeforeResponse
            | Fault::Stall
    ) && !upstream_first;
    let head_request = method == "HEAD";
    if before_upstream {
        record(fault);
        return spoil_without_response(shared, fault, to_client, head_request);
    }

    // Forward the request and take the whole response.
    let mut server = TcpStream::connect(&shared.upstream)?;
    server.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    server.write_all(&request.encode())?;
    server.write_all(&body)?;
    let mut from_server = Reader {
        stream: server,
        buf: Vec::new(),
    };
    let response = from_server.head()?;
    let status: u16 = response
        .start
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let no_body = head_request || status == 204 || status == 304 || (100..200).contains(&status);
    let response_body = if no_body {
        Vec::new()
    } else if response.chunked() {
        from_server.chunked()?
    } else if let Some(n) = response.content_length() {
        from_server.exactly(n)?
    } else {
        from_server.rest()?
    };
    drop(from_server);

    // A body to spoil half way needs two bytes at least; a response without one loses all.
    if matches!(fault, Fault::ResetMidBody | Fault::CutShort) && response_body.len() < 2 {
        fault = Fault::ResetBeforeResponse;
    }
    if fault == Fault::StallMidBody && response_body.len() < 2 {
        fault = Fault::Stall;
    }
    if fault == Fault::Trickle && response_body.len() < 1024 {
        fault = Fault::Pass;
    }
    record(fault);

    let creates_upload = method == "POST"
        && target
            .split_once('?')
            .is_some_and(|(_, q)| q.split('&').any(|p| p == "uploads" || p == "uploads="));
    if creates_upload && status == 200 {
        let text = String::from_utf8_lossy(&response_body);
        let id = text
            .split_once("<UploadId>")
            .and_then(|(_, rest)| rest.split_once("</UploadId>"))
            .map(|(id, _)| id.to_string())
            .unwrap_or_default();
        let path = target.split_once('?').map_or(target.as_str(), |(p, _)| p);
        // Path style: /bucket/key.
        let key = path
            .trim_start_matches('/')
            .split_once('/')
            .map_or("", |(_, k)| k)
            .to_string();
        shared.log.lock().unwrap().uploads.push(SeenUpload {
            key,
            upload_id: id,
            answered: matches!(fault, Fault::Pass | Fault::Trickle),
        });
    }

    let cut = if response_body.len() >= 2 {
        1 + (cut_seed as usize) % (response_body.len() - 1)
    } else {
        0
    };
    match fault {
        Fault::Pass => {
            to_client.write_all(&response.encode())?;
            to_client.write_all(&response_body)?;
        }
        Fault::Trickle => {
            let pause = shared.mix.lock().unwrap().trickle.unwrap_or_default();
            to_client.write_all(&response.encode())?;
            let piece = response_body.len().div_ceil(6);
            for (i, chunk) in response_body.chunks(piece).enumerate() {
                if i > 0 {
                    thread::sleep(pause);
                }
                to_client.write_all(chunk)?;
            }
        }
        Fault::ResetMidBody | Fault::CutShort | Fault::StallMidBody => {
            to_client.write_all(&response.encode())?;
            to_client.write_all(&response_body[..cut])?;
            match fault {
                Fault::ResetMidBody => reset(to_client),
                Fault::StallMidBody => hold(shared, to_client),
                _ => to_client.shutdown(Shutdown::Both)?,
            }
            return Ok(());
        }
        spoil => return spoil_without_response(shared, spoil, to_client, head_request),
    }
    let _ = to_client.shutdown(Shutdown::Both);
    Ok(())
}

/// The faults that leave the client without the server's answer.
fn spoil_without_response(
    shared: &ProxyShared,
    fault: Fault,
    mut client: TcpStream,
    head_request: bool,
) -> std::io::Result<()> {
    match fault {
        Fault::InternalError => {
            client.write_all(&error_response(500, "InternalError", head_request))?
        }
        Fault::ServiceUnavailable => {
            client.write_all(&error_response(503, "ServiceUnavailable", head_request))?
        }
        Fault::SlowDown => client.write_all(&error_response(503, "SlowDown", head_request))?,
        Fault::ResetBeforeResponse => {
            reset(client);
            return Ok(());
        }
        Fault::Stall => {
            hold(shared, client);
            return Ok(());
        }
        other => unreachable!("{other:?} needs the response"),
    }
    let _ = client.shutdown(Shutdown::Both);
    Ok(())
}
