//! Property tests: for random arrays, chunkings and byte ranges, every ranged read of a view
//! equals the same slice of the whole file, the size is exact, and the whole file equals an
//! independent rendering.

use std::sync::Arc;

use proptest::prelude::*;

use super::column::ColumnCells;
use super::format::npy_header::header;
use super::format::text_values::{push_field, push_num};
use super::matrix::SparseRows;
use super::npy_file::{ArrayRows, NpyFile};
use super::text_file::{header_line, ColumnText, NumRowsText, TableText, TextFile};
use super::FileContent;
use crate::cache::ChunkCache;
use crate::model::array::tests::MemSource;
use crate::model::{Arr, ArrIds, Column, Sparse, SparseFormat};
use crate::storage::NumType;

fn arr(src: MemSource, cache: &Arc<ChunkCache>, ids: &ArrIds) -> Arr {
    Arr::new(Arc::new(src), cache, ids)
}

fn check_ranges(f: &dyn FileContent, expect: &[u8], ranges: &[(u64, usize)]) -> Result<(), TestCaseError> {
    prop_assert_eq!(f.size().unwrap(), expect.len() as u64);
    let whole = f.read(0, expect.len() + 10).unwrap();
    prop_assert_eq!(&whole[..], expect);
    for &(off, len) in ranges {
        let off = off % (expect.len() as u64 + 2);
        let got = f.read(off, len).unwrap();
        prop_assert_eq!(&got[..], super::slice(expect, off, len));
    }
    Ok(())
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn dense_npy_and_tsv(rows in 0u64..120, cols in 1u64..9, cr in 1u64..40, cc in 1u64..9,
                         seed in any::<u64>(), ranges in prop::collection::vec((any::<u64>(), 0usize..3000), 8)) {
        // A tiny cache budget forces evictions between reads.
        let cache = Arc::new(ChunkCache::new(4096));
        let ids = ArrIds::default();
        let vals: Vec<f32> = (0..rows * cols).map(|i| ((i as f32 + seed as f32 % 97.0) * 0.37).sin() * 1e3).collect();
        let a = arr(MemSource::num(vec![rows, cols], vec![cr.min(rows.max(1)), cc.min(cols)], NumType::F32, f32_bytes(&vals)), &cache, &ids);
        let npy = NpyFile::of_array(&a).unwrap();
        let mut expect = header("<f4", &[rows, cols]);
        expect.extend(f32_bytes(&vals));
        check_ranges(&npy, &expect, &ranges)?;

        let tsv = TextFile::new(Vec::new(), Arc::new(NumRowsText { rows: Arc::new(ArrayRows(a.clone())), t: NumType::F32 }), cache.clone());
        let mut text = Vec::new();
        for r in 0..rows as usize {
            for c in 0..cols as usize {
                if c > 0 { text.push(b'\t'); }
                push_num(&mut text, NumType::F32, &vals[r * cols as usize + c].to_le_bytes());
            }
            text.push(b'\n');
        }
        check_ranges(&tsv, &text, &ranges)?;
    }

    #[test]
    fn sparse_dense_npy(rows in 1u64..60, cols in 1u64..30, density in 0.0f64..0.5, csc in any::<bool>(),
                        chunk in 1u64..50, seed in any::<u64>(), ranges in prop::collection::vec((any::<u64>(), 0usize..2000), 8)) {
        let cache = Arc::new(ChunkCache::new(8192));
        let ids = ArrIds::default();
        // Deterministic pseudo-random sparsity pattern.
        let mut dense = vec![0f32; (rows * cols) as usize];
        let (major, minor) = if csc { (cols, rows) } else { (rows, cols) };
        let mut indptr = vec![0i64];
        let (mut idx, mut data) = (Vec::new(), Vec::new());
        let mut x = seed | 1;
        for m in 0..major {
            for n in 0..minor {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                if (x % 1000) as f64 / 1000.0 < density {
                    let v = (x % 200) as f32 - 100.0;
                    idx.push(n as i32);
                    data.push(v);
                    let (r, c) = if csc { (n, m) } else { (m, n) };
                    dense[(r * cols + c) as usize] = v;
                }
            }
            indptr.push(idx.len() as i64);
        }
        let nnz = idx.len() as u64;
        let m = Sparse {
            format: if csc { SparseFormat::Csc } else { SparseFormat::Csr },
            shape: [rows, cols],
            data: arr(MemSource::num(vec![nnz], vec![chunk], NumType::F32, f32_bytes(&data)), &cache, &ids),
            indices: arr(MemSource::num(vec![nnz], vec![chunk], NumType::I32, idx.iter().flat_map(|v| v.to_le_bytes()).collect()), &cache, &ids),
            indptr: arr(MemSource::num(vec![major + 1], vec![chunk], NumType::I64, indptr.iter().flat_map(|v| v.to_le_bytes()).collect()), &cache, &ids),
            indptr_base: 0,
            minor: None,
            minor_list: None,
            sorted: false,
        };
        let npy = NpyFile::new(NumType::F32, &[rows, cols], Arc::new(SparseRows::new(m, cache.clone()).unwrap()));
        let mut expect = header("<f4", &[rows, cols]);
        expect.extend(f32_bytes(&dense));
        check_ranges(&npy, &expect, &ranges)?;
    }

    #[test]
    fn table_text(n in 0u64..200, chunk in 1u64..64, n_cats in 1usize..5,
                  strs in prop::collection::vec("[a-z\t\"\n ]{0,6}", 200),
                  ranges in prop::collection::vec((any::<u64>(), 0usize..500), 8)) {
        let cache = Arc::new(ChunkCache::new(2048));
        let ids = ArrIds::default();
        let names: Vec<String> = strs[..n as usize].to_vec();
        let ints: Vec<i64> = (0..n as i64).map(|i| i * 7 - 50).collect();
        let codes: Vec<i8> = (0..n).map(|i| (i as i64 % (n_cats as i64 + 1)) as i8 - 1).collect();
        let cats: Vec<String> = (0..n_cats).map(|i| format!("cat {i}")).collect();
        let index = Column::Str(arr(MemSource::strings(names.clone(), chunk), &cache, &ids));
        let num = Column::Num(arr(MemSource::num(vec![n], vec![chunk], NumType::I64, ints.iter().flat_map(|v| v.to_le_bytes()).collect()), &cache, &ids));
        let cat = Column::Categorical {
            codes: arr(MemSource::num(vec![n], vec![chunk], NumType::I8, codes.iter().map(|c| *c as u8).collect()), &cache, &ids),
            categories: Box::new(Column::Str(arr(MemSource::strings(cats.clone(), 2), &cache, &ids))),
            ordered: false,
        };
        let head = header_line(&["", "count", "kind"]);
        let table = TextFile::new(head.clone(), Arc::new(TableText {
            columns: vec![ColumnCells::new(index.clone()), ColumnCells::new(num), ColumnCells::new(cat)], n, trailer: "",
        }), cache.clone());
        let mut expect = head;
        for i in 0..n as usize {
            push_field(&mut expect, &names[i]);
            expect.extend(format!("\t{}\t", ints[i]).bytes());
            if codes[i] < 0 { expect.extend(b"NA"); } else { expect.extend(cats[codes[i] as usize].bytes()); }
            expect.push(b'\n');
        }
        check_ranges(&table, &expect, &ranges)?;

        let lines = TextFile::new(Vec::new(), Arc::new(ColumnText::new(ColumnCells::new(index), n)), cache.clone());
        let mut expect = Vec::new();
        for s in &names { push_field(&mut expect, s); expect.push(b'\n'); }
        check_ranges(&lines, &expect, &ranges)?;
    }
}

/// The bytes of a single-file tree.
fn file_bytes(t: &super::VTree) -> Vec<u8> {
    match &t.nodes[0] {
        super::VNode::File(f) => {
            let n = f.size().unwrap();
            let b = f.read(0, n as usize + 1).unwrap();
            assert_eq!(b.len() as u64, n, "stat size equals bytes read");
            b
        }
        _ => panic!("not a file"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Row-slice views equal the corresponding slice of the whole matrix's rendering.
    #[test]
    fn row_slices_equal_slices_of_the_whole(rows in 1u64..50, cols in 1u64..12, density in 0.0f64..0.6,
                                            chunk in 1u64..30, seed in any::<u64>(), a in 0u64..60, b in 0u64..60,
                                            ranges in prop::collection::vec((any::<u64>(), 0usize..300), 4)) {
        use super::rows::MatrixRows;
        use super::tree::TreeOptions;
        use super::DynDir;
        let cache = Arc::new(ChunkCache::new(1 << 16));
        let ids = ArrIds::default();
        let mut dense = vec![0f32; (rows * cols) as usize];
        let (mut indptr, mut idx, mut data) = (vec![0i64], Vec::new(), Vec::new());
        let mut x = seed | 1;
        for r in 0..rows {
            for c in 0..cols {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                if (x % 1000) as f64 / 1000.0 < density {
                    let v = ((x % 400) as f32 - 200.0) / 8.0;
                    idx.push(c as i32);
                    data.push(v);
                    dense[(r * cols + c) as usize] = v;
                }
            }
            indptr.push(idx.len() as i64);
        }
        let nnz = idx.len() as u64;
        let m = crate::model::Matrix::Sparse(Sparse {
            format: SparseFormat::Csr,
            shape: [rows, cols],
            data: arr(MemSource::num(vec![nnz], vec![chunk], NumType::F32, f32_bytes(&data)), &cache, &ids),
            indices: arr(MemSource::num(vec![nnz], vec![chunk], NumType::I32, idx.iter().flat_map(|v| v.to_le_bytes()).collect()), &cache, &ids),
            indptr: arr(MemSource::num(vec![rows + 1], vec![chunk], NumType::I64, indptr.iter().flat_map(|v| v.to_le_bytes()).collect()), &cache, &ids),
            indptr_base: 0,
            minor: None,
            minor_list: None,
            sorted: false,
        });
        let dir = MatrixRows::new(m, cache.clone(), TreeOptions::default());
        let whole_tsv = file_bytes(&dir.lookup(&format!("0:{rows}.tsv")).unwrap());
        let whole_mtx = file_bytes(&dir.lookup(&format!("0:{rows}.mtx")).unwrap());
        let (s, e) = (a % rows, b % (rows + 1));
        if s < e {
            // .npy: header + the dense rows.
            let npy = dir.lookup(&format!("{s}:{e}.npy")).unwrap();
            let mut want = header("<f4", &[e - s, cols]);
            want.extend(f32_bytes(&dense[(s * cols) as usize..(e * cols) as usize]));
            if let super::VNode::File(f) = &npy.nodes[0] { check_ranges(f.as_ref(), &want, &ranges)?; }
            // .tsv: lines s..e of the whole.
            let lines: Vec<&[u8]> = whole_tsv.split_inclusive(|&c| c == b'\n').collect();
            let want_tsv: Vec<u8> = lines[s as usize..e as usize].concat();
            prop_assert_eq!(file_bytes(&dir.lookup(&format!("{s}:{e}.tsv")).unwrap()), want_tsv);
            // .mtx: the whole's entries of rows s..e, renumbered from 1.
            let mut body = Vec::new();
            let mut n = 0;
            for line in whole_mtx.split_inclusive(|&c| c == b'\n').skip(2) {
                let txt = std::str::from_utf8(line).unwrap();
                let mut it = txt.splitn(2, ' ');
                let r: u64 = it.next().unwrap().parse().unwrap();
                if r > s && r <= e {
                    body.extend(format!("{} {}", r - s, it.next().unwrap()).bytes());
                    n += 1;
                }
            }
            let mut want_mtx = format!("%%MatrixMarket matrix coordinate real general\n{} {cols} {n}\n", e - s).into_bytes();
            want_mtx.extend(body);
            prop_assert_eq!(file_bytes(&dir.lookup(&format!("{s}:{e}.mtx")).unwrap()), want_mtx);
        } else {
            let name = format!("{s}:{e}.npy");
            prop_assert!(dir.lookup(&name).is_none());
        }
        // Listed blocks tile the rows exactly once.
        let mut next = 0;
        for name in dir.list() {
            let (a, b) = super::rows::parse_slice(name.trim_end_matches(".npy"), rows).unwrap();
            prop_assert_eq!(a, next);
            next = b;
        }
        prop_assert_eq!(next, rows);
    }
}

/// A table of `n` lines costing one "column read" per rendered or measured block.
struct WideLines {
    n: u64,
    blocks: std::sync::atomic::AtomicU64,
}

impl super::text_file::RowText for WideLines {
    fn n_rows(&self) -> u64 {
        self.n
    }
    fn row_cost(&self) -> u64 {
        12 * 20_000
    }
    fn render(&self, r0: u64, r1: u64, out: &mut Vec<u8>) -> super::ViewResult<()> {
        self.blocks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        (r0..r1).for_each(|r| out.extend_from_slice(format!("{r}\n").as_bytes()));
        Ok(())
    }
}

#[test]
fn wide_tables_are_cut_into_blocks_of_many_lines() {
    // 20,000 columns make one line cost ~240 KB: blocks of one line each read every column once
    // per line. At least 32 lines per block: 200 lines are 7 blocks, sized and rendered once each.
    let cache = Arc::new(ChunkCache::new(64 << 20));
    let body = Arc::new(WideLines { n: 200, blocks: Default::default() });
    let f = TextFile::new(Vec::new(), body.clone(), cache);
    let want: Vec<u8> = (0..200).flat_map(|r| format!("{r}\n").into_bytes()).collect();
    assert_eq!(f.size().unwrap(), want.len() as u64);
    assert_eq!(f.read(0, want.len()).unwrap(), want);
    assert_eq!(body.blocks.load(std::sync::atomic::Ordering::SeqCst), 2 * 200u64.div_ceil(32));
}
