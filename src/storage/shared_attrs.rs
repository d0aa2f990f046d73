//! Attribute sets shared between the elements of a store that carry equal ones. Nearly every
//! array of an AnnData store has the same two attributes (`encoding-type`, `encoding-version`);
//! as a map of its own each costs ~1 KB, 32 MB over a store of 30,000 datasets.

use std::collections::HashMap;
use std::sync::Arc;

use super::Attrs;

/// Attributes as elements hold them: one allocation per distinct small set.
pub type SharedAttrs = Arc<Attrs>;

/// Sets whose JSON text is longer than this are not looked up (each is kept on its own).
const MAX_SHARED_TEXT: usize = 512;

/// Hands out one shared copy of each distinct small attribute set met while opening a store.
#[derive(Default)]
pub struct AttrsInterner {
    seen: HashMap<String, SharedAttrs>,
}

impl AttrsInterner {
    /// `attrs` as a shared set: the copy handed out before for equal attributes, if any.
    pub fn share(&mut self, attrs: Attrs) -> SharedAttrs {
        match serde_json::to_string(&attrs) {
            Ok(text) if text.len() <= MAX_SHARED_TEXT => self.seen.entry(text).or_insert_with(|| Arc::new(attrs)).clone(),
            _ => Arc::new(attrs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(pairs: &[(&str, serde_json::Value)]) -> Attrs {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn equal_sets_share_one_copy_and_different_ones_do_not() {
        let mut interner = AttrsInterner::default();
        let a = interner.share(attrs(&[("encoding-type", json!("array")), ("encoding-version", json!("0.2.0"))]));
        let b = interner.share(attrs(&[("encoding-version", json!("0.2.0")), ("encoding-type", json!("array"))]));
        let c = interner.share(attrs(&[("encoding-type", json!("array")), ("encoding-version", json!("0.1.0"))]));
        let d = interner.share(attrs(&[("n", json!(1))]));
        let e = interner.share(attrs(&[("n", json!(1.0))]));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c) && *a != *c);
        assert!(!Arc::ptr_eq(&d, &e), "an integer and a float are different values");
        assert_eq!(*b, attrs(&[("encoding-type", json!("array")), ("encoding-version", json!("0.2.0"))]));
    }

    #[test]
    fn large_sets_are_kept_whole_and_apart() {
        let mut interner = AttrsInterner::default();
        let big = attrs(&[("text", json!("x".repeat(10_000)))]);
        let (a, b) = (interner.share(big.clone()), interner.share(big.clone()));
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(*a, big);
        assert!(interner.seen.is_empty());
    }
}
