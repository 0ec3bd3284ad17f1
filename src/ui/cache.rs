//! Parsed files kept between page views, each under its object key and used only while a
//! listing shows the object unchanged (size, modification time and ETag): a page lists what
//! it shows, and reads and parses only what was written since the last view.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;

use crate::record::Version;

struct Entry<T> {
    version: Version,
    value: Arc<T>,
    used: u64,
}

/// At most `cap` parsed objects; past it, the least recently used tenth goes.
pub struct Versioned<T> {
    entries: Mutex<HashMap<String, Entry<T>>>,
    cap: usize,
    clock: AtomicU64,
}

impl<T> Versioned<T> {
    pub fn new(cap: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            cap: cap.max(1),
            clock: AtomicU64::new(0),
        }
    }

    /// The object at `key` as listed with `version`: from the cache, or loaded (and kept).
    pub fn get(
        &self,
        key: &str,
        version: &Version,
        load: impl FnOnce() -> Result<T>,
    ) -> Result<Arc<T>> {
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = entries.get_mut(key).filter(|e| e.version == *version) {
                e.used = now;
                return Ok(e.value.clone());
            }
        }
        // Loaded outside the lock: pages for other jobs do not wait on this read.
        let value = Arc::new(load()?);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.insert(
            key.to_string(),
            Entry {
                version: version.clone(),
                value: value.clone(),
                used: now,
            },
        );
        if entries.len() > self.cap {
            let mut ages: Vec<u64> = entries.values().map(|e| e.used).collect();
            ages.sort_unstable();
            let cut = ages[entries.len() - self.cap + self.cap / 10];
            entries.retain(|_, e| e.used >= cut);
        }
        Ok(value)
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(size: u64) -> Version {
        Version {
            size,
            last_modified: None,
            etag: String::new(),
        }
    }

    #[test]
    fn an_entry_is_used_while_its_version_holds_and_the_cache_stays_bounded() {
        let c = Versioned::<u32>::new(10);
        assert_eq!(*c.get("a", &v(1), || Ok(1)).unwrap(), 1);
        assert_eq!(*c.get("a", &v(1), || Ok(2)).unwrap(), 1, "cached");
        assert_eq!(*c.get("a", &v(2), || Ok(3)).unwrap(), 3, "changed: loaded");
        assert!(c.get("b", &v(1), || anyhow::bail!("unreadable")).is_err());
        for i in 0..100 {
            c.get(&format!("k{i}"), &v(1), || Ok(i)).unwrap();
        }
        assert!(c.len() <= 10, "{} entries", c.len());
        // The newest stay.
        assert_eq!(*c.get("k99", &v(1), || Ok(0)).unwrap(), 99);
    }
}
