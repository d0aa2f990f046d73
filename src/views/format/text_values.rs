//! Text rendering of values: shortest round-trip floats in Python's layout, quoting, bools.
//!
//! See `docs/FORMATS.md`: a float prints as numpy's `str()` of the scalar in its stored dtype —
//! the shortest digits that parse back in that dtype, positional when `1e-4 <= |x| < 10^P`
//! (P = 16 for float64, which is Python's `repr`; 6 for float32; 3 for float16), else
//! scientific with a two-digit exponent — and NaN as `NaN`.

use crate::storage::NumType;

/// Appends `field` to `out`, double-quoted (with `""` escaping) when it holds a tab, `\r`,
/// `\n` or `"`.
pub fn push_field(out: &mut Vec<u8>, field: &str) {
    if field.bytes().any(|b| matches!(b, b'\t' | b'\r' | b'\n' | b'"')) {
        out.push(b'"');
        for b in field.bytes() {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(field.as_bytes());
    }
}

/// Bytes [`push_field`] appends for `field`.
pub fn field_len(field: &str) -> usize {
    if field.bytes().any(|b| matches!(b, b'\t' | b'\r' | b'\n' | b'"')) {
        2 + field.len() + field.bytes().filter(|&b| b == b'"').count()
    } else {
        field.len()
    }
}

/// Appends a bool as `True`/`False`.
pub fn push_bool(out: &mut Vec<u8>, v: bool) {
    out.extend_from_slice(if v { b"True" } else { b"False" });
}

/// Appends an `f64` as Python's `repr` (with `NaN` for NaN).
pub fn push_f64(out: &mut Vec<u8>, v: f64) {
    if !v.is_finite() {
        return push_nonfinite(out, v);
    }
    if push_integral(out, v, 9_007_199_254_740_992.0) {
        return;
    }
    let mut buf = zmij::Buffer::new();
    layout(out, buf.format_finite(v), positional(v, 16));
}

/// numpy's choice between positional and scientific notation for a value of a type whose
/// positional range ends at `10^max_exp`.
pub(super) fn positional(v: f64, max_exp: i32) -> bool {
    let upper = match max_exp {
        16 => 1e16,
        6 => 1e6,
        3 => 1e3,
        e => 10f64.powi(e),
    };
    let a = v.abs();
    a == 0.0 || (1e-4..upper).contains(&a)
}

/// Appends an `f32` with the shortest digits that round-trip in float32, in Python's layout.
pub fn push_f32(out: &mut Vec<u8>, v: f32) {
    if !v.is_finite() {
        return push_nonfinite(out, v as f64);
    }
    if push_integral(out, v as f64, 1e6) {
        return;
    }
    let mut buf = zmij::Buffer::new();
    layout(out, buf.format_finite(v), positional(v as f64, 6));
}

/// Appends an IEEE half with the shortest digits that round-trip in float16.
pub fn push_f16(out: &mut Vec<u8>, v: half::f16) {
    let x = v.to_f64();
    if !x.is_finite() {
        return push_nonfinite(out, x);
    }
    for prec in 0..17 {
        let s = format!("{:.*e}", prec, x);
        if let Ok(back) = s.parse::<f64>() {
            if half::f16::from_f64(back) == v {
                let mut b = zmij::Buffer::new();
                return layout(out, b.format_finite(back), positional(x, 3));
            }
        }
    }
    push_f64(out, x)
}

/// Fast path for whole numbers in the positional range (counts stored as floats): prints
/// `123.0` the way [`layout`] would, without formatting digits twice. False when `v` is not a
/// whole number below `limit` in magnitude (or is a negative zero, which keeps its sign).
fn push_integral(out: &mut Vec<u8>, v: f64, limit: f64) -> bool {
    if !is_whole_below(v, limit) {
        return false;
    }
    out.extend_from_slice(itoa::Buffer::new().format(v as i64).as_bytes());
    out.extend_from_slice(b".0");
    true
}

/// True when finite `v` is a whole number below `limit` (at most 2^53) in magnitude and not a
/// negative zero. (A cast instead of `fract`: without SSE4.1 that is a libm call per value.)
pub(super) fn is_whole_below(v: f64, limit: f64) -> bool {
    v.abs() < limit && (v as i64) as f64 == v && !(v == 0.0 && v.is_sign_negative())
}

fn push_nonfinite(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(if v.is_nan() {
        b"NaN".as_slice()
    } else if v > 0.0 {
        b"inf".as_slice()
    } else {
        b"-inf".as_slice()
    });
}

/// Re-lays a shortest-digits decimal string (as zmij or ryu print it: `1.5`, `1e20`, `1.5e-7`,
/// `0.001`) out positionally (`123.0`, `0.001`) or as `d.ddde±XX`.
fn layout(out: &mut Vec<u8>, s: &str, positional: bool) {
    // zmij (like ryu) prints shortest positional numbers the way Python does (`0.001`, `12.5`,
    // `100.0`): only exponent forms need re-laying.
    if positional && !s.bytes().any(|b| b == b'e' || b == b'E') {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    relayout(out, s, positional);
}

/// The general case of [`layout`]: normalises the digits and places the point.
fn relayout(out: &mut Vec<u8>, s: &str, positional: bool) {
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (mant, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], s[i + 1..].parse::<i32>().unwrap_or(0)),
        None => (s, 0),
    };
    let (int_part, frac_part) = match mant.find('.') {
        Some(i) => (&mant[..i], &mant[i + 1..]),
        None => (mant, ""),
    };
    // All digits (on the stack: zmij prints at most 17 significant digits plus zeros of a
    // positional form, well under 64) and the position of the decimal point relative to them.
    let mut buf = [0u8; 64];
    let mut n = 0;
    for b in int_part.bytes().chain(frac_part.bytes()).take(buf.len()) {
        buf[n] = b;
        n += 1;
    }
    let mut point = int_part.len() as i32 + exp;
    // Normalise: strip leading zeros (moving the point) and trailing zeros.
    let lead = buf[..n].iter().take_while(|&&d| d == b'0').count();
    if lead == n {
        // Zero.
        if neg {
            out.push(b'-');
        }
        out.extend_from_slice(b"0.0");
        return;
    }
    point -= lead as i32;
    let mut end = n;
    while end > lead && buf[end - 1] == b'0' {
        end -= 1;
    }
    let digits = &buf[lead..end];
    if neg {
        out.push(b'-');
    }
    let sci_exp = point - 1;
    if positional {
        if point <= 0 {
            out.extend_from_slice(b"0.");
            out.extend(std::iter::repeat_n(b'0', (-point) as usize));
            out.extend_from_slice(digits);
        } else if point as usize >= digits.len() {
            out.extend_from_slice(digits);
            out.extend(std::iter::repeat_n(b'0', point as usize - digits.len()));
            out.extend_from_slice(b".0");
        } else {
            out.extend_from_slice(&digits[..point as usize]);
            out.push(b'.');
            out.extend_from_slice(&digits[point as usize..]);
        }
    } else {
        out.push(digits[0]);
        if digits.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        out.push(b'e');
        out.push(if sci_exp < 0 { b'-' } else { b'+' });
        let e = sci_exp.unsigned_abs();
        if e < 10 {
            out.push(b'0');
        }
        out.extend_from_slice(itoa::Buffer::new().format(e).as_bytes());
    }
}

/// An integer element's value, widened without loss.
#[derive(Clone, Copy)]
pub(super) enum Int {
    Signed(i64),
    Unsigned(u64),
}

/// The value of an integer element of type `t` read from little-endian `bytes`; `None` when `t`
/// is not an integer type.
pub(super) fn int_of(t: NumType, bytes: &[u8]) -> Option<Int> {
    macro_rules! read {
        ($ty:ty) => {
            <$ty>::from_le_bytes(bytes.try_into().unwrap_or_default())
        };
    }
    Some(match t {
        NumType::I8 => Int::Signed(read!(i8).into()),
        NumType::I16 => Int::Signed(read!(i16).into()),
        NumType::I32 => Int::Signed(read!(i32).into()),
        NumType::I64 => Int::Signed(read!(i64)),
        NumType::U8 => Int::Unsigned(read!(u8).into()),
        NumType::U16 => Int::Unsigned(read!(u16).into()),
        NumType::U32 => Int::Unsigned(read!(u32).into()),
        NumType::U64 => Int::Unsigned(read!(u64)),
        _ => return None,
    })
}

/// Calls `f` with the decimal text of an integer element (see [`int_of`]).
fn with_int<R>(t: NumType, bytes: &[u8], f: impl FnOnce(&str) -> R) -> Option<R> {
    Some(match int_of(t, bytes)? {
        Int::Signed(v) => f(itoa::Buffer::new().format(v)),
        Int::Unsigned(v) => f(itoa::Buffer::new().format(v)),
    })
}

/// Appends one element of type `t` read from little-endian `bytes` (exactly `t.size()` long).
pub fn push_num(out: &mut Vec<u8>, t: NumType, bytes: &[u8]) {
    use std::io::Write;
    if with_int(t, bytes, |s| out.extend_from_slice(s.as_bytes())).is_some() {
        return;
    }
    match t {
        NumType::Bool => push_bool(out, bytes.first().copied().unwrap_or(0) != 0),
        NumType::I8 | NumType::I16 | NumType::I32 | NumType::I64 => {}
        NumType::U8 | NumType::U16 | NumType::U32 | NumType::U64 => {}
        NumType::F16 => push_f16(out, half::f16::from_le_bytes(bytes.try_into().unwrap_or_default())),
        NumType::F32 => push_f32(out, f32::from_le_bytes(bytes.try_into().unwrap_or_default())),
        NumType::F64 => push_f64(out, f64::from_le_bytes(bytes.try_into().unwrap_or_default())),
        NumType::C64 | NumType::C128 => {
            let h = bytes.len() / 2;
            let (re, im) = bytes.split_at(h);
            let part = if t == NumType::C64 { NumType::F32 } else { NumType::F64 };
            push_num(out, part, re);
            let mut imag = Vec::new();
            push_num(&mut imag, part, im);
            if !imag.starts_with(b"-") {
                out.push(b'+');
            }
            out.extend_from_slice(&imag);
            let _ = out.write_all(b"j");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f64s(v: f64) -> String {
        let mut o = Vec::new();
        push_f64(&mut o, v);
        String::from_utf8(o).unwrap()
    }
    fn f32s(v: f32) -> String {
        let mut o = Vec::new();
        push_f32(&mut o, v);
        String::from_utf8(o).unwrap()
    }

    /// The general path, bypassing the whole-number fast path.
    fn slow(v: f64, max_exp: i32, as_f32: bool) -> String {
        let mut o = Vec::new();
        let mut buf = zmij::Buffer::new();
        let s = if as_f32 { buf.format_finite(v as f32) } else { buf.format_finite(v) };
        layout(&mut o, s, positional(v, max_exp));
        String::from_utf8(o).unwrap()
    }

    proptest::proptest! {
        #[test]
        fn positional_fast_path_matches_the_general_layout(bits in proptest::num::u64::ANY, bits32 in proptest::num::u32::ANY) {
            let (v, w) = (f64::from_bits(bits), f32::from_bits(bits32));
            for (s, p) in [
                (zmij::Buffer::new().format(v).to_string(), positional(v, 16)),
                (zmij::Buffer::new().format(w).to_string(), positional(w as f64, 6)),
            ] {
                if v.is_finite() && w.is_finite() {
                    let (mut fast, mut general) = (Vec::new(), Vec::new());
                    layout(&mut fast, &s, p);
                    relayout(&mut general, &s, p);
                    proptest::prop_assert_eq!(fast, general, "{}", s);
                }
            }
        }

        #[test]
        fn zmij_lays_out_as_ryu_did(bits in proptest::num::u64::ANY, bits32 in proptest::num::u32::ANY) {
            // The shortest digits come from zmij (3-4x ryu's speed); laid out, they are what the
            // ryu-based formatting wrote, for every finite value.
            let (v, w) = (f64::from_bits(bits), f32::from_bits(bits32));
            let lay = |s: &str, p: bool| { let mut o = Vec::new(); relayout(&mut o, s, p); o };
            if v.is_finite() {
                proptest::prop_assert_eq!(lay(zmij::Buffer::new().format_finite(v), positional(v, 16)),
                                          lay(ryu::Buffer::new().format_finite(v), positional(v, 16)));
            }
            if w.is_finite() {
                proptest::prop_assert_eq!(lay(zmij::Buffer::new().format_finite(w), positional(w as f64, 6)),
                                          lay(ryu::Buffer::new().format_finite(w), positional(w as f64, 6)));
            }
        }

        #[test]
        fn whole_number_fast_path_matches_the_general_layout(i in -20_000_000i64..20_000_000, big in 0u64..(1 << 53)) {
            let v = i as f64;
            proptest::prop_assert_eq!(f64s(v), slow(v, 16, false));
            proptest::prop_assert_eq!(f64s(big as f64), slow(big as f64, 16, false));
            let w = i as f32;
            proptest::prop_assert_eq!(f32s(w), slow(w as f64, 6, true));
        }
    }

    #[test]
    fn python_repr_layout() {
        // Expected strings are Python's repr() of the same floats.
        let cases = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1.5, "1.5"),
            (100.0, "100.0"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.2345e-7, "1.2345e-07"),
            (1e100, "1e+100"),
            (-2.5e-300, "-2.5e-300"),
            (123456.789, "123456.789"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
        ];
        for (v, want) in cases {
            assert_eq!(f64s(v), want, "value {v:e}");
        }
    }

    #[test]
    fn float32_shortest() {
        // numpy: str(np.float32(x))
        assert_eq!(f32s(0.1), "0.1");
        assert_eq!(f32s(1e20), "1e+20");
        assert_eq!(f32s(16777216.0), "1.6777216e+07");
        assert_eq!(f32s(3.4028235e38), "3.4028235e+38");
        assert_eq!(f32s(1e-5), "1e-05");
        assert_eq!(f32s(999999.9), "999999.9");
        assert_eq!(f32s(1e6), "1e+06");
        assert_eq!(f32s(1.2345678e7), "1.2345678e+07");
        assert_eq!(f32s(0.0001), "1e-04");
    }

    #[test]
    fn float16_shortest() {
        let mut o = Vec::new();
        push_f16(&mut o, half::f16::from_f32(0.1));
        assert_eq!(o, b"0.1");
        o.clear();
        push_f16(&mut o, half::f16::from_f32(65504.0));
        assert_eq!(o, b"6.55e+04");
        o.clear();
        push_f16(&mut o, half::f16::from_f32(999.0));
        assert_eq!(o, b"999.0");
        o.clear();
        push_f16(&mut o, half::f16::from_f32(0.0001));
        assert_eq!(o, b"0.0001");
    }

    #[test]
    fn quoting() {
        let mut o = Vec::new();
        push_field(&mut o, "plain");
        push_field(&mut o, "a\tb");
        push_field(&mut o, "say \"hi\"");
        assert_eq!(o, b"plain\"a\tb\"\"say \"\"hi\"\"\"");
    }

    proptest::proptest! {
        #[test]
        fn f64_roundtrips(bits in proptest::prelude::any::<u64>()) {
            let v = f64::from_bits(bits);
            let s = f64s(v);
            if v.is_nan() { proptest::prop_assert_eq!(s, "NaN"); }
            else { proptest::prop_assert_eq!(s.parse::<f64>().unwrap().to_bits(), v.to_bits()); }
        }

        #[test]
        fn field_len_is_the_length_push_field_writes(s in ".{0,12}") {
            let mut out = Vec::new();
            push_field(&mut out, &s);
            proptest::prop_assert_eq!(field_len(&s), out.len());
        }

        #[test]
        fn f32_roundtrips(bits in proptest::prelude::any::<u32>()) {
            let v = f32::from_bits(bits);
            let s = f32s(v);
            if v.is_nan() { proptest::prop_assert_eq!(s, "NaN"); }
            else { proptest::prop_assert_eq!(s.parse::<f32>().unwrap().to_bits(), v.to_bits()); }
        }
    }
}
