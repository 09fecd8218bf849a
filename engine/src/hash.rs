//! The one hash of replicated state: 64-bit FNV-1a, deterministic and independent of the
//! platform (no random state, integers fed little-endian), so replicas that hold the same
//! state compute the same hash and a checkpoint's hash can be checked on another machine.
//!
//! Two ways to feed it: [`Fnv64::word`] mixes a whole `u64` in one multiply (state hashes over
//! many integers: keys, values, digests), and the [`Hasher`] impl is byte-wise FNV-1a (for
//! anything `Hash`, and for bytes).

use std::hash::Hasher;

/// The FNV-1a 64-bit offset basis.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// The FNV 64-bit prime.
pub const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A running FNV-1a hash (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64::new()
    }
}

impl Fnv64 {
    pub const fn new() -> Self {
        Fnv64(FNV_OFFSET)
    }

    /// Mixes one 64-bit word in a single step.
    #[inline]
    pub fn word(&mut self, x: u64) -> &mut Self {
        self.0 = (self.0 ^ x).wrapping_mul(FNV_PRIME);
        self
    }

    /// Mixes every word of `xs`, in order.
    pub fn words(&mut self, xs: impl IntoIterator<Item = u64>) -> &mut Self {
        for x in xs {
            self.word(x);
        }
        self
    }

    pub const fn get(&self) -> u64 {
        self.0
    }
}

impl Hasher for Fnv64 {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        }
    }

    fn write_u16(&mut self, i: u16) {
        self.write(&i.to_le_bytes());
    }

    fn write_u32(&mut self, i: u32) {
        self.write(&i.to_le_bytes());
    }

    fn write_u64(&mut self, i: u64) {
        self.write(&i.to_le_bytes());
    }

    fn write_u128(&mut self, i: u128) {
        self.write(&i.to_le_bytes());
    }

    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }

    fn write_i16(&mut self, i: i16) {
        self.write(&i.to_le_bytes());
    }

    fn write_i32(&mut self, i: i32) {
        self.write(&i.to_le_bytes());
    }

    fn write_i64(&mut self, i: i64) {
        self.write(&i.to_le_bytes());
    }

    fn write_i128(&mut self, i: i128) {
        self.write(&i.to_le_bytes());
    }

    fn write_isize(&mut self, i: isize) {
        self.write_i64(i as i64);
    }
}

/// The byte-wise FNV-1a hash of `bytes`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = Fnv64::new();
    h.write(bytes);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_fnv1a_vectors() {
        // From the FNV reference test suite (Fowler, Noll, Vo).
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn integers_are_fed_little_endian_and_words_in_one_step() {
        let mut a = Fnv64::new();
        a.write_u32(0x0102_0304);
        assert_eq!(a.finish(), fnv1a(&[4, 3, 2, 1]));
        let mut w = Fnv64::new();
        w.word(7).word(9);
        let expected = ((FNV_OFFSET ^ 7).wrapping_mul(FNV_PRIME) ^ 9).wrapping_mul(FNV_PRIME);
        assert_eq!(w.get(), expected);
    }
}
