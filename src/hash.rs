//! The one non-cryptographic hash of the crate: FNV-1a, as a `Hasher` for tables keyed
//! by config strings, and with a murmur3 finalizer for balancing keys.
//!
//! Both are stable across workers, restarts and machines: the same key maps to the same
//! server everywhere. Neither is used on client-chosen keys where flooding would matter
//! (route tables are keyed by config strings).

use std::hash::{BuildHasherDefault, Hasher};

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0100_0000_01b3;

/// FNV-1a over `bytes`, continuing from `h` (start with [`fnv1a_start`]).
fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    h
}

/// FNV-1a's initial state.
const fn fnv1a_start() -> u64 {
    OFFSET
}

/// FNV-1a as a `Hasher`: short config strings hash faster than with SipHash.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(fnv1a_start())
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0 = fnv1a(self.0, bytes);
    }
}

/// A `HashMap` keyed by `String` with [`Fnv`].
pub type FnvMap<V> = std::collections::HashMap<String, V, BuildHasherDefault<Fnv>>;

/// The hasher builder of [`FnvMap`], for maps with other keys.
pub type FnvBuild = BuildHasherDefault<Fnv>;

/// A stable, well-mixed 64-bit hash of `bytes` (FNV-1a, then murmur3's finalizer for
/// avalanche): balancing keys, ring points and request-id prefixes.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    mix(fnv1a(fnv1a_start(), bytes))
}

/// murmur3's fmix64: spreads every input bit over the whole output.
pub fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_reference_vectors() {
        // From the FNV reference: FNV-1a 64 of "" and "a".
        assert_eq!(Fnv::default().finish(), 0xcbf2_9ce4_8422_2325);
        let mut h = Fnv::default();
        h.write(b"a");
        assert_eq!(h.finish(), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn hash_bytes_is_stable_and_spread() {
        assert_eq!(hash_bytes(b"user-1"), hash_bytes(b"user-1"));
        assert_ne!(hash_bytes(b"user-1"), hash_bytes(b"user-2"));
        let differing = (hash_bytes(b"a") ^ hash_bytes(b"b")).count_ones();
        assert!(
            differing > 16,
            "one input bit flipped only {differing} bits"
        );
    }
}
