//! The [`ArraySource`] contract: [`check_array_source`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::contents::{chunk_elements, element_difference, kind, Contents};
use super::Rng;
use crate::cache::{ArrIds, ChunkCache};
use crate::model::Arr;
use crate::storage::{ArrayMeta, ArraySource, DType, FieldType, StorageResult};

/// Chunks read by the suite per array, at most (all of them in the fixtures).
const MAX_CHUNKS_CHECKED: u64 = 512;
/// Random ranges read per array and kind of read.
const RANGES: usize = 12;
/// What a hint may cost ("must not block for long").
const HINT_LIMIT: Duration = Duration::from_secs(2);

/// Asserts that `r` failed with an error naming the array (`path`), as every
/// [`StorageError`](crate::storage::StorageError) does.
fn expect_err<T>(r: StorageResult<T>, path: &str, what: &str) {
    match r {
        Ok(_) => panic!("{path}: {what}: expected an error, got an answer"),
        Err(e) => assert!(e.to_string().contains(path), "{path}: {what}: the error does not name the array: {e}"),
    }
}

/// Checks `src` against every promise of [`ArraySource`], its contents being `want` (see the
/// module documentation; ignored for a type annfs does not read, whose reads must fail);
/// panics with the array's path and what broke.
pub(crate) fn check_array_source(src: &Arc<dyn ArraySource>, want: &Contents) {
    let m = src.meta();
    let mut rng = Rng::new(&m.path);
    check_meta(&**src, want);
    if let DType::Unsupported(_) = m.dtype {
        expect_err(src.read_chunk(0), &m.path, "chunk of an unsupported type");
        expect_err(src.read_strings(0, m.len().min(1)), &m.path, "strings of an unsupported type");
        return;
    }
    if m.null {
        // No elements: nothing to read but nothing.
        if let Ok(c) = src.read_chunk(0) {
            assert!(c.is_empty(), "{}: a null dataspace's chunk holds {} bytes", m.path, c.len());
        }
        if m.dtype == DType::Str {
            assert_eq!(src.read_strings(0, 0).unwrap_or_else(|e| panic!("{e}")), Vec::<String>::new());
            expect_err(src.read_strings(0, 1), &m.path, "a string of a null dataspace");
        }
        return;
    }
    match (&m.dtype, want) {
        (DType::Str, Contents::Str(v)) => check_strings(src, v, &mut rng),
        _ => check_chunks(src, want, &mut rng),
    }
    if let (DType::Compound { fields, .. }, Contents::Records(w)) = (&m.dtype, want) {
        for f in fields.iter().filter(|f| f.dtype == FieldType::VarStr) {
            let Some((_, Contents::Str(v))) = w.iter().find(|(name, _)| *name == f.name) else { unreachable!("check_meta") };
            check_field_strings(&**src, &f.name, v, &mut rng);
        }
        expect_err(src.read_field_strings("\u{1}no such field", 0, 0), &m.path, "an unknown field");
    } else {
        expect_err(src.read_field_strings("name", 0, 0), &m.path, "string fields of a non-compound array");
    }
}

/// Metadata: path, grid, element count, type against the contents; packed storage as documented.
fn check_meta(src: &dyn ArraySource, want: &Contents) {
    let m: &ArrayMeta = src.meta();
    let p = &m.path;
    assert!(p.starts_with('/'), "{p}: the path is not absolute");
    assert!(!m.storage_desc.is_empty(), "{p}: no storage description");
    let g = &m.grid;
    assert_eq!(g.shape, m.shape, "{p}: grid shape");
    assert_eq!(g.chunk.len(), m.shape.len(), "{p}: chunk rank");
    assert!(g.chunk.iter().all(|&c| c >= 1), "{p}: a chunk dimension of 0: {:?}", g.chunk);
    assert_eq!(g.num_chunks(), g.chunks_per_dim().iter().product::<u64>(), "{p}: chunk count");
    if m.null {
        assert!(m.shape.is_empty() && m.is_empty(), "{p}: a null dataspace with shape {:?}", m.shape);
        assert_eq!(*want, Contents::Null, "{p}: read as null");
        return;
    }
    assert_eq!(m.len(), m.shape.iter().product::<u64>(), "{p}: element count");
    if g.num_chunks() <= MAX_CHUNKS_CHECKED {
        let covered: u64 = (0..g.num_chunks()).map(|i| g.clipped_shape(&g.coords(i)).iter().product::<u64>()).sum();
        assert_eq!(covered, m.len(), "{p}: the chunks do not cover the array once");
    }
    if src.packed_in_place() {
        assert!(matches!(m.dtype, DType::Num(_)) && !m.shape.is_empty() && g.chunk[1..] == m.shape[1..], "{p}: packed in place, but not numbers in chunks spanning all dimensions but the first");
    }
    let n = m.len() as usize;
    match (&m.dtype, want) {
        (DType::Num(t), Contents::Num(u, bytes)) => {
            assert_eq!(t, u, "{p}: element type");
            assert_eq!(m.dtype_size(), t.size(), "{p}: element size");
            assert_eq!(bytes.len(), n * t.size(), "{p}: expected contents of another length");
        }
        (DType::Str, Contents::Str(v)) => assert_eq!(v.len(), n, "{p}: string count"),
        (DType::Compound { fields, record_size }, Contents::Records(w)) => {
            assert_eq!(fields.len(), w.len(), "{p}: field count");
            for f in fields {
                let (width, kind_ok) = match (&f.dtype, w.iter().find(|(name, _)| *name == f.name).map(|x| &x.1)) {
                    (FieldType::Num(t, c), Some(Contents::Num(u, b))) => (t.size() * c, t == u && b.len() == n * t.size() * c),
                    (FieldType::FixedStr(len), Some(Contents::Str(v))) => (*len, v.len() == n),
                    (FieldType::VarStr, Some(Contents::Str(v))) => (0, v.len() == n),
                    _ => (0, false),
                };
                assert!(kind_ok, "{p}: field {} ({:?}) against the expected contents", f.name, f.dtype);
                assert!(f.offset + width <= *record_size, "{p}: field {} outside its {record_size}-byte record", f.name);
            }
        }
        (DType::Unsupported(_), _) => {}
        (dtype, want) => panic!("{p}: {dtype:?} against {}", kind(want)),
    }
}

/// Chunks of fixed-size elements: each equal to the contents; past the end an error; hints,
/// re-reads and two threads change nothing; packed reads and spans as documented; random
/// ranges through [`Arr`].
fn check_chunks(src: &Arc<dyn ArraySource>, want: &Contents, rng: &mut Rng) {
    let m = src.meta();
    let (p, g, elem) = (&m.path, &m.grid, m.dtype_size());
    let total = g.num_chunks();
    let mut picked: Vec<u64> = if total <= MAX_CHUNKS_CHECKED { (0..total).collect() } else { (0..MAX_CHUNKS_CHECKED).map(|_| rng.below(total)).collect() };
    // In a shuffled order: a backend must not depend on chunks being read in order.
    for i in (1..picked.len()).rev() {
        picked.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut first = std::collections::HashMap::new();
    for &i in &picked {
        let data = src.read_chunk(i).unwrap_or_else(|e| panic!("{p}: chunk {i}: {e}"));
        let at = chunk_elements(g, i);
        assert_eq!(data.len(), at.len() * elem, "{p}: chunk {i} length (clipped to the array)");
        for (k, &flat) in at.iter().enumerate() {
            if let Some(d) = element_difference(&m.dtype, &data[k * elem..][..elem], want, flat) {
                panic!("{p}: chunk {i}: {d}");
            }
        }
        first.insert(i, data);
    }
    for i in [total, total + 1, total.saturating_add(1000), u64::MAX] {
        expect_err(src.read_chunk(i), p, &format!("chunk {i} of {total}"));
    }
    let again = |rng: &mut Rng, what: &str| {
        for _ in 0..picked.len().min(RANGES) {
            let i = picked[rng.below(picked.len() as u64) as usize];
            let data = src.read_chunk(i).unwrap_or_else(|e| panic!("{p}: chunk {i} read again {what}: {e}"));
            assert!(data == first[&i], "{p}: chunk {i} read again {what} differs");
        }
    };
    again(rng, "");
    let mut hinted: Vec<u64> = picked.iter().copied().take(8).collect();
    hinted.extend([total, u64::MAX]);
    let t = Instant::now();
    src.will_need(&hinted);
    src.will_need(&[]);
    assert!(t.elapsed() < HINT_LIMIT, "{p}: will_need blocked for {:?}", t.elapsed());
    again(rng, "after will_need");
    src.load_index();
    assert!(src.index_loaded(), "{p}: the chunk index is not loaded after load_index");
    again(rng, "after load_index");
    check_packed(&**src, &picked, &first, rng);
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let (src, picked, first) = (&src, &picked, &first);
            s.spawn(move || {
                for k in 0..picked.len().min(64) {
                    let i = picked[(k * 7 + t as usize * 13) % picked.len()];
                    assert!(src.read_chunk(i).ok().as_ref() == Some(&first[&i]), "{p}: chunk {i} read by thread {t} differs");
                }
            });
        }
    });
    // Element and row ranges through the model's reader (chunks assembled, packed reads used).
    let arr = Arr::new(src.clone(), &Arc::new(ChunkCache::new(1 << 20)), &ArrIds::default());
    let check_bytes = |bytes: &[u8], from: u64, what: &str| {
        for (k, e) in bytes.chunks_exact(elem).enumerate() {
            if let Some(d) = element_difference(&m.dtype, e, want, from + k as u64) {
                panic!("{p}: {what}: {d}");
            }
        }
    };
    for _ in 0..RANGES {
        let (a, b) = rng.range(m.len());
        let got = arr.read_flat(a, b).unwrap_or_else(|e| panic!("{p}: elements {a}..{b}: {e}"));
        assert_eq!(got.len() as u64, (b - a) * elem as u64, "{p}: elements {a}..{b}: length");
        check_bytes(&got, a, &format!("elements {a}..{b}"));
        // A scalar is one row, read whole (the model asks nothing else of it).
        let (r0, r1) = if m.shape.is_empty() { (0, 1) } else { rng.range(arr.rows()) };
        let got = arr.read_rows(r0, r1).unwrap_or_else(|e| panic!("{p}: rows {r0}..{r1}: {e}"));
        let row = if m.shape.is_empty() { 1 } else { arr.row_elems() };
        assert_eq!(got.len() as u64, (r1 - r0) * row * elem as u64, "{p}: rows {r0}..{r1}: length");
        check_bytes(&got, if m.shape.is_empty() { 0 } else { r0 * row }, &format!("rows {r0}..{r1}"));
    }
    let rows = arr.rows();
    expect_err(arr.read_rows(0, rows + 1), p, "rows past the end");
    expect_err(arr.read_rows(rows + 1, rows + 2), p, "rows past the end");
}

/// [`ArraySource::read_packed_into`] and [`ArraySource::packed_span`]: bytes equal to the
/// decoded chunk's when given, none when the source is not packed in place, `dst` untouched
/// when not given, nothing past the chunk or the grid.
fn check_packed(src: &dyn ArraySource, picked: &[u64], first: &std::collections::HashMap<u64, Vec<u8>>, rng: &mut Rng) {
    let (p, total, in_place) = (&src.meta().path, src.meta().grid.num_chunks(), src.packed_in_place());
    const UNTOUCHED: u8 = 0xa5;
    let probe = |i: u64, from: u64, len: u64, want: Option<&[u8]>| {
        let mut dst = vec![UNTOUCHED; len as usize];
        match src.read_packed_into(i, from, &mut dst) {
            Ok(true) => {
                assert!(in_place, "{p}: a packed read from a source not packed in place");
                assert!(Some(&dst[..]) == want, "{p}: packed read of chunk {i} bytes {from}+{len} differs (or lies outside the chunk)");
            }
            Ok(false) => assert!(dst.iter().all(|&b| b == UNTOUCHED), "{p}: a declined packed read wrote into its buffer"),
            Err(e) if want.is_some() => panic!("{p}: packed read of chunk {i} bytes {from}+{len}: {e}"),
            Err(_) => {}
        }
        match src.packed_span(i, from, len) {
            Ok(Some(span)) => {
                assert!(in_place, "{p}: a file span from a source not packed in place");
                assert!(want.is_some(), "{p}: a file span of chunk {i} bytes {from}+{len}, outside the chunk");
                assert_eq!(span.len, len, "{p}: span length");
                assert!(span.file.splice_fd().is_some(), "{p}: a span in a file that cannot be spliced");
                let mut buf = vec![0u8; len as usize];
                span.file.read_exact_at(&mut buf, span.offset).unwrap_or_else(|e| panic!("{p}: span of chunk {i}: {e}"));
                assert!(Some(&buf[..]) == want, "{p}: the span of chunk {i} bytes {from}+{len} holds other bytes");
            }
            Ok(None) => {}
            Err(e) if want.is_some() => panic!("{p}: span of chunk {i} bytes {from}+{len}: {e}"),
            Err(_) => {}
        }
    };
    for _ in 0..picked.len().min(RANGES) {
        let i = picked[rng.below(picked.len() as u64) as usize];
        let chunk = &first[&i];
        let (a, b) = rng.range(chunk.len() as u64);
        probe(i, a, b - a, Some(&chunk[a as usize..b as usize]));
        probe(i, chunk.len() as u64, 1, None);
        probe(i, a, chunk.len() as u64 + 1 - a, None);
    }
    probe(total, 0, 1, None);
    probe(u64::MAX, 0, 1, None);
}

/// Strings: all and random ranges equal through `read_strings`, `each_string` and [`Arr`];
/// empty ranges empty; ranges past the end or reversed an error; two threads at once.
fn check_strings(src: &Arc<dyn ArraySource>, want: &[String], rng: &mut Rng) {
    let (p, n) = (&src.meta().path, want.len() as u64);
    let each = |a: u64, b: u64| -> StorageResult<Vec<String>> {
        let mut out = Vec::new();
        src.each_string(a, b, &mut |s| out.push(s.to_string()))?;
        Ok(out)
    };
    let all = src.read_strings(0, n).unwrap_or_else(|e| panic!("{p}: strings: {e}"));
    assert!(all == want, "{p}: strings differ");
    let arr = Arr::new(src.clone(), &Arc::new(ChunkCache::new(1 << 20)), &ArrIds::default());
    for _ in 0..RANGES {
        let (a, b) = rng.range(n);
        let w = &want[a as usize..b as usize];
        assert!(src.read_strings(a, b).unwrap_or_else(|e| panic!("{p}: strings {a}..{b}: {e}")) == w, "{p}: strings {a}..{b} differ");
        assert!(each(a, b).unwrap_or_else(|e| panic!("{p}: each string {a}..{b}: {e}")) == w, "{p}: each string {a}..{b} differs");
        assert!(arr.read_strings(a, b).unwrap_or_else(|e| panic!("{p}: model strings {a}..{b}: {e}")) == w, "{p}: model strings {a}..{b} differ");
    }
    for k in [0, n / 2, n] {
        assert_eq!(src.read_strings(k, k).unwrap_or_else(|e| panic!("{p}: strings {k}..{k}: {e}")), Vec::<String>::new());
        assert_eq!(each(k, k).unwrap_or_else(|e| panic!("{p}: each string {k}..{k}: {e}")), Vec::<String>::new());
    }
    let mut bad = vec![(0, n + 1), (n, n + 1), (n + 3, n + 5), (u64::MAX - 1, u64::MAX)];
    if n > 0 {
        bad.push((1, 0));
    }
    for (a, b) in bad {
        expect_err(src.read_strings(a, b), p, &format!("strings {a}..{b} of {n}"));
        expect_err(each(a, b), p, &format!("each string {a}..{b} of {n}"));
    }
    // Whatever a string array's chunk read answers, it answers without a panic.
    let _ = src.read_chunk(0);
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let mut rng = Rng::new(&format!("{p}#{t}"));
            s.spawn(move || {
                for _ in 0..RANGES {
                    let (a, b) = rng.range(n);
                    assert!(src.read_strings(a, b).ok().as_deref() == Some(&want[a as usize..b as usize]), "{p}: strings {a}..{b} read by thread {t} differ");
                }
            });
        }
    });
}

/// A variable-length string field of records: all and random ranges equal; past the end or
/// reversed an error.
fn check_field_strings(src: &dyn ArraySource, field: &str, want: &[String], rng: &mut Rng) {
    let (p, n) = (&src.meta().path, want.len() as u64);
    for (a, b) in std::iter::once((0, n)).chain((0..RANGES).map(|_| rng.range(n))) {
        let got = src.read_field_strings(field, a, b).unwrap_or_else(|e| panic!("{p}: field {field} {a}..{b}: {e}"));
        assert!(got == want[a as usize..b as usize], "{p}: field {field} records {a}..{b} differ");
    }
    let mut bad = vec![(0, n + 1), (n + 1, n + 2)];
    if n > 0 {
        bad.push((1, 0));
    }
    for (a, b) in bad {
        expect_err(src.read_field_strings(field, a, b), p, &format!("field {field} records {a}..{b} of {n}"));
    }
}
