//! How many bytes a value's text takes, counted without writing it where that is cheaper: the
//! size pass of text views (`stat` of a million-row `.tsv` counts every cell). Each count
//! equals the length [`super::text_values::push_num`] writes (property-tested below).

use super::text_values::{int_of, is_whole_below, positional, push_f32, push_f64, push_num, Int};
use crate::storage::NumType;

/// Decimal digits of `v` (1 for 0).
fn digits(v: u64) -> usize {
    v.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// Length of `v` in decimal, with its minus sign.
fn signed_len(v: i64) -> usize {
    digits(v.unsigned_abs()) + usize::from(v < 0)
}

/// The length [`push_num`] writes for an integer element, counted (`None`: not an
/// integer type).
fn int_len(t: NumType, bytes: &[u8]) -> Option<usize> {
    Some(match int_of(t, bytes)? {
        Int::Signed(v) => signed_len(v),
        Int::Unsigned(v) => digits(v),
    })
}

/// Bytes [`push_num`] appends for this element, counted without writing the text where that is
/// cheaper (the size pass of text views).
pub fn num_len(t: NumType, bytes: &[u8]) -> usize {
    if let Some(n) = int_len(t, bytes) {
        return n;
    }
    match t {
        NumType::Bool => if bytes.first().copied().unwrap_or(0) != 0 { 4 } else { 5 },
        NumType::I8 | NumType::I16 | NumType::I32 | NumType::I64 => 0,
        NumType::U8 | NumType::U16 | NumType::U32 | NumType::U64 => 0,
        NumType::F32 => f32_len(f32::from_le_bytes(bytes.try_into().unwrap_or_default()), &mut zmij::Buffer::new()),
        NumType::F64 => f64_len(f64::from_le_bytes(bytes.try_into().unwrap_or_default()), &mut zmij::Buffer::new()),
        NumType::F16 | NumType::C64 | NumType::C128 => {
            let mut out = Vec::new();
            push_num(&mut out, t, bytes);
            out.len()
        }
    }
}

/// Calls `f` with [`num_len`] of each element of `raw` (whole elements of type `t`), in order:
/// the type is matched once, not per element (the size pass of a million-row table).
pub fn each_num_len(t: NumType, raw: &[u8], mut f: impl FnMut(usize)) {
    macro_rules! each {
        ($ty:ty, $len:expr) => {
            for c in raw.chunks_exact(std::mem::size_of::<$ty>()) {
                f($len(<$ty>::from_le_bytes(c.try_into().unwrap_or_default())))
            }
        };
    }
    let buf = &mut zmij::Buffer::new();
    match t {
        NumType::I8 => each!(i8, |v: i8| signed_len(v.into())),
        NumType::I16 => each!(i16, |v: i16| signed_len(v.into())),
        NumType::I32 => each!(i32, |v: i32| signed_len(v.into())),
        NumType::I64 => each!(i64, signed_len),
        NumType::U8 => each!(u8, |v: u8| digits(v.into())),
        NumType::U16 => each!(u16, |v: u16| digits(v.into())),
        NumType::U32 => each!(u32, |v: u32| digits(v.into())),
        NumType::U64 => each!(u64, digits),
        NumType::F32 => each!(f32, |v| f32_len(v, buf)),
        NumType::F64 => each!(f64, |v| f64_len(v, buf)),
        NumType::Bool | NumType::F16 | NumType::C64 | NumType::C128 => {
            raw.chunks_exact(t.size().max(1)).for_each(|c| f(num_len(t, c)))
        }
    }
}

/// [`num_len`] of an `f32`.
fn f32_len(v: f32, buf: &mut zmij::Buffer) -> usize {
    float_len(v as f64, 1e6, 6, || shape(buf.format_finite(v)))
}

/// [`num_len`] of an `f64`.
fn f64_len(v: f64, buf: &mut zmij::Buffer) -> usize {
    float_len(v, 9_007_199_254_740_992.0, 16, || shape(buf.format_finite(v)))
}

/// [`num_len`] of a float (`v` widened to f64): the branches of [`push_f64`] / [`push_f32`],
/// with `shortest` formatting the value in its own type (see [`shape`]). Only exponent forms
/// (rare in data) are laid out in full to count them.
fn float_len(v: f64, integral_limit: f64, max_exp: i32, shortest: impl FnOnce() -> (usize, bool)) -> usize {
    if !v.is_finite() {
        return if v.is_nan() || v > 0.0 { 3 } else { 4 };
    }
    if is_whole_below(v, integral_limit) {
        return signed_len(v as i64) + 2;
    }
    let (len, has_exp) = shortest();
    if positional(v, max_exp) && !has_exp {
        return len;
    }
    let mut out = Vec::new();
    if max_exp == 6 {
        push_f32(&mut out, v as f32);
    } else {
        push_f64(&mut out, v);
    }
    out.len()
}

/// Length of a shortest-digits string and whether it has an exponent.
fn shape(s: &str) -> (usize, bool) {
    // An exponent is at most `e-324`: only the last five bytes can hold its `e`.
    let tail = s.as_bytes().get(s.len().saturating_sub(5)..).unwrap_or_default();
    (s.len(), tail.iter().any(|&b| b | 0x20 == b'e'))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn num_len_is_the_length_push_num_writes(bits in proptest::prelude::any::<u64>(), small in -2_000_000i64..2_000_000) {
            use NumType::*;
            for v in [bits, small as u64, (small as f64).to_bits(), ((small as f64) * 0.37).to_bits(),
                      ((small as f32) * 0.37).to_bits() as u64, (small as f32).to_bits() as u64] {
                let b = v.to_le_bytes();
                for t in [Bool, I8, I16, I32, I64, U8, U16, U32, U64, F16, F32, F64, C64, C128] {
                    let bytes: Vec<u8> = b.iter().chain(b.iter()).copied().take(t.size()).collect();
                    let mut out = Vec::new();
                    push_num(&mut out, t, &bytes);
                    proptest::prop_assert_eq!(num_len(t, &bytes), out.len(), "{:?} {:?}", t, bytes);
                }
            }
        }

        #[test]
        fn each_num_len_is_num_len_per_element(raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..96), small in -2_000_000i64..2_000_000) {
            use NumType::*;
            // Random bytes, and values in the common ranges (whole and fractional floats).
            let typical: Vec<u8> = [(small as f64) * 0.37, small as f64].iter().flat_map(|v| v.to_le_bytes())
                .chain([(small as f32) * 0.37, small as f32].iter().flat_map(|v| v.to_le_bytes())).collect();
            for raw in [&raw, &typical] {
                for t in [Bool, I8, I16, I32, I64, U8, U16, U32, U64, F16, F32, F64, C64, C128] {
                    let mut got = Vec::new();
                    each_num_len(t, raw, |n| got.push(n));
                    let want: Vec<usize> = raw.chunks_exact(t.size()).map(|c| num_len(t, c)).collect();
                    proptest::prop_assert_eq!(got, want, "{:?}", t);
                }
            }
        }
    }
}
