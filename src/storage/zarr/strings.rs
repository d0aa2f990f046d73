//! Variable-length string chunks of a Zarr array, decoded once for many reads.
//!
//! anndata writes a string column (`obs/_index`) as one chunk of all its strings, and text views
//! read strings a block of a few thousand at a time: decoding the whole chunk for every block
//! made a pass over 200,000 names decode it 49 times, and four size passes at once held four
//! decoded copies (a 200,000-cell `obs.tsv` peaked 100 MiB over an 8 MiB budget). Each array
//! keeps its last decoded chunk (one decode however many readers ask at once), compactly (the
//! bytes, and 32-bit ends), within a bound shared by every array of the process.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use crate::storage::StorageResult;

/// Largest decoded chunk kept.
const MAX_KEPT: u64 = 24 << 20;
/// Bytes of decoded chunks kept by all arrays together, at most.
const MAX_KEPT_TOTAL: u64 = 32 << 20;
/// Bytes of decoded chunks kept now (all arrays).
static KEPT: AtomicU64 = AtomicU64::new(0);

/// The strings of one decoded chunk.
pub(super) struct StrChunk {
    data: Vec<u8>,
    /// End of string `i` in `data` (its start is the previous end, or 0).
    ends: Vec<u32>,
    /// Bytes counted in [`KEPT`] while this chunk is kept.
    counted: u64,
}

impl StrChunk {
    /// The chunk whose string `i` is `data[offsets[i]..offsets[i + 1]]`; `None` when the
    /// offsets are out of order or past the data, or the data is too long for 32-bit ends.
    pub(super) fn new(data: Vec<u8>, offsets: &[usize]) -> Option<StrChunk> {
        if data.len() > u32::MAX as usize || offsets.first().is_some_and(|&o| o != 0) {
            return None;
        }
        let ok = offsets.windows(2).all(|w| w[0] <= w[1]) && offsets.last().is_none_or(|&e| e <= data.len());
        ok.then(|| StrChunk { ends: offsets.iter().skip(1).map(|&e| e as u32).collect(), data, counted: 0 })
    }

    /// Strings in the chunk.
    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    /// The bytes of string `i`.
    pub(super) fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.data.get(start..end)
    }

    fn bytes(&self) -> u64 {
        (self.data.capacity() + 4 * self.ends.capacity()) as u64
    }
}

impl Drop for StrChunk {
    fn drop(&mut self) {
        KEPT.fetch_sub(self.counted, Relaxed);
    }
}

/// A decode in progress or done: the chunk if it is kept.
type Slot = Arc<OnceLock<Option<Arc<StrChunk>>>>;

/// The last chunk decoded for one array.
#[derive(Default)]
pub(super) struct StrMemo {
    last: Mutex<Option<(u64, Slot)>>,
    /// Chunks decoded (tests).
    pub(super) decodes: AtomicU64,
}

impl StrMemo {
    /// Chunk `index`: the kept one, or decoded by `decode` (once, while concurrent callers for
    /// the same chunk wait) and kept if the bound allows. A failed decode is not kept: the next
    /// call decodes again.
    pub(super) fn chunk(&self, index: u64, decode: impl FnOnce() -> StorageResult<StrChunk>) -> StorageResult<Arc<StrChunk>> {
        let slot = {
            let mut last = self.last.lock();
            match &*last {
                Some((i, s)) if *i == index => s.clone(),
                _ => {
                    let s = Slot::default();
                    *last = Some((index, s.clone()));
                    s
                }
            }
        };
        let mut decode = Some(decode);
        let mut mine = None;
        let kept = slot.get_or_init(|| {
            let f = decode.take()?;
            self.decodes.fetch_add(1, Relaxed);
            let mut chunk = match f() {
                Ok(c) => c,
                Err(e) => {
                    mine = Some(Err(e));
                    return None;
                }
            };
            let n = chunk.bytes();
            let admitted = n <= MAX_KEPT && KEPT.fetch_update(Relaxed, Relaxed, |k| (k + n <= MAX_KEPT_TOTAL).then_some(k + n)).is_ok();
            if !admitted {
                mine = Some(Ok(Arc::new(chunk)));
                return None;
            }
            chunk.counted = n;
            Some(Arc::new(chunk))
        });
        if let Some(c) = kept {
            return Ok(c.clone());
        }
        // Not kept (failed, or over the bound): forget the slot, so that the next call decodes.
        {
            let mut last = self.last.lock();
            if last.as_ref().is_some_and(|(_, s)| Arc::ptr_eq(s, &slot)) {
                *last = None;
            }
        }
        match (mine, decode) {
            (Some(r), _) => r,
            // Another caller decoded it and could not keep it: decode for this call alone.
            (None, Some(f)) => {
                self.decodes.fetch_add(1, Relaxed);
                f().map(Arc::new)
            }
            (None, None) => Err(crate::storage::StorageError::corrupt("", "string chunk decode lost")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(strings: &[&str]) -> StrChunk {
        let mut data = Vec::new();
        let mut offsets = vec![0];
        for s in strings {
            data.extend_from_slice(s.as_bytes());
            offsets.push(data.len());
        }
        StrChunk::new(data, &offsets).unwrap()
    }

    /// Strings come back as stored; damaged offsets are refused.
    #[test]
    fn strings_by_index_and_bad_offsets() {
        let c = chunk(&["cell0", "", "é"]);
        assert_eq!(c.len(), 3);
        assert_eq!([c.get(0), c.get(1), c.get(2), c.get(3)], [Some(&b"cell0"[..]), Some(&b""[..]), Some("é".as_bytes()), None]);
        assert!(StrChunk::new(b"abc".to_vec(), &[0, 2, 1]).is_none(), "out of order");
        assert!(StrChunk::new(b"abc".to_vec(), &[0, 4]).is_none(), "past the data");
        assert!(StrChunk::new(b"abc".to_vec(), &[1, 2]).is_none(), "not from the start");
    }

    /// A chunk is decoded once for many reads and by many readers at once; another chunk
    /// replaces it; a failed decode is not kept.
    #[test]
    fn one_decode_per_chunk() {
        let memo = Arc::new(StrMemo::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let memo = memo.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let c = memo.chunk(3, || {
                            std::thread::sleep(std::time::Duration::from_millis(20));
                            Ok(chunk(&["a", "b"]))
                        });
                        assert_eq!(c.unwrap().get(1), Some(&b"b"[..]));
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(memo.decodes.load(Relaxed), 1);
        assert!(memo.chunk(4, || Err(crate::storage::StorageError::corrupt("/s", "damaged"))).is_err());
        assert_eq!(memo.chunk(4, || Ok(chunk(&["z"]))).unwrap().get(0), Some(&b"z"[..]), "the failure was not kept");
        assert_eq!(memo.decodes.load(Relaxed), 3);
    }
}
