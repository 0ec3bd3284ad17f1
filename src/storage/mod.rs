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

use anyhow::{bail, Result};
use bytes::Bytes;
use chrono::{DateTime, Utc};

pub use local::LocalStorage;
pub use s3::{
    s3_client, s3_error_kind, S3Error, S3ErrorKind, S3Settings, S3Storage, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_FIRST_BYTE_TIMEOUT, DEFAULT_INACTIVITY_TIMEOUT, DEFAULT_MAX_ATTEMPTS,
    DEFAULT_PART_SIZE, DEFAULT_REGION, DEFAULT_TIMEOUT_SECS, MIN_PART_SIZE,
    UPLOAD_FLOOR_BYTES_PER_SEC,
};

/// Where an object or prefix lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Uri {
    /// A local path (relative paths are relative to the working directory).
    Local(PathBuf),
    /// `s3://bucket/key`.
    S3 { bucket: String, key: String },
}

impl Uri {
    /// Parses `s3://bucket/key`, `file:///path` or a plain path.
    pub fn parse(s: &str) -> Result<Self> {
        if s.is_empty() {
            bail!("empty URI");
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            let valid_bucket = (3..=63).contains(&bucket.len())
                && bucket
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
            if !valid_bucket {
                bail!("invalid S3 bucket name '{bucket}' in '{s}' (3 to 63 lowercase letters, digits, '-' or '.')");
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
            bail!(
                "unsupported URI scheme '{scheme}://' in '{s}'; use a local path, file:// or s3://"
            );
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

/// Errors callers branch on. Everything else is `anyhow` with context.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0} does not exist")]
    NotFound(String),
}

/// True when the error chain says the object does not exist.
pub fn is_not_found(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<StorageError>(),
            Some(StorageError::NotFound(_))
        )
    })
}

/// The storage operations nightshift needs, blocking. Keys are full keys inside the store.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Every object under `prefix` (taken as a folder), sorted by key, all pages.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;
    /// A whole object. Missing objects give [`StorageError::NotFound`].
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
