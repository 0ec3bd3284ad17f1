//! Object storage: the local file system and S3-compatible servers behind one small interface.
//!
//! Everything nightshift reads or writes (inputs, outputs, the model registry, run records)
//! goes through [`Storage`], addressed by a [`Uri`]. Writes are atomic per object: an object is
//! visible under its name only once complete.

mod local;
mod s3;

use std::fmt;
use std::io::Write;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use bytes::Bytes;
use chrono::{DateTime, Utc};

pub use local::LocalStorage;
pub use s3::{
    s3_client, S3Settings, S3Storage, DEFAULT_CONNECT_TIMEOUT, DEFAULT_FIRST_BYTE_TIMEOUT,
    DEFAULT_INACTIVITY_TIMEOUT, DEFAULT_MAX_ATTEMPTS, DEFAULT_PART_SIZE, DEFAULT_REGION,
    DEFAULT_TIMEOUT_SECS, MIN_PART_SIZE, UPLOAD_FLOOR_BYTES_PER_SEC,
};

/// Where an object or prefix lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Uri {
    /// A local path (relative paths are relative to the working directory).
    Local(PathBuf),
    /// `s3://bucket/key`.
    S3 { bucket: String, key: String },
}

/// Why a text is not a [`Uri`]. Each variant keeps the text it was parsed from (`uri`), so a
/// caller that parsed something derived from what the user wrote (a template with its
/// placeholders filled in) can name the user's text instead: [`UriError::of_text`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error("empty URI")]
    Empty,
    #[error(
        "invalid S3 bucket name '{bucket}' in '{uri}' (3 to 63 lowercase letters, digits, '-' or '.')"
    )]
    InvalidBucket { uri: String, bucket: String },
    #[error("unsupported URI scheme '{scheme}://' in '{uri}'; use a local path, file:// or s3://")]
    UnsupportedScheme { uri: String, scheme: String },
}

impl UriError {
    /// The same mistake, told of `text`: what the user wrote, when the parsed URI was made
    /// from it by filling in placeholders (which hold no `/`). The bucket is named as written
    /// too: the filled-in one is not in the file.
    pub fn of_text(self, text: &str) -> Self {
        match self {
            UriError::Empty => UriError::Empty,
            UriError::InvalidBucket { bucket, .. } => UriError::InvalidBucket {
                uri: text.to_string(),
                bucket: match text.strip_prefix("s3://") {
                    Some(rest) => rest.split_once('/').map_or(rest, |(b, _)| b).to_string(),
                    None => bucket,
                },
            },
            UriError::UnsupportedScheme { scheme, .. } => UriError::UnsupportedScheme {
                uri: text.to_string(),
                scheme,
            },
        }
    }
}

impl Uri {
    /// Parses `s3://bucket/key`, `file:///path` or a plain path.
    pub fn parse(s: &str) -> Result<Self, UriError> {
        if s.is_empty() {
            return Err(UriError::Empty);
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            let valid_bucket = (3..=63).contains(&bucket.len())
                && bucket
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
            if !valid_bucket {
                return Err(UriError::InvalidBucket {
                    uri: s.to_string(),
                    bucket: bucket.to_string(),
                });
            }
            return Ok(Uri::S3 {
                bucket: bucket.to_string(),
                key: key.to_string(),
            });
        }
        if let Some(path) = s.strip_prefix("file://") {
            return Ok(Uri::Local(PathBuf::from(path)));
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(UriError::UnsupportedScheme {
                uri: s.to_string(),
                scheme: scheme.to_string(),
            });
        }
        Ok(Uri::Local(PathBuf::from(s)))
    }

    /// The key of this URI inside its storage.
    pub fn key(&self) -> String {
        match self {
            Uri::Local(p) => p.to_string_lossy().into_owned(),
            Uri::S3 { key, .. } => key.clone(),
        }
    }

    /// A child of this URI taken as a prefix (`out/x/` + `a.parquet`).
    pub fn join(&self, name: &str) -> Uri {
        match self {
            Uri::Local(p) => Uri::Local(p.join(name)),
            Uri::S3 { bucket, key } => Uri::S3 {
                bucket: bucket.clone(),
                key: join_key(key, name),
            },
        }
    }
}

pub(crate) fn join_key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('/') {
        format!("{prefix}{name}")
    } else {
        format!("{prefix}/{name}")
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Local(p) => write!(f, "{}", p.display()),
            Uri::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
        }
    }
}

/// An object found by listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Full key (for local storage, the path).
    pub key: String,
    pub size: u64,
    pub last_modified: Option<DateTime<Utc>>,
    /// S3's ETag; empty locally.
    pub etag: String,
}

/// What a failed storage operation means to a caller that decides on it: whether to look
/// elsewhere, to retry later or to give up. Both stores report the same kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The object does not exist (a missing file, S3's `NoSuchKey`).
    NotFound,
    /// The bucket does not exist: a configuration mistake, not a missing object.
    NoSuchBucket,
    /// The credentials (or, locally, the file permissions) do not allow this.
    AccessDenied,
    /// Throttling, 5xx, timeouts, connection failures, interrupted reads: still failing after
    /// the client's own retries, but worth trying again later.
    Transient,
    /// Anything else (a bad request, an invalid range, a full disk, ...).
    Other,
}

impl ErrorKind {
    /// The kind of the first [`StorageError`] in an error chain; `None` if storage did not
    /// cause it. A storage error that travelled through an [`std::io::Error`] (a sink's
    /// `write`, called by an encoder) is found too.
    pub fn of(e: &anyhow::Error) -> Option<ErrorKind> {
        e.chain().find_map(|c| {
            c.downcast_ref::<StorageError>()
                .or_else(|| {
                    // `io::Error::source` skips the error it wraps, so look inside.
                    c.downcast_ref::<std::io::Error>()
                        .and_then(|io| io.get_ref())
                        .and_then(|inner| inner.downcast_ref::<StorageError>())
                })
                .map(StorageError::kind)
        })
    }
}

/// A failed storage operation, of either store, in one line without credentials. Callers
/// branch on its [`kind`](StorageError::kind) (found in an `anyhow` chain by
/// [`ErrorKind::of`]), never on its message.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StorageError {
    kind: ErrorKind,
    message: String,
    /// The file system's error, for local files: kept in the chain, so `{:#}` reads
    /// `reading PATH: Permission denied (os error 13)` as a context over it would.
    #[source]
    io: Option<std::io::Error>,
}

impl StorageError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            io: None,
        }
    }

    /// A missing object, named by its URI or path.
    pub fn not_found(what: impl fmt::Display) -> Self {
        Self::new(ErrorKind::NotFound, format!("{what} does not exist"))
    }

    /// A file system error while `doing` something (`"reading PATH"`), of the kind its
    /// `io::ErrorKind` says.
    pub fn io(doing: impl Into<String>, e: std::io::Error) -> Self {
        Self {
            kind: ErrorKind::of_io(e.kind()),
            message: doing.into(),
            io: Some(e),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl ErrorKind {
    /// What a file system error means to a caller.
    pub(crate) fn of_io(kind: std::io::ErrorKind) -> ErrorKind {
        use std::io::ErrorKind as K;
        match kind {
            K::NotFound => ErrorKind::NotFound,
            K::PermissionDenied | K::ReadOnlyFilesystem => ErrorKind::AccessDenied,
            // A network file system can time out or drop its connection, and a read can be
            // interrupted: the same operation may well succeed later.
            K::Interrupted
            | K::TimedOut
            | K::WouldBlock
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::ConnectionRefused
            | K::NotConnected
            | K::BrokenPipe
            | K::ResourceBusy
            | K::StaleNetworkFileHandle => ErrorKind::Transient,
            _ => ErrorKind::Other,
        }
    }
}

/// The storage operations nightshift needs, blocking. Keys are full keys inside the store.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Every object under `prefix` (taken as a folder), sorted by key, all pages.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;
    /// A whole object. A missing object is a [`StorageError`] of kind [`ErrorKind::NotFound`].
    fn get(&self, key: &str) -> Result<Bytes>;
    /// Byte ranges of one object, fetched concurrently where the store allows.
    fn get_ranges(&self, key: &str, ranges: &[Range<u64>]) -> Result<Vec<Bytes>>;
    /// Whether readers should fetch ahead of decoding: true for a store behind a network,
    /// where a fetch waits on the network while a core could decode. Local files are read
    /// faster than they are decoded, and fetching them ahead only costs memory.
    fn fetch_ahead(&self) -> bool {
        false
    }
    /// Size and time of one object, `None` if missing.
    fn head(&self, key: &str) -> Result<Option<ObjectMeta>>;
    /// Writes a whole object, replacing any old one atomically.
    fn put(&self, key: &str, data: Bytes) -> Result<()>;
    /// Writes a whole object only if none exists under the key; `false` if one did.
    fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool>;
    /// Starts a streamed write; the object appears only on [`ObjectSink::commit`].
    fn create(&self, key: &str) -> Result<Box<dyn ObjectSink>>;
    /// Removes an object; a missing one is not an error.
    fn delete(&self, key: &str) -> Result<()>;
    /// The URI of a key, for messages.
    fn uri(&self, key: &str) -> Uri;
    /// Removes what interrupted writes under `prefix` (taken as a folder, searched at every
    /// depth) left behind and that was started before `older_than`: temporary `_tmp.*` objects
    /// and, on S3, unfinished multipart uploads, which a killed process cannot abort. Returns how
    /// many it removed. Writes still in progress are temporaries too, so `older_than` must lie
    /// well before the start of any write that may still be running; a missing prefix has
    /// nothing to remove.
    fn remove_stale_temps(&self, prefix: &str, older_than: DateTime<Utc>) -> Result<usize>;
}

/// A streamed write in progress. Dropping it without `commit` aborts it.
pub trait ObjectSink: Write + Send {
    /// Makes the object visible, complete.
    fn commit(self: Box<Self>) -> Result<()>;
    /// Discards everything written; nothing becomes visible.
    fn abort(self: Box<Self>) -> Result<()>;
}

/// A store and a key or prefix inside it.
#[derive(Debug, Clone)]
pub struct Location {
    pub store: Arc<dyn Storage>,
    pub key: String,
}

impl Location {
    pub fn uri(&self) -> Uri {
        self.store.uri(&self.key)
    }

    pub fn join(&self, name: &str) -> Location {
        let key = match self.uri() {
            Uri::Local(_) => PathBuf::from(&self.key)
                .join(name)
                .to_string_lossy()
                .into_owned(),
            Uri::S3 { .. } => join_key(&self.key, name),
        };
        Location {
            store: Arc::clone(&self.store),
            key,
        }
    }

    /// The key of an object relative to this prefix.
    pub fn relative<'k>(&self, key: &'k str) -> &'k str {
        let prefix = self.key.trim_end_matches('/');
        key.strip_prefix(prefix)
            .map_or(key, |r| r.trim_start_matches('/'))
    }
}

/// Opens the store for URIs, one client per kind, shared by all jobs. Clones share everything.
#[derive(Debug, Clone)]
pub struct Stores {
    local: Arc<LocalStorage>,
    s3: Arc<s3::S3Stores>,
}

impl Default for Stores {
    fn default() -> Self {
        Self::new(S3Settings::default())
    }
}

impl Stores {
    /// Keeps the S3 settings; the S3 client and its runtime start on the first `s3://` URI, so
    /// purely local setups never pay for them.
    pub fn new(s3: S3Settings) -> Self {
        Self {
            local: Arc::new(LocalStorage),
            s3: Arc::new(s3::S3Stores::new(s3)),
        }
    }

    pub fn locate(&self, uri: &Uri) -> Result<Location> {
        match uri {
            Uri::Local(p) => Ok(Location {
                store: self.local.clone(),
                key: p.to_string_lossy().into_owned(),
            }),
            Uri::S3 { bucket, key } => Ok(Location {
                store: self.s3.bucket(bucket)?,
                key: key.clone(),
            }),
        }
    }

    /// A handle on the S3 store of one bucket (sharing the client, runtime and state of the
    /// one `locate` hands out), for its S3-only knobs such as the part size.
    pub fn s3(&self, bucket: &str) -> Result<S3Storage> {
        Ok(S3Storage::clone(&*self.s3.bucket(bucket)?))
    }
}

/// Writes to a sink and aborts it if anything fails, so no partial object is left.
pub fn write_with<F>(mut sink: Box<dyn ObjectSink>, f: F) -> Result<()>
where
    F: FnOnce(&mut dyn Write) -> Result<()>,
{
    match f(&mut sink) {
        Ok(()) => sink.commit(),
        Err(e) => {
            let _ = sink.abort();
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_errors_say_what_is_wrong_and_where() {
        assert_eq!(Uri::parse(""), Err(UriError::Empty));
        let err = Uri::parse("gs://b/x").unwrap_err();
        assert_eq!(
            err,
            UriError::UnsupportedScheme {
                uri: "gs://b/x".into(),
                scheme: "gs".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "unsupported URI scheme 'gs://' in 'gs://b/x'; use a local path, file:// or s3://"
        );
        let err = Uri::parse("s3://Big/x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid S3 bucket name 'Big' in 's3://Big/x' (3 to 63 lowercase letters, digits, \
             '-' or '.')"
        );
        // Told of the template it was filled in from: the template's text, bucket included.
        let err = Uri::parse("s3://x-B/in/dt=x/").unwrap_err();
        assert_eq!(
            err.of_text("s3://{job}-B/in/dt={date}/"),
            UriError::InvalidBucket {
                uri: "s3://{job}-B/in/dt={date}/".into(),
                bucket: "{job}-B".into()
            }
        );
        let err = Uri::parse("x://in/").unwrap_err().of_text("{job}://in/");
        assert_eq!(
            err.to_string(),
            "unsupported URI scheme 'x://' in '{job}://in/'; use a local path, file:// or s3://"
        );
    }

    #[test]
    fn file_system_errors_have_the_kind_callers_decide_on() {
        use std::io::{Error, ErrorKind as Io};
        let kind = |k| StorageError::io("reading x", Error::from(k)).kind();
        assert_eq!(kind(Io::NotFound), ErrorKind::NotFound);
        assert_eq!(kind(Io::PermissionDenied), ErrorKind::AccessDenied);
        assert_eq!(kind(Io::Interrupted), ErrorKind::Transient);
        assert_eq!(kind(Io::TimedOut), ErrorKind::Transient);
        assert_eq!(kind(Io::StorageFull), ErrorKind::Other);
        // Found below contexts, and inside an io::Error an encoder passed on.
        let e = anyhow::Error::new(StorageError::io("reading x", Error::from(Io::TimedOut)))
            .context("scoring x");
        assert_eq!(ErrorKind::of(&e), Some(ErrorKind::Transient));
        assert_eq!(format!("{e:#}"), "scoring x: reading x: timed out");
        let e = anyhow::Error::new(Error::other(StorageError::not_found("s3://b/k")));
        assert_eq!(ErrorKind::of(&e), Some(ErrorKind::NotFound));
        assert_eq!(ErrorKind::of(&anyhow::anyhow!("b/k does not exist")), None);
    }

    #[test]
    fn parses_uris() {
        assert_eq!(
            Uri::parse("s3://my-bucket/a/b/").unwrap(),
            Uri::S3 {
                bucket: "my-bucket".into(),
                key: "a/b/".into()
            }
        );
        assert_eq!(
            Uri::parse("file:///tmp/x").unwrap(),
            Uri::Local("/tmp/x".into())
        );
        assert_eq!(Uri::parse("out/x").unwrap(), Uri::Local("out/x".into()));
        assert!(Uri::parse("gs://b/x").is_err());
        assert!(Uri::parse("s3://B/x").is_err());
        assert_eq!(
            Uri::parse("s3://bkt/a").unwrap().join("b").to_string(),
            "s3://bkt/a/b"
        );
    }
}
