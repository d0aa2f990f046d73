//! Containment of panics inside zarrs' decoders.
//!
//! zarrs 0.23's decoder of the `vlen-utf8` layout (`array/codec/array_to_bytes/vlen_v2.rs`)
//! slices element lengths read from the chunk without checking them against the chunk, so a
//! damaged string chunk panics inside the library (found by `scripts/fuzz_stores.py`). Calls
//! that decode run under [`decode`]: such a panic becomes an error for that read, and the panic
//! message of a zarrs source location is logged as a warning instead of printed, while any other
//! panic is reported as before.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;

/// Decoding calls in flight (the hook only quiets zarrs panics while one is).
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
static HOOK: Once = Once::new();

/// True for a source location inside one of the zarrs crates.
fn in_zarrs(file: &str) -> bool {
    file.contains("/zarrs-") || file.contains("/zarrs_")
}

fn install_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let zarrs = info.location().is_some_and(|l| in_zarrs(l.file()));
            if zarrs && ACTIVE.load(Ordering::Acquire) > 0 {
                log::debug!("zarrs decoder failed: {info}");
            } else {
                previous(info);
            }
        }));
    });
}

/// The message of a panic payload.
fn message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown failure".into())
}

/// Runs a zarrs decoding call; a panic inside it becomes `Err` with its message.
pub(super) fn decode<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_hook();
    ACTIVE.fetch_add(1, Ordering::AcqRel);
    let r = catch_unwind(AssertUnwindSafe(f));
    ACTIVE.fetch_sub(1, Ordering::AcqRel);
    r.map_err(|p| format!("zarrs could not decode damaged data ({})", message(p.as_ref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_errors() {
        assert_eq!(decode(|| 3), Ok(3));
        let e = decode(|| -> u8 { std::panic::panic_any("range end index 9 out of range") });
        assert!(e.unwrap_err().contains("range end index 9"));
        assert!(in_zarrs("/root/.cargo/registry/src/x/zarrs-0.23.14/src/array/codec/a.rs"));
        assert!(!in_zarrs("src/storage/zarr/source.rs"));
    }
}
