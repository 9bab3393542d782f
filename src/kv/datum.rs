//! A key or a value as a group's state machine holds it: short ones
//! inline, in the map's own node, longer ones in a heap buffer of their
//! own.
//!
//! Why (issue #22): with `Bytes` keys every comparison of a map lookup or
//! insert followed a pointer to a separate allocation, and every put
//! allocated twice (its key and its value). Profiled at 64 × 64 writes
//! with the generator's 15-byte keys, the inserts' key comparisons were
//! 13 % of a node's CPU (`memcmp` on cache misses), `malloc`/`free` about
//! 10 % more. Inline, a binary search over a node reads only that node,
//! and a put of a short key and value allocates nothing. The same idea
//! as the "German strings" of Umbra and DuckDB, and Redis's `embstr`.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use bytes::Bytes;

/// The longest key or value held inline (bytes). With its length byte it
/// takes the room of a `Bytes` handle beside the enum's tag, so a
/// [`Datum`] is as small as a `Bytes` (32 bytes on 64-bit targets; a test
/// checks it). Longer ones are copied once into a buffer of their own.
pub const DATUM_INLINE_MAX: usize = 23;

/// A byte string of the state machine: ordered, compared and hashed as
/// its bytes (`[u8]`'s order, as `Bytes` is), so a map of them is looked
/// up by `&[u8]`. Never a view into a larger buffer: a short one is
/// inline, a long one owns exactly its bytes, so what the map keeps is
/// never a network frame or a log entry kept alive by one key.
#[derive(Clone)]
pub struct Datum(Repr);

#[derive(Clone)]
enum Repr {
    Inline {
        len: u8,
        buf: [u8; DATUM_INLINE_MAX],
    },
    Heap(Bytes),
}

impl Datum {
    /// `b`'s bytes, copied: inline if at most [`DATUM_INLINE_MAX`].
    pub fn copy_from_slice(b: &[u8]) -> Datum {
        if b.len() <= DATUM_INLINE_MAX {
            let mut buf = [0u8; DATUM_INLINE_MAX];
            buf[..b.len()].copy_from_slice(b);
            Datum(Repr::Inline {
                len: b.len() as u8,
                buf,
            })
        } else {
            Datum(Repr::Heap(Bytes::copy_from_slice(b)))
        }
    }

    /// A computed value: its buffer taken as it is if it is long (no
    /// copy); a short one is copied inline and the buffer dropped.
    pub fn from_vec(v: Vec<u8>) -> Datum {
        if v.len() <= DATUM_INLINE_MAX {
            Datum::copy_from_slice(&v)
        } else {
            Datum(Repr::Heap(Bytes::from(v)))
        }
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, buf } => &buf[..*len as usize],
            Repr::Heap(b) => b,
        }
    }

    /// The bytes as a `Bytes` for an answer: a long one shares its buffer
    /// (a reference count), a short one is copied (a small allocation, as
    /// cloning a `Bytes` made from a `Vec` costs the first time).
    pub fn to_bytes(&self) -> Bytes {
        match &self.0 {
            Repr::Inline { len, buf } => Bytes::copy_from_slice(&buf[..*len as usize]),
            Repr::Heap(b) => b.clone(),
        }
    }

    /// Whether the bytes are held inline (no allocation of their own).
    pub fn is_inline(&self) -> bool {
        matches!(self.0, Repr::Inline { .. })
    }
}

impl Deref for Datum {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for Datum {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Borrow<[u8]> for Datum {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for Datum {
    fn eq(&self, other: &Datum) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Datum {}

impl PartialOrd for Datum {
    fn partial_cmp(&self, other: &Datum) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Datum {
    fn cmp(&self, other: &Datum) -> Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl Hash for Datum {
    // As `[u8]` hashes, so `Borrow<[u8]>` lookups agree.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state)
    }
}

impl std::fmt::Debug for Datum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // b"...": printable ASCII as it is, other bytes escaped
        // (`std::ascii::escape_default`; `Bytes` prints alike but for a
        // few escapes, such as `\0` for `\x00`).
        write!(f, "b\"")?;
        for &c in self.as_slice() {
            write!(f, "{}", std::ascii::escape_default(c))?;
        }
        write!(f, "\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datum_is_no_larger_than_a_bytes_handle() {
        assert_eq!(
            std::mem::size_of::<Datum>(),
            std::mem::size_of::<Bytes>(),
            "DATUM_INLINE_MAX no longer fits beside the tag: lower it"
        );
    }

    #[test]
    fn up_to_datum_inline_max_bytes_are_inline_and_longer_ones_are_not() {
        for n in [0, 1, DATUM_INLINE_MAX - 1, DATUM_INLINE_MAX] {
            let b = vec![7u8; n];
            let d = Datum::copy_from_slice(&b);
            assert!(d.is_inline(), "{n} bytes");
            assert_eq!(&d[..], &b[..]);
            assert_eq!(d.to_bytes(), b);
        }
        for n in [DATUM_INLINE_MAX + 1, 4096] {
            let b = vec![7u8; n];
            let d = Datum::copy_from_slice(&b);
            assert!(!d.is_inline(), "{n} bytes");
            assert_eq!(&d[..], &b[..]);
            let owned = Datum::from_vec(b.clone());
            assert!(!owned.is_inline());
            assert_eq!(owned, d);
        }
        assert!(Datum::from_vec(b"short".to_vec()).is_inline());
    }

    #[test]
    fn order_equality_and_hash_are_those_of_the_bytes_whatever_the_form() {
        use std::collections::hash_map::DefaultHasher;
        let hash = |x: &dyn Fn(&mut DefaultHasher)| {
            let mut h = DefaultHasher::new();
            x(&mut h);
            h.finish()
        };
        // Pairs straddling the inline limit, prefixes, and empty.
        let long = vec![b'a'; DATUM_INLINE_MAX + 5];
        let samples: Vec<Vec<u8>> = vec![
            vec![],
            b"a".to_vec(),
            b"ab".to_vec(),
            b"b".to_vec(),
            long[..DATUM_INLINE_MAX].to_vec(),
            long[..DATUM_INLINE_MAX + 1].to_vec(),
            long.clone(),
            [&long[..], b"z"].concat(),
            vec![0xff; 3],
        ];
        for x in &samples {
            for y in &samples {
                let (dx, dy) = (Datum::copy_from_slice(x), Datum::copy_from_slice(y));
                assert_eq!(dx.cmp(&dy), x.cmp(y), "{x:?} vs {y:?}");
                assert_eq!(dx == dy, x == y);
            }
            let d = Datum::copy_from_slice(x);
            let want = hash(&|h| x[..].hash(h));
            assert_eq!(hash(&|h| d.hash(h)), want);
            assert_eq!(format!("{d:?}"), format!("{:?}", Bytes::from(x.clone())));
        }
    }

    #[test]
    fn a_map_of_datums_is_looked_up_by_byte_slices() {
        let mut m = imbl::OrdMap::new();
        for i in 0..1000u32 {
            let k = format!("key{i:012}");
            m.insert(
                Datum::copy_from_slice(k.as_bytes()),
                Datum::copy_from_slice(&[1]),
            );
        }
        assert!(m.get(&b"key000000000500"[..]).is_some());
        assert!(m.get(&b"key000000001000"[..]).is_none());
        let keys: Vec<&[u8]> = m.keys().map(|k| &k[..]).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }
}
