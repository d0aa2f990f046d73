//! Adding stored sparse values into dense rows: `dst[slot] += value`, as scipy sums duplicates
//! (bools: logical or).
//!
//! [`add_slots`] decides the element type once per call and runs a loop compiled for it; a
//! dispatch on the type for every entry (what [`accumulate`] does) cost as much as the rest
//! of densifying a CSR row (`perf` of `dd` over `X/dense.npy`: 11% of the daemon in
//! `accumulate` alone). Half floats and complex numbers, rare in stores, go entry by entry.

use crate::storage::NumType;

/// A numeric type stored little-endian in `W` bytes, added as scipy adds it.
trait Elem: Copy {
    const W: usize;
    fn load(b: &[u8]) -> Self;
    fn store(self, b: &mut [u8]);
    fn plus(self, o: Self) -> Self;
}

macro_rules! elem {
    ($($ty:ty => $plus:ident),*) => {$(
        impl Elem for $ty {
            const W: usize = std::mem::size_of::<$ty>();
            #[inline(always)]
            fn load(b: &[u8]) -> Self {
                <[u8; std::mem::size_of::<$ty>()]>::try_from(b).map(<$ty>::from_le_bytes).unwrap_or_default()
            }
            #[inline(always)]
            fn store(self, b: &mut [u8]) {
                b.copy_from_slice(&self.to_le_bytes());
            }
            #[inline(always)]
            fn plus(self, o: Self) -> Self {
                self.$plus(o)
            }
        }
    )*};
}

trait Add: Sized {
    fn add_f(self, o: Self) -> Self;
}
impl Add for f32 {
    fn add_f(self, o: Self) -> Self {
        self + o
    }
}
impl Add for f64 {
    fn add_f(self, o: Self) -> Self {
        self + o
    }
}

elem!(i8 => wrapping_add, i16 => wrapping_add, i32 => wrapping_add, i64 => wrapping_add,
      u8 => wrapping_add, u16 => wrapping_add, u32 => wrapping_add, u64 => wrapping_add,
      f32 => add_f, f64 => add_f);

/// Bools: one byte, added as a logical or.
#[derive(Clone, Copy)]
struct Flag(u8);

impl Elem for Flag {
    const W: usize = 1;
    #[inline(always)]
    fn load(b: &[u8]) -> Self {
        Flag(b.first().copied().unwrap_or(0))
    }
    #[inline(always)]
    fn store(self, b: &mut [u8]) {
        if let Some(d) = b.first_mut() {
            *d = self.0;
        }
    }
    #[inline(always)]
    fn plus(self, o: Self) -> Self {
        Flag(self.0 | o.0)
    }
}

/// For the `k`-th slot of `slots`: `dst[slot] += data[k]`, elements of type `t` (slots and
/// `k` count elements, not bytes). Slots or values past the buffers are skipped (callers check
/// indices before).
pub(super) fn add_slots(t: NumType, dst: &mut [u8], data: &[u8], slots: impl Iterator<Item = usize>) {
    match t {
        NumType::Bool => add::<Flag>(dst, data, slots),
        NumType::I8 => add::<i8>(dst, data, slots),
        NumType::I16 => add::<i16>(dst, data, slots),
        NumType::I32 => add::<i32>(dst, data, slots),
        NumType::I64 => add::<i64>(dst, data, slots),
        NumType::U8 => add::<u8>(dst, data, slots),
        NumType::U16 => add::<u16>(dst, data, slots),
        NumType::U32 => add::<u32>(dst, data, slots),
        NumType::U64 => add::<u64>(dst, data, slots),
        NumType::F32 => add::<f32>(dst, data, slots),
        NumType::F64 => add::<f64>(dst, data, slots),
        NumType::F16 | NumType::C64 | NumType::C128 => {
            let w = t.size();
            for (k, slot) in slots.enumerate() {
                if let (Some(v), Some(d)) = (data.get(k * w..(k + 1) * w), dst.get_mut(slot * w..(slot + 1) * w)) {
                    accumulate(t, d, v);
                }
            }
        }
    }
}

#[inline(always)]
fn add<T: Elem>(dst: &mut [u8], data: &[u8], slots: impl Iterator<Item = usize>) {
    let w = T::W;
    for (v, slot) in data.chunks_exact(w).zip(slots) {
        if let Some(d) = dst.get_mut(slot * w..(slot + 1) * w) {
            T::load(d).plus(T::load(v)).store(d);
        }
    }
}

/// `dst += src` for one element of type `t` (bools: logical or), as scipy sums duplicates.
pub(super) fn accumulate(t: NumType, dst: &mut [u8], src: &[u8]) {
    match t {
        NumType::Bool => Flag::load(dst).plus(Flag::load(src)).store(dst),
        NumType::I8 => i8::load(dst).plus(i8::load(src)).store(dst),
        NumType::I16 => i16::load(dst).plus(i16::load(src)).store(dst),
        NumType::I32 => i32::load(dst).plus(i32::load(src)).store(dst),
        NumType::I64 => i64::load(dst).plus(i64::load(src)).store(dst),
        NumType::U8 => u8::load(dst).plus(u8::load(src)).store(dst),
        NumType::U16 => u16::load(dst).plus(u16::load(src)).store(dst),
        NumType::U32 => u32::load(dst).plus(u32::load(src)).store(dst),
        NumType::U64 => u64::load(dst).plus(u64::load(src)).store(dst),
        NumType::F32 => f32::load(dst).plus(f32::load(src)).store(dst),
        NumType::F64 => f64::load(dst).plus(f64::load(src)).store(dst),
        NumType::F16 => {
            let a = half::f16::from_le_bytes([dst[0], dst[1]]);
            let b = half::f16::from_le_bytes([src[0], src[1]]);
            dst.copy_from_slice(&(a + b).to_le_bytes());
        }
        NumType::C64 | NumType::C128 => {
            let h = dst.len() / 2;
            let part = if t == NumType::C64 { NumType::F32 } else { NumType::F64 };
            let (dr, di) = dst.split_at_mut(h);
            accumulate(part, dr, &src[..h]);
            accumulate(part, di, &src[h..]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes<T: Copy>(v: &[T], f: impl Fn(T) -> Vec<u8>) -> Vec<u8> {
        v.iter().flat_map(|&x| f(x)).collect()
    }

    /// Duplicates add (ints wrapping, bools or-ed), other slots stay zero.
    #[test]
    fn adds_as_scipy_sums_duplicates() {
        let slots = [2usize, 0, 2];
        let mut f = vec![0u8; 12];
        add_slots(NumType::F32, &mut f, &bytes(&[1.5f32, -4.0, 2.25], |v| v.to_le_bytes().to_vec()), slots.into_iter());
        assert_eq!(f, bytes(&[-4.0f32, 0.0, 3.75], |v| v.to_le_bytes().to_vec()));
        let mut d = vec![0u8; 24];
        add_slots(NumType::F64, &mut d, &bytes(&[0.1f64, 7.0, 0.2], |v| v.to_le_bytes().to_vec()), slots.into_iter());
        assert_eq!(d, bytes(&[7.0f64, 0.0, 0.1 + 0.2], |v| v.to_le_bytes().to_vec()));
        let mut i = vec![0u8; 3];
        add_slots(NumType::I8, &mut i, &[100u8, 5, 100], slots.into_iter());
        assert_eq!(i, [5, 0, (-56i8) as u8]);
        let mut u = vec![0u8; 6];
        add_slots(NumType::U16, &mut u, &bytes(&[65_000u16, 1, 1_000], |v| v.to_le_bytes().to_vec()), slots.into_iter());
        assert_eq!(u, bytes(&[1u16, 0, 464], |v| v.to_le_bytes().to_vec()));
        let mut b = vec![0u8; 3];
        add_slots(NumType::Bool, &mut b, &[1, 0, 0], slots.into_iter());
        assert_eq!(b, [0, 0, 1]);
    }

    /// Every type's loop (typed, or entry by entry for half floats and complex numbers) adds
    /// what [`accumulate`] adds entry by entry; slots past the buffer are skipped.
    #[test]
    fn every_type_adds_as_per_entry() {
        let types = [
            NumType::Bool, NumType::I8, NumType::I16, NumType::I32, NumType::I64, NumType::U8, NumType::U16,
            NumType::U32, NumType::U64, NumType::F16, NumType::F32, NumType::F64, NumType::C64, NumType::C128,
        ];
        for t in types {
            let w = t.size();
            let slots = [3usize, 0, 3, 7, 1, 3, 9, 10];
            let data: Vec<u8> = (0..slots.len() * w).map(|i| (i * 37 % 251) as u8 & if t == NumType::Bool { 1 } else { 0x3f }).collect();
            let mut want = vec![0u8; 10 * w];
            for (k, &s) in slots.iter().enumerate().filter(|(_, &s)| s < 10) {
                accumulate(t, &mut want[s * w..(s + 1) * w], &data[k * w..(k + 1) * w]);
            }
            let mut got = vec![0u8; 10 * w];
            add_slots(t, &mut got, &data, slots.iter().copied());
            assert_eq!(got, want, "{t:?}");
        }
    }
}
