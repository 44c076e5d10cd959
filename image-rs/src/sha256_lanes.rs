//! Several SHA-256 computations over equally long inputs, run in lockstep.
//!
//! An encrypted layer is hashed three times per byte: the blob digest and the
//! HMAC over the ciphertext, and the private-options digest over the
//! plaintext. One SHA-256 stream on SHA-NI is bound by the latency of
//! `sha256rnds2` (each round pair waits for the previous one), not by its
//! throughput, so interleaving independent streams in one loop runs them for
//! little more than the price of one: about 2x the throughput of three
//! separate hashers on an AMD EPYC (see `examples/ocicrypt_speed.rs`). Neither
//! `sha2` nor `ring` offers multi-stream hashing; this module adds only the
//! interleaved compression function and falls back to `sha2::compress256`
//! when the CPU lacks SHA-NI.
//!
//! The lanes share one position, so inputs must advance together (the same
//! number of bytes per lane in every [`Sha256Lanes::update`]); a lane may start
//! from a state that has already absorbed whole blocks (the HMAC inner hash
//! after its `key ^ ipad` block).

use sha2::digest::generic_array::GenericArray;

const BLOCK: usize = 64;

/// The SHA-256 initial hash value (FIPS 180-4, 5.3.3).
const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// `N` SHA-256 hashes over inputs that advance together.
#[derive(Clone)]
pub struct Sha256Lanes<const N: usize> {
    states: [[u32; 8]; N],
    /// Bytes each lane absorbed before the shared input (a multiple of 64).
    prefix: [u64; N],
    /// Shared input length so far.
    len: u64,
    /// Partial block of each lane (the first `len % 64` bytes are valid).
    partial: [[u8; BLOCK]; N],
}

impl<const N: usize> std::fmt::Debug for Sha256Lanes<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // States may be keyed (HMAC): never printed.
        f.debug_struct("Sha256Lanes")
            .field("lanes", &N)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl<const N: usize> Default for Sha256Lanes<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Sha256Lanes<N> {
    /// `N` fresh SHA-256 computations.
    pub fn new() -> Self {
        Sha256Lanes {
            states: [IV; N],
            prefix: [0; N],
            len: 0,
            partial: [[0; BLOCK]; N],
        }
    }

    /// Lane `lane` first absorbs `block` (one whole block, for example an
    /// HMAC key padded and xored with ipad). Only before any [`update`](Self::update).
    pub fn absorb_prefix_block(&mut self, lane: usize, block: &[u8; BLOCK]) {
        assert_eq!(self.len, 0, "prefix blocks go before the shared input");
        sha2::compress256(
            &mut self.states[lane],
            std::slice::from_ref(GenericArray::from_slice(block)),
        );
        self.prefix[lane] += BLOCK as u64;
    }

    /// Feeds `inputs[i]` to lane `i`. All inputs must have the same length.
    pub fn update(&mut self, inputs: [&[u8]; N]) {
        let n = inputs.first().map_or(0, |i| i.len());
        assert!(
            inputs.iter().all(|i| i.len() == n),
            "lanes advance together"
        );
        let mut off = 0;
        let fill = (self.len % BLOCK as u64) as usize;
        self.len += n as u64;
        if fill > 0 {
            let take = (BLOCK - fill).min(n);
            for (p, i) in self.partial.iter_mut().zip(&inputs) {
                p[fill..fill + take].copy_from_slice(&i[..take]);
            }
            off = take;
            if fill + take < BLOCK {
                return;
            }
            let blocks: [&[u8]; N] = std::array::from_fn(|l| &self.partial[l][..]);
            compress(&mut self.states, blocks);
        }
        let whole = (n - off) / BLOCK * BLOCK;
        if whole > 0 {
            compress(
                &mut self.states,
                std::array::from_fn(|l| &inputs[l][off..off + whole]),
            );
            off += whole;
        }
        for (p, i) in self.partial.iter_mut().zip(&inputs) {
            p[..n - off].copy_from_slice(&i[off..]);
        }
    }

    /// The `N` digests (FIPS 180-4 padding with each lane's total length).
    pub fn finish(mut self) -> [[u8; 32]; N] {
        let fill = (self.len % BLOCK as u64) as usize;
        // Padding: 0x80, zeros, the bit length as a 64-bit big-endian number;
        // one block, or two when fewer than 9 bytes are left.
        let blocks = if fill + 9 <= BLOCK { 1 } else { 2 };
        let mut tails = [[0u8; 2 * BLOCK]; N];
        for (lane, tail) in tails.iter_mut().enumerate() {
            tail[..fill].copy_from_slice(&self.partial[lane][..fill]);
            tail[fill] = 0x80;
            let bits = (self.prefix[lane] + self.len) * 8;
            tail[blocks * BLOCK - 8..blocks * BLOCK].copy_from_slice(&bits.to_be_bytes());
        }
        compress(
            &mut self.states,
            std::array::from_fn(|l| &tails[l][..blocks * BLOCK]),
        );
        self.states.map(|s| {
            let mut out = [0u8; 32];
            for (o, w) in out.chunks_exact_mut(4).zip(s) {
                o.copy_from_slice(&w.to_be_bytes());
            }
            out
        })
    }
}

impl<const N: usize> Drop for Sha256Lanes<N> {
    fn drop(&mut self) {
        // A keyed lane's state and buffered input are secret-derived.
        use zeroize::Zeroize;
        self.states.iter_mut().for_each(|s| s.zeroize());
        self.partial.iter_mut().for_each(|p| p.zeroize());
    }
}

/// Runs the compression function of every lane over its blocks (all inputs
/// the same whole number of blocks long).
fn compress<const N: usize>(states: &mut [[u32; 8]; N], blocks: [&[u8]; N]) {
    debug_assert!(blocks.iter().all(|b| b.len() % BLOCK == 0));
    #[cfg(target_arch = "x86_64")]
    if shani::available() {
        // SAFETY: `shani::compress` needs the SHA, SSE2, SSSE3 and SSE4.1
        // instructions, and `available` has just checked (cached CPUID)
        // that this CPU has them.
        unsafe { shani::compress(states, blocks) };
        return;
    }
    compress_portable(states, blocks);
}

/// One lane after the other with `sha2`'s own compression function (which
/// picks SHA-NI for itself where present, one stream at a time).
fn compress_portable<const N: usize>(states: &mut [[u32; 8]; N], blocks: [&[u8]; N]) {
    for (state, input) in states.iter_mut().zip(blocks) {
        for block in input.chunks_exact(BLOCK) {
            sha2::compress256(state, std::slice::from_ref(GenericArray::from_slice(block)));
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod shani {
    use std::arch::x86_64::*;

    /// SHA-256 round constants (FIPS 180-4, 4.2.2).
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    pub(super) fn available() -> bool {
        std::is_x86_feature_detected!("sha")
            && std::is_x86_feature_detected!("sse2")
            && std::is_x86_feature_detected!("ssse3")
            && std::is_x86_feature_detected!("sse4.1")
    }

    /// Four big-endian message words from 16 bytes, lowest word first.
    #[inline]
    #[target_feature(enable = "sse2")]
    fn words(b: &[u8]) -> __m128i {
        let w = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as i32;
        _mm_set_epi32(w(12), w(8), w(4), w(0))
    }

    /// The interleaved compression function. Each lane keeps its state in
    /// the register pair SHA-NI expects (ABEF, CDGH); the 16 steps of four
    /// rounds are written out so that the lanes' independent instructions
    /// sit next to each other and the CPU overlaps their latencies.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) fn compress<const N: usize>(states: &mut [[u32; 8]; N], blocks: [&[u8]; N]) {
        let k: [__m128i; 16] = std::array::from_fn(|i| {
            _mm_set_epi32(
                K[4 * i + 3] as i32,
                K[4 * i + 2] as i32,
                K[4 * i + 1] as i32,
                K[4 * i] as i32,
            )
        });
        let s = |v: u32| v as i32;
        let mut abef: [__m128i; N] = std::array::from_fn(|l| {
            let st = &states[l];
            _mm_set_epi32(s(st[0]), s(st[1]), s(st[4]), s(st[5]))
        });
        let mut cdgh: [__m128i; N] = std::array::from_fn(|l| {
            let st = &states[l];
            _mm_set_epi32(s(st[2]), s(st[3]), s(st[6]), s(st[7]))
        });
        let n = blocks[0].len() / 64;
        for b in 0..n {
            let (abef0, cdgh0) = (abef, cdgh);
            let mut w: [[__m128i; 4]; N] = std::array::from_fn(|l| {
                let blk = &blocks[l][b * 64..b * 64 + 64];
                [
                    words(&blk[0..16]),
                    words(&blk[16..32]),
                    words(&blk[32..48]),
                    words(&blk[48..64]),
                ]
            });
            macro_rules! step {
                ($i:expr) => {
                    for l in 0..N {
                        let m = _mm_add_epi32(w[l][$i % 4], k[$i]);
                        cdgh[l] = _mm_sha256rnds2_epu32(cdgh[l], abef[l], m);
                        let m = _mm_shuffle_epi32::<0x0E>(m);
                        abef[l] = _mm_sha256rnds2_epu32(abef[l], cdgh[l], m);
                        if $i < 12 {
                            // W[i+4] = msg2(msg1(W[i], W[i+1]) + W[i+3]:W[i+2] >> 32 bits, W[i+3])
                            let t = _mm_add_epi32(
                                _mm_sha256msg1_epu32(w[l][$i % 4], w[l][($i + 1) % 4]),
                                _mm_alignr_epi8::<4>(w[l][($i + 3) % 4], w[l][($i + 2) % 4]),
                            );
                            w[l][$i % 4] = _mm_sha256msg2_epu32(t, w[l][($i + 3) % 4]);
                        }
                    }
                };
            }
            step!(0);
            step!(1);
            step!(2);
            step!(3);
            step!(4);
            step!(5);
            step!(6);
            step!(7);
            step!(8);
            step!(9);
            step!(10);
            step!(11);
            step!(12);
            step!(13);
            step!(14);
            step!(15);
            for l in 0..N {
                abef[l] = _mm_add_epi32(abef[l], abef0[l]);
                cdgh[l] = _mm_add_epi32(cdgh[l], cdgh0[l]);
            }
        }
        for l in 0..N {
            let (x, y) = (abef[l], cdgh[l]);
            let u = |v: i32| v as u32;
            states[l] = [
                u(_mm_extract_epi32::<3>(x)),
                u(_mm_extract_epi32::<2>(x)),
                u(_mm_extract_epi32::<3>(y)),
                u(_mm_extract_epi32::<2>(y)),
                u(_mm_extract_epi32::<1>(x)),
                u(_mm_extract_epi32::<0>(x)),
                u(_mm_extract_epi32::<1>(y)),
                u(_mm_extract_epi32::<0>(y)),
            ];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::Mac;
    use sha2::Digest as _;

    fn lcg(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 33) as u8
            })
            .collect()
    }

    /// Every split of the input, including empty and single-byte updates and
    /// lengths around the padding boundary, gives what `sha2` gives.
    #[test]
    fn matches_sha2_for_any_split() {
        for len in [
            0usize,
            1,
            55,
            56,
            63,
            64,
            65,
            119,
            120,
            128,
            1000,
            4096 + 17,
        ] {
            let a = lcg(1, len);
            let b = lcg(2, len);
            let c = lcg(3, len);
            for step in [1usize, 7, 64, 100, 5000] {
                let mut lanes = Sha256Lanes::<3>::new();
                let mut off = 0;
                while off < len {
                    let e = (off + step).min(len);
                    lanes.update([&a[off..e], &b[off..e], &c[off..e]]);
                    off = e;
                }
                lanes.update([&[], &[], &[]]);
                let got = lanes.finish();
                for (g, input) in got.iter().zip([&a, &b, &c]) {
                    assert_eq!(
                        g[..],
                        sha2::Sha256::digest(input)[..],
                        "len {len}, step {step}"
                    );
                }
            }
        }
    }

    /// A lane primed with `key ^ ipad` finishes as the HMAC inner hash.
    #[test]
    fn prefix_block_gives_hmac() {
        let key = [0x5au8; 32];
        let data = lcg(9, 3000);
        let mut ipad = [0x36u8; 64];
        for (p, k) in ipad.iter_mut().zip(key) {
            *p ^= k;
        }
        let mut lanes = Sha256Lanes::<2>::new();
        lanes.absorb_prefix_block(1, &ipad);
        lanes.update([&data[..1234], &data[..1234]]);
        lanes.update([&data[1234..], &data[1234..]]);
        let [plain, inner] = lanes.finish();
        assert_eq!(plain[..], sha2::Sha256::digest(&data)[..]);
        let mut opad = [0x5cu8; 64];
        for (p, k) in opad.iter_mut().zip(key) {
            *p ^= k;
        }
        let mut outer = sha2::Sha256::new();
        outer.update(opad);
        outer.update(inner);
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(&data);
        assert_eq!(outer.finalize()[..], mac.finalize().into_bytes()[..]);
    }

    /// The interleaved SHA-NI path and the portable one (what a CPU without
    /// SHA-NI runs) agree lane by lane, from different starting states.
    #[test]
    fn interleaved_agrees_with_portable() {
        let data: [Vec<u8>; 3] = std::array::from_fn(|i| lcg(4 + i as u64, 64 * 9));
        let start: [[u32; 8]; 3] = std::array::from_fn(|i| IV.map(|w| w.rotate_left(i as u32)));
        let mut portable = start;
        compress_portable(&mut portable, std::array::from_fn(|i| &data[i][..]));
        assert_ne!(portable, start);
        let mut dispatched = start;
        compress(&mut dispatched, std::array::from_fn(|i| &data[i][..]));
        assert_eq!(dispatched, portable);
        #[cfg(target_arch = "x86_64")]
        if !shani::available() {
            eprintln!("no SHA-NI on this CPU: only the portable path was checked");
        }
    }
}
