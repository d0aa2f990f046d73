//! Gzip streams made of *stored* (uncompressed) deflate blocks around any file, so the size is
//! known exactly without compressing (`10x_v3/*.gz`). The CRC-32 in the trailer is computed as
//! sequential readers pass; a reader that jumps to the end pays for one pass over the content.

use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use super::{FileContent, ViewResult};

/// Largest stored block.
const BLOCK: u64 = 65535;
/// Gzip header: magic, deflate, no flags, mtime 0, no extra flags, OS unknown.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// `inner` as a gzip file of stored blocks.
pub struct StoredGzip {
    inner: Arc<dyn FileContent>,
    /// CRC-32 of the content once known.
    crc: OnceLock<u32>,
    /// A running CRC for readers going through the content in order: (bytes hashed, state).
    running: Mutex<(u64, crc32fast::Hasher)>,
}

impl StoredGzip {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn FileContent>) -> Self {
        StoredGzip { inner, crc: OnceLock::new(), running: Mutex::new((0, crc32fast::Hasher::new())) }
    }

    fn blocks(n: u64) -> u64 {
        n.div_ceil(BLOCK).max(1)
    }

    /// Offset in the output where the stored content of block `b` starts.
    fn block_data_start(b: u64) -> u64 {
        HEADER.len() as u64 + b * (BLOCK + 5) + 5
    }

    fn crc(&self, n: u64) -> ViewResult<u32> {
        if let Some(c) = self.crc.get() {
            return Ok(*c);
        }
        let mut h = crc32fast::Hasher::new();
        let mut off = 0;
        while off < n {
            let chunk = self.inner.read(off, (4 << 20).min(n - off) as usize)?;
            if chunk.is_empty() {
                break;
            }
            h.update(&chunk);
            off += chunk.len() as u64;
        }
        Ok(*self.crc.get_or_init(|| h.finalize()))
    }

    /// Feeds content bytes read at `off` to the running CRC when they continue it.
    fn observe(&self, off: u64, bytes: &[u8], n: u64) {
        if self.crc.get().is_some() {
            return;
        }
        let mut r = self.running.lock();
        if r.0 >= off && r.0 < off + bytes.len() as u64 {
            let skip = (r.0 - off) as usize;
            r.1.update(&bytes[skip..]);
            r.0 = off + bytes.len() as u64;
            if r.0 == n {
                let _ = self.crc.set(r.1.clone().finalize());
            }
        }
    }
}

impl FileContent for StoredGzip {
    fn size(&self) -> ViewResult<u64> {
        let n = self.inner.size()?;
        Ok(HEADER.len() as u64 + Self::blocks(n) * 5 + n + 8)
    }

    fn size_is_cheap(&self) -> bool {
        self.inner.size_is_cheap()
    }

    fn read(&self, offset: u64, len: usize) -> ViewResult<Vec<u8>> {
        let n = self.inner.size()?;
        let size = self.size()?;
        let end = offset.saturating_add(len as u64).min(size);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut pos = offset;
        while pos < end {
            if pos < HEADER.len() as u64 {
                out.extend_from_slice(&HEADER[pos as usize..(end.min(HEADER.len() as u64)) as usize]);
                pos = end.min(HEADER.len() as u64);
                continue;
            }
            let trailer_at = size - 8;
            if pos >= trailer_at {
                let mut t = Vec::with_capacity(8);
                t.extend_from_slice(&self.crc(n)?.to_le_bytes());
                t.extend_from_slice(&(n as u32).to_le_bytes());
                out.extend_from_slice(&t[(pos - trailer_at) as usize..(end - trailer_at) as usize]);
                pos = end;
                continue;
            }
            // Inside block b: 5 header bytes then its data.
            let rel = pos - HEADER.len() as u64;
            let b = rel / (BLOCK + 5);
            let in_block = rel % (BLOCK + 5);
            let data_len = (n - (b * BLOCK).min(n)).min(BLOCK);
            let block_end = HEADER.len() as u64 + b * (BLOCK + 5) + 5 + data_len;
            if in_block < 5 {
                let last = b + 1 == Self::blocks(n);
                let len16 = data_len as u16;
                let hdr = [u8::from(last), len16.to_le_bytes()[0], len16.to_le_bytes()[1], (!len16).to_le_bytes()[0], (!len16).to_le_bytes()[1]];
                let stop = (5).min(in_block + (end - pos));
                out.extend_from_slice(&hdr[in_block as usize..stop as usize]);
                pos += stop - in_block;
                continue;
            }
            let data_off = b * BLOCK + (pos - Self::block_data_start(b));
            let take = (block_end.min(end) - pos) as usize;
            let bytes = self.inner.read(data_off, take)?;
            if bytes.len() != take {
                return Err(crate::storage::StorageError::corrupt("gzip view", "short read of the content"));
            }
            self.observe(data_off, &bytes, n);
            out.extend_from_slice(&bytes);
            pos += take as u64;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::StaticFile;
    use std::io::Read;

    fn gunzip(b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(b).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn decodes_to_the_content_in_any_read_pattern() {
        for n in [0usize, 1, 100, 65535, 65536, 200_001] {
            let content: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
            let z = StoredGzip::new(Arc::new(StaticFile(content.clone())));
            let size = z.size().unwrap() as usize;
            // Sequential small reads (running CRC), then one whole read (cached CRC).
            let mut seq = Vec::new();
            while seq.len() < size {
                seq.extend(z.read(seq.len() as u64, 4093).unwrap());
            }
            assert_eq!(gunzip(&seq), content, "n={n}");
            // A fresh one read from the end first (CRC by a pass).
            let z2 = StoredGzip::new(Arc::new(StaticFile(content.clone())));
            let tail = z2.read(size as u64 - 8, 8).unwrap();
            assert_eq!(&tail[..], &seq[size - 8..]);
            assert_eq!(z2.read(0, size + 5).unwrap(), seq);
        }
    }
}
