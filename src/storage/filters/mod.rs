//! HDF5 chunk filters, decoded in Rust so chunk reads need no library lock.
//!
//! One filter per module, each a plug-in that owns everything about its filter: its HDF5
//! filter `ID`, a type holding its parameters with `from_cd_values` (parsing the client data),
//! `describe` and `decode`, and a module doc citing its spec. This module only dispatches on
//! [`Filter`] (an enum, so a chunk's decode is one `match`, with no dynamic dispatch and no
//! allocation beyond the filter's own); [`Pipeline`] undoes a dataset's filters in reverse
//! order, skipping those whose bit is set in a chunk's filter mask.
//!
//! To add a filter:
//! 1. Write `src/storage/filters/<name>.rs` with a module doc citing the spec (the HDF5 filter
//!    id, what each `cd_values` entry means), `pub const ID: i32`, and a `pub struct <Name>`
//!    (`Clone, Copy, Debug, PartialEq, Eq`) with
//!    `pub fn from_cd_values(cd_values: &[u32], elem_size: usize) -> <Name>`,
//!    `pub fn describe(&self) -> String` and
//!    `pub fn decode(&self, data: Vec<u8>, limit: usize) -> Result<Vec<u8>, FilterError>`
//!    (never more than `limit` bytes out; malformed input is [`FilterError::Corrupt`], not a
//!    panic), plus its unit tests.
//! 2. Here: add `pub mod <name>;`, a variant `Filter::<Name>(<name>::<Name>)`, and one arm for
//!    it in each of [`Filter::from_hdf5`] (`<name>::ID => ...`), [`Filter::describe`] and
//!    [`Filter::decode`]; the compiler points at any `match` left out.
//! 3. If h5py can write it, give a fixture the filter in `scripts/make_fixtures.py` (listed in
//!    `tests/fixtures/SOURCES.md`) so `cargo test --test golden` decodes it end to end.

pub mod deflate;
pub mod fletcher32;
pub mod lzf;
pub mod shuffle;

/// The largest decoded chunk annfs accepts (256 MiB): a chunk shape or stream claiming more is
/// corrupt, never an allocation attempt.
pub const MAX_DECODED_BYTES: usize = 256 << 20;

/// Why a chunk could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The bytes are malformed (bad stream, checksum mismatch, wrong size).
    #[error("{0}")]
    Corrupt(String),
}

/// One decodable filter with its parameters, each variant the filter type of its module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    /// zlib/deflate, [`deflate::ID`].
    Deflate(deflate::Deflate),
    /// Byte shuffle, [`shuffle::ID`].
    Shuffle(shuffle::Shuffle),
    /// Fletcher-32 checksum, [`fletcher32::ID`].
    Fletcher32(fletcher32::Fletcher32),
    /// LZF (the h5py filter), [`lzf::ID`].
    Lzf(lzf::Lzf),
}

impl Filter {
    /// Builds a filter from its HDF5 id and client data; `None` for ids annfs cannot decode.
    pub fn from_hdf5(id: i32, cd_values: &[u32], elem_size: usize) -> Option<Filter> {
        let (cd, elem) = (cd_values, elem_size);
        Some(match id {
            deflate::ID => Filter::Deflate(deflate::Deflate::from_cd_values(cd, elem)),
            shuffle::ID => Filter::Shuffle(shuffle::Shuffle::from_cd_values(cd, elem)),
            fletcher32::ID => Filter::Fletcher32(fletcher32::Fletcher32::from_cd_values(cd, elem)),
            lzf::ID => Filter::Lzf(lzf::Lzf::from_cd_values(cd, elem)),
            _ => return None,
        })
    }

    /// Short description, e.g. `deflate(4)`.
    pub fn describe(&self) -> String {
        match self {
            Filter::Deflate(f) => f.describe(),
            Filter::Shuffle(f) => f.describe(),
            Filter::Fletcher32(f) => f.describe(),
            Filter::Lzf(f) => f.describe(),
        }
    }

    /// Undoes this filter. `limit` bounds decompressed output (the full chunk size).
    pub fn decode(&self, data: Vec<u8>, limit: usize) -> Result<Vec<u8>, FilterError> {
        match self {
            Filter::Deflate(f) => f.decode(data, limit),
            Filter::Shuffle(f) => f.decode(data, limit),
            Filter::Fletcher32(f) => f.decode(data, limit),
            Filter::Lzf(f) => f.decode(data, limit),
        }
    }
}

/// A dataset's filters in pipeline (encoding) order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pipeline {
    /// Filters in the order they were applied when writing.
    pub filters: Vec<Filter>,
}

impl Pipeline {
    /// True when chunks are stored raw.
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// Decodes one stored chunk into `expected` bytes (at most [`MAX_DECODED_BYTES`]). Bit `i` of
    /// `mask` set means filter `i` was skipped for this chunk. Unfiltered data is returned as is.
    pub fn decode(
        &self,
        stored: Vec<u8>,
        mask: u32,
        expected: usize,
    ) -> Result<Vec<u8>, FilterError> {
        if expected > MAX_DECODED_BYTES {
            return Err(FilterError::Corrupt(format!(
                "a decoded chunk of {expected} bytes exceeds the {} MiB limit",
                MAX_DECODED_BYTES >> 20
            )));
        }
        let mut data = stored;
        for (i, f) in self.filters.iter().enumerate().rev() {
            if i < 32 && mask & (1 << i) != 0 {
                continue;
            }
            // Every intermediate stage is at most the chunk size plus one checksum per filter.
            data = f.decode(data, expected + 4 * self.filters.len())?;
        }
        if data.len() != expected {
            return Err(FilterError::Corrupt(format!(
                "decoded chunk has {} bytes, expected {expected}",
                data.len()
            )));
        }
        Ok(data)
    }

    /// `deflate(4)+shuffle`-style description in decoding order of application (as written).
    pub fn describe(&self) -> String {
        self.filters
            .iter()
            .map(Filter::describe)
            .collect::<Vec<_>>()
            .join("+")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_roundtrip_shuffle_deflate() {
        let raw: Vec<u8> = (0..4000u32).flat_map(|v| (v * 7).to_le_bytes()).collect();
        let shuffled = shuffle::shuffle(&raw, 4);
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(4));
        std::io::Write::write_all(&mut enc, &shuffled).unwrap();
        let stored = enc.finish().unwrap();
        let p = Pipeline {
            filters: vec![
                Filter::Shuffle(shuffle::Shuffle { elem: 4 }),
                Filter::Deflate(deflate::Deflate { level: 4 }),
            ],
        };
        assert_eq!(p.decode(stored.clone(), 0, raw.len()).unwrap(), raw);
        // Mask skipping deflate (bit 1): the stored bytes are then shuffled raw data.
        assert_eq!(p.decode(shuffled, 0b10, raw.len()).unwrap(), raw);
        // Wrong expected size is an error, not a panic.
        assert!(p.decode(stored.clone(), 0, raw.len() - 1).is_err());
        assert!(p.decode(stored[..10].to_vec(), 0, raw.len()).is_err());
        // A chunk shape claiming more than the cap is refused before anything is allocated.
        let e = p.decode(stored, 0, MAX_DECODED_BYTES + 1).unwrap_err();
        assert!(e.to_string().contains("limit"), "{e}");
    }

    #[test]
    fn unfiltered_chunks_pass_through() {
        let raw = vec![1u8, 2, 3, 4];
        let ptr = raw.as_ptr();
        let out = Pipeline::default().decode(raw, 0, 4).unwrap();
        assert_eq!(out.as_ptr(), ptr, "no copy of unfiltered data");
        assert!(Pipeline::default().decode(vec![1, 2, 3], 0, 4).is_err());
    }
}
