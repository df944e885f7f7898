//! Deterministic bucketing: MurmurHash3 (x86, 32-bit) over `"{salt}:{value}"`, reduced to a bucket.
//!
//! The hash is streamed over the pieces of the key so that bucketing never builds a string on the
//! evaluation path. Its output is pinned by published test vectors below: a silent change here
//! would move users between variants, which is the one bug a rollout must never have.

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

/// A streaming MurmurHash3 x86_32: the result of writing several slices equals the hash of their
/// concatenation.
#[derive(Debug, Clone)]
pub struct Murmur3 {
    h: u32,
    tail: [u8; 4],
    tail_len: usize,
    len: usize,
}

impl Murmur3 {
    /// A hasher with the given seed.
    pub fn new(seed: u32) -> Self {
        Self { h: seed, tail: [0; 4], tail_len: 0, len: 0 }
    }

    #[inline]
    fn mix_block(&mut self, k: u32) {
        let mut k = k.wrapping_mul(C1);
        k = k.rotate_left(15);
        k = k.wrapping_mul(C2);
        self.h ^= k;
        self.h = self.h.rotate_left(13);
        self.h = self.h.wrapping_mul(5).wrapping_add(0xe654_6b64);
    }

    /// Feeds more bytes.
    #[inline]
    pub fn write(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len();
        if self.tail_len > 0 {
            // Complete the pending block with fixed-size moves (at most three bytes): cheaper
            // than a `memcpy` call of variable length.
            let need = 4 - self.tail_len;
            if bytes.len() < need {
                for b in bytes {
                    self.tail[self.tail_len] = *b;
                    self.tail_len += 1;
                }
                return;
            }
            let mut block = self.tail;
            match (need, bytes) {
                (1, [a, ..]) => block[3] = *a,
                (2, [a, b, ..]) => [block[2], block[3]] = [*a, *b],
                (3, [a, b, c, ..]) => [block[1], block[2], block[3]] = [*a, *b, *c],
                _ => {}
            }
            self.mix_block(u32::from_le_bytes(block));
            self.tail_len = 0;
            bytes = &bytes[need..];
        }
        while let Some((chunk, rest)) = bytes.split_first_chunk::<4>() {
            self.mix_block(u32::from_le_bytes(*chunk));
            bytes = rest;
        }
        match bytes {
            [a] => self.tail[0] = *a,
            [a, b] => [self.tail[0], self.tail[1]] = [*a, *b],
            [a, b, c] => [self.tail[0], self.tail[1], self.tail[2]] = [*a, *b, *c],
            _ => {}
        }
        self.tail_len = bytes.len();
    }

    /// The 32-bit hash of everything written.
    pub fn finish(&self) -> u32 {
        let mut h = self.h;
        if self.tail_len > 0 {
            let mut k: u32 = 0;
            for i in (0..self.tail_len).rev() {
                k = (k << 8) | u32::from(self.tail[i]);
            }
            k = k.wrapping_mul(C1);
            k = k.rotate_left(15);
            k = k.wrapping_mul(C2);
            h ^= k;
        }
        // The length is mixed in as a 32-bit value, as in the reference implementation.
        h ^= self.len as u32;
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^= h >> 16;
        h
    }
}

/// MurmurHash3 x86_32 of one byte string.
pub fn murmur3_32(bytes: &[u8], seed: u32) -> u32 {
    let mut m = Murmur3::new(seed);
    m.write(bytes);
    m.finish()
}

/// A hasher that has already consumed `"{salt}:"`: the constant part of every bucketing key,
/// hashed once at compile time rather than on every evaluation.
pub fn salted(salt: &str, seed: u32) -> Murmur3 {
    let mut m = Murmur3::new(seed);
    m.write(salt.as_bytes());
    m.write(b":");
    m
}

/// The bucket of `value` for a hasher prepared by [`salted`]; equal to [`bucket`].
#[inline]
pub fn bucket_salted(prefix: &Murmur3, value: &[u8], total: u32) -> u32 {
    let mut m = prefix.clone();
    m.write(value);
    m.finish() % total.max(1)
}

/// The bucket of `value` under `salt`: `murmur3_32("{salt}:{value}", seed) % total`, in `0..total`.
///
/// `total` must be positive; the compile step guarantees that for every rollout and gate.
pub fn bucket(salt: &str, value: &[u8], seed: u32, total: u32) -> u32 {
    let mut m = Murmur3::new(seed);
    m.write(salt.as_bytes());
    m.write(b":");
    m.write(value);
    m.finish() % total.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Published MurmurHash3 x86_32 vectors (SMHasher's reference implementation, as collected in
    /// the widely cited test-vector list for the algorithm).
    #[test]
    fn murmur3_matches_published_vectors() {
        let cases: &[(&[u8], u32, u32)] = &[
            (b"", 0, 0),
            (b"", 1, 0x514E_28B7),
            (b"", 0xffff_ffff, 0x81F1_6F39),
            (b"\0\0\0\0", 0, 0x2362_F9DE),
            (b"aaaa", 0x9747_b28c, 0x5A97_808A),
            (b"aaa", 0x9747_b28c, 0x283E_0130),
            (b"aa", 0x9747_b28c, 0x5D21_1726),
            (b"a", 0x9747_b28c, 0x7FA0_9EA6),
            (b"abcd", 0x9747_b28c, 0xF047_8627),
            (b"abc", 0x9747_b28c, 0xC84A_62DD),
            (b"ab", 0x9747_b28c, 0x7487_5592),
            (b"Hello, world!", 0x9747_b28c, 0x2488_4CBA),
            (b"The quick brown fox jumps over the lazy dog", 0x9747_b28c, 0x2FA8_26CD),
            (b"The quick brown fox jumps over the lazy dog", 0, 0x2E4F_F723),
            (b"\xff\xff\xff\xff", 0, 0x7629_3B50),
            (b"\x21\x43\x65\x87", 0, 0xF55B_516B),
            (b"\x21\x43\x65\x87", 0x5082_EDEE, 0x2362_F9DE),
            (b"\x21\x43\x65", 0, 0x7E4A_8634),
            (b"\x21\x43", 0, 0xA0F7_B07A),
            (b"\x21", 0, 0x7266_1CF4),
        ];
        for (input, seed, want) in cases {
            assert_eq!(murmur3_32(input, *seed), *want, "input {input:?} seed {seed:#x}");
        }
    }

    #[test]
    fn a_precomputed_salt_gives_the_same_bucket() {
        for value in ["", "a", "user-1", "a-much-longer-targeting-key-0123456789"] {
            let prefix = salted("checkout", 5);
            assert_eq!(bucket_salted(&prefix, value.as_bytes(), 1000), bucket("checkout", value.as_bytes(), 5, 1000));
        }
    }

    #[test]
    fn streaming_equals_one_shot_for_every_split() {
        let text = b"checkout-redesign:user-123456789";
        let whole = murmur3_32(text, 7);
        for a in 0..=text.len() {
            for b in a..=text.len() {
                let mut m = Murmur3::new(7);
                m.write(&text[..a]);
                m.write(&text[a..b]);
                m.write(&text[b..]);
                assert_eq!(m.finish(), whole, "split at {a},{b}");
            }
        }
    }

    /// Pins Dimmer's own bucketing: these buckets are what users already have in production
    /// rollouts, so they may never change.
    #[test]
    fn native_buckets_are_pinned() {
        let cases: &[(&str, &str, u32)] = &[
            ("checkout", "user-1", 52333),
            ("new-ui", "alice", 46695),
            ("new-ui", "bob", 93569),
            ("pricing-v2", "42", 14268),
            ("Feature.A", "123", 83639),
        ];
        for (salt, value, want) in cases {
            assert_eq!(bucket(salt, value.as_bytes(), 0, 100_000), *want, "{salt}:{value}");
        }
    }
}
