//! A hash whose algorithm is fixed here (FNV-1a, 64 bit) rather than left to the standard
//! library, so a given configuration always gets the same key.

use std::hash::{Hash, Hasher};

const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// Hashes `value` with FNV-1a.
pub(crate) fn stable_hash<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut hasher = Fnv1a(OFFSET_BASIS);
    value.hash(&mut hasher);
    hasher.finish()
}

struct Fnv1a(u64);

impl Hasher for Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(PRIME);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_fnv1a_reference_and_separates_values() {
        let mut hasher = Fnv1a(OFFSET_BASIS);
        hasher.write(b"a");
        assert_eq!(hasher.finish(), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stable_hash("x"), stable_hash("x"));
        assert_ne!(stable_hash(&("ab", "c")), stable_hash(&("a", "bc")));
    }
}
