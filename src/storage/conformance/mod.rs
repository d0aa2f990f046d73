//! Storage conformance: one suite that every backend runs, so that the HDF5 and Zarr readers
//! (local or remote), the byte sources under them and the in-memory test source keep the same
//! promises — the ones their traits document — to the model above them.
//!
//! - [`check_array_source`] holds an [`ArraySource`](crate::storage::ArraySource) to its trait,
//!   given the array's contents in backend-independent form ([`Contents`]): sane metadata and
//!   chunk grid (the grid covers every element once); every chunk equal to the contents, read
//!   again or from two threads at once equal to its first read; random element and row ranges
//!   read through the model's [`Arr`](crate::model::Arr) equal; strings equal over random ranges
//!   through `read_strings` and `each_string`, and string fields of records through
//!   `read_field_strings`; a chunk or range past the end a
//!   [`StorageError`](crate::storage::StorageError) naming the array, never a panic nor an
//!   answer; a type annfs does not read failing every read; hints (`will_need`, `load_index`)
//!   never changing an answer; packed reads and file spans equal to the decoded chunk, and none
//!   where the source says it has none.
//! - [`check_range_read`] holds a [`RangeRead`](crate::storage::range::RangeRead) to its trait:
//!   `len`; `read_exact_at` at random offsets and lengths (block boundaries included) equal to
//!   the object, zero-length reads within the object succeeding, a read past the end (a zero-length one at an offset past it included) `UnexpectedEof`; `identity`
//!   and `version` stable; hints (`will_need`, `prefetch_exact`) never changing what is read; a
//!   splice descriptor, when given, reading the same bytes; two threads reading at once.
//!
//! Runs: [`array_runs`] runs the array suite on every array of h5ad fixtures through the HDF5
//! backend (local file, and remote over an in-process object server) and on their Zarr twins
//! written by anndata (v2, v3, sharded v3; local directories and remote prefixes): all must
//! read element for element what the HDF5 backend reads from the local file (the oracle:
//! `tests/golden.rs` checks it against what anndata reads). It also runs the suite on
//! `MemSource`, and on sources that each break one promise, to show the suite catches it.
//! [`range_runs`] runs the byte suite on `LocalFile` and `RemoteFile` (with and without a disk
//! cache) over the same bytes, and on broken byte sources.
//!
//! To add a backend: call `conformance::check_*` from its tests.

mod array;
mod array_runs;
mod contents;
mod range;
mod range_runs;

pub(crate) use array::check_array_source;
pub(crate) use contents::{first_difference, read_contents, Contents};
pub(crate) use range::check_range_read;

/// A small deterministic generator (SplitMix64): every run makes the same checks.
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator seeded from `seed` (a string: the checked array's path).
    pub(crate) fn new(seed: &str) -> Rng {
        // FNV-1a of the seed.
        Rng(seed.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)))
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, n)` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// A random range `[a, b)` with `a <= b <= n`.
    pub(crate) fn range(&mut self, n: u64) -> (u64, u64) {
        let (a, b) = (self.below(n + 1), self.below(n + 1));
        (a.min(b), a.max(b))
    }

    /// `n` random bytes.
    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// Runs `f`; a panic in it is raised again with `label` in front (which backend failed).
pub(crate) fn labelled(label: &str, f: impl FnOnce()) {
    if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        panic!("{label}: {}", panic_message(&*payload));
    }
}

/// True when `f` panics: a check failed (used to show that a broken source is caught).
pub(crate) fn fails(f: impl FnOnce()) -> bool {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err()
}

/// The text of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}
