//! The local file system as a store. Keys are paths. Atomic writes use a temporary name in the
//! same folder (which no `*.parquet` glob matches and which Hive-style readers skip, as it
//! starts with `_`), then a rename.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tracing::debug;

use super::{ErrorKind, ObjectMeta, ObjectSink, Storage, StorageError, Uri};

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

/// Reading a file that may be missing: a missing one is named as such ("PATH does not
/// exist"), any other failure is "reading PATH" over the file system's error.
fn not_found(path: &Path, e: io::Error) -> anyhow::Error {
    if e.kind() == io::ErrorKind::NotFound {
        StorageError::not_found(path.display()).into()
    } else {
        StorageError::io(format!("reading {}", path.display()), e).into()
    }
}

/// `with_context` for file system calls: the error becomes a [`StorageError`] of the kind
/// its `io::ErrorKind` says, so callers can tell a missing file, a permission problem and a
/// failure worth retrying apart, as they can on S3.
trait Doing<T> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Doing<T> for io::Result<T> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| StorageError::io(what(), e).into())
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

/// Follows a symbolic link found while listing: the metadata of what it points to, or an error
/// naming the link if nothing is there.
fn follow(link: &Path) -> Result<fs::Metadata> {
    fs::metadata(link).map_err(|e| {
        let target = fs::read_link(link)
            .map(|t| t.display().to_string())
            .unwrap_or_else(|_| "?".to_string());
        if e.kind() == io::ErrorKind::NotFound {
            anyhow::anyhow!(
                "{} is a broken symbolic link: its target {target} does not exist",
                link.display()
            )
        } else {
            StorageError::io(
                format!("following the symbolic link {} to {target}", link.display()),
                e,
            )
            .into()
        }
    })
}

/// Lists the files under `dir` into `out`, keyed by their path under `dir` (a file reached
/// through a symbolic link keeps the link's path). Links to files and folders are followed;
/// `ancestors` holds the canonical paths of the folders being walked, so a link back to one of
/// them (a loop) is an error naming the link rather than an endless descent.
fn walk(dir: &Path, ancestors: &mut Vec<PathBuf>, out: &mut Vec<ObjectMeta>) -> Result<()> {
    // A folder or file removed while it is listed (another writer deleting its objects) is
    // simply not in the listing, as an S3 listing may or may not show a concurrent delete.
    let entries = match fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        r => r.doing(|| format!("listing {}", dir.display()))?,
    };
    for entry in entries {
        let entry = entry.doing(|| format!("listing {}", dir.display()))?;
        let path = entry.path();
        let ft = entry
            .file_type()
            .doing(|| format!("reading {}", path.display()))?;
        let (is_dir, is_file, m) = if ft.is_symlink() {
            let m = follow(&path)?;
            (m.is_dir(), m.is_file(), Some(m))
        } else {
            (ft.is_dir(), ft.is_file(), None)
        };
        if is_dir {
            let real = match ancestors.last() {
                Some(parent) if !ft.is_symlink() => parent.join(entry.file_name()),
                _ => fs::canonicalize(&path).doing(|| format!("resolving {}", path.display()))?,
            };
            if ancestors.contains(&real) {
                bail!(
                    "{} is a symbolic link to {}, a folder that contains it: following it would \
                     loop forever",
                    path.display(),
                    real.display()
                );
            }
            ancestors.push(real);
            walk(&path, ancestors, out)?;
            ancestors.pop();
        } else if is_file && !entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            let m = match m {
                Some(m) => m,
                None => match entry.metadata() {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    r => r.doing(|| format!("reading {}", path.display()))?,
                },
            };
            out.push(meta(&path, &m));
        }
    }
    Ok(())
}

/// Removes the temporary files (`_tmp.*`) under `dir` last modified before `older_than`.
/// Symbolic links are not followed: temporary files are only ever made in place, and a link may
/// lead out of the prefix.
fn remove_temps(dir: &Path, older_than: DateTime<Utc>, removed: &mut usize) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        // Gone meanwhile (a concurrent cleanup or rerun): nothing left to remove there.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        // A prefix naming a file has no folder of temporary files under it.
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => return Ok(()),
        Err(e) => return Err(e).doing(|| format!("listing {}", dir.display())),
    };
    for entry in entries {
        let entry = entry.doing(|| format!("listing {}", dir.display()))?;
        let path = entry.path();
        let ft = entry
            .file_type()
            .doing(|| format!("reading {}", path.display()))?;
        if ft.is_dir() {
            remove_temps(&path, older_than, removed)?;
            continue;
        }
        if !ft.is_file() || !entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let modified = match entry.metadata().and_then(|m| m.modified()) {
            Ok(t) => DateTime::<Utc>::from(t),
            // Renamed into place or removed since the listing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).doing(|| format!("reading {}", path.display())),
        };
        if modified >= older_than {
            continue;
        }
        match fs::remove_file(&path) {
            Ok(()) => {
                debug!(path = %path.display(), %modified, "Stale temporary file removed.");
                *removed += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).doing(|| format!("removing {}", path.display())),
        }
    }
    Ok(())
}

impl Storage for LocalStorage {
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let dir = Path::new(prefix);
        // A missing prefix lists empty, and so does a file (as on S3, where nothing is under
        // `x.parquet/` when `x.parquet` is an object); a broken link is an error naming it.
        let root = match fs::symlink_metadata(dir) {
            Ok(m) if m.file_type().is_symlink() => {
                follow(dir).with_context(|| format!("listing {}", dir.display()))?
            }
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).doing(|| format!("listing {}", dir.display())),
        };
        if !root.is_dir() {
            return Ok(Vec::new());
        }
        let real = fs::canonicalize(dir).doing(|| format!("resolving {}", dir.display()))?;
        let mut out = Vec::new();
        walk(dir, &mut vec![real], &mut out)?;
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
            .doing(|| format!("reading {}", path.display()))
    }

    fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let path = Path::new(key);
        match fs::metadata(path) {
            Ok(m) if m.is_file() => Ok(Some(meta(path, &m))),
            Ok(_) => Ok(None),
            // A broken link is named as one, not taken for a missing object.
            Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_symlink() => follow(path).map(|_| None),
                _ => Ok(None),
            },
            Err(e) => Err(e).doing(|| format!("reading {}", path.display())),
        }
    }

    fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let mut sink = self.create(key)?;
        sink.write_all(&data).doing(|| format!("writing {key}"))?;
        sink.commit()
    }

    fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        let path = Path::new(key);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).doing(|| format!("creating {}", dir.display()))?;
        }
        let tmp = temp_path(path);
        let written = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e).doing(|| format!("writing {}", tmp.display()));
        }
        // A hard link fails if the name exists: the local counterpart of If-None-Match: *.
        let linked = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e).doing(|| format!("creating {}", path.display())),
        }
    }

    fn create(&self, key: &str) -> Result<Box<dyn ObjectSink>> {
        let path = PathBuf::from(key);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).doing(|| format!("creating {}", dir.display()))?;
        }
        let tmp = temp_path(&path);
        let file = File::create(&tmp).doing(|| format!("creating {}", tmp.display()))?;
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
            Err(e) => Err(e).doing(|| format!("deleting {key}")),
        }
    }

    fn uri(&self, key: &str) -> Uri {
        Uri::Local(PathBuf::from(key))
    }

    fn remove_stale_temps(&self, prefix: &str, older_than: DateTime<Utc>) -> Result<usize> {
        let mut removed = 0;
        remove_temps(Path::new(prefix), older_than, &mut removed)?;
        Ok(removed)
    }
}

struct LocalSink {
    file: Option<BufWriter<File>>,
    tmp: PathBuf,
    path: PathBuf,
}

/// A write error for an encoder, which sees only `io::Error`: the same error, with the
/// [`StorageError`] kind inside it, so a run can still tell a failure worth retrying (a
/// network file system timing out) from a mistake. Kind and message stay as they were.
fn with_kind(e: io::Error) -> io::Error {
    let kind = e.kind();
    io::Error::new(
        kind,
        StorageError::new(ErrorKind::of_io(kind), e.to_string()),
    )
}

impl Write for LocalSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file
            .as_mut()
            .expect("sink is open")
            .write(buf)
            .map_err(with_kind)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file
            .as_mut()
            .expect("sink is open")
            .flush()
            .map_err(with_kind)
    }
}

impl ObjectSink for LocalSink {
    fn commit(mut self: Box<Self>) -> Result<()> {
        let file = self.file.take().expect("sink is open");
        let file = file
            .into_inner()
            .map_err(|e| e.into_error())
            .doing(|| format!("writing {}", self.tmp.display()))?;
        file.sync_all()
            .doing(|| format!("syncing {}", self.tmp.display()))?;
        fs::rename(&self.tmp, &self.path)
            .doing(|| format!("renaming {} to {}", self.tmp.display(), self.path.display()))
    }

    fn abort(mut self: Box<Self>) -> Result<()> {
        self.file.take();
        fs::remove_file(&self.tmp).doing(|| format!("removing {}", self.tmp.display()))
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
    fn a_missing_file_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let missing = key(dir.path(), "dt=1/part-0.parquet");
        for err in [
            LocalStorage.get(&missing).unwrap_err(),
            LocalStorage
                .get_ranges(&missing, std::slice::from_ref(&(0..4)))
                .unwrap_err(),
        ] {
            assert_eq!(ErrorKind::of(&err), Some(ErrorKind::NotFound), "{err:#}");
            assert_eq!(format!("{err:#}"), format!("{missing} does not exist"));
        }
        // A folder is there, but is no object: not a missing one either.
        let err = LocalStorage.get(dir.path().to_str().unwrap()).unwrap_err();
        assert_eq!(ErrorKind::of(&err), Some(ErrorKind::Other), "{err:#}");
    }

    #[cfg(unix)]
    #[test]
    fn a_file_without_permission_is_access_denied() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret.parquet");
        fs::write(&file, b"x").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o000)).unwrap();
        let locked = dir.path().join("locked");
        fs::create_dir(&locked).unwrap();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o500)).unwrap();
        if fs::read(&file).is_ok() {
            // Root reads anything; the mapping itself is tested in storage::tests.
            eprintln!("skipped: running with permission to read any file");
            return;
        }
        let err = LocalStorage.get(file.to_str().unwrap()).unwrap_err();
        assert_eq!(
            ErrorKind::of(&err),
            Some(ErrorKind::AccessDenied),
            "{err:#}"
        );
        assert_eq!(
            format!("{err:#}"),
            format!(
                "reading {}: Permission denied (os error 13)",
                file.display()
            )
        );
        let err = LocalStorage
            .put(&key(&locked, "x.json"), Bytes::from_static(b"{}"))
            .unwrap_err();
        assert_eq!(
            ErrorKind::of(&err),
            Some(ErrorKind::AccessDenied),
            "{err:#}"
        );
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

    /// A path under a temp dir, as a key.
    fn key(dir: &Path, rel: &str) -> String {
        dir.join(rel).to_string_lossy().into_owned()
    }

    fn keys(listed: &[ObjectMeta], dir: &Path) -> Vec<String> {
        listed
            .iter()
            .map(|m| {
                Path::new(&m.key)
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_to_files_and_folders_are_listed_under_the_link_path() {
        use std::os::unix::fs::symlink;
        let data = tempfile::tempdir().unwrap();
        fs::create_dir_all(data.path().join("day/nested")).unwrap();
        fs::write(data.path().join("day/a.parquet"), b"aaaa").unwrap();
        fs::write(data.path().join("day/nested/b.parquet"), b"bb").unwrap();
        fs::write(data.path().join("c.parquet"), b"c").unwrap();

        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("dt=1");
        fs::create_dir_all(&part).unwrap();
        symlink(data.path().join("c.parquet"), part.join("part-0.parquet")).unwrap();
        symlink(data.path().join("day"), part.join("linked")).unwrap();
        fs::write(part.join("real.parquet"), b"real").unwrap();
        // A link named like a temporary file stays hidden, as the file would.
        symlink(data.path().join("c.parquet"), part.join("_tmp.x.parquet.1")).unwrap();

        let listed = LocalStorage.list(part.to_str().unwrap()).unwrap();
        assert_eq!(
            keys(&listed, &part),
            [
                "linked/a.parquet",
                "linked/nested/b.parquet",
                "part-0.parquet",
                "real.parquet"
            ]
        );
        // Sizes are the targets'.
        let sizes: Vec<u64> = listed.iter().map(|m| m.size).collect();
        assert_eq!(sizes, [4, 2, 1, 4]);
        assert_eq!(
            LocalStorage
                .get(&key(&part, "linked/nested/b.parquet"))
                .unwrap(),
            Bytes::from_static(b"bb")
        );

        // The prefix itself may be a link.
        let outer = dir.path().join("outer");
        symlink(&part, &outer).unwrap();
        assert_eq!(LocalStorage.list(outer.to_str().unwrap()).unwrap().len(), 4);
    }

    #[cfg(unix)]
    #[test]
    fn symlink_loops_are_errors_naming_the_link() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("dt=1");
        fs::create_dir_all(part.join("a/b")).unwrap();
        fs::write(part.join("a/b/x.parquet"), b"x").unwrap();

        // A link to an ancestor, deep down.
        let up = part.join("a/b/up");
        symlink("../..", &up).unwrap();
        let err = LocalStorage.list(part.to_str().unwrap()).unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains(&up.display().to_string()), "{message}");
        assert!(message.contains("loop"), "{message}");
        fs::remove_file(&up).unwrap();

        // A link to the folder it is in, and one to itself.
        let here = part.join("a/here");
        symlink(".", &here).unwrap();
        let message = format!(
            "{:#}",
            LocalStorage.list(part.to_str().unwrap()).unwrap_err()
        );
        assert!(message.contains(&here.display().to_string()), "{message}");
        fs::remove_file(&here).unwrap();

        let me = part.join("me");
        symlink("me", &me).unwrap();
        let message = format!(
            "{:#}",
            LocalStorage.list(part.to_str().unwrap()).unwrap_err()
        );
        assert!(message.contains(&me.display().to_string()), "{message}");
        fs::remove_file(&me).unwrap();

        // Two links to the same folder are no loop: both are listed.
        let shared = dir.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::write(shared.join("s.parquet"), b"s").unwrap();
        symlink(&shared, part.join("one")).unwrap();
        symlink(&shared, part.join("two")).unwrap();
        let listed = LocalStorage.list(part.to_str().unwrap()).unwrap();
        assert_eq!(
            keys(&listed, &part),
            ["a/b/x.parquet", "one/s.parquet", "two/s.parquet"]
        );
    }

    #[cfg(unix)]
    #[test]
    fn dangling_symlinks_are_errors_naming_them() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("dt=1");
        fs::create_dir_all(&part).unwrap();
        fs::write(part.join("ok.parquet"), b"ok").unwrap();
        let link = part.join("gone.parquet");
        symlink(dir.path().join("nowhere.parquet"), &link).unwrap();

        let err = LocalStorage.list(part.to_str().unwrap()).unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains(&link.display().to_string()), "{message}");
        assert!(message.contains("broken symbolic link"), "{message}");
        assert_ne!(ErrorKind::of(&err), Some(ErrorKind::NotFound), "{message}");

        // Named directly, too.
        let message = format!(
            "{:#}",
            LocalStorage.head(link.to_str().unwrap()).unwrap_err()
        );
        assert!(message.contains("broken symbolic link"), "{message}");
        // A prefix that is a broken link.
        let message = format!(
            "{:#}",
            LocalStorage.list(link.to_str().unwrap()).unwrap_err()
        );
        assert!(message.contains("broken symbolic link"), "{message}");
    }

    #[test]
    fn listing_a_missing_prefix_or_a_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(LocalStorage
            .list(&key(dir.path(), "nope"))
            .unwrap()
            .is_empty());
        fs::write(dir.path().join("f.parquet"), b"x").unwrap();
        assert!(LocalStorage
            .list(&key(dir.path(), "f.parquet"))
            .unwrap()
            .is_empty());
    }

    fn set_age(path: &Path, age: std::time::Duration) {
        let f = File::options().write(true).open(path).unwrap();
        f.set_modified(std::time::SystemTime::now() - age).unwrap();
    }

    #[test]
    fn stale_temp_files_are_removed_and_fresh_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let hour = std::time::Duration::from_secs(3600);
        let old_temp = dir.path().join("out/dt=1/_tmp.part-0.parquet.0191");
        let deep_temp = dir.path().join("out/dt=1/sub/_tmp.part-1.parquet.0192");
        let fresh_temp = dir.path().join("out/dt=1/_tmp.part-2.parquet.0193");
        let old_output = dir.path().join("out/dt=1/part-0.parquet");
        let outside = dir.path().join("elsewhere/_tmp.x.0194");
        for p in [&old_temp, &deep_temp, &fresh_temp, &old_output, &outside] {
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, b"x").unwrap();
        }
        for p in [&old_temp, &deep_temp, &old_output, &outside] {
            set_age(p, 2 * hour);
        }
        let cutoff = Utc::now() - chrono::Duration::hours(1);
        let prefix = key(dir.path(), "out");
        assert_eq!(LocalStorage.remove_stale_temps(&prefix, cutoff).unwrap(), 2);
        assert!(!old_temp.exists() && !deep_temp.exists());
        assert!(fresh_temp.exists() && old_output.exists() && outside.exists());
        // Nothing left to do the second time, and a missing prefix or a file is no error.
        assert_eq!(LocalStorage.remove_stale_temps(&prefix, cutoff).unwrap(), 0);
        let missing = key(dir.path(), "missing");
        assert_eq!(
            LocalStorage.remove_stale_temps(&missing, cutoff).unwrap(),
            0
        );
        let file = old_output.to_str().unwrap();
        assert_eq!(LocalStorage.remove_stale_temps(file, cutoff).unwrap(), 0);
    }

    #[cfg(unix)]
    #[test]
    fn stale_temp_cleanup_does_not_follow_symlinks() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let theirs = dir.path().join("theirs/_tmp.keep.0191");
        fs::create_dir_all(theirs.parent().unwrap()).unwrap();
        fs::write(&theirs, b"x").unwrap();
        set_age(&theirs, std::time::Duration::from_secs(7200));
        fs::create_dir_all(dir.path().join("out")).unwrap();
        symlink(dir.path().join("theirs"), dir.path().join("out/link")).unwrap();
        symlink(&theirs, dir.path().join("out/_tmp.link.0192")).unwrap();
        let prefix = key(dir.path(), "out");
        let future = Utc::now() + chrono::Duration::hours(1);
        assert_eq!(LocalStorage.remove_stale_temps(&prefix, future).unwrap(), 0);
        assert!(theirs.exists());
    }
}
