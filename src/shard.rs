//! Sharded runs: one date's input objects split over N processes (Kubernetes Indexed Jobs,
//! AWS Batch array jobs), each scoring its share, the last one to finish committing the date.
//!
//! Objects go to shards by a stable hash of their output name, so a shard owns the same names
//! whatever else the partition holds, and a retried shard redoes only its own objects. Each
//! shard writes `OUTPUT/_shards/RUN/I-of-N.json` (its outputs, as listed after its commits)
//! after its outputs; `RUN` is a key all shards of one sharded run share (the Indexed Job's
//! uid). A shard that finds all N manifests of its run writes `_SUCCESS` with a conditional
//! create, so the date is committed exactly once, after the last shard.

use std::collections::{BTreeMap, HashSet};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::record::{RunManifest, SUCCESS_MARKER};
pub use crate::record::{Shard, ShardSet};
use crate::storage::{ErrorKind, Location};

impl Shard {
    pub fn new(index: u32, count: u32, run: String) -> Result<Self> {
        if count == 0 || index >= count {
            bail!("shard index {index} is not in 0..{count}");
        }
        let valid = !run.is_empty()
            && run.len() <= 128
            && run
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if !valid || run.starts_with('.') {
            bail!("shard run key '{run}' must be 1 to 128 letters, digits, '-', '_' or '.'");
        }
        Ok(Self { index, count, run })
    }

    /// Whether an output (or quarantine) name is this shard's.
    pub fn owns(&self, name: &str) -> bool {
        shard_of(name, self.count) == self.index
    }

    /// `I-of-N`, as in lease and manifest names.
    pub fn label(&self) -> String {
        format!("{:04}-of-{:04}", self.index, self.count)
    }

    /// Where this run's shard manifests live.
    pub fn dir(&self, output: &Location) -> Location {
        output.join("_shards").join(&self.run)
    }

    pub fn manifest(&self, output: &Location) -> Location {
        self.dir(output).join(&format!("{}.json", self.label()))
    }

    /// Where this shard keeps its part of the date's drift profile, beside its manifest
    /// (written before it: a shard with a manifest has stored its part).
    pub fn profile(&self, output: &Location) -> Location {
        self.dir(output)
            .join(&format!("{}.profile.json", self.label()))
    }
}

/// The shard of `count` that owns a name: the first 8 bytes of its SHA-256, modulo `count`.
pub fn shard_of(name: &str, count: u32) -> u32 {
    let digest = Sha256::digest(name.as_bytes());
    let n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    (n % u64::from(count.max(1))) as u32
}

/// Removes this shard's manifests (of this run and of earlier sharded runs), before it
/// changes any output: until it writes one again, its run cannot be complete.
pub fn forget(shard: &Shard, output: &Location) -> Result<()> {
    let root = output.join("_shards");
    let mine = [
        format!("{}.json", shard.label()),
        format!("{}.profile.json", shard.label()),
    ];
    for o in root.store.list(&root.key)? {
        let name = root.relative(&o.key).rsplit('/').next().unwrap_or("");
        if mine.iter().any(|m| m == name) {
            root.store.delete(&o.key)?;
        }
    }
    Ok(())
}

/// Data objects of a prefix by name relative to it: (size, ETag).
pub type Listing = BTreeMap<String, (u64, String)>;

/// Called by a shard after it wrote its manifest: if every shard of the run has, reports the
/// date's drift (`drift`, from every shard's stored profile) and writes the date's `_SUCCESS`
/// (once, whichever shard gets there first) and returns it.
pub fn complete(
    shard: &Shard,
    output: &Location,
    quarantine: &Location,
    mut date_manifest: RunManifest,
    list: impl FnOnce() -> Result<(Listing, Listing)>,
    drift: impl FnOnce() -> Result<Option<crate::drift::DriftSummary>>,
    before_commit: impl Fn() -> Result<()>,
) -> Result<Option<RunManifest>> {
    let mut manifests = Vec::with_capacity(shard.count as usize);
    for i in 0..shard.count {
        let other = Shard {
            index: i,
            ..shard.clone()
        };
        let loc = other.manifest(output);
        match loc.store.get(&loc.key) {
            Ok(bytes) => manifests.push(
                serde_json::from_slice::<RunManifest>(&bytes)
                    .with_context(|| format!("reading shard manifest {}", loc.uri()))?,
            ),
            Err(e) if ErrorKind::of(&e) == Some(ErrorKind::NotFound) => return Ok(None), // not the last shard
            Err(e) => return Err(e),
        }
    }
    // The date as a whole: every shard's files, and nothing else, as the store has them now
    // (listed after every manifest was read: each shard wrote its outputs before its manifest).
    let (stored, stored_q) = list()?;
    let (stored, stored_q) = (&stored, &stored_q);
    let mut files = Vec::new();
    let mut counts = crate::score::Counts::default();
    for m in &manifests {
        counts.add(&m.counts);
        files.extend(m.files.iter().cloned());
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let names: HashSet<&str> = files.iter().map(|f| f.name.as_str()).collect();
    let q_names: HashSet<&str> = files
        .iter()
        .filter_map(|f| f.quarantine.as_ref().map(|q| q.name.as_str()))
        .collect();
    for (listed, expected, prefix) in [(stored, &names, output), (stored_q, &q_names, quarantine)] {
        if listed.len() != expected.len() || listed.keys().any(|k| !expected.contains(k.as_str())) {
            bail!(
                "{} does not hold exactly the outputs of the {} shards of run {} (another writer?); not committing",
                prefix.uri(),
                shard.count,
                shard.run
            );
        }
    }
    for f in &files {
        let ok = stored.get(&f.name) == Some(&(f.size, f.etag.clone()))
            && f.quarantine
                .as_ref()
                .is_none_or(|q| stored_q.get(&q.name) == Some(&(q.size, q.etag.clone())));
        if !ok {
            bail!(
                "{} changed after its shard recorded it; not committing",
                output.join(&f.name).uri()
            );
        }
    }
    date_manifest.files = files;
    date_manifest.counts = counts;
    // The lease first: a shard that lost the date must not write its drift report either.
    before_commit()?;
    date_manifest.drift = drift()?;
    date_manifest.shards = Some(ShardSet {
        count: shard.count,
        run: shard.run.clone(),
    });
    before_commit()?;
    let marker = output.join(SUCCESS_MARKER);
    let written = marker.store.put_if_absent(
        &marker.key,
        Bytes::from(serde_json::to_vec_pretty(&date_manifest)?),
    )?;
    Ok(written.then_some(date_manifest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_has_exactly_one_shard_and_they_spread() {
        let names: Vec<String> = (0..1000).map(|i| format!("part-{i:05}.parquet")).collect();
        let mut per = [0; 4];
        for n in &names {
            let owners = (0..4)
                .filter(|&i| Shard::new(i, 4, "r".into()).unwrap().owns(n))
                .count();
            assert_eq!(owners, 1);
            per[shard_of(n, 4) as usize] += 1;
        }
        assert!(per.iter().all(|&c| c > 200), "{per:?}");
        assert_eq!(shard_of("part-00000.parquet", 1), 0);
    }

    #[test]
    fn keys_and_indexes_are_checked() {
        assert!(Shard::new(4, 4, "r".into()).is_err());
        assert!(Shard::new(0, 0, "r".into()).is_err());
        assert!(Shard::new(0, 2, "../x".into()).is_err());
        assert!(Shard::new(0, 2, "".into()).is_err());
        assert!(Shard::new(1, 2, "0b1e-44_a.1".into()).is_ok());
    }
}
