//! An optional on-disk cache of fetched chunk bytes for remote stores (`--disk-cache DIR`), so a
//! re-mount on the same node does not fetch again.
//!
//! One file per entry, named by a hash of its id (URL + byte range). Each file holds a header
//! (magic, the full id, the object's version — ETag or Last-Modified — when known, length, CRC32C
//! of the data) and the data; an entry whose header or checksum does not match is deleted and
//! treated as a miss. Whether an entry's version is still current is the
//! [`Fetcher`](super::Fetcher)'s decision. When the directory grows past its size budget
//! the least recently used entries (by mtime, refreshed on hits) are removed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use parking_lot::Mutex;

const MAGIC: &[u8; 8] = b"ANNFSDC2";
const SUFFIX: &str = ".chunk";

/// A valid entry.
#[derive(Debug)]
pub struct Entry {
    /// The cached bytes.
    pub data: Vec<u8>,
    /// The object's version when they were fetched.
    pub version: Option<String>,
}

/// A size-bounded directory of validated entries. Safe to share between threads.
#[derive(Debug)]
pub struct DiskCache {
    dir: PathBuf,
    limit: u64,
    used: AtomicU64,
    evict: Mutex<()>,
}

/// 64-bit FNV-1a (stable across builds, unlike `std`'s hasher).
fn fnv64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

impl DiskCache {
    /// Opens (creating) `dir` with a budget of `limit` bytes.
    pub fn open(dir: &Path, limit: u64) -> std::io::Result<DiskCache> {
        std::fs::create_dir_all(dir)?;
        let mut used = 0;
        for e in std::fs::read_dir(dir)?.flatten() {
            if e.file_name().to_string_lossy().ends_with(SUFFIX) {
                used += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
        Ok(DiskCache { dir: dir.to_path_buf(), limit, used: AtomicU64::new(used), evict: Mutex::new(()) })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{:016x}{SUFFIX}", fnv64(id)))
    }

    /// The data stored under `id`, if present and valid.
    pub fn get(&self, id: &str) -> Option<Entry> {
        let path = self.path(id);
        let bytes = std::fs::read(&path).ok()?;
        match decode(&bytes, id) {
            Some((version, data)) => {
                if let Ok(f) = std::fs::File::options().append(true).open(&path) {
                    let _ = f.set_modified(SystemTime::now());
                }
                Some(Entry { data: data.to_vec(), version: version.map(str::to_string) })
            }
            None => {
                log::warn!("disk cache: dropping invalid entry {}", path.display());
                if std::fs::remove_file(&path).is_ok() {
                    self.used.fetch_sub(bytes.len() as u64, Ordering::Relaxed);
                }
                None
            }
        }
    }

    /// Stores `data` of the object's `version` under `id` (best effort: failures are logged,
    /// never returned).
    pub fn put(&self, id: &str, version: Option<&str>, data: &[u8]) {
        let path = self.path(id);
        let tmp = self.dir.join(format!(".{:016x}.{}.tmp", fnv64(id), std::process::id()));
        let mut entry = Vec::with_capacity(data.len() + id.len() + 32);
        entry.extend_from_slice(MAGIC);
        entry.extend_from_slice(&(id.len() as u32).to_le_bytes());
        entry.extend_from_slice(id.as_bytes());
        let version = version.unwrap_or("").as_bytes();
        entry.extend_from_slice(&(version.len() as u32).to_le_bytes());
        entry.extend_from_slice(version);
        entry.extend_from_slice(&(data.len() as u64).to_le_bytes());
        entry.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
        entry.extend_from_slice(data);
        let res = std::fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(&entry))
            .and_then(|()| std::fs::rename(&tmp, &path));
        match res {
            Ok(()) => {
                let used = self.used.fetch_add(entry.len() as u64, Ordering::Relaxed) + entry.len() as u64;
                if used > self.limit {
                    self.evict();
                }
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                log::warn!("disk cache: cannot write {}: {e}", path.display());
            }
        }
    }

    /// Removes least recently used entries until the cache is under 90% of its budget.
    fn evict(&self) {
        let Some(_guard) = self.evict.try_lock() else { return };
        let mut entries: Vec<(SystemTime, u64, PathBuf)> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(SUFFIX))
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len(), e.path()))
            })
            .collect();
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        entries.sort();
        let target = self.limit / 10 * 9;
        for (_, len, path) in entries {
            if total <= target {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
        self.used.store(total, Ordering::Relaxed);
    }
}

/// A length-prefixed field and what follows it.
fn field(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let n = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
    let rest = &b[4..];
    Some((rest.get(..n)?, &rest[n..]))
}

/// The version and data of a valid entry for `id`.
fn decode<'a>(b: &'a [u8], id: &str) -> Option<(Option<&'a str>, &'a [u8])> {
    let (stored_id, rest) = field(b.strip_prefix(MAGIC)?)?;
    if stored_id != id.as_bytes() {
        return None;
    }
    let (version, rest) = field(rest)?;
    let version = std::str::from_utf8(version).ok()?;
    let len = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(rest.get(8..12)?.try_into().ok()?);
    let data = &rest[12..];
    (data.len() == len && crc32c::crc32c(data) == crc).then_some(((!version.is_empty()).then_some(version), data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_validation_and_eviction() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(dir.path(), 1000).unwrap();
        assert!(c.get("a").is_none());
        c.put("a", Some("\"e1\""), b"hello");
        let e = c.get("a").unwrap();
        assert_eq!((e.data.as_slice(), e.version.as_deref()), (&b"hello"[..], Some("\"e1\"")));
        // A corrupted entry is a miss and is removed.
        let p = c.path("a");
        let mut bytes = std::fs::read(&p).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        std::fs::write(&p, bytes).unwrap();
        assert!(c.get("a").is_none());
        assert!(!p.exists());
        // Re-open sees existing entries; the budget is enforced.
        for i in 0..20 {
            c.put(&format!("k{i}"), None, &[7u8; 100]);
        }
        let total: u64 = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.metadata().unwrap().len()).sum();
        assert!(total <= 1000, "{total}");
        let again = DiskCache::open(dir.path(), 1000).unwrap();
        let e = again.get("k19").unwrap();
        assert_eq!((e.data.as_slice(), e.version), (&[7u8; 100][..], None));
    }
}
