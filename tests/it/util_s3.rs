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
use nightshift::config::{S3Settings, Settings};
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
        let stores = Stores::new(&settings()).unwrap();
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
