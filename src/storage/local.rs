//! The local file system as a store. Keys are paths. Atomic writes use a temporary name in the
//! same folder (which no `*.parquet` glob matches and which Hive-style readers skip, as it
//! starts with `_`), then a rename.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{ObjectMeta, ObjectSink, Storage, StorageError, Uri};

/// Prefix of in-progress files; listings leave them out.
pub const TEMP_PREFIX: &str = "_tmp.";

#[derive(Debug, Default)]
pub struct LocalStorage;

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(
        "{TEMP_PREFIX}{name}.{}",
        uuid::Uuid::now_v7().simple()
    ))
}

fn not_found(path: &Path, e: io::Error) -> anyhow::Error {
    if e.kind() == io::ErrorKind::NotFound {
        anyhow::Error::new(StorageError::NotFound(path.display().to_string()))
    } else {
        anyhow::Error::new(e).context(format!("reading {}", path.display()))
    }
}

fn meta(path: &Path, m: &fs::Metadata) -> ObjectMeta {
    ObjectMeta {
        key: path.to_string_lossy().into_owned(),
        size: m.len(),
        last_modified: m.modified().ok().map(DateTime::<Utc>::from),
        etag: String::new(),
    }
}

fn walk(dir: &Path, out: &mut Vec<ObjectMeta>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let ft = entry.file_type()?;
        if ft.is_dir() {
            walk(&path, out)?;
        } else if ft.is_file() && !entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            out.push(meta(&path, &entry.metadata()?));
        }
    }
    Ok(())
}

impl Storage for LocalStorage {
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let dir = Path::new(prefix);
        let mut out = Vec::new();
        match walk(dir, &mut out) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn get(&self, key: &str) -> Result<Bytes> {
        let path = Path::new(key);
        fs::read(path)
            .map(Bytes::from)
            .map_err(|e| not_found(path, e))
    }

    fn get_ranges(&self, key: &str, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let path = Path::new(key);
        let mut f = File::open(path).map_err(|e| not_found(path, e))?;
        ranges
            .iter()
            .map(|r| {
                let mut buf = vec![0; (r.end - r.start) as usize];
                f.seek(SeekFrom::Start(r.start))?;
                f.read_exact(&mut buf)?;
                Ok(Bytes::from(buf))
            })
            .collect::<io::Result<_>>()
            .with_context(|| format!("reading {}", path.display()))
    }

    fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let path = Path::new(key);
        match fs::metadata(path) {
            Ok(m) if m.is_file() => Ok(Some(meta(path, &m))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let mut sink = self.create(key)?;
        sink.write_all(&data)
            .with_context(|| format!("writing {key}"))?;
        sink.commit()
    }

    fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        let path = Path::new(key);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let tmp = temp_path(path);
        let written = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("writing {}", tmp.display()));
        }
        // A hard link fails if the name exists: the local counterpart of If-None-Match: *.
        let linked = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
        }
    }

    fn create(&self, key: &str) -> Result<Box<dyn ObjectSink>> {
        let path = PathBuf::from(key);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let tmp = temp_path(&path);
        let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        Ok(Box::new(LocalSink {
            file: Some(BufWriter::with_capacity(1 << 20, file)),
            tmp,
            path,
        }))
    }

    fn delete(&self, key: &str) -> Result<()> {
        match fs::remove_file(key) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("deleting {key}")),
        }
    }

    fn uri(&self, key: &str) -> Uri {
        Uri::Local(PathBuf::from(key))
    }
}

struct LocalSink {
    file: Option<BufWriter<File>>,
    tmp: PathBuf,
    path: PathBuf,
}

impl Write for LocalSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.as_mut().expect("sink is open").write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("sink is open").flush()
    }
}

impl ObjectSink for LocalSink {
    fn commit(mut self: Box<Self>) -> Result<()> {
        let file = self.file.take().expect("sink is open");
        let file = file
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("writing {}", self.tmp.display()))?;
        file.sync_all()
            .with_context(|| format!("syncing {}", self.tmp.display()))?;
        fs::rename(&self.tmp, &self.path)
            .with_context(|| format!("renaming {} to {}", self.tmp.display(), self.path.display()))
    }

    fn abort(mut self: Box<Self>) -> Result<()> {
        self.file.take();
        fs::remove_file(&self.tmp).with_context(|| format!("removing {}", self.tmp.display()))
    }
}

impl Drop for LocalSink {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_is_invisible_until_commit_and_gone_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir
            .path()
            .join("a/b.parquet")
            .to_string_lossy()
            .into_owned();
        let s = LocalStorage;
        let mut sink = s.create(&key).unwrap();
        sink.write_all(b"hello").unwrap();
        assert!(s.list(dir.path().to_str().unwrap()).unwrap().is_empty());
        sink.commit().unwrap();
        assert_eq!(s.get(&key).unwrap(), Bytes::from_static(b"hello"));

        let mut sink = s.create(&key).unwrap();
        sink.write_all(b"partial").unwrap();
        drop(sink);
        assert_eq!(s.get(&key).unwrap(), Bytes::from_static(b"hello"));
        assert_eq!(fs::read_dir(dir.path().join("a")).unwrap().count(), 1);
    }

    #[test]
    fn put_if_absent_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("v/1.json").to_string_lossy().into_owned();
        assert!(LocalStorage
            .put_if_absent(&key, Bytes::from_static(b"one"))
            .unwrap());
        assert!(!LocalStorage
            .put_if_absent(&key, Bytes::from_static(b"two"))
            .unwrap());
        assert_eq!(LocalStorage.get(&key).unwrap(), Bytes::from_static(b"one"));
    }
}
