//! Throughput of the ocicrypt layer cipher (AES-256-CTR + HMAC-SHA256), to
//! compare with `openssl speed -evp aes-256-ctr` and `openssl speed -hmac
//! sha256` on the same machine; and of what the pull runs per encrypted
//! byte (`BlobDecryptor`: CTR, HMAC and two SHA-256 digests, the three
//! hashes interleaved) against the same three hashes one after the other.
//!
//! `cargo run --release -p image-rs --example ocicrypt_speed [MiB]`
//! (default 256 MiB, 1 MiB buffers; use --release: in the dev profile the
//! generic cipher code is compiled unoptimized in this crate).

use std::io::Read;
use std::time::Instant;

use ctr::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use image_rs::digest::{Algorithm, Digest};
use image_rs::ocicrypt::cipher::{Aes256Ctr, BlobDecryptor, DecryptReader, EncryptReader};
use image_rs::ocicrypt::options::{PrivateOptions, PublicOptions};
use image_rs::sha256_lanes::Sha256Lanes;
use sha2::{Digest as _, Sha256};

const KEY: [u8; 32] = [0x42; 32];
const NONCE: [u8; 16] = [0x24; 16];

fn report(what: &str, bytes: u64, start: Instant) {
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{what:<40} {:>8.0} MB/s  ({:.0} MiB/s, {:.3} s)",
        bytes as f64 / secs / 1e6,
        bytes as f64 / secs / (1 << 20) as f64,
        secs
    );
}

fn main() {
    let mib: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(256);
    let total = mib << 20;
    let mut buf = vec![0u8; 1 << 20];
    println!("{mib} MiB in 1 MiB buffers");

    // HMAC alone, over zeros: also the HMAC of an all-zero ciphertext, used
    // below so the decrypting reader verifies.
    let start = Instant::now();
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&KEY).unwrap();
    for _ in 0..mib {
        mac.update(&buf);
    }
    let hmac: [u8; 32] = mac.finalize().into_bytes().into();
    report("HMAC-SHA256", total, start);

    let start = Instant::now();
    let mut c = Aes256Ctr::new(&KEY.into(), &NONCE.into());
    for _ in 0..mib {
        c.apply_keystream(&mut buf);
    }
    report("AES-256-CTR", total, start);

    let private = PrivateOptions::new(KEY, NONCE, Digest::of(Algorithm::Sha256, b""));
    let public = PublicOptions::new(hmac);
    let start = Instant::now();
    let mut r = DecryptReader::new(std::io::repeat(0).take(total), &private, &public);
    let mut n = 0u64;
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => n += k as u64,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(r.verified() && n == total);
    report("DecryptReader (CTR + HMAC, verified)", total, start);

    // What the pull runs per downloaded chunk of an encrypted layer:
    // AES-CTR in place plus blob digest, HMAC and plain digest, interleaved.
    let mut d = BlobDecryptor::new(Algorithm::Sha256, &private, &public);
    let start = Instant::now();
    for _ in 0..mib {
        buf.fill(0);
        d.decrypt_in_place(&mut buf);
    }
    assert!(d.finish().mac_ok);
    report("BlobDecryptor (CTR + HMAC + 2x SHA-256)", total, start);

    // The same three hashes one after the other, as before the lanes.
    let start = Instant::now();
    let (mut a, mut b) = (Sha256::new(), Sha256::new());
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&KEY).unwrap();
    for _ in 0..mib {
        a.update(&buf);
        m.update(&buf);
        b.update(&buf);
    }
    let _ = (a.finalize(), b.finalize(), m.finalize());
    report("3x SHA-256 one after the other", total, start);

    let start = Instant::now();
    let mut lanes = Sha256Lanes::<3>::new();
    for _ in 0..mib {
        lanes.update([&buf, &buf, &buf]);
    }
    let _ = lanes.finish();
    report("3x SHA-256 interleaved (Sha256Lanes)", total, start);

    let start = Instant::now();
    let mut r = EncryptReader::new(std::io::repeat(0).take(total));
    while r.read(&mut buf).unwrap() != 0 {}
    let e = r.finish();
    assert_eq!(e.size, total);
    report("EncryptReader (CTR + HMAC + 2x SHA-256)", total, start);
}
