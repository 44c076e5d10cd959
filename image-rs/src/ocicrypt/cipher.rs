//! The layer cipher `AES_256_CTR_HMAC_SHA256`, streaming.
//!
//! Ciphertext = AES-256-CTR(key = symkey, initial counter block = the
//! 16-byte nonce, 128-bit big-endian increment) over the compressed blob,
//! same length; `pubopts.hmac` = HMAC-SHA256(symkey, whole ciphertext)
//! (encrypt-then-MAC). The HMAC can only be checked at the end of the blob,
//! so [`DecryptReader`] turns the final EOF into an error when it does not
//! match: a consumer that reads to EOF cannot succeed on tampered ciphertext,
//! but it must not commit anything it decrypted before that EOF.
//!
//! Both directions work on whatever slice the caller passes (AES-NI and
//! SHA-NI are picked at run time by the RustCrypto crates); pass large
//! buffers (64 KiB or more) for full speed.

use std::fmt;
use std::io::{self, Read, Write};

use ctr::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::options::{PrivateOptions, PublicOptions, HMAC_LEN, NONCE_LEN, SYMKEY_LEN};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::sha256_lanes::Sha256Lanes;

/// AES-256 in CTR mode with a 128-bit big-endian counter (what Go's
/// `cipher.NewCTR` and OpenSSL's `aes-256-ctr` do).
pub type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

type HmacSha256 = Hmac<Sha256>;

/// The error inside the `io::Error` (kind `InvalidData`) that
/// [`DecryptReader`] returns instead of EOF when the HMAC does not match.
/// Callers can find it with `err.get_ref().and_then(|e| e.downcast_ref::<HmacMismatch>())`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("decrypting layer: the ciphertext failed its HMAC-SHA256 check at the end of the blob; the encrypted layer or its pubopts annotation was modified, so everything decrypted from it must be discarded")]
pub struct HmacMismatch;

impl HmacMismatch {
    /// Whether `err` is (or wraps) an HMAC mismatch.
    pub fn is(err: &io::Error) -> bool {
        err.get_ref()
            .is_some_and(|e| e.downcast_ref::<HmacMismatch>().is_some())
    }

    fn io() -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, HmacMismatch)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Streaming,
    Verified,
    Failed,
}

/// Decrypts an encrypted layer blob while it is read, and checks the HMAC
/// when the inner reader reaches EOF (see the module docs). Checking the
/// decrypted stream against [`PrivateOptions::digest`] stays the caller's
/// job (the pull pipeline already hashes what it reads).
pub struct DecryptReader<R> {
    inner: R,
    cipher: Aes256Ctr,
    mac: HmacSha256,
    expected: Vec<u8>,
    state: State,
    count: u64,
}

impl<R> fmt::Debug for DecryptReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptReader")
            .field("state", &self.state)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

fn hmac_with(key: &[u8; SYMKEY_LEN]) -> HmacSha256 {
    <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length")
}

fn ctr_with(key: &[u8; SYMKEY_LEN], nonce: &[u8; NONCE_LEN]) -> Aes256Ctr {
    Aes256Ctr::new(key.into(), nonce.into())
}

impl<R: Read> DecryptReader<R> {
    /// Wraps the ciphertext reader `inner` with the layer's options.
    pub fn new(inner: R, private: &PrivateOptions, public: &PublicOptions) -> Self {
        DecryptReader {
            inner,
            cipher: ctr_with(&private.symkey, &private.nonce),
            mac: hmac_with(&private.symkey),
            expected: public.hmac.clone(),
            state: State::Streaming,
            count: 0,
        }
    }

    /// True once EOF was reached and the HMAC matched.
    pub fn verified(&self) -> bool {
        self.state == State::Verified
    }

    /// Ciphertext bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.count
    }

    /// Reads (and MACs, without decrypting) whatever the consumer left
    /// unread, e.g. after a decompressor stopped at its end-of-stream
    /// marker, then returns the inner reader if the HMAC matched. This is the
    /// call that proves the layer authentic; nothing decrypted may be
    /// committed before it succeeds.
    pub fn finish(mut self) -> io::Result<R> {
        if self.state == State::Streaming {
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = match self.inner.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                if n == 0 {
                    self.check()?;
                    break;
                }
                self.mac.update(&buf[..n]);
                self.count += n as u64;
            }
        }
        match self.state {
            State::Verified => Ok(self.inner),
            _ => Err(HmacMismatch::io()),
        }
    }

    fn check(&mut self) -> io::Result<()> {
        let mac = std::mem::replace(&mut self.mac, hmac_with(&[0; SYMKEY_LEN]));
        // Constant-time comparison.
        if mac.verify_slice(&self.expected).is_ok() {
            self.state = State::Verified;
            Ok(())
        } else {
            self.state = State::Failed;
            Err(HmacMismatch::io())
        }
    }
}

impl<R: Read> Read for DecryptReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.state {
            State::Verified => return Ok(0),
            State::Failed => return Err(HmacMismatch::io()),
            State::Streaming => {}
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            self.check()?;
            return Ok(0);
        }
        let chunk = &mut buf[..n];
        self.mac.update(chunk);
        self.cipher.apply_keystream(chunk);
        self.count += n as u64;
        Ok(n)
    }
}

/// What [`BlobDecryptor::finish`] found about the whole blob.
#[derive(Debug, Clone)]
pub struct BlobCheck {
    /// Digest of the ciphertext, in the algorithm of the layer descriptor.
    pub blob_digest: Digest,
    /// Whether the HMAC over the ciphertext matched `pubopts.hmac`.
    pub mac_ok: bool,
    /// Digest of the decrypted blob, in the algorithm of
    /// [`PrivateOptions::digest`] (the caller compares the two).
    pub plain_digest: Digest,
}

/// The three hashes of an encrypted blob: its digest and its HMAC over the
/// ciphertext, and the digest of the plaintext. When both digests are
/// SHA-256 (always, for images ocicrypt makes) they run interleaved in
/// [`Sha256Lanes`], about as fast as one hash alone; any other algorithm
/// takes the one-hasher-each path.
struct LayerHashes {
    kind: HashKind,
    /// `symkey ^ opad`, for the outer HMAC hash.
    opad: Zeroizing<[u8; 64]>,
}

enum HashKind {
    /// Lanes: 0 blob digest, 1 HMAC inner hash (primed with `symkey ^ ipad`),
    /// 2 plain digest.
    Lanes(Box<Sha256Lanes<3>>),
    Separate(Box<(Hasher, HmacSha256, Hasher)>),
}

#[derive(Debug, Clone, Copy)]
enum Direction {
    Encrypt,
    Decrypt,
}

/// Bytes en- or decrypted per step: small enough that a copy of the input
/// stays in L1 while both it and the output are hashed.
const CIPHER_STEP: usize = 4096;

impl LayerHashes {
    fn new(blob: Algorithm, plain: Algorithm, symkey: &[u8; SYMKEY_LEN]) -> Self {
        let pad = |byte: u8| {
            let mut p = Zeroizing::new([byte; 64]);
            for (p, k) in p.iter_mut().zip(symkey) {
                *p ^= k;
            }
            p
        };
        let kind = if blob == Algorithm::Sha256 && plain == Algorithm::Sha256 {
            let mut lanes = Box::new(Sha256Lanes::<3>::new());
            lanes.absorb_prefix_block(1, &pad(0x36));
            HashKind::Lanes(lanes)
        } else {
            HashKind::Separate(Box::new((
                Hasher::new(blob),
                hmac_with(symkey),
                Hasher::new(plain),
            )))
        };
        LayerHashes {
            kind,
            opad: pad(0x5c),
        }
    }

    fn update(&mut self, cipher_text: &[u8], plain: &[u8]) {
        match &mut self.kind {
            HashKind::Lanes(l) => l.update([cipher_text, cipher_text, plain]),
            HashKind::Separate(h) => {
                let (blob, mac, plain_hash) = &mut **h;
                blob.update(cipher_text);
                mac.update(cipher_text);
                plain_hash.update(plain);
            }
        }
    }

    /// Runs `cipher` over `buf` in place, step by step, hashing each step's
    /// input and output (kept in a small copy, so both are in cache).
    fn apply_in_place(&mut self, cipher: &mut Aes256Ctr, buf: &mut [u8], direction: Direction) {
        let mut copy = [0u8; CIPHER_STEP];
        for piece in buf.chunks_mut(CIPHER_STEP) {
            let input = &mut copy[..piece.len()];
            input.copy_from_slice(piece);
            cipher.apply_keystream(piece);
            match direction {
                Direction::Decrypt => self.update(input, piece),
                Direction::Encrypt => self.update(piece, input),
            }
        }
    }

    /// Blob digest, HMAC, plain digest.
    fn finish(self) -> (Digest, Zeroizing<[u8; HMAC_LEN]>, Digest) {
        match self.kind {
            HashKind::Lanes(l) => {
                let [blob, inner, plain] = l.finish();
                let mut outer = <Sha256 as sha2::Digest>::new();
                sha2::Digest::update(&mut outer, &self.opad[..]);
                sha2::Digest::update(&mut outer, inner);
                (
                    Digest::from_sha256(&blob),
                    Zeroizing::new(sha2::Digest::finalize(outer).into()),
                    Digest::from_sha256(&plain),
                )
            }
            HashKind::Separate(h) => {
                let (blob, mac, plain) = *h;
                (
                    blob.finish(),
                    Zeroizing::new(mac.finalize().into_bytes().into()),
                    plain.finish(),
                )
            }
        }
    }
}

/// Decrypts an encrypted layer blob in place, chunk by chunk as it is
/// downloaded, and computes in the same pass the three hashes the pull checks
/// before committing the layer: the blob digest and the HMAC over the
/// ciphertext, and the digest of the plaintext (interleaved, see
/// [`Sha256Lanes`]).
pub struct BlobDecryptor {
    cipher: Aes256Ctr,
    hashes: LayerHashes,
    expected_mac: Vec<u8>,
}

impl fmt::Debug for BlobDecryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobDecryptor")
            .field(
                "interleaved",
                &matches!(self.hashes.kind, HashKind::Lanes(_)),
            )
            .finish_non_exhaustive()
    }
}

impl BlobDecryptor {
    /// A decryptor for a blob whose descriptor digest uses `blob_algorithm`.
    pub fn new(
        blob_algorithm: Algorithm,
        private: &PrivateOptions,
        public: &PublicOptions,
    ) -> Self {
        BlobDecryptor {
            cipher: ctr_with(&private.symkey, &private.nonce),
            hashes: LayerHashes::new(blob_algorithm, private.digest.algorithm(), &private.symkey),
            expected_mac: public.hmac.clone(),
        }
    }

    /// Decrypts the next piece of ciphertext in place, hashing it before and
    /// after.
    pub fn decrypt_in_place(&mut self, buf: &mut [u8]) {
        self.hashes
            .apply_in_place(&mut self.cipher, buf, Direction::Decrypt);
    }

    /// The blob digest, the HMAC verdict (compared in constant time) and the
    /// plain digest, once the whole blob went through
    /// [`decrypt_in_place`](Self::decrypt_in_place).
    pub fn finish(self) -> BlobCheck {
        use subtle::ConstantTimeEq;
        let (blob_digest, mac, plain_digest) = self.hashes.finish();
        BlobCheck {
            blob_digest,
            mac_ok: bool::from(mac[..].ct_eq(&self.expected_mac[..])),
            plain_digest,
        }
    }
}

/// What encrypting a blob produced: the options to wrap and publish, and the
/// ciphertext descriptor fields.
#[derive(Debug, Clone)]
pub struct Encrypted {
    /// Layer key, nonce and the plain blob digest (to be wrapped).
    pub private: PrivateOptions,
    /// Cipher name and HMAC (the `pubopts` annotation).
    pub public: PublicOptions,
    /// sha256 of the ciphertext (the descriptor digest).
    pub digest: Digest,
    /// Ciphertext length (equal to the plain length).
    pub size: u64,
}

/// The encrypt-side state shared by [`EncryptReader`] and [`EncryptWriter`]:
/// a fresh key and nonce, the CTR keystream, and the HMAC and two digests
/// (interleaved, see [`LayerHashes`]).
struct Encryptor {
    symkey: Zeroizing<[u8; SYMKEY_LEN]>,
    nonce: [u8; NONCE_LEN],
    cipher: Aes256Ctr,
    hashes: LayerHashes,
    size: u64,
}

impl Encryptor {
    fn new() -> Self {
        let mut symkey = Zeroizing::new([0u8; SYMKEY_LEN]);
        OsRng.fill_bytes(symkey.as_mut_slice());
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        Encryptor {
            cipher: ctr_with(&symkey, &nonce),
            hashes: LayerHashes::new(Algorithm::Sha256, Algorithm::Sha256, &symkey),
            symkey,
            nonce,
            size: 0,
        }
    }

    fn encrypt(&mut self, buf: &mut [u8]) {
        self.hashes
            .apply_in_place(&mut self.cipher, buf, Direction::Encrypt);
        self.size += buf.len() as u64;
    }

    fn finish(self) -> Encrypted {
        let (digest, hmac, plain) = self.hashes.finish();
        Encrypted {
            private: PrivateOptions {
                symkey: self.symkey,
                nonce: self.nonce,
                digest: plain,
            },
            public: PublicOptions::new(*hmac),
            digest,
            size: self.size,
        }
    }
}

/// Encrypts a plain blob while it is read (pull style, e.g. as an upload
/// body), with a fresh key and nonce.
pub struct EncryptReader<R> {
    inner: R,
    enc: Encryptor,
}

impl<R> fmt::Debug for EncryptReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptReader")
            .field("size", &self.enc.size)
            .finish_non_exhaustive()
    }
}

impl<R: Read> EncryptReader<R> {
    /// Wraps the plain blob reader `inner`.
    pub fn new(inner: R) -> Self {
        EncryptReader {
            inner,
            enc: Encryptor::new(),
        }
    }

    /// The options and descriptor fields of everything read so far; call it
    /// after reading to EOF.
    pub fn finish(self) -> Encrypted {
        self.enc.finish()
    }
}

impl<R: Read> Read for EncryptReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.enc.encrypt(&mut buf[..n]);
        Ok(n)
    }
}

/// Encrypts what is written to it into `inner` (push style), with a fresh
/// key and nonce. After a write error the writer is unusable.
pub struct EncryptWriter<W> {
    inner: W,
    enc: Encryptor,
    scratch: Vec<u8>,
}

impl<W> fmt::Debug for EncryptWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptWriter")
            .field("size", &self.enc.size)
            .finish_non_exhaustive()
    }
}

const SCRATCH: usize = 256 * 1024;

impl<W: Write> EncryptWriter<W> {
    /// Wraps the ciphertext sink `inner`.
    pub fn new(inner: W) -> Self {
        EncryptWriter {
            inner,
            enc: Encryptor::new(),
            scratch: Vec::with_capacity(SCRATCH),
        }
    }

    /// Flushes `inner` and returns it with the options and descriptor fields.
    pub fn finish(mut self) -> io::Result<(W, Encrypted)> {
        self.inner.flush()?;
        Ok((self.inner, self.enc.finish()))
    }
}

impl<W: Write> Write for EncryptWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(SCRATCH);
        self.scratch.clear();
        self.scratch.extend_from_slice(&buf[..n]);
        self.enc.encrypt(&mut self.scratch);
        self.inner.write_all(&self.scratch)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that returns its data in odd-sized pieces.
    struct Dribble<'a>(&'a [u8], usize);
    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.1 = self.1 % 7 + 1;
            let n = self.0.len().min(buf.len()).min(self.1 * 13);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// A sample blob of `len` bytes, encrypted by [`EncryptReader`]:
    /// (plaintext, ciphertext, options).
    fn encrypted_sample(len: usize) -> (Vec<u8>, Vec<u8>, Encrypted) {
        let plain = sample(len);
        let mut r = EncryptReader::new(&plain[..]);
        let mut ct = Vec::new();
        r.read_to_end(&mut ct).unwrap();
        let e = r.finish();
        (plain, ct, e)
    }

    /// The in-place decryptor of the pull gives the plaintext and the three
    /// checks the reference hashers give, for any chunking, on both its
    /// interleaved SHA-256 path and the one-hasher-each path (a sha512
    /// descriptor digest), and reports a modified ciphertext or HMAC.
    #[test]
    fn blob_decryptor_matches_reference_hashers() {
        let (plain, ct, e) = encrypted_sample(200_017);
        for (alg, interleaved) in [(Algorithm::Sha256, true), (Algorithm::Sha512, false)] {
            for step in [1usize, 63, 4096, 4097, 65_536, 1 << 20] {
                let mut d = BlobDecryptor::new(alg, &e.private, &e.public);
                assert_eq!(format!("{d:?}").contains("true"), interleaved);
                let mut out = ct.clone();
                for piece in out.chunks_mut(step) {
                    d.decrypt_in_place(piece);
                }
                assert_eq!(out, plain, "step {step}");
                let check = d.finish();
                assert!(check.mac_ok, "step {step}");
                assert_eq!(check.blob_digest, Digest::of(alg, &ct));
                assert_eq!(check.plain_digest, e.private.digest);
            }
        }
        // One flipped ciphertext bit, or a changed HMAC: MAC fails, and the
        // blob digest no longer matches the descriptor.
        let mut bad = ct.clone();
        bad[150_000] ^= 1;
        let mut d = BlobDecryptor::new(Algorithm::Sha256, &e.private, &e.public);
        d.decrypt_in_place(&mut bad);
        let check = d.finish();
        assert!(!check.mac_ok);
        assert_ne!(check.blob_digest, e.digest);
        assert_ne!(check.plain_digest, e.private.digest);
        let mut public = e.public.clone();
        public.hmac[0] ^= 1;
        let mut d = BlobDecryptor::new(Algorithm::Sha256, &e.private, &public);
        d.decrypt_in_place(&mut ct.clone());
        assert!(!d.finish().mac_ok);
        public.hmac.truncate(31);
        let mut d = BlobDecryptor::new(Algorithm::Sha256, &e.private, &public);
        d.decrypt_in_place(&mut ct.clone());
        assert!(!d.finish().mac_ok, "a short HMAC never matches");
    }

    #[test]
    fn encrypt_decrypt_round_trip_any_chunking() {
        let (plain, ct, e) = encrypted_sample(100_003);
        assert_eq!(ct.len(), plain.len());
        assert_ne!(ct, plain);
        assert_eq!(e.size, plain.len() as u64);
        assert_eq!(e.digest, Digest::of(Algorithm::Sha256, &ct));
        assert_eq!(e.private.digest, Digest::of(Algorithm::Sha256, &plain));

        let mut d = DecryptReader::new(Dribble(&ct, 0), &e.private, &e.public);
        let mut out = Vec::new();
        d.read_to_end(&mut out).unwrap();
        assert!(d.verified());
        assert_eq!(out, plain);
        assert_eq!(d.bytes_read(), plain.len() as u64);

        // The writer produces the same format.
        let mut w = EncryptWriter::new(Vec::new());
        for c in plain.chunks(4099) {
            w.write_all(c).unwrap();
        }
        let (ct2, e2) = w.finish().unwrap();
        let mut out = Vec::new();
        DecryptReader::new(&ct2[..], &e2.private, &e2.public)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, plain);
        assert_ne!(e2.private.symkey, e.private.symkey, "fresh key per layer");
    }

    #[test]
    fn matches_openssl_aes_256_ctr() {
        // Independent check of the keystream (128-bit BE counter, nonce as
        // the initial block), crossing a 64-bit counter boundary.
        let key = [0x11u8; 32];
        let mut nonce = [0u8; 16];
        nonce[8..].copy_from_slice(&[0xff; 8]);
        let plain = sample(4096);
        let mut ct = plain.clone();
        ctr_with(&key, &nonce).apply_keystream(&mut ct);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p"), &plain).unwrap();
        let out = std::process::Command::new("openssl")
            .args([
                "enc",
                "-aes-256-ctr",
                "-K",
                &hex::encode(key),
                "-iv",
                &hex::encode(nonce),
                "-in",
            ])
            .arg(dir.path().join("p"))
            .output();
        match out {
            Ok(o) if o.status.success() => assert_eq!(o.stdout, ct),
            other => eprintln!("skipping: openssl not usable: {other:?}"),
        }
    }

    #[test]
    fn flipped_byte_fails_at_eof() {
        let (_, mut ct, e) = encrypted_sample(70_000);
        ct[12345] ^= 0x01;
        let mut d = DecryptReader::new(&ct[..], &e.private, &e.public);
        let err = d.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(HmacMismatch::is(&err), "{err}");
        assert!(!d.verified());
        // And it stays failed.
        assert!(HmacMismatch::is(&d.read(&mut [0u8; 8]).unwrap_err()));

        // A wrong pubopts HMAC fails the same way, also through finish().
        ct[12345] ^= 0x01;
        let mut public = e.public.clone();
        public.hmac[0] ^= 0x80;
        let d = DecryptReader::new(&ct[..], &e.private, &public);
        assert!(HmacMismatch::is(&d.finish().unwrap_err()));
    }

    #[test]
    fn finish_drains_what_the_consumer_left() {
        let (plain, ct, e) = encrypted_sample(50_000);
        let mut d = DecryptReader::new(&ct[..], &e.private, &e.public);
        let mut head = [0u8; 1000];
        d.read_exact(&mut head).unwrap();
        assert_eq!(&head[..], &plain[..1000]);
        assert!(!d.verified());
        d.finish().unwrap();
        // A truncated blob does not verify.
        let d = DecryptReader::new(&ct[..ct.len() - 1], &e.private, &e.public);
        assert!(d.finish().is_err());
    }
}
